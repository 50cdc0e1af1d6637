"""Decoding strategies on a tiny random Phi-3 policy with a scripted value (test-only stub)."""

import json
import math

import pytest
from conftest import make_tiny_model

from engine.baselines import greedy, sample
from engine.beam import beam
from engine.best_of_k import best_of_k
from engine.prompts import messages
from engine.result import DecodeConfig
from engine.tree import TreeParams, abort_position, tree
from judge import Problem


class ScriptedScorer:
    def __init__(self, owner, history=()):
        self.owner, self.history = owner, list(history)

    def extend(self, tokens):
        self.owner.tokens_scored += len(tokens)
        out = []
        for t in tokens:
            self.history.append(t)
            out.append(ScriptedValue.of(self.history))
        return out

    def fork(self):
        return ScriptedScorer(self.owner, self.history)


class ScriptedValue:
    """A value 'model' whose value of a sequence is a fixed function of its tokens."""

    def __init__(self):
        self.tokens_scored = 0
        self.calls = 0

    @staticmethod
    def of(seq):
        return (sum(t * (i + 1) for i, t in enumerate(seq)) % 1009) / 1009

    def scorer(self):
        return ScriptedScorer(self)

    def final_values(self, prefix, continuations):
        return [v[-1] for v in self.values([list(prefix) + list(c) for c in continuations])]

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


@pytest.mark.parametrize("step", ["line", "4"])
def test_beam_keeps_the_best_b_and_honours_the_budget(tiny_policy, step):
    value = ScriptedValue()
    cfg = DecodeConfig(beam_width=2, expansions=3, step=step, token_budget=400, max_new_tokens=200,
                       temperature=1.0, top_p=1.0, seed=2)
    r = beam(tiny_policy, value, PROBLEM, cfg)
    assert r.stats["policy_tokens"] <= 400
    assert r.stats["steps"] >= 2
    for step_trace in r.stats["trace"]:
        kept, open_ = step_trace["kept"], step_trace["open"]
        assert len(kept) == min(2, len(open_))
        assert kept == sorted(open_, reverse=True)[:len(kept)]  # the B highest values survive
    assert [c.value for c in r.candidates] == sorted((c.value for c in r.candidates), reverse=True)
    assert r.program == r.candidates[0].program
    # Each candidate's value is the scripted value of prompt + its tokens: scored incrementally.
    prompt = tiny_policy.prompt_tokens(messages(PROBLEM))
    for c in r.candidates:
        assert c.value == pytest.approx(ScriptedValue.of(prompt + c.tokens))
    # Incremental scoring: only new tokens are scored, never whole prefixes again.
    assert value.tokens_scored == len(prompt) + r.stats["policy_tokens"]


def test_policy_extend_equals_teacher_forcing(tiny_policy):
    from engine.policy import SamplingParams
    prompt = tiny_policy.prompt_tokens(messages(PROBLEM))
    _, state = tiny_policy.teacher_force(prompt[:-1], prompt[-1:])
    more = [7, 8, 9, 10]
    ext = tiny_policy.extend(state, more)
    g = SamplingParams(max_new_tokens=6, temperature=0)
    a = tiny_policy.sample_forks(ext, [len(ext.tokens)], 1, g)[0][0]
    b = tiny_policy._decode_groups(None, [prompt + more], 1, g)[0][0]
    assert a.tokens == b.tokens and max(abs(x - y) for x, y in zip(a.logprobs, b.logprobs)) < 1e-4


def test_abort_rule():
    v = [0.9, 0.1, 0.1, 0.1, 0.9, 0.1, 0.1, 0.1, 0.1]
    assert abort_position(v, 0, 0.5, 3) == 3
    assert abort_position(v, 2, 0.5, 3) == 7       # tokens before the warm-up do not count
    assert abort_position(v, 5, 0.5, 4) == 8
    assert abort_position(v, 0, 0.05, 1) is None


def test_tree_branches_at_forking_tokens_and_aborts_by_the_rule(tiny_policy):
    value = ScriptedValue()
    tp = TreeParams(branch_prob=0.004, max_branches=4, abort_value=0.6, patience=3, warmup=0.3, chunk=8)
    cfg = DecodeConfig(max_new_tokens=40, temperature=1.0, top_p=1.0, seed=7)
    r = tree(tiny_policy, value, PROBLEM, cfg, tp)
    prompt = tiny_policy.prompt_tokens(messages(PROBLEM))
    trunk = next(c for c in r.candidates if c.origin == "trunk")
    # The trunk branches at exactly its forking tokens, in order, while the branch budget lasts.
    forking = [i for i, lp in enumerate(trunk.logprobs) if math.exp(lp) < tp.branch_prob]
    from_trunk = [b["index"] for b in r.stats["branch_log"] if b["parent"] == "trunk"]
    assert from_trunk == forking[:len(from_trunk)] and len(from_trunk) == min(len(forking), tp.max_branches)
    assert r.stats["branches"] == len(r.stats["branch_log"]) <= tp.max_branches
    assert len(r.candidates) == 1 + r.stats["branches"]
    # Every rollout but the trunk stops exactly where the abort rule says, or not at all.
    warm = int(tp.warmup * r.stats["expected_length"])
    for c in r.candidates:
        values = [ScriptedValue.of(prompt + c.tokens[:i + 1]) for i in range(len(c.tokens))]
        cut = abort_position(values, warm, tp.abort_value, tp.patience)
        if c.origin == "trunk":
            assert c.finish_reason != "aborted"
        elif c.finish_reason == "aborted":
            assert cut == len(c.tokens) - 1
        else:
            assert cut is None
    assert r.stats["aborted"] == sum(c.finish_reason == "aborted" for c in r.candidates)
    assert r.stats["aborted"] >= 1 and r.stats["tokens_saved"] >= 0


def _decode(*args):
    import os
    import subprocess
    import sys
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    return subprocess.run([sys.executable, "-m", "engine.cli", *args], capture_output=True, text=True, cwd=repo)


def test_decode_cli_json_and_errors(tiny_model_dir, tmp_path):
    from valuemodel.model import ValueModel
    vm_dir = str(tmp_path / "vm")
    ValueModel.from_base(tiny_model_dir, last_layers=1, dtype="float32", device="cpu").save(vm_dir)
    r = _decode("--problem", "examples/two_sum_stdio.json", "--policy", tiny_model_dir, "--value", vm_dir,
                "--strategy", "best_of_k", "--k", "3", "--max-new-tokens", "8", "--judge", "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout.splitlines()[0])
    assert {"program", "value", "strategy", "stats", "candidates", "verdict"} <= set(out)
    assert out["strategy"] == "best_of_k" and len(out["candidates"]) <= 3
    assert out["verdict"]["total"] == 4
    r = _decode("--problem", str(tmp_path / "missing.json"), "--policy", tiny_model_dir, "--strategy", "greedy")
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and "cannot read problem" in r.stderr
    r = _decode("--problem", "examples/two_sum_stdio.json", "--policy", str(tmp_path / "nope"), "--strategy", "greedy")
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and "no model at" in r.stderr
    # A value model whose base has another vocabulary is refused with one line.
    other = make_tiny_model(str(tmp_path / "other"), seed=3, vocab=400)
    vm2 = str(tmp_path / "vm2")
    ValueModel.from_base(other, last_layers=1, dtype="float32", device="cpu").save(vm2)
    r = _decode("--problem", "examples/two_sum_stdio.json", "--policy", tiny_model_dir, "--value", vm2,
                "--strategy", "best_of_k")
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1
    assert "does not share the policy's tokenizer" in r.stderr


def test_vllm_backend_without_vllm_is_one_clear_error():
    import importlib.util

    from engine.policy import ModelError, load_policy
    if importlib.util.find_spec("vllm") is not None:
        pytest.skip("vLLM is installed here: tests/test_vllm.py covers the backend")
    with pytest.raises(ModelError, match=r"pip install 'forkcode\[vllm\]'"):
        load_policy("smollm2", "vllm")
    with pytest.raises(ValueError, match="unknown backend"):
        load_policy("smollm2", "tgi")


def test_readme_main_job_uses_the_shipped_value_model():
    """The README's first command: best_of_k on the bundled example with no model flags (here with
    a small k and token cap) picks the shipped default value model, on the default policy."""
    from engine.cli import DEFAULT_VALUE
    from valuemodel.model import DELTA_CONFIG
    with open(f"{DEFAULT_VALUE}/{DELTA_CONFIG}") as f:
        shipped = json.load(f)
    assert shipped["base"] == "smollm2"
    r = _decode("--problem", "examples/two_sum_stdio.json", "--strategy", "best_of_k", "--k", "2",
                "--max-new-tokens", "24", "--judge", "--json")
    assert r.returncode == 0, r.stderr[-2000:]
    out = json.loads(r.stdout.splitlines()[0])
    assert out["strategy"] == "best_of_k" and 0.0 <= out["value"] <= 1.0
    assert out["stats"]["value_tokens"] > 0 and out["verdict"]["total"] == 4


# --- the sampling loop ------------------------------------------------------------------------------

def _nucleus(probs, top_p):
    """The reference top-p distribution: a full sort, keep the tokens whose preceding mass <= top_p."""
    import torch
    s, order = probs.sort(descending=True)
    keep = (s.cumsum(0) - s) <= top_p
    out = torch.zeros_like(probs)
    out[order[keep]] = s[keep]
    return out / out.sum()


@pytest.mark.parametrize("candidates", [1024, 2])  # 2: the nucleus is wider, so the full-sort fallback runs
def test_pick_samples_the_exact_top_p_distribution(monkeypatch, candidates):
    import torch

    from engine import policy as pol
    monkeypatch.setattr(pol, "NUCLEUS_CANDIDATES", candidates)
    logits = torch.tensor([2.0, 1.0, 0.5, -1.0, -3.0, 0.7])
    n = 20000
    # Evenly spaced uniforms make the empirical frequencies the distribution itself (up to 1/n).
    uniforms = (torch.arange(n, dtype=torch.float64) + 0.5) / n
    for temperature, top_p in ((0.7, 0.8), (1.0, 1.0), (1.3, 0.5)):
        params = pol.SamplingParams(temperature=temperature, top_p=top_p)
        picks = pol.HFPolicy._pick(logits.expand(n, -1), params, None, uniforms)
        freq = torch.bincount(picks, minlength=6).double() / n
        expected = _nucleus((logits / temperature).double().softmax(0), top_p)
        assert torch.allclose(freq, expected, atol=2e-4), (temperature, top_p)
    assert pol.HFPolicy._pick(logits[None], pol.SamplingParams(temperature=0), None).item() == 0


def test_sample_many_equals_per_prompt_sampling(tiny_policy):
    """Many prompts in one refilled batch (rows joining and leaving, a left-padded cache) give each
    prompt exactly the greedy tokens and log-probs it gets alone."""
    from engine.policy import SamplingParams
    texts = ["Print hello.", "Sort a list of numbers and return it, please, in Python 3 with a docstring.", "Add.", "x"]
    prompts = [tiny_policy.prompt_tokens([{"role": "user", "content": t}]) for t in texts]
    params = [SamplingParams(max_new_tokens=m, temperature=0.0) for m in (9, 17, 5, 12)]
    alone = [tiny_policy.sample(p, 2, q) for p, q in zip(prompts, params)]
    together = dict(tiny_policy.sample_many([(p, 2, q) for p, q in zip(prompts, params)], max_rows=4))
    assert sorted(together) == [0, 1, 2, 3]
    for i in range(4):
        for a, b in zip(alone[i], together[i]):
            assert a.tokens == b.tokens and a.finish_reason == b.finish_reason
            assert max(abs(x - y) for x, y in zip(a.logprobs, b.logprobs)) < 1e-4
    # Sampled: every request gets its n completions within its own length limit, reproducibly.
    hot = [(p, 3, SamplingParams(max_new_tokens=8, temperature=1.0, seed=i)) for i, p in enumerate(prompts)]
    first = dict(tiny_policy.sample_many(hot, max_rows=6))
    again = dict(tiny_policy.sample_many(hot, max_rows=6))
    assert all(len(first[i]) == 3 and all(len(c.tokens) <= 8 for c in first[i]) for i in range(4))
    assert [[c.tokens for c in first[i]] for i in range(4)] == [[c.tokens for c in again[i]] for i in range(4)]


def test_auto_dtype_follows_the_cpu_bf16_flags(tmp_path):
    import torch

    from engine.policy import cpu_has_native_bf16, pick_dtype
    amd = tmp_path / "amd"
    amd.write_text("processor\t: 0\nflags\t\t: fpu sse avx512f avx512_bf16 avx512_vnni\n")
    amx = tmp_path / "amx"
    amx.write_text("flags\t\t: fpu avx512f amx_bf16 amx_tile\n")
    plain = tmp_path / "plain"
    plain.write_text("flags\t\t: fpu sse avx2 avx512f\n")
    assert cpu_has_native_bf16(str(amd)) and cpu_has_native_bf16(str(amx))
    assert not cpu_has_native_bf16(str(plain)) and not cpu_has_native_bf16(str(tmp_path / "missing"))
    assert pick_dtype("auto", "cuda") == torch.bfloat16 and pick_dtype("float32", "cpu") == torch.float32
    assert pick_dtype("auto", "cpu") == (torch.bfloat16 if cpu_has_native_bf16() else torch.float32)
