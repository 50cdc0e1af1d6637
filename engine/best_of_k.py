"""best_of_k: sample k complete programs in one batch, score each with the value model (its value
at the last token: the outcome reward), return the best, with every candidate ranked. With the load
check, programs that fail to import rank below every one that imports, whatever their value."""

from engine.result import Candidate, DecodeResult, Stats
from lm.prompts import messages, program_from, stop_after_code
from lm.sampling import SamplingParams, mean_logprob


def candidate_params(policy, prompt, cfg, temperature):
    """Sampling for complete programs: the answer ends when its code block closes."""
    return SamplingParams.from_config(cfg, temperature=temperature, stop_fn=stop_after_code(len(prompt), policy.decode))


def to_candidate(problem, completion):
    return Candidate(program_from(problem, completion.text), completion.text, completion.tokens,
                     None, completion.finish_reason, logprobs=completion.logprobs, features=completion.features)


def sample_candidates(policy, problem, cfg, n, temperature):
    prompt = policy.prompt_tokens(messages(problem, cfg.prompt, cfg.prompt_tests))
    completions = policy.sample(prompt, n, candidate_params(policy, prompt, cfg, temperature))
    return prompt, [to_candidate(problem, c) for c in completions]


def load_checked(problem):
    """Whether the load check applies: only to assert problems' programs (HumanEval, MBPP). A stdio
    program reads its input at import, and a call problem's module gets names from the judge that
    the check does not give."""
    return problem.kind == "assert"


def load_checker(problem, cfg):
    """The load check for this problem, or None: programs -> whether each imports (judge.loads_many)."""
    if not (cfg.load_check and load_checked(problem)):
        return None
    from judge import loads_many
    return loads_many


def rank_candidates(value, prompt, candidates, dedupe=True, loads=None, feature_source=None):
    """The candidates best first by their value as finished programs (with the policy's mean token
    log-prob of each, for a value model that reads it); with `loads` (load_checker's), those that
    fail to import come last. With dedupe, identical programs are scored once: later copies fold
    into the first (its `duplicates` counts them). Candidates that carry the features their sampler
    recorded (`feature_source` says which model made them) are scored from those, with no forward
    pass, by a value model that reads exactly them (ValueModel.reads_features)."""
    if dedupe:
        unique = {}
        for c in candidates:
            if c.program in unique:
                unique[c.program].duplicates += 1
            else:
                unique[c.program] = c
        candidates = list(unique.values())
    lps = [c.mean_logprob if c.mean_logprob is not None else mean_logprob(c.logprobs) for c in candidates]
    reads = getattr(value, "reads_features", None)
    if reads and all(c.features is not None for c in candidates) and reads(feature_source):
        finals = value.values_from_features([c.features for c in candidates], lps)
    else:
        finals = value.final_values(prompt, [c.tokens for c in candidates], lps)
    for c, v in zip(candidates, finals):
        c.value = v
    if loads is not None:
        for c, ok in zip(candidates, loads([c.program for c in candidates])):
            c.loads = ok
    # Stable sort: among equal values the earlier sample wins.
    return sorted(candidates, key=lambda c: (c.loads is False, -c.value))


def best_of_k(policy, value, problem, cfg):
    stats = Stats(policy, value)
    with stats.phase("sample"):
        prompt, candidates = sample_candidates(policy, problem, cfg, cfg.k, cfg.temperature)
    with stats.phase("value"):
        ranked = rank_candidates(value, prompt, candidates, cfg.dedupe, load_checker(problem, cfg))
    if cfg.select != "value":
        from engine.select import USES_AGREEMENT, policy_inputs, rerank
        with stats.phase("select"):
            inputs = policy_inputs(policy, [problem])[problem.id] if cfg.select in USES_AGREEMENT else []
            ranked, stats.extra["sandbox_runs"] = rerank(problem, ranked, cfg.select, inputs=inputs)
    stats.extra["unique_programs"] = len(ranked)
    return DecodeResult("best_of_k", ranked[0].program, ranked[0].value, ranked, stats.as_dict())
