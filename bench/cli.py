"""`bench`: the quality report (pytest-benchmark runs the speed benchmarks: see bench/benchmarks/).

  bench quality --dataset humaneval --policy MODEL [--value DIR] --out DIR [--limit N]
      run greedy, best_of_k (all k samples judged), beam and tree on every problem, then report
  bench report DIR
      rewrite DIR's report.md, summary.json and pass_vs_tokens.png from its runs
"""

import json
import os
from dataclasses import asdict, replace

from bench.quality import SETTINGS, STRATEGIES, run_strategy, write_report
from common.cli import ConfigError, OneLineParser, config_from_args, dispatch
from common.distributed import add_worker_options, check_worker_options
from common.store import StoreError, read_json
from engine.result import DecodeConfig
from judge.problems import ProblemError, load_dataset, select_mbpp_splits


def _value_digest(value):
    from engine.run import DEFAULT_VALUE
    from valuemodel.model import checkpoint_digest
    return checkpoint_digest(value or DEFAULT_VALUE)


def _settings(args, cfg):
    decode = {k: v for k, v in asdict(cfg).items() if k != "strategy"}
    return {"dataset": args.dataset, "split": args.split, "limit": args.limit, "policy": args.policy,
            "value": args.value or "default (shipped)", "value_digest": _value_digest(args.value),
            "backend": args.backend, "dtype": args.dtype, "timeout": args.timeout, "decode": decode}


def cmd_quality(args):
    from rich.console import Console
    from rich.progress import Progress

    from common.store import write_json_atomic
    from engine.run import NEEDS_VALUE, load_models
    strategies = [s.strip() for s in args.strategies.split(",") if s.strip()]
    bad = [s for s in strategies if s not in STRATEGIES]
    if bad or not strategies:
        raise ConfigError(f"--strategies: unknown {', '.join(bad) or '(none given)'}; choose from {', '.join(STRATEGIES)}")
    check_worker_options(args)
    if args.workers and set(strategies) - {"sample", "best_of_k"}:
        raise ConfigError("--workers spreads sampling (the sample and best_of_k strategies); run the others without it")
    problems = [p for p in select_mbpp_splits(load_dataset(args.dataset), args.split) if p.num_tests]
    if args.limit:
        problems = problems[: args.limit]
    if not problems:
        raise ProblemError(f"{args.dataset} has no problems with tests")
    os.makedirs(args.out, exist_ok=True)
    cfg = config_from_args(DecodeConfig, args, strategy=strategies[0])
    settings = _settings(args, cfg)
    path = os.path.join(args.out, SETTINGS)
    if os.path.exists(path):
        old = read_json(path, "settings")
        free = ("limit", "value", "value_digest")  # the value model only matters to the runs it ranked or guided

        def same(s):  # one dataset file under two spellings of its path is the same dataset
            s = {k: v for k, v in s.items() if k not in free}
            # The tree's "chunk" (tokens between checks) went with the batched engine (one token a step);
            # the load check changes only best_of_k's pick (checked below).
            decode = {k: v for k, v in s.get("decode", {}).items() if k not in ("chunk", "load_check", "select")}
            decode.setdefault("prompt_tests", True)  # runs from before the option showed the tests
            return {**s, "decode": decode,
                    "dataset": os.path.realpath(s["dataset"]) if os.path.exists(s.get("dataset", "")) else s.get("dataset")}
        if same(old) != same(settings):
            raise ConfigError(f"{args.out} holds runs made with other settings ({path}); use a new --out")
        guided = [s for s in ("best_of_k", "beam", "tree") if os.path.exists(os.path.join(args.out, "runs", f"{s}.jsonl"))]
        from engine.best_of_k import load_checked
        checked = old.get("decode", {}).get("load_check", False)  # runs from before the load check had none
        if "best_of_k" in guided and checked != cfg.load_check and any(map(load_checked, problems)):
            raise ConfigError(f"{args.out} holds best_of_k runs made {'with' if checked else 'without'} the load check; "
                              f"use a new --out or {'--load-check' if checked else '--no-load-check'}")
        if "best_of_k" in guided and old.get("decode", {}).get("select", "value") != cfg.select:
            raise ConfigError(f"{args.out} holds best_of_k runs picked with --select "
                              f"{old.get('decode', {}).get('select', 'value')}; use a new --out")
        if old.get("value") != settings["value"] and guided:
            raise ConfigError(f"{args.out} holds {', '.join(guided)} runs made with value model {old.get('value')}; "
                             "use a new --out (its runs/sample.jsonl can be copied there and reused)")
        # The same path with other weights (a retrained or re-shipped model); runs from before digests were kept pass.
        if old.get("value_digest") and old["value_digest"] != settings["value_digest"] and guided:
            raise ConfigError(f"{args.out} holds {', '.join(guided)} runs made with other weights at {settings['value']} "
                             f"(digest {old['value_digest']}, now {settings['value_digest']}); use a new --out")
        if guided and not old.get("value_digest"):  # runs from before digests: which weights made them is unknown
            settings["value_digest"] = None
    write_json_atomic(path, settings)
    policy = value = sampler = None
    if args.workers:  # the actors sample; this process only stores rows (and ranks, with a value model)
        from bench.quality import sample_rows_on_workers
        options = {"spec": args.policy, "backend": args.backend, "dtype": args.dtype, "device": args.device,
                   "tensor_parallel_size": args.tensor_parallel_size}

        def sampler(todo):
            return sample_rows_on_workers(options, todo, cfg, args.workers, args.ray, args.timeout, args.batch_rows)
    if not args.workers or "best_of_k" in strategies:
        policy, value = load_models(args.policy, args.value, backend=args.backend, dtype=args.dtype, device=args.device,
                                    needs_value=any(s in NEEDS_VALUE for s in strategies), strategy="bench quality",
                                    tensor_parallel_size=args.tensor_parallel_size)
    console = Console(stderr=True)
    with Progress(console=console, disable=not console.is_terminal) as bar:
        for strategy in strategies:
            task = bar.add_task(strategy, total=len(problems))
            run_strategy(policy, value, problems, strategy, replace(cfg, strategy=strategy),
                         args.out, timeout=args.timeout, progress=lambda task=task: bar.advance(task), max_rows=args.batch_rows,
                         sampler=sampler)
            console.print(f"{strategy}: {len(problems)} problems done -> {args.out}/runs/{strategy}.jsonl")
    report(args.out, console, args.json)


def report(out_dir, console, as_json, skip_bad=False):
    summary = write_report(out_dir, skip_bad)
    if as_json:
        print(json.dumps(summary))
        return
    for name, r in summary["strategies"].items():
        console.print(f"{name:10s} pass@1 {r['pass@1']:.1%} ({r['problems']} problems), "
                      f"policy tokens {r['policy_tokens']:.0f}, value tokens {r['value_tokens']:.0f} per problem")
    sel = summary["best_of_k_selection"]
    if sel and sel.get("pass@1") and sel["pass@1"]["relative_gain"] is not None:
        s = sel["pass@1"]
        console.print(f"best_of_k value-picked pass@1 {s['value_picked']:.1%} vs random pick {s['random_pick']:.1%} "
                      f"({s['relative_gain']:+.1%} relative)")
    console.print(f"report: {os.path.join(out_dir, 'report.md')}"
                  + ("" if summary["plot"] else " (no plot: pip install matplotlib)"))


def cmd_report(args):
    from rich.console import Console
    if not os.path.exists(os.path.join(args.dir, SETTINGS)):
        raise StoreError(f"{args.dir} is not a `bench quality` directory (no {SETTINGS})")
    report(args.dir, Console(stderr=True), args.json, args.skip_bad)


def main(argv=None):
    from engine.options import add_model_and_search_options
    parser = OneLineParser(prog="bench", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    q = sub.add_parser("quality", help="every strategy on a dataset, judged, with a report")
    q.add_argument("--dataset", default="humaneval", help="humaneval, a JSON/JSONL/Parquet file, an APPS directory or a hub name")
    q.add_argument("--split", default="", help="MBPP only: official splits by task id (e.g. validation, or -validation for all others)")
    q.add_argument("--limit", type=int, default=0, help="only the first N problems")
    q.add_argument("--out", required=True, help="report directory (runs resume from it)")
    q.add_argument("--strategies", default=",".join(s for s in STRATEGIES if s != "sample"),
                   help="comma-separated, from " + ", ".join(STRATEGIES) + " (sample: only best_of_k's judged samples, no value model)")

    add_model_and_search_options(q)
    q.set_defaults(select="value")  # the report measures the critic: its best_of_k picks by the critic alone
    add_worker_options(q)
    q.add_argument("--json", action="store_true", help="print the summary as JSON")
    r = sub.add_parser("report", help="rewrite a quality directory's report from its runs")
    r.add_argument("dir")
    r.add_argument("--skip-bad", action="store_true", help="skip lines of the run files that are not rows")
    r.add_argument("--json", action="store_true", help="print the summary as JSON")
    args = parser.parse_args(argv)
    dispatch("bench", {"quality": cmd_quality, "report": cmd_report}, args)


if __name__ == "__main__":
    main()
