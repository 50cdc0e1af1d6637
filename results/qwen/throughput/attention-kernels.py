"""Decode attention over padding, one layer of Qwen2.5-0.5B shapes: 128 rows, 14 query heads over 2
key/value heads, 700 columns, each row right-aligned with its length uniform in 100-700. Against
SDPA over every column under the mask (what runs), two ways to skip the padding:

- split: every row reads the last W columns; the rows longer than W (not contiguous rows: gathered)
  also read their older columns; the two parts are combined by the flash kernel's log-sum-exps;
- chunks: the rows sorted by length and cut into C chunks of contiguous rows, each chunk reading from
  its own longest row's first column (views, no copies).

Each is checked against SDPA, then all are timed in turns, three rounds. Output: attention-kernels.txt."""
import time

import torch

torch.manual_seed(0)
ROWS, HEADS, KV_HEADS, DIM, COLUMNS = 128, 14, 2, 64, 700
GROUP = HEADS // KV_HEADS
flash = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu
sdpa = torch.nn.functional.scaled_dot_product_attention

lengths = torch.randint(100, COLUMNS + 1, (ROWS,))
lengths[0] = COLUMNS
room_k = torch.randn(ROWS, KV_HEADS, COLUMNS + 256, DIM, dtype=torch.bfloat16)  # a cache with room, as GrowingCache's
room_v = torch.randn_like(room_k)
k, v = room_k[:, :, :COLUMNS], room_v[:, :, :COLUMNS]
query = torch.randn(ROWS, KV_HEADS, GROUP, DIM, dtype=torch.bfloat16)  # each key/value head's query heads packed


def right_aligned(lengths):
    return torch.arange(COLUMNS)[None, :] >= (COLUMNS - lengths)[:, None]  # [rows, columns], True where real


def full(mask):
    return sdpa(query, k, v, attn_mask=mask[:, None, None, :])


def additive(mask, rows):
    return torch.where(mask[:, None, None, :], 0.0, float("-inf")).to(query.dtype).expand(rows, 1, GROUP, mask.shape[1])


def split(mask, lengths, window):
    recent = COLUMNS - window
    out, lse = flash(query, k[:, :, recent:], v[:, :, recent:], attn_mask=additive(mask[:, recent:], ROWS))[:2]
    old = (lengths > window).nonzero()[:, 0]
    if len(old) == 0:
        return out
    start = int(COLUMNS - lengths[old].max())
    out_old, lse_old = flash(query[old], k[old, :, start:recent], v[old, :, start:recent],
                             attn_mask=additive(mask[old, start:recent], len(old)))[:2]
    top = torch.maximum(lse[old], lse_old)
    w_recent, w_old = torch.exp(lse[old] - top), torch.exp(lse_old - top)
    out = out.clone()
    out[old] = ((out[old].float() * w_recent[..., None] + out_old.float() * w_old[..., None])
                / (w_recent + w_old)[..., None]).to(query.dtype)
    return out


def chunked(mask, chunks):
    size = ROWS // chunks
    starts = mask.int().argmax(-1).view(chunks, -1).min(-1).values.tolist()
    return torch.cat([sdpa(query[c * size:(c + 1) * size], k[c * size:(c + 1) * size, :, s:],
                           v[c * size:(c + 1) * size, :, s:], attn_mask=mask[c * size:(c + 1) * size, None, None, s:])
                      for c, s in enumerate(starts)])


def ms(f, n=20):
    f()
    start = time.perf_counter()
    for _ in range(n):
        f()
    return (time.perf_counter() - start) / n * 1e3


mask = right_aligned(lengths)
by_length = right_aligned(lengths.sort(descending=True).values)
print(f"padding: {1 - mask.float().mean():.0%} of the columns read")
for window in (200, 350, 500):
    print(f"split W {window}: {(lengths > window).sum().item()} old rows, max |difference| "
          f"{(split(mask, lengths, window).float() - full(mask).float()).abs().max().item():.4f}")
for chunks in (4, 8, 16):
    print(f"chunks C {chunks}: max |difference| {(chunked(by_length, chunks).float() - full(by_length).float()).abs().max().item():.4f}")
for _ in range(3):
    print(f"ms a layer: SDPA {ms(lambda: full(mask)):.2f}; "
          + ", ".join(f"split W {w} {ms(lambda: split(mask, lengths, w)):.2f}" for w in (200, 350, 500)) + "; "
          + ", ".join(f"chunks C {c} {ms(lambda: chunked(by_length, c)):.2f}" for c in (4, 8, 16)))
