"""Early-stopping tree search over forking tokens (the paper's proposal, sec. 5, made real).

The first rollout (the trunk) runs to its end and sets the expected length L. Every rollout is
generated in chunks while the policy's token probabilities and the value model's incremental
values are tracked per token:
- branch: a generated token with probability below `branch_prob` starts a new rollout from the
  prefix before it (that position is sampled again), while fewer than `max_branches` were made;
- abort: once a rollout is past `warmup` x L tokens, it stops at the first token where the value
  has been below `abort_value` for `patience` consecutive tokens (counting only tokens past the
  warm-up); the tokens it would still have generated (L minus its length, at least 0) count as
  saved. The paper found values informative only after ~50% of the tokens: hence the warm-up.
The best finished (not aborted) program by value wins; aborted rollouts are ranked after them.
"""

import math
from dataclasses import dataclass

from engine.policy import SamplingParams
from engine.prompts import build_program, code_block_closed, extract_code, messages
from engine.result import Candidate, DecodeResult, Stats


@dataclass
class TreeParams:
    branch_prob: float = 0.1     # fork at tokens less likely than this
    max_branches: int = 7        # rollouts besides the trunk
    abort_value: float = 0.2     # abort below this value...
    patience: int = 8            # ...for this many consecutive tokens...
    warmup: float = 0.5          # ...once past this fraction of the trunk's length
    chunk: int = 16              # tokens generated between checks


def abort_position(values, warmup_tokens, threshold, patience):
    """Index (in the rollout's tokens) of the token at which the rule aborts, or None.
    values[i] is the value after token i; tokens before `warmup_tokens` do not count."""
    run = 0
    for i, v in enumerate(values):
        if i < warmup_tokens:
            continue
        run = run + 1 if v < threshold else 0
        if run >= patience:
            return i
    return None


@dataclass
class Rollout:
    tokens: list
    state: object
    scorer: object
    values: list
    logprobs: list
    origin: str          # "trunk" or "<parent origin>/<index>"


def tree(policy, value, problem, cfg, tp=None):
    tp = tp or TreeParams()
    stats = Stats(policy, value)
    prompt = policy.prompt_tokens(messages(problem, cfg.prompt))
    with stats.phase("prefill"):
        _, root = policy.teacher_force(prompt[:-1], prompt[-1:])
        root_scorer = value.scorer()
        root_scorer.extend(prompt)
    queue = [Rollout([], root, root_scorer, [], [], "trunk")]
    finished, aborted, branches, saved, branch_log = [], [], 0, 0, []
    expected = None  # L: the trunk's length
    step = 0
    while queue:
        r = queue.pop(0)
        while True:
            params = SamplingParams(max_new_tokens=min(tp.chunk, cfg.max_new_tokens - len(r.tokens)),
                                    temperature=cfg.temperature, top_p=cfg.top_p, seed=cfg.seed + step)
            step += 1
            with stats.phase("sample"):
                (c,), = policy.sample_forks(r.state, [len(r.state.tokens)], 1, params)
            before = r.scorer.fork() if branches < tp.max_branches else None
            with stats.phase("value"):
                new_values = r.scorer.extend(c.tokens)
            base = len(r.tokens)
            # Forking tokens in this chunk start new rollouts from the prefix before them.
            for j, lp in enumerate(c.logprobs):
                if branches >= tp.max_branches or before is None:
                    break
                if math.exp(lp) < tp.branch_prob:
                    branches += 1
                    branch_log.append({"parent": r.origin, "index": base + j, "prob": math.exp(lp)})
                    with stats.phase("branch"):
                        scorer = before.fork()
                        scorer.extend(c.tokens[:j])
                        state = policy.extend(r.state, c.tokens[:j])
                    queue.append(Rollout(r.tokens + c.tokens[:j], state, scorer, r.values + new_values[:j],
                                         r.logprobs + c.logprobs[:j], f"{r.origin}/{base + j}"))
            r.values += new_values
            r.tokens += c.tokens
            r.logprobs += c.logprobs
            if expected is not None:
                cut = abort_position(r.values, int(tp.warmup * expected), tp.abort_value, tp.patience)
                if cut is not None:
                    r.tokens, r.values, r.logprobs = r.tokens[:cut + 1], r.values[:cut + 1], r.logprobs[:cut + 1]
                    saved += max(expected - len(r.tokens), 0)
                    aborted.append(_candidate(policy, value, problem, r, "aborted"))
                    break
            done = c.finish_reason == "eos" or code_block_closed(policy.decode(r.tokens)) \
                or len(r.tokens) >= cfg.max_new_tokens
            if done:
                finished.append(_candidate(policy, value, problem, r, "eos" if c.finish_reason == "eos" else "stop"))
                if expected is None:
                    expected = len(r.tokens)
                break
            with stats.phase("extend"):
                r.state = policy.extend(r.state, c.tokens)
    ranked = sorted(finished, key=lambda x: -x.value) + sorted(aborted, key=lambda x: -x.value)
    stats.extra.update(branches=branches, aborted=len(aborted), finished=len(finished),
                       tokens_saved=saved, expected_length=expected, branch_log=branch_log)
    return DecodeResult("tree", ranked[0].program, ranked[0].value, ranked, stats.as_dict())


def _candidate(policy, value, problem, r, reason):
    from valuemodel.model import aggregate_values
    text = policy.decode(r.tokens)
    program_value = aggregate_values(r.values, getattr(value, "aggregate", "last")) if r.values else None
    return Candidate(build_program(problem, extract_code(text)), text, list(r.tokens),
                     program_value, reason, origin=r.origin, logprobs=list(r.logprobs))
