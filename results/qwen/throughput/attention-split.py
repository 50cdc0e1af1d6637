"""Decode attention over padding, one layer of Qwen2.5-0.5B shapes (128 rows, 14 query heads over 2
key/value heads, 700 columns; each row right-aligned, its length uniform in 100-700): SDPA over every
column under the mask (what runs) against a split softmax that reads only the last W columns for all
rows, plus the older columns of the rows that have them (gathered: they are not contiguous rows),
combined by the flash kernel's log-sum-exps. Output: attention-split.txt."""
import time, torch
torch.manual_seed(0)
B, H, KV, D, L = 128, 14, 2, 64, 700
G = H // KV
ages = torch.randint(100, L + 1, (B,)); ages[0] = L
kb = torch.randn(B, KV, L + 256, D, dtype=torch.bfloat16); vb = torch.randn_like(kb)
k, v = kb[:, :, :L], vb[:, :, :L]
q = torch.randn(B, H, 1, D, dtype=torch.bfloat16)
cols = torch.arange(L)
mask = cols[None, :] >= (L - ages)[:, None]  # [B, L] bool, right-aligned
flash = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu

def full():
    qp = q.reshape(B, KV, G, D)
    return torch.nn.functional.scaled_dot_product_attention(qp, k, v, attn_mask=mask[:, None, None, :]).reshape(B, H, 1, D)

def split(W):
    qp = q.reshape(B, KV, G, D)
    m = mask[:, None, None, L - W:].expand(B, 1, G, W)
    o1, lse1 = flash(qp, k[:, :, L - W:], v[:, :, L - W:], attn_mask=torch.where(m, 0.0, float("-inf")).to(q.dtype))[:2]
    old = (ages > W).nonzero()[:, 0]
    if len(old) == 0:
        return o1.reshape(B, H, 1, D)
    start = int(L - ages[old].max())
    ko, vo = k[old, :, start:L - W], v[old, :, start:L - W]
    mo = mask[old, None, None, start:L - W].expand(len(old), 1, G, L - W - start)
    o2, lse2 = flash(qp[old], ko, vo, attn_mask=torch.where(mo, 0.0, float("-inf")).to(q.dtype))[:2]
    lse1o = lse1[old]
    mx = torch.maximum(lse1o, lse2)
    w1, w2 = torch.exp(lse1o - mx), torch.exp(lse2 - mx)   # [n, KV, G]
    out = o1.clone()
    out[old] = ((o1[old].float() * w1[..., None] + o2.float() * w2[..., None]) / (w1 + w2)[..., None]).to(q.dtype)
    return out.reshape(B, H, 1, D)

ref = full()
for W in (200, 350, 500):
    err = (split(W).float() - ref.float()).abs().max().item()
    print(f"W {W}: old rows {(ages > W).sum().item()}, max |diff| {err:.4f}")
def t(f, n=20):
    f(); s = time.perf_counter()
    for _ in range(n): f()
    return (time.perf_counter() - s) / n * 1e3
for rep in range(3):
    print("full", round(t(full), 2), "ms;", " ".join(f"split{W} {t(lambda: split(W)):.2f}" for W in (200, 350, 500)))
