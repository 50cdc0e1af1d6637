"""Picking one of k programs with execution evidence beside the critic: how many of the statement's
examples each program reproduces (judge.examples), and how many candidates agree with it, giving
the same outputs on the same inputs (MBR-exec / CodeT-style clusters). A ranker maps a candidate's
evidence to a sort key; the pick is a candidate with the best key (ties: any of them)."""

from dataclasses import dataclass

from judge.examples import same_answer


@dataclass
class Evidence:
    value: float | None      # the critic's value of the program
    examples_passed: int     # how many of the statement's examples it reproduces
    outputs: tuple           # what it gives on the shared inputs, in order (judge.call_outputs)
    weight: int = 1          # samples folded into this program (identical programs)


FAILED = ("error:", "timeout", "memory_limit", "output_limit", "compile_error")


def evidence(value, outputs, examples, weight=1):
    """A program's evidence from its outputs on the examples' calls (the first len(examples)
    outputs; any outputs after them are on further shared inputs)."""
    passed = sum(same_answer(o, e.expected) for o, e in zip(outputs, examples) if e.expected is not None)
    return Evidence(value, passed, tuple(outputs), weight)


def agreement(candidates):
    """Each candidate's cluster weight: the samples whose programs give exactly its outputs. A
    program that fails on every input (or has no input to run) agrees with nothing: 0."""
    weights = {}
    for c in candidates:
        weights[c.outputs] = weights.get(c.outputs, 0) + c.weight
    return [0 if not c.outputs or all(o.startswith(FAILED) for o in c.outputs) else weights[c.outputs]
            for c in candidates]


# name -> sort key of (evidence, agreement); a missing critic value sorts last.
RANKERS = {
    "value": lambda e, agree: (_value(e),),
    "examples": lambda e, agree: (e.examples_passed,),
    "examples+value": lambda e, agree: (e.examples_passed, _value(e)),
    "agreement": lambda e, agree: (agree,),
    "examples+agreement+value": lambda e, agree: (e.examples_passed, agree, _value(e)),
}


def _value(e):
    return float("-inf") if e.value is None else e.value


def best(candidates, ranker):
    """The indices of the candidates with the ranker's best key (all of them tie for the pick)."""
    agree = agreement(candidates)
    keys = [RANKERS[ranker](c, a) for c, a in zip(candidates, agree)]
    top = max(keys)
    return [i for i, k in enumerate(keys) if k == top]


def pick_pass_rate(candidates, passed, ranker):
    """The chance that the ranker's pick passes: a tie is a random pick among the tied samples."""
    tied = best(candidates, ranker)
    weight = sum(candidates[i].weight for i in tied)
    return sum(candidates[i].weight * passed[i] for i in tied) / weight
