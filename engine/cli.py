"""`decode`: generate a program for a problem (or each problem of a dataset) with a strategy."""

import json
import os
import sys
import time

from common.cli import OneLineParser, add_config_options, config_from_args, dispatch
from engine.result import DecodeConfig
from judge.problems import ProblemError, load_dataset, load_problem
from judge.sandbox import JUDGE_TIMEOUT
from lm.options import DEFAULT_BATCH_ROWS, DEFAULT_POLICY, add_model_options

# Every strategy: name -> "module:function", one file each over the one DecodeConfig (imported when
# used, so that --help stays light). Beam and tree also have a generator form that can share each
# step's batch with other problems' searches (engine.batch.run_searches).
STRATEGIES = {"greedy": "engine.baselines:greedy", "sample": "engine.baselines:sample",
              "best_of_k": "engine.best_of_k:best_of_k", "beam": "engine.beam:beam", "tree": "engine.tree:tree"}
SEARCHES = {"beam": "engine.beam:beam_search", "tree": "engine.tree:tree_search"}
NEEDS_VALUE = ("best_of_k", "beam", "tree")
# Where the project's default value model lives (a delta on the default policy).
DEFAULT_VALUE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "valuemodel", "default")


PLUMBING_NOTE = ("note: the default policy, SmolLM2-135M, is a plumbing model (~2% of HumanEval); for real results "
                 "use --policy Qwen/Qwen2.5-Coder-0.5B-Instruct (or its .gguf) --value valuemodel/qwen")


def strategy_fn(name):
    """The strategy's function: (policy, value, problem, DecodeConfig) -> DecodeResult."""
    import importlib
    module, fn = STRATEGIES[name].split(":")
    return getattr(importlib.import_module(module), fn)


def decode_all(policy, value, problems, strategy, cfg, max_rows=32):
    """(problem, result) for every problem, in the order they finish. Beam and tree searches of
    several problems run side by side, sharing each step's batched forward (engine.batch.run_searches,
    at most max_rows rows); the other strategies decode one problem at a time."""
    if strategy not in SEARCHES or len(problems) == 1:
        run = strategy_fn(strategy)
        for problem in problems:
            yield problem, run(policy, value, problem, cfg)
        return
    import importlib

    from engine.batch import run_searches
    module, fn = SEARCHES[strategy].split(":")
    search = getattr(importlib.import_module(module), fn)
    searches = (search(policy, value, p, cfg) for p in problems)
    width = cfg.beam_width * cfg.expansions if strategy == "beam" else cfg.max_branches + 1
    for index, result in run_searches(searches, max_rows=max_rows, width=width):
        yield problems[index], result


def load_models(policy_spec, value_dir=None, *, backend="hf", dtype="auto", device="auto", needs_value=False,
                tensor_parallel_size=1, strategy="decode"):
    """The policy and the value model (the given one, else the shipped default when the strategy
    needs one). A value model with another tokenizer than the policy's reads the policy's text
    (valuemodel.text_value.TextValue); on the vLLM backend, one that shares it scores whole programs
    on vLLM (valuemodel.vllm_value.VLLMValue)."""
    from lm.policy import ModelError, load_policy, vocab_fingerprint
    path = value_dir or (DEFAULT_VALUE if needs_value and os.path.exists(os.path.join(DEFAULT_VALUE, "value_config.json"))
                         else None)
    if needs_value and path is None:
        raise ModelError(f"{strategy} needs a value model: pass --value DIR "
                         "(train one with `valuemodel train`; no default value model is installed)")
    if path is not None:
        from valuemodel.model import read_checkpoint_config
        read_checkpoint_config(path)  # a damaged checkpoint fails now, not after the policy has loaded
    policy = load_policy(policy_spec, backend, dtype=dtype, device=device, tensor_parallel_size=tensor_parallel_size)
    value = None
    if path is not None:
        from valuemodel.model import ValueModel
        value = ValueModel.load(path, dtype=dtype, device=device, fallback_base=policy_spec)
        if vocab_fingerprint(value.tokenizer) != vocab_fingerprint(policy.tokenizer):
            from valuemodel.text_value import TextValue
            value = TextValue(value, policy.decode, policy.tokenizer.decode)
        elif backend == "vllm":  # whole programs scored on vLLM too (its pooling runner)
            from valuemodel.vllm_value import VLLMValue
            value = VLLMValue(value, dtype=dtype, tensor_parallel_size=tensor_parallel_size)
    return policy, value


def show(console, problem, result, verdict):
    from rich.syntax import Syntax
    from rich.table import Table
    value = "-" if result.value is None else f"{result.value:.3f}"
    console.rule(f"{problem.id}  [{result.strategy}]  value {value}")
    console.print(Syntax(result.program, "python", line_numbers=True))
    if len(result.candidates) > 1:
        table = Table("#", "value", "tokens", "finish", "first line", title="candidates", show_edge=False)
        for i, c in enumerate(result.candidates):
            first = next((line for line in c.program.splitlines() if line.strip()), "")
            table.add_row(str(i), "-" if c.value is None else f"{c.value:.3f}", str(len(c.tokens)),
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


def add_model_and_search_options(parser):
    """The model, sampling and search options shared by `decode` and `bench quality`."""
    parser.add_argument("--value", default=None, help="value checkpoint directory (default: the shipped one, if any)")
    add_config_options(parser, DecodeConfig, exclude=("strategy", "dedupe"))
    parser.add_argument("--timeout", type=float, default=JUDGE_TIMEOUT, help="judge seconds per test")
    parser.add_argument("--batch-rows", type=int, default=DEFAULT_BATCH_ROWS,
                        help="rows in one batch: sample/best_of_k samples, or beam/tree searches of several problems "
                             "side by side (default %(default)s)")
    add_model_options(parser)


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
