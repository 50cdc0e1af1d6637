"""What a decode step's parts cost on this machine, for the choices in README.md:

- int4 weights (torch's _weight_int4pack_mm_for_cpu, groups of 32 as in Q4_K) against the packed
  bf16 linear layers (lm.models.PackedLinear), 72 distinct 896x4864 matrices so the weights come
  from memory as in a real step, and the 152k-token LM head;
- decode attention of one query token per row (7 query heads per key/value head, packed as
  transformers does) over 24 layers' K/V: SDPA with a bool or a float mask, matmul + softmax by
  hand, and torch.compile of the elementwise form;
- a whole decode step of the policy at 64 and 128 rows against the cache's width.

Usage: step-costs.py POLICY"""
import sys
import time

import torch

from lm.kvcache import GrowingCache
from lm.models import PackedLinear
from lm.policy import HFPolicy

F = torch.nn.functional
torch.manual_seed(0)


def ms(fn, n=5):
    fn()
    fn()
    start = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - start) / n * 1e3


def int4_against_bf16():
    k, n, group = 896, 4864, 32
    bf16, int4 = [], []
    for _ in range(72):
        bf16.append(PackedLinear(torch.nn.Linear(k, n, bias=False).to(torch.bfloat16)))
        q = torch.randint(0, 16, (n, k), dtype=torch.int32)
        int4.append((torch.ops.aten._convert_weight_to_int4pack_for_cpu(q, 1), torch.randn(k // group, n, 2).to(torch.bfloat16)))
    for rows in (1, 2, 4, 8):
        x = torch.randn(rows, k).to(torch.bfloat16)
        a = ms(lambda x=x: [lin(x) for lin in bf16])
        b = ms(lambda x=x: [torch.ops.aten._weight_int4pack_mm_for_cpu(x, w, group, s) for w, s in int4])
        print(f"72 x {k}x{n} weights, {rows} rows: bf16 packed {a:.1f} ms, int4 {b:.1f} ms")
    head = PackedLinear(torch.nn.Linear(k, 151936, bias=False).to(torch.bfloat16))
    q = torch.randint(0, 16, (151936, k), dtype=torch.int32)
    head4 = torch.ops.aten._convert_weight_to_int4pack_for_cpu(q, 1), torch.randn(k // group, 151936, 2).to(torch.bfloat16)
    for rows in (1, 4, 128):
        x = torch.randn(rows, k).to(torch.bfloat16)
        a = ms(lambda x=x: head(x))
        b = ms(lambda x=x: torch.ops.aten._weight_int4pack_mm_for_cpu(x, head4[0], group, head4[1]))
        print(f"LM head {k}x151936, {rows} rows: bf16 packed {a:.1f} ms, int4 {b:.1f} ms")


def by_hand(q, k, v, bias):
    scores = torch.matmul(q, k.transpose(-1, -2)).float() * 0.125 + bias
    return torch.matmul(scores.softmax(-1).to(q.dtype), v)


def elementwise(q, k, v, bias):
    scores = (q.float()[:, :, :, None, :] * k.float()[:, :, None, :, :]).sum(-1) * 0.125 + bias
    return (scores.softmax(-1)[:, :, :, :, None] * v.float()[:, :, None, :, :]).sum(-2).to(q.dtype)


def attention_at(rows, width, compiled):
    kv = [(torch.randn(rows, 2, width, 64, dtype=torch.bfloat16), torch.randn(rows, 2, width, 64, dtype=torch.bfloat16))
          for _ in range(24)]
    q = torch.randn(rows, 2, 7, 64, dtype=torch.bfloat16)
    mask = torch.ones(rows, 1, 1, width, dtype=torch.bool)
    mask[: rows // 2, :, :, : width // 2] = False  # half the rows left-padded
    bias = torch.zeros(rows, 1, 1, width).masked_fill(~mask, float("-inf"))
    ways = {"sdpa bool mask": lambda k, v: F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=0.125),
            "sdpa float mask": lambda k, v: F.scaled_dot_product_attention(q, k, v, attn_mask=bias.to(q.dtype), scale=0.125),
            "by hand": lambda k, v: by_hand(q, k, v, bias),
            "compiled": lambda k, v: compiled(q, k, v, bias)}
    times = {name: ms(lambda way=way: [way(k, v) for k, v in kv]) for name, way in ways.items()}
    print(f"attention, {rows} rows x {width} columns, 24 layers ({24 * 2 * rows * 2 * width * 64 * 2 / 1e6:.0f} MB of K/V): "
          + ", ".join(f"{name} {t:.1f} ms" for name, t in times.items()))


def decode_attention():
    compiled = torch.compile(elementwise, dynamic=True)
    for rows, width in ((128, 200), (128, 800), (32, 800), (8, 400)):
        attention_at(rows, width, compiled)


@torch.inference_mode()
def step_against_width(policy):
    config = policy.model.config
    head_dim = config.hidden_size // config.num_attention_heads
    for rows in (128, 64):
        for width in (64, 200, 400, 800):
            cache = GrowingCache()
            for layer in range(config.num_hidden_layers):
                shape = (rows, config.num_key_value_heads, width, head_dim)
                cache.update(torch.randn(shape, dtype=torch.bfloat16), torch.randn(shape, dtype=torch.bfloat16), layer)
            mask = torch.ones(rows, width, dtype=torch.long)
            mask[: rows // 2, : width // 2] = 0
            pos, times = mask.sum(1), []
            for _ in range(6):
                mask = torch.cat([mask, mask.new_ones(rows, 1)], 1)
                start = time.perf_counter()
                _, cache = policy._forward_last(torch.randint(0, 1000, (rows, 1)), cache, mask, pos[:, None])
                times.append(time.perf_counter() - start)
                pos = pos + 1
            print(f"decode step, {rows} rows x {width} columns: {sorted(times)[2] * 1e3:.1f} ms (median of 6)")


int4_against_bf16()
decode_attention()
step_against_width(HFPolicy(sys.argv[1]))
