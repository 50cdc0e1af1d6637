"""What a draft model would have to do for the 0.9x point: the drain bound of HumanEval/0-15 x 8 at
128 rows (the committed samples' lengths) if every row advanced E tokens a step whenever at most R
rows are live, each such step costing 1.1x the raw step (verification), at the raw sampler's step
costs measured before full-humaneval-e2e.py's run (full-humaneval-e2e.txt). A model, not a
measurement. Output: drain-speculation.txt."""
import json
import os

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
RAW = {1: 14.7, 2: 26.4, 4: 53.2, 8: 87.1, 16: 148.8, 32: 239.0, 64: 379.1, 128: 477.3}
measured = sorted(RAW)


def step(rows):
    return float(np.interp(rows, measured, [r / RAW[r] for r in measured]))


rows = {r["problem_id"]: r for r in map(json.loads, open(os.path.join(HERE, "..", "humaneval", "runs", "sample.jsonl")))}
lengths = [len(c["tokens"]) for i in range(16) for c in rows[f"HumanEval/{i}"]["candidates"]]
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
