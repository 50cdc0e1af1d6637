"""Which decoder layer holds the most within-problem signal? A research tool behind the choice of
the value model's trunk depth (`valuemodel train --trunk-layers`).

`extract` runs the base model once over every exported row (each prompt once, its responses
continuing its KV cache) and keeps, per row and per layer, the mean over the row's labelled tokens
of the final-normed hidden state after that layer (the feature a head-only critic with
`--aggregate mean` reads, had the trunk been cut there). It writes one file per data set and
resumes: groups already done are kept. With --mixed-only it skips prompts whose rows all pass or
all fail: they hold no pair to learn from, and they change neither the within-problem AUROC nor
the share of the gap closed.

`cv` fits the within-problem probe of `valuemodel.train.pairwise_probe` on each layer's features
in grouped k-fold cross-validation over the training problems (the same folds as `valuemodel cv`)
and prints within-problem AUROC and the share of the random-to-oracle gap a value pick closes;
with `--heldout`, the same for a probe fitted on all training rows, on held-out rows (a report,
not a choice: choose by the CV columns).

    python -m research.layer_probe extract --base MODEL --data runs/qwen/train-data/train.jsonl --out F
    python -m research.layer_probe cv --features F [--heldout G] [--extra H] [--l2 0.3]
"""

import argparse
import json
import os
import random
import statistics
import sys
from collections import defaultdict

import torch

from common.store import atomic_path
from valuemodel.train import IGNORE, make_features, pairwise_probe, read_rows


@torch.inference_mode()
def extract(base, data, out, chunk=8, save_every=25, mixed_only=False, verify=False, own=0):
    from transformers import DynamicCache

    from lm.models import vocab_fingerprint
    from valuemodel.model import ValueModel, decoder_layers
    vm = ValueModel.from_base(base, last_layers=0)
    feats = make_features(read_rows(data), vm.tokenizer, vocab_fingerprint(vm.tokenizer), vm.base, 1024)
    done = torch.load(out, weights_only=False) if os.path.exists(out) else {"rows": {}}
    groups = defaultdict(list)
    for i, f in enumerate(feats):
        groups[tuple(f["input_ids"][:f["n_prompt"]])].append(i)
    trunk, layers = vm.model.base_model, decoder_layers(vm.model)
    lm_head = lm_head_weight(base, vm).float()
    captured = []
    hooks = [layer.register_forward_hook(lambda _m, _i, o: captured.append(o[0] if isinstance(o, tuple) else o))
             for layer in layers]
    pad = vm.tokenizer.pad_token_id
    suffix = vm.tokenizer(VERIFY_SUFFIX, add_special_tokens=False)["input_ids"] if verify else []
    yes_no = [vm.tokenizer(w, add_special_tokens=False)["input_ids"][0] for w in ("Yes", "No")]
    todo = [(p, m) for p, m in groups.items() if str(m[0]) not in done["rows"]
            and not (mixed_only and len({feats[i]["label"] for i in m}) < 2)]
    try:
        for g, (prompt, members) in enumerate(todo, 1):
            cache = DynamicCache()
            prefill = trunk(input_ids=torch.tensor([list(prompt)]), past_key_values=cache, use_cache=True)
            prompt_last = prefill.last_hidden_state[0, -1:].float()
            for s in range(0, len(members), chunk):
                part = members[s:s + chunk]
                responses = [feats[i]["input_ids"][len(prompt):] for i in part]
                read = [r + suffix for r in responses]
                longest = max(len(r) for r in read)
                ids = torch.tensor([r + [pad] * (longest - len(r)) for r in read])
                mask = torch.tensor([[1] * (len(prompt) + len(r)) + [0] * (longest - len(r)) for r in read])
                kv = DynamicCache()
                for li, layer in enumerate(cache.layers):
                    kv.update(layer.keys.expand(len(part), -1, -1, -1).contiguous(),
                              layer.values.expand(len(part), -1, -1, -1).contiguous(), li)
                captured.clear()
                trunk(input_ids=ids, attention_mask=mask, past_key_values=kv, use_cache=True)
                per_layer = torch.stack([trunk.norm(h).float() for h in captured], 1)  # rows, layers, positions, hidden
                for j, i in enumerate(part):
                    keep = torch.tensor([x != IGNORE for x in feats[i]["labels"][len(prompt):]])
                    last = per_layer[j, -1, :len(keep)]
                    # The distribution each response token was drawn from: the state before it.
                    before = torch.cat([prompt_last, last[:-1]])
                    logp = torch.log_softmax(before @ lm_head.T, -1)
                    token_logp = logp.gather(1, torch.tensor(responses[j])[:, None])[:, 0]
                    entropy = -(logp.exp() * logp).sum(1)
                    n_keep = int(keep.sum())
                    late = keep.clone()
                    late[:keep.nonzero()[0, 0] + n_keep // 2] = False
                    done["rows"][str(i)] = {"problem_id": feats[i]["problem_id"], "label": feats[i]["label"],
                                            "mean": per_layer[j][:, :len(keep)][:, keep].mean(1).to(torch.bfloat16),
                                            "late": last[late].mean(0).to(torch.bfloat16),
                                            "logp": token_logp[keep].mean().item(), "min_logp": token_logp[keep].min().item(),
                                            "entropy": entropy[keep].mean().item(), "tokens": n_keep}
                    if own:  # each layer's mean over the labelled tokens not copied from the prompt
                        mine = keep & ~torch.tensor(copied_from_prompt(list(prompt), responses[j], own))
                        if not mine.any():  # all copied: the program's mean, rather than no feature
                            mine = keep
                        done["rows"][str(i)]["own"] = per_layer[j][:, :len(keep)][:, mine].mean(1).to(torch.bfloat16)
                    if verify:  # the state that answers the question after the program, and its Yes-vs-No logit
                        answer = per_layer[j, :, len(read[j]) - 1]
                        done["rows"][str(i)]["verify"] = answer.to(torch.bfloat16)
                        yes, no = (answer[-1] @ lm_head[yes_no].T).tolist()
                        done["rows"][str(i)]["verify_logit"] = yes - no
            if g % save_every == 0 or g == len(todo):
                _save(done, out)
                print(f"\r{data}: prompt {g}/{len(todo)}", end="", file=sys.stderr, flush=True)
    finally:
        for h in hooks:
            h.remove()
        _save(done, out)
    print(file=sys.stderr)


def copied_from_prompt(prompt, response, n):
    """Per response token: whether it lies in a run of n tokens that occurs verbatim in the prompt
    (a HumanEval answer repeats the prompt's signature and docstring: most of its tokens)."""
    grams = {tuple(prompt[i:i + n]) for i in range(len(prompt) - n + 1)}
    copied = [False] * len(response)
    for i in range(len(response) - n + 1):
        if tuple(response[i:i + n]) in grams:
            copied[i:i + n] = [True] * n
    return copied


# --verify: a question after the program (a new chat turn, in ChatML: Qwen's format, written out rather
# than rendered by a chat template, which would add a system turn), so that the last position's state is the
# model's own answer to "is it right?" (a prompted probe) rather than a pooled reading of the code.
VERIFY_SUFFIX = "<|im_end|>\n<|im_start|>user\nIs the code above correct? Answer Yes or No.<|im_end|>\n<|im_start|>assistant\n"


def lm_head_weight(base, vm):
    """The base's output projection (its own tensor where the checkpoint has one, else the tied
    input embedding): the token-classification model drops it."""
    import glob

    from safetensors import safe_open

    from lm.models import resolve_model
    location = resolve_model(base)
    for path in glob.glob(os.path.join(location, "*.safetensors")) if os.path.isdir(location) else []:
        with safe_open(path, "pt") as f:
            if "lm_head.weight" in f.keys():  # noqa: SIM118 (safe_open has no __contains__)
                return f.get_tensor("lm_head.weight")
    return vm.model.get_input_embeddings().weight.detach()


def _save(obj, path):
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


# Per-row scalars extract keeps beside the pooled states, which `cv --add` appends to a layer's features.
SCALARS = ("logp", "entropy", "min_logp", "verify_logit")


def load(path, add=(), pool="mean"):
    """(features: rows x layers x width, labels, problem ids). pool "late": the last layer's mean
    over the program's second half instead of its mean (other layers keep their mean); `add`:
    per-row scalars (SCALARS) appended to every layer's features."""
    rows = torch.load(path, weights_only=False)["rows"]
    order = sorted(rows, key=int)
    x = torch.stack([rows[k]["mean"].float() for k in order])  # rows, layers, hidden
    if pool == "late":
        x[:, -1] = torch.stack([rows[k]["late"].float() for k in order])
    elif pool == "own":
        x = torch.stack([rows[k]["own"].float() for k in order])
    elif pool == "verify":
        x = torch.stack([rows[k]["verify"].float() for k in order])
    elif pool == "mean+verify":
        x = torch.cat([x, torch.stack([rows[k]["verify"].float() for k in order])], 2)
    if add:
        scalars = torch.tensor([[rows[k][name] for name in add] for k in order])
        x = torch.cat([x, scalars[:, None, :].expand(-1, x.shape[1], -1)], 2)
    return x, [rows[k]["label"] for k in order], [rows[k]["problem_id"] for k in order]


def score_groups(x, labels, problems, direction):
    groups = defaultdict(list)
    for v, y, p in zip((x @ direction).tolist(), labels, problems):
        groups[p].append((v, y))
    return groups


def summarize(groups):
    from valuemodel.metrics import selection, within_problem_auroc
    pick = selection(groups, ks=(1,))["pass@1"]
    oracle = sum(any(y for _, y in g) for g in groups.values()) / len(groups)
    gap = oracle - pick["random_pick"]
    return {"within_auroc": within_problem_auroc(groups)["pairs_auroc"], "pick": pick["value_picked"],
            "random": pick["random_pick"], "oracle": oracle,
            "gap_closed": (pick["value_picked"] - pick["random_pick"]) / gap if gap else None}


def cross_validate(x, labels, problems, l2, folds=5, seed=0, extra=None, l2_scale=None):
    """Grouped k-fold CV of the probe. `extra` (x, labels, problems): more rows that join the training
    folds of their problems but are never tested on, so the test rows are the same with or without."""
    names = sorted(set(problems))
    random.Random(seed).shuffle(names)
    fold_of = {p: i % folds for i, p in enumerate(names)}
    groups = {}
    for fold in range(folds):
        train = [i for i, p in enumerate(problems) if fold_of[p] != fold]
        test = [i for i, p in enumerate(problems) if fold_of[p] == fold]
        tx, ty, tp = x[train], [labels[i] for i in train], [problems[i] for i in train]
        if extra is not None:
            more = [i for i, p in enumerate(extra[2]) if fold_of.get(p, -1) != fold]
            tx = torch.cat([tx, extra[0][more]])
            ty, tp = ty + [extra[1][i] for i in more], tp + [extra[2][i] for i in more]
        direction, _, _, _ = pairwise_probe(tx, ty, tp, l2, l2_scale)
        groups.update(score_groups(x[test], [labels[i] for i in test], [problems[i] for i in test], direction))
    return summarize(groups)


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m research.layer_probe", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    e = sub.add_parser("extract", help="per-layer pooled features of an export's rows (resumable)")
    e.add_argument("--base", required=True)
    e.add_argument("--data", required=True, help="an export's JSONL (datagen export)")
    e.add_argument("--out", required=True)
    e.add_argument("--mixed-only", action="store_true",
                   help="only prompts with both passing and failing rows (the only ones a within-problem probe "
                        "learns from or is judged on): about half the work on MBPP")
    e.add_argument("--own", type=int, default=0, metavar="N",
                   help="also keep each layer's mean over the tokens not covered by an N-token run copied from the prompt "
                        "(like --verify, only in rows extracted with it: use a new --out)")
    e.add_argument("--verify", action="store_true",
                   help="also keep each layer's state after a question appended to the program (VERIFY_SUFFIX) "
                        "and the Yes-vs-No logit there")
    c = sub.add_parser("cv", help="per-layer probe: grouped CV on training features (+ held-out report)")
    c.add_argument("--features", required=True)
    c.add_argument("--heldout")
    c.add_argument("--l2", type=float, default=0.3)
    c.add_argument("--layers", default="", help="comma-separated 1-based layers (default: every one)")
    c.add_argument("--extra", help="more training rows' features (e.g. more samples of the same problems): they join "
                                   "the training folds and the held-out fit, never the CV's test rows")
    c.add_argument("--add", default="", help=f"per-row scalars appended to the features: any of {','.join(SCALARS)}")
    c.add_argument("--pool", choices=("mean", "late", "own", "verify", "mean+verify"), default="mean",
                   help="the last layer's pooling: mean over the program, or over its second half; verify: each "
                        "layer's state answering the question after the program (extract --verify); mean+verify: both; own: "
                        "each layer's mean over the tokens not copied from the prompt (extract --own)")
    c.add_argument("--only-added", action="store_true", help="the added scalars alone (no hidden states)")
    c.add_argument("--seeds", type=int, default=1, help="repeat the CV over this many fold assignments (mean and sd)")
    c.add_argument("--added-l2", type=float, default=1.0,
                   help="the added scalars' L2 penalty as a fraction of the hidden dimensions' (default 1: the same)")
    args = ap.parse_args(argv)
    torch.set_num_threads(os.cpu_count() or 1)
    if args.cmd == "extract":
        extract(args.base, args.data, args.out, mixed_only=args.mixed_only, verify=args.verify, own=args.own)
        return 0
    add = tuple(a for a in args.add.split(",") if a)
    if not set(add) <= set(SCALARS):
        ap.error(f"--add takes {', '.join(SCALARS)}")
    x, labels, problems = load(args.features, add, args.pool)
    held = load(args.heldout, add, args.pool) if args.heldout else None
    extra = load(args.extra, add, args.pool) if args.extra else None
    if args.only_added:
        if not add:
            ap.error("--only-added needs --add")
        x = x[..., -len(add):]
        held, extra = ((t[0][..., -len(add):], *t[1:]) if t else None for t in (held, extra))
    layers = [int(v) for v in args.layers.split(",")] if args.layers else range(1, x.shape[1] + 1)
    for layer in layers:
        more = (extra[0][:, layer - 1], extra[1], extra[2]) if extra else None
        scale = None
        if add and not args.only_added:
            scale = torch.ones(x.shape[2])
            scale[-len(add):] = args.added_l2
        runs = [cross_validate(x[:, layer - 1], labels, problems, args.l2, seed=seed, extra=more, l2_scale=scale)
                for seed in range(args.seeds)]
        row = {"layer": layer, "add": list(add), "pool": args.pool, "only_added": args.only_added, "l2": args.l2,
               "added_l2": args.added_l2, "cv": runs[0]}
        if args.seeds > 1:  # the spread over fold assignments (the same rows: not a sampling interval)
            row["cv_seeds"] = {k: {"mean": statistics.mean(r[k] for r in runs), "sd": statistics.stdev(r[k] for r in runs)}
                               for k in ("within_auroc", "gap_closed")}
        if held:
            fx, fy, fp = x[:, layer - 1], labels, problems
            if more:
                fx, fy, fp = torch.cat([fx, more[0]]), fy + more[1], fp + more[2]
            direction, _, _, _ = pairwise_probe(fx, fy, fp, args.l2, scale)
            row["heldout"] = summarize(score_groups(held[0][:, layer - 1], held[1], held[2], direction))
        print(json.dumps(row), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
