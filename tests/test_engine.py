"""Decoding strategies on a tiny random Phi-3 policy with a scripted value (test-only stub)."""

import json
import math

import pytest
from conftest import make_tiny_model

from engine.baselines import greedy, sample
from engine.beam import beam
from engine.best_of_k import best_of_k
from engine.result import DecodeConfig
from engine.tree import abort_position, tree
from judge import Problem
from lm.prompts import messages


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

    def final_values(self, prefix, continuations, mean_logprobs=None):
        return [v[-1] for v in self.values([list(prefix) + list(c) for c in continuations])]

    def values(self, sequences):
        self.calls += 1
        self.tokens_scored += sum(len(s) for s in sequences)
        return [[self.of(s[:i + 1]) for i in range(len(s))] for s in sequences]


PROBLEM = Problem(id="p", question="Print the sum of two integers read from one line.", kind="stdio",
                  inputs=["1 2\n"], outputs=["3\n"])


def test_best_of_k_returns_highest_value_candidate(tiny_policy):
    value = ScriptedValue()
    cfg = DecodeConfig(k=6, max_new_tokens=12, temperature=1.0, top_p=1.0, dedupe=False, seed=4, select="value")
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
    cfg = DecodeConfig(k=5, max_new_tokens=6, temperature=0.0, dedupe=True, select="value")  # greedy: all identical
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
    from lm.sampling import SamplingParams
    prompt = tiny_policy.prompt_tokens(messages(PROBLEM))
    _, state = tiny_policy.teacher_force(prompt[:-1], prompt[-1:])
    more = [7, 8, 9, 10]
    ext = tiny_policy.extend(state, more)
    g = SamplingParams(max_new_tokens=6, temperature=0)
    a = tiny_policy.sample_forks(ext, [len(ext.tokens)], 1, g)[0][0]
    b = tiny_policy.sample(prompt + more, 1, g)[0]
    assert a.tokens == b.tokens and max(abs(x - y) for x, y in zip(a.logprobs, b.logprobs)) < 1e-4


def test_abort_rule():
    v = [0.9, 0.1, 0.1, 0.1, 0.9, 0.1, 0.1, 0.1, 0.1]
    assert abort_position(v, 0, 0.5, 3) == 3
    assert abort_position(v, 2, 0.5, 3) == 7       # tokens before the warm-up do not count
    assert abort_position(v, 5, 0.5, 4) == 8
    assert abort_position(v, 0, 0.05, 1) is None


@pytest.mark.parametrize(("branch_prob", "seed"), [(0.0015, 7), (0.002, 8)])  # budget left / budget spent
def test_tree_branches_at_forking_tokens_and_aborts_by_the_rule(tiny_policy, branch_prob, seed):
    value = ScriptedValue()
    cfg = DecodeConfig(max_new_tokens=40, temperature=1.0, top_p=1.0, seed=seed, branch_prob=branch_prob,
                       max_branches=4, abort_value=0.6, patience=3, warmup=0.3)
    r = tree(tiny_policy, value, PROBLEM, cfg)
    prompt = tiny_policy.prompt_tokens(messages(PROBLEM))
    log = r.stats["branch_log"]
    assert r.stats["branches"] == len(log) <= cfg.max_branches
    assert len(log) >= 3 and len(r.candidates) == 1 + len(log)
    assert len({c.origin for c in r.candidates}) == len(r.candidates)
    # Each rollout branches at exactly its own forking tokens, in order, while the budget lasts
    # (an aborted one only shows its tokens up to the cut).
    unbranched = 0
    for c in r.candidates:
        birth = 0 if c.origin == "trunk" else int(c.origin.rsplit("/", 1)[1])
        forking = [i for i in range(birth, len(c.tokens)) if math.exp(c.logprobs[i]) < cfg.branch_prob]
        mine = [b["index"] for b in log if b["parent"] == c.origin and b["index"] < len(c.tokens)]
        assert mine == forking[:len(mine)]
        unbranched += len(forking) - len(mine)
    assert unbranched == 0 or len(log) == cfg.max_branches
    # Every rollout but the trunk stops exactly where the abort rule says, or not at all.
    warm = int(cfg.warmup * r.stats["expected_length"])
    for c in r.candidates:
        values = [ScriptedValue.of(prompt + c.tokens[:i + 1]) for i in range(len(c.tokens))]
        cut = abort_position(values, warm, cfg.abort_value, cfg.patience)
        if c.origin == "trunk":
            assert c.finish_reason != "aborted" and len(c.tokens) == r.stats["expected_length"]
        elif c.finish_reason == "aborted":
            assert cut == len(c.tokens) - 1
        else:
            assert cut is None
    assert r.stats["aborted"] == sum(c.finish_reason == "aborted" for c in r.candidates)
    assert r.stats["aborted"] >= 1 and r.stats["tokens_saved"] >= 0
    # Values are scored once per token: the prompt, then every row's tokens as they are fed.
    assert value.tokens_scored == len(prompt) + r.stats["policy_tokens"]


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
    for bad, message in ((["--k", "0"], "k must be >= 1"), (["--top-p", "1.5"], "top-p must be in (0, 1]"),
                         (["--warmup", "-0.1"], "warmup must be in [0, 1]")):
        r = _decode("--problem", "examples/two_sum_stdio.json", "--policy", tiny_model_dir, "--strategy", "greedy", *bad)
        assert r.returncode == 2 and r.stderr.strip().splitlines() == [f"decode: error: {message}, not {bad[1]}"], r.stderr


def test_decode_config_checks_its_values():
    from common.cli import ConfigError
    DecodeConfig(step="16", temperature=0, branch_prob=1, max_branches=0)
    for bad in ({"prompt": "poem"}, {"step": "0"}, {"k": 0}, {"expansions": 0},
                {"abort_value": 1.5}, {"patience": 0}, {"temperature": -1}):
        with pytest.raises(ConfigError):
            DecodeConfig(**bad)


def test_decode_with_a_critic_of_another_vocabulary(tiny_model_dir, tmp_path):
    """A value model whose base has another vocabulary reads the policy's text (TextValue): every
    guided strategy runs with the pair and reports values of the programs it chose."""
    from valuemodel.model import ValueModel
    other = make_tiny_model(str(tmp_path / "other"), seed=3, vocab=400)
    vm2 = str(tmp_path / "vm2")
    ValueModel.from_base(other, last_layers=1, dtype="float32", device="cpu").save(vm2)
    for strategy in ("best_of_k", "beam", "tree"):
        r = _decode("--problem", "examples/two_sum_stdio.json", "--policy", tiny_model_dir, "--value", vm2,
                    "--strategy", strategy, "--k", "3", "--max-new-tokens", "12", "--beam-width", "2",
                    "--expansions", "2", "--step", "4", "--max-branches", "2", "--json")
        assert r.returncode == 0, r.stderr[-2000:]
        out = json.loads(r.stdout.splitlines()[0])
        assert out["strategy"] == strategy and 0 <= out["value"] <= 1 and out["stats"]["value_tokens"] > 0


def test_vllm_backend_without_vllm_is_one_clear_error():
    import importlib.util

    from lm.models import ModelError
    from lm.policy import load_policy
    if importlib.util.find_spec("vllm") is not None:
        pytest.skip("vLLM is installed here: tests/test_vllm.py covers the backend")
    with pytest.raises(ModelError, match=r"pip install 'forkcode\[vllm\]'"):
        load_policy("smollm2", "vllm")
    with pytest.raises(ValueError, match="unknown backend"):
        load_policy("smollm2", "tgi")


def test_readme_main_job_uses_the_shipped_value_model():
    """The README's first command: best_of_k on the bundled example with no model flags (here with
    a small k and token cap) picks the shipped default value model, on the default policy."""
    from engine.run import DEFAULT_VALUE
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
    # The default pick runs the statement's example (one stdin input) for every distinct program.
    assert out["stats"]["sandbox_runs"] == out["stats"]["unique_programs"]


# --- the sampling loop ------------------------------------------------------------------------------

def _nucleus(probs, top_p):
    """The reference top-p distribution: a full sort, keep the tokens whose preceding mass <= top_p."""
    import torch
    s, order = probs.sort(descending=True)
    keep = (s.cumsum(0) - s) <= top_p
    out = torch.zeros_like(probs)
    out[order[keep]] = s[keep]
    return out / out.sum()


@pytest.mark.parametrize("candidates", [64, 2])  # 2: the nucleus is wider, so the full-sort fallback runs
@pytest.mark.parametrize("fused", [False, True])  # the log-normalizers eager, or compiled into one pass
def test_sample_tokens_draws_the_exact_top_p_distribution(monkeypatch, candidates, fused):
    import torch

    from lm import sampling as pol
    monkeypatch.setattr(pol, "NUCLEUS_CANDIDATES", candidates)
    monkeypatch.setattr(pol, "FUSE_MIN_ELEMENTS", 1 if fused else 10**12)
    logits = torch.tensor([2.0, 1.0, 0.5, -1.0, -3.0, 0.7])
    n = 20000
    # Evenly spaced uniforms make the empirical frequencies the distribution itself (up to 1/n).
    uniforms = (torch.arange(n, dtype=torch.float64) + 0.5) / n
    for temperature, top_p in ((0.7, 0.8), (1.0, 1.0), (1.3, 0.5)):
        params = pol.SamplingParams(temperature=temperature, top_p=top_p)
        picks, logprobs = pol.sample_tokens(logits.expand(n, -1), params, uniforms)
        freq = torch.bincount(picks, minlength=6).double() / n
        expected = _nucleus((logits / temperature).double().softmax(0), top_p)
        assert torch.allclose(freq, expected, atol=2e-4), (temperature, top_p)
        # The log-probs are the raw distribution's (temperature 1, no nucleus), whatever was sampled.
        assert torch.allclose(logprobs, torch.log_softmax(logits, 0)[picks], atol=1e-5)
    greedy, logprob = pol.sample_tokens(logits[None], pol.SamplingParams(temperature=0), torch.rand(1))
    assert greedy.item() == 0 and abs(logprob.item() - torch.log_softmax(logits, 0)[0].item()) < 1e-5


def test_sample_tokens_rows_with_narrow_and_wide_nuclei_each_draw_their_own(monkeypatch):
    """A batch where some rows' nucleus lies in the top candidates and others' does not (sorted
    apart): every row still draws its own exact top-p distribution."""
    import torch

    from lm import sampling as pol
    monkeypatch.setattr(pol, "NUCLEUS_CANDIDATES", 2)
    peaked = torch.tensor([6.0, 1.0, 0.5, -1.0, -3.0, 0.7])
    flat = torch.tensor([0.2, 0.1, 0.0, 0.3, -0.1, 0.05])
    n = 20000
    uniforms = (torch.arange(n, dtype=torch.float64) + 0.5) / n
    params = pol.SamplingParams(temperature=0.9, top_p=0.9)
    picks, _ = pol.sample_tokens(torch.stack([peaked, flat] * n), params, uniforms.repeat_interleave(2))
    for row, logits in enumerate((peaked, flat)):
        freq = torch.bincount(picks[row::2], minlength=6).double() / n
        assert torch.allclose(freq, _nucleus((logits / 0.9).double().softmax(0), 0.9), atol=2e-4), row


def test_top_candidates_searches_only_the_best_blocks():
    """The top k of each row from the k blocks with the largest maxima: the same values as a full
    top-k, largest first, with indices that point at them."""
    import torch

    from lm.sampling import BLOCK, top_candidates
    torch.manual_seed(0)
    logits = torch.randn(5, BLOCK * 40).to(torch.bfloat16)
    logits[1, :BLOCK * 3] += 5  # the best tokens crowded into a few blocks
    blocks = logits.view(5, 40, BLOCK).amax(-1)
    values, indices = top_candidates(logits, 64, blocks)
    expected, _ = logits.topk(64, dim=-1)
    assert torch.equal(values, expected) and torch.equal(logits.gather(1, indices), values)
    assert torch.equal(top_candidates(logits[:, :-1], 8)[0], logits[:, :-1].topk(8).values)  # not whole blocks


def test_packed_weights_and_attention_compute_what_the_plain_model_does(tiny_model_dir):
    """An HFPolicy's own model is made inference-only on CPU: bf16 linear layers packed once for
    oneDNN, and several-token queries over grouped key/value heads attending without copying the
    cache per head. Its logits for a left-padded batch (a mask, several tokens per row) and a
    decode step after it equal the plain transformers model's."""
    import torch

    from lm.models import PackedLinear, load_causal_lm
    from lm.policy import HFPolicy
    plain, _ = load_causal_lm(tiny_model_dir, dtype="bfloat16", device="cpu")
    policy = HFPolicy(tiny_model_dir, dtype="bfloat16", device="cpu")
    model = policy.model
    assert model.config._attn_implementation == "forkcode_sdpa" and model.config.num_key_value_heads < model.config.num_attention_heads
    packed = [m for m in model.modules() if isinstance(m, PackedLinear)]
    assert len(packed) == sum(type(m) is torch.nn.Linear for m in plain.modules()) > 0
    assert not any(type(m) is torch.nn.Linear for m in model.modules())
    assert {k: v.shape for k, v in model.state_dict().items()} == {k: v.shape for k, v in plain.state_dict().items()}
    ids = torch.tensor([[5, 9, 14, 3, 22, 7], [0, 0, 31, 8, 2, 40]])
    mask = torch.tensor([[1] * 6, [0, 0, 1, 1, 1, 1]])
    with torch.inference_mode():
        outs = []
        for m in (plain, model):
            first = m(input_ids=ids, attention_mask=mask, use_cache=True)
            step = m(input_ids=torch.tensor([[11], [12]]), attention_mask=torch.cat([mask, torch.ones(2, 1, dtype=torch.long)], 1),
                     past_key_values=first.past_key_values, use_cache=True)
            outs.append((first.logits[mask.bool()], step.logits))
    for a, b in zip(*outs):
        assert torch.allclose(a.float(), b.float(), atol=4e-3, rtol=0)  # logits here spread ~0.16
    fp32 = HFPolicy(tiny_model_dir, dtype="float32", device="cpu")  # not packed: MKL is as fast there
    assert not any(isinstance(m, PackedLinear) for m in fp32.model.modules())


def test_sample_many_equals_per_prompt_sampling(tiny_policy, monkeypatch):
    """Many prompts in one refilled batch (rows joining and leaving, a left-padded cache) give each
    prompt exactly the greedy tokens and log-probs it gets alone."""
    from lm.sampling import SamplingParams
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
    # The longest prompt joins last, into slots freed by shorter rows: the batch first grows wider
    # on the left to hold it, and every row's tokens stay its own.
    from lm.kvcache import Rows
    widened, widen = [], Rows._widen
    monkeypatch.setattr(Rows, "_widen", lambda self, width: (widened.append(width), widen(self, width))[1])
    order = [2, 0, 3, 1]
    late = dict(tiny_policy.sample_many([(prompts[i], 2, params[i]) for i in order], max_rows=4))
    assert widened
    for j, i in enumerate(order):
        assert [c.tokens for c in late[j]] == [c.tokens for c in alone[i]]
    # Sampled: every request gets its n completions within its own length limit, reproducibly.
    hot = [(p, 3, SamplingParams(max_new_tokens=8, temperature=1.0, seed=i)) for i, p in enumerate(prompts)]
    first = dict(tiny_policy.sample_many(hot, max_rows=6))
    again = dict(tiny_policy.sample_many(hot, max_rows=6))
    assert all(len(first[i]) == 3 and all(len(c.tokens) <= 8 for c in first[i]) for i in range(4))
    assert [[c.tokens for c in first[i]] for i in range(4)] == [[c.tokens for c in again[i]] for i in range(4)]


def test_auto_dtype_follows_the_cpu_bf16_flags(tmp_path):
    import torch

    from lm.models import cpu_has_native_bf16, pick_dtype
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


def _prompts(policy):
    other = Problem(id="q", question="Read n and print n squared.", kind="stdio", inputs=["2\n"], outputs=["4\n"])
    return [policy.prompt_tokens(messages(PROBLEM)), policy.prompt_tokens(messages(other, "reason"))]


def test_frontier_rows_decode_as_each_row_alone(tiny_policy):
    """Rows of different prompts in one batch, dropped, reordered and copied mid-way, give the same
    greedy tokens and log-probs as each sequence decoded on its own."""
    import torch

    from engine.batch import Frontier
    from lm.sampling import SamplingParams
    greedy = SamplingParams(temperature=0)
    prompts = _prompts(tiny_policy)
    frontier = Frontier.merge([Frontier.start(tiny_policy, ScriptedValue(), p)[0] for p in prompts])
    rows = [(0, [], []), (1, [], [])]  # (prompt, tokens, logprobs) per frontier row
    for step in range(14):
        if step == 5:  # copy row 1 twice, drop row 0
            frontier.select([1, 1])
            rows = [(1, list(rows[1][1]), list(rows[1][2])) for _ in range(2)]
        if step == 9:  # bring prompt 0 back as a fresh row next to the others (different lengths)
            frontier = Frontier.merge([frontier, Frontier.start(tiny_policy, ScriptedValue(), prompts[0])[0]])
            rows.append((0, [], []))
        tokens, logprobs = frontier.sample(greedy, torch.Generator().manual_seed(0))
        frontier.advance(tokens)
        for (_, toks, lps), t, lp in zip(rows, tokens, logprobs):
            toks.append(t)
            lps.append(lp)
    for p, toks, lps in rows:
        alone = tiny_policy.sample(prompts[p], 1, SamplingParams(max_new_tokens=len(toks), temperature=0, ignore_eos=True))[0]
        assert toks == alone.tokens
        assert max(abs(a - b) for a, b in zip(lps, alone.logprobs)) < 1e-4


def test_shared_trunk_values_equal_the_separate_value_model(tiny_model_dir, tiny_policy, tmp_path):
    """A head on the policy's own model reads the policy's hidden states (no value forward); its
    values equal the value model's own forward, and so do the batched value rows'."""
    import torch

    from engine import batch
    from engine.batch import Frontier, RowsValue, ScorerValue, SharedTrunkValue, value_track
    from lm.sampling import SamplingParams
    from valuemodel.model import ValueModel
    vm = ValueModel.from_base(tiny_model_dir, last_layers=0, dtype="float32", device="cpu")
    assert isinstance(value_track(tiny_policy, vm), SharedTrunkValue)
    other = ValueModel.from_base(make_tiny_model(str(tmp_path / "other"), seed=1), last_layers=0,
                                 dtype="float32", device="cpu")
    assert isinstance(value_track(tiny_policy, other), RowsValue)  # same shapes, other weights
    deeper = ValueModel.from_base(tiny_model_dir, last_layers=1, dtype="float32", device="cpu")
    assert isinstance(value_track(tiny_policy, deeper), RowsValue)  # a trained layer: its own forward
    cut = ValueModel.from_base(tiny_model_dir, last_layers=0, dtype="float32", device="cpu", trunk_layers=2)
    assert isinstance(value_track(tiny_policy, cut), SharedTrunkValue)  # the policy's first two layers
    assert isinstance(value_track(tiny_policy, ScriptedValue()), ScorerValue)  # any other ValueFunction
    prompts = _prompts(tiny_policy)
    sampling = SamplingParams(temperature=1.0)
    for critic, track in ((vm, SharedTrunkValue), (vm, RowsValue), (cut, SharedTrunkValue), (cut, RowsValue)):
        with pytest.MonkeyPatch.context() as mp:  # this track, whatever value_track would choose
            mp.setattr(batch, "value_track", lambda policy, value, track=track: track(value))
            parts, prompt_values = zip(*[Frontier.start(tiny_policy, critic, p) for p in prompts])
        frontier = Frontier.merge(parts)
        frontier.select([0, 1, 1])
        seqs, values = [list(prompts[0]), list(prompts[1]), list(prompts[1])], [[], [], []]
        generator = torch.Generator().manual_seed(3)
        for _ in range(12):
            tokens, _ = frontier.sample(sampling, generator)
            for seq, v, t, x in zip(seqs, values, tokens, frontier.advance(tokens)):
                seq.append(t)
                v.append(x)
        for seq, got, first in zip(seqs, values, [prompt_values[0], prompt_values[1], prompt_values[1]]):
            want = critic.values([seq])[0]
            assert max(abs(a - b) for a, b in zip([first] + got, want[-13:])) < 1e-5


class RequestOnly:
    """The HF policy seen as a serving backend: no forward_rows, one token per request (sample_next)."""

    def __init__(self, policy):
        self.inner = policy

    def __getattr__(self, name):
        if name == "forward_rows":
            raise AttributeError(name)
        return getattr(self.inner, name)


def test_backends_and_the_value_model_implement_their_protocols():
    import inspect

    from engine.result import ValueFunction
    from lm.policy import HFPolicy
    from lm.sampling import Policy
    from lm.vllm_policy import VLLMPolicy
    from valuemodel.model import ValueModel

    def members(protocol):
        return [n for n, v in vars(protocol).items() if inspect.isfunction(v) and not n.startswith("_")]
    for backend in (HFPolicy, VLLMPolicy):
        assert not [m for m in members(Policy) if not callable(getattr(backend, m, None))], backend
    from valuemodel.text_value import TextValue
    from valuemodel.vllm_value import VLLMValue
    for value in (ValueModel, TextValue, VLLMValue):
        assert not [m for m in members(ValueFunction) if not callable(getattr(value, m, None))], value


def test_search_on_a_request_backend_equals_the_batched_rows(tiny_policy):
    """Beam on a backend that can only be asked for next tokens (vLLM's way) makes the same greedy
    search as on batched rows."""
    cfg = DecodeConfig(beam_width=2, expansions=2, step="4", token_budget=120, max_new_tokens=40, temperature=0)
    a = beam(tiny_policy, ScriptedValue(), PROBLEM, cfg)
    b = beam(RequestOnly(tiny_policy), ScriptedValue(), PROBLEM, cfg)
    assert [c.tokens for c in a.candidates] == [c.tokens for c in b.candidates] and a.stats["steps"] >= 3
    assert [c.value for c in a.candidates] == [c.value for c in b.candidates]


def test_searches_side_by_side_equal_each_alone(tiny_policy):
    """Several problems' searches sharing each step's forward (run_searches) make the same searches
    as each run alone: tokens, values and their own token counts."""
    from engine.batch import run_searches
    from engine.beam import beam_search
    from engine.tree import tree_search
    problems = [PROBLEM, Problem(id="q", question="Read n and print n squared.", kind="stdio", inputs=["2\n"],
                                 outputs=["4\n"]),
                Problem(id="r", question="Print hello.", kind="stdio", inputs=[""], outputs=["hello\n"])]
    cfg = DecodeConfig(beam_width=2, expansions=2, step="4", token_budget=120, max_new_tokens=30, temperature=1.0,
                       top_p=1.0, seed=5, branch_prob=0.002, max_branches=3, abort_value=0.6, patience=3, warmup=0.3)
    for alone, search in ((lambda p: beam(tiny_policy, ScriptedValue(), p, cfg),
                           lambda p: beam_search(tiny_policy, ScriptedValue(), p, cfg)),
                          (lambda p: tree(tiny_policy, ScriptedValue(), p, cfg),
                           lambda p: tree_search(tiny_policy, ScriptedValue(), p, cfg))):
        together = dict(run_searches([search(p) for p in problems], max_rows=16, width=4))
        assert sorted(together) == [0, 1, 2]
        for i, p in enumerate(problems):
            a, b = alone(p), together[i]
            assert [c.tokens for c in a.candidates] == [c.tokens for c in b.candidates]
            assert [c.value for c in a.candidates] == [c.value for c in b.candidates]
            for key in ("policy_tokens", "policy_forward_tokens", "value_tokens"):
                assert a.stats[key] == b.stats[key]


def test_the_load_check_runs_only_on_assert_problems():
    """Stdio programs read their input at import; a call problem's module gets the judge's prelude
    (`List` and the like), which an import-only run lacks: a right `class Solution` would fail it."""
    from engine.best_of_k import load_checker
    from judge import loads_many
    call = Problem(id="c", question="", kind="call", fn_name="f", inputs=[[1]], outputs=[1])
    assert_problem = Problem(id="a", question="", kind="assert", tests=["assert f(1) == 1\n"])
    assert load_checker(PROBLEM, DecodeConfig()) is None and load_checker(call, DecodeConfig()) is None
    assert load_checker(assert_problem, DecodeConfig()) is loads_many
    assert load_checker(assert_problem, DecodeConfig(load_check=False)) is None
    assert loads_many(["class Solution:\n    def f(self, a: List[int]) -> int:\n        return 1\n"]) == [False]


def test_growing_cache_holds_what_dynamic_cache_holds():
    """Appends written into spare room, row selection, repeats and dropping leading columns leave
    the same keys and values as transformers' DynamicCache (which copies everything each step)."""
    import torch
    from transformers import DynamicCache

    from lm.kvcache import ROOM, GrowingCache
    torch.manual_seed(0)
    grow, plain = GrowingCache(), DynamicCache()

    def both(fn):
        fn(grow)
        fn(plain)
        for a, b in zip(grow.layers, plain.layers):
            assert torch.equal(a.keys, b.keys) and torch.equal(a.values, b.values)

    def append(n, rows):
        k, v = torch.randn(rows, 2, n, 4), torch.randn(rows, 2, n, 4)
        both(lambda c: [c.update(k + i, v - i, i) for i in range(2)])
    append(5, 1)
    both(lambda c: c.batch_repeat_interleave(3))
    for _ in range(ROOM + 3):  # past the first buffer's room: it is made again with room
        append(1, 3)
    both(lambda c: c.batch_select_indices(torch.tensor([0, 2])))
    append(1, 2)
    grow.drop_front(4)
    for layer in plain.layers:
        layer.keys, layer.values = layer.keys[:, :, 4:], layer.values[:, :, 4:]
    append(1, 2)
    assert grow.get_seq_length() == plain.get_seq_length() == 5 + ROOM + 3 + 2 - 4


def test_execution_rankers_pick_by_examples_agreement_and_value():
    from engine.select import Evidence, agreement, best, evidence, pick_pass_rate
    from judge.examples import Example
    examples = [Example("f(1)", "2"), Example("f(2)", "4")]
    cands = [evidence(0.9, ["3", "5"], examples), evidence(0.2, ["2", "4"], examples, weight=2),
             evidence(0.5, ["2", "5"], examples), evidence(0.8, ["error: TypeError", "timeout"], examples),
             evidence(None, ["2", "4"], examples)]
    assert [c.examples_passed for c in cands] == [0, 2, 1, 0, 2]
    assert agreement(cands) == [1, 3, 1, 0, 3]  # a program failing on every input agrees with nothing
    passed = [False, True, False, False, True]
    assert best(cands, "value") == [0] and pick_pass_rate(cands, passed, "value") == 0.0
    assert best(cands, "examples") == [1, 4] and pick_pass_rate(cands, passed, "examples") == 1.0
    assert best(cands, "examples+value") == [1]  # a missing value sorts last
    assert best(cands, "agreement") == [1, 4]
    assert pick_pass_rate([Evidence(0.5, 0, ("1",), 3), Evidence(0.5, 0, ("2",), 1)], [True, False], "value") == 0.75
    assert agreement([Evidence(0.1, 0, (), 1)]) == [0]  # no input to run: no agreement


def test_best_of_k_select_reranks_by_the_statement_examples(tiny_policy):
    """--select examples+value: a candidate that reproduces the statement's examples outranks a
    higher-valued one that does not, and the sandbox runs are counted."""
    from engine.result import Candidate
    from engine.select import rerank
    from judge import Problem
    problem = Problem(id="p", question='def double(x):\n    """Twice x.\n    >>> double(2)\n    4\n    """\n', kind="assert",
                      tests=["assert double(3) == 6"], fn_name="double")
    right = Candidate("def double(x):\n    return 2 * x\n", "", [1], 0.2, "eos")
    wrong = Candidate("def double(x):\n    return x + 1\n", "", [1], 0.9, "eos", duplicates=1)
    ranked, runs = rerank(problem, [wrong, right], "examples+value")
    assert [c.program for c in ranked] == [right.program, wrong.program] and runs == 2
    assert (right.examples_passed, right.agreement, wrong.examples_passed, wrong.agreement) == (1, 1, 0, 2)
    assert rerank(problem, [wrong, right], "value") == ([wrong, right], 0)
    cfg = DecodeConfig(select="examples+value")
    assert cfg.select == "examples+value"
    with pytest.raises(Exception, match="select must be one of"):
        DecodeConfig(select="vote")


def test_select_on_a_stdin_problem_judges_the_statement_examples():
    from engine.result import Candidate
    from engine.select import rerank
    from judge import Problem
    problem = Problem(id="s", question="Print the sum.\n\nExample Input\n1 2\nExample Output\n3\n", kind="stdio",
                      inputs=["5 5\n"], outputs=["10\n"])
    right = Candidate("a, b = map(int, input().split())\nprint(a + b)\n", "", [1], 0.1, "eos")
    wrong = Candidate("print(0)\n", "", [1], 0.9, "eos")
    ranked, runs = rerank(problem, [wrong, right], "examples+value")
    assert ranked[0] is right and runs == 2 and (right.examples_passed, wrong.examples_passed) == (1, 0)
    # Agreement is on what they print: two programs printing the same wrong answer agree (trailing
    # spaces aside), and outnumber the right one.
    also_wrong = Candidate("print(0, end='  \\n\\n')\n", "", [1], 0.5, "eos")
    ranked, runs = rerank(problem, [right, wrong, also_wrong], "agreement")
    assert [c.agreement for c in (right, wrong, also_wrong)] == [1, 2, 2] and ranked[0] is wrong and runs == 3


def test_policy_inputs_keeps_literal_calls_of_the_entry_point():
    """The inputs the policy writes: calls of the entry point with literal arguments only (a call
    that reads a name or runs code is dropped), written as they run in the program's namespace."""
    from engine.select import policy_inputs
    from judge import Problem
    from lm.prompts import test_input_calls
    text = ("```python\ndef f(a, b=0):\n    return f(a - 1) if a else b\n```\nf(1, [2, 3])\nf(x)\nf(len('a'))\n"
            "print(f(2))  # 4\n>>> f(-1, [])\nf(1, [2, 3])\nassert f(a=1, b='s') == 3\ng(1)\n")
    assert test_input_calls(text, "f") == ["f(1, [2, 3])", "f(2)", "f(-1, [])", "f(a=1, b='s')"]
    assert test_input_calls(text, "f", limit=1) == ["f(1, [2, 3])"]
    methods = "sol = Solution()\nprint(sol.f([1], 2))\nSolution().f(3, 'x')\nSolution().g(1)\nsol.f(y)\n"
    assert test_input_calls(methods, "Solution().f") == ["f([1], 2)", "f(3, 'x')"]

    class Scripted:  # a policy that always answers `text`
        def prompt_tokens(self, messages):
            assert "Write 5 different calls of `f`" in messages[-1]["content"]
            return [1, 2]

        def sample(self, prefix, n, params):
            from lm.sampling import Completion
            assert params.temperature == 0
            return [Completion([3], [0.0], text, "eos")]
    problems = [Problem(id="a", question="", kind="assert", tests=["pass"], fn_name="f", starter_code="def f(a, b): ..."),
                Problem(id="b", question="", kind="assert", tests=["pass"], fn_name="Solution().f"),
                Problem(id="c", question="", kind="stdio", inputs=["1\n"], outputs=["1\n"])]
    got = policy_inputs(Scripted(), problems)
    assert got["a"] == ["f(1, [2, 3])", "f(2)", "f(-1, [])", "f(a=1, b='s')"]
    assert got["b"] == ["Solution().f(1, [2, 3])", "Solution().f(2)", "Solution().f(-1, [])", "Solution().f(a=1, b='s')"]
    assert got["c"] == []


def test_fitted_ranker_scores_standardized_features():
    """The fitted ranker's features are taken within the problem (the critic's logit standardized,
    so any critic's scale fits one weight), and its pick follows the weighted sum."""
    from engine.select import agreement, best, evidence, features
    from judge.examples import Example
    examples = [Example("f(1)", "2")]
    cands = [evidence(0.9, ["3", "x"], examples), evidence(0.3, ["2", "y"], examples, weight=2),
             evidence(0.6, ["error: E", "timeout"], examples)]
    f = features(cands, agreement(cands))
    assert [round(x[1], 3) for x in f] == [0.0, 1.0, 0.0] and [x[2] for x in f] == [0.25, 0.5, 0.0]
    assert [x[3] for x in f] == [0.0, 0.0, 1.0]
    z = [x[0] for x in f]
    assert abs(z[0] + 2 * z[1] + z[2]) < 1e-9 and z[0] > z[2] > z[1]
    assert abs((z[0] ** 2 + 2 * z[1] ** 2 + z[2] ** 2) / 4 - 1) < 1e-9  # weighted mean 0, weighted std 1
    assert best(cands, "fitted", (1, 0, 0, 0)) == best(cands, "value") == [0]
    assert best(cands, "fitted", (0.2, 1, 0, 0)) == [1]
    assert best(cands, "fitted", (1, 0, 0, 5)) == [2]
    flat = [evidence(None, ["1"], []), evidence(None, ["1"], [])]
    assert features(flat, agreement(flat))[0][0] == 0.0  # no critic: the value feature is 0 for all
    assert best(flat, "fitted", (1, 1, 1, 1)) == [0, 1]


def test_selection_fit_learns_the_feature_that_separates():
    """research.selection_fit: on problems where agreement alone tells passing from failing, the
    fit puts weight on agreement, and its CV pick beats the critic's when the critic is noise."""
    import random as rnd

    from engine.select import FEATURES, evidence
    from research.selection_fit import fit, grouped_cv
    gen = rnd.Random(0)
    problems = {}
    for n in range(20):
        right = [evidence(gen.random(), ["1"], [], 1) for _ in range(3)]
        wrong = [evidence(gen.random(), [str(2 + i)], [], 1) for i in range(3)]
        problems[f"p{n}"] = (right + wrong, [True] * 3 + [False] * 3)
    w = dict(zip(FEATURES, fit(list(problems.values()), 0.01)))
    assert w["agreement"] > 1 and w["agreement"] > abs(w["value"])
    cv = grouped_cv(problems, l2s=(0.01,), folds=4, seeds=1)
    assert cv["fitted"]["0.01"][0] == 1.0 and cv["agreement"] == 1.0 and cv["value"] < 1.0
