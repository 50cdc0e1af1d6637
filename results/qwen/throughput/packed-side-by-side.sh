#!/bin/bash
# Issue 26, side by side on one machine in one sitting (output: packed-side-by-side.txt):
# HumanEval/0-15 x 8 end to end, interleaved, two rounds: dc1b2d3 (the issue's baseline, its 32 rows),
# a3a81e8 (slot reuse, 128 rows) and this checkout (packed weights, packed GQA attention, block top-k,
# earlier compaction; 128 rows); then this checkout's raw sampler at 32/64/128 rows.
# Needs worktrees: git worktree add /tmp/base dc1b2d3; git worktree add /tmp/slots a3a81e8
Q=/root/.cache/forkcode-models/qwen2.5-coder-0.5b/qwen2.5-coder-0.5b-instruct-q4_k_m.gguf
export HF_HUB_OFFLINE=1
summ() { python3 "$(dirname "$0")/summarize_run.py" "$1"; }
run() {  # NAME CODE_DIR
  out=/tmp/b26-$1; rm -rf $out; start=$(date +%s.%N)
  (cd $2 && PYTHONPATH=$2 /work/main/.venv/bin/python -m bench.cli quality --dataset humaneval --limit 16 --strategies sample --k 8 --seed 0 \
     --policy $Q --prompt code --temperature 0.8 --top-p 0.95 --max-new-tokens 512 --out $out --json > /dev/null 2> $out.err)
  echo "$1: process $(echo "$(date +%s.%N) - $start" | bc) s"; summ $out
}
lscpu | grep "Model name"
# ROUNDS="3 4" SLOTS=0 RAW=0 reran old against new only (appended to the same output)
for round in ${ROUNDS:-1 2}; do
  run old-$round /tmp/base
  [ "${SLOTS:-1}" = 1 ] && run slots-$round /tmp/slots
  run new-$round /work/main
done
[ "${RAW:-1}" = 1 ] || exit 0
cd /work/main && .venv/bin/python - <<'PY'
import time
from lm.policy import HFPolicy
from lm.sampling import SamplingParams
policy = HFPolicy("/root/.cache/forkcode-models/qwen2.5-coder-0.5b/qwen2.5-coder-0.5b-instruct-q4_k_m.gguf")
prompt = policy.prompt_tokens([{"role": "user", "content": "Write a Python function that merges two sorted lists, with a docstring."}])
for rows in (32, 64, 128):
    list(policy.sample_many([(prompt, rows, SamplingParams(max_new_tokens=2, temperature=0.8, top_p=0.95))], rows))
    params = SamplingParams(max_new_tokens=256, temperature=0.8, top_p=0.95, seed=0, ignore_eos=True)
    start = time.perf_counter()
    list(policy.sample_many([(prompt, rows, params)], max_rows=rows, features=True))
    print(f"raw sampler {rows} rows: {rows * 256 / (time.perf_counter() - start):.1f} tok/s")
PY
