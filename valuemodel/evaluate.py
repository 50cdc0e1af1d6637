"""`valuemodel eval`: score a test split and write report.json, report.md and plots."""

import os
from collections import defaultdict

from common.store import StoreError, portable_path, write_json_atomic, write_text_atomic
from lm.models import vocab_fingerprint
from valuemodel.metrics import calibration, process_curve, selection, table2, within_problem_auroc
from valuemodel.train import encode_row, read_rows


def score_rows(vm, rows, max_length=2048, batch_size=8, progress=None):
    """Per-token values over each row's response: [(curve, label_start, label)]."""
    fp = vocab_fingerprint(vm.tokenizer)
    encoded = [encode_row(r, vm.tokenizer, fp, vm.base) for r in rows]
    out = []
    for i in range(0, len(encoded), batch_size):
        chunk = encoded[i:i + batch_size]
        seqs = [ids[:max_length] for ids, _, _ in chunk]
        for (_ids, n_prompt, start), vals, r in zip(chunk, vm.values(seqs), rows[i:i + batch_size]):
            curve = vals[n_prompt:] or vals[-1:]
            out.append((curve, min(start, max(len(curve) - 1, 0)), int(r["label"])))
        if progress:
            progress(len(chunk))
    return out


def read_eval_data(data_dir):
    """The held-out rows of an export directory: {"test": rows, "test_balanced": rows}."""
    data = {}
    for name in ("test", "test_balanced"):
        path = os.path.join(data_dir, f"{name}.jsonl")
        if not os.path.exists(path):
            raise StoreError(f"{data_dir} has no {name}.jsonl: give the directory written by `datagen export`")
        data[name] = read_rows(path)
        if not data[name]:
            raise StoreError(f"{path} is empty")
    return data


def evaluate(vm, data_dir, out_dir, max_length=2048, progress=None, data=None):
    data = data or read_eval_data(data_dir)
    os.makedirs(out_dir, exist_ok=True)
    report = {"value_model": {"base": portable_path(vm.base) if os.path.exists(vm.base) else vm.base,
                              "last_layers": vm.last_layers, "aggregate": vm.aggregate,
                              "logprob_weight": vm.logprob_weight}, "data": portable_path(data_dir)}
    scored = {}
    for name in ("test", "test_balanced"):
        rows = data[name]
        if name == "test_balanced":  # scores of duplicated rows are the same: score unique rows once
            key = lambda r: (r["problem_id"], r["example_id"])
            cache = {key(r): s for r, s in zip(scored["test"][0], scored["test"][1])}
            todo = [r for r in rows if key(r) not in cache]
            for r, s in zip(todo, score_rows(vm, todo, max_length, progress=progress)):
                cache[key(r)] = s
            scored[name] = (rows, [cache[key(r)] for r in rows])
        else:
            scored[name] = (rows, score_rows(vm, rows, max_length, progress=progress))
        rows, results = scored[name]
        finals = [vm.program_value(c[s:] or c[-1:], r.get("mean_logprob")) for r, (c, s, _) in zip(rows, results)]
        if name == "test":
            test_finals = finals
        labels = [y for _, _, y in results]
        report[name] = {"table2": table2(finals, labels), "calibration": calibration(finals, labels),
                        "process": process_curve(results)}
    rows, results = scored["test"]
    groups = defaultdict(list)
    for r, final, (_, _, y) in zip(rows, test_finals, results):
        if r["example_id"] != "trunk":  # selection is among sampled rollouts, not the trunk
            groups[r["problem_id"]].append((final, y))
    report["selection"] = selection(groups)
    report["within_problem"] = within_problem_auroc(groups)
    write_json_atomic(os.path.join(out_dir, "report.json"), report)
    plots(scored["test"][1], report, out_dir)
    write_text_atomic(os.path.join(out_dir, "report.md"), markdown(report))
    return report


def plots(results, report, out_dir):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    curve = report["test"]["process"]["curve"]
    fig, ax = plt.subplots(figsize=(5, 3.5))
    xs = [100 * r["fraction"] for r in curve]
    ax.plot(xs, [r["accuracy"] for r in curve], "o-", label="accuracy")
    ax.plot(xs, [r["auroc"] if r["auroc"] is not None else float("nan") for r in curve], "s-", label="AUROC")
    ax.axhline(0.5, color="grey", lw=0.8, ls="--")
    ax.set_xlabel("% of generated tokens seen")
    ax.set_ylim(0, 1)
    ax.legend()
    ax.set_title("value model vs. fraction of tokens (test)")
    fig.tight_layout()
    fig.savefig(os.path.join(out_dir, "percentile_accuracy.png"), dpi=120)
    plt.close(fig)
    bins = report["test"]["calibration"]["bins"]
    fig, ax = plt.subplots(figsize=(4, 4))
    ax.plot([0, 1], [0, 1], color="grey", lw=0.8, ls="--")
    ax.plot([b["mean_value"] for b in bins], [b["pass_rate"] for b in bins], "o-")
    for b in bins:
        ax.annotate(str(b["count"]), (b["mean_value"], b["pass_rate"]), fontsize=7)
    ax.set_xlabel("predicted value")
    ax.set_ylabel("observed pass rate")
    ax.set_title(f"reliability (ECE {report['test']['calibration']['ece']:.3f})")
    fig.tight_layout()
    fig.savefig(os.path.join(out_dir, "reliability.png"), dpi=120)
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for label, name in ((1, "correct"), (0, "incorrect")):
        vals = [c[-1] for c, _, y in results if y == label]
        if vals:
            ax.hist(vals, bins=20, range=(0, 1), alpha=0.6, label=f"{name} ({len(vals)})")
    ax.set_xlabel("final value")
    ax.set_ylabel("rollouts")
    ax.legend()
    ax.set_title("value distribution (test)")
    fig.tight_layout()
    fig.savefig(os.path.join(out_dir, "value_distribution.png"), dpi=120)
    plt.close(fig)


def _f(x, pct=False):
    if x is None:
        return "-"
    return f"{100 * x:.1f}%" if pct else f"{x:.3f}"


def markdown(report):
    vm = report["value_model"]
    program_value = {"last": "the last token's value", "mean": "the mean logit over the program's tokens"}[vm.get("aggregate", "last")]
    lines = ["# Value model report\n", f"Base `{vm['base']}`, head + last {vm['last_layers']} layers trained; a "
             f"program's value (selection, Table 2, calibration) is {program_value}. Data: `{report['data']}`.\n"]
    lines.append("## Selection among each problem's rollouts (test split)\n")
    lines.append("| metric | value-picked | random pick (exact) | relative improvement | problems |")
    lines.append("|---|---|---|---|---|")
    for k, s in report["selection"].items():
        lines.append(f"| {k} | {_f(s['value_picked'], True)} | {_f(s['random_pick'], True)} | "
                     f"{_f(s['relative_improvement'], True)} | {s['problems']} |")
    w = report.get("within_problem")
    if w:
        lines.append(f"\nWithin-problem AUROC (program value, over the {w['pairs']} (pass, fail) pairs of the same "
                     f"problem, {w['problems']} problems with both): {_f(w['pairs_auroc'])} pair-weighted, "
                     f"{_f(w['mean_problem_auroc'])} mean per problem. 0.5 = no better than a random pick.")
    lines.append("\n## Table 2 (program value, threshold 0.5)\n")
    lines.append("| | test (as sampled) | test (balanced) |")
    lines.append("|---|---|---|")
    keys = [("n", "rollouts"), ("share_ge_0.5", "share >= 0.5"), ("share_lt_0.5", "share < 0.5"),
            ("accuracy", "accuracy"), ("p_correct_given_ge", "P(correct | >= 0.5)"),
            ("p_incorrect_given_lt", "P(incorrect | < 0.5)"), ("p_ge_given_correct", "P(>= 0.5 | correct)"),
            ("p_lt_given_incorrect", "P(< 0.5 | incorrect)")]
    for key, name in keys:
        a, b = report["test"]["table2"][key], report["test_balanced"]["table2"][key]
        fmt = (lambda x: str(x)) if key == "n" else (lambda x: _f(x, True))
        lines.append(f"| {name} | {fmt(a)} | {fmt(b)} |")
    lines.append("\n## Accuracy and AUROC vs. fraction of generated tokens seen (test)\n")
    lines.append("| tokens seen | accuracy | AUROC | AUROC 95% lower |")
    lines.append("|---|---|---|---|")
    for r in report["test"]["process"]["curve"]:
        lines.append(f"| {int(100 * r['fraction'])}% | {_f(r['accuracy'], True)} | {_f(r['auroc'])} | {_f(r['auroc_lower_95'])} |")
    first = report["test"]["process"]["first_fraction_beating_chance"]
    lines.append(f"\nFirst fraction where AUROC's 95% lower bound exceeds 0.5: "
                 f"{'never' if first is None else f'{int(100 * first)}%'} "
                 f"(majority-class accuracy {_f(report['test']['process']['majority_accuracy'], True)}).\n")
    lines.append("## Calibration\n")
    for name in ("test", "test_balanced"):
        c = report[name]["calibration"]
        lines.append(f"- {name}: Brier {_f(c['brier'])}, ECE {_f(c['ece'])}")
    lines.append("\nPlots: `percentile_accuracy.png`, `reliability.png`, `value_distribution.png`.\n")
    return "\n".join(lines)
