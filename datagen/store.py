"""Append-only JSONL storage of trees (one tree per line) that survives being killed at any point.

Each tree is appended with one write and fsynced before the next problem counts as done. A run
killed mid-write can leave a torn last line; opening the store cuts it off, so a resumed run
redoes exactly that problem: no tree is lost and none is duplicated.
"""

import json
import os

TREES = "trees.jsonl"


class TreeStore:
    """One JSONL file of rows keyed by `problem_id` (trees here; bench uses it for decode rows)."""

    def __init__(self, out_dir, name=TREES):
        self.dir = out_dir
        self.path = os.path.join(out_dir, name)
        os.makedirs(out_dir, exist_ok=True)
        self._repair()

    def _repair(self):
        if not os.path.exists(self.path):
            return
        with open(self.path, "rb") as f:
            data = f.read()
        good = data.rfind(b"\n") + 1  # everything after the last newline is a torn write
        lines = data[:good].splitlines(keepends=True)
        # A complete line that is not JSON can only be a torn write followed by a newline: drop it.
        while lines:
            try:
                json.loads(lines[-1])
                break
            except ValueError:
                good -= len(lines.pop())
        if good != len(data):
            with open(self.path, "r+b") as f:
                f.truncate(good)
                f.flush()
                os.fsync(f.fileno())

    def trees(self):
        if not os.path.exists(self.path):
            return []
        with open(self.path, encoding="utf-8") as f:
            return [json.loads(line) for line in f if line.strip()]

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
