"""`valuemodel`: train a value head, score a program, evaluate on a datagen export."""

import json
import os

from common.cli import OneLineParser, add_config_options, config_from_args, die, dispatch
from common.distributed import add_worker_options
from judge.problems import load_problem
from lm.options import DEFAULT_POLICY, MODEL_HELP
from valuemodel.model import aggregate_values


def fail(message):
    die("valuemodel", message)


def cmd_train(args):
    from valuemodel.model import ValueModel
    from valuemodel.train import read_rows, train
    data, extra = training_file(args.data), args.extra_data and training_file(args.extra_data)
    eval_path = os.path.join(args.data, "test.jsonl") if os.path.isdir(args.data) and args.eval else None
    for path in filter(None, (data, extra, eval_path)):
        read_rows(path)  # bad data fails here, in one line, before minutes of model loading
    cfg = train_config(args)
    spread = spread_of(args)
    vm = ValueModel.from_base(args.base, last_layers=args.last_layers, dtype=args.dtype, device=args.device,
                              trunk_layers=args.trunk_layers)
    vm.base = args.base_id or args.base
    history = train(vm, data, args.out, cfg, eval_path=eval_path, resume=args.resume, progress=not args.json,
                    extra_path=extra, spread=spread)
    if int(os.environ.get("RANK", "0")) != 0:  # under accelerate launch the first process reports
        return
    if args.json:
        print(json.dumps({"out": args.out, "history": history}))
        return
    probe = f"head fitted as a within-problem probe (L2 {args.probe_l2:g}), then " if args.probe_l2 > 0 else ""
    last = f", last loss {history[-1]['loss']:.4f}" if history else ""
    print(f"{probe}trained {len(history)} epochs{last} -> {args.out}")


def training_file(path):
    if not os.path.exists(path):
        fail(f"no training data at {path}")
    return os.path.join(path, "train.jsonl") if os.path.isdir(path) else path


def spread_of(args):
    """--workers N: the feature pass over rows without recorded features runs on N Ray actors."""
    from common.distributed import check_worker_options
    from valuemodel.train import Spread
    check_worker_options(args)
    return Spread(args.base, args.workers, args.dtype, args.ray) if args.workers else None


def train_config(args):
    from valuemodel.train import TrainConfig
    return config_from_args(TrainConfig, args, cache=not args.no_cache)


def cmd_cv(args):
    import dataclasses
    import statistics

    from valuemodel.model import ValueModel
    from valuemodel.train import cross_validate, read_rows
    if args.seeds < 1:
        fail(f"--seeds must be >= 1, not {args.seeds}")
    data, extra = training_file(args.data), args.extra_data and training_file(args.extra_data)
    for path in filter(None, (data, extra)):
        read_rows(path)
    cfg = train_config(args)
    spread = spread_of(args)
    vm = ValueModel.from_base(args.base, last_layers=args.last_layers, dtype=args.dtype, device=args.device,
                              trunk_layers=args.trunk_layers)
    # --seeds N: the same CV over N fold assignments (seeds cfg.seed, cfg.seed + 1, ...), whose spread
    # says how much of a difference between two settings is the folds' luck.
    reports = [cross_validate(vm, data, dataclasses.replace(cfg, seed=cfg.seed + s), folds=args.folds,
                              progress=not args.json, extra_path=extra, spread=spread) for s in range(args.seeds)]
    summary = {}
    for key in ("within_problem_auroc", "gap_closed"):
        per_epoch = zip(*[[r[key] for r in report["curve"]] for report in reports])
        summary[key] = [{"mean": statistics.mean(v), "sd": statistics.stdev(v) if len(v) > 1 else 0.0}
                        if (v := [x for x in values if x is not None]) else None for values in per_epoch]
    report = {**reports[0], "seeds": [r["config"]["seed"] for r in reports], "per_seed": [r["curve"] for r in reports],
              "mean_over_seeds": summary} if args.seeds > 1 else reports[0]
    if args.json:
        print(json.dumps(report))
        return
    print(f"{report['folds']}-fold CV over {report['problems']} problems ({report['mixed_problems']} with both "
          f"outcomes, {report['pairs']} pass/fail pairs); held-out folds per epoch:")
    print("epoch  within-AUROC  value pass@1  random  oracle  gap closed")
    for r in report["curve"]:
        print(f"{r['epoch']:5d}  {r['within_problem_auroc']:12.3f}  {r['value_pass@1']:12.3f}  "
              f"{r['random_pass@1']:6.3f}  {r['oracle_pass@1']:6.3f}  {r['gap_closed']:10.1%}")
    if args.seeds > 1:
        print(f"over {args.seeds} fold seeds (mean +- sd):")
        for r, auroc, gap in zip(report["curve"], summary["within_problem_auroc"], summary["gap_closed"]):
            gap = f"{gap['mean']:.1%} +- {gap['sd']:.1%}" if gap else "-"
            print(f"{r['epoch']:5d}  AUROC {auroc['mean']:.3f} +- {auroc['sd']:.3f}  gap closed {gap}")


def cmd_score(args):
    from lm.prompts import messages, reference_response
    from valuemodel.model import ValueModel
    problem = load_problem(args.problem)
    try:
        with open(args.program, encoding="utf-8") as f:
            program = f.read()
    except OSError as exc:
        fail(f"cannot read program {args.program}: {exc.strerror}")
    except UnicodeDecodeError:
        fail(f"program {args.program} is not UTF-8 text")
    vm = served(ValueModel.load(args.value, base=args.base, dtype=args.dtype, device=args.device), args)
    tok = vm.tokenizer
    msgs = messages(problem)
    if getattr(tok, "chat_template", None):
        prompt = list(tok.apply_chat_template(msgs, add_generation_prompt=True, tokenize=True, return_dict=True)["input_ids"])
    else:
        prompt = tok("\n\n".join(m["content"] for m in msgs) + "\n\n")["input_ids"]
    response = tok(reference_response(problem, program), add_special_tokens=False)["input_ids"]
    values = vm.values([prompt + response])[0][len(prompt):]
    out = {"value": aggregate_values(values, vm.aggregate), "aggregate": vm.aggregate, "tokens": len(response)}
    if args.curve:
        out["curve"] = [{"token": tok.decode([t]), "value": v} for t, v in zip(response, values)]
    if args.json:
        print(json.dumps(out))
        return
    read = "at the last" if vm.aggregate == "last" else "from the mean logit"
    print(f"value {out['value']:.4f} (P(pass) {read} of {len(response)} tokens)")
    if args.curve:
        for i, c in enumerate(out["curve"]):
            print(f"{i:5d} {c['value']:.4f} {c['token']!r}")


def served(vm, args):
    """The value model as scored: on transformers, or (--backend vllm) on vLLM's pooling runner."""
    if args.backend == "vllm":
        from valuemodel.vllm_value import VLLMValue
        return VLLMValue(vm, dtype=args.dtype, max_model_len=args.max_length)
    return vm


def cmd_eval(args):
    from valuemodel.evaluate import evaluate, read_eval_data
    from valuemodel.model import ValueModel
    data = read_eval_data(args.data)
    vm = served(ValueModel.load(args.value, base=args.base, dtype=args.dtype, device=args.device), args)
    report = evaluate(vm, args.data, args.out, max_length=args.max_length, data=data)
    if args.json:
        print(json.dumps(report))
        return
    with open(os.path.join(args.out, "report.md")) as f:
        print(f.read())


def main(argv=None):
    from valuemodel.train import TrainConfig
    parser = OneLineParser(prog="valuemodel", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True, parser_class=OneLineParser)
    t = sub.add_parser("train", help="train the value head (+ last N layers) on a datagen export")
    c = sub.add_parser("cv", help="grouped k-fold cross-validation of a training config over the training "
                       "problems: held-out within-problem AUROC and pick per epoch")
    for p in (t, c):
        p.add_argument("--data", required=True, help="export directory (its train.jsonl) or a JSONL file")
        p.add_argument("--extra-data", help="more training rows after --data's (an export directory or JSONL, e.g. "
                                            "rollout trees): cv trains on them in every fold and never tests on them")
        p.add_argument("--base", default=DEFAULT_POLICY, help=MODEL_HELP)
        p.add_argument("--last-layers", type=int, default=12, help="decoder layers trained besides the head (default 12)")
        p.add_argument("--trunk-layers", type=int, default=None,
                       help="keep only the first N decoder layers of the base: the head reads the hidden state after "
                            "layer N (a cheaper critic; choose N with `python -m research.layer_probe cv`; default: all)")
        add_config_options(p, TrainConfig, exclude=("cache", "logging_steps"))
        add_worker_options(p)
        p.add_argument("--no-cache", action="store_true",
                       help="recompute the frozen layers every step instead of once (cached in $FORKCODE_CACHE/frozen)")
    c.add_argument("--folds", type=int, default=5, help="folds, split by problem (default 5)")
    c.add_argument("--seeds", type=int, default=1,
                   help="repeat over this many fold assignments (seed, seed+1, ...): mean and sd (default 1)")
    t.add_argument("--out", required=True, help="where the delta checkpoint goes")
    t.add_argument("--base-id", default=None,
                   help="the name to record as the base (e.g. the hub id of the model a local --base copy came from)")
    t.add_argument("--resume", action="store_true", help="continue from the last epoch checkpoint in OUT")
    t.add_argument("--eval", action="store_true", help="report the test loss at the end (export directory only)")
    s = sub.add_parser("score", help="value of a program for a problem")
    s.add_argument("program")
    s.add_argument("--problem", required=True)
    s.add_argument("--value", required=True, help="value checkpoint directory")
    s.add_argument("--curve", action="store_true", help="also print the per-token value curve")
    e = sub.add_parser("eval", help="paper metrics, selection, process curve and calibration report")
    e.add_argument("--value", required=True)
    e.add_argument("--data", required=True, help="export directory with test.jsonl and test_balanced.jsonl")
    e.add_argument("--out", required=True, help="report directory")
    e.add_argument("--max-length", type=int, default=2048)
    for p in (t, c, s, e):
        p.add_argument("--dtype", default="auto", help="the frozen layers' dtype (trained tensors are fp32, saved bf16)"
                       if p in (t, c) else "auto, float32 or bfloat16")
        p.add_argument("--device", default="auto")
        p.add_argument("--json", action="store_true")
    s.add_argument("--max-length", type=int, default=4096, help="vllm: the engine's longest sequence")
    for p in (s, e):
        p.add_argument("--base", default=None, help="base model location, if moved since training")
        p.add_argument("--backend", choices=("hf", "vllm"), default="hf",
                       help="score on transformers (default) or on vLLM's pooling runner (pip install 'forkcode[vllm]')")
    args = parser.parse_args(argv)
    dispatch("valuemodel", {"train": cmd_train, "cv": cmd_cv, "score": cmd_score, "eval": cmd_eval}, args)


if __name__ == "__main__":
    main()
