"""`datagen`: build judged rollout trees, summarize them, export per-token training data."""

import json
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor

from common.cli import OneLineParser, add_config_options, config_from_args, die, dispatch
from common.distributed import add_worker_options, check_worker_options, map_unordered
from common.store import RowStore, write_json_atomic
from datagen.export import LABEL_FROM, SampleRow, export, tree_stats
from datagen.tree import TREES, TreeConfig, TreeRow, grow_tree, grow_trees, judge_tree
from judge.problems import load_dataset, select_mbpp_splits
from lm.options import DEFAULT_BATCH_ROWS, add_model_options


def fail(message):
    die("datagen", message)


def cmd_build(args):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from lm.policy import load_policy
    cfg = config_from_args(TreeConfig, args)
    if args.batch_rows < 1:
        fail(f"--batch-rows must be >= 1, not {args.batch_rows}")
    problems = select_mbpp_splits(load_dataset(args.dataset), args.split)
    indexed = [(i, p) for i, p in enumerate(problems) if p.num_tests > 0][: args.limit or None]
    check_worker_options(args)
    store = RowStore(args.out, TREES, writer=True, fields=TreeRow)
    done = store.done_ids()
    write_json_atomic(os.path.join(args.out, "build.json"),
                      {"dataset": args.dataset, "split": args.split, "policy": args.policy, "config": vars(cfg)})
    options = {"spec": args.policy, "backend": args.backend, "dtype": args.dtype, "device": args.device,
               "tensor_parallel_size": args.tensor_parallel_size}
    policy = None if args.workers else load_policy(**options)
    totals = {"rollouts": 0, "passed": 0, "tokens": 0, "seconds": 0.0}

    def info():
        rate = totals["passed"] / totals["rollouts"] if totals["rollouts"] else 0.0
        tps = totals["tokens"] / totals["seconds"] if totals["seconds"] else 0.0
        return f"rollouts {totals['rollouts']}  pass {rate:.1%}  {tps:.0f} tok/s"

    # Trees grow side by side, a chunk at a time (grow_trees): as many problems as fill the batch
    # with their trunk attempts. A chunk is written when judged, so an interrupted run loses at most
    # the chunk being grown. A policy with no shared batch grows one tree at a time, reusing its
    # trunk's cache for the forks (grow_tree).
    todo = [(p, seed) for seed, p in indexed if p.id not in done]
    batched = args.backend == "hf"  # HFPolicy.sample_many; vLLM batches by itself
    attempts = 1 if cfg.trunk == "reference" else cfg.retries  # a problem's rows in the trunk phase
    per_chunk = max(1, args.batch_rows // attempts) if batched else 1
    chunks = [todo[i:i + per_chunk] for i in range(0, len(todo), per_chunk)]

    def grow(chunk):
        return grow_chunk(policy, chunk, cfg, args.batch_rows)

    def finish(trees, chunk, judged=False):  # runs on the judge thread while the next chunk is grown
        for tree, (problem, _) in zip(trees, chunk):
            if not judged:
                judge_tree(tree, problem, cfg)
            if tree["problem_id"] in done:  # a chunk run twice (its worker died after sending it)
                continue
            done.add(tree["problem_id"])
            store.append(tree)
            totals["rollouts"] += len(tree["rollouts"])
            totals["passed"] += sum(r["verdict"] == "pass" for r in tree["rollouts"])
        return len(trees)

    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TextColumn("{task.fields[info]}"), TimeElapsedColumn(),
                  disable=not sys.stderr.isatty()) as bar, ThreadPoolExecutor(1) as judger:
        task = bar.add_task("trees", total=len(indexed), completed=len(indexed) - len(todo), info="")
        pending = None
        if args.workers:  # each actor grows and judges its chunks; this process stores the trees
            start = time.perf_counter()
            by_id = {p.id: (p, seed) for p, seed in todo}
            for trees in map_unordered(_tree_worker(options, cfg, args.batch_rows), chunks, args.workers, args.ray,
                                       num_gpus=0 if batched else 1):
                totals["tokens"] += sum(t["stats"]["generated_tokens"] for t in trees)
                totals["seconds"] = time.perf_counter() - start
                bar.advance(task, finish(trees, [by_id[t["problem_id"]] for t in trees], judged=True))
                bar.update(task, info=info())
            chunks = []
        for chunk in chunks:
            start = time.perf_counter()
            trees = grow(chunk)
            totals["tokens"] += sum(t["stats"]["generated_tokens"] for t in trees)
            totals["seconds"] += time.perf_counter() - start
            if pending:
                bar.advance(task, pending.result())
            pending = judger.submit(finish, trees, chunk)
            bar.update(task, info=info())
        if pending:
            bar.advance(task, pending.result())
        bar.update(task, info=info())
    stats = tree_stats(store.rows())
    print(json.dumps({k: stats[k] for k in ("trees", "rollouts", "pass_rate", "trunks", "generated_tokens")})
          if args.json else f"{stats['trees']} trees, {stats['rollouts']} rollouts, pass rate "
          f"{stats['pass_rate']}, trunks {stats['trunks']} -> {store.path}")


def grow_chunk(policy, chunk, cfg, max_rows):
    """The unjudged trees of a chunk of (problem, seed): side by side where the policy batches
    (grow_trees), else one at a time, each reusing its trunk's cache for the forks (grow_tree)."""
    if hasattr(policy, "sample_many"):
        return grow_trees(policy, chunk, cfg, max_rows=max_rows)
    return [grow_tree(policy, problem, cfg, problem_seed=seed) for problem, seed in chunk]


def _tree_worker(policy_options, cfg, max_rows):
    def make():  # runs in the Ray actor, once: its policy replica; it judges in its own sandboxes
        from lm.policy import load_policy
        policy = load_policy(**policy_options)

        def run(chunk):
            trees = grow_chunk(policy, chunk, cfg, max_rows)
            for tree, (problem, _) in zip(trees, chunk):
                judge_tree(tree, problem, cfg)
            return trees
        return run
    return make


def cmd_stats(args):
    store = _existing_store(args.dir)
    trees = _read(store, args)
    if trees and "trunk" not in trees[0]:
        fail(f"{store.path} holds judged samples, not trees: `bench report {args.dir}` summarizes them")
    stats = tree_stats(trees)
    if args.json:
        print(json.dumps(stats))
        return
    from rich.console import Console
    from rich.table import Table
    console = Console()
    console.print(f"{stats['trees']} trees, {stats['rollouts']} rollouts, pass rate {stats['pass_rate']}, "
                  f"trunks {stats['trunks']}, {stats['generated_tokens']} tokens generated "
                  f"({stats['forward_tokens']} forward), {stats['seconds']} s")
    t = Table("fork (by position)", "rollouts", "pass rate", title="pass rate per fork depth")
    for k, v in stats["per_fork_rank"].items():
        t.add_row(k, str(v["rollouts"]), f"{v['pass_rate']:.3f}")
    console.print(t)
    t = Table("trunk before fork", "rollouts", "pass rate")
    for k, v in stats["per_trunk_fraction"].items():
        t.add_row(k, str(v["rollouts"]), f"{v['pass_rate']:.3f}")
    console.print(t)
    t = Table("problem", "trunk", "trunk verdict", "rollouts", "pass rate", title="per problem")
    for p in stats["per_problem"]:
        t.add_row(p["problem_id"], p["trunk"], p["trunk_verdict"], str(p["rollouts"]),
                  "-" if p["pass_rate"] is None else f"{p['pass_rate']:.3f}")
    console.print(t)


def cmd_export(args):
    store = _existing_store(args.dir)
    stats = export(_read(store, args), args.out, balanced=args.balanced, test_fraction=args.test_fraction,
                   seed=args.seed, label_from=args.label_from)
    if args.json:
        print(json.dumps(stats))
        return
    for name, r in stats["class_ratio"].items():
        print(f"{name:17s} {r['examples']:6d} examples, {r['positive']} positive "
              f"({r['positive_fraction']}), {r['negative']} negative")
    print(f"problems: {stats['problems']['train']} train, {stats['problems']['test']} test -> {args.out}")


def _read(store, args):
    rows = store.rows(skip_bad=args.skip_bad)
    if store.skipped:
        print(f"datagen: skipped {store.skipped} bad lines of {store.path}", file=sys.stderr)
    return rows


def _existing_store(path):
    """A datagen directory (trees.jsonl) or a `bench quality` directory (runs/sample.jsonl: judged samples)."""
    if os.path.exists(os.path.join(path, TREES)):
        return RowStore(path, TREES, fields=TreeRow)
    if os.path.exists(os.path.join(path, "runs", "sample.jsonl")):
        return RowStore(os.path.join(path, "runs"), "sample.jsonl", fields=SampleRow)
    fail(f"no trees.jsonl (or runs/sample.jsonl) in {path}: run `datagen build --out {path}` first")


def cmd_dedupe(args):
    from common.store import write_jsonl_atomic
    from datagen.dedupe import clean, failing_ids, held_out
    against = [p for spec in args.against for p in held_out(spec)]
    kept, report = clean(args.dataset, against, failing_ids(args.drop_failing) if args.drop_failing else ())
    report["against"] = args.against
    for path in filter(None, (args.out, args.report)):
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    write_jsonl_atomic(args.out, kept)
    if args.report:
        write_json_atomic(args.report, report)
    if args.json:
        print(json.dumps(report))
    else:
        print(f"kept {report['kept']} of {report['problems']}: {len(report['dropped_overlap'])} overlap a held-out problem "
              f"({report['ngram_words']} words in a row, or its id), {len(report['dropped_reference_fails'])} have a failing reference")


def main(argv=None):
    parser = OneLineParser(prog="datagen", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True, parser_class=OneLineParser)
    b = sub.add_parser("build", help="sample, fork and judge rollout trees (resumable)")
    b.add_argument("--dataset", required=True, help="humaneval, a JSON/JSONL/Parquet file, an APPS directory or a hub name")
    b.add_argument("--out", required=True, help="output directory (trees.jsonl; reruns resume)")
    add_config_options(b, TreeConfig, exclude=("stop_after_code",))
    b.add_argument("--split", default="", help="MBPP only: official splits by task id (e.g. train,test, or -validation for all but it)")
    b.add_argument("--limit", type=int, default=0, help="only the first N problems")
    b.add_argument("--batch-rows", type=int, default=DEFAULT_BATCH_ROWS,
                   help="rows sampled side by side: trees grow in chunks of batch-rows / retries problems (default %(default)s)")
    add_model_options(b)
    add_worker_options(b)
    b.add_argument("--json", action="store_true")
    s = sub.add_parser("stats", help="pass rates per problem and per fork depth, tokens, time")
    s.add_argument("dir")
    s.add_argument("--skip-bad", action="store_true", help="skip (and count) lines that are not rows instead of stopping")
    s.add_argument("--json", action="store_true")
    e = sub.add_parser("export", help="per-token training data split by problem")
    e.add_argument("dir")
    e.add_argument("--out", required=True)
    e.add_argument("--balanced", action="store_true", help="oversample each problem's minority class in train")
    e.add_argument("--test-fraction", type=float, default=0.2)
    e.add_argument("--seed", type=int, default=0)
    e.add_argument("--label-from", choices=LABEL_FROM, default="fork",
                   help="a rollout's target starts at its fork (default) or at the response's start (whole programs)")
    e.add_argument("--skip-bad", action="store_true", help="skip (and count) lines that are not rows instead of stopping")
    e.add_argument("--json", action="store_true")
    d = sub.add_parser("dedupe", help="drop problems that overlap held-out ones or whose reference fails")
    d.add_argument("dataset", help="a JSON/JSONL/Parquet file of problems")
    d.add_argument("--against", action="append", required=True,
                   help="held-out problems (repeatable): humaneval, or a file, with :validation for MBPP's split")
    d.add_argument("--drop-failing", default=None, help="`judge check --json` report: drop problems whose references fail")
    d.add_argument("--out", required=True, help="the kept rows, as read (JSONL)")
    d.add_argument("--report", default=None, help="what was dropped and why (JSON)")
    d.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    dispatch("datagen", {"build": cmd_build, "stats": cmd_stats, "export": cmd_export, "dedupe": cmd_dedupe}, args,
             interrupted="interrupted; rerun the same command to resume")


if __name__ == "__main__":
    main()
