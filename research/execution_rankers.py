"""Execution evidence beside the critic, on stored samples: every ranker of engine.select picks one of
each problem's k samples, compared with the random pick, the critic alone and the oracle.

  python -m research.execution_rankers --samples results/qwen/humaneval \\
      --ranking results/qwen/humaneval-critic-v3 --out results/qwen/humaneval-execution [--inputs INPUTS.json]
  python -m research.execution_rankers --write-inputs INPUTS.json --policy MODEL [--dataset humaneval]

`--samples` is a `bench quality` folder with runs/sample.jsonl (every sample judged); `--ranking` one
whose runs/best_of_k.jsonl holds the critic's values of the same samples (matched to the programs by
their token count and mean log-prob). Each distinct program runs the statement's example calls
(judge.examples) in the sandbox (judge.call_outputs); nothing reads the hidden tests. The agreement
clusters are over those calls' outputs, and with `--inputs` also over calls the policy wrote
(`--write-inputs`: engine.select.policy_inputs, greedy, up to 5 per problem).
"""

import argparse
import json
import os
import time
from concurrent.futures import ThreadPoolExecutor

from bench.quality import bootstrap
from common.store import write_json_atomic, write_text_atomic
from engine.select import RANKERS, evidence, pick_pass_rate
from judge import call_outputs, load_dataset
from judge.examples import statement_examples
from judge.problems import select_mbpp_splits
from valuemodel.metrics import random_pass_at_k


def problem_candidates(sample_row, ranked_row):
    """[(program, value, weight, passed)] per distinct program, the critic's value from its ranking."""
    programs = {}
    for c in sample_row["candidates"]:
        programs.setdefault(c["program"], []).append(c)
    by_key = {(len(v[0]["tokens"]), round(v[0]["mean_logprob"], 9)): p for p, v in programs.items()}
    out = []
    for c in ranked_row["candidates"]:
        program = by_key[(c["tokens"], round(c["mean_logprob"], 9))]
        out.append((program, c["value"], len(programs[program]), bool(c["passed"])))
    return out


def collect(samples_dir, ranking_dir, dataset="humaneval", workers=2, inputs=None, split=""):
    """Per problem (ranked in `ranking_dir`), every distinct program's Evidence and whether it
    passed; and what the sandbox runs cost."""
    problems = {p.id: p for p in select_mbpp_splits(load_dataset(dataset), split)}
    with open(os.path.join(samples_dir, "runs", "sample.jsonl")) as f:
        samples = {r["problem_id"]: r for r in map(json.loads, f)}
    with open(os.path.join(ranking_dir, "runs", "best_of_k.jsonl")) as f:
        ranked = {r["problem_id"]: r for r in map(json.loads, f)}
    jobs = []
    for pid in sorted(ranked, key=lambda p: int(p.split("/")[-1]) if p.split("/")[-1].isdigit() else p):
        examples = statement_examples(problems[pid])
        calls = [e.given for e in examples] + list((inputs or {}).get(pid, []))
        for program, value, weight, passed in problem_candidates(samples[pid], ranked[pid]):
            jobs.append((pid, examples, program, value, weight, passed, calls))
    start = time.perf_counter()
    with ThreadPoolExecutor(workers) as pool:
        outputs = list(pool.map(lambda j: call_outputs(j[2], j[6]), jobs))
    seconds = time.perf_counter() - start
    per_problem = {}
    for (pid, examples, _, value, weight, passed, _), out in zip(jobs, outputs):
        per_problem.setdefault(pid, ([], []))
        per_problem[pid][0].append(evidence(value, out, examples, weight))
        per_problem[pid][1].append(passed)
    runs = sum(len(j[6]) for j in jobs)
    cost = {"programs": len(jobs), "sandbox_runs": runs, "sandbox_runs_per_problem": runs / max(1, len(per_problem)),
            "seconds": round(seconds, 1), "workers": workers,
            "with_examples": sum(bool(statement_examples(problems[pid])) for pid in per_problem)}
    return per_problem, cost


def ranker_rows(per_problem, rankers=RANKERS, weights=None):
    """Per ranker (and random, oracle), each problem's chance that the pick passes."""
    rows = {name: [pick_pass_rate(c, p, name, weights) for c, p in per_problem.values()] for name in rankers}
    rows["random"] = [random_pass_at_k(sum(e.weight for e in c), sum(e.weight for e, x in zip(c, p) if x), 1)
                      for c, p in per_problem.values()]
    rows["oracle"] = [float(any(p)) for _, p in per_problem.values()]
    return rows


def run(samples_dir, ranking_dir, dataset="humaneval", workers=2, inputs=None):
    per_problem, cost = collect(samples_dir, ranking_dir, dataset, workers, inputs)
    return ranker_rows(per_problem), cost, cost["with_examples"], len(per_problem)


def summarize(rows):
    mean = lambda xs: sum(xs) / len(xs)
    random, oracle = mean(rows["random"]), mean(rows["oracle"])
    table = {}
    for name, per_problem in rows.items():
        p = mean(per_problem)
        lo, hi = bootstrap(per_problem, mean)
        table[name] = {"pass@1": p, "ci95": [lo, hi], "gain_over_random": p / random - 1,
                       "gap_closed": (p - random) / (oracle - random), "picks_passing": sum(per_problem)}
    return table


NAMES = {"random": "random pick (exact expectation)", "value": "critic alone (value)",
         "examples": "examples filter + random", "examples+value": "examples filter, then the critic",
         "agreement": "agreement on the inputs (largest cluster)",
         "examples+agreement+value": "combined: examples, then agreement, then the critic",
         "fitted": "fitted: weights on the critic and the execution features (results/qwen/selection-fit)",
         "oracle": "oracle (pass@k)"}


COMPARED = [("examples+agreement+value", "value"), ("examples+agreement+value", "examples"), ("examples+value", "examples"),
            ("examples+agreement+value", "examples+value"), ("fitted", "value"), ("fitted", "examples"),
            ("fitted", "examples+agreement+value")]


def paired(rows):
    """Per pair of rankers, the mean per-problem difference of their picks' pass chance, with a
    bootstrap interval over problems (the same problems resampled for both)."""
    out = {}
    for a, b in ((a, b) for a, b in COMPARED if a in rows and b in rows):
        diffs = [x - y for x, y in zip(rows[a], rows[b])]
        lo, hi = bootstrap(diffs, lambda s: sum(s) / len(s))
        out[f"{a} - {b}"] = {"difference": sum(diffs) / len(diffs), "ci95": [lo, hi],
                             "problems_better": sum(d > 0 for d in diffs), "problems_worse": sum(d < 0 for d in diffs)}
    return out


def markdown(table, cost, with_examples, problems, samples_dir, ranking_dir, pairs=None, inputs=False):
    lines = [f"# Execution evidence beside the critic: {problems} problems\n",
             f"Samples `{samples_dir}`, critic values from `{ranking_dir}`. {with_examples} of {problems} statements show "
             "at least one example that parses (judge.examples); the others are ranked by whatever else the ranker reads. "
             "Some statements' examples are also among the hidden tests. Agreement: the same outputs on the examples' "
             f"calls{' and the calls the policy wrote' if inputs else ''}. Intervals: bootstrap over problems.\n",
             "| ranker | pass@1 | 95% interval | gain over random | gap closed |", "|---|---|---|---|---|"]
    for name in ("random", "value", "examples", "examples+value", "agreement", "examples+agreement+value", "fitted", "oracle"):
        if name not in table:
            continue
        r = table[name]
        lines.append(f"| {NAMES[name]} | {r['pass@1']:.1%} | [{r['ci95'][0]:.1%}, {r['ci95'][1]:.1%}] | "
                     f"{r['gain_over_random']:+.1%} | {r['gap_closed']:.0%} |")
    if pairs:
        lines += ["", "| paired difference | points | 95% interval | problems better / worse |", "|---|---|---|---|"]
        for name, d in pairs.items():
            lines.append(f"| {name} | {100 * d['difference']:+.1f} | [{100 * d['ci95'][0]:+.1f}, {100 * d['ci95'][1]:+.1f}] | "
                         f"{d['problems_better']} / {d['problems_worse']} |")
    lines.append(f"\nCost: {cost['programs']} distinct programs, {cost['sandbox_runs']} sandbox runs "
                 f"({cost['sandbox_runs_per_problem']:.1f} per problem), {cost['seconds']} s on {cost['workers']} workers.\n")
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m research.execution_rankers", description=__doc__.split("\n\n")[0])
    ap.add_argument("--samples")
    ap.add_argument("--ranking")
    ap.add_argument("--dataset", default="humaneval")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--inputs", help="JSON {problem id: [calls]} from --write-inputs: more inputs for agreement")
    ap.add_argument("--write-inputs", metavar="FILE", help="write the policy's test inputs for every problem, and stop")
    ap.add_argument("--policy", help="with --write-inputs: the policy that writes them")
    ap.add_argument("--out")
    args = ap.parse_args(argv)
    if args.write_inputs:
        from engine.select import inputs_from_texts, policy_input_texts
        from lm.policy import load_policy
        start = time.perf_counter()
        problems = load_dataset(args.dataset)
        texts = policy_input_texts(load_policy(args.policy), problems)
        written = inputs_from_texts(problems, texts)
        os.makedirs(os.path.dirname(os.path.abspath(args.write_inputs)), exist_ok=True)
        write_json_atomic(args.write_inputs, written)
        write_json_atomic(os.path.splitext(args.write_inputs)[0] + "-texts.json", texts)
        print(f"{sum(map(len, written.values()))} calls for {sum(bool(v) for v in written.values())} of {len(written)} "
              f"problems in {time.perf_counter() - start:.0f} s -> {args.write_inputs}")
        return 0
    if not (args.samples and args.ranking and args.out):
        ap.error("--samples, --ranking and --out are needed (or --write-inputs)")
    inputs = None
    if args.inputs:
        with open(args.inputs) as f:
            inputs = json.load(f)
    rows, cost, with_examples, problems = run(args.samples, args.ranking, args.dataset, args.workers, inputs)
    table, pairs = summarize(rows), paired(rows)
    os.makedirs(args.out, exist_ok=True)
    write_json_atomic(os.path.join(args.out, "rankers.json"), {"table": table, "paired": pairs, "cost": cost,
                                                                "with_examples": with_examples, "problems": problems,
                                                                "per_problem": rows})
    report = markdown(table, cost, with_examples, problems, args.samples, args.ranking, pairs, bool(inputs))
    write_text_atomic(os.path.join(args.out, "report.md"), report)
    print(report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
