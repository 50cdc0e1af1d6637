"""vLLM against the transformers backend on SmolLM2-135M, side by side in one run: 36 samples x 256
tokens from one prompt, and one 6x6 rollout tree (reference trunk). Needs the vLLM environment:
`bash scripts/setup_vllm.sh && .venv-vllm/bin/python -m pytest bench/benchmarks/test_vllm_throughput.py --benchmark-only -s`."""

import os
import time

import pytest

pytest.importorskip("vllm", reason="vLLM is not installed (optional backend: see docs/models.md)")

from datagen.tree import TreeConfig, grow_tree
from judge import load_problem
from lm.policy import HFPolicy, load_policy
from lm.prompts import messages
from lm.sampling import SamplingParams

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
EXAMPLE = os.path.join(REPO, "examples", "two_sum_stdio.json")


def _load(name):
    if name == "transformers":
        return HFPolicy("smollm2")
    # In-process engine (no worker to spawn from pytest). It pins this process's threads, so it is
    # created only after the transformers backend has been measured.
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    return load_policy("smollm2", "vllm", max_model_len=2048)


def _timed(fn):
    start = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - start


def test_vllm_vs_transformers(benchmark, timed):
    problem = load_problem(EXAMPLE)
    params = SamplingParams(max_new_tokens=256, temperature=1.0, seed=0, ignore_eos=True)
    rows = {}
    for name in ("transformers", "vllm"):
        policy = _load(name)
        prompt = policy.prompt_tokens(messages(problem))
        # warm-up: first-call compilation and allocation are not measured
        policy.sample(prompt, 4, SamplingParams(max_new_tokens=8, seed=0))
        sample = lambda policy=policy, prompt=prompt: policy.sample(prompt, 36, params)
        samples, s_wall = timed(sample) if name == "vllm" else _timed(sample)
        s_tokens = sum(len(c.tokens) for c in samples)
        before = policy.stats.generated_tokens
        tree, t_wall = _timed(lambda policy=policy: grow_tree(policy, problem, TreeConfig(trunk="reference", max_new_tokens=256)))
        t_tokens = policy.stats.generated_tokens - before
        rows[name] = (s_tokens / s_wall, s_wall, t_tokens / t_wall, t_wall, len(tree["rollouts"]))
    print(f"\nSmolLM2-135M, {os.cpu_count()} CPUs")
    print(f"  {'backend':13s} {'36x256 tok/s':>13s} {'wall s':>7s} {'6x6 tree tok/s':>15s} {'wall s':>7s}")
    for name, (s_tps, s_wall, t_tps, t_wall, _n) in rows.items():
        print(f"  {name:13s} {s_tps:13.0f} {s_wall:7.1f} {t_tps:15.0f} {t_wall:7.1f}")
    (hs, _, ht, *_), (vs, _, vt, *_) = rows["transformers"], rows["vllm"]
    print(f"  ratio vllm/transformers: {vs / hs:.2f}x on 36 samples, {vt / ht:.2f}x on the tree")
    assert rows["vllm"][4] == rows["transformers"][4] == 36
    benchmark.extra_info.update({"hf_samples_tps": hs, "vllm_samples_tps": vs, "hf_tree_tps": ht,
                                 "vllm_tree_tps": vt, "samples_ratio": vs / hs, "tree_ratio": vt / ht})
    assert vs / hs >= 2 and vt / ht >= 2
