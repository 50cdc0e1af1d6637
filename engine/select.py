"""Picking one of k programs with execution evidence beside the critic: how many of the statement's
examples each program reproduces (judge.examples), and how many candidates agree with it, giving
the same outputs on the same inputs (MBR-exec / CodeT-style clusters). A ranker maps a candidate's
evidence to a sort key; the pick is a candidate with the best key (ties: any of them)."""

from dataclasses import dataclass

from judge.examples import same_answer, statement_examples
from judge.sandbox import JUDGE_TIMEOUT


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
    problems are judged on the examples as tests."""
    from concurrent.futures import ThreadPoolExecutor

    from judge import Problem, call_outputs, judge_many
    examples = statement_examples(problem)
    calls = [e.given for e in examples] + list(inputs) if problem.kind != "stdio" else []
    if not examples and not calls:
        return [Evidence(c.value, 0, (), 1 + c.duplicates) for c in candidates], 0
    if problem.kind == "stdio":
        shown = Problem(id=problem.id, question="", kind="stdio", inputs=[e.given for e in examples],
                        outputs=[e.expected for e in examples])
        verdicts = judge_many([(c.program, shown) for c in candidates], timeout=timeout)
        return [Evidence(c.value, v.passed, tuple(t.status for t in v.tests), 1 + c.duplicates)
                for c, v in zip(candidates, verdicts)], len(examples) * len(candidates)
    with ThreadPoolExecutor(2) as pool:
        outputs = list(pool.map(lambda c: call_outputs(c.program, calls, timeout=timeout), candidates))
    return [evidence(c.value, out, examples, 1 + c.duplicates) for c, out in zip(candidates, outputs)], \
        len(calls) * len(candidates)


def rerank(problem, candidates, ranker, timeout=JUDGE_TIMEOUT, inputs=()):
    """The candidates (best first by value) ordered by the ranker's key, each with the examples it
    reproduces and its agreement (on the examples' inputs and `inputs`) recorded; ties keep their
    order. Returns (candidates, sandbox runs)."""
    if ranker == "value":
        return candidates, 0
    found, runs = execution_evidence(problem, candidates, timeout, inputs)
    agree = agreement(found)
    for c, e, a in zip(candidates, found, agree):
        c.examples_passed, c.agreement = e.examples_passed, a
    keys = {id(c): RANKERS[ranker](e, a) for c, e, a in zip(candidates, found, agree)}
    return sorted(candidates, key=lambda c: keys[id(c)], reverse=True), runs
