"""Malformed inputs to every CLI entry (property-based, fixed seed and example count): problem files
(APPS, HumanEval and MBPP rows, APPS directories), dataset files, trees, bench runs, export datasets
and value checkpoints. Each must end in a non-zero exit with at most two lines on stderr, no
traceback, and every input file byte-identical afterwards. All of these fail before any model
loads, so a case costs milliseconds; a command that wrongly accepted its input would go on to load
a model and the test would fail on its exit status."""

import hashlib
import json
import os
import shutil
import tempfile

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bench.cli import main as bench_main
from datagen.cli import main as datagen_main
from engine.cli import main as decode_main
from judge.cli import main as judge_main
from valuemodel.cli import main as valuemodel_main

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures")
VALUE = os.path.join(os.path.dirname(__file__), "..", "valuemodel", "default")
FUZZ = settings(max_examples=25, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

APPS = {"problem_id": 1, "question": "echo", "starter_code": "", "solutions": json.dumps(["print(input())"]),
        "input_output": json.dumps({"inputs": ["1\n"], "outputs": ["1\n"]})}
HUMANEVAL = {"task_id": "T/0", "prompt": "def f(x):\n", "test": "def check(c):\n    assert c(1) == 1\n",
             "entry_point": "f", "canonical_solution": "    return x\n"}
MBPP = {"task_id": 2, "text": "Return x.", "code": "def f(x):\n    return x", "test_list": ["assert f(1) == 1"]}
LEETCODE = {"task_id": "t", "query": "Return x.\n```python\nclass Solution:\n    def f(self, x): ...\n```",
            "prompt": "from typing import *\n", "entry_point": "Solution().f",
            "test": "def check(candidate):\n    assert candidate(x=1) == 1\n",
            "completion": "class Solution:\n    def f(self, x):\n        return x\n"}
# (LeetCode without its query is a HumanEval row: legal, so only its other fields are broken)
ROWS = [(APPS, ["question", "input_output"]), (HUMANEVAL, ["task_id", "prompt", "test", "entry_point"]),
        (MBPP, ["task_id", "text", "test_list"]), (LEETCODE, ["task_id", "prompt", "test", "entry_point"])]

TREE = {"problem_id": "p0", "settings": {"policy": "p"}, "prompt_tokens": [1, 2], "prompt_text": "pt",
        "trunk": {"source": "reference", "tokens": [3, 4, 7], "logprobs": [-1, -2, -3], "text": "tr", "verdict": "pass"},
        "forks": [{"index": 1, "token": 4, "logprob": -2, "rollouts": [0, 1], "value": None}],
        "rollouts": [{"id": i, "fork": 0, "prefix_len": 1, "tokens": [5, 6], "logprobs": [-1, -1], "text": "t",
                      "verdict": v, "finish_reason": "eos"} for i, v in enumerate(["pass", "wrong_answer"])],
        "stats": {"generated_tokens": 4, "forward_tokens": 8, "fork_seconds": 1.0}}
SAMPLE = {"problem_id": "p0", "strategy": "sample", "policy": "p", "tokenizer": "t", "prompt_tokens": [1, 2],
          "prompt_text": "pt", "stats": {"policy_tokens": 4, "value_tokens": 0, "wall_s": {"sample": 1.0, "total": 1.0}},
          "candidates": [{"program": f"print({i})", "text": "t", "tokens": [5, 6], "finish": "eos", "passed": i == 0,
                          "verdict": "pass" if i == 0 else "wrong_answer", "weight": 1, "mean_logprob": -0.5, "value": None}
                         for i in range(2)]}
EXAMPLE = {"problem_id": "p0", "example_id": "r0", "policy": "p", "tokenizer": "t", "prompt_tokens": [1, 2],
           "prompt_text": "pt", "response_tokens": [3, 4], "response_text": "rt", "label": 1, "label_start": 0}

# Replacement values of another JSON type than the field's; empty values are left out on purpose
# (an empty input_output is a problem without tests, which is legal).
OTHER_VALUES = st.sampled_from([True, 7, 1.5, "s", [1], {"a": 1}, [{"b": None}]])


def _json(obj):
    return json.dumps(obj).encode()


@st.composite
def broken_object(draw, obj, required, keep=0):
    """A JSON object's bytes, made malformed: truncated (to at least `keep` bytes), replaced by junk,
    a required field of the wrong type, or a required field missing."""
    data = _json(obj)
    how = draw(st.sampled_from(["truncate", "junk", "retype", "delete"]))
    if how == "truncate":
        return data[:draw(st.integers(keep, len(data) - 1))]
    if how == "junk":
        return draw(st.binary(min_size=1, max_size=40).filter(lambda b: b.strip() and b.strip() != b"{}"))
    key = draw(st.sampled_from(required))
    if how == "retype":
        value = draw(OTHER_VALUES.filter(lambda v: type(v) is not type(obj[key])))
        return _json({**obj, key: value})
    return _json({k: v for k, v in obj.items() if k != key})


def broken_jsonl(obj, required, lines=3):
    """A JSONL file of `lines` copies of a row, one of them (a complete line) malformed."""
    # (a line cut to nothing is a blank line, which JSONL readers skip: legal)
    return st.tuples(st.integers(0, lines - 1), broken_object(obj, required, keep=1)).map(
        lambda t: b"".join((t[1].replace(b"\n", b" ") if i == t[0] else _json(obj)) + b"\n" for i in range(lines)))


def _snapshot(root):
    out = {}
    for folder, _, files in os.walk(root):
        for name in files:
            path = os.path.join(folder, name)
            with open(path, "rb") as f:
                out[os.path.relpath(path, root)] = hashlib.sha256(f.read()).hexdigest()
    return out


@pytest.fixture
def workdir(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("FORKCODE_CACHE", tempfile.mkdtemp(prefix="fuzz-cache-"))

    def accepted(*args, **kwargs):  # a command got past its input checks: fail now, not after a model run
        raise AssertionError("a malformed input was accepted (a model was about to load)")
    import lm.policy
    import valuemodel.model
    monkeypatch.setattr(lm.policy, "load_policy", accepted)
    monkeypatch.setattr(valuemodel.model.ValueModel, "from_base", classmethod(accepted))


def _refuses(capsys, main, argv, inputs):
    """Runs a CLI main in-process on malformed inputs (a directory): a non-zero exit, at most two
    lines on stderr, no traceback, the inputs unchanged."""
    before = _snapshot(inputs)
    capsys.readouterr()
    with pytest.raises(SystemExit) as exc:
        main(argv)  # any exception other than SystemExit is a traceback: the test fails with it
    err = capsys.readouterr().err
    assert exc.value.code not in (0, None), f"{argv} accepted a malformed input"
    lines = err.strip().splitlines()
    assert 1 <= len(lines) <= 2 and "Traceback" not in err, err
    assert _snapshot(inputs) == before, f"{argv} modified its input"


def _fresh(files):
    """A new directory (hypothesis examples share no state) holding {relative path: bytes}."""
    root = tempfile.mkdtemp(prefix="fuzz-")
    for rel, data in files.items():
        path = os.path.join(root, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(data)
    return root


@FUZZ
@given(st.sampled_from(range(len(ROWS))).flatmap(lambda i: broken_object(*ROWS[i])))
def test_malformed_problem_files(workdir, capsys, data):
    root = _fresh({"problem.json": data, "prog.py": b"print(input())\n"})
    problem = os.path.join(root, "problem.json")
    _refuses(capsys, judge_main, ["run", os.path.join(root, "prog.py"), "--problem", problem], root)
    _refuses(capsys, decode_main, ["--problem", problem, "--strategy", "greedy"], root)
    _refuses(capsys, valuemodel_main, ["score", os.path.join(root, "prog.py"), "--problem", problem, "--value", VALUE], root)
    shutil.rmtree(root)


@FUZZ
@given(st.sampled_from(range(len(ROWS))).flatmap(lambda i: broken_jsonl(*ROWS[i])))
def test_malformed_dataset_files(workdir, capsys, data):
    root = _fresh({"data/problems.jsonl": data})
    dataset, out = os.path.join(root, "data", "problems.jsonl"), os.path.join(root, "out")
    inputs = os.path.join(root, "data")
    _refuses(capsys, datagen_main, ["build", "--dataset", dataset, "--out", out], inputs)
    _refuses(capsys, bench_main, ["quality", "--dataset", dataset, "--out", out, "--strategies", "sample"], inputs)
    _refuses(capsys, decode_main, ["--dataset", dataset, "--strategy", "greedy"], inputs)
    _refuses(capsys, judge_main, ["check", dataset], inputs)
    _refuses(capsys, datagen_main, ["dedupe", dataset, "--against", "humaneval", "--out", out], inputs)


def _not_empty_json(data):
    """Empty JSON values (null, {}, [], "") in an APPS file count as the file being absent: legal."""
    try:
        return json.loads(data) not in (None, {}, [], "")
    except ValueError:
        return True


@FUZZ
@given(st.sampled_from(["input_output.json", "solutions.json", "metadata.json"]).flatmap(
    lambda name: st.tuples(st.just(name), st.one_of(
        st.binary(min_size=1, max_size=40).filter(lambda b: b.strip() and _not_empty_json(b)),
        # any JSON object is valid metadata, so only other types are malformed there
        OTHER_VALUES.filter(lambda v: name != "metadata.json" or not isinstance(v, dict)).map(_json)))),
    st.booleans())
def test_malformed_apps_directories(workdir, capsys, name_data, whole_dataset):
    name, data = name_data
    root = tempfile.mkdtemp(prefix="fuzz-")
    shutil.copytree(os.path.join(FIXTURES, "apps", "train"), os.path.join(root, "train"))
    target = os.path.join(root, "train", "1000", name)
    with open(target, "wb") as f:
        f.write(data)
    spec = os.path.join(root, "train") if whole_dataset else os.path.join(root, "train", "1000")
    _refuses(capsys, decode_main, ["--dataset" if whole_dataset else "--problem", spec, "--strategy", "greedy"], root)
    _refuses(capsys, judge_main, ["check", "--dataset", spec], root)


@FUZZ
@given(broken_jsonl(TREE, list(TREE)))
def test_malformed_trees(workdir, capsys, data):
    root = _fresh({"trees/trees.jsonl": data})
    trees = os.path.join(root, "trees")
    _refuses(capsys, datagen_main, ["stats", trees], trees)
    _refuses(capsys, datagen_main, ["export", trees, "--out", os.path.join(root, "export")], trees)


@FUZZ
@given(broken_jsonl(SAMPLE, [k for k in SAMPLE if k != "tokenizer"]), st.booleans())
def test_malformed_bench_runs(workdir, capsys, data, bad_settings):
    settings_json = b'{"dataset": "humaneval", "k": 8' if bad_settings else b'{"dataset": "humaneval", "k": 8}'
    runs = (_json(SAMPLE) + b"\n") * 2 if bad_settings else data
    root = _fresh({"q/settings.json": settings_json, "q/runs/sample.jsonl": runs})
    quality = os.path.join(root, "q")
    inputs = os.path.join(quality, "runs") if not bad_settings else quality
    _refuses(capsys, bench_main, ["report", quality], inputs)
    if not bad_settings:
        _refuses(capsys, datagen_main, ["export", quality, "--out", os.path.join(root, "export")], inputs)


@FUZZ
@given(st.sampled_from(["train.jsonl", "test.jsonl", "test_balanced.jsonl"]),
       broken_jsonl(EXAMPLE, ["problem_id", "example_id", "label", "prompt_tokens", "response_tokens", "label_start"]))
def test_malformed_export_datasets(workdir, capsys, name, data):
    files = {f"export/{n}": (_json(EXAMPLE) + b"\n") * 2 for n in ("train.jsonl", "test.jsonl", "test_balanced.jsonl")}
    root = _fresh({**files, f"export/{name}": data})
    export, out = os.path.join(root, "export"), os.path.join(root, "out")
    if name == "train.jsonl":
        _refuses(capsys, valuemodel_main, ["train", "--data", export, "--out", out], export)
        _refuses(capsys, valuemodel_main, ["cv", "--data", export], export)
    else:
        _refuses(capsys, valuemodel_main, ["eval", "--value", VALUE, "--data", export, "--out", out], export)
    if name == "test.jsonl":  # training reads test.jsonl (not test_balanced) for its --eval loss
        _refuses(capsys, valuemodel_main, ["train", "--data", export, "--out", out, "--eval"], export)


@FUZZ
@given(broken_object(json.load(open(os.path.join(VALUE, "value_config.json"))), ["base", "last_layers", "base_signature"]))
def test_malformed_value_checkpoints(workdir, capsys, data):
    export = {f"export/{n}": (_json(EXAMPLE) + b"\n") * 2 for n in ("test.jsonl", "test_balanced.jsonl")}
    root = _fresh({"value/value_config.json": data, "problem.json": _json(HUMANEVAL), "prog.py": b"def f(x):\n    return x\n",
                   **export})
    value, problem = os.path.join(root, "value"), os.path.join(root, "problem.json")
    _refuses(capsys, valuemodel_main, ["eval", "--value", value, "--data", os.path.join(root, "export"),
                                       "--out", os.path.join(root, "out")], root)
    _refuses(capsys, valuemodel_main, ["score", os.path.join(root, "prog.py"), "--problem", problem, "--value", value], root)
    _refuses(capsys, decode_main, ["--problem", problem, "--strategy", "best_of_k", "--value", value], root)
    _refuses(capsys, bench_main, ["quality", "--dataset", problem, "--strategies", "best_of_k", "--value", value,
                                  "--out", os.path.join(root, "q")], os.path.join(root, "value"))
