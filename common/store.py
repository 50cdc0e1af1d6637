"""Files that survive being killed at any point: append-only JSONL row files and whole files
written atomically.

A row file is appended with one write per row, fsynced before the next row counts as done. A run
killed mid-write can leave a torn last line: the bytes after the last newline. Only a writer
repairs, and only that (so a resumed run redoes exactly that row: none is lost and none is
duplicated); readers ignore those bytes (an append may be under way) and never modify the file.
Any complete line that is not a row is an error naming the file and line, for writers and readers
alike, unless a reader asks to skip (and count) such lines.

No forkcode imports: every layer may use it.
"""

import json
import os
import shutil
from contextlib import contextmanager

from common.cli import ForkcodeError


def schema_error(row, fields, where="row"):
    """None if `row` has every field of `fields` with its type, else what is wrong."""
    if not isinstance(row, dict):
        return f"{where} must be a JSON object"
    for name, kind in fields.items():
        if name not in row:
            return f"{where} lacks {name!r}"
        problem = _value_error(row[name], kind, name)
        if problem:
            return problem
    return None


def _value_error(value, kind, name):
    if isinstance(kind, dict):
        return schema_error(value, kind, name)
    if isinstance(kind, list):
        if not isinstance(value, list):
            return f"{name} must be a list"
        return next((e for e in (_value_error(v, kind[0], f"{name}[{i}]") for i, v in enumerate(value)) if e), None)
    if isinstance(value, bool) and bool not in (kind if isinstance(kind, tuple) else (kind,)):
        return f"{name} must be {_type_name(kind)}"  # JSON true is not a number here
    return None if isinstance(value, kind) else f"{name} must be {_type_name(kind)}"


def _type_name(kind):
    kinds = kind if isinstance(kind, tuple) else (kind,)
    return " or ".join({"str": "text", "int": "an integer", "float": "a number", "list": "a list",
                        "bool": "true/false"}.get(k.__name__, k.__name__) for k in kinds)


class StoreError(ForkcodeError, ValueError):
    """A row file that cannot be read as it is; the message names the file and line."""


class RowStore:
    """One append-only JSONL file of rows keyed by `problem_id` (datagen's trees, bench's runs), each
    checked against `fields` when read."""

    def __init__(self, out_dir, name, writer=False, fields=None):
        self.dir = out_dir
        self.path = os.path.join(out_dir, name)
        self.fields = fields or {"problem_id": str}
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
