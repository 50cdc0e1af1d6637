"""The quality report: its statistics, judged runs that resume, and the `bench` CLI end to end."""

import json
import os
import subprocess
import sys

import pytest

from bench.quality import bootstrap, run_strategy, summarize, wilson, write_report
from engine.result import Candidate, DecodeConfig, DecodeResult
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


def test_run_strategy_judges_every_best_of_k_sample_and_resumes(tmp_path):
    calls = []

    def fake_best_of_k(policy, value, problem, cfg):
        calls.append(problem.id)
        cands = [Candidate(WRONG, "", [1, 2, 3], 0.9, "eos", duplicates=1),
                 Candidate(RIGHT, "", [1, 2], 0.4, "eos")]
        return DecodeResult("best_of_k", WRONG, 0.9, cands,
                            {"policy_tokens": 8, "value_tokens": 8, "wall_s": {"total": 1.0}})

    other = Problem(id="sum2", question=SUM.question, kind="stdio", inputs=SUM.inputs, outputs=SUM.outputs)
    rows = run_strategy(None, None, [SUM, other], "best_of_k", fake_best_of_k, DecodeConfig(), str(tmp_path))
    assert calls == ["sum", "sum2"] and len(rows) == 2
    assert [c["passed"] for c in rows[0]["candidates"]] == [False, True]
    assert rows[0]["passed"] is False and rows[0]["verdict"] == "wrong_answer"
    # Resume: both problems are stored, so nothing is decoded again.
    rows = run_strategy(None, None, [SUM, other], "best_of_k", fake_best_of_k, DecodeConfig(), str(tmp_path))
    assert calls == ["sum", "sum2"] and len(rows) == 2
    with open(tmp_path / "settings.json", "w") as f:
        json.dump({"policy": "p", "value": "v", "dataset": "d", "backend": "hf", "decode": {}, "timeout": 4}, f)
    summary = write_report(str(tmp_path))
    sel = summary["best_of_k_selection"]["pass@1"]
    # The value model prefers the wrong program (2 of 3 samples), so it loses to a random pick.
    assert sel["value_picked"] == 0.0 and sel["random_pick"] == pytest.approx(1 / 3)
    assert sel["relative_gain"] == pytest.approx(-1.0)
    for name in ("report.md", "summary.json", "pass_vs_tokens.png"):
        assert (tmp_path / name).stat().st_size > 0
    assert "| best_of_k | 2 | 0.0% |" in (tmp_path / "report.md").read_text()


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
    for name, s in summary["strategies"].items():
        assert s["problems"] == 2 and 0.0 <= s["pass@1"] <= 1.0 and s["policy_tokens"] > 0
    for strategy in ("greedy", "best_of_k", "beam", "tree"):
        with open(os.path.join(out, "runs", f"{strategy}.jsonl")) as f:
            rows = [json.loads(line) for line in f]
        assert [r["problem_id"] for r in rows] == ["HumanEval/0", "HumanEval/1"]
    assert os.path.getsize(os.path.join(out, "pass_vs_tokens.png")) > 0
    # Other settings into the same directory: one line, exit 2.
    r = _bench("quality", *common[:-6], "--k", "3", "--max-new-tokens", "6", "--token-budget", "24")
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and "other settings" in r.stderr
    r = _bench("report", str(tmp_path))
    assert r.returncode == 2 and "not a `bench quality` directory" in r.stderr
    r = _bench("report", out, "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["strategies"]["greedy"]["problems"] == 2
