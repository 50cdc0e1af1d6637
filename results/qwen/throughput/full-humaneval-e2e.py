"""End to end against the raw sampler on all 164 HumanEval problems x 8 at 128 rows, the
benchmark's settings otherwise (bench/benchmarks/test_throughput.py: E2E, raw_tok_s, drain_bound):
with ten times the requests of the issue's 16-problem run, the batch stays full until the last
~16 problems, so the drain weighs less. Output: full-humaneval-e2e.txt."""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", ".."))
from bench.benchmarks.test_throughput import (  # noqa: E402
    DRAIN_ROWS, ROWS, drain_bound, end_to_end, raw_step_seconds, raw_tok_s, sample_lengths)
from judge import load_dataset  # noqa: E402
from lm.policy import HFPolicy  # noqa: E402

policy = HFPolicy(sys.argv[1])
raw = {rows: raw_tok_s(policy, rows) for rows in DRAIN_ROWS + ROWS}
print("raw sampler tok/s: " + ", ".join(f"{r} rows {v:.1f}" for r, v in raw.items()), flush=True)
problems = load_dataset("humaneval")
e2e, samples = end_to_end(policy, 128, problems)
after = raw_tok_s(policy, 128)
lengths = sample_lengths(samples, [p.id for p in problems])
tokens = sum(map(sum, lengths))
bound = tokens / drain_bound(raw_step_seconds(raw), lengths, 128)
passed = sum(c["passed"] for row in samples for c in row["candidates"])
print(f"HumanEval 164 x 8 at 128 rows: {tokens} tokens, longest sample {max(map(max, lengths))}, "
      f"{passed}/{8 * len(problems)} samples pass")
print(f"end to end {e2e:.1f} tok/s; raw at 128 rows {raw[128]:.1f} before, {after:.1f} after; "
      f"drain bound {bound:.1f} ({bound / raw[128]:.2f} of raw)")
print(f"e2e / raw {e2e / raw[128]:.2f} (against the raw rate after: {e2e / after:.2f}); e2e / bound {e2e / bound:.2f}")
