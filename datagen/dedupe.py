"""Training sets kept clean: drop every problem whose statement shares a run of N words with a
held-out problem (HumanEval, MBPP's validation split: never trained or tuned on) or has its id (the
same MBPP task in another release), and every problem
whose reference solution fails its own tests (`judge check --json`'s report). The kept rows are
written as they were read, so every loader reads the result like its source."""

import json
import re

from judge.problems import MBPP_SPLITS, ProblemError, dataset_rows, load_dataset, select_mbpp_splits

# Ten words in a row: on LeetCode against HumanEval and MBPP validation, 6-8 words matched hundreds
# of problems through boilerplate ("given an array of integers nums"), 10 matched five, 13 none.
NGRAM = 10


def word_ngrams(text, n=NGRAM):
    words = re.findall(r"[a-z0-9]+", text.lower())
    return {tuple(words[i:i + n]) for i in range(len(words) - n + 1)}


def held_out(spec):
    """The problems of a held-out spec: a dataset spec, with ':split' for MBPP's splits (e.g.
    mbpp.jsonl:validation)."""
    path, _, split = spec.rpartition(":")
    if not path or split.lstrip("-").split(",")[0] not in MBPP_SPLITS:
        path, split = spec, ""
    return select_mbpp_splits(load_dataset(path), split)


def clean(dataset, against, failing=(), n=NGRAM):
    """(kept raw rows, report): `against` lists held-out problems; `failing` the ids whose
    references fail."""
    index = {}
    for p in against:
        for g in word_ngrams(p.question, n):
            index.setdefault(g, set()).add(p.id)
    ids = {p.id for p in against}
    kept, dropped_overlap, dropped_reference = [], {}, []
    failing = set(failing)
    for row, problem in dataset_rows(dataset):
        shared = sorted({pid for g in word_ngrams(problem.question, n) for pid in index.get(g, ())}
                        | ({problem.id} & ids))
        if shared:
            dropped_overlap[problem.id] = shared
        elif problem.id in failing:
            dropped_reference.append(problem.id)
        else:
            kept.append(row)
    report = {"dataset": dataset, "ngram_words": n, "problems": len(kept) + len(dropped_overlap) + len(dropped_reference),
              "kept": len(kept), "dropped_overlap": dropped_overlap, "dropped_reference_fails": dropped_reference}
    return kept, report


def failing_ids(check_report):
    """The problems whose every reference fails, from `judge check --json`'s output file."""
    try:
        with open(check_report, encoding="utf-8") as f:
            report = json.load(f)
        return list(report["problems_all_references_fail"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ProblemError(f"{check_report}: not a `judge check --json` report ({str(exc)[:80]})") from None
