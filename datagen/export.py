"""From judged trees to a per-token training set, split by problem; and tree statistics."""

import os
import random
from collections import defaultdict
from typing import TypedDict

from common.store import write_json_atomic, write_jsonl_atomic
from datagen.tree import Tokens, TreeRow, examples
from lm.features import FeatureSource


class _ExampleKeys(TypedDict):
    problem_id: str
    example_id: str        # "trunk", "a<i>" (a rejected trunk attempt), "r<i>" (a rollout), "s<i>" (a sample)
    label: int             # 1: the program passes
    prompt_tokens: list[int]
    response_tokens: list[int]
    label_start: int       # the per-token target covers response_tokens[label_start:]


class ExampleRow(_ExampleKeys, total=False):
    """One line of an export (train.jsonl, test.jsonl, test_balanced.jsonl): a per-token training
    example; valuemodel reads it (valuemodel.train.read_rows)."""
    policy: str
    tokenizer: str | None  # the policy's vocabulary fingerprint: token ids reused when it matches
    prompt_text: str
    response_text: str
    trunk_source: str
    label_start_char: int  # label_start in characters of response_text (trees older than it: estimated)
    mean_logprob: float | None  # the policy's mean token log-prob of the whole response
    oversampled: bool      # a copy added by --balanced
    features: str          # the critic's features recorded while sampling (lm.features), samples only
    feature_source: FeatureSource  # which model recorded them


# --- a `bench quality` sample row (runs/sample.jsonl): written by bench.quality.sample_rows, and
# defined here because export reads it as training data and datagen sits below bench.

class _WallKeys(TypedDict):
    total: float


class WallTimes(_WallKeys, total=False):
    sample: float
    value: float


class _RunStatsKeys(TypedDict):
    policy_tokens: int
    value_tokens: int
    wall_s: WallTimes


class RunStats(_RunStatsKeys, total=False):
    """A decode's costs (engine.result.Stats); searches add their own counts (steps, branches, ...)."""
    policy_forward_tokens: int
    unique_programs: int


class _SampleCandidateKeys(TypedDict):
    program: str
    text: str
    tokens: Tokens
    finish: str
    passed: bool | int     # true/false (0/1 in older rows)
    verdict: str
    weight: int
    mean_logprob: float    # absent in rows older than it


class SampleCandidate(_SampleCandidateKeys, total=False):
    value: float | None
    features: str          # lm.features.encode_features of the sampler's recorded features


class _SampleKeys(TypedDict):
    problem_id: str
    strategy: str          # "sample"
    policy: str
    prompt_tokens: Tokens
    prompt_text: str
    stats: RunStats
    candidates: list[SampleCandidate]


class SampleRow(_SampleKeys, total=False):
    """One line of a `bench quality` directory's runs/sample.jsonl: best_of_k's k samples of one
    problem, every one judged."""
    tokenizer: str
    features: FeatureSource  # which model recorded the candidates' features (sample_many's)


def split_problems(problem_ids, test_fraction, seed):
    """A seeded split by problem: no problem has rollouts on both sides."""
    ids = sorted(problem_ids)
    random.Random(seed).shuffle(ids)
    n_test = round(len(ids) * test_fraction)
    if 0 < test_fraction < 1 and len(ids) > 1:
        n_test = min(max(n_test, 1), len(ids) - 1)
    return set(ids[n_test:]), set(ids[:n_test])


def balance(rows, seed):
    """Per problem, oversample the minority class (with replacement) up to the majority's count.
    Problems with a single class stay as they are: there is nothing to oversample."""
    rng = random.Random(seed)
    by_problem = defaultdict(lambda: ([], []))
    for r in rows:
        by_problem[r["problem_id"]][r["label"]].append(r)
    out = []
    for pid in sorted(by_problem):
        neg, pos = by_problem[pid]
        out += neg + pos
        if neg and pos:
            minority, majority = (neg, pos) if len(neg) < len(pos) else (pos, neg)
            out += [dict(rng.choice(minority), oversampled=True) for _ in range(len(majority) - len(minority))]
    return out


def class_ratio(rows):
    pos = sum(r["label"] for r in rows)
    return {"examples": len(rows), "positive": pos, "negative": len(rows) - pos,
            "positive_fraction": round(pos / len(rows), 4) if rows else None}


def sample_examples(row: SampleRow):
    """Training examples of a `bench quality` sample row: each judged sample, labelled from its start."""
    return [{"example_id": f"s{i}", "response_tokens": c["tokens"], "label": int(c["passed"]), "label_start": 0,
             "label_start_char": 0, "response_text": c["text"], "trunk_source": "sample", "mean_logprob": c.get("mean_logprob"),
             **({"features": c["features"], "feature_source": row["features"]} if c.get("features") and row.get("features") else {})}
            for i, c in enumerate(row["candidates"])]


def to_rows(tree: TreeRow | SampleRow) -> list[ExampleRow]:
    """Per-token training rows of a judged tree (datagen.tree.TreeRow), or of a bench sample row
    (SampleRow: k judged samples)."""
    settings = tree.get("settings", tree)
    base = {"problem_id": tree["problem_id"], "policy": settings["policy"], "tokenizer": settings.get("tokenizer"),
            "prompt_tokens": tree["prompt_tokens"], "prompt_text": tree["prompt_text"]}
    return [{**base, **ex} for ex in (sample_examples(tree) if "candidates" in tree else examples(tree))]


LABEL_FROM = ("fork", "start")


def export(trees, out_dir, balanced=False, test_fraction=0.2, seed=0, label_from="fork"):
    """Writes train.jsonl, test.jsonl (as sampled), test_balanced.jsonl and stats.json. With
    label_from="start" a rollout is labelled over its whole response, the trunk's prefix included:
    the rows a ranker of whole programs (a value pooled over the program) is fitted to."""
    os.makedirs(out_dir, exist_ok=True)
    train_ids, test_ids = split_problems({t["problem_id"] for t in trees}, test_fraction, seed)
    rows = [row for t in trees for row in to_rows(t)]
    if label_from == "start":
        rows = [{**r, "label_start": 0, "label_start_char": 0} for r in rows]
    train = [r for r in rows if r["problem_id"] in train_ids]
    test = [r for r in rows if r["problem_id"] in test_ids]
    files = {"train.jsonl": balance(train, seed) if balanced else train, "test.jsonl": test,
             "test_balanced.jsonl": balance(test, seed)}
    for name, part in files.items():
        write_jsonl_atomic(os.path.join(out_dir, name), part)
    stats = {"problems": {"train": len(train_ids), "test": len(test_ids)},
             "test_problem_ids": sorted(test_ids), "balanced_train": balanced, "seed": seed, "label_from": label_from,
             "class_ratio": {"all": class_ratio(rows), "train": class_ratio(files["train.jsonl"]),
                             "train_as_sampled": class_ratio(train), "test": class_ratio(test),
                             "test_balanced": class_ratio(files["test_balanced.jsonl"])}}
    write_json_atomic(os.path.join(out_dir, "stats.json"), stats)
    return stats


def tree_stats(trees):
    """Pass rates per problem and per fork depth (forks ranked by position along the trunk, and
    by the fraction of the trunk before them), token counts and time."""
    per_problem, depth, frac = [], defaultdict(list), defaultdict(list)
    tokens = forward = 0
    seconds = 0.0
    for t in trees:
        outcomes = [r.get("verdict") == "pass" for r in t["rollouts"]]
        per_problem.append({"problem_id": t["problem_id"], "trunk": t["trunk"]["source"],
                            "trunk_verdict": t["trunk"]["verdict"], "rollouts": len(outcomes),
                            "pass_rate": round(sum(outcomes) / len(outcomes), 4) if outcomes else None})
        n = max(len(t["trunk"]["tokens"]), 1)
        for rank, f in enumerate(t["forks"], 1):
            kids = [t["rollouts"][i].get("verdict") == "pass" for i in f["rollouts"]]
            depth[rank] += kids
            frac[min(int(10 * f["index"] / n), 9)] += kids
        tokens += t["stats"]["generated_tokens"]
        forward += t["stats"]["forward_tokens"]
        seconds += sum(v for k, v in t["stats"].items() if k.endswith("seconds"))
    rate = lambda xs: round(sum(xs) / len(xs), 4) if xs else None
    all_rollouts = [r.get("verdict") == "pass" for t in trees for r in t["rollouts"]]
    return {
        "trees": len(trees), "rollouts": len(all_rollouts), "pass_rate": rate(all_rollouts),
        "trunks": {src: sum(t["trunk"]["source"] == src for t in trees) for src in ("sample", "reference")},
        "per_problem": per_problem,
        "per_fork_rank": {str(k): {"rollouts": len(v), "pass_rate": rate(v)} for k, v in sorted(depth.items())},
        "per_trunk_fraction": {f"{10 * k}-{10 * k + 10}%": {"rollouts": len(v), "pass_rate": rate(v)}
                               for k, v in sorted(frac.items())},
        "generated_tokens": tokens, "forward_tokens": forward, "seconds": round(seconds, 1),
    }
