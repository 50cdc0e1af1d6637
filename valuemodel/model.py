"""The value model: a decoder LM whose LM head is replaced by one linear output + sigmoid per token,
predicting at every token P(the finished program passes its tests).

Built on transformers' `AutoModelForTokenClassification(num_labels=1)` (head dropout 0). Only the
head and the last N decoder layers train; a checkpoint holds just those tensors (safetensors) and a
small config naming the base model, so a 14B value model ships as a delta: loading = base + delta.
"""

import hashlib
import json
import math
import os
import warnings
from contextlib import contextmanager
from typing import TypedDict

import torch

from common.cli import ConfigError
from common.store import atomic_path, schema_error, write_json_atomic
from lm.features import FEATURE_KIND, SHAPE_KEYS, BaseSignature, model_signature
from lm.models import ModelError, pick_device, pick_dtype, quiet_transformers, resolve_model, vocab_fingerprint

DELTA_WEIGHTS = "delta.safetensors"
DELTA_CONFIG = "value_config.json"


def checkpoint_digest(path):
    """A short hash of a saved value model (None if `path` is not one): its weights and the config
    that reads them, so that a run records which model it was made with, not just where it was. The
    config's "train" record (how it was trained) is left out: describing that never changes a value."""
    files = [os.path.join(path, name) for name in (DELTA_CONFIG, DELTA_WEIGHTS)]
    if not all(os.path.isfile(f) for f in files):
        return None
    try:
        with open(files[0], encoding="utf-8") as fh:
            cfg = dict(json.load(fh))
    except (OSError, ValueError, TypeError):
        return None  # a damaged config: loading it says what is wrong
    h = hashlib.sha256(json.dumps({k: v for k, v in cfg.items() if k != "train"}, sort_keys=True).encode())
    with open(files[1], "rb") as fh:
        h.update(fh.read())
    return h.hexdigest()[:16]


class _ValueConfigKeys(TypedDict):
    base: str
    last_layers: int
    base_signature: BaseSignature


class ValueConfig(_ValueConfigKeys, total=False):
    """A value checkpoint's value_config.json (ValueModel.save writes it, read_checkpoint_config
    checks it): the base it is a delta on, and how its values are read."""
    trunk_layers: int | None
    aggregate: str
    logprob_weight: float  # the policy's mean token log-prob's weight in a program's logit (0: not read)
    prompt_format: str     # how another policy's prompt is read (PROMPT_FORMAT)
    model_type: str
    train: dict            # how it was trained (valuemodel.train)


# How a value model with another tokenizer than the policy's reads the policy's prompt: as the text the
# policy rendered it to (its chat template), tokenized by the value model (valuemodel.text_value), the
# way training rows carry it (`prompt_text`).
PROMPT_FORMAT = "policy_text"

# How a finished program's value is read from its per-token values: the last token's (the paper's),
# or the mean logit over the program's tokens (a whole-program average, steadier for ranking).
AGGREGATES = ("last", "mean")


def _logit(v):
    return math.log(max(v, 1e-7) / max(1 - v, 1e-7))


def aggregate_values(values, how="last", mean_logprob=None, logprob_weight=0.0):
    """A program's value from its tokens' values (sigmoid outputs), as `how` says. A checkpoint
    fitted with the policy's log-prob (`logprob_weight` != 0, see valuemodel.train) adds that weight
    times the policy's mean token log-prob of the program to the program's logit."""
    logit = sum(_logit(v) for v in values) / len(values) if how == "mean" else _logit(values[-1])
    if not logprob_weight:
        return 1 / (1 + math.exp(-logit)) if how == "mean" else values[-1]
    if mean_logprob is None:
        raise MissingLogprob()
    return 1 / (1 + math.exp(-(logit + logprob_weight * mean_logprob)))


class ValueModelError(ModelError):
    """A value checkpoint that cannot be used (missing, or made for another base)."""


class MissingLogprob(ValueModelError):
    """A checkpoint fitted with the policy's log-prob, read without it: it refuses to guess."""

    def __init__(self):
        super().__init__("this value model reads the policy's mean token log-prob of a program, and none was given")


def decoder_layers(model):
    base = model.base_model
    layers = getattr(base, "layers", None) or getattr(base, "h", None)
    if layers is None:
        raise ValueModelError(f"cannot find the decoder layers of {type(base).__name__}")
    return layers


def head_module(model):
    for name in ("score", "classifier"):
        if hasattr(model, name):
            return name, getattr(model, name)
    raise ValueModelError(f"{type(model).__name__} has no token-classification head")


def truncate_trunk(model, trunk_layers):
    """Keep only the first `trunk_layers` decoder layers (the final norm and the head then read the
    hidden state after that layer): a cheaper critic whose features may rank better than the last
    layer's. None or the full depth: no change."""
    layers = decoder_layers(model)
    if trunk_layers is None or trunk_layers == len(layers):
        return
    if not 1 <= trunk_layers <= len(layers):
        raise ConfigError(f"trunk_layers must be between 1 and {len(layers)}, not {trunk_layers}")
    model.base_model.layers = torch.nn.ModuleList(list(layers)[:trunk_layers])
    model.config.num_hidden_layers = trunk_layers
    if isinstance(getattr(model.config, "layer_types", None), list):
        model.config.layer_types = model.config.layer_types[:trunk_layers]


def trainable_names(model, last_layers):
    """Parameter names of the head and the last N decoder layers."""
    layers = decoder_layers(model)
    n = len(layers)
    if not 0 <= last_layers <= n:
        raise ConfigError(f"last_layers must be between 0 and {n}, not {last_layers}")
    keep = {id(p) for layer in list(layers)[n - last_layers:] for p in layer.parameters()}
    keep |= {id(p) for p in head_module(model)[1].parameters()}
    return [name for name, p in model.named_parameters() if id(p) in keep]


def compare_base(expected, found):
    """None when `found` is the base `expected` describes (up to dtype rounding), else a note:
    "requantized ..." (same weights up to quantization noise: a warning) or a refusal message."""
    if not {"shape", "vocab", "embedding_probe"} <= set(found):
        return "refuse: no model signature"
    if expected["shape"] != found["shape"]:
        diff = {k: (expected["shape"].get(k), found["shape"].get(k)) for k in SHAPE_KEYS
                if expected["shape"].get(k) != found["shape"].get(k)}
        return f"refuse: architecture differs ({', '.join(f'{k} {a} vs {b}' for k, (a, b) in diff.items())})"
    if expected["vocab"] != found["vocab"]:
        return "refuse: vocabulary differs"
    a, b = torch.tensor(expected["embedding_probe"]), torch.tensor(found["embedding_probe"])
    scale = a.std().item() or 1.0
    if (a - b).abs().max().item() <= 0.02 * scale:  # bf16 keeps ~3 significant digits
        return None
    corr = torch.corrcoef(torch.stack([a, b]))[0, 1].item()
    if corr >= 0.9:
        return f"requantized: weights match with correlation {corr:.3f} (another quantization or export of the same model)"
    return f"refuse: same architecture and vocabulary but other weights (embedding correlation {corr:.2f})"


def read_checkpoint_config(path):
    """A value checkpoint's config, checked (cheap: before any model loads); ValueModelError if it
    is missing, unreadable, from an older forkcode or damaged."""
    cfg_path = os.path.join(path, DELTA_CONFIG)
    if not os.path.exists(cfg_path):
        raise ValueModelError(f"no value model at {path} (missing {DELTA_CONFIG})")
    try:
        with open(cfg_path, encoding="utf-8") as f:
            cfg = json.load(f)
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ValueModelError(f"value checkpoint {path}: {DELTA_CONFIG} is unreadable ({str(exc).splitlines()[0][:100]})") from None
    if not isinstance(cfg, dict) or not {"base", "last_layers"} <= set(cfg):
        raise ValueModelError(f"value checkpoint {path}: {DELTA_CONFIG} lacks 'base' or 'last_layers' "
                              "(not a forkcode value checkpoint, or a damaged one)")
    if "base_signature" not in cfg:
        raise ValueModelError(f"value checkpoint {path} has no base_signature in {DELTA_CONFIG} "
                              "(made by an older forkcode, or not a forkcode checkpoint)")
    problem = schema_error(cfg, ValueConfig, DELTA_CONFIG)
    if problem:
        raise ValueModelError(f"value checkpoint {path}: {problem} (a damaged {DELTA_CONFIG})")
    trunk = cfg.get("trunk_layers")
    if trunk is not None and (type(trunk) is not int or trunk < 1):
        raise ValueModelError(f"value checkpoint {path}: trunk_layers must be a positive integer or null, not {trunk!r}")
    if cfg.get("aggregate", "last") not in AGGREGATES:
        raise ValueModelError(f"value checkpoint {path}: unknown aggregate {cfg['aggregate']!r} in {DELTA_CONFIG}")
    weight = cfg.get("logprob_weight", 0.0)
    if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not math.isfinite(weight):
        raise ValueModelError(f"value checkpoint {path}: logprob_weight must be a number, not {weight!r}")
    if weight and cfg.get("aggregate", "last") != "mean":
        raise ValueModelError(f"value checkpoint {path}: logprob_weight needs aggregate mean")
    if cfg.get("prompt_format", PROMPT_FORMAT) != PROMPT_FORMAT:
        raise ValueModelError(f"value checkpoint {path}: unknown prompt_format {cfg['prompt_format']!r} in {DELTA_CONFIG}")
    return cfg


class ValueModel:
    """Token-level value head on a causal LM backbone."""

    def __init__(self, model, tokenizer, base, last_layers, trunk_layers=None):
        self.model, self.tokenizer = model, tokenizer
        self.base, self.last_layers = base, last_layers
        # The full base's signature, taken before any truncation: a delta names its whole base.
        self.signature = model_signature(model, tokenizer)
        truncate_trunk(model, trunk_layers)
        self.trunk_layers = trunk_layers if trunk_layers != self.signature["shape"]["num_hidden_layers"] else None
        self.aggregate = "last"
        self.logprob_weight = 0.0  # weight of the policy's mean token log-prob in a program's value
        self.device = next(model.parameters()).device
        self.tokens_scored = 0
        self._shared = {}  # id(policy model) -> whether this is a head on that very model

    # -- construction ---------------------------------------------------------------------------

    @classmethod
    def from_base(cls, base, last_layers=12, dtype="auto", device="auto", trunk_layers=None):
        from transformers import AutoConfig, AutoModelForTokenClassification, AutoTokenizer
        location = resolve_model(base)
        device = pick_device(device)
        quiet_transformers()  # the "lm_head unexpected, score missing" load report is expected here
        try:
            config = AutoConfig.from_pretrained(location, num_labels=1)
            config.classifier_dropout = 0.0
            tokenizer = AutoTokenizer.from_pretrained(location)
            model = AutoModelForTokenClassification.from_pretrained(location, config=config,
                                                                    dtype=pick_dtype(dtype, device))
        except (OSError, ValueError) as exc:  # transformers' ValueError: a config it does not know
            raise ModelError(f"cannot load base model {base!r}: {str(exc).splitlines()[0]}") from None
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        model.config.pad_token_id = tokenizer.pad_token_id
        # The new head's initialisation from a fixed seed, not the global RNG: loading (e.g. a GGUF's
        # first conversion) draws from that RNG, so the same training run started differently.
        head = head_module(model)[1]
        with torch.no_grad():
            head.weight.normal_(0.0, getattr(model.config, "initializer_range", 0.02),
                                generator=torch.Generator(device=head.weight.device).manual_seed(0))
            if getattr(head, "bias", None) is not None:
                head.bias.zero_()
        model.to(device).eval()
        vm = cls(model, tokenizer, base, last_layers, trunk_layers)
        vm.freeze()
        return vm

    @classmethod
    def load(cls, path, base=None, dtype="auto", device="auto", fallback_base=None):
        """Base + delta. `base` overrides the base named in the checkpoint (same weights, moved);
        `fallback_base` is tried when the named base cannot be loaded here (a hub id offline: the
        policy's own copy of the same model, e.g. its GGUF)."""
        from safetensors.torch import load_file
        cfg = read_checkpoint_config(path)
        vm = note = None
        if not base and fallback_base and not os.path.exists(cfg["base"]):
            # A hub id (or a moved path): the policy's local copy first, no network, if it is the same model.
            candidate = cls.from_base(fallback_base, cfg["last_layers"], dtype, device, cfg.get("trunk_layers"))
            note = compare_base(cfg["base_signature"], candidate.signature)
            if not (note or "").startswith("refuse"):
                vm, base = candidate, fallback_base
                vm.base = cfg["base"]
        if vm is None:
            try:
                vm = cls.from_base(base or cfg["base"], cfg["last_layers"], dtype, device, cfg.get("trunk_layers"))
            except ModelError:
                if note:  # the policy's copy was refused and the named base is not here
                    raise ValueModelError(f"value checkpoint {path} was trained on base {cfg['base']!r} (not loadable "
                                          f"here), not on {fallback_base!r}: {note[len('refuse: '):]}") from None
                raise
            note = compare_base(cfg["base_signature"], vm.signature)
        if note and note.startswith("refuse"):
            raise ValueModelError(f"value checkpoint {path} was trained on base {cfg['base']!r}, "
                                  f"not on {base or cfg['base']!r}: {note[len('refuse: '):]}")
        if note:
            warnings.warn(f"value checkpoint {path}: base {base or cfg['base']!r} {note[len('requantized: '):]}",
                          stacklevel=2)
        try:
            delta = load_file(os.path.join(path, DELTA_WEIGHTS), device=str(vm.device))
        except Exception as exc:
            raise ValueModelError(f"value checkpoint {path}: {DELTA_WEIGHTS} is missing or damaged "
                                  f"({str(exc).splitlines()[0][:100]})") from None
        missing = set(trainable_names(vm.model, vm.last_layers)) - set(delta)
        if missing:
            raise ValueModelError(f"value checkpoint {path} lacks {len(missing)} tensors, e.g. {sorted(missing)[0]}")
        vm.model.load_state_dict(delta, strict=False)
        vm.aggregate = cfg.get("aggregate", "last")
        vm.logprob_weight = cfg.get("logprob_weight", 0.0)
        return vm

    # -- the frozen bottom and the trained top (training reads the bottom once: valuemodel/train.py)

    @contextmanager
    def _only_layers(self, bottom):
        """Run the backbone with just its frozen bottom layers (no final norm: the output is the
        hidden state entering the first trained layer) or just its trained top layers."""
        base = self.model.base_model
        layers, norm = base.layers, base.norm
        n = len(layers) - self.last_layers
        try:
            if bottom:
                base.layers, base.norm = torch.nn.ModuleList(list(layers)[:n]), torch.nn.Identity()
            else:
                base.layers = torch.nn.ModuleList(list(layers)[n:])
            yield base
        finally:
            base.layers, base.norm = layers, norm

    @torch.no_grad()
    def bottom_hidden(self, input_ids, attention_mask=None, past_key_values=None):
        """Hidden states entering the first trained layer (they do not change while training), and
        the bottom layers' KV cache (so responses can continue a shared prompt)."""
        with self._only_layers(bottom=True) as base:
            out = base(input_ids=input_ids, attention_mask=attention_mask, past_key_values=past_key_values,
                       use_cache=past_key_values is not None)
        return out.last_hidden_state, out.past_key_values

    def top_logits(self, hidden, attention_mask=None, final=False):
        """Per-token logits (before the sigmoid) from the hidden states bottom_hidden gave, or, with
        `final`, from the backbone's final output (head only: N = 0 and the final norm applied)."""
        head = head_module(self.model)[1]
        if final:
            return head(hidden.to(self.trainable_dtype)).float()[..., 0]
        with self._only_layers(bottom=False) as base:
            out = base(inputs_embeds=hidden.to(self.trainable_dtype), attention_mask=attention_mask, use_cache=False)
        return head(out.last_hidden_state.to(self.trainable_dtype)).float()[..., 0]

    @property
    def trainable_dtype(self):
        return head_module(self.model)[1].weight.dtype

    def upcast_trainable(self):
        """The trained layers and head in fp32 (the frozen bottom keeps its dtype, e.g. bf16)."""
        layers = decoder_layers(self.model)
        for module in list(layers)[len(layers) - self.last_layers:] + [head_module(self.model)[1]]:
            module.float()

    def freeze(self):
        names = set(trainable_names(self.model, self.last_layers))
        for name, p in self.model.named_parameters():
            p.requires_grad_(name in names)

    def save(self, path, extra=None, dtype=None, tensors=None):
        """Writes only the trained tensors (in `dtype`, default the model's; `tensors`: these instead
        of the model's own, e.g. gathered from shards) and the config that names the base."""
        from safetensors.torch import save_file
        os.makedirs(path, exist_ok=True)
        params = tensors or dict(self.model.named_parameters())
        delta = {n: params[n].detach().to(dtype or params[n].dtype).contiguous().cpu()
                 for n in trainable_names(self.model, self.last_layers)}
        with atomic_path(os.path.join(path, DELTA_WEIGHTS)) as tmp:
            save_file(delta, tmp)
        cfg: ValueConfig = {"base": self.base, "last_layers": self.last_layers, "trunk_layers": self.trunk_layers,
                            "aggregate": self.aggregate, "logprob_weight": self.logprob_weight,
                            "prompt_format": PROMPT_FORMAT, "base_signature": self.signature,
                            "model_type": self.model.config.model_type, **(extra or {})}
        write_json_atomic(os.path.join(path, DELTA_CONFIG), cfg)

    # -- scoring --------------------------------------------------------------------------------

    def _head(self, hidden):
        return torch.sigmoid(head_module(self.model)[1](hidden).float()[..., 0])

    @torch.inference_mode()
    def values(self, sequences):
        """Per-token values for a batch of token sequences, in one forward pass (right padding;
        no LM head is ever computed). Returns a list of lists, one value per token."""
        pad = self.tokenizer.pad_token_id
        longest = max(len(s) for s in sequences)
        ids = torch.tensor([list(s) + [pad] * (longest - len(s)) for s in sequences], device=self.device)
        mask = torch.tensor([[1] * len(s) + [0] * (longest - len(s)) for s in sequences], device=self.device)
        self.tokens_scored += int(mask.sum())
        logits = self.model(input_ids=ids, attention_mask=mask).logits.float()[..., 0]
        v = torch.sigmoid(logits)
        return [v[i, :len(s)].tolist() for i, s in enumerate(sequences)]

    def program_value(self, values, mean_logprob=None):
        """A finished program's value from its tokens' values, as this checkpoint reads it."""
        return aggregate_values(values, self.aggregate, mean_logprob, self.logprob_weight)

    @torch.inference_mode()
    def final_values(self, prefix, continuations, mean_logprobs=None):
        """Each continuation c's value as a finished program (prefix + c, read as `self.aggregate`
        says: at its last token, or the mean over c's tokens; plus the policy's mean token log-prob
        of c, `mean_logprobs`, for a checkpoint fitted with it): the shared prefix is run once and
        every continuation reads its KV cache, all in one batch (right padding)."""
        from transformers import DynamicCache
        prefix, continuations = list(prefix), [list(c) for c in continuations]
        lps = list(mean_logprobs) if mean_logprobs is not None else [None] * len(continuations)
        if not prefix or not all(continuations):
            return [self.program_value(v[len(prefix):] or v[-1:], lp)
                    for v, lp in zip(self.values([prefix + c for c in continuations]), lps)]
        pad = self.tokenizer.pad_token_id
        cache = DynamicCache()
        self.model.base_model(input_ids=torch.tensor([prefix], device=self.device), past_key_values=cache,
                              use_cache=True)
        k, longest = len(continuations), max(len(c) for c in continuations)
        cache.batch_repeat_interleave(k)
        ids = torch.tensor([c + [pad] * (longest - len(c)) for c in continuations], device=self.device)
        mask = torch.tensor([[1] * (len(prefix) + len(c)) + [0] * (longest - len(c)) for c in continuations],
                            device=self.device)
        out = self.model.base_model(input_ids=ids, attention_mask=mask, past_key_values=cache, use_cache=True)
        self.tokens_scored += len(prefix) + sum(len(c) for c in continuations)
        head = head_module(self.model)[1]
        if self.aggregate == "mean":
            keep = mask[:, len(prefix):].float()
            logits = (head(out.last_hidden_state).float()[..., 0] * keep).sum(1) / keep.sum(1)
        else:
            last = out.last_hidden_state[torch.arange(k), torch.tensor([len(c) - 1 for c in continuations])]
            logits = head(last).float()[..., 0]
        if self.logprob_weight:
            if any(lp is None for lp in lps):
                raise MissingLogprob()
            logits = logits + self.logprob_weight * torch.tensor(lps, device=logits.device)
        return torch.sigmoid(logits).tolist()

    def heads_features_of(self, source):
        """True when this is a head alone on the whole trunk of the model that recorded these features
        (lm.features; `source` is the sample row's FeatureSource)."""
        return (isinstance(source, dict) and source.get("kind") == FEATURE_KIND and self.last_layers == 0
                and self.trunk_layers is None and compare_base(self.signature, source.get("signature") or {}) is None)

    def reads_features(self, source):
        """True when the recorded features are exactly what this value model reads: heads_features_of,
        and it reads a program's mean."""
        return self.aggregate == "mean" and self.heads_features_of(source)

    def feature_logits(self, features):
        """The head's logit for each recorded feature vector (rows of `features`), in fp32: the mean of
        a linear head's per-token logits is the head of the mean state."""
        head = head_module(self.model)[1]
        bias = head.bias.float() if getattr(head, "bias", None) is not None else None
        return torch.nn.functional.linear(features.float().to(self.device), head.weight.float(), bias)[:, 0]

    @torch.inference_mode()
    def values_from_features(self, features, mean_logprobs=None):
        """final_values of programs from their recorded features (check reads_features first): no
        forward pass at all."""
        logits = self.feature_logits(torch.stack(list(features)))
        if self.logprob_weight:
            if mean_logprobs is None or any(lp is None for lp in mean_logprobs):
                raise MissingLogprob()
            logits = logits + self.logprob_weight * torch.tensor(mean_logprobs, device=logits.device)
        return torch.sigmoid(logits).tolist()

    def scorer(self):
        return IncrementalScorer(self)

    def shares_trunk_with(self, policy):
        """True when this value model is a head alone (N = 0) on exactly the policy's model, or on its
        first layers (trunk_layers): same vocabulary, and every trunk tensor the policy's, same dtype
        and values (compared once, then remembered)."""
        model = getattr(policy, "model", None)
        if self.last_layers != 0 or not isinstance(model, torch.nn.Module):
            return False
        key = id(model)
        if key not in self._shared:
            trunk, theirs = self.model.base_model, getattr(model, "base_model", None)
            other = dict(theirs.named_parameters()) if isinstance(theirs, torch.nn.Module) else {}
            self._shared[key] = (type(trunk) is type(theirs)
                                 and vocab_fingerprint(self.tokenizer) == vocab_fingerprint(policy.tokenizer)
                                 and all(n in other and p.dtype == other[n].dtype and torch.equal(p, other[n])
                                         for n, p in trunk.named_parameters()))
        return self._shared[key]


class IncrementalScorer:
    """Keeps the value model's KV cache for one growing sequence: `extend(tokens)` returns the
    values of just the new tokens, at the cost of those tokens alone."""

    def __init__(self, vm, cache=None, length=0):
        from transformers import DynamicCache
        self.vm = vm
        self.cache = cache if cache is not None else DynamicCache()
        self.length = length

    @torch.inference_mode()
    def extend(self, tokens):
        if not tokens:
            return []
        ids = torch.tensor([list(tokens)], device=self.vm.device)
        out = self.vm.model.base_model(input_ids=ids, past_key_values=self.cache, use_cache=True)
        self.cache = out.past_key_values
        self.length += len(tokens)
        self.vm.tokens_scored += len(tokens)
        return self.vm._head(out.last_hidden_state)[0].tolist()

    def fork(self):
        """An independent copy (for branching searches)."""
        import copy
        return IncrementalScorer(self.vm, copy.deepcopy(self.cache), self.length)
