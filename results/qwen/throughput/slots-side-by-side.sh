#!/bin/bash
# Issue 26, side by side on one machine in one sitting:
# 1. HumanEval/0-15 x 8 end to end: dc1b2d3 (the issue's baseline, its 32 rows) against this checkout (its 128 rows)
# 2. a long refilled run: LeetCode problems 364-395 x 8 at 128 rows, ce23788 (before slot reuse) against this checkout
# 3. the raw sampler at 128 rows (sample_many, 256 tokens, EOS ignored), this checkout
Q=/root/.cache/forkcode-models/qwen2.5-coder-0.5b/qwen2.5-coder-0.5b-instruct-q4_k_m.gguf
export HF_HUB_OFFLINE=1
summ() { python3 "$(dirname "$0")/summarize_run.py" "$1"; }
run() {  # NAME CODE_DIR DATASET LIMIT [more]
  out=/tmp/b26-$1; rm -rf $out; start=$(date +%s.%N)
  (cd $2 && PYTHONPATH=$2 /work/main/.venv/bin/python -m bench.cli quality --dataset $3 --limit $4 --strategies sample --k 8 --seed 0 \
     --policy $Q --prompt code --temperature 0.8 --top-p 0.95 --max-new-tokens 512 --out $out --json "${@:5}" > /dev/null 2> $out.err)
  echo "$1: process $(echo "$(date +%s.%N) - $start" | bc) s"; summ $out
}
python3 - <<'PY'
import json
rows = [json.loads(l) for l in open("/work/main/runs/leetcode/kept.jsonl")][363:395]
open("/tmp/leetcode-32.jsonl", "w").write("".join(json.dumps(r) + "\n" for r in rows))
PY
run he-old /tmp/base humaneval 16
run he-new /work/main humaneval 16
# the new code's run goes into the LeetCode training store (problems 364-395: the ones the old code samples below)
start=$(date +%s.%N)
(cd /work/main && .venv/bin/bench quality --dataset runs/leetcode/kept.jsonl --limit 395 --strategies sample --k 8 --seed 0 \
   --policy $Q --prompt code --temperature 0.8 --top-p 0.95 --max-new-tokens 512 --out results/qwen/leetcode-train --json > /dev/null 2> /tmp/b26-lc-new.err)
echo "lc-new: process $(echo "$(date +%s.%N) - $start" | bc) s"
python3 "$(dirname "$0")/summarize_run.py" /work/main/results/qwen/leetcode-train lc-new 363 395
run lc-old /tmp/old /tmp/leetcode-32.jsonl 32
cd /work/main && .venv/bin/python - <<'PY'
import time
from lm.policy import HFPolicy
from lm.sampling import SamplingParams
policy = HFPolicy("/root/.cache/forkcode-models/qwen2.5-coder-0.5b/qwen2.5-coder-0.5b-instruct-q4_k_m.gguf")
prompt = policy.prompt_tokens([{"role": "user", "content": "Write a Python function that merges two sorted lists, with a docstring."}])
for rows in (128,):
    list(policy.sample_many([(prompt, rows, SamplingParams(max_new_tokens=2, temperature=0.8, top_p=0.95))], rows))
    params = SamplingParams(max_new_tokens=256, temperature=0.8, top_p=0.95, seed=0, ignore_eos=True)
    start = time.perf_counter()
    list(policy.sample_many([(prompt, rows, params)], max_rows=rows, features=True))
    print(f"raw sampler {rows} rows: {rows * 256 / (time.perf_counter() - start):.1f} tok/s")
PY
