"""Training the value head (+ the last N decoder layers): a plain loop, one problem per batch.

Loss, per problem: BCE between every response token's sigmoid output and the rollout's label
(prompt, earlier context and padding are masked), each rollout's tokens averaged and the two
classes weighted equally within the problem (balancing without oversampling); plus, with
`pairwise` > 0, a logistic ranking term on the last-token logits of every (pass, fail) pair of the
problem. The ranking term is what a best-of-k pick needs: the value must order samples *of the same
problem*, which a pooled BCE mostly spends on telling easy problems from hard ones.

The bottom L-N layers are frozen, so the hidden states entering the first trained layer never
change: with a cache they are computed once (each problem's prompt once, its responses continuing
the prompt's KV cache) and kept on disk, and every epoch runs only the top N layers and the head.
Adam (no weight decay), lr 1e-4, 2 epochs: the paper's settings. A checkpoint after every epoch
makes `resume` continue a killed run.
"""

import bisect
import copy
import hashlib
import json
import math
import os
import random
import sys
import time
from collections import defaultdict
from dataclasses import asdict, dataclass

import torch

from common.cli import ConfigError, option
from common.store import StoreError, atomic_path, portable_path, read_jsonl
from datagen.export import ExampleRow
from lm.models import vocab_fingerprint
from valuemodel.model import AGGREGATES, decoder_layers, head_module

IGNORE = -100.0
STATE = "train_state.pt"


@dataclass
class TrainConfig:
    """Training settings; `valuemodel train` and `valuemodel cv` take their options from these fields."""
    epochs: float = option(2.0, "epochs (default %(default)s; a fraction runs part of the last one)")
    lr: float = option(1e-4, "learning rate (default %(default)s)")
    batch_size: int = option(16, "rollouts per batch, all of one problem (default %(default)s)")
    max_length: int = option(2048, "tokens per example (prompt + response; default %(default)s)")
    seed: int = option(0, "data order and folds (default %(default)s)")
    pairwise: float = option(1.0, "weight of the within-problem (pass, fail) ranking term on the programs' values "
                                  "(0: BCE only; default %(default)s)")
    weight_decay: float = option(0.0, "AdamW weight decay (default %(default)s: plain Adam, the paper's setting)")
    aggregate: str = option("last", "a finished program's value, as ranking reads it and the pairwise term trains it: "
                                    "the last token's value (default, the paper's) or the mean logit over the "
                                    "program's tokens", choices=AGGREGATES)
    probe_l2: float = option(0.0, "> 0 (with --last-layers 0): fit the head first as a convex within-problem ranking "
                                  "probe with this L2 weight on standardized features, then run --epochs (0 allowed) "
                                  "of the usual loss")
    logprob_feature: bool = option(False, "with --probe-l2: the probe also weighs the policy's mean token log-prob of each "
                                          "program (rows carry it: mean_logprob), recorded as the checkpoint's logprob_weight")
    mixed_only: bool = option(False, "train only on problems whose rows have both outcomes (all a within-problem probe "
                                     "learns from: about half the frozen cache on MBPP)")
    problems_per_step: int = option(1, "problems (batches) whose mean loss makes one optimizer step; under `accelerate "
                                       "launch` with N processes each computes 1/N of them (default %(default)s)")
    fsdp: bool = option(False, "under `accelerate launch` with N processes: shard the trained layers, their gradients "
                               "and optimizer state across the processes (FSDP2), for critics too large to train "
                               "replicated; the frozen bottom and the head stay whole in every process")
    gradient_checkpointing: bool = option(False, "recompute the trained layers' activations in the backward pass "
                                                 "instead of keeping them (less memory for long rows and many layers)")
    cache: bool = True            # compute the frozen layers once (else every step): the --no-cache option
    logging_steps: int = 10

    def __post_init__(self):  # before any model loads or frozen cache builds
        if self.problems_per_step < 1:
            raise ConfigError(f"--problems-per-step must be >= 1, not {self.problems_per_step}")
        if self.logprob_feature and (self.probe_l2 <= 0 or self.aggregate != "mean" or self.epochs):
            raise ConfigError("--logprob-feature is fitted by the probe alone on a program's mean: use --probe-l2 > 0, "
                              "--aggregate mean and --epochs 0")


def read_rows(path):
    """An export's rows (datagen export), each checked for the fields training reads."""
    return read_jsonl(path, ExampleRow)


def encode_row(row, tokenizer, fingerprint, base_name):
    """(input ids, number of prompt tokens, label start within the response) in the value
    model's own tokenization. Token ids are reused when the tokenizers match; otherwise the texts
    are re-tokenized (prompt and response apart, as valuemodel.text_value reads them) and the
    labels start at the first token that begins at or after the rollout's own first character
    (`label_start_char`; rows from trees older than it: a proportional estimate)."""
    same = row.get("tokenizer") == fingerprint or (row.get("tokenizer") is None and row.get("policy") == base_name)
    if same:
        return row["prompt_tokens"] + row["response_tokens"], len(row["prompt_tokens"]), row["label_start"]
    prompt = tokenizer(row["prompt_text"], add_special_tokens=False)["input_ids"]
    enc = tokenizer(row["response_text"], add_special_tokens=False, return_offsets_mapping=True)
    from_char = row.get("label_start_char")
    if from_char is None:
        from_char = len(row["response_text"]) if row["label_start"] >= len(row["response_tokens"]) else _char_start(row)
    starts = [s for s, _ in enc["offset_mapping"]]
    return prompt + enc["input_ids"], len(prompt), bisect.bisect_left(starts, from_char)


def _char_start(row):
    n, total = row["label_start"], max(len(row["response_tokens"]), 1)
    return int(len(row["response_text"]) * n / total)  # proportional fallback when offsets are unknown


def make_features(rows, tokenizer, fingerprint, base_name, max_length):
    feats = []
    for r in rows:
        ids, n_prompt, label_start = encode_row(r, tokenizer, fingerprint, base_name)
        labels = [IGNORE] * (n_prompt + label_start) + [float(r["label"])] * (len(ids) - n_prompt - label_start)
        truncated = len(ids) > max_length
        ids, labels = ids[:max_length], labels[:max_length]
        if any(x != IGNORE for x in labels):
            feats.append({"input_ids": ids, "labels": labels, "n_prompt": min(n_prompt, len(ids)),
                          "problem_id": r.get("problem_id", ""), "label": int(r["label"]),
                          "mean_logprob": r.get("mean_logprob"), "truncated": truncated,
                          "features": r.get("features") if label_start == 0 else None,
                          "feature_source": r.get("feature_source")})
    return feats


def training_features(vm, rows, cfg, extra_rows=()):
    """The features train and cross_validate learn from: rows within max_length, of the problems
    with both outcomes under --mixed-only, each with the policy's mean log-prob under --logprob-feature.
    Extra rows (--extra-data) come after them, marked "extra": cross_validate trains on them, never
    tests on them; a problem's extra rows count towards its both outcomes."""
    fingerprint = vocab_fingerprint(vm.tokenizer)
    feats = make_features(rows, vm.tokenizer, fingerprint, vm.base, cfg.max_length)
    feats += [{**f, "extra": True} for f in make_features(extra_rows, vm.tokenizer, fingerprint, vm.base, cfg.max_length)]
    if cfg.mixed_only:
        feats = mixed_problems_only(feats)
    if cfg.logprob_feature and any(f["mean_logprob"] is None for f in feats):
        raise ConfigError("--logprob-feature needs the policy's log-probs in every row (mean_logprob): export the "
                          "data again with this forkcode")
    return feats


def mixed_problems_only(feats):
    """The features of problems with both a passing and a failing row."""
    outcomes = defaultdict(set)
    for f in feats:
        outcomes[f["problem_id"]].add(f["label"])
    return [f for f in feats if len(outcomes[f["problem_id"]]) == 2]


def collate(features, pad_id):
    longest = max(len(f["input_ids"]) for f in features)
    ids = torch.full((len(features), longest), pad_id, dtype=torch.long)
    mask = torch.zeros((len(features), longest), dtype=torch.long)
    labels = torch.full((len(features), longest), IGNORE)
    for i, f in enumerate(features):
        n = len(f["input_ids"])
        ids[i, :n] = torch.tensor(f["input_ids"])
        mask[i, :n] = 1
        labels[i, :n] = torch.tensor(f["labels"])
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def rollout_logits(logits, labels, aggregate="last"):
    """One logit per rollout, as a pick compares them: at its last labelled token, or the mean over
    its labelled tokens (see valuemodel.model.AGGREGATES)."""
    keep = labels != IGNORE
    if aggregate == "mean":
        return (logits.float() * keep).sum(1) / keep.sum(1).clamp(min=1)
    last = keep.long().cumsum(1).argmax(1)  # index of each rollout's last labelled token
    return logits.float()[torch.arange(len(last)), last]


def problem_loss(logits, labels, outcome, pairwise, aggregate="last"):
    """The loss of one batch of rollouts of one problem (see the module docstring)."""
    keep = labels != IGNORE
    per_token = torch.nn.functional.binary_cross_entropy_with_logits(
        logits.float(), labels.clamp(min=0), reduction="none") * keep
    per_rollout = per_token.sum(1) / keep.sum(1).clamp(min=1)
    pos = outcome.bool()
    n_pos, n_neg = int(pos.sum()), int((~pos).sum())
    if n_pos and n_neg:
        weights = torch.where(pos, 0.5 / n_pos, 0.5 / n_neg)
    else:
        weights = torch.full_like(per_rollout, 1.0 / len(per_rollout))
    loss = (weights * per_rollout).sum()
    if pairwise and n_pos and n_neg:
        final = rollout_logits(logits, labels, aggregate)
        margins = final[pos][:, None] - final[~pos][None, :]
        loss = loss + pairwise * torch.nn.functional.softplus(-margins).mean()
    return loss


@dataclass
class Spread:
    """Where PooledFeatures' forward pass runs: `workers` Ray actors (common.distributed), each with
    its own copy of the base (`base`, a model spec, in `dtype`), on a local cluster or at `address`."""
    base: str
    workers: int
    dtype: str = "auto"
    address: str | None = None


def pooled_on_workers(spread, trunk_layers, feats, cache_dir):
    """(each row's pooled feature, forward tokens) as FrozenFeatures computes them, with the rows'
    prompt groups spread over Ray actors in chunks of about 64 rows."""
    from common.distributed import map_unordered
    groups = defaultdict(list)
    for i, f in enumerate(feats):
        groups[tuple(f["input_ids"][:f["n_prompt"]])].append(i)
    chunks, chunk = [], []
    for members in groups.values():
        chunk += members
        if len(chunk) >= 64:
            chunks, chunk = chunks + [chunk], []
    chunks += [chunk] if chunk else []
    vectors, tokens = [None] * len(feats), 0
    work = [[(i, feats[i]) for i in c] for c in chunks]
    for indices, pooled, fed in map_unordered(_pooling_worker(spread, trunk_layers, cache_dir), work, spread.workers,
                                              spread.address):
        for i, v in zip(indices, pooled):
            vectors[i] = v
        tokens += fed
    return vectors, tokens


def _pooling_worker(spread, trunk_layers, cache_dir):
    def make():  # runs in the Ray actor, once: its copy of the base
        from valuemodel.model import ValueModel
        vm = ValueModel.from_base(spread.base, last_layers=0, dtype=spread.dtype, trunk_layers=trunk_layers)

        def run(pairs):
            frozen = FrozenFeatures(vm, [f for _, f in pairs], cache_dir)
            return [i for i, _ in pairs], [frozen.pooled(j, "mean") for j in range(len(pairs))], frozen.forward_tokens
        return run
    return make


class PooledFeatures:
    """Each row's program feature, all a head-only probe on a program's mean reads: the mean of its
    final hidden states over its tokens. A row the sampler recorded it for (lm.features), made by
    exactly this value model's base, costs no forward pass; the others run through the base once
    (FrozenFeatures, cached on disk) and keep only their mean. `forward_tokens` counts what ran."""
    final = True

    def __init__(self, vm, feats, cache_dir=None, use_cache=True, progress=False, spread=None):
        from lm.features import decode_features
        self.feats = feats
        heads = {}  # the base check once per distinct source, not once per row
        vectors = [None] * len(feats)
        for i, f in enumerate(feats):
            key = json.dumps(f.get("feature_source"), sort_keys=True)
            if key not in heads:
                heads[key] = vm.heads_features_of(f.get("feature_source"))
            if f.get("features") and heads[key]:
                try:
                    vectors[i] = decode_features(f["features"])
                except ValueError:
                    raise StoreError("a training row's recorded features are damaged (not an fp16 vector): "
                                     "export the samples again") from None
        self.recorded = sum(v is not None for v in vectors)
        rest = [i for i, v in enumerate(vectors) if v is None]
        self.forward_tokens, self.build_seconds = 0, 0.0
        start = time.perf_counter()
        if rest and spread:
            pooled, self.forward_tokens = pooled_on_workers(spread, vm.trunk_layers, [feats[i] for i in rest], cache_dir)
            for i, v in zip(rest, pooled):
                vectors[i] = v
            self.build_seconds = time.perf_counter() - start
        elif rest:
            frozen = FrozenFeatures(vm, [feats[i] for i in rest], cache_dir, use_cache, progress)
            for j, i in enumerate(rest):
                vectors[i] = frozen.pooled(j, "mean")
            self.forward_tokens, self.build_seconds = frozen.forward_tokens, frozen.build_seconds
        if len({v.shape for v in vectors}) > 1:
            raise StoreError("the training rows' recorded features differ in width from the base's hidden size: "
                             "export the samples again")
        self.vectors = torch.stack(vectors)

    @property
    def source(self):
        """"recorded" (no forward pass), "forward" (none recorded) or "recorded+forward"."""
        return "recorded" if not self.forward_tokens and self.recorded else \
            "forward" if not self.recorded else "recorded+forward"

    def pooled(self, i, aggregate):
        return self.vectors[i]


def pools_features(vm, cfg):
    """Whether training reads one vector per row: a head-only probe on a program's mean, no epochs."""
    return cfg.probe_l2 > 0 and not cfg.epochs and cfg.aggregate == "mean" and vm.last_layers == 0 and cfg.cache


def frozen_features(vm, feats, cfg, progress=False, spread=None):
    """What training reads. A head-only probe on a program's mean (no epochs) reads one vector per
    row (PooledFeatures: recorded where the sampler kept them, else pooled from one forward pass,
    spread over Ray actors with `spread`); anything else reads the frozen layers' hidden states
    (FrozenFeatures: a forward pass, cached)."""
    from lm.models import cache_root
    cache_dir = os.path.join(cache_root(), "frozen") if cfg.cache else None
    if pools_features(vm, cfg):
        return PooledFeatures(vm, feats, cache_dir, use_cache=True, progress=progress, spread=spread)
    if spread:
        raise ConfigError("--workers spreads the feature pass of a head-only probe (--last-layers 0 --probe-l2 > 0 "
                          "--epochs 0 --aggregate mean); train layers with `accelerate launch` instead")
    return FrozenFeatures(vm, feats, cache_dir, use_cache=cfg.cache, progress=progress)


class FrozenFeatures:
    """The hidden states entering the first trained layer, per feature: from memory (computed once
    and, with `cache_dir` ($FORKCODE_CACHE/frozen), kept on disk one file per prompt group, so
    that more data or a killed build only computes the groups not yet there) or, without a cache,
    computed again for every batch."""

    def __init__(self, vm, feats, cache_dir=None, use_cache=True, progress=False):
        self.vm, self.feats = vm, feats
        self.hidden = None
        self.build_seconds = 0.0
        self.forward_tokens = 0  # tokens run through the model here (the cached groups cost none)
        self.final = False  # hidden states already through the (frozen) final norm: head-only training
        if use_cache:
            start = time.perf_counter()
            self.hidden = self._load_or_build(cache_dir, progress and sys.stdout.isatty())
            if vm.last_layers == 0:  # nothing trains below the head: apply the final norm once, not every epoch
                norm = vm.model.base_model.norm
                with torch.no_grad():
                    self.hidden = [norm(h.to(vm.device)).cpu() for h in self.hidden]
                self.final = True
            self.build_seconds = time.perf_counter() - start

    def _model_key(self):
        from lm.features import model_signature
        h = hashlib.sha256(json.dumps(model_signature(self.vm.model, self.vm.tokenizer)).encode())
        h.update(f"{self.vm.last_layers}:{self.vm.model.dtype}".encode())
        return h.hexdigest()[:16]

    def _groups(self):
        """Features sharing a prompt (their responses continue one prompt prefill)."""
        by_prompt = defaultdict(list)
        for i, f in enumerate(self.feats):
            by_prompt[tuple(f["input_ids"][:f["n_prompt"]])].append(i)
        return list(by_prompt.items())

    def _load_or_build(self, cache_dir, progress):
        from safetensors.torch import load_file, save_file
        folder = os.path.join(cache_dir, self._model_key()) if cache_dir else None
        hidden = [None] * len(self.feats)
        groups = self._groups()
        for g, (prompt, members) in enumerate(groups):
            if progress:
                print(f"\rfrozen layers: prompt {g + 1}/{len(groups)}", end="", flush=True)
            digest = hashlib.sha256(json.dumps([self.feats[i]["input_ids"] for i in members]).encode())
            path = os.path.join(folder, f"{digest.hexdigest()[:24]}.safetensors") if folder else None
            if path and os.path.exists(path):
                stored = load_file(path)
                parts = [stored[str(j)] for j in range(len(members))]
            else:
                parts = self._build_group(list(prompt), members)
                if path:
                    os.makedirs(folder, exist_ok=True)
                    with atomic_path(path) as tmp:
                        save_file({str(j): h for j, h in enumerate(parts)}, tmp)
            for i, h in zip(members, parts):
                hidden[i] = h
        if progress:
            print()
        return hidden

    def _build_group(self, prompt, members):
        """The bottom layers over one prompt (once) and its responses (continuing its KV cache)."""
        from transformers import DynamicCache
        device, pad = self.vm.device, self.vm.tokenizer.pad_token_id
        cache = DynamicCache() if prompt else None
        prompt_hidden = None
        if prompt:
            prompt_hidden, cache = self.vm.bottom_hidden(torch.tensor([prompt], device=device), past_key_values=cache)
            self.forward_tokens += len(prompt)
        out = []
        for start in range(0, len(members), 16):
            chunk = members[start:start + 16]
            responses = [self.feats[i]["input_ids"][len(prompt):] for i in chunk]
            # Every response is non-empty: make_features keeps only rows with a labelled token.
            longest = max(len(r) for r in responses)
            ids = torch.tensor([r + [pad] * (longest - len(r)) for r in responses], device=device)
            mask = torch.tensor([[1] * (len(prompt) + len(r)) + [0] * (longest - len(r)) for r in responses],
                                device=device)
            kv = None
            if prompt:
                kv = copy.deepcopy(cache)
                kv.batch_repeat_interleave(len(chunk))
            h, _ = self.vm.bottom_hidden(ids, mask, past_key_values=kv)
            self.forward_tokens += sum(len(r) for r in responses)
            for j, r in enumerate(responses):
                parts = ([prompt_hidden[0]] if prompt else []) + [h[j, :len(r)]]
                out.append(torch.cat(parts).cpu().contiguous())
        return out

    def pooled(self, i, aggregate):
        """Row i's program feature: its final hidden states' mean over the labelled tokens, or the last one's."""
        return _rollout_feature(self.hidden[i], self.feats[i]["labels"], aggregate)

    def batch(self, indices):
        """(hidden, attention mask, labels, outcomes) of these features, right-padded."""
        feats = [self.feats[i] for i in indices]
        coll = collate(feats, self.vm.tokenizer.pad_token_id)
        mask, device = coll["attention_mask"].to(self.vm.device), self.vm.device
        if self.hidden is None:
            hidden, _ = self.vm.bottom_hidden(coll["input_ids"].to(device), mask)
            self.forward_tokens += int(mask.sum())
        else:
            width = mask.shape[1]
            hidden = torch.stack([torch.nn.functional.pad(self.hidden[i], (0, 0, 0, width - len(self.hidden[i])))
                                  for i in indices]).to(device)
        outcome = torch.tensor([f["label"] for f in feats], device=device)
        return hidden, mask, coll["labels"].to(device), outcome


def problem_batches(feats, batch_size, rng):
    """Batches of rollouts of one problem each (a problem with more than batch_size is split),
    in a shuffled order."""
    by_problem = defaultdict(list)
    for i, f in enumerate(feats):
        by_problem[f["problem_id"]].append(i)
    batches = []
    for pid in sorted(by_problem):
        members = by_problem[pid]
        rng.shuffle(members)
        batches += [members[s:s + batch_size] for s in range(0, len(members), batch_size)]
    rng.shuffle(batches)
    return batches


def run_epoch(vm, frozen, batches, optimizer, cfg, log=None, accelerator=None):
    """One pass over the batches (one problem each): every optimizer step follows the mean loss of
    cfg.problems_per_step of them. Under `accelerate launch` (an Accelerator over N processes) each
    process computes its share of a step's batches and the gradients are summed across processes
    (accelerate's all-reduce), so N processes take the steps one process would."""
    n, rank = (accelerator.num_processes, accelerator.process_index) if accelerator else (1, 0)
    sharded = any(_is_sharded(p) for p in vm.model.parameters())
    vm.model.train()
    # Over a bf16 base, the trained layers compute in bf16 too (autocast; fp32 master weights and loss).
    low = vm.model.get_input_embeddings().weight.dtype == torch.bfloat16
    params = [p for p in vm.model.parameters() if p.requires_grad]
    total, start = 0.0, time.perf_counter()
    steps = [batches[i:i + cfg.problems_per_step] for i in range(0, len(batches), cfg.problems_per_step)]
    for step, group in enumerate(steps, 1):
        optimizer.zero_grad(set_to_none=True)
        loss = torch.zeros((), device=vm.device)
        mine = group[rank::n]
        # Sharded layers gather their weights in every forward and reduce their gradients in every
        # backward, all processes together: each runs as many batches, the missing ones at weight 0.
        runs = [(b, 1.0) for b in mine] + [(group[0], 0.0)] * ((-(-len(group) // n) - len(mine)) if sharded else 0)
        for indices, weight in runs:
            hidden, mask, labels, outcome = frozen.batch(indices)
            with torch.autocast(device_type=vm.device.type, dtype=torch.bfloat16, enabled=low):
                logits = vm.top_logits(hidden, mask, final=frozen.final)
            part = weight * problem_loss(logits, labels, outcome, cfg.pairwise, cfg.aggregate) / len(group)
            part.backward()
            loss += part.detach()
        if n > 1:  # a process with no batch in this step adds zeros; FSDP averaged the sharded gradients
            for p in params:
                if _is_sharded(p):
                    p.grad.mul_(n)
                else:
                    p.grad = accelerator.reduce(p.grad if p.grad is not None else torch.zeros_like(p), reduction="sum")
            loss = accelerator.reduce(loss, reduction="sum")
        optimizer.step()
        total += loss.item()
        if log and step % cfg.logging_steps == 0:
            log({"step": step, "loss": round(total / step, 5)})
    vm.model.eval()
    return total / max(len(steps), 1), time.perf_counter() - start


def _is_sharded(t):
    from torch.distributed.tensor import DTensor
    return isinstance(t, DTensor)


def _whole(t):
    """A sharded tensor gathered whole (a collective: every process calls it), else t."""
    return t.full_tensor() if _is_sharded(t) else t


def _split_like(value, param):
    """A whole tensor (a saved state) split across the processes as `param` is, else as it is."""
    from torch.distributed.tensor import distribute_tensor
    if _is_sharded(param) and torch.is_tensor(value) and value.dim() > 0:
        return distribute_tensor(value.to(param.device), param.device_mesh, param.placements)
    return value


def shard_trained_layers(vm):
    """FSDP2 (torch's fully_shard) over each trained decoder layer: its weights, gradients and
    optimizer state split across the processes and gathered layer by layer for each forward. The
    frozen bottom stays whole in every process (its features are computed once, with no collective)
    and so does the head (small)."""
    from torch.distributed.fsdp import fully_shard
    layers = decoder_layers(vm.model)
    trained = list(layers)[len(layers) - vm.last_layers:]
    for layer in trained:
        fully_shard(layer)
    local = sum(p.to_local().numel() for layer in trained for p in layer.parameters())
    whole = sum(p.numel() for layer in trained for p in layer.parameters())
    print(f"valuemodel: {len(trained)} trained layers sharded (FSDP2): {local:,} of their {whole:,} parameters here",
          file=sys.stderr)


def trained_tensors(vm):
    """The trained tensors, whole (gathered from the shards under --fsdp: every process calls it)."""
    return {n: _whole(p.detach()) for n, p in vm.model.named_parameters() if p.requires_grad}


def trained_state(vm, optimizer):
    """The trained tensors and the optimizer state, whole (gathered from the shards under --fsdp)."""
    opt = optimizer.state_dict()
    opt["state"] = {k: {name: _whole(v) for name, v in st.items()} for k, st in opt["state"].items()}
    return trained_tensors(vm), opt


def load_trained_state(vm, optimizer, trainable, opt):
    """trained_state's output back into the model and optimizer, split as their tensors are."""
    params = dict(vm.model.named_parameters())
    with torch.no_grad():
        for name, value in trainable.items():
            p = params[name]
            if _is_sharded(p):
                p.to_local().copy_(_split_like(value, p).to_local())
            else:
                p.copy_(value)
    ordered = [p for group in optimizer.param_groups for p in group["params"]]
    opt["state"] = {k: {name: _split_like(v, ordered[k]) for name, v in st.items()} for k, st in opt["state"].items()}
    optimizer.load_state_dict(opt)


def _leave(accelerator):
    """Wait for the other processes, then leave the process group: left to the interpreter's exit,
    its gloo threads can abort the process ("terminate called without an active exception")."""
    if accelerator is not None:
        accelerator.wait_for_everyone()
        torch.distributed.destroy_process_group()


def distributed_accelerator(device):
    """An accelerate Accelerator when this process is one of several (`accelerate launch
    --num_processes N`, gloo on CPU), else None: one process needs none."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return None
    from accelerate import Accelerator
    accelerator = Accelerator(cpu=device.type == "cpu")
    print(f"valuemodel: process {accelerator.process_index + 1} of {accelerator.num_processes} "
          f"({accelerator.distributed_type.value})", file=sys.stderr)
    return accelerator


def train(vm, data_path, out_dir, cfg=None, eval_path=None, resume=False, progress=True, extra_path=None, spread=None):
    """Train vm's head and last layers on an export's rows (and extra_path's after them); saves the
    delta (bf16) to out_dir."""
    cfg = cfg or TrainConfig()
    rows = read_rows(data_path)
    if not rows:
        raise StoreError(f"{data_path} holds no training rows")
    feats = training_features(vm, rows, cfg, read_rows(extra_path) if extra_path else ())
    if not feats:
        raise StoreError(f"{data_path}: no row has a labelled token within max_length {cfg.max_length}"
                         + (" in a problem with both outcomes" if cfg.mixed_only else ""))
    os.makedirs(out_dir, exist_ok=True)
    vm.aggregate = cfg.aggregate
    vm.upcast_trainable()  # fp32 master weights: bf16 would round away Adam's small steps
    frozen = frozen_features(vm, feats, cfg, progress, spread)
    accelerator = distributed_accelerator(vm.device)
    main = accelerator is None or accelerator.is_main_process  # only it logs and writes
    if cfg.fsdp:
        if accelerator is None or vm.last_layers == 0:
            raise ConfigError("--fsdp shards trained layers across processes: run under `accelerate launch "
                              "--num_processes N` (N > 1) with --last-layers > 0")
        shard_trained_layers(vm)
    if cfg.gradient_checkpointing:
        vm.model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    params = [p for p in vm.model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    history, first_epoch = [], 0
    probe = fit_probe(vm, frozen, list(range(len(feats))), cfg) if cfg.probe_l2 > 0 else None
    state_path = os.path.join(out_dir, STATE)
    if resume and os.path.exists(state_path):
        state = torch.load(state_path, map_location=vm.device, weights_only=False)
        load_trained_state(vm, optimizer, state["trainable"], state["optimizer"])
        history, first_epoch = state["history"], state["epoch"]
    rng = random.Random(cfg.seed)
    epochs = math.ceil(cfg.epochs)
    all_batches = [problem_batches(feats, cfg.batch_size, rng) for _ in range(epochs)]
    log = (lambda entry: print(json.dumps(entry), flush=True)) if progress and main else None
    for epoch in range(first_epoch, epochs):
        batches = all_batches[epoch]
        if epoch + 1 > cfg.epochs:  # a fractional last epoch
            batches = batches[:round(len(batches) * (cfg.epochs - epoch))]
        loss, seconds = run_epoch(vm, frozen, batches, optimizer, cfg, log, accelerator)
        history.append({"epoch": epoch + 1, "loss": loss, "seconds": round(seconds, 2), "batches": len(batches)})
        if log:
            log(history[-1])
        trainable, opt = trained_state(vm, optimizer)  # every process: gathering shards is a collective
        if main:
            with atomic_path(state_path) as tmp:
                torch.save({"trainable": trainable, "optimizer": opt, "history": history, "epoch": epoch + 1}, tmp)
    eval_loss = None
    if eval_path and (main or cfg.fsdp):  # sharded layers evaluate in every process together
        eval_loss = evaluate_loss(vm, make_features(read_rows(eval_path), vm.tokenizer, vocab_fingerprint(vm.tokenizer), vm.base,
                                                    cfg.max_length), cfg)
    trainable = trained_tensors(vm) if cfg.fsdp else None
    if not main:
        _leave(accelerator)
        return history
    vm.save(out_dir, dtype=torch.bfloat16, tensors=trainable, extra={"train": {
        "data": portable_path(data_path), "examples": len(feats),
        "problems": len({f["problem_id"] for f in feats}),
        "labelled_tokens": sum(sum(1 for x in f["labels"] if x != IGNORE) for f in feats),
        "config": asdict(cfg), "frozen_cache_seconds": round(frozen.build_seconds, 2),
        "feature_source": frozen.source if isinstance(frozen, PooledFeatures) else "forward",
        "feature_forward_tokens": frozen.forward_tokens, "probe": probe,
        "history": history, "eval_loss": eval_loss}})
    # Only now: a run killed while saving resumes from the last epoch and saves again.
    if os.path.exists(state_path):  # (no epochs after a probe fit: none was written)
        os.remove(state_path)
    _leave(accelerator)
    return history


@torch.no_grad()
def evaluate_loss(vm, feats, cfg):
    if not feats:
        return None
    frozen = FrozenFeatures(vm, feats, use_cache=False)
    batches = problem_batches(feats, cfg.batch_size, random.Random(0))
    losses = []
    for b in batches:
        hidden, mask, labels, outcome = frozen.batch(b)
        losses.append(problem_loss(vm.top_logits(hidden, mask, final=frozen.final), labels, outcome, cfg.pairwise, cfg.aggregate).item())
    return sum(losses) / len(losses)


# The policy's mean token log-prob's L2 penalty in the probe, relative to each hidden dimension's: one
# strong scalar beside hundreds of dimensions (chosen by 5-fold CV on the MBPP training problems,
# results/qwen/critic-cv/logprob-feature.jsonl, 6 fold assignments: within-problem AUROC 0.708 at 0.1 and
# 0.01, 0.699 at 1; 0.1 closed more of the gap, 32% vs 31%; without the log-prob 0.681 and 30%).
LOGPROB_L2_SCALE = 0.1


def fit_probe(vm, frozen, indices, cfg):
    """Head-only warm start: the head that best orders each problem's (pass, fail) pairs by their
    rollout features (the aggregate of the final hidden states: mean over the rollout's tokens, or
    its last token), a convex fit (pairwise logistic loss + `probe_l2` x |w|^2 over standardized
    features, full-batch L-BFGS) -- then a 1-D logistic fit of scale and bias on the pooled labels,
    so the values are probabilities again. Ranking within a problem comes from the probe alone: a
    pooled BCE would spend the head on telling easy problems from hard ones."""
    if vm.last_layers != 0 or not frozen.final:
        raise ConfigError("--probe-l2 fits the head alone: use --last-layers 0 with the frozen cache")
    feats = frozen.feats
    with torch.no_grad():
        x = torch.stack([frozen.pooled(i, cfg.aggregate) for i in indices])
    y = [feats[i]["label"] for i in indices]
    l2_scale = None
    if cfg.logprob_feature:  # (TrainConfig and training_features checked the settings and the rows)
        lps = [feats[i]["mean_logprob"] for i in indices]
        x = torch.cat([x, torch.tensor(lps, dtype=x.dtype)[:, None]], 1)
        l2_scale = torch.ones(x.shape[1])
        l2_scale[-1] = LOGPROB_L2_SCALE
    direction, scale, bias, pairs = pairwise_probe(x, y, [feats[i]["problem_id"] for i in indices], cfg.probe_l2, l2_scale)
    vm.logprob_weight = scale * direction[-1].item() if cfg.logprob_feature else 0.0
    head = head_module(vm.model)[1]
    hidden = direction[:-1] if cfg.logprob_feature else direction
    with torch.no_grad():
        head.weight.copy_((scale * hidden).reshape(head.weight.shape).to(head.weight.dtype))
        if getattr(head, "bias", None) is not None:
            head.bias.fill_(bias)
    return {"pairs": pairs, "l2": cfg.probe_l2, "scale": scale, "bias": bias, "logprob_weight": vm.logprob_weight}


def pairwise_probe(x, labels, problem_ids, l2, l2_scale=None):
    """The linear probe of fit_probe on rollout features x (rows) with 0/1 labels: a direction w
    minimising the pairwise logistic loss over every (pass, fail) pair of the same problem + l2 x
    |w|^2 on standardized features (L-BFGS), then a scale and bias fitted by pooled BCE on x @ w.
    `l2_scale` (one factor per feature) weighs the penalty per feature, e.g. to let a few strong
    scalar features stand beside hundreds of hidden-state dimensions.
    Returns (direction in x's units, scale, bias, number of pairs)."""
    x = x.float()
    y = torch.tensor(labels, dtype=torch.float32)
    mu, sigma = x.mean(0), x.std(0) + 1e-6
    z = (x - mu) / sigma
    by_problem = defaultdict(list)
    for row, pid in enumerate(problem_ids):
        by_problem[pid].append(row)
    pos, neg = [], []
    for rows in by_problem.values():
        for a in rows:
            for b in rows:
                if y[a] == 1 and y[b] == 0:
                    pos.append(a)
                    neg.append(b)
    pos, neg = torch.tensor(pos, dtype=torch.long), torch.tensor(neg, dtype=torch.long)
    w = torch.zeros(z.shape[1], requires_grad=True)

    def minimize(params, loss_fn):
        opt = torch.optim.LBFGS(params, max_iter=200, line_search_fn="strong_wolfe")

        def closure():
            opt.zero_grad()
            loss = loss_fn()
            loss.backward()
            return loss
        opt.step(closure)
    if len(pos):
        penalty = torch.ones(z.shape[1]) if l2_scale is None else torch.as_tensor(l2_scale, dtype=torch.float32)
        minimize([w], lambda: torch.nn.functional.softplus(-((z[pos] - z[neg]) @ w)).mean() + l2 * (penalty * w * w).sum())
    direction = (w / sigma).detach()
    score = (x @ direction).detach()
    scale, bias = torch.ones((), requires_grad=True), torch.zeros((), requires_grad=True)
    minimize([scale, bias], lambda: torch.nn.functional.binary_cross_entropy_with_logits(scale * score + bias, y))
    return direction, scale.item(), bias.item(), len(pos)


def _rollout_feature(hidden, labels, aggregate):
    keep = torch.tensor([x != IGNORE for x in labels])
    h = hidden[:len(labels)].float()
    return h[keep].mean(0) if aggregate == "mean" else h[keep.nonzero()[-1, 0]]


@torch.no_grad()
def final_logits(vm, frozen, indices, aggregate="last", batch_size=16):
    """Each feature's rollout logit (the value a best-of-k pick compares), with the policy's mean
    log-prob term of a checkpoint that reads it."""
    if isinstance(frozen, PooledFeatures):
        out = vm.feature_logits(frozen.vectors[indices]).tolist()
    else:
        out = []
        for s in range(0, len(indices), batch_size):
            hidden, mask, labels, _ = frozen.batch(indices[s:s + batch_size])
            out += rollout_logits(vm.top_logits(hidden, mask, final=frozen.final), labels, aggregate).tolist()
    if vm.logprob_weight:
        out = [x + vm.logprob_weight * frozen.feats[i]["mean_logprob"] for x, i in zip(out, indices)]
    return out


def cross_validate(vm, data_path, cfg, folds=5, progress=True, extra_path=None, spread=None):
    """Grouped k-fold cross-validation over the training problems (no problem is in two folds):
    for every epoch, the held-out folds' within-problem AUROC and value-picked pass@1 against the
    random pick and the oracle. It chooses epochs, lr or the loss mix from training data alone,
    never from a test set. Rows of extra_path (e.g. rollout trees) join every fold's training rows
    and are never tested on, so the test rows are the same with or without them; a test fold's
    problems train on none of their rows."""
    from valuemodel.metrics import selection, within_problem_auroc
    feats = training_features(vm, read_rows(data_path), cfg, read_rows(extra_path) if extra_path else ())
    tested = [f for f in feats if not f.get("extra")]
    problems = sorted({f["problem_id"] for f in (mixed_problems_only(tested) if cfg.mixed_only else tested)})
    if len(problems) < folds:
        raise ConfigError(f"{data_path}: {len(problems)} problems, fewer than {folds} folds")
    random.Random(cfg.seed).shuffle(problems)
    fold_of = {p: i % folds for i, p in enumerate(problems)}
    vm.upcast_trainable()
    frozen = frozen_features(vm, feats, cfg, progress, spread)
    names = {n for n, p in vm.model.named_parameters() if p.requires_grad}
    initial = {n: p.detach().clone() for n, p in vm.model.state_dict().items() if n in names}
    epochs = math.ceil(cfg.epochs)
    groups = [defaultdict(list) for _ in range(epochs)]  # per epoch: problem -> [(logit, label)]
    probe_groups = defaultdict(list)  # after the probe fit, before any epoch
    rng = random.Random(cfg.seed)
    for fold in range(folds):
        vm.model.load_state_dict(initial, strict=False)
        optimizer = torch.optim.AdamW([p for p in vm.model.parameters() if p.requires_grad],
                                      lr=cfg.lr, weight_decay=cfg.weight_decay)
        train_idx = [i for i, f in enumerate(feats) if fold_of.get(f["problem_id"]) != fold]
        test_idx = [i for i, f in enumerate(feats) if fold_of.get(f["problem_id"]) == fold and not f.get("extra")]
        if cfg.probe_l2 > 0:
            fit_probe(vm, frozen, train_idx, cfg)
            for i, logit in zip(test_idx, final_logits(vm, frozen, test_idx, cfg.aggregate)):
                probe_groups[feats[i]["problem_id"]].append((logit, feats[i]["label"]))
        for epoch in range(epochs):
            batches = [[train_idx[j] for j in b] for b in problem_batches([feats[i] for i in train_idx],
                                                                          cfg.batch_size, rng)]
            run_epoch(vm, frozen, batches, optimizer, cfg)
            for i, logit in zip(test_idx, final_logits(vm, frozen, test_idx, cfg.aggregate)):
                groups[epoch][feats[i]["problem_id"]].append((logit, feats[i]["label"]))
            if progress:
                print(f"\rfold {fold + 1}/{folds} epoch {epoch + 1}/{epochs}", end="", flush=True)
    if progress:
        print()
    vm.model.load_state_dict(initial, strict=False)
    curve = []
    for epoch, g in enumerate(([probe_groups] if probe_groups else []) + groups, 0 if probe_groups else 1):
        pick = selection(g, ks=(1,))["pass@1"]
        oracle = sum(any(y for _, y in items) for items in g.values()) / len(g)
        gap = oracle - pick["random_pick"]
        curve.append({"epoch": epoch, "within_problem_auroc": within_problem_auroc(g)["pairs_auroc"],
                      "value_pass@1": pick["value_picked"], "random_pass@1": pick["random_pick"],
                      "oracle_pass@1": oracle, "gap_closed": (pick["value_picked"] - pick["random_pick"]) / gap if gap else None})
    mixed = within_problem_auroc(probe_groups or groups[0])
    return {"data": portable_path(data_path), "folds": folds, "problems": len(problems),
            "mixed_problems": mixed["problems"], "pairs": mixed["pairs"], "config": asdict(cfg),
            "feature_source": frozen.source if isinstance(frozen, PooledFeatures) else "forward",
            "feature_forward_tokens": frozen.forward_tokens,
            "last_layers": vm.last_layers, "curve": curve}
