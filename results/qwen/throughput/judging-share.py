"""Where an end-to-end judged run's time goes besides the sampler: bench.quality.sample_rows on a
slice of a dataset, with every judge_many call timed (problem, seconds, verdicts), then the run's
tokens/s and the judging's share. With --contention, also how much a busy-looping program (what a
sample that times out is) slows the sampler at 32 rows when it runs beside it at each nice level.

The run's settings are the throughput benchmark's (E2E: 8 samples, 512 max new tokens, the code
prompt). Usage: judging-share.py POLICY DATASET FIRST LAST ROWS [--contention]"""
import collections
import subprocess
import sys
import time

import bench.quality as quality
from bench.benchmarks.test_throughput import E2E
from judge import load_dataset
from lm.policy import HFPolicy
from lm.sampling import SamplingParams

policy_path, dataset, first, last, rows = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
policy = HFPolicy(policy_path)
problems = load_dataset(dataset)[first:last]
verdicts, judging = collections.Counter(), [0.0]
judge_many = quality.judge_many


def timed_judge_many(pairs, **options):
    start = time.perf_counter()
    out = judge_many(pairs, **options)
    seconds = time.perf_counter() - start
    judging[0] += seconds
    verdicts.update(v.verdict for v in out)
    if seconds > 1:
        print(f"  {pairs[0][1].id}: judged in {seconds:.2f} s: {[v.verdict for v in out]}", flush=True)
    return out


quality.judge_many = timed_judge_many
start = time.perf_counter()
out = list(quality.sample_rows(policy, problems, E2E, max_rows=rows))
wall = time.perf_counter() - start
tokens = sum(r["stats"]["policy_tokens"] for r in out)
print(f"{dataset}[{first}:{last}] x 8 at {rows} rows: {wall:.1f} s, {tokens} tokens, {tokens / wall:.1f} tok/s; "
      f"judging {judging[0]:.1f} s ({judging[0] / wall:.0%}); {dict(verdicts)}")

if "--contention" in sys.argv:
    prompt = policy.prompt_tokens([{"role": "user", "content": "Write a Python function that merges two sorted lists."}])
    params = SamplingParams(max_new_tokens=96, temperature=0.8, top_p=0.95, seed=0, ignore_eos=True)
    list(policy.sample_many([(prompt, 32, SamplingParams(max_new_tokens=2, temperature=0.8, top_p=0.95))], 32))
    busy = "import time\nt = time.time()\nwhile time.time() - t < 4: pass"
    for nice in (None, 0, 10, 19):
        loop = None if nice is None else subprocess.Popen(["nice", "-n", str(nice), sys.executable, "-c", busy])
        start = time.perf_counter()
        list(policy.sample_many([(prompt, 32, params)], 32))
        seconds = time.perf_counter() - start
        if loop:
            loop.wait()
        print(f"sampler, 32 rows x 96 steps, {'alone' if nice is None else f'beside a 4 s busy loop at nice {nice}'}: "
              f"{seconds:.2f} s")
