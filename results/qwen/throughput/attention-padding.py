"""How much of a refilled batch's decode attention reads padding: sample_many's admission (a request
joins when its rows fit in 128) replayed on committed samples' prompt and sample lengths. Each row
is right-aligned, so every row of a step reads as many columns as the oldest live row has
positions; the rest of its columns are padding. Output: attention-padding.txt."""
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", ".."))
from bench.benchmarks.test_throughput import admitted_steps  # noqa: E402


def replay(requests, max_rows=128):
    """(steps, K/V columns read, real positions among them) over the run; requests: (prompt
    length, its samples' token counts)."""
    read = real = steps = 0
    for live in admitted_steps([lengths for _, lengths in requests], max_rows):
        positions = [requests[index][0] + done for index, done in live]
        read, real, steps = read + len(live) * max(positions), real + sum(positions), steps + 1
    return steps, read, real


for name, limit in (("humaneval", 16), ("humaneval", None), ("leetcode-train", 400)):
    rows = [json.loads(line) for line in open(os.path.join(HERE, "..", name, "runs", "sample.jsonl"))]
    if name == "humaneval":
        rows.sort(key=lambda r: int(r["problem_id"].split("/")[1]))
    requests = [(len(r["prompt_tokens"]), [len(c["tokens"]) for c in r["candidates"]]) for r in rows][:limit]
    steps, read, real = replay(requests)
    print(f"{name}, first {len(requests)} problems x 8 at 128 rows: {steps} steps, {read / 1e6:.1f}M K/V columns "
          f"read over all rows, {real / 1e6:.1f}M of them real: {1 - real / read:.0%} padding")
