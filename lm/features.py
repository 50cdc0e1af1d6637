"""The critic's features, recorded while the policy samples: each completion's final (normed)
hidden state averaged over its tokens (HFPolicy.sample_many(..., features=True)). A head-only critic
on this very model reads nothing else besides the mean token log-prob, so ranking and training it
need no second forward pass. Stored as text in sample rows: fp16, base64 (1.2 KB for 896 numbers).

`model_signature` says which model made them: a critic uses them only when its base matches."""

import base64
from typing import TypedDict

import torch

from lm.models import vocab_fingerprint

# How the features were pooled; a row records it, a reader checks it.
FEATURE_KIND = "mean_final_hidden"
SHAPE_KEYS = ("model_type", "hidden_size", "num_hidden_layers", "num_attention_heads", "vocab_size")


class BaseSignature(TypedDict):
    """Which model this is, cheaply (model_signature)."""
    shape: dict            # the SHAPE_KEYS of its config
    vocab: str             # the tokenizer's fingerprint
    embedding_probe: list[float]


class FeatureSource(TypedDict):
    """A sample row's `features` field: how its candidates' features were made."""
    kind: str              # FEATURE_KIND
    signature: BaseSignature


def model_signature(model, tokenizer) -> BaseSignature:
    """The architecture and vocabulary exactly, and the weights through a probe of 256 input-embedding
    values (rows spread over the vocabulary), for a tolerant comparison: the same model in another
    dtype or quantization still matches (valuemodel.model.compare_base)."""
    shape = {k: getattr(model.config, k, None) for k in SHAPE_KEYS}
    weight = model.get_input_embeddings().weight.detach()
    rows = torch.linspace(0, weight.shape[0] - 1, 32).long()
    probe = weight[rows, :8].float().cpu().flatten().tolist()
    return {"shape": shape, "vocab": vocab_fingerprint(tokenizer), "embedding_probe": [round(x, 6) for x in probe]}


def feature_source(policy) -> FeatureSource:
    return {"kind": FEATURE_KIND, "signature": model_signature(policy.model, policy.tokenizer)}


def encode_features(vector) -> str:
    return base64.b64encode(vector.detach().to("cpu", torch.float16).numpy().tobytes()).decode("ascii")


def decode_features(text) -> torch.Tensor:
    """A stored feature vector back as fp32; ValueError if the text is not one."""
    raw = base64.b64decode(text.encode("ascii"), validate=True)
    if not raw or len(raw) % 2:
        raise ValueError("not an fp16 feature vector")
    return torch.frombuffer(bytearray(raw), dtype=torch.float16).float()
