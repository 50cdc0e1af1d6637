"""Picking one of k programs with execution evidence beside the critic: how many of the statement's
examples each program reproduces (judge.examples), and how many candidates agree with it, giving
the same outputs on the same inputs (MBR-exec / CodeT-style clusters). A ranker maps a candidate's
evidence to a sort key; the pick is a candidate with the best key (ties: any of them)."""

import math
from dataclasses import dataclass

from judge.examples import same_answer, statement_examples
from judge.sandbox import JUDGE_TIMEOUT


@dataclass
class Evidence:
    value: float | None      # the critic's value of the program
    examples_passed: int     # how many of the statement's examples it reproduces
    outputs: tuple           # what it gives on the shared inputs, in order (judge.call_outputs)
    weight: int = 1          # samples folded into this program (identical programs)
    examples_shown: int = 0  # the statement's examples with an expected answer


FAILED = ("error:", "timeout", "memory_limit", "output_limit", "compile_error")


def evidence(value, outputs, examples, weight=1):
    """A program's evidence from its outputs on the examples' calls (the first len(examples)
    outputs; any outputs after them are on further shared inputs)."""
    passed = sum(same_answer(o, e.expected) for o, e in zip(outputs, examples) if e.expected is not None)
    return Evidence(value, passed, tuple(outputs), weight, sum(e.expected is not None for e in examples))


def stdin_evidence(value, outputs, examples, weight=1):
    """A stdin program's evidence from what it printed for the examples' inputs: an example passes
    as the judge would pass it (judge.compare, strict), and outputs that differ only in trailing
    spaces or newlines agree."""
    from judge.compare import outputs_equal
    passed = sum(not o.startswith(FAILED) and outputs_equal(o, e.expected, "strict", "stdio")
                 for o, e in zip(outputs, examples) if e.expected is not None)
    printed = tuple(o if o.startswith(FAILED) else "\n".join(line.rstrip() for line in o.rstrip().splitlines())
                    for o in outputs)
    return Evidence(value, passed, printed, weight, sum(e.expected is not None for e in examples))


def agreement(candidates):
    """Each candidate's cluster weight: the samples whose programs give exactly its outputs. A
    program that fails on every input (or has no input to run) agrees with nothing: 0."""
    weights = {}
    for c in candidates:
        weights[c.outputs] = weights.get(c.outputs, 0) + c.weight
    return [0 if not c.outputs or all(o.startswith(FAILED) for o in c.outputs) else weights[c.outputs]
            for c in candidates]


FEATURES = ("value", "examples", "agreement", "failed")
# The fitted ranker's weights on FEATURES: fitted with critic v3 on 397 LeetCode and full-MBPP
# training problems with both outcomes, L2 0.1 chosen by grouped CV (research/selection_fit.py;
# the rules and numbers: results/qwen/selection-fit). Their statements show no examples: 0 weight.
FITTED_WEIGHTS = (0.336411, 0.0, 0.230557, -0.222652)


def features(candidates, agree):
    """Per candidate, FEATURES within its problem: the critic's logit standardized over the
    problem's programs (so that a weight fits any critic's scale), the fraction of the statement's
    examples it reproduces, its cluster's share of the samples, and the fraction of the shared
    inputs it fails on."""
    logits = [0.0 if c.value is None else _logit(c.value) for c in candidates]
    total = sum(c.weight for c in candidates)
    mean = sum(c.weight * z for c, z in zip(candidates, logits)) / total
    std = math.sqrt(sum(c.weight * (z - mean) ** 2 for c, z in zip(candidates, logits)) / total)
    return [((z - mean) / std if std > 1e-9 else 0.0,
             c.examples_passed / c.examples_shown if c.examples_shown else 0.0,
             a / total,
             sum(o.startswith(FAILED) for o in c.outputs) / len(c.outputs) if c.outputs else 0.0)
            for c, z, a in zip(candidates, logits, agree)]


# name -> sort key of (evidence, agreement, fitted score); a missing critic value sorts last.
RANKERS = {
    "value": lambda e, agree, score: (_value(e),),
    "examples": lambda e, agree, score: (e.examples_passed,),
    "examples+value": lambda e, agree, score: (e.examples_passed, _value(e)),
    "agreement": lambda e, agree, score: (agree,),
    "examples+agreement+value": lambda e, agree, score: (e.examples_passed, agree, _value(e)),
    "fitted": lambda e, agree, score: (score, _value(e)),
}


# decode's default, by the rule fixed before the comparison (results/qwen/selection-fit): the ranker
# with the most passing picks among the same samples of the 90 held-out MBPP validation problems,
# prompted without their tests (33 of 90 against the critic alone's 32; a tie went to the simpler).
DEFAULT_SELECT = "examples+agreement+value"
# The rankers that read agreement: decode asks the policy for test inputs for them.
USES_AGREEMENT = ("agreement", "examples+agreement+value", "fitted")


def _logit(v):
    v = min(max(v, 1e-6), 1 - 1e-6)
    return math.log(v / (1 - v))


def _value(e):
    return float("-inf") if e.value is None else e.value


def keys(candidates, ranker, weights=None):
    """Each candidate's sort key under the ranker (weights: the fitted ranker's, FITTED_WEIGHTS by default)."""
    agree = agreement(candidates)
    weights = FITTED_WEIGHTS if weights is None else weights
    scores = [sum(w * x for w, x in zip(weights, f)) for f in features(candidates, agree)] if ranker == "fitted" \
        else [0.0] * len(candidates)
    return [RANKERS[ranker](c, a, s) for c, a, s in zip(candidates, agree, scores)]


def best(candidates, ranker, weights=None):
    """The indices of the candidates with the ranker's best key (all of them tie for the pick)."""
    found = keys(candidates, ranker, weights)
    top = max(found)
    return [i for i, k in enumerate(found) if k == top]


def pick_pass_rate(candidates, passed, ranker, weights=None):
    """The chance that the ranker's pick passes: a tie is a random pick among the tied samples."""
    tied = best(candidates, ranker, weights)
    weight = sum(candidates[i].weight for i in tied)
    return sum(candidates[i].weight * passed[i] for i in tied) / weight


def policy_input_texts(policy, problems, n=5, max_rows=32):
    """Per problem, the policy's answer (greedy) when asked for n test inputs of its entry point
    (lm.prompts.test_input_messages), side by side where the policy batches. Stdin problems: none."""
    from lm.prompts import test_input_messages
    from lm.sampling import SamplingParams
    asked = [p for p in problems if p.kind != "stdio" and p.fn_name]
    requests = [(policy.prompt_tokens(test_input_messages(p, n)), 1, SamplingParams(max_new_tokens=384, temperature=0))
                for p in asked]
    if hasattr(policy, "sample_many"):
        done = dict(policy.sample_many(requests, max_rows=max_rows))
    else:
        done = {i: policy.sample(prefix, k, params) for i, (prefix, k, params) in enumerate(requests)}
    return {p.id: done[i][0].text for i, p in enumerate(asked)}


def inputs_from_texts(problems, texts, n=5):
    """Per problem, up to n calls of its entry point found in the policy's answer, with literal
    arguments only (lm.prompts.test_input_calls), written as they run in the program's namespace."""
    from judge.examples import call_expression
    from lm.prompts import test_input_calls
    return {p.id: [call_expression(p, c) for c in test_input_calls(texts[p.id], p.fn_name, n)] if p.id in texts else []
            for p in problems}


def policy_inputs(policy, problems, n=5, max_rows=32):
    """Per problem, up to n test inputs the policy writes: inputs to run every candidate on, never
    expected outputs (which answer is right is what the candidates vote on)."""
    return inputs_from_texts(problems, policy_input_texts(policy, problems, n, max_rows), n)


def execution_evidence(problem, candidates, timeout=JUDGE_TIMEOUT, inputs=()):
    """Each candidate's Evidence (its value, the statement's examples it reproduces, its outputs on
    their inputs and then on `inputs`, further calls such as policy_inputs'), and the sandbox runs it
    took. Function problems run each call in the program's namespace (judge.call_outputs); stdin
    programs read each example's input (judge.stdin_outputs)."""
    from concurrent.futures import ThreadPoolExecutor

    from judge import call_outputs, stdin_outputs
    examples = statement_examples(problem)
    calls = [e.given for e in examples] + (list(inputs) if problem.kind != "stdio" else [])
    if not calls:
        return [Evidence(c.value, 0, (), 1 + c.duplicates) for c in candidates], 0
    run, found = (stdin_outputs, stdin_evidence) if problem.kind == "stdio" else (call_outputs, evidence)
    with ThreadPoolExecutor(2) as pool:
        outputs = list(pool.map(lambda c: run(c.program, calls, timeout=timeout), candidates))
    return [found(c.value, out, examples, 1 + c.duplicates) for c, out in zip(candidates, outputs)], \
        len(calls) * len(candidates)


def rerank(problem, candidates, ranker, timeout=JUDGE_TIMEOUT, inputs=()):
    """The candidates (best first by value) ordered by the ranker's key, each with the examples it
    reproduces and its agreement (on the examples' inputs and `inputs`) recorded; ties keep their
    order. Returns (candidates, sandbox runs)."""
    if ranker == "value":
        return candidates, 0
    found, runs = execution_evidence(problem, candidates, timeout, inputs)
    for c, e, a in zip(candidates, found, agreement(found)):
        c.examples_passed, c.agreement = e.examples_passed, a
    order = dict(zip(map(id, candidates), keys(found, ranker)))
    return sorted(candidates, key=lambda c: order[id(c)], reverse=True), runs
