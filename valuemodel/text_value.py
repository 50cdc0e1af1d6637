"""A value model over another model's tokens: the critic reads the policy's *text* in its own
tokenization, so any critic can judge any policy (the paper pairs a Phi-4 critic with Phi-4-mini
rollouts, and their vocabularies differ).

The prompt is the policy's rendered prompt as plain text (`prompt_format: policy_text` in the
checkpoint: the text training rows carry as `prompt_text`), tokenized by the critic apart from the
response, as training does (valuemodel.train.encode_row). Values come back per *policy* token: a
policy token's value is the critic's value at the critic token holding the token's last character
(a token that adds no character, e.g. the end of text, gets the value before it).

The incremental scorer keeps the critic's KV cache over the response's stable part. When text is
appended, only the tail that may tokenize differently is tokenized again: from the end of the
last critic token that ends `TAIL_CHARS` before the old text's end; the cache is cut back to where
the new tokens differ from the old ones, and only the new ones run. Values then equal a forward
of the whole re-tokenized text (tests check this after every chunk) at the cost of the new text.
"""

import bisect

import torch

# How far back (in characters) appended text may change a byte-level BPE tokenization. Pre-tokenizers
# split text into words, numbers, punctuation and whitespace runs; appending only changes the last
# piece or merges into it, which for code stays well within this margin (tests run real code texts
# through the critic in random chunks and compare with whole-text tokenization).
TAIL_CHARS = 32


class TextValue:
    """A value model (valuemodel.ValueModel) scoring a policy's tokens through their text.
    `decode(tokens)` is the policy's own decoding of response tokens (its `decode`)."""

    def __init__(self, vm, decode, prompt_decode=None):
        self.vm, self.decode = vm, decode
        # The prompt as training rows carry it: the policy tokenizer's decode with special tokens kept.
        self.prompt_decode = prompt_decode or decode
        self._prompts = {}

    @property
    def aggregate(self):
        return self.vm.aggregate

    @property
    def tokens_scored(self):
        return self.vm.tokens_scored

    @property
    def tokenizer(self):
        return self.vm.tokenizer

    def encode(self, text):
        """The critic's tokens of `text` and each token's (start, end) characters."""
        enc = self.vm.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        return list(enc["input_ids"]), [tuple(s) for s in enc["offset_mapping"]]

    def prompt_ids(self, prompt_tokens):
        key = tuple(prompt_tokens)
        if key not in self._prompts:
            self._prompts[key] = self.encode(self.prompt_decode(list(prompt_tokens)))[0]
        return self._prompts[key]

    def final_values(self, prefix, continuations, mean_logprobs=None):
        """Each continuation's value as a finished program, read over the critic's own tokens of its
        text as the checkpoint's aggregate says (the way training read it); `mean_logprobs` are the
        policy's, for a checkpoint that reads them."""
        return self.vm.final_values(self.prompt_ids(prefix), [self.encode(self.decode(list(c)))[0] for c in continuations],
                                    mean_logprobs)

    def program_value(self, values, mean_logprob=None):
        return self.vm.program_value(values, mean_logprob)

    def values(self, sequences):
        """Per-policy-token values of whole token sequences (each read as one text), in one batch."""
        sequences = [list(s) for s in sequences]
        encoded = [self.encode(self.decode(s)) for s in sequences]
        scored = iter(self.vm.values([ids for ids, _ in encoded if ids]) if any(ids for ids, _ in encoded) else [])
        out = []
        for seq, (ids, spans) in zip(sequences, encoded):
            per_token = next(scored) if ids else []
            before = per_token[0] if per_token else 0.5
            out.append(per_policy_token(per_token, [s for s, _ in spans], _char_ends(self.decode, seq, 0), before))
        return out

    def scorer(self):
        return TextScorer(self)


def _char_ends(decode, tokens, start, text=None):
    """The length of the decoded text after each of tokens[start:], in order (`text`: all of
    them decoded, when the caller has it)."""
    last = len(text) if text is not None else None
    ends = [len(decode(tokens[:i + 1])) for i in range(start, len(tokens) - (last is not None))]
    return ends + ([last] if last is not None and start < len(tokens) else [])


def per_policy_token(values, starts, ends, before):
    """Values per policy token from the critic's per-token values: the value at the critic token
    that holds the policy token's last character (`ends`: characters after each policy token;
    `starts`: each critic token's first character); `before` where no character has come yet."""
    out = []
    for end in ends:
        j = bisect.bisect_right(starts, end - 1) - 1 if end > 0 else -1
        out.append(values[j] if j >= 0 else before)
    return out


class TextScorer:
    """The incremental scorer of one growing sequence of policy tokens: its first `extend` is the
    prompt, every later one appends response tokens; each returns the new policy tokens' values."""

    def __init__(self, tv):
        from transformers import DynamicCache
        self.tv = tv
        self.cache = DynamicCache()
        self.prompt = None          # the critic's prompt tokens
        self.prompt_value = None    # the value after the prompt
        self.tokens = []            # the policy's response tokens
        self.text = ""              # their text
        self.ids, self.spans, self.token_values = [], [], []  # the critic's response tokens, scored

    @torch.inference_mode()
    def _run(self, ids):
        if not ids:
            return []
        vm = self.tv.vm
        out = vm.model.base_model(input_ids=torch.tensor([ids], device=vm.device), past_key_values=self.cache,
                                  use_cache=True)
        self.cache = out.past_key_values
        vm.tokens_scored += len(ids)
        return vm._head(out.last_hidden_state)[0].tolist()

    def extend(self, tokens):
        tokens = list(tokens)
        if self.prompt is None:
            self.prompt = self.tv.prompt_ids(tokens)
            values = self._run(self.prompt)
            self.prompt_value = values[-1] if values else 0.5
            _, spans = self.tv.encode(self.tv.prompt_decode(tokens))
            return per_policy_token(values, [s for s, _ in spans], _char_ends(self.tv.prompt_decode, tokens, 0), 0.5)
        if not tokens:
            return []
        start = len(self.tokens)
        self.tokens += tokens
        text = self.tv.decode(self.tokens)
        self._retokenize(text)
        starts = [s for s, _ in self.spans]
        return per_policy_token(self.token_values, starts, _char_ends(self.tv.decode, self.tokens, start, text),
                                self.prompt_value)

    def _retokenize(self, text):
        same = 0  # characters the old and the new text share
        limit = min(len(text), len(self.text))
        while same < limit and text[same] == self.text[same]:
            same += 1
        keep = bisect.bisect_right([e for _, e in self.spans], same - TAIL_CHARS)
        restart = self.spans[keep - 1][1] if keep else 0
        tail_ids, tail_spans = self.tv.encode(text[restart:])
        ids = self.ids[:keep] + tail_ids
        spans = self.spans[:keep] + [(s + restart, e + restart) for s, e in tail_spans]
        common = keep
        while common < min(len(ids), len(self.ids)) and ids[common] == self.ids[common] \
                and spans[common] == self.spans[common]:
            common += 1
        drop = len(self.ids) - common
        if drop:
            self.cache.crop(-drop)
        self.token_values = self.token_values[:common] + self._run(ids[common:])
        self.ids, self.spans, self.text = ids, spans, text

    def fork(self):
        """An independent copy (for branching searches)."""
        import copy
        out = TextScorer.__new__(TextScorer)
        out.__dict__.update(self.__dict__)
        out.cache = copy.deepcopy(self.cache)
        out.tokens, out.ids, out.spans, out.token_values = (list(x) for x in
                                                           (self.tokens, self.ids, self.spans, self.token_values))
        return out

