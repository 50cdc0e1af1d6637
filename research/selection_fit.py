"""The fitted ranker (engine.select, `fitted`): weights on the critic's standardized logit and the
execution features, fitted on training problems only, chosen by grouped CV, then compared with the
fixed rankers on held-out problems. The rules: results/qwen/selection-fit/preregistration.md.

  # the policy's test inputs for the problems with both outcomes in a samples folder
  python -m research.selection_fit inputs --samples results/qwen/leetcode-train --dataset runs/leetcode/kept.jsonl \\
      --policy MODEL --out results/qwen/selection-fit/inputs-leetcode.json
  # CV over the training sources, the shipped weights, and the held-out comparison
  python -m research.selection_fit fit --train SAMPLES RANKING DATASET INPUTS [--train ...] \\
      [--heldout SAMPLES RANKING DATASET INPUTS --heldout-split validation] --out results/qwen/selection-fit

SAMPLES is a `bench quality` folder with runs/sample.jsonl, RANKING one whose runs/best_of_k.jsonl
holds the critic's values of the same samples (research.execution_rankers), INPUTS the JSON the
`inputs` step wrote.
"""

import argparse
import json
import os
import random
import time

import torch

from bench.quality import bootstrap
from common.store import write_json_atomic, write_text_atomic
from engine.select import FEATURES, agreement, features
from research.execution_rankers import collect, ranker_rows

L2S = (0.01, 0.1, 1.0)
FOLDS, SEEDS = 5, 3
FIXED = ("value", "agreement", "examples+agreement+value")


def fit(problems, l2):
    """Weights on FEATURES: L2-penalized pairwise logistic loss over (passing, failing) pairs of the
    same problem, each pair weighted by its programs' duplicates (as the critic's probe is fitted)."""
    diffs, weights = [], []
    for cands, passed in problems:
        f = features(cands, agreement(cands))
        for i, pi in enumerate(passed):
            for j, pj in enumerate(passed):
                if pi and not pj:
                    diffs.append([a - b for a, b in zip(f[i], f[j])])
                    weights.append(cands[i].weight * cands[j].weight)
    if not diffs:
        return [0.0] * len(FEATURES)
    x, pair_w = torch.tensor(diffs, dtype=torch.float64), torch.tensor(weights, dtype=torch.float64)
    w = torch.zeros(len(FEATURES), dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w], max_iter=500, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = (pair_w * torch.nn.functional.softplus(-(x @ w))).sum() / pair_w.sum() + l2 * (w * w).sum()
        loss.backward()
        return loss
    opt.step(closure)
    return [round(v, 6) for v in w.detach().tolist()]


def grouped_cv(problems, l2s=L2S, folds=FOLDS, seeds=SEEDS):
    """Per L2, the mean held-out pick pass chance over problems, per fold seed (each problem held
    out once per seed), beside the fixed rankers on the same problems."""
    ids = sorted(problems)
    out = {"fitted": {str(l2): [] for l2 in l2s}}
    for seed in range(seeds):
        order = ids[:]
        random.Random(seed).shuffle(order)
        parts = [order[i::folds] for i in range(folds)]
        for l2 in l2s:
            picks = []
            for part in parts:
                held = set(part)
                w = fit([problems[p] for p in ids if p not in held], l2)
                picks += [ranker_rows({p: problems[p]}, ("fitted",), w)["fitted"][0] for p in part]
            out["fitted"][str(l2)].append(sum(picks) / len(picks))
    rows = ranker_rows(problems, FIXED)
    for name in (*FIXED, "random", "oracle"):
        out[name] = sum(rows[name]) / len(rows[name])
    return out


def table(rows, names):
    mean = lambda xs: sum(xs) / len(xs)
    random_, oracle = mean(rows["random"]), mean(rows["oracle"])
    out = {}
    for name in names:
        p = mean(rows[name])
        out[name] = {"pass@1": p, "ci95": list(bootstrap(rows[name], mean)), "picks_passing": round(sum(rows[name]), 2),
                     "gap_closed": (p - random_) / (oracle - random_) if oracle > random_ else 0.0}
    for name in names:
        if name in ("random", "oracle", "value"):
            continue
        diffs = [a - b for a, b in zip(rows[name], rows["value"])]
        out[name]["minus_value"] = {"difference": mean(diffs), "ci95": list(bootstrap(diffs, mean)),
                                    "problems_better": sum(d > 0 for d in diffs), "problems_worse": sum(d < 0 for d in diffs)}
    return out


# The default rule's order: on a tie of passing picks, the earlier (simpler) ranker.
CANDIDATES = ("value", "agreement", "examples+agreement+value", "fitted")


def default_ranker(heldout_table):
    """The candidate with the most passing picks on the held-out problems (ties: the simpler)."""
    return max(CANDIDATES, key=lambda n: (round(heldout_table[n]["picks_passing"], 6), -CANDIDATES.index(n)))


def read_inputs(path):
    with open(path) as f:
        return json.load(f)


def cmd_inputs(args):
    from engine.select import inputs_from_texts, policy_input_texts
    from judge import load_dataset
    from judge.problems import select_mbpp_splits
    from lm.policy import load_policy
    with open(os.path.join(args.samples, "runs", "sample.jsonl")) as f:
        rows = [json.loads(line) for line in f if line.endswith("\n")]
    mixed = {r["problem_id"] for r in rows if len({c["passed"] for c in r["candidates"]}) == 2}
    wanted = mixed if args.mixed_only else {r["problem_id"] for r in rows}
    problems = [p for p in select_mbpp_splits(load_dataset(args.dataset), args.split) if p.id in wanted]
    start = time.perf_counter()
    texts = policy_input_texts(load_policy(args.policy), problems)
    written = inputs_from_texts(problems, texts)
    write_json_atomic(args.out, written)
    write_json_atomic(os.path.splitext(args.out)[0] + "-texts.json", texts)
    print(f"{sum(map(len, written.values()))} calls for {sum(bool(v) for v in written.values())} of {len(written)} "
          f"problems in {time.perf_counter() - start:.0f} s -> {args.out}")
    return 0


def source(spec, split=""):
    samples, ranking, dataset, inputs = spec
    per_problem, cost = collect(samples, ranking, dataset, inputs=read_inputs(inputs), split=split)
    return per_problem, {"samples": samples, "ranking": ranking, "dataset": dataset, "inputs": inputs, **cost}


def cmd_fit(args):
    os.makedirs(args.out, exist_ok=True)
    train, sources = {}, []
    for spec in args.train:
        per_problem, info = source(spec)
        mixed = {p: v for p, v in per_problem.items() if len(set(v[1])) == 2}
        train.update(mixed if args.mixed_only else per_problem)
        sources.append({**info, "problems": len(per_problem), "mixed": len(mixed)})
    cv = grouped_cv(train)
    mean = lambda xs: sum(xs) / len(xs)
    chosen = max(L2S, key=lambda l2: mean(cv["fitted"][str(l2)]))
    weights = fit(list(train.values()), chosen)
    result = {"features": list(FEATURES), "training_problems": len(train), "sources": sources, "cv": cv,
              "chosen_l2": chosen, "weights": weights}
    lines = [f"# The fitted ranker: grouped CV on {len(train)} training problems\n",
             "| ranker | mean pick pass chance (held-out folds, 3 fold seeds) |", "|---|---|"]
    for l2 in L2S:
        runs = cv["fitted"][str(l2)]
        lines.append(f"| fitted, L2 {l2} | {mean(runs):.1%} (seeds {', '.join(f'{r:.1%}' for r in runs)}) |")
    for name in (*FIXED, "random", "oracle"):
        lines.append(f"| {name} | {cv[name]:.1%} |")
    lines.append(f"\nChosen L2 {chosen}; weights on {', '.join(FEATURES)}: {weights}.\n")
    if args.heldout:
        per_problem, info = source(args.heldout, args.heldout_split)
        names = ("random", "value", "examples", "examples+value", "agreement", "examples+agreement+value", "fitted", "oracle")
        rows = ranker_rows(per_problem, [n for n in names if n not in ("random", "oracle")], weights)
        held = table(rows, names)
        default = default_ranker(held)
        result["heldout"] = {**info, "problems": len(per_problem), "table": held, "default": default, "per_problem": rows}
        lines += [f"## Held out: {len(per_problem)} problems ({info['samples']})\n",
                  "| ranker | pass@1 | 95% interval | passing picks | gap closed | minus value (points) |", "|---|---|---|---|---|---|"]
        for name in names:
            r = held[name]
            d = r.get("minus_value")
            lines.append(f"| {name} | {r['pass@1']:.1%} | [{r['ci95'][0]:.1%}, {r['ci95'][1]:.1%}] | {r['picks_passing']:.1f} | "
                         f"{r['gap_closed']:.0%} | " + (f"{100 * d['difference']:+.1f} [{100 * d['ci95'][0]:+.1f}, "
                                                        f"{100 * d['ci95'][1]:+.1f}], {d['problems_better']}/{d['problems_worse']}"
                                                        if d else "") + " |")
        lines.append(f"\nThe default rule picks **{default}**.\n")
    write_json_atomic(os.path.join(args.out, "fit.json"), result)
    write_text_atomic(os.path.join(args.out, "report.md"), "\n".join(lines))
    print("\n".join(lines))
    return 0


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m research.selection_fit", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("inputs", help="the policy's test inputs for a samples folder's problems")
    p.add_argument("--samples", required=True)
    p.add_argument("--dataset", required=True)
    p.add_argument("--split", default="")
    p.add_argument("--policy", required=True)
    p.add_argument("--all", dest="mixed_only", action="store_false", help="every sampled problem, not only the mixed")
    p.add_argument("--out", required=True)
    p = sub.add_parser("fit", help="grouped CV, the shipped weights and the held-out comparison")
    p.add_argument("--train", nargs=4, action="append", required=True, metavar=("SAMPLES", "RANKING", "DATASET", "INPUTS"))
    p.add_argument("--heldout", nargs=4, metavar=("SAMPLES", "RANKING", "DATASET", "INPUTS"))
    p.add_argument("--heldout-split", default="")
    p.add_argument("--all", dest="mixed_only", action="store_false",
                   help="fit and CV on every training problem (default: those with both outcomes; the others tie)")
    p.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    return cmd_inputs(args) if args.cmd == "inputs" else cmd_fit(args)


if __name__ == "__main__":
    raise SystemExit(main())
