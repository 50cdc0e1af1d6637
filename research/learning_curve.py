"""The critic's learning curve: how well the head-only probe (critic v3's recipe) orders held-out
training problems' samples as it learns from more problems, per source, and k=4 against k=8
samples per problem at the same sampling budget.

  python -m research.learning_curve --base MODEL --data runs/v5/train.jsonl [--l2 0.3] [--folds 5]
         [--seeds 3] [--fractions 0.125,0.25,0.5,0.75,1] --out curve.json

Only training problems are used (an export of `bench quality --strategies sample` runs): grouped
k-fold CV, folds drawn within each source, the test folds always whole. A training subset is the
first fraction of the other folds' problems in a seeded order, so smaller subsets are nested in
larger ones. Within-problem AUROC and the share of the random-to-oracle gap the value pick closes
are pooled over the folds, per test source, and averaged over fold seeds. A problem's source is its
id's prefix (mbpp/3 -> mbpp). Only problems with both outcomes in their 8 samples count: the probe
learns from pass/fail pairs alone, and a problem mixed at k=4 is mixed at k=8.
"""

import argparse
import os
import random
from collections import defaultdict

import torch

from common.store import write_json_atomic
from valuemodel.metrics import selection, within_problem_auroc
from valuemodel.model import ValueModel
from valuemodel.train import LOGPROB_L2_SCALE, TrainConfig, frozen_features, pairwise_probe, read_rows, training_features


def features(base, data, max_length=1024):
    """(x: pooled features + the policy's mean log-prob, labels, problem ids, sample index within its
    problem) of the problems with both outcomes."""
    vm = ValueModel.from_base(base, last_layers=0)
    cfg = TrainConfig(epochs=0, probe_l2=0.3, aggregate="mean", logprob_feature=True, mixed_only=True,
                      max_length=max_length)
    feats = training_features(vm, read_rows(data), cfg)
    pooled = frozen_features(vm, feats, cfg, progress=True)
    x = torch.cat([pooled.vectors.float(), torch.tensor([f["mean_logprob"] for f in feats])[:, None]], 1)
    seen = defaultdict(int)
    order = []
    for f in feats:
        order.append(seen[f["problem_id"]])
        seen[f["problem_id"]] += 1
    return x, [f["label"] for f in feats], [f["problem_id"] for f in feats], order, pooled.source


def source_of(problem_id):
    return problem_id.split("/")[0]


def evaluate(x, labels, pids, order, train_problems, test_idx, l2, k):
    """Fit on train_problems' first k samples each; the test rows' logits grouped by problem."""
    keep = set(train_problems)
    train_idx = [i for i, p in enumerate(pids) if p in keep and order[i] < k]
    scale = torch.ones(x.shape[1])
    scale[-1] = LOGPROB_L2_SCALE
    direction, _, _, pairs = pairwise_probe(x[train_idx], [labels[i] for i in train_idx],
                                            [pids[i] for i in train_idx], l2, scale)
    scores = (x[test_idx] @ direction).tolist()
    groups = defaultdict(list)
    for i, s in zip(test_idx, scores):
        groups[pids[i]].append((s, labels[i]))
    return groups, pairs


def summarize(groups):
    pick = selection(groups, ks=(1,))["pass@1"]
    oracle = sum(any(y for _, y in items) for items in groups.values()) / len(groups)
    gap = oracle - pick["random_pick"]
    return {"problems": len(groups), "within_problem_auroc": within_problem_auroc(groups)["pairs_auroc"],
            "value_pass@1": pick["value_picked"], "random_pass@1": pick["random_pick"], "oracle_pass@1": oracle,
            "gap_closed": (pick["value_picked"] - pick["random_pick"]) / gap if gap else None}


def curve(x, labels, pids, order, l2, folds, seeds, fractions):
    """Rows: (train sources, fraction, k) -> per test source, the pooled held-out metrics."""
    problems = sorted(set(pids))
    sources = sorted({source_of(p) for p in problems})
    settings = [("+".join(sources), f, 8) for f in fractions]
    settings += [(s, f, 8) for s in sources for f in fractions] if len(sources) > 1 else []
    settings += [("+".join(sources), 1.0, 4), ("+".join(sources), 0.5, 8)]  # the same number of samples
    settings = list(dict.fromkeys(settings))  # (all, 0.5, 8) is on the curve already
    results = defaultdict(lambda: defaultdict(list))
    for seed in range(seeds):
        rng = random.Random(seed)
        fold_of = {}
        for s in sources:
            mine = [p for p in problems if source_of(p) == s]
            rng.shuffle(mine)
            fold_of.update({p: i % folds for i, p in enumerate(mine)})
        ranked = sorted(problems, key=lambda p: rng.random())  # the order subsets are taken in
        pooled = defaultdict(dict)
        for fold in range(folds):
            test_idx = [i for i, p in enumerate(pids) if fold_of[p] == fold]
            for train_sources, fraction, k in settings:
                pool = [p for p in ranked if fold_of[p] != fold and source_of(p) in train_sources.split("+")]
                chosen = pool[:max(1, round(fraction * len(pool)))]
                groups, pairs = evaluate(x, labels, pids, order, chosen, test_idx, l2, k)
                pooled[(train_sources, fraction, k)].setdefault("groups", {}).update(groups)
                pooled[(train_sources, fraction, k)].setdefault("train_problems", []).append(len(chosen))
                pooled[(train_sources, fraction, k)].setdefault("pairs", []).append(pairs)
        for key, got in pooled.items():
            for test_source in sources + ["all"]:
                g = {p: v for p, v in got["groups"].items() if test_source in ("all", source_of(p))}
                results[key][test_source].append(summarize(g))
            results[key]["train_problems"].append(sum(got["train_problems"]) / folds)
            results[key]["train_pairs"].append(sum(got["pairs"]) / folds)
    rows = []
    for (train_sources, fraction, k), got in results.items():
        row = {"train_sources": train_sources, "fraction": fraction, "k": k,
               "train_problems": sum(got["train_problems"]) / seeds, "train_pairs": sum(got["train_pairs"]) / seeds}
        for test_source in sources + ["all"]:
            runs = got[test_source]
            row[test_source] = {m: _mean_sd([r[m] for r in runs]) for m in ("within_problem_auroc", "gap_closed")}
            row[test_source]["problems"] = runs[0]["problems"]
        rows.append(row)
    return rows


def _mean_sd(xs):
    xs = [x for x in xs if x is not None]
    mean = sum(xs) / len(xs)
    return {"mean": round(mean, 4), "sd": round((sum((x - mean) ** 2 for x in xs) / max(1, len(xs) - 1)) ** 0.5, 4)}


def markdown(rows, sources):
    head = "| trained on | fraction | k | train problems (mixed) | " + " | ".join(
        f"{s}: AUROC | {s}: gap closed" for s in sources + ["all"]) + " |"
    lines = [head, "|" + "---|" * (4 + 2 * (len(sources) + 1))]
    for r in rows:
        cells = [r["train_sources"], f"{r['fraction']:g}", str(r["k"]), f"{r['train_problems']:.0f}"]
        for s in sources + ["all"]:
            a, g = r[s]["within_problem_auroc"], r[s]["gap_closed"]
            cells += [f"{a['mean']:.3f} +- {a['sd']:.3f}", f"{g['mean']:.1%} +- {g['sd']:.1%}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m research.learning_curve", description=__doc__.split("\n\n")[0])
    ap.add_argument("--base", required=True, help="the policy the samples came from (its critic's base)")
    ap.add_argument("--data", required=True, help="a training export (datagen export of sample runs), train.jsonl")
    ap.add_argument("--l2", type=float, default=0.3)
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--fractions", default="0.125,0.25,0.5,0.75,1")
    ap.add_argument("--max-length", type=int, default=1024)
    ap.add_argument("--out", required=True, help="JSON file (a .md table is written beside it)")
    args = ap.parse_args(argv)
    x, labels, pids, order, source = features(args.base, args.data, args.max_length)
    fractions = [float(f) for f in args.fractions.split(",")]
    rows = curve(x, labels, pids, order, args.l2, args.folds, args.seeds, fractions)
    sources = sorted({source_of(p) for p in pids})
    write_json_atomic(args.out, {"data": os.path.basename(args.data), "l2": args.l2, "folds": args.folds,
                                 "seeds": args.seeds, "feature_source": source, "rows": rows})
    with open(os.path.splitext(args.out)[0] + ".md", "w", encoding="utf-8") as f:
        f.write(markdown(rows, sources))
    print(markdown(rows, sources))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
