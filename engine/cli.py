"""`decode`: generate a program for a problem (or each problem of a dataset) with a strategy."""

import json
import sys
import time

from common.cli import OneLineParser, add_config_options, config_from_args, dispatch
from engine.options import add_model_and_search_options
from engine.result import DecodeConfig
from engine.run import NEEDS_VALUE, STRATEGIES, decode_all, load_models
from judge.problems import ProblemError, load_dataset, load_problem
from lm.options import DEFAULT_POLICY

PLUMBING_NOTE = ("note: the default policy, SmolLM2-135M, is a plumbing model (~2% of HumanEval); for real results "
                 "use --policy Qwen/Qwen2.5-Coder-0.5B-Instruct (or its .gguf) --value valuemodel/qwen")


def show(console, problem, result, verdict):
    from rich.syntax import Syntax
    from rich.table import Table
    value = "-" if result.value is None else f"{result.value:.3f}"
    console.rule(f"{problem.id}  [{result.strategy}]  value {value}")
    console.print(Syntax(result.program, "python", line_numbers=True))
    if len(result.candidates) > 1:
        ran = any(c.examples_passed is not None for c in result.candidates)  # --select ran them in the sandbox
        evidence = ("examples", "agree") if ran else ()
        table = Table("#", "value", *evidence, "tokens", "finish", "first line", title="candidates", show_edge=False)
        for i, c in enumerate(result.candidates):
            first = next((line for line in c.program.splitlines() if line.strip()), "")
            shown = [str(c.examples_passed), str(c.agreement)] if ran else []
            table.add_row(str(i), "-" if c.value is None else f"{c.value:.3f}", *shown, str(len(c.tokens)),
                          c.finish_reason, first[:60])
        console.print(table)
    s = result.stats
    console.print(f"policy tokens {s['policy_tokens']}, value tokens {s['value_tokens']}, "
                  f"wall {s['wall_s']['total']:.1f} s")
    if verdict is not None:
        color = "green" if verdict.ok else "red"
        console.print(f"judge: [bold {color}]{verdict.verdict}[/] {verdict.passed}/{verdict.total}")


def cmd_decode(args):
    from rich.console import Console
    from rich.progress import Progress

    from judge import judge
    if args.problem:
        problems = [load_problem(args.problem)]
    else:
        problems = load_dataset(args.dataset)
        if args.index is not None:
            if not 0 <= args.index < len(problems):
                raise ProblemError(f"--index {args.index} is outside the dataset's {len(problems)} problems")
            problems = [problems[args.index]]
        elif args.limit:
            problems = problems[: args.limit]
    cfg = config_from_args(DecodeConfig, args)
    if args.policy in (None, "", DEFAULT_POLICY):
        print(PLUMBING_NOTE, file=sys.stderr)
    policy, value = load_models(args.policy, args.value, backend=args.backend, dtype=args.dtype, device=args.device,
                                needs_value=args.strategy in NEEDS_VALUE, strategy=args.strategy,
                                tensor_parallel_size=args.tensor_parallel_size)
    console = Console(stderr=args.json)
    rows, start = [], time.perf_counter()
    with Progress(console=console, transient=True, disable=len(problems) == 1 or not console.is_terminal) as bar:
        task = bar.add_task(f"decoding ({args.strategy})", total=len(problems))
        for problem, result in decode_all(policy, value, problems, args.strategy, cfg, args.batch_rows):
            verdict = judge(result.program, problem, timeout=args.timeout) if args.judge and problem.num_tests else None
            row = {"problem_id": problem.id, **result.to_dict()}
            if verdict is not None:
                row["verdict"] = verdict.to_dict()
            rows.append(row)
            if args.json:
                print(json.dumps(row), flush=True)
            else:
                show(console, problem, result, verdict)
            bar.advance(task)
    if len(problems) > 1:
        judged = [r for r in rows if "verdict" in r]
        summary = {"strategy": args.strategy, "problems": len(rows),
                   "pass@1": sum(r["verdict"]["verdict"] == "pass" for r in judged) / len(judged) if judged else None,
                   "policy_tokens": sum(r["stats"]["policy_tokens"] for r in rows),
                   "value_tokens": sum(r["stats"]["value_tokens"] for r in rows),
                   "seconds": round(time.perf_counter() - start, 1)}
        if args.json:
            print(json.dumps({"summary": summary}))
        else:
            p1 = "-" if summary["pass@1"] is None else f"{summary['pass@1']:.1%} ({len(judged)} judged)"
            console.print(f"[bold]{args.strategy}[/] on {len(rows)} problems: pass@1 {p1}, policy tokens "
                          f"{summary['policy_tokens']}, value tokens {summary['value_tokens']}, {summary['seconds']} s")


def main(argv=None):
    parser = OneLineParser(prog="decode", description=__doc__)
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument("--problem", help="problem JSON (APPS row, HumanEval or MBPP row) or APPS problem directory")
    src.add_argument("--dataset", help="humaneval, a JSON/JSONL/Parquet file, an APPS directory or a hub name")
    pick = parser.add_mutually_exclusive_group()
    pick.add_argument("--index", type=int, help="only the problem at this index of the dataset")
    pick.add_argument("--limit", type=int, default=0, help="only the first N problems of the dataset")
    add_config_options(parser, DecodeConfig, only=("strategy",), strategy={"choices": list(STRATEGIES)})
    add_model_and_search_options(parser)
    parser.add_argument("--judge", action="store_true", help="run the problem's tests on the chosen program")
    parser.add_argument("--json", action="store_true", help="one JSON object per problem (and a summary)")
    args = parser.parse_args(argv)
    args.command = "decode"
    dispatch("decode", {"decode": cmd_decode}, args)


if __name__ == "__main__":
    main()
