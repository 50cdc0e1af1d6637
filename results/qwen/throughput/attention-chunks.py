"""Decode attention over padding, the other way (see attention-split.py): rows sorted by length, cut
into 4, 8 or 16 chunks of contiguous rows, each chunk reading from its own oldest row's first column
(views, no copies), against SDPA over every column. One layer of Qwen2.5-0.5B shapes (128 rows, 14
query heads over 2 key/value heads, 700 columns, lengths uniform in 100-700). Output: attention-chunks.txt."""
import time, torch
torch.manual_seed(0)
B, H, KV, D, L = 128, 14, 2, 64, 700
G = H // KV
ages = torch.randint(100, L + 1, (B,)); ages[0] = L
ages_sorted, _ = ages.sort(descending=True)
kb = torch.randn(B, KV, L + 256, D, dtype=torch.bfloat16); vb = torch.randn_like(kb)
k, v = kb[:, :, :L], vb[:, :, :L]
q = torch.randn(B, H, 1, D, dtype=torch.bfloat16)
cols = torch.arange(L)
def mk(a): return cols[None, :] >= (L - a)[:, None]
sdpa = torch.nn.functional.scaled_dot_product_attention
def full(mask):
    return sdpa(q.reshape(B, KV, G, D), k, v, attn_mask=mask[:, None, None, :]).reshape(B, H, 1, D)
def chunked(mask, C):
    qp = q.reshape(B, KV, G, D)
    first = mask.int().argmax(-1)
    starts = first.view(C, -1).min(-1).values.tolist()
    n = B // C
    outs = [sdpa(qp[c*n:(c+1)*n], k[c*n:(c+1)*n, :, s:], v[c*n:(c+1)*n, :, s:], attn_mask=mask[c*n:(c+1)*n, None, None, s:])
            for c, s in enumerate(starts)]
    return torch.cat(outs).reshape(B, H, 1, D)
ms = mk(ages_sorted)
for C in (4, 8, 16):
    print(C, (chunked(ms, C).float() - full(ms).float()).abs().max().item())
def t(f, n=20):
    f(); s = time.perf_counter()
    for _ in range(n): f()
    return (time.perf_counter() - s) / n * 1e3
for rep in range(3):
    print(f"full {t(lambda: full(ms)):.2f} ms; " + " ".join(f"chunks{C} {t(lambda: chunked(ms, C)):.2f}" for C in (4, 8, 16)))
