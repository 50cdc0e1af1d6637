"""datagen: prompts, fork selection, KV reuse, trees, crash-safe resume, export and balancing."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from common.store import RowStore, StoreError
from datagen.export import balance, export, split_problems, tree_stats
from datagen.tree import TreeConfig, examples, grow_tree, grow_trees, judge_tree, select_forks, to_networkx
from judge import Problem, ProblemError, load_dataset
from lm.models import ModelError, resolve_model
from lm.prompts import build_program, code_block_closed, extract_code, messages
from lm.prompts import test_input_messages as input_messages  # not test_*: pytest would collect it
from lm.sampling import SamplingParams

APPS_DIR = os.path.join(os.path.dirname(__file__), "fixtures", "apps", "train")
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# --- prompts and extraction ----------------------------------------------------------------------

def test_prompt_framing_per_problem_kind():
    stdio_p, call_p = load_dataset(APPS_DIR)
    he = load_dataset("humaneval")[0]
    texts = {name: messages(p, "reason")[-1]["content"] for name, p in
             (("stdio", stdio_p), ("call", call_p), ("humaneval", he))}
    assert "standard input" in texts["stdio"] and "starter code" not in texts["stdio"]
    assert "starter code" in texts["call"] and "class Solution" in texts["call"]
    assert he.starter_code.strip() in texts["humaneval"]
    assert all("reason" in t and "```python" in t for t in texts.values())
    mbpp = Problem(id="m", question="Square it.", kind="assert", fn_name="sq", tests=["assert sq(2) == 4\n"],
                   metadata={"test_list": ["assert sq(2) == 4"]})
    assert "`sq`" in messages(mbpp)[-1]["content"] and "assert sq(2) == 4" in messages(mbpp)[-1]["content"]
    # Without the tests: the reference's signature instead, and nothing the judge runs.
    mbpp.references = ["import math\n\ndef sq(x, *, power=2):\n    return x ** power\n"]
    hidden = messages(mbpp, tests=False)[-1]["content"]
    assert "def sq(x, *, power=2):" in hidden and "assert" not in hidden and "sq(2)" not in hidden
    assert "def sq(x, *, power=2):" in input_messages(mbpp)[-1]["content"]
    assert messages(he, tests=False) == messages(he)  # HumanEval's prompt shows no tests to hide
    # The code-only framing: same problem text, no reasoning asked for.
    for p in (stdio_p, call_p, he, mbpp):
        code, reason = messages(p, "code")[-1]["content"], messages(p, "reason")[-1]["content"]
        assert "reason" not in code and "no explanation" in code and "```python" in code
        assert code.split("\n")[:-1] == reason.split("\n")[:-1]
    with pytest.raises(ValueError, match="framing"):
        messages(he, "poem")


@pytest.mark.parametrize("text,expected", [
    ("Reasoning.\n```python\nprint(1)\n```\nDone.", "print(1)\n"),
    ("```python\nx = (\n```\nfixed:\n```python\nx = 1\n```", "x = 1\n"),
    ("first\n```python\na = 1\n```\nthen\n```python\nb = 2\n```", "b = 2\n"),
    ("```\nprint(2)\n```", "print(2)\n"),
    ("```python\nprint(3)\nprint(4)", "print(3)\nprint(4)\n"),  # unterminated last block
    ("def f():\n    return 1\n", "def f():\n    return 1\n"),   # bare code
    ("```text\nnot code here\n```\n```python\ny = 2\n```", "y = 2\n"),
])
def test_extract_code(text, expected):
    assert extract_code(text) == expected


def test_code_block_closed_and_humaneval_program():
    assert not code_block_closed("```python\nprint(1)\n")
    assert code_block_closed("intro\n```python\nprint(1)\n```")
    assert not code_block_closed("```python\nprint(\n```")
    he = load_dataset("humaneval")[2]  # truncate_number: body only gets the prompt prepended
    body = "    return number % 1.0\n"
    assert build_program(he, body).startswith(he.starter_code)
    full = f"def {he.fn_name}(number: float) -> float:\n    return number % 1.0\n"
    assert build_program(he, full).endswith(full)


# --- loaders beyond the judge's tests ------------------------------------------------------------

def test_parquet_rows(tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq
    rows = [{"problem_id": 3, "question": "q", "solutions": json.dumps(["print(input())"]),
             "input_output": json.dumps({"inputs": ["x\n"], "outputs": ["x\n"]}), "starter_code": "",
             "difficulty": "introductory", "url": "u"}]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "apps.parquet")
    (p,) = load_dataset(str(tmp_path / "apps.parquet"))
    assert (p.id, p.kind, p.inputs, p.references) == ("3", "stdio", ["x\n"], ["print(input())"])


def test_hub_name_without_network_is_one_clear_error(monkeypatch):
    import builtins
    real_import = builtins.__import__

    def no_datasets(name, *a, **k):
        if name == "datasets":
            raise ImportError(name)
        return real_import(name, *a, **k)
    monkeypatch.setattr(builtins, "__import__", no_datasets)
    with pytest.raises(ProblemError, match="pip install datasets"):
        load_dataset("codeparrot/apps")


def test_model_specs():
    with pytest.raises(ModelError, match="no GGUF"):
        resolve_model("/nonexistent/model.gguf")
    with pytest.raises(ModelError, match="no model at"):
        resolve_model("./no/such/dir")
    assert resolve_model("microsoft/Phi-4-mini-instruct") == "microsoft/Phi-4-mini-instruct"


# --- forks and KV reuse --------------------------------------------------------------------------

def test_select_forks_lowest_probability_with_spacing():
    lps = [-0.1, -5.0, -4.0, -0.2, -3.0, -0.1, -6.0, -9.0]  # last (index 7) is never a fork
    assert select_forks(lps, 3) == [1, 2, 6]
    assert select_forks(lps, 3, min_spacing=2) == [1, 4, 6]
    assert select_forks(lps, 10) == list(range(7))
    assert select_forks([-1.0], 2) == []


def test_fork_kv_reuse_matches_recomputing(tiny_policy):
    p = tiny_policy
    prompt = p.prompt_tokens([{"role": "user", "content": "print the sum of two numbers"}])
    ((trunk, state),) = p.sample_with_state(prompt, SamplingParams(max_new_tokens=24, seed=3, ignore_eos=True))
    lp, _ = p.teacher_force(prompt, trunk.tokens)
    assert max(abs(a - b) for a, b in zip(lp, trunk.logprobs)) < 1e-4
    positions = [len(prompt) + 2, len(prompt) + 9, len(prompt) + 17]
    for params in (SamplingParams(max_new_tokens=12, temperature=0), SamplingParams(max_new_tokens=12, seed=11)):
        before = p.stats.forward_tokens
        forks = p.sample_forks(state, positions, 3, params)
        reused = p.stats.forward_tokens - before
        for pos, group in zip(positions, forks):
            fresh = p.sample(state.tokens[:pos], 3, params)
            if params.temperature == 0:
                assert all(c.tokens == fresh[0].tokens for c in group)
                assert max(abs(a - b) for a, b in zip(group[0].logprobs, fresh[0].logprobs)) < 1e-4
        # The shared prefixes were not recomputed: one prefill token per row, then decoding.
        assert reused <= 9 * 12
    # Seeded sampling from a state is reproducible.
    a = p.sample_forks(state, positions, 2, SamplingParams(max_new_tokens=10, seed=5))
    b = p.sample_forks(state, positions, 2, SamplingParams(max_new_tokens=10, seed=5))
    assert [[c.tokens for c in g] for g in a] == [[c.tokens for c in g] for g in b]


# --- trees ---------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def apps_problems():
    return load_dataset(APPS_DIR)


def test_reference_tree_structure_and_labels(tiny_policy, apps_problems):
    problem = apps_problems[0]
    cfg = TreeConfig(forks=3, per_fork=2, trunk="reference", max_new_tokens=16, timeout=2)
    tree = judge_tree(grow_tree(tiny_policy, problem, cfg), problem, cfg)
    trunk = tree["trunk"]
    assert trunk["source"] == "reference" and trunk["verdict"] == "pass"
    assert [f["index"] for f in tree["forks"]] == select_forks(trunk["logprobs"], 3)
    assert len(tree["rollouts"]) == 6
    for f in tree["forks"]:
        kids = [tree["rollouts"][i] for i in f["rollouts"]]
        assert all(r["prefix_len"] == f["index"] for r in kids)
        assert f["value"] == sum(r["verdict"] == "pass" for r in kids) / 2
        assert all(r["text"].startswith(tiny_policy.decode(trunk["tokens"][:f["index"]])) for r in kids)
    exs = examples(tree)
    assert exs[0]["label"] == 1 and exs[0]["label_start"] == 0
    for ex, r in zip(exs[1:], tree["rollouts"]):
        assert ex["label"] == int(r["verdict"] == "pass") and ex["label_start"] == r["prefix_len"]
        assert len(ex["response_tokens"]) == r["prefix_len"] + len(r["tokens"])
    g = to_networkx(tree)
    assert g.number_of_nodes() == 2 + 3 + 6 and g.out_degree("trunk") == 3


def test_auto_trunk_falls_back_to_reference(tiny_policy, apps_problems):
    cfg = TreeConfig(forks=1, per_fork=1, trunk="auto", retries=2, max_new_tokens=8, timeout=2)
    tree = grow_tree(tiny_policy, apps_problems[1], cfg)
    assert tree["trunk"]["source"] == "reference" and tree["trunk"]["attempts"] == 2
    # Both judged sampled attempts stay as training examples, labelled from their first token.
    assert len(tree["rejected_attempts"]) == 2 and all(a["verdict"] != "pass" for a in tree["rejected_attempts"])
    exs = {e["example_id"]: e for e in examples(judge_tree(tree, apps_problems[1], cfg))}
    assert exs["a0"]["label"] == 0 and exs["a0"]["label_start"] == 0
    assert exs["a1"]["response_tokens"] == tree["rejected_attempts"][1]["tokens"]
    sampled = grow_tree(tiny_policy, apps_problems[1], TreeConfig(forks=1, per_fork=1, trunk="sample",
                                                                    retries=2, max_new_tokens=8))
    assert sampled["trunk"]["source"] == "sample" and sampled["trunk"]["verdict"] != "pass"


def test_trees_grown_side_by_side_match_one_at_a_time(tiny_policy, apps_problems):
    # Greedy, so the batch (grow_trees: every trunk, then every fork, in one refilled batch of 4
    # rows) must give each problem exactly the tree it gets alone, reference fallback included.
    cfg = TreeConfig(forks=2, per_fork=2, trunk="auto", retries=2, max_new_tokens=10, temperature=0, timeout=2)
    items = [(apps_problems[0], 0), (apps_problems[1], 1), (apps_problems[0], 2)]
    together = grow_trees(tiny_policy, items, cfg, max_rows=4)
    for (problem, seed), tree in zip(items, together):
        alone = grow_tree(tiny_policy, problem, cfg, problem_seed=seed)
        assert tree["problem_id"] == problem.id
        for key in ("source", "tokens", "verdict", "attempts"):
            assert tree["trunk"][key] == alone["trunk"][key]
        assert [a["tokens"] for a in tree["rejected_attempts"]] == [a["tokens"] for a in alone["rejected_attempts"]]
        assert [f["index"] for f in tree["forks"]] == [f["index"] for f in alone["forks"]]
        assert [(r["fork"], r["prefix_len"], r["tokens"], r["text"]) for r in tree["rollouts"]] == \
            [(r["fork"], r["prefix_len"], r["tokens"], r["text"]) for r in alone["rollouts"]]
        assert tree["stats"]["generated_tokens"] == alone["stats"]["generated_tokens"]
    assert grow_trees(tiny_policy, [], cfg) == []


# --- storage and resume --------------------------------------------------------------------------

def test_store_cuts_torn_last_line(tmp_path):
    store = RowStore(str(tmp_path), "trees.jsonl")
    store.append({"problem_id": "a"})
    store.append({"problem_id": "b"})
    with open(store.path, "ab") as f:
        f.write(b'{"problem_id": "c", "trunk": {"tok')  # killed mid-write
    # A reader ignores the torn bytes and leaves the file as it is; only a writer cuts them.
    torn = open(store.path, "rb").read()
    assert RowStore(str(tmp_path), "trees.jsonl").done_ids() == {"a", "b"} and open(store.path, "rb").read() == torn
    assert RowStore(str(tmp_path), "trees.jsonl", writer=True).done_ids() == {"a", "b"}
    assert open(store.path, "rb").read().endswith(b'"b"}\n')
    # A complete line that does not parse is no crash's doing: an error naming the line, file unchanged.
    with open(store.path, "ab") as f:
        f.write(b'not json\n{"problem_id": "e"}\n')
    before = open(store.path, "rb").read()
    for writer in (False, True):
        with pytest.raises(StoreError, match=r"trees.jsonl:3: not a row"):
            RowStore(str(tmp_path), "trees.jsonl", writer=writer).rows()
        assert open(store.path, "rb").read() == before
    reader = RowStore(str(tmp_path), "trees.jsonl")
    assert [t["problem_id"] for t in reader.rows(skip_bad=True)] == ["a", "b", "e"] and reader.skipped == 1


def _build(model_dir, dataset, out):
    return [sys.executable, "-m", "datagen.cli", "build", "--dataset", dataset, "--policy", model_dir,
            "--out", out, "--forks", "2", "--per-fork", "2", "--trunk", "reference",
            "--max-new-tokens", "24", "--timeout", "2", "--batch-rows", "4",  # trees grow 4 at a time
            "--dtype", "float32"]  # bf16 kernels (auto on AMX) may round one run's log-probs apart from another's


def test_sigkill_mid_build_loses_and_duplicates_nothing(tiny_model_dir, tmp_path):
    rows = [{"problem_id": i, "question": "echo", "solutions": ["print(input())"],
             "input_output": {"inputs": [f"{i}\n"], "outputs": [f"{i}\n"]}} for i in range(8)]
    dataset = tmp_path / "rows.jsonl"
    dataset.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = str(tmp_path / "trees")
    env = dict(os.environ, PYTHONPATH=REPO)
    proc = subprocess.Popen(_build(tiny_model_dir, str(dataset), out), env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    path = os.path.join(out, "trees.jsonl")
    deadline = time.time() + 120
    while time.time() < deadline:
        if os.path.exists(path) and open(path, "rb").read().count(b"\n") >= 2:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    partial = open(path, "rb").read().count(b"\n")
    assert 2 <= partial < 8, "the build must be killed mid-run"
    subprocess.run(_build(tiny_model_dir, str(dataset), out), env=env, check=True, capture_output=True)
    ids = [t["problem_id"] for t in RowStore(out, "trees.jsonl").rows()]
    assert sorted(ids, key=int) == [str(i) for i in range(8)]
    # Per-problem seeds: a resumed run writes the same trees as an uninterrupted one.
    fresh = str(tmp_path / "fresh")
    subprocess.run(_build(tiny_model_dir, str(dataset), fresh), env=env, check=True, capture_output=True)
    strip = lambda t: {k: v for k, v in t.items() if k != "stats"}
    assert [strip(t) for t in RowStore(out, "trees.jsonl").rows()] == [strip(t) for t in RowStore(fresh, "trees.jsonl").rows()]


# --- export --------------------------------------------------------------------------------------

def _fake_tree(pid, verdicts):
    rollouts = [{"id": i, "fork": 0, "prefix_len": 1, "tokens": [5, 6], "logprobs": [-1, -1], "text": "t",
                 "verdict": v, "finish_reason": "eos"} for i, v in enumerate(verdicts)]
    return {"problem_id": pid, "settings": {"policy": "p"}, "prompt_tokens": [1, 2], "prompt_text": "pt",
            "trunk": {"source": "reference", "tokens": [3, 4, 7], "logprobs": [-1, -2, -3], "text": "tr",
                      "verdict": "pass"},
            "forks": [{"index": 1, "token": 4, "logprob": -2, "rollouts": list(range(len(verdicts))), "value": None}],
            "rollouts": rollouts, "stats": {"generated_tokens": 6, "forward_tokens": 8, "fork_seconds": 1.0}}


def test_export_split_by_problem_and_balance(tmp_path):
    trees = [_fake_tree(f"p{i}", ["pass"] + ["wrong_answer"] * (i + 2)) for i in range(10)]
    stats = export(trees, str(tmp_path), balanced=True, test_fraction=0.3, seed=1)
    read = lambda n: [json.loads(l) for l in open(tmp_path / n)]  # noqa: E741
    train, test, test_bal = read("train.jsonl"), read("test.jsonl"), read("test_balanced.jsonl")
    assert {r["problem_id"] for r in train}.isdisjoint({r["problem_id"] for r in test})
    assert len({r["problem_id"] for r in test}) == 3 and stats["problems"] == {"train": 7, "test": 3}
    for part in (train, test_bal):
        for pid in {r["problem_id"] for r in part}:
            labels = [r["label"] for r in part if r["problem_id"] == pid]
            assert labels.count(1) == labels.count(0)
    assert stats["class_ratio"]["train"]["positive_fraction"] == 0.5
    assert stats["class_ratio"]["test"]["positive_fraction"] < 0.5
    r = next(r for r in test if r["example_id"] == "r0")
    assert r["response_tokens"] == [3, 5, 6] and r["label_start"] == 1 and r["label"] == 1
    # Whole programs: the same rows, each labelled from its response's first token.
    export(trees, str(tmp_path / "whole"), test_fraction=0.3, seed=1, label_from="start")
    whole = [json.loads(line) for line in open(tmp_path / "whole" / "test.jsonl")]
    assert [(w["example_id"], w["label"]) for w in whole] == [(t["example_id"], t["label"]) for t in test]
    assert {(w["label_start"], w["label_start_char"]) for w in whole} == {(0, 0)}
    assert split_problems([f"p{i}" for i in range(10)], 0.3, 1) == split_problems([f"p{i}" for i in range(10)], 0.3, 1)


def test_balance_leaves_single_class_problems():
    rows = [{"problem_id": "a", "label": 0}] * 3 + [{"problem_id": "b", "label": 1}, {"problem_id": "b", "label": 0},
                                                    {"problem_id": "b", "label": 0}]
    out = balance(rows, 0)
    assert [r["label"] for r in out if r["problem_id"] == "a"] == [0, 0, 0]
    assert sorted(r["label"] for r in out if r["problem_id"] == "b") == [0, 0, 1, 1]


def test_tree_stats_per_fork_depth():
    t = _fake_tree("p", ["pass", "wrong_answer"])
    t["forks"].append({"index": 2, "token": 7, "logprob": -3, "rollouts": [1]})
    s = tree_stats([t])
    assert s["per_fork_rank"]["1"] == {"rollouts": 2, "pass_rate": 0.5}
    assert s["per_fork_rank"]["2"] == {"rollouts": 1, "pass_rate": 0.0}
    assert s["trunks"] == {"sample": 0, "reference": 1}


def test_export_of_judged_samples_and_a_held_out_only_split(tmp_path):
    """A `bench quality` sample row exports one example per sample; test_fraction 1 holds every problem out."""
    rows = [{"problem_id": f"p{i}", "policy": "p", "tokenizer": "t", "prompt_tokens": [1, 2], "prompt_text": "pt",
             "candidates": [{"tokens": [5, 6, 7], "text": "abc", "passed": j == 0} for j in range(3)]}
            for i in range(4)]
    stats = export(rows, str(tmp_path), test_fraction=1.0)
    test = [json.loads(line) for line in open(tmp_path / "test.jsonl")]
    assert stats["problems"] == {"train": 0, "test": 4} and len(test) == 12
    assert [(r["example_id"], r["label"], r["label_start"]) for r in test[:3]] == [("s0", 1, 0), ("s1", 0, 0), ("s2", 0, 0)]
    assert test[0]["response_tokens"] == [5, 6, 7] and test[0]["tokenizer"] == "t"


def test_read_only_commands_never_change_a_damaged_store(tmp_path):
    """The reported case: a trees.jsonl whose last two lines are not JSON. stats and export stop with
    one line naming the file and line, exit non-zero, and leave the file byte-identical."""
    path = tmp_path / "trees.jsonl"
    good = "".join(json.dumps(_fake_tree(f"p{i}", ["pass", "wrong_answer"])) + "\n" for i in range(2))
    path.write_bytes((good + "{not json\nalso bad\n").encode())
    before = path.read_bytes()
    for args in (["stats", str(tmp_path)], ["export", str(tmp_path), "--out", str(tmp_path / "data")]):
        r = subprocess.run([sys.executable, "-m", "datagen.cli", *args], capture_output=True, text=True, cwd=REPO)
        assert r.returncode != 0 and len(r.stderr.strip().splitlines()) == 1, r.stderr
        assert "trees.jsonl:3: not a row" in r.stderr and "Traceback" not in r.stderr
        assert path.read_bytes() == before
    r = subprocess.run([sys.executable, "-m", "datagen.cli", "stats", str(tmp_path), "--skip-bad", "--json"],
                       capture_output=True, text=True, cwd=REPO)
    assert r.returncode == 0 and json.loads(r.stdout)["trees"] == 2 and "skipped 2 bad lines" in r.stderr
    assert path.read_bytes() == before
