"""Decoding strategies on a tiny random Phi-3 policy with a scripted value (test-only stub)."""

import pytest

from engine.baselines import greedy, sample
from engine.best_of_k import best_of_k
from engine.prompts import messages
from engine.result import DecodeConfig
from judge import Problem


class ScriptedValue:
    """A value 'model' whose value of a sequence is a fixed function of its tokens."""

    def __init__(self):
        self.tokens_scored = 0
        self.calls = 0

    @staticmethod
    def of(seq):
        return (sum(t * (i + 1) for i, t in enumerate(seq)) % 1009) / 1009

    def values(self, sequences):
        self.calls += 1
        self.tokens_scored += sum(len(s) for s in sequences)
        return [[self.of(s[:i + 1]) for i in range(len(s))] for s in sequences]


PROBLEM = Problem(id="p", question="Print the sum of two integers read from one line.", kind="stdio",
                  inputs=["1 2\n"], outputs=["3\n"])


def test_best_of_k_returns_highest_value_candidate(tiny_policy):
    value = ScriptedValue()
    cfg = DecodeConfig(k=6, max_new_tokens=12, temperature=1.0, top_p=1.0, dedupe=False, seed=4)
    r = best_of_k(tiny_policy, value, PROBLEM, cfg)
    prompt = tiny_policy.prompt_tokens(messages(PROBLEM))
    expected = [ScriptedValue.of(prompt + c.tokens) for c in r.candidates]
    assert [c.value for c in r.candidates] == pytest.approx(expected)
    assert r.value == max(expected) and r.program == r.candidates[0].program
    assert [c.value for c in r.candidates] == sorted((c.value for c in r.candidates), reverse=True)
    assert len(r.candidates) == 6 and value.calls == 1  # all k scored in one batch
    assert r.stats["value_tokens"] == sum(len(prompt) + len(c.tokens) for c in r.candidates)
    assert r.stats["policy_tokens"] == sum(len(c.tokens) for c in r.candidates)
    assert set(r.stats["wall_s"]) == {"sample", "value", "total"}


def test_best_of_k_dedupes_identical_programs(tiny_policy):
    cfg = DecodeConfig(k=5, max_new_tokens=6, temperature=0.0, dedupe=True)  # greedy: all identical
    r = best_of_k(tiny_policy, ScriptedValue(), PROBLEM, cfg)
    assert len(r.candidates) == 1 and r.candidates[0].duplicates == 4
    assert r.stats["unique_programs"] == 1


def test_baselines(tiny_policy):
    cfg = DecodeConfig(max_new_tokens=8, seed=1)
    g1, g2 = greedy(tiny_policy, None, PROBLEM, cfg), greedy(tiny_policy, None, PROBLEM, cfg)
    assert g1.program == g2.program and g1.value is None and g1.strategy == "greedy"
    s = sample(tiny_policy, ScriptedValue(), PROBLEM, cfg)
    assert s.value is not None and len(s.candidates) == 1 and s.stats["policy_tokens"] <= 8
