"""The unguided baselines: `greedy` (temperature 0) and `sample` (one sample at the configured
temperature). With a value model the chosen program's value is reported too."""

from engine.best_of_k import sample_candidates
from engine.result import DecodeResult, Stats


def _single(policy, value, problem, cfg, strategy, temperature):
    stats = Stats(policy, value)
    with stats.phase("sample"):
        prompt, (cand,) = sample_candidates(policy, problem, cfg, 1, temperature)
    if value is not None:
        with stats.phase("value"):
            cand.value = value.final_values(prompt, [cand.tokens])[0]  # read as best_of_k reads it
    return DecodeResult(strategy, cand.program, cand.value, [cand], stats.as_dict())


def greedy(policy, value, problem, cfg):
    return _single(policy, value, problem, cfg, "greedy", 0.0)


def sample(policy, value, problem, cfg):
    return _single(policy, value, problem, cfg, "sample", cfg.temperature)
