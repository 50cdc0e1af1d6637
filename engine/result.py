"""What every decoding strategy takes and returns: one config, one result type."""

import argparse
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Protocol

from common.cli import ConfigError, option
from engine.select import DEFAULT_SELECT, RANKERS
from lm.prompts import DEFAULT_FRAMING, FRAMINGS, PROMPT_OPTION


class ValueFunction(Protocol):
    """The value-model interface the strategies use (valuemodel.ValueModel implements it; a test
    checks). A batched search reads a ValueModel's values from the policy's hidden states or its own
    batched forward (engine.batch.value_track), any other one's through an incremental scorer per row."""
    tokens_scored: int

    def values(self, sequences: list) -> list: ...   # per-token values for each token sequence
    def final_values(self, prefix: list, continuations: list,
                     mean_logprobs: list | None = None) -> list: ...  # each finished program's value
    def program_value(self, values: list, mean_logprob: float | None = None) -> float: ...  # from token values
    def scorer(self): ...                             # incremental scorer: .extend(tokens), .fork()


def parse_step(text):
    """A beam step as an option: "line" or a number of tokens."""
    if text != "line" and not (text.isdigit() and int(text) > 0):
        raise argparse.ArgumentTypeError("must be 'line' or a number of tokens")
    return text


@dataclass
class DecodeConfig:
    """Every strategy's settings; `decode` and `bench quality` take their options from these fields."""
    strategy: str = "best_of_k"  # decode --strategy (choices: the strategy table, engine.run.STRATEGIES)
    k: int = option(8, "best_of_k: samples (default %(default)s)")
    temperature: float = 0.8
    top_p: float = 0.95
    max_new_tokens: int = 512
    dedupe: bool = True          # best_of_k: score identical programs once (not an option)
    seed: int = 0
    beam_width: int = option(3, "beam: B")  # B beams survive each step
    expansions: int = option(3, "beam: E continuations per beam and step")
    step: str = option("line", "beam: 'line' or a number of tokens per step", type=parse_step)
    token_budget: int = option(4096, "beam: policy tokens in all")
    branch_prob: float = option(0.1, "tree: fork at tokens less likely than this")
    max_branches: int = option(7, "tree: rollouts besides the first")  # besides the trunk
    abort_value: float = option(0.2, "tree: abort below this value")
    patience: int = option(8, "tree: for this many consecutive tokens")
    warmup: float = option(0.5, "tree: after this fraction of the first rollout's length")
    prompt: str = option(DEFAULT_FRAMING, **PROMPT_OPTION)
    prompt_tests: bool = option(True, "assert problems (MBPP): show the tests in the prompt (default); "
                                      "--no-prompt-tests shows only the reference's signature")
    load_check: bool = option(True, "best_of_k: run each program once in the sandbox without tests and rank "
                                    "those that fail to import last (assert problems: HumanEval, MBPP; default: on)")
    select: str = option(DEFAULT_SELECT, "best_of_k: how to pick: value (the critic alone), or with the statement's "
                                         "examples and the policy's test inputs run in the sandbox: examples+value, "
                                         "examples, agreement, examples+agreement+value, or fitted (weights on all of it "
                                         "fitted on training problems; results/qwen/selection-fit) (default %(default)s)",
                         choices=tuple(RANKERS))

    def __post_init__(self):
        if self.select not in RANKERS:
            raise ConfigError(f"select must be one of {', '.join(RANKERS)}, not {self.select!r}")
        if self.prompt not in FRAMINGS:
            raise ConfigError(f"prompt must be one of {', '.join(FRAMINGS)}, not {self.prompt!r}")
        if not (self.step == "line" or str(self.step).isdigit() and int(self.step) > 0):
            raise ConfigError(f"step must be 'line' or a number of tokens, not {self.step!r}")
        rules = [("k", self.k >= 1, ">= 1"), ("max-new-tokens", self.max_new_tokens >= 1, ">= 1"),
                 ("temperature", self.temperature >= 0, ">= 0"), ("top-p", 0 < self.top_p <= 1, "in (0, 1]"),
                 ("beam-width", self.beam_width >= 1, ">= 1"), ("expansions", self.expansions >= 1, ">= 1"),
                 ("token-budget", self.token_budget >= 1, ">= 1"), ("branch-prob", 0 <= self.branch_prob <= 1, "in [0, 1]"),
                 ("max-branches", self.max_branches >= 0, ">= 0"), ("abort-value", 0 <= self.abort_value <= 1, "in [0, 1]"),
                 ("patience", self.patience >= 1, ">= 1"), ("warmup", 0 <= self.warmup <= 1, "in [0, 1]")]
        for name, ok, rule in rules:
            if not ok:
                raise ConfigError(f"{name} must be {rule}, not {getattr(self, name.replace('-', '_'))}")


@dataclass
class Candidate:
    program: str
    text: str
    tokens: list
    value: float | None
    finish_reason: str
    duplicates: int = 0          # identical programs folded into this one
    origin: str = ""             # tree: "trunk" or the branch path
    logprobs: list = None        # the policy's log-probs of its tokens (sampled candidates)
    mean_logprob: float | None = None  # their mean, where only it is kept (stored samples)
    loads: bool | None = None    # the load check: whether the program imports (None: not run)
    features: object = None      # the critic's features recorded while sampling (lm.features), if any
    examples_passed: int | None = None  # --select: the statement's examples it reproduces (None: not run)
    agreement: int | None = None        # --select: samples giving its outputs on those examples' inputs


@dataclass
class DecodeResult:
    strategy: str
    program: str
    value: float | None
    candidates: list             # ranked, best first
    stats: dict = field(default_factory=dict)

    def to_dict(self):
        out = asdict(self)
        for c in out["candidates"]:
            c.pop("features", None)  # a tensor, for ranking; stored rows encode it (lm.features)
        return out


class Stats:
    """Counts policy and value tokens and wall time per phase for one decode."""

    def __init__(self, policy, value=None):
        self.policy, self.value = policy, value
        self.policy0 = policy.stats.snapshot()
        self.value0 = getattr(value, "tokens_scored", 0)
        self.wall = {}
        self.extra = {}

    @contextmanager
    def phase(self, name):
        start = time.perf_counter()
        try:
            yield
        finally:
            self.wall[name] = round(self.wall.get(name, 0.0) + time.perf_counter() - start, 4)

    def as_dict(self, frontier=None):
        """The counts of this decode: from the policy's and value model's counters, or, for a search
        on a batched frontier (engine.batch; other searches may share those counters), from the
        frontier's own accounts (every token fed to the policy gets its value)."""
        now = self.policy.stats
        if frontier is not None:
            counts = {"policy_tokens": frontier.counts["sampled"], "policy_forward_tokens": frontier.counts["fed"],
                      "value_tokens": frontier.counts["fed"]}
        else:
            counts = {"policy_tokens": now.generated_tokens - self.policy0.generated_tokens,
                      "policy_forward_tokens": now.forward_tokens - self.policy0.forward_tokens,
                      "value_tokens": getattr(self.value, "tokens_scored", 0) - self.value0}
        return {**counts,
                "wall_s": {**self.wall, "total": round(sum(self.wall.values()), 4)}, **self.extra}
