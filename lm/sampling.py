"""Sampling, whatever the backend: the settings (`SamplingParams`), what a completion carries, the
`Policy` interface datagen and every strategy use, the prompt and stop rules every backend shares
(`TokenizerOps`), and choosing the next tokens from logits (`sample_tokens`: top-p by inverting the
cumulative distribution, one uniform draw per row)."""

from dataclasses import dataclass
from typing import Protocol

import torch

# --- sampling ------------------------------------------------------------------------------------

@dataclass
class SamplingParams:
    max_new_tokens: int = 512
    temperature: float = 1.0   # 0 = greedy
    top_p: float = 1.0
    stop: tuple = ()           # strings that end a completion (kept in its text)
    seed: int | None = None
    # stop_fn(prefix_tokens, new_tokens) -> bool ends a completion; checked only after tokens
    # that contain a backtick (the end of a code fence), so it may be costly.
    stop_fn: object = None
    ignore_eos: bool = False   # generate max_new_tokens whatever happens (benchmarks)

    @classmethod
    def from_config(cls, cfg, **overrides):
        """The sampling settings of a run's config (engine.DecodeConfig, datagen.TreeConfig: any with
        max_new_tokens, temperature, top_p and seed), with overrides such as a stop_fn."""
        fields = {name: getattr(cfg, name) for name in ("max_new_tokens", "temperature", "top_p", "seed")}
        return cls(**{**fields, **overrides})


def mean_logprob(logprobs):
    """The mean of a completion's token log-probs (None when they are unknown)."""
    return sum(logprobs) / len(logprobs) if logprobs else None


@dataclass
class Completion:
    tokens: list               # generated token ids (the stop/EOS token included when emitted)
    logprobs: list             # log p of each generated token under the raw model distribution
    text: str
    finish_reason: str         # "eos" | "stop" | "length"
    # With sample_many(..., features=True): the mean over the completion's tokens of the policy's final
    # (normed) hidden state at each, fp32 -- what a head-only critic on this policy reads (its "mean"
    # aggregate), recorded while sampling so that ranking and training need no second forward pass.
    features: object = None


@dataclass
class PrefixState:
    """A token sequence and the KV cache of its first `cached` tokens (batch of one)."""
    tokens: list
    cache: object = None
    cached: int = 0


@dataclass
class PolicyStats:
    forward_tokens: int = 0    # tokens pushed through the model (prefill and decode)
    generated_tokens: int = 0
    forward_calls: int = 0

    def snapshot(self):
        return PolicyStats(self.forward_tokens, self.generated_tokens, self.forward_calls)


class Policy(Protocol):
    """What datagen and the strategies use; HFPolicy and VLLMPolicy implement it (a test checks).
    A batched search (engine.batch) steps the rows itself through `forward_rows` + `pick` where the
    backend has them (transformers), else asks for one token per row with `sample_next` (vLLM)."""
    name: str
    tokenizer: object
    stats: PolicyStats
    eos_ids: list

    def prompt_tokens(self, messages: list) -> list: ...
    def decode(self, tokens: list) -> str: ...
    def sample(self, prefix: list, n: int, params: SamplingParams,
               state: PrefixState | None = None) -> list: ...
    def sample_forks(self, state: PrefixState, positions: list, k: int,
                     params: SamplingParams) -> list: ...
    def teacher_force(self, prefix: list, continuation: list) -> tuple: ...
    def extend(self, state: PrefixState, tokens: list) -> PrefixState: ...
    def sample_with_state(self, prefix: list, params: SamplingParams, n: int = 1) -> list: ...
    def sample_next(self, prefixes: list, params: SamplingParams, seeds: list) -> tuple: ...


class TokenizerOps:
    """What every backend shares: prompts through the chat template, decoding, stop checks."""

    def _init_tokenizer(self, tokenizer, generation_eos=None):
        self.tokenizer = tokenizer
        eos = generation_eos if isinstance(generation_eos, list) else [generation_eos] if generation_eos is not None else []
        if tokenizer.eos_token_id is not None:
            eos.append(tokenizer.eos_token_id)
        self.eos_ids = sorted(set(eos))

    def prompt_tokens(self, messages):
        """Chat messages -> prompt token ids, through the chat template when the model has one."""
        if getattr(self.tokenizer, "chat_template", None):
            ids = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
            return list(ids["input_ids"] if isinstance(ids, dict) or hasattr(ids, "keys") else ids)
        text = "\n\n".join(m["content"] for m in messages) + "\n\n"
        return self.tokenizer(text, add_special_tokens=True)["input_ids"]

    def decode(self, tokens):
        return self.tokenizer.decode(tokens, skip_special_tokens=True)

    @property
    def backtick_ids(self):
        if not hasattr(self, "_backtick_ids"):
            vocab = self.tokenizer.convert_ids_to_tokens(list(range(len(self.tokenizer))))
            self._backtick_ids = {i for i, t in enumerate(vocab) if t and "`" in t}
        return self._backtick_ids

    def finish_reason(self, prefix, toks, params):
        """Why a completion of `prefix` ends at its last token `toks[-1]` ("eos", "stop", or "length"
        at params.max_new_tokens), or None if it goes on."""
        tok = toks[-1]
        if tok in self.eos_ids and not params.ignore_eos:
            return "eos"
        if params.stop and self._hit_stop(toks, params.stop):
            return "stop"
        if params.stop_fn and tok in self.backtick_ids and params.stop_fn(prefix, toks):
            return "stop"
        return "length" if len(toks) >= params.max_new_tokens else None

    def _hit_stop(self, toks, stops):
        tail = self.tokenizer.decode(toks[-16:], skip_special_tokens=True)
        return any(s in tail for s in stops)


# --- choosing tokens -----------------------------------------------------------------------------

# The nucleus is looked for among this many most likely tokens (a full sort only when they hold
# less than top_p of the mass): a top-k over a 152k vocabulary costs a pass over the logits, and a
# larger k costs more (at 128 rows: k=64 25 ms, k=1024 twice that).
NUCLEUS_CANDIDATES = 64


# Logits are scanned in blocks of this many tokens for the top candidates (top_candidates).
BLOCK = 128


def _log_normalizers(logits, inverse_temperature: float):
    """Per row, the log of the softmax denominators of the logits and of logits x 1/temperature (fp32),
    and the maximum of each block of BLOCK logits (None unless the vocabulary is whole blocks)."""
    x = logits.float()
    top = x.amax(-1, keepdim=True)
    raw = top + (x - top).exp().sum(-1, keepdim=True).log()
    tempered = top * inverse_temperature + ((x - top) * inverse_temperature).exp().sum(-1, keepdim=True).log()
    rows, vocab = logits.shape
    blocks = logits.view(rows, vocab // BLOCK, BLOCK).amax(-1) if vocab % BLOCK == 0 else None
    return raw[:, 0], tempered[:, 0], blocks


# The same reductions fused into one pass over the logits by torch.compile: on a 2-core CPU at
# 128 rows x 152k tokens 15 ms against 150 ms eager (each eager op is a pass over 78 MB). Compiled
# once per process (about 20 s, then cached on disk by inductor), so only for large batches; a
# machine where it cannot compile (no C++ compiler) stays on the eager one.
FUSE_MIN_ELEMENTS = 4_000_000
_fused = None


def log_normalizers(logits, inverse_temperature=1.0):
    global _fused
    if logits.numel() >= FUSE_MIN_ELEMENTS and _fused is not False:
        try:
            if _fused is None:
                _fused = torch.compile(_log_normalizers, dynamic=True)
            return _fused(logits, inverse_temperature)
        except Exception:  # any compile failure: the eager reductions give the same values
            _fused = False
    return _log_normalizers(logits, inverse_temperature)


def top_candidates(logits, k, blocks=None):
    """(values, indices) of each row's k largest logits, largest first, as logits.topk(k) (ties may
    come in another order). With `blocks` (each BLOCK's maximum), only the k blocks with the largest
    maxima are searched: they hold the top k. A top-k over a 152k vocabulary at 128 rows took 22 ms
    against 10 ms for the two small ones."""
    if blocks is None or k > blocks.shape[1]:
        return logits.topk(k, dim=-1)
    rows = logits.shape[0]
    chosen = blocks.topk(k, dim=-1).indices
    parts = logits.view(rows, -1, BLOCK).gather(1, chosen[:, :, None].expand(-1, -1, BLOCK)).reshape(rows, -1)
    values, at = parts.topk(k, dim=-1)
    indices = (chosen[:, :, None] * BLOCK + torch.arange(BLOCK, device=logits.device)).reshape(rows, -1)
    return values, indices.gather(1, at)


def _nucleus(logits, params, inverse_t, tempered_norm, blocks):
    """The top-p distribution at the temperature, as groups (rows, weights, ids): for those rows
    (indices), unnormalised weights over candidate token ids, zero outside the nucleus (ids None:
    over the whole vocabulary, in order). Most rows' nucleus lies in their NUCLEUS_CANDIDATES most
    likely tokens; the rows whose does not are sorted whole, apart."""
    everything = torch.arange(logits.shape[0], device=logits.device)
    if params.top_p >= 1.0:
        return [(everything, (logits.float() * inverse_t - tempered_norm[:, None]).exp(), None)]
    top, ids = top_candidates(logits, min(NUCLEUS_CANDIDATES, logits.shape[-1]), blocks)
    top = (top.float() * inverse_t - tempered_norm[:, None]).exp()
    wide = top.sum(dim=-1) < params.top_p
    groups = [(everything, top, ids)]
    if bool(wide.any()):
        rows = wide.nonzero()[:, 0]
        narrow = (~wide).nonzero()[:, 0]
        full, order = (logits[rows].float() * inverse_t - tempered_norm[rows, None]).exp().sort(dim=-1, descending=True)
        groups = [(narrow, top[narrow], ids[narrow]), (rows, full, order)]
    # keep the token that crosses top_p
    return [(rows, w.masked_fill(w.cumsum(dim=-1) - w > params.top_p, 0.0), i) for rows, w, i in groups if len(rows)]


def sample_tokens(logits, params, uniforms):
    """Next tokens for rows of logits and their log-probs under the raw distribution: greedy, or a
    sample at the temperature from the top-p nucleus, by inverting the cumulative distribution
    with one uniform draw per row (no multinomial over the vocabulary)."""
    inverse_t = 1.0 / params.temperature if params.temperature > 0 else 1.0
    raw_norm, tempered_norm, blocks = log_normalizers(logits, inverse_t)
    if params.temperature <= 0:
        tokens = logits.argmax(dim=-1)
    else:
        tokens = torch.empty(logits.shape[0], dtype=torch.long, device=logits.device)
        for rows, weights, ids in _nucleus(logits, params, inverse_t, tempered_norm, blocks):
            picked = _inverse_cdf(weights, uniforms[rows])
            tokens[rows] = picked if ids is None else ids.gather(1, picked[:, None])[:, 0]
    return tokens, logits.gather(1, tokens[:, None])[:, 0].float() - raw_norm


def _inverse_cdf(weights, uniforms):
    """One sample per row of non-negative (unnormalised) weights: the first index whose cumulative
    weight exceeds the row's uniform draw scaled to the row's total (zero weights are never chosen)."""
    cum = weights.cumsum(dim=-1)
    u = uniforms.to(cum.dtype)[:, None] * cum[:, -1:]
    return torch.searchsorted(cum, u, right=True)[:, 0].clamp_(max=weights.shape[-1] - 1)
