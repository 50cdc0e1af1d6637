#!/usr/bin/env bash
# The fitted selection rule and decode's default ranker (issue "Execution-aware selection"), every
# step resumable. The rules were fixed before any data: results/qwen/selection-fit/preregistration.md.
#   POLICY  the policy (hub id or its .gguf), as in research/qwen_report.sh
#   DATA    the folder with mbpp/mbpp.jsonl (default ../shared/data); runs/leetcode and runs/mbpp-full
#           hold the kept training problems (research/critic_v5.sh, step dedupe)
#   STEPS   which steps to run (default: all, in order)
set -euo pipefail
cd "$(dirname "$0")/.."
POLICY=${POLICY:-Qwen/Qwen2.5-Coder-0.5B-Instruct}
DATA=${DATA:-../shared/data}
if [ -e "$POLICY" ]; then export HF_HUB_OFFLINE=1; fi
OUT=results/qwen/selection-fit
SAMPLING=(--prompt code --temperature 0.8 --top-p 0.95 --max-new-tokens 512 --k 8 --seed 0)
rank() {  # SAMPLES DATASET OUT SPLIT [more]: critic v3's ranking of stored samples (recorded features)
  # Only the problems sampled so far, in a dataset of their own (best_of_k would sample the others),
  # and the ranking folder's settings name it.
  mkdir -p "$3/runs" runs/selection-fit
  local subset=runs/selection-fit/$(basename "$3").jsonl
  python - "$1" "$2" "$subset" "$3" <<'PY'
import json, sys
from judge.problems import dataset_rows
samples, dataset, subset, out = sys.argv[1:]
sampled = {json.loads(line)["problem_id"] for line in open(f"{samples}/runs/sample.jsonl")}
with open(subset, "w") as f:
    f.writelines(json.dumps(row) + "\n" for row, problem in dataset_rows(dataset) if problem.id in sampled)
settings = json.load(open(f"{samples}/settings.json"))
json.dump({**settings, "dataset": subset}, open(f"{out}/settings.json", "w"), indent=1)
PY
  cp "$1/runs/sample.jsonl" "$3/runs/sample.jsonl"
  bench quality --dataset "$subset" --split "$4" --strategies best_of_k --value valuemodel/qwen --no-load-check \
    --policy "$POLICY" "${SAMPLING[@]}" "${@:5}" --out "$3" --json > /dev/null
  rm "$3/runs/sample.jsonl"
}
for step in ${STEPS:-rank-train heldout rank-heldout inputs fit}; do
  case $step in
  rank-train)
    [ -s $OUT/rank-leetcode/runs/best_of_k.jsonl ] || rank results/qwen/leetcode-train runs/leetcode/kept.jsonl $OUT/rank-leetcode ""
    [ -s $OUT/rank-mbpp-full/runs/best_of_k.jsonl ] || rank results/qwen/mbpp-full-train runs/mbpp-full/kept.jsonl $OUT/rank-mbpp-full ""
    ;;
  heldout)
    bench quality --dataset $DATA/mbpp/mbpp.jsonl --split validation --strategies sample --no-prompt-tests --policy "$POLICY" \
      "${SAMPLING[@]}" --out results/qwen/mbpp-validation-no-tests --json > /dev/null
    ;;
  rank-heldout)
    rank results/qwen/mbpp-validation-no-tests $DATA/mbpp/mbpp.jsonl $OUT/rank-mbpp-validation-no-tests validation --no-prompt-tests
    ;;
  inputs)
    [ -s $OUT/inputs-mbpp-validation-no-tests.json ] || python -m research.selection_fit inputs --samples results/qwen/mbpp-validation-no-tests \
      --dataset $DATA/mbpp/mbpp.jsonl --split validation --all --policy "$POLICY" --out $OUT/inputs-mbpp-validation-no-tests.json
    [ -s $OUT/inputs-mbpp-full.json ] || python -m research.selection_fit inputs --samples results/qwen/mbpp-full-train \
      --dataset runs/mbpp-full/kept.jsonl --policy "$POLICY" --out $OUT/inputs-mbpp-full.json
    [ -s $OUT/inputs-leetcode.json ] || python -m research.selection_fit inputs --samples results/qwen/leetcode-train \
      --dataset runs/leetcode/kept.jsonl --policy "$POLICY" --out $OUT/inputs-leetcode.json
    ;;
  fit)
    python -m research.selection_fit fit \
      --train results/qwen/leetcode-train $OUT/rank-leetcode runs/leetcode/kept.jsonl $OUT/inputs-leetcode.json \
      --train results/qwen/mbpp-full-train $OUT/rank-mbpp-full runs/mbpp-full/kept.jsonl $OUT/inputs-mbpp-full.json \
      --heldout results/qwen/mbpp-validation-no-tests $OUT/rank-mbpp-validation-no-tests $DATA/mbpp/mbpp.jsonl \
        $OUT/inputs-mbpp-validation-no-tests.json --heldout-split validation --out $OUT
    ;;
  esac
done
