"""The value model: a decoder LM whose LM head is replaced by one linear output + sigmoid per token,
predicting at every token P(the finished program passes its tests).

Built on transformers' `AutoModelForTokenClassification(num_labels=1)` (head dropout 0). Only the
head and the last N decoder layers train; a checkpoint holds just those tensors (safetensors) and a
small config naming the base model, so a 14B value model ships as a delta: loading = base + delta.
"""

import hashlib
import json
import os

import torch

from engine.policy import ModelError, pick_device, pick_dtype, quiet_transformers, resolve_model

DELTA_WEIGHTS = "delta.safetensors"
DELTA_CONFIG = "value_config.json"


class ValueModelError(ModelError):
    """A value checkpoint that cannot be used (missing, or made for another base)."""


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


def trainable_names(model, last_layers):
    """Parameter names of the head and the last N decoder layers."""
    layers = decoder_layers(model)
    n = len(layers)
    if not 0 <= last_layers <= n:
        raise ValueError(f"last_layers must be between 0 and {n}, not {last_layers}")
    keep = {id(p) for layer in list(layers)[n - last_layers:] for p in layer.parameters()}
    keep |= {id(p) for p in head_module(model)[1].parameters()}
    return [name for name, p in model.named_parameters() if id(p) in keep]


def base_fingerprint(model, tokenizer):
    """Identifies a base model: its config's shape and its input embeddings' first rows, and the
    tokenizer's vocabulary. A delta only loads onto the base it was trained from."""
    cfg = model.config
    shape = {k: getattr(cfg, k, None) for k in ("model_type", "hidden_size", "num_hidden_layers",
                                                "num_attention_heads", "vocab_size")}
    emb = model.get_input_embeddings().weight[:8].detach().float().cpu().numpy().round(4).tobytes()
    vocab = json.dumps(sorted(tokenizer.get_vocab().items())[:2000]).encode()
    h = hashlib.sha256(json.dumps(shape, sort_keys=True).encode() + emb + vocab).hexdigest()[:16]
    return h


class ValueModel:
    """Token-level value head on a causal LM backbone."""

    def __init__(self, model, tokenizer, base, last_layers):
        self.model, self.tokenizer = model, tokenizer
        self.base, self.last_layers = base, last_layers
        self.device = next(model.parameters()).device
        self.tokens_scored = 0

    # -- construction ---------------------------------------------------------------------------

    @classmethod
    def from_base(cls, base, last_layers=12, dtype="auto", device="auto"):
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
        except OSError as exc:
            raise ModelError(f"cannot load base model {base!r}: {str(exc).splitlines()[0]}") from None
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        model.config.pad_token_id = tokenizer.pad_token_id
        model.to(device).eval()
        vm = cls(model, tokenizer, base, last_layers)
        vm.freeze()
        return vm

    @classmethod
    def load(cls, path, base=None, dtype="auto", device="auto"):
        """Base + delta. `base` overrides the base named in the checkpoint (same weights, moved)."""
        from safetensors.torch import load_file
        cfg_path = os.path.join(path, DELTA_CONFIG)
        if not os.path.exists(cfg_path):
            raise ValueModelError(f"no value model at {path} (missing {DELTA_CONFIG})")
        with open(cfg_path) as f:
            cfg = json.load(f)
        vm = cls.from_base(base or cfg["base"], cfg["last_layers"], dtype, device)
        found = base_fingerprint(vm.model, vm.tokenizer)
        if found != cfg["base_fingerprint"]:
            raise ValueModelError(f"value checkpoint {path} was trained on base {cfg['base']!r} "
                                  f"(fingerprint {cfg['base_fingerprint']}), not on {base or cfg['base']!r} "
                                  f"(fingerprint {found})")
        delta = load_file(os.path.join(path, DELTA_WEIGHTS), device=str(vm.device))
        missing = set(trainable_names(vm.model, vm.last_layers)) - set(delta)
        if missing:
            raise ValueModelError(f"value checkpoint {path} lacks {len(missing)} tensors, e.g. {sorted(missing)[0]}")
        vm.model.load_state_dict(delta, strict=False)
        return vm

    def freeze(self):
        names = set(trainable_names(self.model, self.last_layers))
        for name, p in self.model.named_parameters():
            p.requires_grad_(name in names)

    def save(self, path, extra=None):
        """Writes only the trained tensors and the config that names the base."""
        from safetensors.torch import save_file
        os.makedirs(path, exist_ok=True)
        params = dict(self.model.named_parameters())
        delta = {n: params[n].detach().contiguous().cpu() for n in trainable_names(self.model, self.last_layers)}
        tmp = os.path.join(path, f".{DELTA_WEIGHTS}.tmp")
        save_file(delta, tmp)
        os.replace(tmp, os.path.join(path, DELTA_WEIGHTS))
        cfg = {"base": self.base, "last_layers": self.last_layers,
               "base_fingerprint": base_fingerprint(self.model, self.tokenizer),
               "model_type": self.model.config.model_type, **(extra or {})}
        with open(os.path.join(path, DELTA_CONFIG), "w") as f:
            json.dump(cfg, f, indent=1)

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

    @torch.inference_mode()
    def final_values(self, prefix, continuations):
        """The value at the last token of prefix + c for each continuation c: the shared prefix is
        run once and every continuation reads its KV cache, all in one batch (right padding)."""
        from transformers import DynamicCache
        prefix, continuations = list(prefix), [list(c) for c in continuations]
        if not prefix or not all(continuations):
            return [v[-1] for v in self.values([prefix + c for c in continuations])]
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
        last = out.last_hidden_state[torch.arange(k), torch.tensor([len(c) - 1 for c in continuations])]
        return self._head(last).tolist()

    def scorer(self):
        return IncrementalScorer(self)


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
