"""Beam and tree search against best_of_k, side by side in one run on the same problem, policy and
value model: policy tokens per second of each strategy (target: beam and tree >= 0.8x best_of_k),
and what the value costs inside a search step: a head on the policy's own model reading the
policy's hidden states (shared trunk) against the same head with its own forward (target: value
<= 15% of the policy's forward time).

The policy is `FORKCODE_BENCH_POLICY` (e.g. the Qwen2.5-Coder-0.5B GGUF), else SmolLM2-135M; the
value model is an untrained head (N = 0) on it: the cost is the same whatever the weights."""

import os
from dataclasses import replace

import pytest

from engine import batch
from engine.batch import RowsValue
from engine.beam import beam
from engine.best_of_k import best_of_k
from engine.result import DecodeConfig
from engine.tree import tree
from judge import load_problem

POLICY = os.environ.get("FORKCODE_BENCH_POLICY") or "smollm2"
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
EXAMPLE = os.path.join(REPO, "examples", "two_sum_stdio.json")
K = 8


@pytest.fixture(scope="module")
def models():
    from lm.policy import HFPolicy
    from valuemodel.model import ValueModel
    return HFPolicy(POLICY), ValueModel.from_base(POLICY, last_layers=0), load_problem(EXAMPLE)


def tok_s(result):
    return result.stats["policy_tokens"] / result.stats["wall_s"]["total"]


def test_search_throughput_and_value_cost(benchmark, timed, models):
    policy, value, problem = models
    cfg = DecodeConfig(k=K, max_new_tokens=256, temperature=0.8, top_p=0.95, seed=0, dedupe=False,
                       beam_width=2, expansions=K // 2, step="line", token_budget=K * 256)
    # Tree: as many rollouts as best_of_k has samples, every one grown to its end (no aborts), so
    # the batch is as wide as best_of_k's once the branches exist.
    tree_cfg = replace(cfg, branch_prob=0.3, max_branches=K - 1, abort_value=0.0)
    best_of_k(policy, value, problem, DecodeConfig(k=2, max_new_tokens=8))  # warm-up
    b = best_of_k(policy, value, problem, cfg)
    t, _ = timed(lambda: tree(policy, value, problem, tree_cfg))
    s = beam(policy, value, problem, cfg)
    assert value.shares_trunk_with(policy)
    with pytest.MonkeyPatch.context() as mp:  # the same head, through its own forward
        mp.setattr(batch, "value_track", lambda _policy, vm: RowsValue(vm))
        t_separate = tree(policy, value, problem, tree_cfg)
    rows = [("best_of_k", b), ("tree", t), ("beam", s)]
    print(f"\n{POLICY}, k={K}: policy tokens/s")
    for name, r in rows:
        print(f"  {name:10s} {tok_s(r):7.1f} tok/s  ({r.stats['policy_tokens']} tokens, {r.stats['wall_s']['total']:.1f} s)"
              f"  {tok_s(r) / tok_s(b):.2f}x best_of_k  phases {r.stats['wall_s']}")
    for name, r in (("shared trunk", t), ("own forward", t_separate)):
        f = r.stats["forward_s"]
        print(f"  tree value, {name:12s}: {f['value']:.2f} s value vs {f['policy']:.2f} s policy forward "
              f"= {f['value'] / f['policy']:.1%}")
    benchmark.extra_info.update({name: tok_s(r) for name, r in rows})
    benchmark.extra_info.update(shared_value_share=t.stats["forward_s"]["value"] / t.stats["forward_s"]["policy"],
                                separate_value_share=t_separate.stats["forward_s"]["value"]
                                / t_separate.stats["forward_s"]["policy"])
    assert tok_s(t) >= 0.8 * tok_s(b) and tok_s(s) >= 0.8 * tok_s(b)  # searches run as fast as best_of_k
    assert t.stats["forward_s"]["value"] <= 0.15 * t.stats["forward_s"]["policy"]  # the shared trunk's value is cheap
