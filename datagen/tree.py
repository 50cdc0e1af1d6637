"""Rollout trees (arXiv 2510.23083, sec. 3.2): a trunk per problem, then at its F lowest-probability
generated tokens ("forking tokens") K new rollouts each, sampled from the prefix before that token.

Generation and judging are split so a caller can judge one tree while generating the next:
`grow_tree` samples everything (the trunk's retries are judged inline, since a retry depends on the
verdict), `judge_tree` judges the fork rollouts and fills in labels and fork values.
"""

import time
from dataclasses import asdict, dataclass
from typing import Annotated, TypedDict

from common.cli import ConfigError, option
from common.store import SHALLOW
from judge import JUDGE_TIMEOUT, ProblemError, judge, judge_many
from judge.compare import MODES
from lm.models import vocab_fingerprint
from lm.prompts import (
    DEFAULT_FRAMING,
    FRAMINGS,
    PROMPT_OPTION,
    messages,
    program_from,
    reference_response,
    stop_after_code,
)
from lm.sampling import SamplingParams, mean_logprob

TRUNK_MODES = ("sample", "reference", "auto")
TREES = "trees.jsonl"  # a build directory's tree file: one TreeRow per line (common.store.RowStore)
Tokens = Annotated[list[int], SHALLOW]  # token ids; readers check only that it is a list
LogProbs = Annotated[list[float], SHALLOW]


# --- the stored tree: what grow_tree and judge_tree write, and what stats and export read. Each
# record's first part holds the keys readers rely on (checked on every read, common.store); its
# total=False part the keys written besides.

class _TrunkKeys(TypedDict):
    tokens: Tokens
    verdict: str


class Trunk(_TrunkKeys, total=False):
    source: str            # "sample" or "reference"
    attempts: int          # sampled trunks tried
    logprobs: LogProbs
    text: str
    program: str
    passed: int
    total: int
    finish_reason: str


class Attempt(TypedDict, total=False):
    """A sampled trunk attempt that was not kept (a training example of its own)."""
    tokens: Tokens
    logprobs: LogProbs
    text: str
    program: str
    verdict: str
    passed: int
    total: int
    finish_reason: str


class Fork(TypedDict, total=False):
    index: int             # position in the trunk's tokens
    token: int
    logprob: float
    rollouts: list[int]    # indices into the tree's rollouts
    value: float | None    # fraction of those rollouts that pass (judge_tree)


class _RolloutKeys(TypedDict):
    id: int
    tokens: Tokens         # the tokens after the shared prefix
    verdict: str
    prefix_len: int        # trunk tokens before the fork
    fork: int


class Rollout(_RolloutKeys, total=False):
    logprobs: LogProbs
    finish_reason: str
    text: str              # the whole response: prefix + tokens
    prefix_chars: int      # characters of `text` before the rollout's own tokens (the fork's prefix)
    program: str
    passed: int
    total: int


class _TreeStatsKeys(TypedDict):
    generated_tokens: int
    forward_tokens: int


class TreeStats(_TreeStatsKeys, total=False):
    trunk_seconds: float
    fork_seconds: float
    judge_seconds: float


class _TreeKeys(TypedDict):
    problem_id: str
    prompt_tokens: Tokens
    prompt_text: str
    settings: dict         # the policy, its tokenizer's fingerprint and the TreeConfig fields
    trunk: Trunk
    forks: Annotated[list[Fork], SHALLOW]
    rollouts: list[Rollout]
    stats: TreeStats


class TreeRow(_TreeKeys, total=False):
    """One line of trees.jsonl: a judged rollout tree."""
    source: str
    kind: str
    rejected_attempts: list[Attempt]


@dataclass
class TreeConfig:
    """A tree's settings; `datagen build` takes its options from these fields."""
    forks: int = option(6, "F: forking tokens per trunk (default %(default)s)")
    per_fork: int = option(6, "K: rollouts per fork (default %(default)s)")
    trunk: str = option("auto", "sample (the paper), reference (teacher-forced reference), auto (sample, else reference)",
                        choices=TRUNK_MODES)
    retries: int = option(3, "R: sampled trunks tried to find a passing one")
    min_spacing: int = option(1, "minimum tokens between fork positions")
    max_new_tokens: int = 512
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int = 0
    timeout: float = option(JUDGE_TIMEOUT, "judge seconds per test")
    mode: str = option("strict", choices=MODES)  # judge comparison mode
    stop_after_code: bool = True  # end a rollout once its code block closes (saves tokens; not an option)
    prompt: str = option(DEFAULT_FRAMING, **PROMPT_OPTION)  # prompt framing (lm/prompts.py)

    def __post_init__(self):
        if self.prompt not in FRAMINGS:
            raise ConfigError(f"prompt must be one of {', '.join(FRAMINGS)}, not {self.prompt!r}")
        if self.trunk not in TRUNK_MODES:
            raise ConfigError(f"trunk must be one of {', '.join(TRUNK_MODES)}, not {self.trunk!r}")
        if self.forks < 0 or self.per_fork < 1 or self.retries < 1 or self.min_spacing < 1:
            raise ConfigError("forks >= 0, per-fork >= 1, retries >= 1 and min-spacing >= 1 are required")


def select_forks(logprobs, count, min_spacing=1):
    """Indices of the `count` lowest-probability tokens, at least `min_spacing` apart, ascending.
    The last token (usually EOS) is never a fork: resampling it adds nothing."""
    candidates = sorted(range(max(len(logprobs) - 1, 0)), key=lambda i: (logprobs[i], i))
    chosen = []
    for i in candidates:
        if len(chosen) == count:
            break
        if all(abs(i - j) >= min_spacing for j in chosen):
            chosen.append(i)
    return sorted(chosen)


def _params(cfg, seed, stop_fn=None):
    return SamplingParams.from_config(cfg, seed=seed, stop_fn=stop_fn)


def _judge_one(problem, text, cfg):
    program = program_from(problem, text)
    v = judge(program, problem, mode=cfg.mode, timeout=cfg.timeout)
    return program, v


def _seed(cfg, problem_seed):
    return cfg.seed * 1_000_003 + problem_seed


def _pick_trunk(problem, completions, cfg):
    """The paper retries a sampled trunk up to R times until one passes: the R samples are drawn in
    one batch and the first passing one (in sampling order) is kept. Returns (index kept, the trunk,
    the attempts not kept): judged samples too, training examples of their own."""
    programs = [program_from(problem, c.text) for c in completions]
    verdicts = judge_many([(p, problem) for p in programs], mode=cfg.mode, timeout=cfg.timeout)
    pick = next((i for i, v in enumerate(verdicts) if v.ok), len(completions) - 1)
    records = [{"tokens": c.tokens, "logprobs": c.logprobs, "text": c.text, "program": p, "verdict": v.verdict,
                "passed": v.passed, "total": v.total, "finish_reason": c.finish_reason}
               for c, p, v in zip(completions, programs, verdicts)]
    trunk = {"source": "sample", "attempts": pick + 1, **records[pick]}
    return pick, trunk, [r for i, r in enumerate(records) if i != pick]


def _needs_reference(problem, cfg, trunk):
    return cfg.trunk == "reference" or (cfg.trunk == "auto" and trunk["verdict"] != "pass" and problem.references)


def _reference_trunk(policy, problem, prompt, cfg, trunk, rejected):
    """The teacher-forced reference as the trunk, and its PrefixState. The last sampled attempt it
    replaces stays a training example."""
    if not problem.references:
        raise ProblemError(f"problem {problem.id} has no reference solution for a reference trunk")
    if trunk:
        rejected.append({k: trunk[k] for k in ("tokens", "logprobs", "text", "program", "verdict", "passed",
                                               "total", "finish_reason")})
    response = reference_response(problem, problem.references[0])
    tokens = policy.tokenizer(response, add_special_tokens=False)["input_ids"] + policy.eos_ids[:1]
    logprobs, state = policy.teacher_force(prompt, tokens)
    program, v = _judge_one(problem, response, cfg)
    trunk = {"source": "reference", "attempts": trunk["attempts"] if trunk else 0, "tokens": tokens,
             "logprobs": logprobs, "text": response, "program": program, "verdict": v.verdict,
             "passed": v.passed, "total": v.total, "finish_reason": "eos"}
    return trunk, state


def _tree_row(policy, problem, cfg, prompt, trunk, rejected, fork_at, groups, stats) -> TreeRow:
    forks, rollouts = [], []
    for j, (i, group) in enumerate(zip(fork_at, groups)):
        ids = []
        prefix_text = policy.decode(trunk["tokens"][:i])
        for c in group:
            text = policy.decode(trunk["tokens"][:i] + c.tokens)
            rollouts.append({"id": len(rollouts), "fork": j, "prefix_len": i, "tokens": c.tokens,
                             "logprobs": c.logprobs, "finish_reason": c.finish_reason, "text": text,
                             "prefix_chars": _shared_chars(prefix_text, text)})
            ids.append(len(rollouts) - 1)
        forks.append({"index": i, "token": trunk["tokens"][i], "logprob": trunk["logprobs"][i],
                      "rollouts": ids})
    return {"problem_id": problem.id, "source": problem.source, "kind": problem.kind,
            "settings": {"policy": policy.name, "tokenizer": vocab_fingerprint(policy.tokenizer), **asdict(cfg)},
            "prompt_tokens": prompt, "prompt_text": policy.tokenizer.decode(prompt),
            "trunk": trunk, "rejected_attempts": rejected, "forks": forks, "rollouts": rollouts, "stats": stats}


def grow_tree(policy, problem, cfg, problem_seed=0) -> TreeRow:
    """Sample the trunk (judging sampled attempts) and every fork rollout; returns an unjudged tree.
    The forks read their prefixes from the trunk's KV cache (sample_forks), so nothing is prefilled
    twice."""
    t0 = time.perf_counter()
    before = policy.stats.snapshot()
    prompt = policy.prompt_tokens(messages(problem, cfg.prompt))
    seed = _seed(cfg, problem_seed)
    stop = stop_after_code(len(prompt), policy.decode) if cfg.stop_after_code else None
    trunk, state, rejected = None, None, []
    if cfg.trunk in ("sample", "auto"):
        samples = policy.sample_with_state(prompt, _params(cfg, seed, stop), n=cfg.retries)
        pick, trunk, rejected = _pick_trunk(problem, [c for c, _ in samples], cfg)
        state = samples[pick][1]
    if _needs_reference(problem, cfg, trunk):
        trunk, state = _reference_trunk(policy, problem, prompt, cfg, trunk, rejected)
    t_trunk = time.perf_counter()
    fork_at = select_forks(trunk["logprobs"], cfg.forks, cfg.min_spacing)
    groups = policy.sample_forks(state, [len(prompt) + i for i in fork_at], cfg.per_fork,
                                 _params(cfg, seed + 7919, stop)) if fork_at else []
    after = policy.stats
    stats = {"generated_tokens": after.generated_tokens - before.generated_tokens,
             "forward_tokens": after.forward_tokens - before.forward_tokens,
             "trunk_seconds": round(t_trunk - t0, 3), "fork_seconds": round(time.perf_counter() - t_trunk, 3)}
    return _tree_row(policy, problem, cfg, prompt, trunk, rejected, fork_at, groups, stats)


def grow_trees(policy, items, cfg, max_rows=32) -> list[TreeRow]:
    """grow_tree for several problems side by side: all their sampled trunk attempts share one
    continuously refilled batch of up to max_rows rows (HFPolicy.sample_many), then all their forks'
    rollouts do, so no tree's longest rollout leaves the batch idling. `items` are (problem,
    problem_seed) pairs; the unjudged trees come back in their order. Each fork's prefix is prefilled
    once (no trunk cache is carried between the phases); a tree's stats count the tokens fed for it
    and split each phase's time evenly over the trees."""
    t0 = time.perf_counter()
    setups = []
    for problem, problem_seed in items:
        prompt = policy.prompt_tokens(messages(problem, cfg.prompt))
        stop = stop_after_code(len(prompt), policy.decode) if cfg.stop_after_code else None
        setups.append((problem, prompt, _seed(cfg, problem_seed), stop))
    fed = [0] * len(setups)   # forward tokens per tree: each request's prefix once, then its rows' tokens
    made = [0] * len(setups)  # generated tokens per tree

    def count(t, prefix, completions):
        fed[t] += len(prefix) + sum(len(c.tokens) - 1 for c in completions)
        made[t] += sum(len(c.tokens) for c in completions)

    trunks = [None] * len(setups)
    rejected = [[] for _ in setups]
    if cfg.trunk in ("sample", "auto"):
        requests = [(prompt, cfg.retries, _params(cfg, seed, stop)) for _, prompt, seed, stop in setups]
        for t, completions in enumerate(_sample_all(policy, requests, max_rows)):
            count(t, requests[t][0], completions)
            _, trunks[t], rejected[t] = _pick_trunk(setups[t][0], completions, cfg)
    for t, (problem, prompt, _, _) in enumerate(setups):
        if _needs_reference(problem, cfg, trunks[t]):
            trunks[t], _ = _reference_trunk(policy, problem, prompt, cfg, trunks[t], rejected[t])
            fed[t] += len(prompt) + len(trunks[t]["tokens"]) - 1
    t_trunk = time.perf_counter()
    fork_at = [select_forks(trunk["logprobs"], cfg.forks, cfg.min_spacing) for trunk in trunks]
    # One request per fork, each with its own seed, so two forks of a tree draw different numbers.
    owners, requests = [], []
    for t, ((_, prompt, seed, stop), trunk) in enumerate(zip(setups, trunks)):
        for j, i in enumerate(fork_at[t]):
            owners.append(t)
            requests.append((prompt + trunk["tokens"][:i], cfg.per_fork, _params(cfg, seed + 7919 + j, stop)))
    groups = [[] for _ in setups]
    for t, request, completions in zip(owners, requests, _sample_all(policy, requests, max_rows)):
        count(t, request[0], completions)
        groups[t].append(completions)
    t_end = time.perf_counter()
    share = max(len(setups), 1)
    return [_tree_row(policy, problem, cfg, prompt, trunks[t], rejected[t], fork_at[t], groups[t],
                      {"generated_tokens": made[t], "forward_tokens": fed[t],
                       "trunk_seconds": round((t_trunk - t0) / share, 3),
                       "fork_seconds": round((t_end - t_trunk) / share, 3)})
            for t, (problem, prompt, _, _) in enumerate(setups)]


def _sample_all(policy, requests, max_rows):
    """Every (prefix, n, params) request's n completions, in request order: in one continuously
    refilled batch where the policy has one (HFPolicy.sample_many), else one request at a time."""
    if not requests:
        return []
    if hasattr(policy, "sample_many"):
        done = dict(policy.sample_many(requests, max_rows=max_rows))
        return [done[i] for i in range(len(requests))]
    return [policy.sample(prefix, n, params) for prefix, n, params in requests]


def judge_tree(tree: TreeRow, problem, cfg) -> TreeRow:
    """Judge every fork rollout (a batch on the sandbox pool); fill verdicts and fork values."""
    t0 = time.perf_counter()
    programs = [program_from(problem, r["text"]) for r in tree["rollouts"]]
    verdicts = judge_many(list(zip(programs, [problem] * len(programs))), mode=cfg.mode, timeout=cfg.timeout)
    for r, program, v in zip(tree["rollouts"], programs, verdicts):
        r.update(program=program, verdict=v.verdict, passed=v.passed, total=v.total)
    for f in tree["forks"]:
        # Monte-Carlo value of the fork node: the fraction of its children that pass.
        outcomes = [tree["rollouts"][i]["verdict"] == "pass" for i in f["rollouts"]]
        f["value"] = sum(outcomes) / len(outcomes) if outcomes else None
    tree["stats"]["judge_seconds"] = round(time.perf_counter() - t0, 3)
    return tree


def _shared_chars(prefix, text):
    """How many leading characters of `text` are the prefix's: all of them, unless the fork split a
    multi-byte character (the prefix's decode then ends in a replacement character)."""
    if text.startswith(prefix):
        return len(prefix)
    n = 0
    while n < min(len(prefix), len(text)) and prefix[n] == text[n]:
        n += 1
    return n


def examples(tree):
    """Training examples of a judged tree: every rollout and the trunk, with the per-token target
    (1 = the program passes) over its own generated tokens, from label_start on (label_start_char:
    the same place in characters of response_text, for a value model with another tokenizer), and
    the policy's mean token log-prob of the whole response."""
    trunk = tree["trunk"]
    out = [{"example_id": "trunk", "response_tokens": trunk["tokens"], "label": int(trunk["verdict"] == "pass"),
            "label_start": 0, "label_start_char": 0, "response_text": trunk["text"], "trunk_source": trunk["source"],
            "mean_logprob": mean_logprob(trunk.get("logprobs"))}]
    for i, a in enumerate(tree.get("rejected_attempts", [])):  # sampled trunk attempts that were not kept
        out.append({"example_id": f"a{i}", "response_tokens": a["tokens"], "label": int(a["verdict"] == "pass"),
                    "label_start": 0, "label_start_char": 0, "response_text": a["text"], "trunk_source": "sample",
                    "mean_logprob": mean_logprob(a.get("logprobs"))})
    for r in tree["rollouts"]:
        own = r.get("logprobs")
        out.append({"example_id": f"r{r['id']}", "response_tokens": trunk["tokens"][:r["prefix_len"]] + r["tokens"],
                    "label": int(r["verdict"] == "pass"), "label_start": r["prefix_len"],
                    **({"label_start_char": r["prefix_chars"]} if "prefix_chars" in r else {}),
                    "response_text": r["text"], "trunk_source": trunk["source"],
                    "mean_logprob": mean_logprob(trunk.get("logprobs", [])[:r["prefix_len"]] + own) if own else None})
    return out


def to_networkx(tree):
    """The tree as a networkx DiGraph: root (prompt) -> trunk -> fork nodes -> rollouts (needs the
    optional networkx: pip install 'forkcode[graph]')."""
    import networkx as nx
    g = nx.DiGraph(problem_id=tree["problem_id"])
    trunk = tree["trunk"]
    g.add_node("prompt", kind="prompt", tokens=len(tree["prompt_tokens"]))
    g.add_node("trunk", kind="trunk", source=trunk["source"], verdict=trunk["verdict"],
               tokens=len(trunk["tokens"]), value=float(trunk["verdict"] == "pass"))
    g.add_edge("prompt", "trunk")
    for j, f in enumerate(tree["forks"]):
        node = f"fork{j}"
        g.add_node(node, kind="fork", index=f["index"], logprob=f["logprob"], value=f.get("value"))
        g.add_edge("trunk", node, at=f["index"])
        for i in f["rollouts"]:
            r = tree["rollouts"][i]
            g.add_node(f"r{i}", kind="rollout", verdict=r.get("verdict"), tokens=len(r["tokens"]),
                       value=float(r.get("verdict") == "pass"))
            g.add_edge(node, f"r{i}")
    return g
