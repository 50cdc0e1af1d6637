"""Value scoring on SmolLM2-135M: tokens/second of full-sequence scoring, and the cost of one new
token's value with the incremental scorer (KV cache) against re-scoring the whole prefix, at
128, 512 and 1024 tokens, side by side."""

import time

import pytest

from valuemodel.model import ValueModel

LENGTHS = (128, 512, 1024)


@pytest.fixture(scope="module")
def vm():
    return ValueModel.from_base("smollm2", last_layers=12)


def _best(fn, repeat=3):
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def test_full_sequence_scoring_throughput(benchmark, vm):
    seqs = [[100 + (i * 31 + j) % 4000 for j in range(512)] for i in range(4)]
    t = _best(lambda: vm.values(seqs), repeat=2)
    print(f"\nfull-sequence scoring: 4 x 512 tokens in {t:.2f} s = {4 * 512 / t:.0f} tokens/s")
    benchmark.extra_info["tokens_per_s"] = 4 * 512 / t
    benchmark.pedantic(vm.values, args=(seqs,), rounds=1, iterations=1)


def test_incremental_vs_rescoring(benchmark, vm):
    print()
    ratios = {}
    for n in LENGTHS:
        seq = [100 + (j * 37) % 4000 for j in range(n + 1)]
        scorer = vm.scorer()
        scorer.extend(seq[:n])

        def incremental(scorer=scorer, seq=seq, n=n):
            branch = scorer.fork()
            branch.extend(seq[n:])
        fork_only = _best(scorer.fork)
        inc = _best(incremental) - fork_only  # the fork (a cache copy) is search bookkeeping
        full = _best(lambda seq=seq: vm.values([seq]))
        ratios[n] = full / inc
        print(f"  prefix {n:5d}: incremental {1000 * inc:7.1f} ms/token, re-scoring {1000 * full:8.1f} ms, "
              f"{ratios[n]:6.1f}x cheaper")
    benchmark.extra_info.update({f"ratio_{n}": r for n, r in ratios.items()})
    assert ratios[512] >= 10
    scorer = vm.scorer()
    scorer.extend(list(range(100, 612)))
    benchmark.pedantic(lambda: scorer.fork().extend([5]), rounds=3, iterations=1)
