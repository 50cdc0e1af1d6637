"""best_of_k: sample k complete programs in one batch, score each with the value model (its value
at the last token: the outcome reward), return the best, with every candidate ranked."""

from engine.result import Candidate, DecodeResult, Stats
from lm.policy import SamplingParams, mean_logprob
from lm.prompts import build_program, extract_code, messages, stop_after_code


def candidate_params(policy, prompt, cfg, temperature):
    """Sampling for complete programs: the answer ends when its code block closes."""
    return SamplingParams(max_new_tokens=cfg.max_new_tokens, temperature=temperature, top_p=cfg.top_p,
                          seed=cfg.seed, stop_fn=stop_after_code(len(prompt), policy.decode))


def to_candidate(problem, completion):
    return Candidate(build_program(problem, extract_code(completion.text)), completion.text, completion.tokens,
                     None, completion.finish_reason, logprobs=completion.logprobs)


def sample_candidates(policy, problem, cfg, n, temperature):
    prompt = policy.prompt_tokens(messages(problem, cfg.prompt))
    completions = policy.sample(prompt, n, candidate_params(policy, prompt, cfg, temperature))
    return prompt, [to_candidate(problem, c) for c in completions]


def rank_candidates(value, prompt, candidates, dedupe=True):
    """The candidates best first by their value as finished programs (with the policy's mean token
    log-prob of each, for a value model that reads it). With dedupe, identical programs are scored
    once: later copies fold into the first (its `duplicates` counts them)."""
    if dedupe:
        unique = {}
        for c in candidates:
            if c.program in unique:
                unique[c.program].duplicates += 1
            else:
                unique[c.program] = c
        candidates = list(unique.values())
    lps = [c.mean_logprob if c.mean_logprob is not None else mean_logprob(c.logprobs) for c in candidates]
    finals = value.final_values(prompt, [c.tokens for c in candidates], lps)
    for c, v in zip(candidates, finals):
        c.value = v
    # Stable sort: among equal values the earlier sample wins.
    return sorted(candidates, key=lambda c: -c.value)


def best_of_k(policy, value, problem, cfg):
    stats = Stats(policy, value)
    with stats.phase("sample"):
        prompt, candidates = sample_candidates(policy, problem, cfg, cfg.k, cfg.temperature)
    with stats.phase("value"):
        ranked = rank_candidates(value, prompt, candidates, cfg.dedupe)
    stats.extra["unique_programs"] = len(ranked)
    return DecodeResult("best_of_k", ranked[0].program, ranked[0].value, ranked, stats.as_dict())
