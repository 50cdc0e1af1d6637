"""Append-only JSONL storage of trees (one tree per line) that survives being killed at any point.

Each tree is appended with one write and fsynced before the next problem counts as done. A run
killed mid-write can leave a torn last line: the bytes after the last newline. Only a writer
repairs, and only that (so a resumed run redoes exactly that problem: no tree is lost and none is
duplicated); readers ignore those bytes (an append may be under way) and never modify the file.
Any complete line that is not a JSON row is an error naming the file and line, for writers and
readers alike, unless a reader asks to skip (and count) such lines.
"""

import json
import os

TREES = "trees.jsonl"
NUMBER = (int, float)

# The fields readers rely on, per kind of row: a row without them (or with another type) is a bad
# line like one that is not JSON. A dict value is a nested record, a one-element list a list of them.
TREE_FIELDS = {"problem_id": str, "prompt_tokens": list, "prompt_text": str, "settings": dict,
               "trunk": {"tokens": list, "verdict": str}, "forks": list,
               "rollouts": [{"id": int, "tokens": list, "verdict": str, "prefix_len": int, "fork": int}],
               "stats": {"generated_tokens": int, "forward_tokens": int}}
RUN_FIELDS = {"problem_id": str, "strategy": str, "passed": (bool, int),
              "stats": {"policy_tokens": int, "value_tokens": int, "wall_s": {"total": NUMBER}},
              "candidates": [{"passed": (bool, int), "weight": int}]}
SAMPLE_FIELDS = {"problem_id": str, "strategy": str, "policy": str, "prompt_tokens": list, "prompt_text": str,
                 "stats": {"policy_tokens": int, "value_tokens": int, "wall_s": {"total": NUMBER}},
                 "candidates": [{"program": str, "text": str, "tokens": list, "finish": str, "passed": (bool, int),
                                 "verdict": str, "weight": int, "mean_logprob": NUMBER}]}
EXAMPLE_FIELDS = {"problem_id": str, "example_id": str, "label": int, "prompt_tokens": [int], "response_tokens": [int],
                  "label_start": int}


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


class StoreError(ValueError):
    """A row file that cannot be read as it is; the message names the file and line."""


class TreeStore:
    """One JSONL file of rows keyed by `problem_id` (trees here; bench uses it for decode rows)."""

    def __init__(self, out_dir, name=TREES, writer=False, fields=None):
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

    def trees(self, skip_bad=False):
        if not os.path.exists(self.path):
            return []
        with open(self.path, "rb") as f:
            rows, self.skipped = parse_rows(f.read(), self.path, self.fields, skip_bad)
        return rows

    def done_ids(self):
        return {t["problem_id"] for t in self.trees()}

    def append(self, tree):
        data = (json.dumps(tree, separators=(",", ":")) + "\n").encode()
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


def write_text_atomic(path, text):
    """Write a whole file so that a reader (or a crash) sees the old or the new one, never a part."""
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def write_json_atomic(path, obj):
    write_text_atomic(path, json.dumps(obj, indent=1))
