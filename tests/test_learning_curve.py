"""research.learning_curve on synthetic features with a known direction: more training problems
rank held-out problems better, subsets are nested, and every source and setting is reported."""

import random

import torch

from research.learning_curve import curve, markdown


def _synthetic(problems_per_source=30, k=8, dim=6, seed=0):
    rng = random.Random(seed)
    g = torch.Generator().manual_seed(seed)
    truth = torch.randn(dim, generator=g)
    xs, labels, pids, order = [], [], [], []
    for source in ("leetcode", "mbpp"):
        for p in range(problems_per_source):
            rows = torch.randn(k, dim, generator=g)
            scores = rows @ truth + 0.5 * torch.randn(k, generator=g)
            cut = sorted(scores.tolist())[rng.randrange(1, k)]  # both outcomes in every problem
            for j in range(k):
                xs.append(torch.cat([rows[j], torch.tensor([rng.gauss(-0.3, 0.1)])]))
                labels.append(int(scores[j] >= cut))
                pids.append(f"{source}/{p}")
                order.append(j)
    return torch.stack(xs), labels, pids, order


def test_learning_curve_grows_with_problems_and_reports_every_setting():
    x, labels, pids, order = _synthetic()
    rows = curve(x, labels, pids, order, l2=0.3, folds=5, seeds=2, fractions=[0.125, 1.0])
    by = {(r["train_sources"], r["fraction"], r["k"]): r for r in rows}
    assert set(by) == {("leetcode+mbpp", 0.125, 8), ("leetcode+mbpp", 1.0, 8), ("leetcode", 0.125, 8),
                       ("leetcode", 1.0, 8), ("mbpp", 0.125, 8), ("mbpp", 1.0, 8), ("leetcode+mbpp", 1.0, 4),
                       ("leetcode+mbpp", 0.5, 8)}
    full, few = by[("leetcode+mbpp", 1.0, 8)], by[("leetcode+mbpp", 0.125, 8)]
    assert full["train_problems"] == 48 and few["train_problems"] == 6  # 4 of 5 folds of 60 problems
    assert by[("leetcode+mbpp", 0.5, 8)]["train_problems"] == 24 and len(rows) == len(by)
    assert full["all"]["within_problem_auroc"]["mean"] > 0.8
    assert full["all"]["within_problem_auroc"]["mean"] > few["all"]["within_problem_auroc"]["mean"]
    assert by[("mbpp", 1.0, 8)]["train_problems"] == 24 and full["mbpp"]["problems"] == 30
    assert by[("leetcode+mbpp", 1.0, 4)]["train_pairs"] < full["train_pairs"]
    table = markdown(rows, ["leetcode", "mbpp"])
    assert table.count("\n") == len(rows) + 2 and "leetcode: AUROC" in table
