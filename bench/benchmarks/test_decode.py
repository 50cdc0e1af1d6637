"""Decoding cost on SmolLM2-135M, side by side in one run:
- best_of_k against plain sampling of the same k programs (the value model's overhead; target <= 15%);
- tree search against best_of_k at equal k: policy tokens generated, and tokens saved by aborts.

The value model is `FORKCODE_BENCH_VALUE` (a checkpoint directory), else the shipped default
(valuemodel/default), else an untrained head on SmolLM2: the cost is the same whatever the weights
(the tree's aborts are not)."""

import os
import time
from dataclasses import replace

import pytest

from engine.best_of_k import best_of_k, sample_candidates
from engine.result import DecodeConfig
from engine.tree import tree
from judge import load_problem

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
EXAMPLE = os.path.join(REPO, "examples", "two_sum_stdio.json")
K = 8


@pytest.fixture(scope="module")
def models():
    from engine.run import DEFAULT_VALUE
    from lm.policy import HFPolicy
    from valuemodel.model import ValueModel
    path = os.environ.get("FORKCODE_BENCH_VALUE") or (DEFAULT_VALUE if os.path.isdir(DEFAULT_VALUE) else None)
    value = ValueModel.load(path) if path else ValueModel.from_base("smollm2", last_layers=2)
    return HFPolicy(), value, load_problem(EXAMPLE)


def test_best_of_k_overhead_and_tree_tokens(benchmark, timed, models):
    policy, value, problem = models
    cfg = DecodeConfig(k=K, max_new_tokens=256, temperature=0.8, top_p=0.95, seed=0, dedupe=False)
    start = time.perf_counter()
    sample_candidates(policy, problem, cfg, K, cfg.temperature)
    plain = time.perf_counter() - start
    r, guided = timed(lambda: best_of_k(policy, value, problem, cfg))
    overhead = guided / plain - 1
    t = tree(policy, value, problem, replace(cfg, max_branches=K - 1))
    print(f"\nbest_of_k k={K}: {guided:.1f} s vs plain sampling {plain:.1f} s -> value overhead {overhead:+.1%} "
          f"(value phase {r.stats['wall_s']['value']:.2f} s)")
    print(f"tree ({t.stats['finished'] + t.stats['aborted']} rollouts, {t.stats['aborted']} aborted): "
          f"{t.stats['policy_tokens']} policy tokens vs best_of_k {r.stats['policy_tokens']}; "
          f"tokens saved by aborts {t.stats['tokens_saved']}")
    benchmark.extra_info.update({"plain_s": plain, "best_of_k_s": guided, "value_overhead": overhead,
                                 "tree_policy_tokens": t.stats["policy_tokens"],
                                 "best_of_k_policy_tokens": r.stats["policy_tokens"],
                                 "tree_tokens_saved": t.stats["tokens_saved"]})
    assert overhead <= 0.15  # the value model's share of best_of_k's time
