"""The quality report: every strategy on one dataset, everything judged, written to a directory.

`bench quality` decodes each problem with greedy, best_of_k, beam and tree. best_of_k runs in two
resumable steps: `sample` draws its k programs and judges them all (runs/sample.jsonl keeps their
tokens and mean log-probs), then the value model scores those same programs and picks one
(runs/best_of_k.jsonl) -- exactly engine.best_of_k's choice, so sampling (the long part) needs no
value model and other rankers can be compared on the very same samples: the policy's mean token
log-prob, the exact random-pick expectation, and the oracle (pass@k).
Rows go to `runs/<strategy>.jsonl` as each problem finishes, so a killed run resumes where it
stopped. `bench report DIR` (also run at the end) writes `summary.json`, `report.md` and
`pass_vs_tokens.png`: pass@1 with a 95% interval, policy and value tokens and wall time per problem.
"""

import json
import math
import os
import random
import time
from collections.abc import Iterator
from typing import TypedDict

from common.store import RowStore, StoreError, read_json, write_json_atomic, write_text_atomic
from datagen.export import RunStats, SampleRow
from engine.run import STRATEGIES
from judge import JUDGE_TIMEOUT, judge_many
from lm.options import DEFAULT_BATCH_ROWS
from valuemodel.metrics import random_pass_at_k, top_k_pass

SETTINGS = "settings.json"


class _RunCandidateKeys(TypedDict):
    passed: bool | int     # true/false (0/1 in older rows)
    weight: int            # 1 + the identical samples folded into it


class RunCandidate(_RunCandidateKeys, total=False):
    value: float | None
    verdict: str
    tokens: int            # how many
    finish: str
    mean_logprob: float | None
    loads: bool | None     # the load check's verdict (best_of_k with --load-check): the program imports
    examples_passed: int   # --select: the statement's examples it reproduces
    agreement: int         # --select: samples with its outputs on those examples' inputs


class _RunKeys(TypedDict):
    problem_id: str
    strategy: str
    passed: bool | int
    stats: RunStats
    candidates: list[RunCandidate]


class RunRow(_RunKeys, total=False):
    """One line of runs/<strategy>.jsonl (all but sample: SampleRow): the chosen program's verdict,
    the decode's costs, and the candidates it ranked."""
    verdict: str
    value: float | None


def wilson(successes, n, z=1.96):
    """95% Wilson score interval of a binomial proportion (sound at 0 and n, unlike the normal one)."""
    if n == 0:
        return (None, None)
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (max(0.0, centre - half), min(1.0, centre + half))


def bootstrap(per_problem, stat, resamples=2000, seed=0):
    """95% percentile interval of stat(rows) over problems resampled with replacement."""
    if not per_problem:
        return (None, None)
    rng = random.Random(seed)
    n = len(per_problem)
    values = []
    for _ in range(resamples):
        v = stat([per_problem[rng.randrange(n)] for _ in range(n)])
        if v is not None:
            values.append(v)
    if not values:
        return (None, None)
    values.sort()
    return (values[int(0.025 * (len(values) - 1))], values[int(0.975 * (len(values) - 1))])


def judged_row(problem, result, verdicts) -> RunRow:
    """One stored row: the chosen program's verdict and, per candidate, its value, verdict and
    weight (1 + identical samples folded into it), so the sample metrics can be read back."""
    chosen = next(v for c, v in zip(result.candidates, verdicts) if c.program == result.program)
    return {"problem_id": problem.id, "strategy": result.strategy, "passed": chosen.verdict == "pass",
            "verdict": chosen.verdict, "value": result.value, "stats": result.stats,
            "candidates": [{"value": c.value, "passed": v.verdict == "pass", "verdict": v.verdict,
                            "weight": 1 + c.duplicates, "tokens": len(c.tokens), "finish": c.finish_reason}
                           for c, v in zip(result.candidates, verdicts)]}


def sample_requests(policy, problems, cfg):
    """(prompt tokens, sample_many request) of each problem: best_of_k's k samples of its prompt."""
    from engine.best_of_k import candidate_params
    from lm.prompts import messages
    prompts = [policy.prompt_tokens(messages(p, cfg.prompt, cfg.prompt_tests)) for p in problems]
    return prompts, [(prompt, cfg.k, candidate_params(policy, prompt, cfg, cfg.temperature)) for prompt in prompts]


def sample_rows(policy, problems, cfg, timeout=JUDGE_TIMEOUT, max_rows=DEFAULT_BATCH_ROWS) -> Iterator[SampleRow]:
    """best_of_k's k samples of each problem, all judged, with what any ranker needs to pick later;
    yields one row per problem as it finishes. Several problems share one batch (up to max_rows
    rows) where the policy can (HFPolicy.sample_many), which also records each sample's critic
    features (lm.features). Each row's wall time is the time since the previous row, so the rows
    add up to the run's wall time."""
    from engine.best_of_k import to_candidate
    from lm.features import encode_features, feature_source
    from lm.models import vocab_fingerprint
    prompts, requests = sample_requests(policy, problems, cfg)
    source = None
    if hasattr(policy, "sample_many"):
        stream = policy.sample_many(requests, max_rows=max_rows, features=True)
        source = feature_source(policy)
    else:
        stream = ((i, policy.sample(prefix, n, params)) for i, (prefix, n, params) in enumerate(requests))
    fingerprint = vocab_fingerprint(policy.tokenizer)
    before, start = policy.stats.snapshot(), time.perf_counter()
    for i, completions in stream:
        now = policy.stats.snapshot()
        problem, prompt = problems[i], prompts[i]
        cands = [to_candidate(problem, c) for c in completions]
        # Judged here, between decode steps: a problem's programs take about 0.3 s on 2 cores; a
        # judging thread beside the sampler was slower (the sandboxes and the GIL compete with it).
        verdicts = judge_many([(c.program, problem) for c in cands], timeout=timeout)
        seconds = time.perf_counter() - start
        row: SampleRow = {
            "problem_id": problem.id, "strategy": "sample", "policy": policy.name, "tokenizer": fingerprint,
            "prompt_tokens": prompt, "prompt_text": policy.tokenizer.decode(prompt),
            "stats": {"policy_tokens": sum(len(c.tokens) for c in cands),
                      "policy_forward_tokens": now.forward_tokens - before.forward_tokens,
                      "value_tokens": 0, "wall_s": {"sample": round(seconds, 4), "total": round(seconds, 4)}},
            **({"features": source} if source else {}),
            "candidates": [{"program": c.program, "text": c.text, "tokens": c.tokens, "finish": c.finish_reason,
                            "mean_logprob": _mean(c.logprobs), "passed": v.verdict == "pass",
                            "verdict": v.verdict, "value": None, "weight": 1,
                            **({"features": encode_features(c.features)} if c.features is not None else {})}
                           for c, v in zip(cands, verdicts)]}
        yield row
        before, start = policy.stats.snapshot(), time.perf_counter()


def sample_rows_on_workers(policy_options, problems, cfg, workers, address=None, timeout=JUDGE_TIMEOUT,
                          max_rows=DEFAULT_BATCH_ROWS, on_start=None) -> Iterator[SampleRow]:
    """sample_rows on Ray actors (common.distributed), each with its own policy replica
    (load_policy(**policy_options)) and its own sandboxes: chunks of max_rows / k problems, so each
    actor's batch is as full as one process's; rows come back a chunk at a time."""
    from common.distributed import map_unordered
    size = max(1, max_rows // cfg.k)
    chunks = [problems[i:i + size] for i in range(0, len(problems), size)]
    gpus = 1 if policy_options.get("backend") == "vllm" else 0
    for rows in map_unordered(_sampler(policy_options, cfg, timeout, max_rows), chunks, workers, address,
                              num_gpus=gpus, on_start=on_start):
        yield from rows


def _sampler(policy_options, cfg, timeout, max_rows):
    def make():  # runs in the actor, once
        from lm.policy import load_policy
        policy = load_policy(**policy_options)
        return lambda problems: list(sample_rows(policy, problems, cfg, timeout, max_rows))
    return make


def rank_samples(value, row: SampleRow, loads=None, problem=None, select="value") -> RunRow:
    """best_of_k on stored samples, with engine.best_of_k's own ranking (identical programs scored
    once, their weight counting the copies; the highest value at the last token wins, ties to the
    earlier sample; with `loads`, engine.best_of_k.load_checker's, programs that fail to import come
    last; with `select` other than value, engine.select.rerank's order on `problem`'s statement
    examples). Cost = the samples' plus the value pass (and the load check, and the sandbox runs)."""
    from engine.best_of_k import rank_candidates
    from engine.result import Candidate
    from lm.features import decode_features
    stored = {}
    for s in row["candidates"]:
        stored.setdefault(s["program"], s)  # a folded copy's verdict is its first sample's
    try:
        features = [decode_features(s["features"]) if s.get("features") else None for s in row["candidates"]]
    except ValueError:
        raise StoreError(f"{row['problem_id']}: a sample's recorded features are damaged") from None
    before, start = value.tokens_scored, time.perf_counter()
    ranked = rank_candidates(value, row["prompt_tokens"],
                             [Candidate(s["program"], s["text"], s["tokens"], None, s["finish"], mean_logprob=s["mean_logprob"],
                                        features=f) for s, f in zip(row["candidates"], features)],
                             loads=loads, feature_source=row.get("features"))
    runs = 0
    if select != "value":
        from engine.select import rerank
        ranked, runs = rerank(problem, ranked, select)
    seconds = time.perf_counter() - start
    wall = {**row["stats"]["wall_s"], "value": round(seconds, 4)}
    wall["total"] = round(wall.get("sample", 0.0) + seconds, 4)
    stats = {**row["stats"], "value_tokens": value.tokens_scored - before, "wall_s": wall,
             "unique_programs": len(ranked), **({"sandbox_runs": runs} if runs else {})}
    best = stored[ranked[0].program]
    return {"problem_id": row["problem_id"], "strategy": "best_of_k", "passed": best["passed"],
            "verdict": best["verdict"], "value": ranked[0].value, "stats": stats,
            "candidates": [{"value": c.value, "passed": stored[c.program]["passed"], "verdict": stored[c.program]["verdict"],
                            "weight": 1 + c.duplicates, "tokens": len(c.tokens), "finish": c.finish_reason,
                            "mean_logprob": stored[c.program]["mean_logprob"],
                            **({} if c.loads is None else {"loads": c.loads}),
                            **({} if c.examples_passed is None else {"examples_passed": c.examples_passed,
                                                                    "agreement": c.agreement})} for c in ranked]}


def run_strategy(policy, value, problems, strategy, cfg, out_dir, timeout=JUDGE_TIMEOUT, progress=None,
                 max_rows=DEFAULT_BATCH_ROWS, sampler=None):
    """Decode and judge every problem not yet in runs/<strategy>.jsonl; append each row as it is done.
    sample and best_of_k share runs/sample.jsonl: best_of_k ranks stored samples, sampling only
    the problems that have none yet (many problems in one batch, or `sampler(problems)`'s rows,
    e.g. sample_rows_on_workers). A problem already stored is never stored again."""
    from engine.best_of_k import load_checker
    from judge import judge_many
    runs = os.path.join(out_dir, "runs")
    store = RowStore(runs, f"{strategy}.jsonl", writer=True, fields=fields_of(strategy))
    done = store.done_ids()
    if strategy in ("sample", "best_of_k"):
        samples = store if strategy == "sample" else RowStore(runs, "sample.jsonl", writer=True, fields=SampleRow)
        sampled = samples.done_ids()
        todo = [p for p in problems if p.id not in sampled]
        rows = sampler(todo) if sampler else sample_rows(policy, todo, cfg, timeout, max_rows)
        for row in rows:
            if row["problem_id"] in sampled:  # a chunk run twice (its worker died after sending it)
                continue
            samples.append(row)
            sampled.add(row["problem_id"])
            if progress and strategy == "sample":
                progress()
        if strategy == "best_of_k":
            rows = {r["problem_id"]: r for r in samples.rows()}
            for problem in problems:
                if problem.id not in done:
                    store.append(rank_samples(value, rows[problem.id], load_checker(problem, cfg), problem, cfg.select))
                if progress:
                    progress()
        elif progress:
            for _ in range(len(problems) - len(todo)):
                progress()
        return store.rows()
    from engine.run import decode_all
    todo = [p for p in problems if p.id not in done]
    if progress:
        for _ in range(len(problems) - len(todo)):
            progress()
    for problem, result in decode_all(policy, value, todo, strategy, cfg, max_rows):
        cands = [c for c in result.candidates if c.program == result.program][:1]
        result.candidates = cands
        verdicts = judge_many([(c.program, problem) for c in cands], timeout=timeout)
        store.append(judged_row(problem, result, verdicts))
        if progress:
            progress()
    return store.rows()


def _expanded(row):
    """best_of_k candidates as (value, passed) items, one per sample (duplicates included)."""
    return [(c["value"], int(c["passed"])) for c in row["candidates"] for _ in range(c["weight"])]


def _mean(xs):
    return sum(xs) / len(xs) if xs else None


def _per_problem_costs(rows, divide=1):
    return {"policy_tokens": _mean([r["stats"]["policy_tokens"] / divide for r in rows]),
            "value_tokens": _mean([r["stats"]["value_tokens"] / divide for r in rows]),
            "wall_s": _mean([r["stats"]["wall_s"]["total"] / divide for r in rows])}


def summarize(rows_by_strategy, k_report=3):
    """Pass rates with intervals and mean costs per problem, plus the best_of_k selection metrics."""
    table = {}
    for strategy in STRATEGIES:
        rows = rows_by_strategy.get(strategy)
        if not rows or strategy == "sample":
            continue
        n, wins = len(rows), sum(r["passed"] for r in rows)
        table[strategy] = {"problems": n, "pass@1": wins / n, "ci95": wilson(wins, n),
                           **_per_problem_costs(rows)}
    selection = None
    rows = rows_by_strategy.get("sample") or rows_by_strategy.get("best_of_k") or []
    if rows:
        items = [_expanded(r) for r in rows]
        k = max(len(i) for i in items)
        # One sample: the exact expectation of pass over a random one of the k samples (unbiased pass@1).
        rand1 = [random_pass_at_k(len(i), sum(y for _, y in i), 1) for i in items]
        passk = [float(any(y for _, y in i)) for i in items]
        table["sample"] = {"problems": len(rows), "pass@1": _mean(rand1),
                           "ci95": bootstrap(rand1, _mean), "samples_per_problem": k,
                           f"pass@{k}": _mean(passk), f"pass@{k}_ci95": wilson(int(sum(passk)), len(rows)),
                           **_per_problem_costs(rows, divide=k)}
        table["sample"]["value_tokens"] = 0.0
        # Before any value model has ranked them, the samples still compare the other rankers.
        selection = {"k": k, "rankers": rankers(rows)}
    rows = rows_by_strategy.get("best_of_k") or []
    if rows:
        items = [_expanded(r) for r in rows]
        k = max(len(i) for i in items)
        selection = {"k": k, "rankers": rankers(rows)}
        for m in sorted({1, min(k_report, k)}):
            picked = [top_k_pass(i, min(m, len(i))) for i in items]
            rand = [random_pass_at_k(len(i), sum(y for _, y in i), min(m, len(i))) for i in items]
            pairs = list(zip(picked, rand))

            def gain(sample):
                p, r = _mean([a for a, _ in sample]), _mean([b for _, b in sample])
                return (p - r) / r if r else None

            selection[f"pass@{m}"] = {"value_picked": _mean(picked), "random_pick": _mean(rand),
                                      "relative_gain": gain(pairs), "relative_gain_ci95": bootstrap(pairs, gain),
                                      "difference_ci95": bootstrap(pairs, lambda s: _mean([a - b for a, b in s])),
                                      "problems": len(pairs)}
    return {"strategies": table, "best_of_k_selection": selection}


def rankers(best_of_k_rows):
    """pass@1 of one program picked from the same k samples by each ranker, per problem: the value
    model, the policy's mean token log-prob, a random pick (exact expectation) and the oracle (any
    sample passes: pass@k); where the load check ran, the first three again with it (programs that
    fail to import ranked last). With each, its 95% bootstrap interval over problems, its gain
    relative to the random pick and the share of the random-to-oracle gap it closes."""
    per_problem = []
    for r in best_of_k_rows:
        samples = [c for c in r["candidates"] for _ in range(c["weight"])]
        labels = [int(c["passed"]) for c in samples]
        lp = [c.get("mean_logprob") for c in samples]
        loads = [c.get("loads") is not False for c in samples]
        scores = {"value": None if any(c["value"] is None for c in samples) else [c["value"] for c in samples],
                  "mean_logprob": None if None in lp and len(set(lp)) == 1 else
                  [-math.inf if v is None else v for v in lp],
                  "random": [0] * len(samples)}
        picks = {}
        for name, score in scores.items():
            picks[name] = None if score is None else top_k_pass(list(zip(score, labels)), 1)
            picks[name + "+load"] = None if score is None else top_k_pass(list(zip(zip(loads, score), labels)), 1)
        per_problem.append({**picks, "oracle": float(any(labels))})
    names = ["value", "mean_logprob", "random", "oracle"]
    if any("loads" in c for r in best_of_k_rows for c in r["candidates"]):
        names[3:3] = ["value+load", "mean_logprob+load", "random+load"]
    for name in ("mean_logprob", "value"):  # rows from before log-probs were stored; samples not yet ranked
        if any(p[name] is None for p in per_problem):
            names = [n for n in names if not n.startswith(name)]

    def gap(name):
        def stat(sample):
            rand, orac = _mean([p["random"] for p in sample]), _mean([p["oracle"] for p in sample])
            return (_mean([p[name] for p in sample]) - rand) / (orac - rand) if orac > rand else None
        return stat

    def gain(name):
        def stat(sample):
            rand = _mean([p["random"] for p in sample])
            return _mean([p[name] for p in sample]) / rand - 1 if rand else None
        return stat

    out = {}
    for name in names:
        mean = lambda s, n=name: _mean([p[n] for p in s])
        out[name] = {"pass@1": mean(per_problem), "ci95": bootstrap(per_problem, mean),
                     "relative_gain": gain(name)(per_problem), "relative_gain_ci95": bootstrap(per_problem, gain(name)),
                     "gap_closed": gap(name)(per_problem), "gap_closed_ci95": bootstrap(per_problem, gap(name)),
                     "problems": len(per_problem)}
    return out


def _pct(x):
    return "-" if x is None else f"{100 * x:.1f}%"


def _ci(ci):
    return "-" if ci[0] is None else f"[{100 * ci[0]:.1f}, {100 * ci[1]:.1f}]"


def markdown(summary, settings):
    lines = ["# Quality report", "",
             f"Policy `{settings['policy']}`, value model `{settings['value']}`"
             + (f" (files' digest {settings['value_digest']})" if settings.get("value_digest") else "") + ", dataset "
             f"`{settings['dataset']}`, backend {settings['backend']}; decode settings: "
             f"`{json.dumps(settings['decode'])}`; judge timeout {settings['timeout']} s per test.", "",
             "| strategy | problems | pass@1 | 95% interval | policy tokens / problem | value tokens / problem | wall s / problem |",
             "|---|---|---|---|---|---|---|"]
    order = ["greedy", "sample", "best_of_k", "beam", "tree"]
    table = summary["strategies"]
    for name in order:
        if name not in table:
            continue
        r = table[name]
        label = name if name != "sample" else f"sample (1 of best_of_k's {r['samples_per_problem']})"
        lines.append(f"| {label} | {r['problems']} | {_pct(r['pass@1'])} | {_ci(r['ci95'])} | "
                     f"{r['policy_tokens']:.0f} | {r['value_tokens']:.0f} | {r['wall_s']:.1f} |")
    if "sample" in table:
        r = table["sample"]
        k = r["samples_per_problem"]
        lines += ["", f"Sampling pass@{k} (any of the {k} samples passes): {_pct(r[f'pass@{k}'])} "
                      f"{_ci(r[f'pass@{k}_ci95'])}. pass@1 intervals are Wilson intervals over problems; "
                      "the sample row's is a bootstrap over problems (it averages fractions)."]
    sel = summary["best_of_k_selection"]
    if sel and "pass@1" in sel:
        lines += ["", f"## Value-picked against random pick (best_of_k, the same {sel['k']} samples)", "",
                  "| metric | value-picked | random pick (exact expectation) | relative gain | gain 95% interval | difference 95% interval | problems |",
                  "|---|---|---|---|---|---|---|"]
        for key, s in sel.items():
            if key in ("k", "rankers"):
                continue
            g = "-" if s["relative_gain"] is None else f"{100 * s['relative_gain']:+.1f}%"
            gi = s["relative_gain_ci95"]
            gi = "-" if gi[0] is None else f"[{100 * gi[0]:+.1f}%, {100 * gi[1]:+.1f}%]"
            di = s["difference_ci95"]
            di = "-" if di[0] is None else f"[{100 * di[0]:+.1f}, {100 * di[1]:+.1f}] points"
            lines.append(f"| {key} | {_pct(s['value_picked'])} | {_pct(s['random_pick'])} | {g} | {gi} | {di} | {s['problems']} |")
        lines += ["", "A problem where no sample passes (or all do) gives the value model nothing to pick: "
                      "the gain comes only from problems with mixed samples."]
    if sel:
        labels = {"value": "value model", "mean_logprob": "policy mean token log-prob", "random": "random pick (exact)",
                  "value+load": "value model + load check", "mean_logprob+load": "mean token log-prob + load check",
                  "random+load": "random pick among those that load", "oracle": f"oracle (pass@{sel['k']})"}
        lines += ["", f"## Rankers over the same {sel['k']} samples", "",
                  "| ranker | pass@1 | 95% interval | relative gain over random | gap closed (random -> oracle) | gap closed 95% interval |",
                  "|---|---|---|---|---|---|"]
        for name, s in sel["rankers"].items():
            g = "-" if s["relative_gain"] is None else f"{100 * s['relative_gain']:+.1f}%"
            gc = "-" if s["gap_closed"] is None else f"{100 * s['gap_closed']:.0f}%"
            gci = s["gap_closed_ci95"]
            gci = "-" if gci[0] is None else f"[{100 * gci[0]:.0f}%, {100 * gci[1]:.0f}%]"
            lines.append(f"| {labels[name]} | {_pct(s['pass@1'])} | {_ci(s['ci95'])} | {g} | {gc} | {gci} |")
        lines += ["", "Gap closed = (ranker - random) / (oracle - random): 0% is a random pick, 100% always "
                      "finds a passing sample when one exists. Intervals: bootstrap over problems."]
        if "value+load" in sel["rankers"]:
            lines += ["", "Load check: each program run once in the sandbox without tests; those that fail to "
                          "import rank below every one that imports (not the value model: a filter in front of "
                          "any ranker). The best_of_k row above is the engine's pick, with the check."]
    return "\n".join(lines) + "\n"


def plot(summary, path):
    """pass@1 against tokens; False when matplotlib (the dev extra) is not installed."""
    try:
        import matplotlib
    except ImportError:
        return False
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, r in summary["strategies"].items():
        lo, hi = r["ci95"]
        x = max(r["policy_tokens"] + r["value_tokens"], 1.0)
        ax.errorbar([x], [r["pass@1"]], yerr=[[r["pass@1"] - (lo or 0)], [(hi or 0) - r["pass@1"]]],
                    fmt="o", capsize=4, label=name)
        ax.annotate(name, (x, r["pass@1"]), textcoords="offset points", xytext=(6, 4), fontsize=8)
    ax.set_xscale("log")
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("policy + value tokens per problem")
    ax.set_ylabel("pass@1 (95% interval)")
    ax.set_title("pass@1 against tokens")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def fields_of(strategy):
    return SampleRow if strategy == "sample" else RunRow


def load_runs(out_dir, skip_bad=False):
    rows = {}
    for strategy in STRATEGIES:
        store = RowStore(os.path.join(out_dir, "runs"), f"{strategy}.jsonl", fields=fields_of(strategy))
        if os.path.exists(store.path):
            rows[strategy] = store.rows(skip_bad=skip_bad)
    return rows


def write_report(out_dir, skip_bad=False):
    settings = read_json(os.path.join(out_dir, SETTINGS), "settings")
    rows = load_runs(out_dir, skip_bad)
    if not rows:
        raise StoreError(f"{out_dir} has no runs yet (runs/<strategy>.jsonl)")
    summary = summarize(rows)
    write_json_atomic(os.path.join(out_dir, "summary.json"), {"settings": settings, **summary})
    write_text_atomic(os.path.join(out_dir, "report.md"), markdown(summary, settings))
    summary["plot"] = plot(summary, os.path.join(out_dir, "pass_vs_tokens.png"))
    return summary
