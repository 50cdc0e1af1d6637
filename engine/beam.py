"""Value-guided beam search. A step is one line (or a fixed number of tokens); each step every beam
is extended by E sampled continuations, all scored by the value model's incremental scorer (each
candidate forks its parent's value KV cache and scores only its new tokens), and the B best
survive. Programs that finish (EOS, or their code block closes) are kept; the search stops when no
beam is left or the policy-token budget is spent. The best finished program by value wins."""

from dataclasses import dataclass

from engine.policy import SamplingParams
from engine.prompts import build_program, code_block_closed, extract_code, messages
from engine.result import Candidate, DecodeResult, Stats


@dataclass
class Beam:
    tokens: list      # generated so far
    state: object     # policy PrefixState of prompt + tokens
    scorer: object    # value model's incremental scorer over prompt + tokens
    value: float


def beam(policy, value, problem, cfg):
    stats = Stats(policy, value)
    prompt = policy.prompt_tokens(messages(problem, cfg.prompt))
    with stats.phase("prefill"):
        _, root_state = policy.teacher_force(prompt[:-1], prompt[-1:])
        root_scorer = value.scorer()
        root_value = root_scorer.extend(prompt)[-1]
    beams = [Beam([], root_state, root_scorer, root_value)]
    finished, spent, steps, trace = [], 0, 0, []
    chunk = None if cfg.step == "line" else int(cfg.step)
    line_cap = 64  # tokens: a "line" step that finds no newline ends here
    while beams and spent < cfg.token_budget:
        # Never overshoot the budget: a step gets at most what is left, shared by every row.
        rows = len(beams) * cfg.expansions
        per_row = (cfg.token_budget - spent) // rows
        if per_row < 1:
            break
        params = SamplingParams(max_new_tokens=min(chunk or line_cap, per_row),
                                temperature=cfg.temperature, top_p=cfg.top_p, seed=cfg.seed + steps,
                                stop=("\n",) if chunk is None else ())
        expansions = []
        for b in beams:
            with stats.phase("sample"):
                (group,) = policy.sample_forks(b.state, [len(b.state.tokens)], cfg.expansions, params)
            for c in group:
                spent += len(c.tokens)
                with stats.phase("value"):
                    scorer = b.scorer.fork()
                    v = scorer.extend(c.tokens)[-1]
                tokens = b.tokens + c.tokens
                done = c.finish_reason == "eos" or code_block_closed(policy.decode(tokens)) \
                    or len(tokens) >= cfg.max_new_tokens
                expansions.append((v, b, c, tokens, scorer, done))
        steps += 1
        expansions.sort(key=lambda e: -e[0])
        beams = []
        for v, b, c, tokens, scorer, done in expansions:
            if done:
                text = policy.decode(tokens)
                finished.append(Candidate(build_program(problem, extract_code(text)), text, tokens, v,
                                          "eos" if c.finish_reason == "eos" else "stop"))
            elif len(beams) < cfg.beam_width:
                with stats.phase("extend"):
                    beams.append(Beam(tokens, policy.extend(b.state, c.tokens), scorer, v))
        trace.append({"open": [round(e[0], 6) for e in expansions if not e[5]],
                      "kept": [round(b.value, 6) for b in beams]})
    if not finished:  # budget spent before any program finished: take the unfinished beams
        for b in beams:
            text = policy.decode(b.tokens)
            finished.append(Candidate(build_program(problem, extract_code(text)), text, b.tokens, b.value, "length"))
    ranked = sorted(finished, key=lambda c: -c.value)
    stats.extra.update(steps=steps, budget=cfg.token_budget, finished=len(finished), trace=trace)
    return DecodeResult("beam", ranked[0].program, ranked[0].value, ranked, stats.as_dict())
