"""The quality report: every strategy on one dataset, everything judged, written to a directory.

`bench quality` decodes each problem with greedy, best_of_k, beam and tree (the `sample` row is
read off best_of_k's k samples, which are all judged: pass@1 of one sample, pass@k, and the exact
random-pick expectation the value-picked program is compared against, over the same samples).
Rows go to `runs/<strategy>.jsonl` as each problem finishes, so a killed run resumes where it
stopped. `bench report DIR` (also run at the end) writes `summary.json`, `report.md` and
`pass_vs_tokens.png`: pass@1 with a 95% interval, policy and value tokens and wall time per problem.
"""

import json
import math
import os
import random

from datagen.store import TreeStore, write_json_atomic
from valuemodel.metrics import random_pass_at_k, top_k_pass

STRATEGIES = ("greedy", "best_of_k", "beam", "tree")
SETTINGS = "settings.json"


def wilson(successes, n, z=1.96):
    """95% Wilson score interval of a binomial proportion (sound at 0 and n, unlike the normal one)."""
    if n == 0:
        return (None, None)
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (max(0.0, centre - half), min(1.0, centre + half))


def bootstrap(per_problem, stat, resamples=2000, seed=0):
    """95% percentile interval of stat(rows) over problems resampled with replacement."""
    if not per_problem:
        return (None, None)
    rng = random.Random(seed)
    n = len(per_problem)
    values = []
    for _ in range(resamples):
        v = stat([per_problem[rng.randrange(n)] for _ in range(n)])
        if v is not None:
            values.append(v)
    if not values:
        return (None, None)
    values.sort()
    return (values[int(0.025 * (len(values) - 1))], values[int(0.975 * (len(values) - 1))])


def judged_row(problem, result, verdicts):
    """One stored row: the chosen program's verdict and, per candidate, its value, verdict and
    weight (1 + identical samples folded into it), so the sample metrics can be read back."""
    chosen = next(v for c, v in zip(result.candidates, verdicts) if c.program == result.program)
    return {"problem_id": problem.id, "strategy": result.strategy, "passed": chosen.verdict == "pass",
            "verdict": chosen.verdict, "value": result.value, "stats": result.stats,
            "candidates": [{"value": c.value, "passed": v.verdict == "pass", "verdict": v.verdict,
                            "weight": 1 + c.duplicates, "tokens": len(c.tokens), "finish": c.finish_reason}
                           for c, v in zip(result.candidates, verdicts)]}


def run_strategy(policy, value, problems, strategy, run, cfg, out_dir, timeout=4.0, progress=None):
    """Decode and judge every problem not yet in runs/<strategy>.jsonl; append each row as it is done."""
    from judge import judge_many
    store = TreeStore(os.path.join(out_dir, "runs"), f"{strategy}.jsonl")
    done = store.done_ids()
    for problem in problems:
        if problem.id not in done:
            result = run(policy, value, problem, cfg)
            # best_of_k judges all its samples (the random-pick baseline); others only the pick.
            cands = result.candidates if strategy == "best_of_k" else \
                [c for c in result.candidates if c.program == result.program][:1]
            result.candidates = cands
            verdicts = judge_many([(c.program, problem) for c in cands], timeout=timeout)
            store.append(judged_row(problem, result, verdicts))
        if progress:
            progress()
    return store.trees()


def _expanded(row):
    """best_of_k candidates as (value, passed) items, one per sample (duplicates included)."""
    return [(c["value"], int(c["passed"])) for c in row["candidates"] for _ in range(c["weight"])]


def _mean(xs):
    return sum(xs) / len(xs) if xs else None


def _per_problem_costs(rows, divide=1):
    return {"policy_tokens": _mean([r["stats"]["policy_tokens"] / divide for r in rows]),
            "value_tokens": _mean([r["stats"]["value_tokens"] / divide for r in rows]),
            "wall_s": _mean([r["stats"]["wall_s"]["total"] / divide for r in rows])}


def summarize(rows_by_strategy, k_report=3):
    """Pass rates with intervals and mean costs per problem, plus the best_of_k selection metrics."""
    table = {}
    for strategy in STRATEGIES:
        rows = rows_by_strategy.get(strategy)
        if not rows:
            continue
        n, wins = len(rows), sum(r["passed"] for r in rows)
        table[strategy] = {"problems": n, "pass@1": wins / n, "ci95": wilson(wins, n),
                           **_per_problem_costs(rows)}
    selection = None
    rows = rows_by_strategy.get("best_of_k") or []
    if rows:
        items = [_expanded(r) for r in rows]
        k = max(len(i) for i in items)
        # One sample: the exact expectation of pass over a random one of the k samples (unbiased pass@1).
        rand1 = [random_pass_at_k(len(i), sum(y for _, y in i), 1) for i in items]
        passk = [float(any(y for _, y in i)) for i in items]
        table["sample"] = {"problems": len(rows), "pass@1": _mean(rand1),
                           "ci95": bootstrap(rand1, _mean), "samples_per_problem": k,
                           f"pass@{k}": _mean(passk), f"pass@{k}_ci95": wilson(int(sum(passk)), len(rows)),
                           **_per_problem_costs(rows, divide=k)}
        table["sample"]["value_tokens"] = 0.0
        selection = {"k": k}
        for m in sorted({1, min(k_report, k)}):
            picked = [top_k_pass(i, min(m, len(i))) for i in items]
            rand = [random_pass_at_k(len(i), sum(y for _, y in i), min(m, len(i))) for i in items]
            pairs = list(zip(picked, rand))

            def gain(sample):
                p, r = _mean([a for a, _ in sample]), _mean([b for _, b in sample])
                return (p - r) / r if r else None

            selection[f"pass@{m}"] = {"value_picked": _mean(picked), "random_pick": _mean(rand),
                                      "relative_gain": gain(pairs), "relative_gain_ci95": bootstrap(pairs, gain),
                                      "difference_ci95": bootstrap(pairs, lambda s: _mean([a - b for a, b in s])),
                                      "problems": len(pairs)}
    return {"strategies": table, "best_of_k_selection": selection}


def _pct(x):
    return "-" if x is None else f"{100 * x:.1f}%"


def _ci(ci):
    return "-" if ci[0] is None else f"[{100 * ci[0]:.1f}, {100 * ci[1]:.1f}]"


def markdown(summary, settings):
    lines = ["# Quality report", "",
             f"Policy `{settings['policy']}`, value model `{settings['value']}`, dataset "
             f"`{settings['dataset']}`, backend {settings['backend']}; decode settings: "
             f"`{json.dumps(settings['decode'])}`; judge timeout {settings['timeout']} s per test.", "",
             "| strategy | problems | pass@1 | 95% interval | policy tokens / problem | value tokens / problem | wall s / problem |",
             "|---|---|---|---|---|---|---|"]
    order = ["greedy", "sample", "best_of_k", "beam", "tree"]
    table = summary["strategies"]
    for name in order:
        if name not in table:
            continue
        r = table[name]
        label = name if name != "sample" else f"sample (1 of best_of_k's {r['samples_per_problem']})"
        lines.append(f"| {label} | {r['problems']} | {_pct(r['pass@1'])} | {_ci(r['ci95'])} | "
                     f"{r['policy_tokens']:.0f} | {r['value_tokens']:.0f} | {r['wall_s']:.1f} |")
    if "sample" in table:
        r = table["sample"]
        k = r["samples_per_problem"]
        lines += ["", f"Sampling pass@{k} (any of the {k} samples passes): {_pct(r[f'pass@{k}'])} "
                      f"{_ci(r[f'pass@{k}_ci95'])}. pass@1 intervals are Wilson intervals over problems; "
                      "the sample row's is a bootstrap over problems (it averages fractions)."]
    sel = summary["best_of_k_selection"]
    if sel:
        lines += ["", f"## Value-picked against random pick (best_of_k, the same {sel['k']} samples)", "",
                  "| metric | value-picked | random pick (exact expectation) | relative gain | gain 95% interval | difference 95% interval | problems |",
                  "|---|---|---|---|---|---|---|"]
        for key, s in sel.items():
            if key == "k":
                continue
            g = "-" if s["relative_gain"] is None else f"{100 * s['relative_gain']:+.1f}%"
            gi = s["relative_gain_ci95"]
            gi = "-" if gi[0] is None else f"[{100 * gi[0]:+.1f}%, {100 * gi[1]:+.1f}%]"
            di = s["difference_ci95"]
            di = "-" if di[0] is None else f"[{100 * di[0]:+.1f}, {100 * di[1]:+.1f}] points"
            lines.append(f"| {key} | {_pct(s['value_picked'])} | {_pct(s['random_pick'])} | {g} | {gi} | {di} | {s['problems']} |")
        lines += ["", "A problem where no sample passes (or all do) gives the value model nothing to pick: "
                      "the gain comes only from problems with mixed samples."]
    return "\n".join(lines) + "\n"


def plot(summary, path):
    """pass@1 against tokens; False when matplotlib (the dev extra) is not installed."""
    try:
        import matplotlib
    except ImportError:
        return False
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, r in summary["strategies"].items():
        lo, hi = r["ci95"]
        x = max(r["policy_tokens"] + r["value_tokens"], 1.0)
        ax.errorbar([x], [r["pass@1"]], yerr=[[r["pass@1"] - (lo or 0)], [(hi or 0) - r["pass@1"]]],
                    fmt="o", capsize=4, label=name)
        ax.annotate(name, (x, r["pass@1"]), textcoords="offset points", xytext=(6, 4), fontsize=8)
    ax.set_xscale("log")
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("policy + value tokens per problem")
    ax.set_ylabel("pass@1 (95% interval)")
    ax.set_title("pass@1 against tokens")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def load_runs(out_dir):
    rows = {}
    for strategy in STRATEGIES:
        store = TreeStore(os.path.join(out_dir, "runs"), f"{strategy}.jsonl")
        if os.path.exists(store.path):
            rows[strategy] = store.trees()
    return rows


def write_report(out_dir):
    with open(os.path.join(out_dir, SETTINGS), encoding="utf-8") as f:
        settings = json.load(f)
    rows = load_runs(out_dir)
    if not rows:
        raise ValueError(f"{out_dir} has no runs yet (runs/<strategy>.jsonl)")
    summary = summarize(rows)
    write_json_atomic(os.path.join(out_dir, "summary.json"), {"settings": settings, **summary})
    tmp = os.path.join(out_dir, "report.md.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(markdown(summary, settings))
    os.replace(tmp, os.path.join(out_dir, "report.md"))
    summary["plot"] = plot(summary, os.path.join(out_dir, "pass_vs_tokens.png"))
    return summary
