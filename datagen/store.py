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


class StoreError(ValueError):
    """A row file that cannot be read as it is; the message names the file and line."""


class TreeStore:
    """One JSONL file of rows keyed by `problem_id` (trees here; bench uses it for decode rows)."""

    def __init__(self, out_dir, name=TREES, writer=False):
        self.dir = out_dir
        self.path = os.path.join(out_dir, name)
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
        self._parse(data)  # a bad complete line is an error: nothing is cut or written then
        if good != len(data):
            with open(self.path, "r+b") as f:
                f.truncate(good)
                f.flush()
                os.fsync(f.fileno())

    def trees(self, skip_bad=False):
        if not os.path.exists(self.path):
            return []
        with open(self.path, "rb") as f:
            return self._parse(f.read(), skip_bad)

    def _parse(self, data, skip_bad=False):
        """The rows of the file's bytes up to the last newline (an append may be under way after it)."""
        rows, self.skipped = [], 0
        for lineno, line in enumerate(data[:data.rfind(b"\n") + 1].splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                if not isinstance(row, dict) or "problem_id" not in row:
                    raise ValueError("a row must be a JSON object with a problem_id")
            except ValueError as exc:
                if skip_bad:
                    self.skipped += 1
                    continue
                raise StoreError(f"{self.path}:{lineno}: not a row ({str(exc).splitlines()[0][:80]}); "
                                 "nothing was changed (fix or remove the line, or read with --skip-bad)") from None
            rows.append(row)
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


def write_json_atomic(path, obj):
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=1)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
