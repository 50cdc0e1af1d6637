"""The drain bound (bench/benchmarks/test_throughput.py's) for each runtime of runtimes-side-by-side.txt:
the rate of HumanEval/0-15 x 8 at 128 rows if every decode step cost that runtime's raw step at the
same live rows (interpolated between 1, 8, 32 and 128 rows, the two rounds' mean), with the sample
lengths of the committed HumanEval run (results/qwen/humaneval: k 8, temperature 0.8, top-p 0.95,
512 max new tokens). Output: runtimes-drain.txt."""
import json
import os
import re
import sys
from collections import defaultdict

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", ".."))
from bench.benchmarks.test_throughput import drain_bound, raw_step_seconds, sample_lengths  # noqa: E402

rates = defaultdict(lambda: defaultdict(list))
for line in open(os.path.join(HERE, "runtimes-side-by-side.txt")):
    m = re.match(r"(\S+) (\S+) (\d+) rows: ([\d.]+) tok/s", line)
    if m:
        rates[f"{m[1]} {m[2]}"][int(m[3])].append(float(m[4]))
committed = map(json.loads, open(os.path.join(HERE, "..", "humaneval", "runs", "sample.jsonl")))
lengths = sample_lengths(committed, [f"HumanEval/{i}" for i in range(16)])
tokens = sum(map(sum, lengths))
print(f"HumanEval/0-15 x 8 (committed samples): {tokens} tokens, longest {max(map(max, lengths))}")
for name, by_rows in rates.items():
    measured = sorted(by_rows)
    rate = {r: float(np.mean(by_rows[r])) for r in measured}
    line = ", ".join(f"{r} rows {rate[r]:.1f}" for r in measured)
    if 128 not in rate:
        print(f"{name}: raw {line} tok/s (not timed at 128 rows: no bound)")
        continue
    bound = tokens / drain_bound(raw_step_seconds(rate), lengths, 128)
    print(f"{name}: raw {line} tok/s; drain bound at 128 rows {bound:.1f} tok/s = {bound / rate[128]:.2f} of its raw rate")
