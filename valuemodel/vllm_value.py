"""A value checkpoint scored on vLLM: the checkpoint (base + delta) is written once as a plain
token-classification model, which vLLM serves with its pooling runner (`runner="pooling"`,
`encode(..., pooling_task="token_classify")`: one logit per token), for GPU-scale critics.

vLLM's converted token-classification head may have no bias (older releases drop it), so the
model is written without the head's bias and the bias is added here, to the raw logits vLLM
returns (its own activation is off): the values are the transformers model's on every release.

Whole sequences are scored on vLLM (best_of_k's final values, `valuemodel eval` / `score` of
exported rollouts); an incremental scorer (beam, tree) stays on the transformers model, whose KV
cache grows one token at a time.
"""

import hashlib
import os

import torch

from valuemodel.model import head_module, trainable_names


class VLLMValue:
    """The value model `vm` (valuemodel.ValueModel), its batch scoring served by vLLM."""

    def __init__(self, vm, dtype="auto", max_model_len=4096, **engine_args):
        from lm.models import cache_root
        from lm.vllm_policy import make_llm
        self.vm, self.tokenizer, self.aggregate = vm, vm.tokenizer, vm.aggregate
        self.base, self.last_layers, self.logprob_weight = vm.base, vm.last_layers, vm.logprob_weight
        head = head_module(vm.model)[1]
        self.bias = float(head.bias.item()) if getattr(head, "bias", None) is not None else 0.0
        location = os.path.join(cache_root(), "vllm-value", self._key())
        if not os.path.exists(os.path.join(location, "config.json")):
            self._export(location)
        self.llm = make_llm(location, dtype, max_model_len, runner="pooling", **engine_args)
        self.tokens_scored = 0

    def _key(self):
        """The exported model's name: the base's signature, the trunk and every trained tensor."""
        h = hashlib.sha256(repr((self.vm.signature, self.vm.trunk_layers, self.vm.last_layers)).encode())
        params = dict(self.vm.model.named_parameters())
        for name in trainable_names(self.vm.model, self.vm.last_layers):
            h.update(name.encode())
            h.update(params[name].detach().float().cpu().numpy().tobytes())
        return h.hexdigest()[:16]

    def _export(self, location):
        from common.store import atomic_path
        name, _ = head_module(self.vm.model)
        state = {k: v for k, v in self.vm.model.state_dict().items() if k != f"{name}.bias"}
        os.makedirs(os.path.dirname(location), exist_ok=True)
        with atomic_path(location) as tmp:  # a killed export never leaves a half-written model
            self.vm.model.save_pretrained(tmp, state_dict=state)
            self.vm.tokenizer.save_pretrained(tmp)

    def _logits(self, sequences):
        from vllm import PoolingParams
        from vllm.inputs import TokensPrompt
        outputs = self.llm.encode([TokensPrompt(prompt_token_ids=list(s)) for s in sequences],
                                  pooling_task="token_classify", pooling_params=PoolingParams(use_activation=False),
                                  use_tqdm=False)
        self.tokens_scored += sum(len(s) for s in sequences)
        return [o.outputs.data.float().reshape(-1) + self.bias for o in outputs]

    def values(self, sequences):
        """Per-token values of each token sequence, all in one vLLM call."""
        return [torch.sigmoid(x).tolist() for x in self._logits(sequences)]

    def final_values(self, prefix, continuations, mean_logprobs=None):
        """Each continuation's value as a finished program (read as the checkpoint says); vLLM's
        prefix cache, where it serves pooling, finds the shared prefix."""
        prefix = list(prefix)
        per_token = self.values([prefix + list(c) for c in continuations])
        lps = mean_logprobs if mean_logprobs is not None else [None] * len(per_token)
        return [self.program_value(v[len(prefix):] or v[-1:], lp) for v, lp in zip(per_token, lps)]

    def program_value(self, values, mean_logprob=None):
        return self.vm.program_value(values, mean_logprob)

    def scorer(self):
        return self.vm.scorer()
