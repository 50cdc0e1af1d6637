"""The quality report: its statistics, judged runs that resume, and the `bench` CLI end to end."""

import json
import os
import subprocess
import sys

import pytest

from bench.quality import bootstrap, run_strategy, summarize, wilson, write_report
from engine.result import DecodeConfig
from judge import Problem

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_wilson_interval_known_values():
    lo, hi = wilson(5, 10)
    assert lo == pytest.approx(0.2366, abs=1e-4) and hi == pytest.approx(0.7634, abs=1e-4)
    lo, hi = wilson(0, 10)
    assert lo == 0.0 and hi == pytest.approx(0.2775, abs=1e-4)
    assert wilson(0, 0) == (None, None)


def test_bootstrap_interval_contains_the_mean_and_narrows_with_more_problems():
    small = bootstrap([0.0, 1.0] * 5, lambda s: sum(s) / len(s))
    large = bootstrap([0.0, 1.0] * 200, lambda s: sum(s) / len(s))
    assert small[0] < 0.5 < small[1] and large[0] < 0.5 < large[1]
    assert large[1] - large[0] < small[1] - small[0]


def _row(strategy, passed, cands=(), tokens=100, value_tokens=0):
    return {"problem_id": "x", "strategy": strategy, "passed": passed,
            "stats": {"policy_tokens": tokens, "value_tokens": value_tokens, "wall_s": {"total": 2.0}},
            "candidates": [{"value": v, "passed": p, "weight": w} for v, p, w in cands]}


def test_summarize_selection_against_random_pick_exactly():
    # Problem A: 4 samples, 1 passes and has the top value -> picked 1, random 1/4.
    # Problem B: 4 samples (one folded duplicate), 2 pass, top value fails -> picked 0, random 1/2.
    # Problem C: nothing passes -> both 0.
    rows = {"best_of_k": [
        _row("best_of_k", True, [(0.9, True, 1), (0.2, False, 1), (0.1, False, 2)], tokens=400, value_tokens=480),
        _row("best_of_k", False, [(0.8, False, 2), (0.5, True, 1), (0.4, True, 1)], tokens=400, value_tokens=480),
        _row("best_of_k", False, [(0.5, False, 4)], tokens=400, value_tokens=480)],
        "greedy": [_row("greedy", True), _row("greedy", False), _row("greedy", False)]}
    s = summarize(rows)
    sel = s["best_of_k_selection"]
    assert sel["k"] == 4
    assert sel["pass@1"]["value_picked"] == pytest.approx(1 / 3)
    assert sel["pass@1"]["random_pick"] == pytest.approx((0.25 + 0.5 + 0) / 3)
    assert sel["pass@1"]["relative_gain"] == pytest.approx((1 / 3) / 0.25 - 1)
    # pass@3: A top-3 has the pass (1); B top-3 = 0.8 x2 fails + one of the two 0.5/0.4 -> the 0.5 passes (1).
    assert sel["pass@3"]["value_picked"] == pytest.approx(2 / 3)
    assert sel["pass@3"]["random_pick"] == pytest.approx((0.75 + (1 - 0 / 4) + 0) / 3)
    t = s["strategies"]
    assert t["sample"]["pass@1"] == pytest.approx(0.25) and t["sample"]["pass@4"] == pytest.approx(2 / 3)
    assert t["sample"]["policy_tokens"] == pytest.approx(100) and t["sample"]["value_tokens"] == 0
    assert t["best_of_k"]["pass@1"] == pytest.approx(1 / 3) and t["best_of_k"]["value_tokens"] == 480
    assert t["greedy"]["ci95"] == pytest.approx(wilson(1, 3))


SUM = Problem(id="sum", question="Print the sum of two integers read from one line.", kind="stdio",
              inputs=["1 2\n", "5 7\n"], outputs=["3\n", "12\n"])
RIGHT = "a, b = map(int, input().split())\nprint(a + b)\n"
WRONG = "a, b = map(int, input().split())\nprint(a - b)\n"


class FakePolicy:
    """Three samples per problem: the wrong program twice (mean log-prob -1), the right one once (-0.5)."""
    name = "fake"

    class tokenizer:
        get_vocab = staticmethod(lambda: {"a": 0})
        decode = staticmethod(lambda tokens: "prompt")

    def __init__(self):
        from lm.sampling import PolicyStats
        self.stats, self.calls = PolicyStats(), []

    def prompt_tokens(self, messages):
        return [1, 2]

    def decode(self, tokens):
        return ""

    programs = (WRONG, WRONG, RIGHT)

    def sample(self, prefix, n, params):
        from lm.sampling import Completion
        self.calls.append(n)
        texts = [f"```python\n{p}```" for p in self.programs]
        lps = [-1.0, -1.0, -0.5]
        return [Completion([7] * (i + 1), [lps[i]] * (i + 1), texts[i], "eos") for i in range(n)]


class FakeValue:
    """Prefers the wrong program: 0.9 for one-token candidates, 0.4 otherwise."""
    tokens_scored = 0

    def final_values(self, prefix, continuations, mean_logprobs=None):
        self.tokens_scored += len(prefix) + sum(map(len, continuations))
        return [0.9 if len(c) == 1 else 0.4 for c in continuations]


def test_best_of_k_ranks_stored_judged_samples_with_every_ranker_and_resumes(tmp_path):
    policy, value = FakePolicy(), FakeValue()
    other = Problem(id="sum2", question=SUM.question, kind="stdio", inputs=SUM.inputs, outputs=SUM.outputs)
    cfg = DecodeConfig(k=3, select="value")
    rows = run_strategy(policy, value, [SUM, other], "best_of_k", cfg, str(tmp_path))
    assert policy.calls == [3, 3] and len(rows) == 2
    samples = [json.loads(line) for line in (tmp_path / "runs" / "sample.jsonl").read_text().splitlines()]
    assert [c["passed"] for c in samples[0]["candidates"]] == [False, False, True]
    assert samples[0]["candidates"][2]["mean_logprob"] == -0.5
    # Identical programs are scored once and folded (weight 2); the value model's pick is wrong.
    assert [(c["value"], c["weight"], c["passed"]) for c in rows[0]["candidates"]] == [(0.9, 2, False), (0.4, 1, True)]
    assert rows[0]["passed"] is False and rows[0]["verdict"] == "wrong_answer"
    assert "loads" not in rows[0]["candidates"][0]  # a stdio program reads stdin at import: not load-checked
    assert rows[0]["stats"]["policy_tokens"] == 6 and rows[0]["stats"]["value_tokens"] == 2 + 1 + 3
    # Resume: nothing is sampled or ranked again.
    rows = run_strategy(policy, value, [SUM, other], "best_of_k", cfg, str(tmp_path))
    assert policy.calls == [3, 3] and len(rows) == 2
    with open(tmp_path / "settings.json", "w") as f:
        json.dump({"policy": "p", "value": "v", "dataset": "d", "backend": "hf", "decode": {}, "timeout": 4}, f)
    summary = write_report(str(tmp_path))
    sel = summary["best_of_k_selection"]
    assert sel["pass@1"]["value_picked"] == 0.0 and sel["pass@1"]["random_pick"] == pytest.approx(1 / 3)
    assert sel["pass@1"]["relative_gain"] == pytest.approx(-1.0)
    r = sel["rankers"]
    assert r["value"]["pass@1"] == 0.0 and r["value"]["gap_closed"] == pytest.approx(-0.5)
    assert r["mean_logprob"]["pass@1"] == 1.0 and r["mean_logprob"]["gap_closed"] == pytest.approx(1.0)
    assert r["random"]["pass@1"] == pytest.approx(1 / 3) and r["oracle"]["pass@1"] == 1.0
    assert summary["strategies"]["sample"]["pass@1"] == pytest.approx(1 / 3)
    for name in ("report.md", "summary.json", "pass_vs_tokens.png"):
        assert (tmp_path / name).stat().st_size > 0
    report = (tmp_path / "report.md").read_text()
    assert "| best_of_k | 2 | 0.0% |" in report and "| policy mean token log-prob | 100.0% |" in report


INC = Problem(id="inc", question="inc(x) returns x + 1.", kind="assert", fn_name="inc",
              tests=["assert inc(1) == 2\n", "assert inc(-1) == 0\n"])


class CrashingPolicy(FakePolicy):
    """The value model's favourite (one token, 0.9) asserts a wrong fact at import; the right one is last."""
    programs = ("def inc(x):\n    return x + 1\nassert inc(1) == 3\n", "def inc(x):\n    return x\n",
                "def inc(x):\n    return x + 1\n")


@pytest.mark.parametrize("load_check", [True, False])
def test_the_load_check_ranks_programs_that_fail_to_import_last(tmp_path, load_check):
    rows = run_strategy(CrashingPolicy(), FakeValue(), [INC], "best_of_k", DecodeConfig(k=3, load_check=load_check, select="value"),
                        str(tmp_path))
    assert [c["verdict"] for c in rows[0]["candidates"]] == (
        ["wrong_answer", "pass", "runtime_error"] if load_check else ["runtime_error", "wrong_answer", "pass"])
    assert [c.get("loads") for c in rows[0]["candidates"]] == ([True, True, False] if load_check else [None] * 3)
    r = summarize({"best_of_k": rows})["best_of_k_selection"]["rankers"]
    assert r["value"]["pass@1"] == 0.0 and r["random"]["pass@1"] == pytest.approx(1 / 3)
    if load_check:  # among the two that import, the value ties (0.4): a random pick of them
        assert r["value+load"]["pass@1"] == pytest.approx(0.5) and r["random+load"]["pass@1"] == pytest.approx(0.5)
        assert r["mean_logprob+load"]["pass@1"] == 1.0
    else:
        assert "value+load" not in r and "random+load" not in r


def test_ranking_stored_samples_is_engine_best_of_k(tiny_policy, tiny_model_dir, tmp_path):
    """bench's sample-then-rank gives the program and value engine.best_of_k gives on the same samples."""
    from bench.quality import rank_samples, sample_rows
    from engine.best_of_k import best_of_k, load_checker
    from judge.problems import load_dataset
    from valuemodel.model import ValueModel

    class OnlySample:  # the per-problem path, so the samples are best_of_k's own (same seed)
        def __init__(self, policy):
            self._p = policy

        def __getattr__(self, name):
            if name == "sample_many":
                raise AttributeError(name)
            return getattr(self._p, name)

    value = ValueModel.from_base(tiny_model_dir, last_layers=1, dtype="float32", device="cpu")
    problem = load_dataset("humaneval")[2]
    cfg = DecodeConfig(k=4, max_new_tokens=12, temperature=1.0, top_p=1.0, seed=3, select="value")
    direct = best_of_k(tiny_policy, value, problem, cfg)
    (row,) = sample_rows(OnlySample(tiny_policy), [problem], cfg)
    ranked = rank_samples(value, row, load_checker(problem, cfg))
    assert ranked["value"] == pytest.approx(direct.value, abs=1e-6)
    assert [c["value"] for c in ranked["candidates"]] == pytest.approx([c.value for c in direct.candidates], abs=1e-6)
    assert sum(c["weight"] for c in ranked["candidates"]) == 4


def _bench(*args):
    return subprocess.run([sys.executable, "-m", "bench.cli", *args], capture_output=True, text=True, cwd=REPO)


def test_bench_quality_cli_end_to_end_on_humaneval(tiny_model_dir, tmp_path):
    from valuemodel.model import ValueModel
    vm = str(tmp_path / "vm")
    ValueModel.from_base(tiny_model_dir, last_layers=1, dtype="float32", device="cpu").save(vm)
    out = str(tmp_path / "report")
    common = ["--dataset", "humaneval", "--limit", "2", "--policy", tiny_model_dir, "--value", vm, "--out", out,
              "--k", "2", "--max-new-tokens", "6", "--token-budget", "24", "--max-branches", "1"]
    r = _bench("quality", *common, "--json")
    assert r.returncode == 0, r.stderr[-2000:]
    summary = json.loads(r.stdout.strip().splitlines()[-1])
    assert set(summary["strategies"]) == {"greedy", "sample", "best_of_k", "beam", "tree"}
    for s in summary["strategies"].values():
        assert s["problems"] == 2 and 0.0 <= s["pass@1"] <= 1.0 and s["policy_tokens"] > 0
    for strategy in ("greedy", "best_of_k", "beam", "tree"):
        with open(os.path.join(out, "runs", f"{strategy}.jsonl")) as f:
            rows = [json.loads(line) for line in f]
        # (beam and tree searches of several problems run side by side: rows come as they finish)
        assert sorted(r["problem_id"] for r in rows) == ["HumanEval/0", "HumanEval/1"]
    assert os.path.getsize(os.path.join(out, "pass_vs_tokens.png")) > 0
    # Other settings into the same directory: one line, exit 2.
    r = _bench("quality", *common[:-6], "--k", "3", "--max-new-tokens", "6", "--token-budget", "24")
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and "other settings" in r.stderr
    # best_of_k's ranking was made with the load check: resuming without it is refused.
    r = _bench("quality", *common, "--strategies", "best_of_k", "--no-load-check")
    assert r.returncode == 2 and "made with the load check; use a new --out or --load-check" in r.stderr
    r = _bench("report", str(tmp_path))
    assert r.returncode == 2 and "not a `bench quality` directory" in r.stderr
    r = _bench("report", out, "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["strategies"]["greedy"]["problems"] == 2


def test_bench_quality_refuses_to_resume_ranked_runs_with_other_weights_at_the_same_path(tiny_model_dir, tmp_path):
    import torch

    from valuemodel.model import ValueModel, head_module
    vm_dir, out = str(tmp_path / "vm"), str(tmp_path / "report")
    vm = ValueModel.from_base(tiny_model_dir, last_layers=0, dtype="float32", device="cpu")
    vm.save(vm_dir)
    common = ["--dataset", "humaneval", "--limit", "1", "--strategies", "best_of_k", "--policy", tiny_model_dir,
              "--value", vm_dir, "--out", out, "--k", "2", "--max-new-tokens", "4"]
    r = _bench("quality", *common)
    assert r.returncode == 0, r.stderr[-2000:]
    digest = json.load(open(os.path.join(out, "settings.json")))["value_digest"]
    assert digest and digest in open(os.path.join(out, "report.md")).read()
    assert _bench("quality", *common).returncode == 0  # the same weights resume
    with torch.no_grad():
        head_module(vm.model)[1].weight.add_(1.0)  # retrained in place: same path, other weights
    vm.save(vm_dir)
    r = _bench("quality", *common)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and "other weights" in r.stderr
    assert json.load(open(os.path.join(out, "settings.json")))["value_digest"] == digest
