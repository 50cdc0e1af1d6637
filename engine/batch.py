"""The frontier of a search as one batch: sequences with different prefixes advance one token per
step in one batched forward, and the value of every new token comes with it.

`lm.kvcache.Rows` (the same left-padded batch HFPolicy.sample_many steps) holds the rows: they can
be dropped, reordered or copied (a copy continues on its own: a branch or a beam expansion costs no
recomputation), and row sets of different lengths can be merged. `Frontier` pairs the policy's rows with a value track that mirrors
every row operation, so strategies only say which rows live on and which tokens they take.

Value tracks, cheapest first:
- SharedTrunkValue: the value model is a head (N = 0) on the policy's own model (same weights, or
  its first layers): its value of a token is the head applied to a hidden state the policy's
  forward already computed for that token, so values cost no forward at all;
- RowsValue: any other transformers value model runs its own batched forward over the same rows;
- ScorerValue: any other ValueFunction, through one incremental scorer per row (not batched).
A token's value is known after the forward that consumes it, so a row that ends keeps its place for
one more step (its last token's forward) before it leaves: its values are then exactly those of the
separate value model.
"""

import time

import torch

from engine.result import Stats
from lm.kvcache import Rows
from lm.prompts import messages, stop_after_code
from lm.sampling import SamplingParams
from valuemodel.model import ValueModel, head_module


class SharedTrunkValue:
    """Values from the policy's own hidden states through the value model's head: the final ones,
    or, for a critic cut at N layers, the ones after layer N through the (shared) final norm."""

    def __init__(self, vm):
        self.vm, self.head = vm, head_module(vm.model)[1]
        self.layer, self.norm = vm.trunk_layers, vm.model.base_model.norm

    def start(self, prompt, hidden):
        self.vm.tokens_scored += len(prompt)
        return self._values(hidden)

    def step(self, tokens, hidden):
        self.vm.tokens_scored += len(tokens)
        return self._values(hidden)

    def _values(self, hidden_states):
        with torch.inference_mode():
            h = hidden_states[-1] if self.layer is None else self.norm(hidden_states[self.layer])
            return torch.sigmoid(self.head(h.to(self.head.weight.dtype)).float()[:, 0]).tolist()

    def take(self, rows):
        return self

    def merge(self, parts):
        return self


class RowsValue:
    """A transformers value model with its own batched rows, mirroring the policy's."""

    def __init__(self, vm):
        self.vm, self.head = vm, head_module(vm.model)[1]
        self.rows = None

    def _forward(self, ids, cache, mask, pos):
        out = self.vm.model.base_model(input_ids=ids, past_key_values=cache, attention_mask=mask,
                                       position_ids=pos, use_cache=True)
        return out.last_hidden_state[:, -1], out.past_key_values

    def _values(self, hidden):
        return torch.sigmoid(self.head(hidden).float()[:, 0]).tolist()

    @torch.inference_mode()
    def start(self, prompt, hidden=None):
        self.rows, h = Rows.prefill(self._forward, [prompt], self.vm.device)
        self.vm.tokens_scored += len(prompt)
        return self._values(h)

    @torch.inference_mode()
    def step(self, tokens, hidden=None):
        self.vm.tokens_scored += len(tokens)
        return self._values(self.rows.advance(self._forward, tokens))

    def take(self, rows):
        out = RowsValue(self.vm)
        out.rows = self.rows.take(rows)
        return out

    def merge(self, parts):
        out = RowsValue(self.vm)
        out.rows = Rows.merge([p.rows for p in parts])
        return out


class ScorerValue:
    """Any ValueFunction, one incremental scorer per row (rows copied by fork)."""

    def __init__(self, value):
        self.value, self.scorers = value, []

    def start(self, prompt, hidden=None):
        self.scorers = [self.value.scorer()]
        return self.scorers[0].extend(list(prompt))[-1:]

    def step(self, tokens, hidden=None):
        return [s.extend([t])[0] for s, t in zip(self.scorers, tokens)]

    def take(self, rows):
        out = ScorerValue(self.value)
        out.scorers = [self.scorers[r].fork() for r in rows]
        return out

    def merge(self, parts):
        out = ScorerValue(self.value)
        out.scorers = [s for p in parts for s in p.scorers]
        return out


def value_track(policy, value):
    """The cheapest exact value track for this policy and value model (see the module docstring):
    the policy's own hidden states through the head when the value model is a head on the policy's
    very model (no value forward at all), else batched rows of a transformers value model's own
    forward, else one incremental scorer per row (any ValueFunction)."""
    if isinstance(value, ValueModel):
        return SharedTrunkValue(value) if value.shares_trunk_with(policy) else RowsValue(value)
    return ScorerValue(value)


class ModelRows:
    """The policy side of a frontier on transformers: batched rows and each row's next-token logits."""

    def __init__(self, policy, rows, logits):
        self.policy, self.rows, self.logits = policy, rows, logits

    @classmethod
    def start(cls, policy, prompt):
        with torch.inference_mode():
            rows, (logits, hidden) = Rows.prefill(policy.forward_rows, [prompt], policy.device)
        return cls(policy, rows, logits), hidden

    def __len__(self):
        return len(self.rows)

    def sample(self, params, generator, rows=None):
        logits = self.logits if rows is None else self.logits[torch.tensor(rows)]
        uniforms = torch.rand(logits.shape[0], generator=generator)
        tokens, logprobs = self.policy.pick(logits, params, uniforms)
        self.policy.stats.generated_tokens += len(tokens)
        return tokens.tolist(), logprobs.tolist()

    def advance(self, tokens):
        with torch.inference_mode():
            self.logits, hidden = self.rows.advance(self.policy.forward_rows, tokens)
        return hidden

    def take(self, rows):
        return ModelRows(self.policy, self.rows.take(rows), self.logits[torch.tensor(rows, dtype=torch.long)])

    @classmethod
    def merge(cls, parts):
        return cls(parts[0].policy, Rows.merge([p.rows for p in parts]), torch.cat([p.logits for p in parts]))


class RequestRows:
    """The policy side of a frontier on a serving backend (vLLM): each row is its token sequence,
    and a step is one request per row for one token, all in one call (`policy.sample_next`); the
    engine's prefix cache keeps each request to its new token. No hidden states: values come from
    the value model's own forward."""

    def __init__(self, policy, seqs):
        self.policy, self.seqs = policy, seqs

    @classmethod
    def start(cls, policy, prompt):
        return cls(policy, [list(prompt)]), None

    def __len__(self):
        return len(self.seqs)

    def sample(self, params, generator, rows=None):
        seqs = self.seqs if rows is None else [self.seqs[r] for r in rows]
        seeds = torch.randint(0, 2**31 - 1, (len(seqs),), generator=generator).tolist()
        return self.policy.sample_next(seqs, params, seeds)

    def advance(self, tokens):
        for seq, tok in zip(self.seqs, tokens):
            seq.append(tok)
        return None

    def take(self, rows):
        return RequestRows(self.policy, [list(self.seqs[r]) for r in rows])

    @classmethod
    def merge(cls, parts):
        return cls(parts[0].policy, [s for p in parts for s in p.seqs])


class Frontier:
    """The live rows of a search: the policy's rows (ModelRows, or RequestRows on a backend without
    forward_rows) and a value track kept in step. Row i of every part is the same sequence."""

    def __init__(self, policy_rows, values, seconds=None, counts=None):
        self.policy_rows, self.values = policy_rows, values
        # A search's own accounts, shared by every frontier taken from it: forward time by model,
        # tokens sampled and tokens fed (prompt included; each fed token gets its value).
        self.seconds = seconds if seconds is not None else {"policy": 0.0, "value": 0.0}
        self.counts = counts if counts is not None else {"sampled": 0, "fed": 0}

    @classmethod
    def start(cls, policy, value, prompt):
        """One row holding the prompt; returns (frontier, the value of the prompt's last token)."""
        kind = ModelRows if hasattr(policy, "forward_rows") else RequestRows
        policy_rows, hidden = kind.start(policy, list(prompt))
        values = value_track(policy, value)
        frontier = cls(policy_rows, values)
        frontier.counts["fed"] += len(prompt)
        return frontier, values.start(list(prompt), hidden)[0]

    def __len__(self):
        return len(self.policy_rows)

    def sample(self, params, generator, rows=None):
        """A next token and its log-prob (under the raw distribution) for each row (or for `rows`,
        indices that may repeat: independent draws from the same row)."""
        tokens, logprobs = self.policy_rows.sample(params, generator, rows)
        self.counts["sampled"] += len(tokens)
        return tokens, logprobs

    def advance(self, tokens):
        """Feed each row its next token; returns the values of those tokens (row order)."""
        start = time.perf_counter()
        hidden = self.policy_rows.advance(tokens)
        middle = time.perf_counter()
        values = self.values.step(tokens, hidden)
        self.seconds["policy"] += middle - start
        self.seconds["value"] += time.perf_counter() - middle
        self.counts["fed"] += len(tokens)
        return values

    def take(self, rows):
        """A frontier of these rows (see Rows.take); this one is left as it is."""
        return Frontier(self.policy_rows.take(rows), self.values.take(rows), self.seconds, self.counts)

    def select(self, rows):
        """Keep, reorder or copy rows in place."""
        if rows != list(range(len(self))):
            kept = self.take(rows)
            self.policy_rows, self.values = kept.policy_rows, kept.values

    @classmethod
    def merge(cls, parts):
        """One frontier of all rows of `parts`, in order."""
        parts = [p for p in parts if len(p)]
        return cls(type(parts[0].policy_rows).merge([p.policy_rows for p in parts]),
                   parts[0].values.merge([p.values for p in parts]), parts[0].seconds, parts[0].counts)


# --- searches side by side ----------------------------------------------------------------------
# A search (engine.tree.tree_search, engine.beam.beam_search) is a generator: where it needs its
# rows advanced it writes `values = yield from advance(frontier, tokens)`, and it returns its
# DecodeResult. run_one runs one search alone; run_searches runs several side by side, every step
# one batched forward over the rows of all of them.

def advance(frontier, tokens):
    """In a search generator: advance the frontier's rows by these tokens; returns their values."""
    return (yield frontier, tokens)


def begin_search(policy, value, problem, cfg):
    """What beam and tree search start from: their stats, the prompt, the sampling settings (a
    completion ends with its first closed code block), a seeded generator, and the frontier holding
    the prefilled prompt, with the prompt's value."""
    stats = Stats(policy, value)
    prompt = policy.prompt_tokens(messages(problem, cfg.prompt, cfg.prompt_tests))
    params = SamplingParams.from_config(cfg, seed=None, stop_fn=stop_after_code(len(prompt), policy.decode))
    generator = torch.Generator().manual_seed(cfg.seed)
    with stats.phase("prefill"):
        frontier, root_value = Frontier.start(policy, value, prompt)
    return stats, prompt, params, generator, frontier, root_value


def run_one(search):
    try:
        request = next(search)
        while True:
            frontier, tokens = request
            request = search.send(frontier.advance(tokens))
    except StopIteration as stop:
        return stop.value


def run_searches(searches, max_rows=32, width=1):
    """Run search generators side by side; yields (index, result) as each ends. A search is
    admitted (in order) while the live rows leave room for it at its widest (`width` rows): a soft
    budget, as searches that branch late can grow past it. Each step merges the rows of all live
    searches into one batch, advances it with one forward, and hands every search its own rows back."""
    pending = iter(enumerate(searches))
    live = {}  # index -> (search, its request: (frontier, tokens))
    while True:
        while not live or sum(len(request[0]) for _, request in live.values()) + width <= max_rows:
            index, search = next(pending, (None, None))
            if search is None:
                break
            try:
                live[index] = (search, next(search))
            except StopIteration as stop:
                yield index, stop.value
        if not live:
            return
        order = list(live)
        frontiers = [live[i][1][0] for i in order]
        tokens = [t for i in order for t in live[i][1][1]]
        if len(order) == 1:
            values = frontiers[0].advance(tokens)
        else:
            merged = Frontier.merge(frontiers)
            merged.seconds, merged.counts = {"policy": 0.0, "value": 0.0}, {"sampled": 0, "fed": 0}
            values = merged.advance(tokens)
            offset = 0
            for f in frontiers:
                n = len(f)
                part = merged.take(list(range(offset, offset + n)))
                f.policy_rows, f.values = part.policy_rows, part.values
                for key, seconds in merged.seconds.items():  # each search is charged its rows' share
                    f.seconds[key] += seconds * n / len(merged)
                f.counts["fed"] += n
                offset += n
        offset = 0
        for i, f in zip(order, frontiers):
            n = len(f)
            search = live[i][0]
            try:
                live[i] = (search, search.send(values[offset:offset + n]))
            except StopIteration as stop:
                del live[i]
                yield i, stop.value
            offset += n
