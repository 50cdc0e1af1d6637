"""Files that survive being killed at any point: append-only JSONL row files, checked against their
typed records (TypedDicts) when read, and whole files written atomically.

A row file is appended with one write per row, fsynced before the next row counts as done. A run
killed mid-write can leave a torn last line: the bytes after the last newline. Only a writer
repairs, and only that (so a resumed run redoes exactly that row: none is lost and none is
duplicated); readers ignore those bytes (an append may be under way) and never modify the file.
Any complete line that is not a row is an error naming the file and line, for writers and readers
alike, unless a reader asks to skip (and count) such lines.

It imports nothing of forkcode outside common: every layer may use it.
"""

import functools
import hashlib
import json
import os
import shutil
import types
import typing
from contextlib import contextmanager

from common.cli import ForkcodeError

# --- rows checked against their typed record ------------------------------------------------------
# A row file's rows are described by a TypedDict next to their writer (datagen.tree.TreeRow, ...):
# the keys of its required part are what readers rely on, and a row without one of them (or with
# one of another type) is a bad line like one that is not JSON. The keys of its `total=False` part
# are what writers add besides: documentation, not checked.

# Annotated[list[X], SHALLOW]: readers check that the value is a list, not each element (token and
# log-prob lists are long, and their elements are the writer's business).
SHALLOW = "shallow"


class KeyedRow(typing.TypedDict):
    """What every row of a RowStore has: the key a resumed run skips done rows by."""
    problem_id: str


def schema_error(row, record, where="row"):
    """None if `row` has every required key of the TypedDict `record`, each of its type, else what
    is wrong. Types: str, int and bool (JSON true is not an integer, nor a number), float (any JSON
    number), None, unions of them, dict, list[X] (each element an X unless Annotated SHALLOW) and
    nested TypedDicts."""
    return _checker(record)(row, where)


@functools.cache
def _checker(kind):
    """A function (value, name) -> None or what is wrong, for values of type `kind` (built once)."""
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if origin is typing.Annotated:
        if SHALLOW in args[1:]:
            return _checker(typing.get_origin(args[0]) or args[0])
        return _checker(args[0])
    if typing.is_typeddict(kind):
        hints = typing.get_type_hints(kind, include_extras=True)
        fields = [(name, _checker(hints[name])) for name in hints if name in kind.__required_keys__]

        def check_record(value, name):
            if not isinstance(value, dict):
                return f"{name} must be a JSON object"
            for key, check in fields:
                if key not in value:
                    return f"{name} lacks {key!r}"
                problem = check(value[key], key)
                if problem:
                    return problem
            return None
        return check_record
    if origin is list:
        element = _checker(args[0]) if args and args[0] is not typing.Any else None

        def check_list(value, name):
            if not isinstance(value, list):
                return f"{name} must be a list"
            if element is not None:
                for i, v in enumerate(value):
                    problem = element(v, f"{name}[{i}]")
                    if problem:
                        return problem
            return None
        return check_list
    kinds = typing.get_args(kind) if origin in (typing.Union, types.UnionType) else (kind,)
    runtime = tuple(typing.get_origin(k) or k for k in kinds if k is not bool)
    if float in runtime:
        runtime += (int,)  # a float field holds any JSON number
    takes_bool = bool in kinds
    expected = " or ".join(_TYPE_NAMES.get(typing.get_origin(k) or k, getattr(k, "__name__", str(k))) for k in kinds)

    def check_value(value, name):
        if isinstance(value, bool):  # JSON true is not a number here
            ok = takes_bool
        else:
            ok = isinstance(value, runtime)
        return None if ok else f"{name} must be {expected}"
    return check_value


_TYPE_NAMES = {str: "text", int: "an integer", float: "a number", list: "a list", bool: "true/false",
               dict: "a JSON object", type(None): "null"}


class StoreError(ForkcodeError, ValueError):
    """A row file that cannot be read as it is; the message names the file and line."""


class RowStore:
    """One append-only JSONL file of rows keyed by `problem_id` (datagen's trees, bench's runs), each
    checked against the TypedDict `fields` when read."""

    def __init__(self, out_dir, name, writer=False, fields=KeyedRow):
        self.dir = out_dir
        self.path = os.path.join(out_dir, name)
        self.fields = fields
        self.skipped = 0
        if writer:
            os.makedirs(out_dir, exist_ok=True)
            self._repair()

    def _repair(self):
        if not os.path.exists(self.path):
            return
        with open(self.path, "rb") as f:
            data = f.read()
        good = data.rfind(b"\n") + 1  # everything after the last newline is a torn write
        parse_rows(data, self.path, self.fields)  # a bad complete line is an error: nothing is cut or written then
        if good != len(data):
            with open(self.path, "r+b") as f:
                f.truncate(good)
                f.flush()
                os.fsync(f.fileno())

    def rows(self, skip_bad=False):
        if not os.path.exists(self.path):
            return []
        with open(self.path, "rb") as f:
            rows, self.skipped = parse_rows(f.read(), self.path, self.fields, skip_bad)
        return rows

    def done_ids(self):
        return {r["problem_id"] for r in self.rows()}

    def append(self, row):
        data = (json.dumps(row, separators=(",", ":")) + "\n").encode()
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)


def parse_rows(data, path, fields, skip_bad=False):
    """(rows, lines skipped) of a JSONL file's bytes up to the last newline (an append may be under
    way after it); a bad line is a StoreError naming `path` and the line, unless skipped."""
    rows, skipped = [], 0
    for lineno, line in enumerate(data[:data.rfind(b"\n") + 1].splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            problem = schema_error(row, fields)
            if problem:
                raise ValueError(problem)
        except ValueError as exc:
            if skip_bad:
                skipped += 1
                continue
            raise StoreError(f"{path}:{lineno}: not a row ({str(exc).splitlines()[0][:80]}); "
                             "nothing was changed (fix or remove the line, or read with --skip-bad)") from None
        rows.append(row)
    return rows, skipped


def read_jsonl(path, fields):
    """Every row of a JSONL file that is not being appended to (an export); a bad line is a
    StoreError naming the file and line."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as exc:
        raise StoreError(f"cannot read {path}: {exc.strerror}") from None
    if data and not data.endswith(b"\n"):
        data += b"\n"  # a finished file: its last line counts even without a newline
    return parse_rows(data, path, fields)[0]


@contextmanager
def atomic_path(path):
    """A temporary path next to `path` for a whole file (or directory) to be written to, by any
    writer (torch.save, safetensors, save_pretrained); on success it replaces `path` in one step, so
    a reader (or a crash) sees the old version or the new one, never a part. On failure it goes."""
    tmp = os.path.join(os.path.dirname(path), f".{os.path.basename(path)}.tmp{os.getpid()}")
    try:
        yield tmp
        if os.path.isfile(tmp):  # some writers (safetensors) create 0600 files: the umask decides
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        if os.path.isdir(tmp):
            shutil.rmtree(tmp, ignore_errors=True)
        elif os.path.exists(tmp):
            os.remove(tmp)
        raise


def read_json(path, what="file"):
    """A whole JSON file; a StoreError (one line) if it cannot be read or is not JSON."""
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except OSError as exc:
        raise StoreError(f"cannot read {what} {path}: {exc.strerror}") from None
    except ValueError as exc:  # not JSON, or not UTF-8
        raise StoreError(f"{what} {path} is not valid JSON ({str(exc).splitlines()[0][:80]})") from None


def write_text_atomic(path, text):
    """Write a whole text file atomically (atomic_path), fsynced."""
    write_lines_atomic(path, [text])


def write_json_atomic(path, obj):
    write_text_atomic(path, json.dumps(obj, indent=1))


def write_jsonl_atomic(path, rows):
    """A whole JSONL file (one compact row per line), atomically."""
    write_lines_atomic(path, (json.dumps(r, separators=(",", ":")) + "\n" for r in rows))


def write_lines_atomic(path, parts):
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        for part in parts:
            f.write(part)
        f.flush()
        os.fsync(f.fileno())


def portable_path(path):
    """How a record names an input file or folder without naming the machine: its path relative to
    the working directory when it lies inside it, else its name (and, for a file, a hash of its
    contents), so that a shipped config or report never holds /home/... or /tmp/... ."""
    relative = os.path.relpath(os.path.abspath(path))
    if not relative.startswith(".."):
        return relative
    name = os.path.basename(os.path.normpath(path))
    if not os.path.isfile(path):
        return name
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return f"{name} (sha256 {digest.hexdigest()[:16]})"
