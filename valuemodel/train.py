"""Training the value head with the transformers Trainer (so accelerate/torchrun give multi-GPU,
bf16, gradient checkpointing and resume): BCE between the per-token sigmoid output and the
rollout's label over its own generated tokens; prompt, earlier tokens and padding are masked.
Paper defaults: Adam (no weight decay), lr 1e-4, 2 epochs."""

import bisect
import json
import os
from dataclasses import dataclass

import torch

from engine.policy import vocab_fingerprint

IGNORE = -100.0


@dataclass
class TrainConfig:
    epochs: float = 2.0
    lr: float = 1e-4
    batch_size: int = 4
    grad_accum: int = 1
    max_length: int = 2048
    seed: int = 0
    bf16: bool = False
    gradient_checkpointing: bool = False
    save_steps: int = 500
    logging_steps: int = 10


def read_rows(path):
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def encode_row(row, tokenizer, fingerprint, base_name):
    """(input ids, number of prompt tokens, label start within the response) in the value
    model's own tokenization. Token ids are reused when the tokenizers match; otherwise the texts
    are re-tokenized and the label start is mapped through character offsets."""
    same = row.get("tokenizer") == fingerprint or (row.get("tokenizer") is None and row.get("policy") == base_name)
    if same:
        return row["prompt_tokens"] + row["response_tokens"], len(row["prompt_tokens"]), row["label_start"]
    prompt = tokenizer(row["prompt_text"], add_special_tokens=False)["input_ids"]
    enc = tokenizer(row["response_text"], add_special_tokens=False, return_offsets_mapping=True)
    # Where the labelled part starts in characters: the decoded policy tokens before label_start.
    from_char = len(row["response_text"]) if row["label_start"] >= len(row["response_tokens"]) else None
    if from_char is None:
        prefix_text = row.get("label_prefix_text")
        from_char = len(prefix_text) if prefix_text is not None else _char_start(row)
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
        ids, labels = ids[:max_length], labels[:max_length]
        if any(x != IGNORE for x in labels):
            feats.append({"input_ids": ids, "labels": labels})
    return feats


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


def masked_bce(logits, labels):
    """Mean BCE over the labelled tokens only (labels == -100 are prompt, context or padding)."""
    logits = logits.float().reshape(labels.shape)
    keep = labels != IGNORE
    return torch.nn.functional.binary_cross_entropy_with_logits(logits[keep], labels[keep])


def train(vm, data_path, out_dir, cfg=TrainConfig(), eval_path=None, resume=False, progress=True):
    from transformers import Trainer, TrainingArguments

    class ValueTrainer(Trainer):
        def compute_loss(self, model, inputs, return_outputs=False, **kwargs):
            labels = inputs.pop("labels")
            out = model(**inputs)
            loss = masked_bce(out.logits, labels)
            return (loss, out) if return_outputs else loss

    fingerprint = vocab_fingerprint(vm.tokenizer)
    rows = read_rows(data_path)
    if not rows:
        raise ValueError(f"{data_path} holds no training rows")
    feats = make_features(rows, vm.tokenizer, fingerprint, vm.base, cfg.max_length)
    eval_feats = make_features(read_rows(eval_path), vm.tokenizer, fingerprint, vm.base, cfg.max_length) if eval_path else None
    vm.model.train()
    args = TrainingArguments(
        output_dir=os.path.join(out_dir, "trainer"), num_train_epochs=cfg.epochs, learning_rate=cfg.lr,
        per_device_train_batch_size=cfg.batch_size, gradient_accumulation_steps=cfg.grad_accum,
        # Similar lengths in one batch: far less padding to push through the frozen layers.
        train_sampling_strategy="group_by_length",
        optim="adamw_torch", weight_decay=0.0, adam_beta1=0.9, adam_beta2=0.999,  # = Adam
        lr_scheduler_type="constant", warmup_steps=0, seed=cfg.seed, bf16=cfg.bf16,
        **({"gradient_checkpointing": True} if cfg.gradient_checkpointing else {}),
        logging_steps=cfg.logging_steps,
        save_strategy="steps", save_steps=cfg.save_steps, save_total_limit=1,
        eval_strategy="epoch" if eval_feats else "no", per_device_eval_batch_size=cfg.batch_size,
        report_to=[], disable_tqdm=not progress, remove_unused_columns=False, dataloader_num_workers=0,
        use_cpu=str(vm.device) == "cpu")
    trainer = ValueTrainer(model=vm.model, args=args, train_dataset=feats, eval_dataset=eval_feats,
                           data_collator=lambda f: collate(f, vm.tokenizer.pad_token_id))
    last = None
    if resume:
        from transformers.trainer_utils import get_last_checkpoint
        if os.path.isdir(args.output_dir):
            last = get_last_checkpoint(args.output_dir)
    result = trainer.train(resume_from_checkpoint=last)
    vm.model.eval()
    history = [h for h in trainer.state.log_history if "loss" in h or "eval_loss" in h]
    vm.save(out_dir, extra={"train": {"data": os.path.abspath(data_path), "examples": len(feats),
                                      "labelled_tokens": sum(sum(1 for x in f["labels"] if x != IGNORE) for f in feats),
                                      "config": vars(cfg), "train_loss": result.training_loss,
                                      "history": history}})
    return result, history
