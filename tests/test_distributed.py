"""Sampling spread over Ray actors (common.distributed, `bench quality --workers`): the same rows
as one process, and every problem stored exactly once even when an actor is killed mid-run."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'forkcode[ray]')")

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _bench(*args):
    return subprocess.run([sys.executable, "-m", "bench.cli", *args], capture_output=True, text=True, cwd=REPO)


def _sandbox_servers():
    out = subprocess.run(["pgrep", "-f", "judge/_runner.py"], capture_output=True, text=True).stdout
    return {int(pid) for pid in out.split()}


def _rows(out):
    with open(os.path.join(out, "runs", "sample.jsonl")) as f:
        return {r["problem_id"]: r for r in map(json.loads, f)}


def test_bench_quality_on_two_workers_gives_the_rows_of_one_process(tiny_model_dir, tmp_path):
    common = ["--dataset", "humaneval", "--limit", "4", "--strategies", "sample", "--policy", tiny_model_dir,
              "--k", "2", "--max-new-tokens", "10", "--batch-rows", "2", "--dtype", "float32", "--json"]
    one = _bench("quality", *common, "--out", str(tmp_path / "one"))
    assert one.returncode == 0, one.stderr[-2000:]
    two = _bench("quality", *common, "--out", str(tmp_path / "two"), "--workers", "2")
    assert two.returncode == 0, two.stderr[-2000:]
    a, b = _rows(tmp_path / "one"), _rows(tmp_path / "two")
    assert sorted(a) == sorted(b) and len(a) == 4
    for pid in a:  # what may differ: the wall times (each actor times its own rows)
        assert [c["tokens"] for c in a[pid]["candidates"]] == [c["tokens"] for c in b[pid]["candidates"]]
        assert [c["verdict"] for c in a[pid]["candidates"]] == [c["verdict"] for c in b[pid]["candidates"]]
        assert a[pid]["features"] == b[pid]["features"]


def test_a_killed_actor_is_restarted_and_every_problem_stored_once(tiny_model_dir, tmp_path):
    from bench.quality import run_strategy, sample_rows_on_workers
    from engine.result import DecodeConfig
    from judge import load_dataset
    problems = load_dataset("humaneval")[:8]
    cfg = DecodeConfig(k=2, max_new_tokens=24, strategy="sample")
    options = {"spec": tiny_model_dir, "dtype": "float32"}
    actors, killed = [], []

    def sampler(todo):  # kills one actor's process as soon as the first row is back: mid-run
        for i, row in enumerate(sample_rows_on_workers(options, todo, cfg, 2, max_rows=2, on_start=actors.extend)):
            if i == 0:
                pid = ray.get(actors[0].pid.remote())
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
            yield row

    before = _sandbox_servers()
    try:
        rows = run_strategy(None, None, problems, "sample", cfg, str(tmp_path), sampler=sampler)
    finally:
        ray.shutdown()
    assert killed
    assert sorted(r["problem_id"] for r in rows) == sorted(p.id for p in problems)  # each exactly once
    for _ in range(50):  # a dead actor's sandbox servers end when their pipe closes
        if _sandbox_servers() <= before:
            break
        time.sleep(0.2)
    assert _sandbox_servers() <= before


def test_workers_without_ray_or_out_of_range_is_one_error_line(tmp_path, monkeypatch):
    r = _bench("quality", "--dataset", "humaneval", "--limit", "1", "--out", str(tmp_path / "x"), "--workers", "-1")
    assert r.returncode == 2 and r.stderr.strip().splitlines() == ["bench: error: --workers must be >= 0, not -1"]
    r = _bench("quality", "--dataset", "humaneval", "--limit", "1", "--out", str(tmp_path / "x"), "--workers", "2",
               "--strategies", "tree")
    assert r.returncode == 2 and "--workers spreads sampling" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    from common import distributed
    from common.cli import ConfigError
    monkeypatch.setitem(sys.modules, "ray", None)  # as if Ray were not installed
    with pytest.raises(ConfigError, match=r"pip install 'forkcode\[ray\]'"):
        distributed.ray_module()


def test_an_actor_that_dies_past_its_restarts_is_one_error_and_keeps_the_rows(tiny_model_dir, tmp_path, monkeypatch):
    from bench.quality import run_strategy, sample_rows_on_workers
    from common import distributed
    from engine.result import DecodeConfig
    from judge import load_dataset
    monkeypatch.setattr(distributed, "RESTARTS", 0)
    problems = load_dataset("humaneval")[:6]
    cfg = DecodeConfig(k=2, max_new_tokens=24, strategy="sample")
    actors = []

    def sampler(todo):
        for i, row in enumerate(sample_rows_on_workers({"spec": tiny_model_dir, "dtype": "float32"}, todo, cfg, 2,
                                                       max_rows=2, on_start=actors.extend)):
            if i == 0:
                os.kill(ray.get(actors[0].pid.remote()), signal.SIGKILL)
            yield row
    try:
        with pytest.raises(distributed.WorkerError, match="run the same command again"):
            run_strategy(None, None, problems, "sample", cfg, str(tmp_path), sampler=sampler)
    finally:
        ray.shutdown()
    assert len(_rows(tmp_path)) >= 1  # what came back before the failure is stored


def test_datagen_build_on_two_workers_gives_the_trees_of_one_process(tiny_model_dir, tmp_path):
    """Seeds come from each problem's position, so trees grown on two actors (chunks of 2 problems)
    equal those grown in one process; only their stats (times) may differ."""
    rows = [{"problem_id": i, "question": "echo", "solutions": ["print(input())"],
             "input_output": {"inputs": [f"{i}\n"], "outputs": [f"{i}\n"]}} for i in range(4)]
    dataset = tmp_path / "rows.jsonl"
    dataset.write_text("".join(json.dumps(r) + "\n" for r in rows))
    trees = {}
    for name, extra in (("one", []), ("two", ["--workers", "2"])):
        out = str(tmp_path / name)
        r = subprocess.run([sys.executable, "-m", "datagen.cli", "build", "--dataset", str(dataset), "--policy", tiny_model_dir,
                            "--out", out, "--forks", "2", "--per-fork", "2", "--trunk", "auto", "--retries", "2",
                            "--max-new-tokens", "16", "--batch-rows", "4", "--dtype", "float32", "--json", *extra],
                           capture_output=True, text=True, cwd=REPO)
        assert r.returncode == 0, r.stderr[-2000:]
        with open(os.path.join(out, "trees.jsonl")) as f:
            trees[name] = {t["problem_id"]: {k: v for k, v in t.items() if k != "stats"} for t in map(json.loads, f)}
    assert sorted(trees["one"]) == sorted(trees["two"]) == ["0", "1", "2", "3"]
    assert trees["one"] == trees["two"]


def test_the_probe_features_pooled_on_two_workers_equal_one_process(tiny_model_dir, tmp_path, monkeypatch):
    """`valuemodel cv --workers 2`: rows without recorded features are pooled on Ray actors, each
    with its own copy of the base, to the same vectors, tokens and held-out ranking."""
    from valuemodel.model import ValueModel
    from valuemodel.train import Spread, TrainConfig, cross_validate
    rows = [{"problem_id": f"p{i % 5}", "example_id": f"r{i}", "policy": tiny_model_dir, "tokenizer": None,
             "prompt_tokens": [5 + i % 5, 6, 7, 8], "response_tokens": [20 + (i * 7 + j) % 200 for j in range(5 + i % 4)],
             "label": (i // 5) % 2, "label_start": 0, "prompt_text": "", "response_text": ""} for i in range(30)]
    data = tmp_path / "train.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = TrainConfig(epochs=0, probe_l2=0.3, aggregate="mean", mixed_only=True)
    out = {}
    try:
        for name, spread in (("one", None), ("two", Spread(tiny_model_dir, 2, "float32"))):
            monkeypatch.setenv("FORKCODE_CACHE", str(tmp_path / f"cache-{name}"))  # each computes every row
            vm = ValueModel.from_base(tiny_model_dir, last_layers=0, dtype="float32", device="cpu")
            out[name] = cross_validate(vm, str(data), cfg, folds=5, progress=False, spread=spread)
    finally:
        ray.shutdown()
    assert out["one"]["feature_source"] == out["two"]["feature_source"] == "forward"
    assert out["one"]["feature_forward_tokens"] == out["two"]["feature_forward_tokens"] > 0
    assert out["one"]["curve"][0]["within_problem_auroc"] == pytest.approx(out["two"]["curve"][0]["within_problem_auroc"],
                                                                           abs=1e-6)
