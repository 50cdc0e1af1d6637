"""Early-stopping tree search over forking tokens (the paper's proposal, sec. 5, made real).

The first rollout (the trunk) sets the expected length L when it ends. All rollouts grow side by
side, one token per step in one batch, while the policy's token probabilities and the value
model's values are tracked per token:
- branch: a generated token with probability below `branch_prob` starts a new rollout from the
  prefix before it (that position is sampled again), while fewer than `max_branches` were made;
- abort: once a rollout is past `warmup` x L tokens, it stops at the first token where the value
  has been below `abort_value` for `patience` consecutive tokens (counting only tokens past the
  warm-up); the tokens it would still have generated (L minus its length, at least 0) count as
  saved. The paper found values informative only after ~50% of the tokens: hence the warm-up.
  Until the trunk ends L is unknown: then the rule is applied to what every rollout has made so far
  (one that already ended may still be aborted), so each rollout's fate is the rule's on its tokens.
The best finished (not aborted) program by value wins; aborted rollouts are ranked after them.
"""

import math
from dataclasses import dataclass

from engine.batch import advance, begin_search, run_one
from engine.result import Candidate, DecodeResult
from lm.prompts import program_from
from lm.sampling import mean_logprob


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
    values: list
    logprobs: list
    origin: str          # "trunk" or "<parent origin>/<index>"


def tree(policy, value, problem, cfg):
    return run_one(tree_search(policy, value, problem, cfg))


def tree_search(policy, value, problem, cfg):
    """Every live rollout is a row of one batch (engine.batch.Frontier): each step samples one token
    per row, copies a row whose token is a forking one (the copy draws again at that position), and
    feeds all rows in one forward that also gives every new token's value. A rollout that ends
    stays for that last forward (its last token's value), then leaves. A generator (see
    engine.batch.run_searches: several searches can share each step's forward)."""
    stats, prompt, params, generator, frontier, _ = begin_search(policy, value, problem, cfg)
    live = [Rollout([], [], [], "trunk")]   # row i of the frontier
    finished, aborted, branch_log = [], [], []
    expected, saved = None, 0  # expected: L, the trunk's length, known once the trunk ends

    def abort(r, cut):
        nonlocal saved
        r.tokens, r.values, r.logprobs = r.tokens[:cut + 1], r.values[:cut + 1], r.logprobs[:cut + 1]
        saved += max(expected - len(r.tokens), 0)
        aborted.append(_candidate(policy, value, problem, r, "aborted"))

    while live:
        with stats.phase("sample"):
            tokens, logprobs = frontier.sample(params, generator)
            rows, fed = [], []  # per new row: the frontier row it continues, (rollout, token, log-prob)
            work = [(i, live[i], tokens[i], logprobs[i]) for i in range(len(live))]
            while work:
                i, r, tok, lp = work.pop(0)
                rows.append(i)
                fed.append((r, tok, lp))
                if math.exp(lp) < cfg.branch_prob and len(branch_log) < cfg.max_branches:
                    # A forking token: a copy of the row from before it draws that position again.
                    index = len(r.tokens)
                    branch_log.append({"parent": r.origin, "index": index, "prob": math.exp(lp)})
                    (tok2,), (lp2,) = frontier.sample(params, generator, rows=[i])
                    work.append((i, Rollout(list(r.tokens), list(r.values), list(r.logprobs), f"{r.origin}/{index}"),
                                 tok2, lp2))
        with stats.phase("forward"):
            frontier.select(rows)
            new_values = yield from advance(frontier, [tok for _, tok, _ in fed])
        keep, live = [], []
        for j, ((r, tok, lp), v) in enumerate(zip(fed, new_values)):
            r.tokens.append(tok)
            r.logprobs.append(lp)
            r.values.append(v)
            if expected is not None:
                cut = abort_position(r.values, int(cfg.warmup * expected), cfg.abort_value, cfg.patience)
                if cut is not None:
                    abort(r, cut)
                    continue
            why = policy.finish_reason(prompt, r.tokens, params)
            if why is None:
                keep.append(j)
                live.append(r)
                continue
            finished.append((r, why))
            if r.origin == "trunk":
                expected = len(r.tokens)
                # The rule now holds for every rollout, also for the tokens made before L was known.
                for other in [f for f in finished if f[0] is not r]:
                    cut = abort_position(other[0].values, int(cfg.warmup * expected), cfg.abort_value, cfg.patience)
                    if cut is not None:
                        finished.remove(other)
                        abort(other[0], cut)
        frontier.select(keep)
    done = [_candidate(policy, value, problem, r, "eos" if why == "eos" else "stop") for r, why in finished]
    ranked = sorted(done, key=lambda x: -x.value) + sorted(aborted, key=lambda x: -x.value)
    stats.extra.update(forward_s={k: round(v, 4) for k, v in frontier.seconds.items()}, branches=len(branch_log), aborted=len(aborted), finished=len(done),
                       tokens_saved=saved, expected_length=expected, branch_log=branch_log)
    return DecodeResult("tree", ranked[0].program, ranked[0].value, ranked, stats.as_dict(frontier))


def _candidate(policy, value, problem, r, reason):
    from valuemodel.model import aggregate_values
    text = policy.decode(r.tokens)
    read = getattr(value, "program_value", None)  # a value model's own reading; else the plain aggregate
    if not r.values:
        program_value = None
    elif read is not None:
        program_value = read(r.values, mean_logprob(r.logprobs))
    else:
        program_value = aggregate_values(r.values, getattr(value, "aggregate", "last"))
    return Candidate(program_from(problem, text), text, list(r.tokens),
                     program_value, reason, origin=r.origin, logprobs=list(r.logprobs))
