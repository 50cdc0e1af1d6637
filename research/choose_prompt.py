"""Choose the prompt framing from `bench quality --strategies sample` runs of each framing on the
same held-out problems: the higher sample pass@1 wins; within 2 points, the one with fewer tokens.

  python -m research.choose_prompt DIR_CODE DIR_REASON   (prints JSON: each framing's numbers, the choice)
"""

import json
import os
import sys

from bench.quality import load_runs, summarize

MARGIN = 0.02


def framing_numbers(run_dir, problems):
    with open(os.path.join(run_dir, "settings.json"), encoding="utf-8") as f:
        framing = json.load(f)["decode"]["prompt"]
    rows = [r for r in load_runs(run_dir)["sample"] if r["problem_id"] in problems]
    s = summarize({"sample": rows})["strategies"]["sample"]
    cands = [c for r in rows for c in r["candidates"]]
    return framing, {"problems": s["problems"], "pass@1": s["pass@1"], "pass@1_ci95": s["ci95"],
                     "tokens_per_sample": s["policy_tokens"],
                     "cut_at_length": sum(c["finish"] == "length" for c in cands) / len(cands)}


def choose(numbers):
    best = max(numbers, key=lambda f: numbers[f]["pass@1"])
    close = [f for f in numbers if numbers[best]["pass@1"] - numbers[f]["pass@1"] <= MARGIN]
    return min(close, key=lambda f: numbers[f]["tokens_per_sample"])


def main(argv=None):
    dirs = (argv if argv is not None else sys.argv[1:])
    if len(dirs) < 2:
        sys.exit("usage: python -m research.choose_prompt DIR DIR [DIR ...]")
    # Compared on the problems every run covers (a run may since have been extended).
    common = set.intersection(*({r["problem_id"] for r in load_runs(d)["sample"]} for d in dirs))
    if not common:
        sys.exit("research.choose_prompt: the runs share no problem")
    numbers = dict(framing_numbers(d, common) for d in dirs)
    print(json.dumps({"rule": f"higher sample pass@1; within {MARGIN:.0%} the fewer tokens",
                      "framings": numbers, "chosen": choose(numbers)}, indent=1))


if __name__ == "__main__":
    main()
