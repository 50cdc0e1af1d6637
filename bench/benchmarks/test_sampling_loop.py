"""The sampling loop against the model's raw forward, side by side in one run (target: the loop
<= 1.25x the raw forward's time per token at the same batch), bf16 against fp32, and many problems
in one refilled batch (HFPolicy.sample_many) against one problem's k samples at a time.

The policy is `FORKCODE_BENCH_POLICY` (e.g. the Qwen2.5-Coder-0.5B GGUF), else SmolLM2-135M."""

import os
import time

import torch

from lm.models import cpu_has_native_bf16
from lm.policy import HFPolicy
from lm.sampling import SamplingParams

POLICY = os.environ.get("FORKCODE_BENCH_POLICY") or "smollm2"
ROWS, STEPS = 8, 64
PROMPT = [{"role": "user", "content": "Write a Python function that merges two sorted lists, with a docstring."}]


def loop_tok_s(policy, prompt, rows=ROWS, steps=STEPS, timed=None):
    params = SamplingParams(max_new_tokens=steps, temperature=0.8, top_p=0.95, seed=0, ignore_eos=True)
    policy.sample(prompt, rows, SamplingParams(max_new_tokens=2, temperature=0.8, top_p=0.95, seed=0))  # warm-up
    if timed:
        return rows * steps / timed(lambda: policy.sample(prompt, rows, params))[1]
    start = time.perf_counter()
    policy.sample(prompt, rows, params)
    return rows * steps / (time.perf_counter() - start)


@torch.inference_mode()
def raw_tok_s(policy, prompt, rows=ROWS, steps=STEPS):
    """Decode steps of the bare model at the same batch and lengths (log_softmax and argmax only)."""
    from transformers import DynamicCache
    model = policy.model
    out = model(input_ids=torch.tensor([prompt] * rows), past_key_values=DynamicCache(), use_cache=True,
                logits_to_keep=1)
    nxt = out.logits[:, -1].argmax(-1)
    start = time.perf_counter()
    for _ in range(steps):
        out = model(input_ids=nxt[:, None], past_key_values=out.past_key_values, use_cache=True)
        nxt = torch.log_softmax(out.logits[:, -1].float(), -1).argmax(-1)
    return rows * steps / (time.perf_counter() - start)


def test_sampling_loop_against_raw_forward_and_dtypes(benchmark, timed):
    results = {}
    for dtype in ("bfloat16", "float32"):
        policy = HFPolicy(POLICY, dtype=dtype)
        prompt = policy.prompt_tokens(PROMPT)
        results[dtype] = (loop_tok_s(policy, prompt, timed=timed if dtype == "bfloat16" else None), raw_tok_s(policy, prompt))
        del policy
    print(f"\n{POLICY}, {ROWS} rows x {STEPS} tokens, top-p 0.95 (CPU native bf16: {cpu_has_native_bf16()}):")
    for dtype, (loop, raw) in results.items():
        print(f"  {dtype:9s} loop {loop:6.1f} tok/s   raw forward {raw:6.1f} tok/s   loop time / raw time {raw / loop:.2f}x")
    print(f"  bf16 / fp32 (loop): {results['bfloat16'][0] / results['float32'][0]:.2f}x")
    benchmark.extra_info.update({f"{d}_{k}": v for d, (loop, raw) in results.items()
                                 for k, v in (("loop_tok_s", loop), ("raw_tok_s", raw))})
    assert all(raw / loop <= 1.25 for loop, raw in results.values())  # the loop costs little beyond the model


def test_many_problems_in_one_batch(benchmark, timed):
    """k=8 samples for each of 8 MBPP-like prompts (real stops: EOS, 128 tokens): one prompt at a
    time against all of them through sample_many with 32 rows."""
    policy = HFPolicy(POLICY)
    tasks = ["reverse a string", "sum a list", "check for a prime", "count vowels", "flatten a nested list",
             "find the maximum of three numbers", "merge two dicts", "compute a factorial"]
    prompts = [policy.prompt_tokens([{"role": "user", "content": f"Write a Python function to {t}."}]) for t in tasks]
    params = SamplingParams(max_new_tokens=128, temperature=0.8, top_p=0.95, seed=0)
    start, tokens = time.perf_counter(), 0
    for p in prompts:
        tokens += sum(len(c.tokens) for c in policy.sample(p, 8, params))
    one = tokens / (time.perf_counter() - start)
    done, seconds = timed(lambda: list(policy.sample_many([(p, 8, params) for p in prompts], max_rows=32)))
    many = sum(len(c.tokens) for _, completions in done for c in completions) / seconds
    print(f"\n{POLICY}, 8 prompts x k=8: one prompt at a time {one:.1f} tok/s, sample_many (32 rows) {many:.1f} tok/s "
          f"-> {many / one:.2f}x")
    benchmark.extra_info.update({"one_at_a_time_tok_s": one, "sample_many_tok_s": many})
    assert many >= 2 * one  # a refilled batch of many problems against one problem's k rows
