"""`judge`: run a program against a problem's tests, or check a dataset's reference solutions."""

import argparse
import json
import sys

from common.cli import OneLineParser, die, dispatch
from judge.compare import MODES
from judge.core import judge, judge_many
from judge.problems import load_dataset, load_problem
from judge.sandbox import JUDGE_TIMEOUT, isolation_level


def fail(message):
    die("judge", message)


def _read_program(path):
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except OSError as exc:
        fail(f"cannot read program {path}: {exc.strerror}")
    except UnicodeDecodeError:
        fail(f"program {path} is not UTF-8 text")


def _positive(text):
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError("must be a positive number of seconds")
    return value


def cmd_run(args):
    program = _read_program(args.program)
    problem = load_problem(args.problem)
    if problem.num_tests == 0:
        fail(f"problem {args.problem} has no tests")
    verdict = judge(program, problem, mode=args.mode, timeout=args.timeout)
    if args.json:
        print(json.dumps(verdict.to_dict()))
        return
    from rich.console import Console
    from rich.table import Table
    console = Console()
    color = "green" if verdict.ok else "red"
    console.print(f"[bold {color}]{verdict.verdict}[/]  {verdict.passed}/{verdict.total} tests passed"
                  f"  [dim](mode {args.mode}, isolation {verdict.isolation})[/]")
    if verdict.tests:
        table = Table("test", "status", "time (s)", "detail", show_edge=False)
        for i, t in enumerate(verdict.tests):
            table.add_row(str(i), t.status, f"{t.time:.3f}", t.detail.strip().splitlines()[-1] if t.detail.strip() else "")
        console.print(table)
    if verdict.error and verdict.verdict == "compile_error":
        console.print(verdict.error, markup=False)


def cmd_check(args):
    problems = load_dataset(args.dataset)
    if args.limit:
        problems = problems[: args.limit]
    pairs, owners = [], []
    for p in problems:
        refs = p.references[: args.max_references] if args.max_references else p.references
        for r in refs:
            pairs.append((r, p))
            owners.append(p.id)
    from rich.progress import Progress
    with Progress(transient=True, disable=args.json or not sys.stderr.isatty()) as bar:
        task = bar.add_task("judging references", total=len(pairs))
        verdicts = judge_many(pairs, mode=args.mode, timeout=args.timeout, workers=args.workers,
                              progress=lambda v: bar.advance(task))
    report = {}
    for pid, v in zip(owners, verdicts):
        entry = report.setdefault(pid, {"references": 0, "passed": 0, "failures": []})
        entry["references"] += 1
        entry["passed"] += v.ok
        if not v.ok:
            entry["failures"].append({"verdict": v.verdict, "passed": v.passed, "total": v.total,
                                      "error": v.error.strip()[-300:]})
    no_refs = [p.id for p in problems if not p.references]
    broken = [pid for pid, e in report.items() if e["passed"] == 0]
    partial = [pid for pid, e in report.items() if 0 < e["passed"] < e["references"]]
    summary = {"dataset": args.dataset, "mode": args.mode, "isolation": isolation_level(),
               "problems": len(problems), "references": len(pairs),
               "references_passed": sum(v.ok for v in verdicts),
               "problems_all_references_fail": broken, "problems_some_references_fail": partial,
               "problems_without_references": no_refs,
               "failures": {pid: report[pid]["failures"] for pid in broken + partial}}
    if args.json:
        print(json.dumps(summary))
        return
    print(f"{summary['references_passed']}/{len(pairs)} reference solutions pass on "
          f"{len(problems)} problems (mode {args.mode}, isolation {summary['isolation']})")
    for label, ids in (("every reference fails", broken), ("some references fail", partial),
                       ("no reference solution", no_refs)):
        if ids:
            print(f"{label} ({len(ids)}): {', '.join(ids)}")
    for pid in broken + partial:
        for f in report[pid]["failures"][:3]:
            last = f["error"].splitlines()[-1] if f["error"] else ""
            print(f"  {pid}: {f['verdict']} {f['passed']}/{f['total']} {last}")


def main(argv=None):
    parser = OneLineParser(prog="judge", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True, parser_class=OneLineParser)
    run = sub.add_parser("run", help="judge one program against one problem")
    run.add_argument("program", help="Python source file of the complete program")
    run.add_argument("--problem", required=True,
                     help="problem JSON (APPS row, HumanEval or MBPP row) or APPS problem directory")
    check = sub.add_parser("check", help="run a dataset's reference solutions and report failures")
    check.add_argument("dataset", help="humaneval, a JSON/JSONL/Parquet file, an APPS directory, or a hub name")
    check.add_argument("--limit", type=int, default=0, help="only the first N problems")
    check.add_argument("--max-references", type=int, default=0,
                       help="at most N references per problem (default: all)")
    check.add_argument("--workers", type=int, default=0, help="parallel sandboxes (default: CPU count)")
    for p in (run, check):
        p.add_argument("--mode", choices=MODES, default="strict",
                       help="output comparison (default strict; apps-legacy = hendrycks/apps rules)")
        p.add_argument("--timeout", type=_positive, default=JUDGE_TIMEOUT, help="seconds per test (default %(default)s)")
        p.add_argument("--json", action="store_true", help="one JSON object on stdout")
    args = parser.parse_args(argv)
    dispatch("judge", {"run": cmd_run, "check": cmd_check}, args)


if __name__ == "__main__":
    main()
