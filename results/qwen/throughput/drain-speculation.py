"""What a draft model would have to do for the 0.9x point: the drain bound of HumanEval/0-15 x 8 at
128 rows (the committed samples' lengths) if every row advanced E tokens a step whenever at most R
rows are live, each such step costing 1.1x the raw step (verification), at the raw sampler's step
costs measured before full-humaneval-e2e.py's run (full-humaneval-e2e.txt). A model, not a
measurement. Output: drain-speculation.txt."""
import json
import os
import re
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", ".."))
from bench.benchmarks.test_throughput import raw_step_seconds, sample_lengths  # noqa: E402

first_line = open(os.path.join(HERE, "full-humaneval-e2e.txt")).readline()
RAW = {int(rows): float(rate) for rows, rate in re.findall(r"(\d+) rows ([\d.]+)", first_line)}
step = raw_step_seconds(RAW)
committed = map(json.loads, open(os.path.join(HERE, "..", "humaneval", "runs", "sample.jsonl")))
lengths = sum(sample_lengths(committed, [f"HumanEval/{i}" for i in range(16)]), [])
tokens = sum(lengths)
for per_step, up_to in ((1.0, 0), (1.5, 16), (1.74, 16), (1.74, 32), (2.5, 32), (3.0, 64)):
    live, seconds = [float(n) for n in lengths], 0.0
    while live:
        drafted = len(live) <= up_to
        seconds += step(len(live)) * (1.1 if drafted else 1.0)
        advance = per_step if drafted else 1.0
        live = [left - advance for left in live if left - advance > 0]
    print(f"{per_step} tokens a step at <= {up_to} live rows: bound {tokens / seconds:.0f} tok/s, "
          f"{tokens / seconds / RAW[128]:.2f} of the raw rate at 128 rows")
