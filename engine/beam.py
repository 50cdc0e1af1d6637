"""Value-guided beam search. A step is one line (or a fixed number of tokens); each step every beam
is extended by E sampled continuations and the B best by value survive. All B x E continuations of
a step grow side by side in one batch (engine.batch.Frontier: a beam's copies share its cached
prefix, and the value of every new token comes with the forward that feeds it); a continuation that
ends its line waits aside until the step's last one does. Programs that finish (EOS, or their code
block closes) are kept; the search stops when no beam is left or the policy-token budget is spent.
The best finished program by value wins."""

from dataclasses import dataclass, field

from engine.batch import Frontier, advance, begin_search, run_one
from engine.result import Candidate, DecodeResult
from lm.prompts import program_from

LINE_CAP = 64  # tokens: a "line" step that finds no newline ends here


@dataclass
class Beam:
    tokens: list      # generated so far
    value: float      # the value at its last token


@dataclass
class Expansion:
    parent: Beam
    tokens: list = field(default_factory=list)   # this step's tokens
    value: float = 0.0
    finish: str | None = None                     # "eos" / "stop" when the program ended


def beam(policy, value, problem, cfg):
    return run_one(beam_search(policy, value, problem, cfg))


def beam_search(policy, value, problem, cfg):
    """A generator (see engine.batch.run_searches: several searches can share each step's forward)."""
    stats, prompt, params, generator, frontier, root_value = begin_search(policy, value, problem, cfg)
    beams = [Beam([], root_value)]  # beam i is frontier row i
    finished, spent, steps, trace = [], 0, 0, []
    chunk = None if cfg.step == "line" else int(cfg.step)
    while beams and spent < cfg.token_budget:
        # Never overshoot the budget: a step gets at most what is left, shared by every row.
        per_row = (cfg.token_budget - spent) // (len(beams) * cfg.expansions)
        if per_row < 1:
            break
        cap = min(chunk or LINE_CAP, per_row)
        frontier.select([i for i in range(len(beams)) for _ in range(cfg.expansions)])
        expansions = [Expansion(b) for b in beams for _ in range(cfg.expansions)]
        live, waiting = list(range(len(expansions))), []  # frontier row -> expansion; (part, its expansions)
        while live:
            with stats.phase("sample"):
                tokens, _ = frontier.sample(params, generator)
            with stats.phase("forward"):
                values = yield from advance(frontier, tokens)
            spent += len(tokens)
            keep = []
            for row, (e_index, tok, v) in enumerate(zip(live, tokens, values)):
                e = expansions[e_index]
                e.tokens.append(tok)
                e.value = v
                whole = e.parent.tokens + e.tokens
                e.finish = policy.finish_reason(prompt, whole, params)
                line_end = chunk is None and "\n" in policy.decode([tok])
                if not (e.finish or line_end or len(e.tokens) >= cap):
                    keep.append(row)
            done = [row for row in range(len(live)) if row not in set(keep)]
            if done:
                waiting.append((frontier.take(done), [live[row] for row in done]))
                frontier.select(keep)
                live = [live[row] for row in keep]
        steps += 1
        frontier = Frontier.merge([part for part, _ in waiting])
        order = [e_index for _, members in waiting for e_index in members]  # frontier row -> expansion
        ranked = sorted(range(len(order)), key=lambda row: -expansions[order[row]].value)
        beams, survivors = [], []
        for row in ranked:
            e = expansions[order[row]]
            tokens = e.parent.tokens + e.tokens
            if e.finish:
                text = policy.decode(tokens)
                finished.append(Candidate(program_from(problem, text), text, tokens, e.value,
                                          "eos" if e.finish == "eos" else "stop"))
            elif len(beams) < cfg.beam_width:
                beams.append(Beam(tokens, e.value))
                survivors.append(row)
        frontier.select(survivors)
        trace.append({"open": [round(expansions[order[row]].value, 6) for row in ranked if not expansions[order[row]].finish],
                      "kept": [round(b.value, 6) for b in beams]})
    if not finished:  # budget spent before any program finished: take the unfinished beams
        for b in beams:
            text = policy.decode(b.tokens)
            finished.append(Candidate(program_from(problem, text), text, b.tokens, b.value, "length"))
    ranked = sorted(finished, key=lambda c: -c.value)
    stats.extra.update(forward_s={k: round(v, 4) for k, v in frontier.seconds.items()}, steps=steps, budget=cfg.token_budget, finished=len(finished), trace=trace)
    return DecodeResult("beam", ranked[0].program, ranked[0].value, ranked, stats.as_dict(frontier))
