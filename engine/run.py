"""The engine as a library: the strategy table, loading the models, and decoding many problems.
`decode` (engine/cli.py) and `bench quality` both call these; neither reads the other's CLI."""

import importlib
import os

from common.cli import ConfigError

# Every strategy: name -> "module:function", one file each over the one DecodeConfig (imported when
# used, so that --help stays light). Beam and tree also have a generator form that can share each
# step's batch with other problems' searches (engine.batch.run_searches).
STRATEGIES = {"greedy": "engine.baselines:greedy", "sample": "engine.baselines:sample",
              "best_of_k": "engine.best_of_k:best_of_k", "beam": "engine.beam:beam", "tree": "engine.tree:tree"}
SEARCHES = {"beam": "engine.beam:beam_search", "tree": "engine.tree:tree_search"}
NEEDS_VALUE = ("best_of_k", "beam", "tree")
# Where the project's default value model lives (a delta on the default policy).
DEFAULT_VALUE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "valuemodel", "default")


def _function(spec):
    module, fn = spec.split(":")
    return getattr(importlib.import_module(module), fn)


def strategy_fn(name):
    """The strategy's function: (policy, value, problem, DecodeConfig) -> DecodeResult."""
    if name not in STRATEGIES:
        raise ConfigError(f"unknown strategy {name!r}: choose from {', '.join(STRATEGIES)}")
    return _function(STRATEGIES[name])


def decode_all(policy, value, problems, strategy, cfg, max_rows):
    """(problem, result) for every problem, in the order they finish. Beam and tree searches of
    several problems run side by side, sharing each step's batched forward (engine.batch.run_searches,
    at most max_rows rows); the other strategies decode one problem at a time."""
    if strategy not in SEARCHES or len(problems) == 1:
        run = strategy_fn(strategy)
        for problem in problems:
            yield problem, run(policy, value, problem, cfg)
        return
    from engine.batch import run_searches
    search = _function(SEARCHES[strategy])
    searches = (search(policy, value, p, cfg) for p in problems)
    width = cfg.beam_width * cfg.expansions if strategy == "beam" else cfg.max_branches + 1
    for index, result in run_searches(searches, max_rows=max_rows, width=width):
        yield problems[index], result


def load_models(policy_spec, value_dir=None, *, backend="hf", dtype="auto", device="auto", needs_value=False,
                tensor_parallel_size=1, strategy="decode"):
    """The policy and the value model (the given one, else the shipped default when the strategy
    needs one). A value model with another tokenizer than the policy's reads the policy's text
    (valuemodel.text_value.TextValue); on the vLLM backend, one that shares it scores whole programs
    on vLLM (valuemodel.vllm_value.VLLMValue)."""
    from lm.models import ModelError, vocab_fingerprint
    from lm.policy import load_policy
    path = value_dir or (DEFAULT_VALUE if needs_value and os.path.exists(os.path.join(DEFAULT_VALUE, "value_config.json"))
                         else None)
    if needs_value and path is None:
        raise ModelError(f"{strategy} needs a value model: pass --value DIR "
                         "(train one with `valuemodel train`; no default value model is installed)")
    if path is not None:
        from valuemodel.model import read_checkpoint_config
        read_checkpoint_config(path)  # a damaged checkpoint fails now, not after the policy has loaded
    policy = load_policy(policy_spec, backend, dtype=dtype, device=device, tensor_parallel_size=tensor_parallel_size)
    value = None
    if path is not None:
        from valuemodel.model import ValueModel
        value = ValueModel.load(path, dtype=dtype, device=device, fallback_base=policy_spec)
        if vocab_fingerprint(value.tokenizer) != vocab_fingerprint(policy.tokenizer):
            from valuemodel.text_value import TextValue
            value = TextValue(value, policy.decode, policy.tokenizer.decode)
        elif backend == "vllm":  # whole programs scored on vLLM too (its pooling runner)
            from valuemodel.vllm_value import VLLMValue
            value = VLLMValue(value, dtype=dtype, tensor_parallel_size=tensor_parallel_size)
    return policy, value
