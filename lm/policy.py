"""The transformers policy: `HFPolicy` samples code from a causal LM with per-token log-probs and
KV-cache reuse. A `PrefixState` holds a token sequence and the KV cache of (a prefix of) it, so
rollouts that branch from any prefix continue from the cache instead of recomputing it;
`sample_many` samples many prompts in one continuously refilled batch. `load_policy` picks the
backend (this one or lm/vllm_policy.py)."""

import copy

import torch

from common.cli import ConfigError
from lm.kvcache import GrowingCache, Rows
from lm.models import load_causal_lm, pack_linear_weights, use_packed_gqa_attention
from lm.options import BACKENDS, DEFAULT_BATCH_ROWS, DEFAULT_POLICY
from lm.sampling import Completion, PolicyStats, PrefixState, SamplingParams, TokenizerOps, sample_tokens


def load_policy(spec=DEFAULT_POLICY, backend="hf", dtype="auto", device="auto", tensor_parallel_size=1,
                **engine_args):
    """A Policy on the chosen backend: "hf" (transformers, this file) or "vllm" (lm/vllm_policy.py).
    tensor_parallel_size and engine_args are vLLM's; the transformers backend runs on one device."""
    if backend == "hf":
        return HFPolicy(spec, dtype=dtype, device=device)
    if backend == "vllm":
        from lm.vllm_policy import VLLMPolicy
        return VLLMPolicy(spec, dtype=dtype, device=device, tensor_parallel_size=tensor_parallel_size, **engine_args)
    raise ConfigError(f"unknown backend {backend!r}: choose from {', '.join(BACKENDS)}")


class HFPolicy(TokenizerOps):
    """`Policy` on a transformers causal LM."""

    def __init__(self, spec=DEFAULT_POLICY, dtype="auto", device="auto", model=None, tokenizer=None):
        if model is None:  # a model of our own, never trained here: its layers can be made inference-only
            model, tokenizer = load_causal_lm(spec, dtype, device)
            pack_linear_weights(model)
            use_packed_gqa_attention(model)
        self.name = spec or DEFAULT_POLICY
        self.model = model
        self.device = next(model.parameters()).device
        self.stats = PolicyStats()
        self._init_tokenizer(tokenizer, model.generation_config.eos_token_id if model.generation_config else None)

    # -- forward passes ----------------------------------------------------------------------

    def _forward(self, input_ids, cache, attention_mask=None, position_ids=None, last_only=False):
        """Logits and the grown cache. last_only: logits of the last position only (a prefill of
        n tokens would otherwise project all n onto the vocabulary, which sampling never reads)."""
        self.stats.forward_tokens += input_ids.numel()
        self.stats.forward_calls += 1
        out = self.model(input_ids=input_ids, past_key_values=cache, use_cache=True,
                         attention_mask=attention_mask, position_ids=position_ids,
                         logits_to_keep=1 if last_only else 0)
        return out.logits, out.past_key_values

    def _forward_last(self, input_ids, cache, attention_mask=None, position_ids=None):
        """((next-token logits, final normed hidden state) at each row's last position, the grown cache)."""
        (logits, hidden), cache = self.forward_rows(input_ids, cache, attention_mask, position_ids)
        return (logits, hidden[-1]), cache

    def forward_rows(self, input_ids, cache, attention_mask=None, position_ids=None):
        """For engine.batch.Rows: ((next-token logits, the hidden states of every layer) at each
        row's last position, the grown cache). The hidden states are what a head-only value model on
        this same model reads (engine.batch.SharedTrunkValue): the last one (after the final norm),
        or the one after layer N for a critic cut at N layers."""
        self.stats.forward_tokens += input_ids.numel()
        self.stats.forward_calls += 1
        out = self.model(input_ids=input_ids, past_key_values=cache, use_cache=True, attention_mask=attention_mask,
                         position_ids=position_ids, logits_to_keep=1, output_hidden_states=True)
        return (out.logits[:, -1], [h[:, -1] for h in out.hidden_states]), out.past_key_values

    def pick(self, logits, params, uniforms):
        """(next tokens, their log-probs under the raw distribution) for rows of logits (see
        sample_tokens), with one uniform draw per row given."""
        return sample_tokens(logits, params, uniforms)

    def sample_next(self, prefixes, params, seeds):
        """One token and its log-prob for each prefix (each prefilled on its own: the batched search
        steps its rows with forward_rows instead; this serves callers of the Policy protocol)."""
        out = [self._decode_groups(None, [list(p)], 1, SamplingParams(
            max_new_tokens=1, temperature=params.temperature, top_p=params.top_p, seed=seed, ignore_eos=True))[0][0]
            for p, seed in zip(prefixes, seeds)]
        return [c.tokens[0] for c in out], [c.logprobs[0] for c in out]

    @torch.inference_mode()
    def teacher_force(self, prefix, continuation):
        """Log-probs of `continuation` after `prefix` in one forward pass, and a PrefixState that
        caches the whole sequence but its last token (ready for forks anywhere inside it)."""
        from transformers import DynamicCache
        seq = list(prefix) + list(continuation)
        ids = torch.tensor([seq[:-1]], device=self.device) if len(seq) > 1 else None
        cache = DynamicCache()
        logits, cache = self._forward(ids, cache)
        logp = torch.log_softmax(logits[0].float(), dim=-1)
        targets = torch.tensor(seq[1:], device=self.device)
        all_lp = logp.gather(1, targets[:, None])[:, 0].tolist()
        return all_lp[len(prefix) - 1:], PrefixState(seq, cache, len(seq) - 1)

    @torch.inference_mode()
    def sample(self, prefix, n, params, state=None):
        """n completions continuing `prefix`. With a `state` whose tokens start with `prefix`, the
        cached part of the prefix is reused (the state is not modified)."""
        if state is None or state.tokens[:len(prefix)] != list(prefix) or len(prefix) > state.cached + 1:
            return self._decode_groups(None, [list(prefix)], n, params)[0]
        return self.sample_forks(state, [len(prefix)], n, params)[0]

    @torch.inference_mode()
    def sample_forks(self, state, positions, k, params):
        """For each position p, k completions of state.tokens[:p], all decoded in one batch.

        Every row reads its prefix from the one KV cache of the state (sliced, left-padded to a
        common length, masked), so no shared prefix is recomputed: the only prefill is the last
        prefix token of each row.
        """
        for p in positions:
            if not 1 <= p <= state.cached + 1 or p > len(state.tokens):
                raise ValueError(f"fork position {p} outside the cached prefix of {state.cached + 1}")
        return self._decode_groups(state, [state.tokens[:p] for p in positions], k, params)

    @torch.inference_mode()
    def sample_with_state(self, prefix, params, n=1):
        """n completions in one batch, each with the PrefixState of prefix + completion (its own
        slice of the batch's KV cache) for later forks."""
        from transformers import DynamicCache
        (completions,), cache = self._decode_groups(None, [list(prefix)], n, params, keep_cache=True)
        out = []
        for row, completion in enumerate(completions):
            seq = list(prefix) + completion.tokens
            # Rows that ended early were fed on to the end of the batch: only their first
            # len(seq) - 1 cached positions are theirs.
            own = DynamicCache()
            for layer_idx, layer in enumerate(cache.layers):
                own.update(layer.keys[row:row + 1, :, :len(seq) - 1], layer.values[row:row + 1, :, :len(seq) - 1], layer_idx)
            out.append((completion, PrefixState(seq, own, len(seq) - 1)))
        return out

    @torch.inference_mode()
    def extend(self, state, tokens):
        """A new PrefixState for state.tokens + tokens; only the tokens past the state's cache are
        computed (the state is not modified)."""
        seq = list(state.tokens) + list(tokens)
        cache = copy.deepcopy(state.cache)
        extra = cache.get_seq_length() - state.cached
        if extra > 0:
            cache.crop(-extra)
        todo = seq[state.cached:len(seq) - 1]
        if todo:
            _, cache = self._forward(torch.tensor([todo], device=self.device), cache, last_only=True)
        return PrefixState(seq, cache, len(seq) - 1)

    @torch.inference_mode()
    def sample_many(self, requests, max_rows=DEFAULT_BATCH_ROWS, features=False):
        """Completions for many prompts in one continuously refilled batch: `requests` is an iterable
        of (prefix, n, SamplingParams); yields (request index, its n completions) as each request
        finishes. A request is admitted (its prefix prefilled once, its n rows joining the batch)
        whenever the live rows leave room for it, so small searches over many problems keep the
        batch full instead of waiting for each problem's slowest sample. All requests must share
        temperature and top_p; seeds, stops and lengths are per request, and a request's samples
        depend only on its own seed and the rows it shares the batch with. With `features`, each
        Completion carries its mean final hidden state (Completion.features), at the cost of one
        more forward token per completion (its last token)."""
        pending = iter(enumerate(requests))
        live = _Batch(self, features)
        waiting = next(pending, None)
        while waiting is not None or live.live_rows:
            joining, rows = [], live.live_rows
            while waiting is not None and (not rows or rows + waiting[1][1] <= max_rows):
                index, (prefix, n, params) = waiting
                joining.append((index, list(prefix), n, params))
                rows += n
                waiting = next(pending, None)
            if joining:
                live.admit(joining)
            elif waiting is None and 4 * live.live_rows <= 3 * len(live.slots):
                live.compact()  # the last rows: stop feeding the free slots
            yield from live.step()

    def _state_rows(self, state, lengths, k):
        """Rows whose group i (k rows) holds state's first lengths[i] cached tokens, left-padded."""
        longest = max(lengths)
        cache = GrowingCache()
        for layer_idx, layer in enumerate(state.cache.layers):
            keys, values = [], []
            for n in lengths:
                for src, dst in ((layer.keys, keys), (layer.values, values)):
                    part = torch.nn.functional.pad(src[:, :, :n, :], (0, 0, longest - n, 0))
                    dst.append(part.expand(k, -1, -1, -1))
            cache.update(torch.cat(keys), torch.cat(values), layer_idx)
        mask = torch.tensor([[0] * (longest - n) + [1] * n for n in lengths for _ in range(k)], device=self.device)
        return Rows(cache, mask, torch.tensor([n for n in lengths for _ in range(k)], device=self.device))

    def _decode_groups(self, state, prefixes, k, params, keep_cache=False):
        """Sample k completions for each prefix in one batch (lm.kvcache.Rows); rows leave the batch
        as they end.

        With a state, prefix i's first len-1 tokens come from the state's cache; without, the
        single prefix is prefilled here (keep_cache then returns its cache for later forks, every
        row fed on to the end of the batch).
        """
        generator = None
        if params.seed is not None:
            generator = torch.Generator(device=self.device).manual_seed(params.seed)
        if state is None:
            assert len(prefixes) == 1
            rows, (logits, _) = Rows.prefill(self._forward_last, [prefixes[0]], self.device)
            if k > 1:  # prefilled once, then copied k times
                rows, logits = rows.take([0] * k), logits.expand(k, -1)
        else:
            rows = self._state_rows(state, [len(p) - 1 for p in prefixes], k)
            logits, _ = rows.advance(self._forward_last, [p[-1] for p in prefixes for _ in range(k)])
        n_rows = len(prefixes) * k
        live = list(range(n_rows))           # batch row -> completion index
        tokens = [[] for _ in range(n_rows)]
        logprobs = [[] for _ in range(n_rows)]
        finish = ["length"] * n_rows
        for step in range(params.max_new_tokens):
            uniforms = torch.rand(logits.shape[0], generator=generator, device=logits.device) if params.temperature > 0 else None
            nxt, chosen_lp = sample_tokens(logits, params, uniforms)
            keep = []
            for b, (i, tok, lp) in enumerate(zip(live, nxt.tolist(), chosen_lp.tolist())):
                tokens[i].append(tok)
                logprobs[i].append(lp)
                ended = self.finish_reason(prefixes[i // k], tokens[i], params)
                if ended:
                    finish[i] = ended
                else:
                    keep.append(b)
            self.stats.generated_tokens += len(live)
            if not keep or step == params.max_new_tokens - 1:
                break
            if len(keep) < len(live) and not keep_cache:
                rows.keep(keep)
                nxt = nxt[torch.tensor(keep, device=self.device)]
                live = [live[b] for b in keep]
            logits, _ = rows.advance(self._forward_last, nxt)
        completions = [Completion(t, lp, self.decode(t), f) for t, lp, f in zip(tokens, logprobs, finish)]
        groups = [completions[i * k:(i + 1) * k] for i in range(len(prefixes))]
        return (groups, rows.cache) if keep_cache else groups


class _Batch:
    """The rows of HFPolicy.sample_many: a left-padded lm.kvcache.Rows (its KV cache with room to
    grow, a mask of each row's real positions, each row's next position id), and per row its
    owner (request index, sample index) or None when free; each request's tokens so far; with
    `features`, each row's running sum of its final hidden states.

    A row that ends frees its slot in place, and a joining request's rows are written into free
    slots: retiring or appending rows would copy the whole cache each time a sample ends, which on
    CPU cost more than the forward passes themselves. A free slot is fed like the others until it
    is refilled; when nothing waits to join and a quarter of the slots are free, the batch is
    compacted (one copy of the live rows' cache, against ~1 ms per free row in every later step)."""

    def __init__(self, policy, features=False):
        self.policy = policy
        self.features = features
        self.kv = Rows()
        self.logits = self.sums = None
        self.slots = []         # per batch row: [request index, sample index], or None when free
        self.requests = {}      # index -> dict(prefix, params, generator, tokens, logprobs, finish, left, features)

    @property
    def live_rows(self):
        return sum(s is not None for s in self.slots)

    def admit(self, joining):
        """Requests (index, prefix, n, params) join the batch: their prefixes prefilled together in
        one left-padded forward (one pass over the weights for all of them), each then copied into
        n free slots (new slots at the end when too few are free)."""
        policy, device = self.policy, self.policy.device
        for index, prefix, n, params in joining:
            live = next((s for s in self.slots if s is not None), None)
            first = self.requests[live[0]]["params"] if live else joining[0][3]
            if (first.temperature, first.top_p) != (params.temperature, params.top_p):
                raise ValueError("sample_many: all requests must share temperature and top_p")
            generator = torch.Generator(device=device)
            generator.manual_seed(params.seed if params.seed is not None else torch.seed())
            self.requests[index] = {"prefix": prefix, "params": params, "generator": generator, "left": n,
                                    "tokens": [[] for _ in range(n)], "logprobs": [[] for _ in range(n)],
                                    "finish": ["length"] * n, "features": [None] * n}
        prefilled, (logits, hidden) = Rows.prefill(policy._forward_last, [prefix for _, prefix, _, _ in joining], device)
        copies = [j for j, (_, _, n, _) in enumerate(joining) for _ in range(n)]
        owners = [[index, i] for index, _, n, _ in joining for i in range(n)]
        free = [b for b, s in enumerate(self.slots) if s is None][:len(copies)]
        for b, j, owner in zip(free, copies, owners):
            self.kv.place(b, prefilled, j)
            self.logits[b] = logits[j]
            if self.features:
                self.sums[b] = 0
            self.slots[b] = owner
        extra = copies[len(free):]
        if extra:
            self.kv = Rows.merge([self.kv, prefilled.take(extra)])
            more = logits[torch.tensor(extra, device=device)]
            self.logits = more if self.logits is None else torch.cat([self.logits, more])
            if self.features:
                sums = hidden.new_zeros(len(extra), hidden.shape[-1], dtype=torch.float32)
                self.sums = sums if self.sums is None else torch.cat([self.sums, sums])
            self.slots += owners[len(free):]

    def step(self):
        """Pick one token for every live row, run the next forward, free finished rows and yield
        finished requests. A row that has just ended is still fed its last token (with features,
        its hidden state is part of the program's mean) and frees its slot after that forward."""
        policy = self.policy
        live = [b for b, s in enumerate(self.slots) if s is not None]
        params = self.requests[self.slots[live[0]][0]]["params"]
        dead = [b for b, s in enumerate(self.slots) if s is None]
        if dead:  # a free slot's logits are noise: make them one sure token, so top-p stays cheap
            idx = torch.tensor(dead, device=policy.device)
            self.logits[idx] = float("-inf")
            self.logits[idx, 0] = 0.0
        uniforms = torch.cat([torch.rand(1, generator=self.requests[s[0]]["generator"], device=policy.device)
                              if s is not None else torch.zeros(1, device=policy.device) for s in self.slots])
        nxt, chosen = sample_tokens(self.logits, params, uniforms)
        ended, done = [], []
        for b, tok, lp in zip(live, nxt[live].tolist(), chosen[live].tolist()):
            r, i = self.slots[b]
            req = self.requests[r]
            toks = req["tokens"][i]
            toks.append(tok)
            req["logprobs"][i].append(lp)
            finish = policy.finish_reason(req["prefix"], toks, req["params"])
            if not finish:
                continue
            req["finish"][i] = finish
            ended.append(b)
            req["left"] -= 1
            if req["left"] == 0:
                done.append(r)
        policy.stats.generated_tokens += len(live)
        if len(ended) < len(live) or self.features:
            self.logits, hidden = self.kv.advance(policy._forward_last, nxt)
            if self.features:
                self.sums += hidden.float()
        for b in ended:
            r, i = self.slots[b]
            if self.features:
                self.requests[r]["features"][i] = self.sums[b] / len(self.requests[r]["tokens"][i])
            self.slots[b] = None
            self.kv.free(b)
        if not any(self.slots):
            self.kv, self.logits, self.sums, self.slots = Rows(), None, None, []
        for r in done:
            req = self.requests.pop(r)
            yield r, [Completion(t, lp, policy.decode(t), f, feat)
                      for t, lp, f, feat in zip(req["tokens"], req["logprobs"], req["finish"], req["features"])]

    def compact(self):
        """Drop the free slots (one copy of the live rows' cache)."""
        keep = [b for b, s in enumerate(self.slots) if s is not None]
        if len(keep) == len(self.slots):
            return
        self.kv.keep(keep)
        idx = torch.tensor(keep, device=self.policy.device)
        self.logits = self.logits[idx]
        if self.features:
            self.sums = self.sums[idx]
        self.slots = [self.slots[b] for b in keep]
