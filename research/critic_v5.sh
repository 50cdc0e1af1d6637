#!/usr/bin/env bash
# Critic v5 (issue "Ten times the problems"), every step resumable: rerun it and it goes on where it
# stopped. The rules were fixed before any result: results/qwen/critic-v5/preregistration.md.
#   POLICY     the policy (hub id or its .gguf), as in research/qwen_report.sh
#   DATA       the folder with mbpp/mbpp.jsonl and leetcode/leetcodedataset.jsonl (default ../shared/data)
#   STEPS      which steps to run (default: all, in order)
set -euo pipefail
cd "$(dirname "$0")/.."
POLICY=${POLICY:-Qwen/Qwen2.5-Coder-0.5B-Instruct}
DATA=${DATA:-../shared/data}
OUT=results/qwen
V5=$OUT/humaneval-critic-v5
CV=$OUT/critic-v5
STEPS=${STEPS:-"dedupe leetcode validation data cv curve train eval rank rank-validation"}
SAMPLING=(--prompt code --temperature 0.8 --top-p 0.95 --max-new-tokens 512 --k 8 --seed 0)
TRAINING=(--last-layers 0 --epochs 0 --aggregate mean --logprob-feature --mixed-only --max-length 1024)
if [ -e "$POLICY" ]; then export HF_HUB_OFFLINE=1; fi
mkdir -p runs/v5 "$CV"

# SAMPLES DATASET OUT SPLIT VALUE: one critic's ranking of stored samples, in a folder of its own
rank() {
  mkdir -p "$3/runs"
  cp "$1/settings.json" "$3/settings.json"
  cp "$1/runs/sample.jsonl" "$3/runs/sample.jsonl"
  bench quality --dataset "$2" --split "${4:-}" --strategies best_of_k --value "$5" --no-load-check \
    --policy "$POLICY" "${SAMPLING[@]}" --out "$3" --json > /dev/null
  rm "$3/runs/sample.jsonl"  # the samples stay in their own folder; the rankings and report here
}

for step in $STEPS; do
  case $step in
  dedupe)  # LeetCode problems whose reference passes and that share no 10-word run with a held-out statement
    [ -s runs/leetcode/check.json ] || judge check "$DATA/leetcode/leetcodedataset.jsonl" --json > runs/leetcode/check.json
    datagen dedupe "$DATA/leetcode/leetcodedataset.jsonl" --against humaneval --against "$DATA/mbpp/mbpp.jsonl:validation" \
      --drop-failing runs/leetcode/check.json --out runs/leetcode/kept.jsonl --report runs/leetcode/dedupe.json
    ;;
  leetcode)  # k=8 judged samples of every kept LeetCode problem, with the critic's features (hours: resumable)
    bench quality --dataset runs/leetcode/kept.jsonl --strategies sample --policy "$POLICY" "${SAMPLING[@]}" \
      --out "$OUT/leetcode-train" --json > /dev/null
    ;;
  validation)  # the held-out check: all 90 MBPP validation problems, sampled as the training problems were
    bench quality --dataset "$DATA/mbpp/mbpp.jsonl" --split validation --strategies sample --policy "$POLICY" \
      "${SAMPLING[@]}" --out "$OUT/mbpp-validation" --json > /dev/null
    ;;
  data)  # training rows (MBPP training split, full MBPP's new problems, LeetCode), extra rows (MBPP seed-1 samples), held-out rows
    datagen export "$OUT/mbpp-train" --out runs/v5/mbpp --test-fraction 0 --json > /dev/null
    datagen export "$OUT/mbpp-full-train" --out runs/v5/mbpp-full --test-fraction 0 --json > /dev/null
    datagen export "$OUT/leetcode-train" --out runs/v5/leetcode --test-fraction 0 --json > /dev/null
    datagen export "$OUT/mbpp-train-3" --out runs/v5/extra --test-fraction 0 --json > /dev/null
    datagen export "$OUT/mbpp-validation" --out runs/v5/heldout --test-fraction 1 --json > /dev/null
    mkdir -p runs/v5/train
    cat runs/v5/mbpp/train.jsonl runs/v5/mbpp-full/train.jsonl runs/v5/leetcode/train.jsonl > runs/v5/train/train.jsonl
    ;;
  cv)  # the recipe: v3's at probe L2 0.1, 0.3 and 1, 5 folds x fold seeds 0-2, training problems only
    for l2 in 0.1 0.3 1; do
      [ -s "$CV/cv-l2-$l2.json" ] || valuemodel cv --data runs/v5/train --extra-data runs/v5/extra --base "$POLICY" \
        "${TRAINING[@]}" --probe-l2 "$l2" --seeds 3 --json > "$CV/cv-l2-$l2.json"
    done
    ;;
  curve)  # held-out ranking against the number of training problems, per source; k=4 against k=8
    python -m research.learning_curve --base "$POLICY" --data runs/v5/train/train.jsonl --seeds 3 \
      --out "$CV/learning-curve.json"
    ;;
  train)  # v5 at the L2 the CV chose (the rule: highest mean AUROC, 0.3 unless beaten by more than 0.005)
    l2=$(python - "$CV" <<'PY'
import json, sys
auroc = {l2: json.load(open(f"{sys.argv[1]}/cv-l2-{l2}.json"))["mean_over_seeds"]["within_problem_auroc"][0]["mean"]
         for l2 in ("0.1", "0.3", "1")}
best = max(auroc, key=auroc.get)
print("0.3" if auroc[best] - auroc["0.3"] <= 0.005 else best)
PY
)
    echo "probe L2 $l2" > "$CV/chosen.txt"
    valuemodel train --data runs/v5/train --extra-data runs/v5/extra --base "$POLICY" \
      --base-id Qwen/Qwen2.5-Coder-0.5B-Instruct --out "$V5/value-model" "${TRAINING[@]}" --probe-l2 "$l2" --resume
    ;;
  eval)  # the paper's metrics and within-problem ranking on the 90 held-out MBPP validation problems
    valuemodel eval --value "$V5/value-model" --base "$POLICY" --data runs/v5/heldout --out "$V5/value-model/report" \
      --max-length 1024 --json > /dev/null
    ;;
  rank)  # v5 picks among the same 164 x 8 HumanEval samples as v3 (the ship rule's comparison)
    rank "$OUT/humaneval" humaneval "$V5" "" "$V5/value-model"
    ;;
  rank-validation)  # v5 and v3 on the 90 MBPP validation problems' samples: value, log-prob, random, oracle
    rank "$OUT/mbpp-validation" "$DATA/mbpp/mbpp.jsonl" "$OUT/mbpp-validation-critic-v5" validation "$V5/value-model"
    rank "$OUT/mbpp-validation" "$DATA/mbpp/mbpp.jsonl" "$OUT/mbpp-validation-critic-v3" validation "$OUT/humaneval-critic-v3/value-model"
    ;;
  *) echo "unknown step $step" >&2; exit 2 ;;
  esac
done
