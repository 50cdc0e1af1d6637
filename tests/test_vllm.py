"""The vLLM backend against the transformers backend on SmolLM2-135M: same results contract, same
tree shape, prefix caching, decode on vLLM. Runs only where vLLM is installed (docs/models.md:
`bash scripts/setup_vllm.sh && .venv-vllm/bin/python -m pytest tests/test_vllm.py`)."""

import json
import math
import os
import subprocess
import sys

import pytest

pytest.importorskip("vllm", reason="vLLM is not installed (optional backend: see docs/models.md)")

from datagen.tree import TreeConfig, examples, grow_tree, judge_tree
from engine.best_of_k import best_of_k
from engine.result import DecodeConfig
from judge import load_problem
from lm.policy import HFPolicy, load_policy
from lm.prompts import messages, stop_after_code
from lm.sampling import SamplingParams

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLE = os.path.join(REPO, "examples", "two_sum_stdio.json")
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def policies():
    # In-process engine: no worker process to spawn from inside pytest.
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    vllm_policy = load_policy("smollm2", "vllm", dtype="float32", max_model_len=2048)
    return vllm_policy, HFPolicy("smollm2", dtype="float32")  # like with like: fp32 on both sides, on any CPU


@pytest.fixture(scope="module")
def problem():
    return load_problem(EXAMPLE)


def test_same_tokenizer_and_prompt(policies, problem):
    v, hf = policies
    assert v.eos_ids == hf.eos_ids
    assert v.prompt_tokens(messages(problem)) == hf.prompt_tokens(messages(problem))


def test_teacher_force_log_probs_match_transformers(policies, problem):
    v, hf = policies
    prompt = hf.prompt_tokens(messages(problem))
    cont = hf.tokenizer("```python\nprint(1)\n```", add_special_tokens=False)["input_ids"]
    lp_v, state = v.teacher_force(prompt, cont)
    lp_hf, _ = hf.teacher_force(prompt, cont)
    assert len(lp_v) == len(cont) and state.tokens == prompt + cont
    assert max(abs(a - b) for a, b in zip(lp_v, lp_hf)) < 0.05


def test_greedy_matches_transformers_and_log_probs_are_raw(policies, problem):
    v, hf = policies
    prompt = hf.prompt_tokens(messages(problem))
    params = SamplingParams(max_new_tokens=24, temperature=0.0)
    (cv,) = v.sample(prompt, 1, params)
    (ch,) = hf.sample(prompt, 1, params)
    assert cv.tokens == ch.tokens
    assert max(abs(a - b) for a, b in zip(cv.logprobs, ch.logprobs)) < 0.05
    # Raw log-probs: at temperature 0.5 a sampled token keeps its temperature-1 log-prob.
    (cs,) = v.sample(prompt, 1, SamplingParams(max_new_tokens=8, temperature=0.5, seed=3))
    lp_tf, _ = v.teacher_force(prompt, cs.tokens)
    assert max(abs(a - b) for a, b in zip(cs.logprobs, lp_tf)) < 0.05


def test_forks_shape_seed_and_finish_reasons(policies, problem):
    v, _ = policies
    prompt = v.prompt_tokens(messages(problem))
    params = SamplingParams(max_new_tokens=32, temperature=1.0, seed=11,
                            stop_fn=stop_after_code(len(prompt), v.decode))
    state = v.extend(v.teacher_force(prompt[:-1], prompt[-1:])[1], [])
    groups = v.sample_forks(state, [len(prompt), len(prompt) - 3], 4, params)
    assert [len(g) for g in groups] == [4, 4]
    for g in groups:
        for c in g:
            assert len(c.tokens) == len(c.logprobs) > 0 and all(lp <= 1e-6 for lp in c.logprobs)
            assert c.finish_reason in ("eos", "stop", "length")
            assert (c.finish_reason == "length") == (len(c.tokens) == 32 and c.tokens[-1] not in v.eos_ids)
            assert c.text == v.decode(c.tokens)
    assert len({tuple(c.tokens) for c in groups[0]}) > 1, "n samples of one request must differ"
    again = v.sample_forks(state, [len(prompt), len(prompt) - 3], 4, params)
    assert [[c.tokens for c in g] for g in again] == [[c.tokens for c in g] for g in groups]


def test_prefix_cache_serves_shared_prefix(policies, problem):
    from lm.sampling import PrefixState
    v, _ = policies
    prompt = v.prompt_tokens(messages(problem))
    (first,) = v.sample(prompt, 1, SamplingParams(max_new_tokens=320, temperature=1.0, seed=1, ignore_eos=True))
    seq = prompt + first.tokens
    before = v.stats.snapshot()
    (group,) = v.sample_forks(PrefixState(seq, None, len(seq) - 1), [len(seq)], 2,
                              SamplingParams(max_new_tokens=4, temperature=1.0, seed=2))
    prefilled = v.stats.forward_tokens - before.forward_tokens - sum(len(c.tokens) for c in group)
    # The earlier request left the sequence's full KV blocks in vLLM's prefix cache: only the tail
    # past the last full block (block size 16 on GPU, 128 on CPU) is computed again.
    assert len(seq) == len(prompt) + 320 and 0 <= prefilled <= 128, prefilled


def test_tree_has_the_same_shape_on_both_backends(policies, problem):
    v, hf = policies
    cfg = TreeConfig(forks=3, per_fork=2, trunk="reference", max_new_tokens=24, timeout=4)
    tv = judge_tree(grow_tree(v, problem, cfg), problem, cfg)
    th = judge_tree(grow_tree(hf, problem, cfg), problem, cfg)
    assert tv.keys() == th.keys() and tv["trunk"].keys() == th["trunk"].keys()
    assert tv["trunk"]["tokens"] == th["trunk"]["tokens"] and tv["prompt_tokens"] == th["prompt_tokens"]
    assert len(tv["forks"]) == len(th["forks"]) == 3 and len(tv["rollouts"]) == len(th["rollouts"]) == 6
    assert [r.keys() for r in tv["rollouts"]] == [r.keys() for r in th["rollouts"]]
    assert [len(e["response_tokens"]) > 0 for e in examples(tv)] == [True] * 7


def test_best_of_k_on_vllm(policies, problem, tmp_path):
    from valuemodel.model import ValueModel
    v, _ = policies
    value = ValueModel.from_base("smollm2", last_layers=1)
    r = best_of_k(v, value, problem, DecodeConfig(k=3, max_new_tokens=48, seed=0, select="value"))
    assert r.strategy == "best_of_k" and len(r.candidates) >= 1
    assert r.value == max(c.value for c in r.candidates) and all(0 <= c.value <= 1 for c in r.candidates)
    assert r.stats["policy_tokens"] == sum(len(c.tokens) * (1 + c.duplicates) for c in r.candidates)


def test_decode_cli_backend_vllm(tmp_path):
    value_dir = tmp_path / "value"
    from valuemodel.model import ValueModel
    ValueModel.from_base("smollm2", last_layers=1).save(str(value_dir))
    out = subprocess.run([sys.executable, "-m", "engine.cli", "--strategy", "best_of_k", "--backend", "vllm",
                          "--problem", EXAMPLE, "--value", str(value_dir), "--k", "2", "--max-new-tokens", "32",
                          "--json"], capture_output=True, text=True, cwd=REPO, timeout=600,
                         env={k: v for k, v in os.environ.items() if k != "VLLM_ENABLE_V1_MULTIPROCESSING"})
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert {"program", "value", "strategy", "stats"} <= result.keys() and result["strategy"] == "best_of_k"
    assert math.isfinite(result["value"])


def test_value_on_vllm_pooling_equals_transformers(tmp_path):
    """A value checkpoint (head with a bias + 1 trained layer on SmolLM2) scored by vLLM's pooling
    runner: per-token values and final values equal the transformers model's within 1e-4 (fp32;
    measured about 2e-6)."""
    import torch

    from valuemodel.model import ValueModel, head_module
    from valuemodel.vllm_value import VLLMValue
    torch.manual_seed(0)
    vm = ValueModel.from_base("smollm2", last_layers=1, dtype="float32")
    head = head_module(vm.model)[1]
    with torch.no_grad():
        head.weight.normal_(0, 0.05)
        head.bias.fill_(0.3)  # vLLM's converted head may drop a bias: VLLMValue adds it itself
    served = VLLMValue(vm, dtype="float32", max_model_len=2048)
    tok = vm.tokenizer
    prompt = tok("<|im_start|>user\nAdd two numbers.<|im_end|>\n<|im_start|>assistant\n")["input_ids"]
    conts = [tok(t, add_special_tokens=False)["input_ids"] for t in
             ("```python\nprint(sum(map(int, input().split())))\n```", "```python\nprint(1)\n```", "x")]
    want, got = vm.values([prompt + c for c in conts]), served.values([prompt + c for c in conts])
    assert [len(g) for g in got] == [len(w) for w in want]
    assert max(abs(a - b) for g, w in zip(got, want) for a, b in zip(g, w)) < 1e-4
    for how in ("last", "mean"):
        vm.aggregate = served.aggregate = how
        assert served.final_values(prompt, conts) == pytest.approx(vm.final_values(prompt, conts), abs=1e-4)
    assert served.tokens_scored > 0
