"""Judge programs: run them in the sandbox against a problem's tests and return a verdict."""

import signal
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field

from judge.compare import outputs_equal
from judge.problems import Problem, ProblemError
from judge.sandbox import JUDGE_TIMEOUT, Limits, SandboxError, isolation_level, run_job

VERDICTS = ("pass", "wrong_answer", "runtime_error", "timeout", "memory_limit", "output_limit",
            "compile_error")
MAX_PROGRAM_BYTES = 1 << 20


@dataclass
class TestResult:
    status: str          # one of VERDICTS but compile_error
    time: float          # wall seconds
    cpu: float           # CPU seconds
    detail: str = ""     # the tail of stderr, or why the output was rejected


@dataclass
class Verdict:
    verdict: str
    passed: int
    total: int
    tests: list = field(default_factory=list)
    error: str = ""      # compile error text or the first failure's stderr tail
    isolation: str = ""

    @property
    def ok(self):
        return self.verdict == "pass"

    def to_dict(self):
        return asdict(self)


def _classify(raw, problem, index, mode, limits):
    """One raw runner result -> TestResult."""
    status = raw.get("status") or {}
    exc = status.get("exc")
    stderr = raw["stderr"]
    sig = raw["signal"]
    result = TestResult("pass", raw["time"], raw["cpu"], "")
    # SIGKILL without our timeout is the CPU hard limit only if the CPU time got there.
    cpu_killed = sig == signal.SIGKILL and raw["cpu"] >= raw.get("cpu_limit", float("inf")) - 0.05
    if raw["timed_out"] or sig == signal.SIGXCPU or cpu_killed:
        result.status = "timeout"
    elif sig == signal.SIGXFSZ or raw["stdout_bytes"] >= limits.output_bytes:
        result.status = "output_limit"
    elif exc == "MemoryError" or stderr.rstrip().endswith("MemoryError"):
        result.status = "memory_limit"
    elif problem.kind == "assert":
        if exc == "AssertionError" and status.get("phase") == "test":
            result.status = "wrong_answer"
        elif exc or sig or raw["exit"] != 0 or not status.get("finished"):
            result.status = "runtime_error"
            if not (exc or sig or raw["exit"] != 0):
                stderr += "\nthe program ended the process before its tests finished (e.g. os._exit)"
    elif problem.kind == "call":
        if exc or sig or raw["exit"] != 0 or "value" not in status:
            result.status = "runtime_error"
        elif not outputs_equal(status["value"], problem.outputs[index], mode, "call"):
            result.status = "wrong_answer"
            result.detail = f"returned {_short(status['value'])}"
    else:  # stdio: apps-legacy, like hendrycks, ignores the exit code of a SystemExit
        if exc or sig or (mode == "strict" and raw["exit"] != 0):
            result.status = "runtime_error"
        elif not outputs_equal(raw["stdout"], problem.outputs[index], mode, "stdio"):
            result.status = "wrong_answer"
            result.detail = f"printed {_short(raw['stdout'])}"
    if result.status not in ("pass", "wrong_answer"):
        result.detail = stderr[-1000:]
    return result


def _short(value, n=200):
    text = repr(value)
    return text if len(text) <= n else text[:n] + "..."


def judge(program, problem, *, mode="strict", timeout=JUDGE_TIMEOUT, limits=None, fail_fast=False):
    """Run `program` (complete source) against every test of `problem` in a fresh sandbox.

    The verdict is the first failing test's status, or pass. A test that times out ends the run
    (the remaining tests count as not passed), and so does any failure with fail_fast.
    """
    limits = limits or Limits()
    total = problem.num_tests
    if len(program.encode("utf-8", "replace")) > MAX_PROGRAM_BYTES:
        return Verdict("compile_error", 0, total, error="program larger than 1 MiB",
                       isolation=isolation_level())
    if total == 0:
        raise ProblemError(f"problem {problem.id} has no tests")
    header, raws = run_job(program, problem.kind, problem.runner_tests(), fn_name=problem.fn_name,
                           timeout=timeout, limits=limits, fail_fast=fail_fast,
                           apps_legacy=(mode == "apps-legacy"))
    level = isolation_level()
    if "compile_error" in header:
        return Verdict("compile_error", 0, total, error=header["compile_error"], isolation=level)
    tests = [_classify(raw, problem, raw["i"], mode, limits) for raw in raws]
    failed = [t for t in tests if t.status != "pass"]
    passed = len(tests) - len(failed)
    if failed:
        verdict, error = failed[0].status, failed[0].detail
    elif len(tests) < total:  # cannot happen without a failure; guard against a runner cut short
        verdict, error = "runtime_error", "sandbox stopped before all tests ran"
    else:
        verdict, error = "pass", ""
    return Verdict(verdict, passed, total, tests, error, level)


def judge_many(pairs, *, workers=None, progress=None, **options):
    """Judge (program, problem) pairs on a pool of sandbox servers; results in input order.

    `progress(verdict)` is called as each finishes. A sandbox failure (not the program's: e.g. its
    server was killed) is retried on a fresh server; only a pair that fails the sandbox three times
    becomes a runtime_error verdict, instead of stopping the batch.
    """
    import os
    workers = workers or os.cpu_count() or 1

    def one(pair):
        program, problem = pair
        for attempt in range(3):
            try:
                v = judge(program, problem, **options)
                break
            except SandboxError as exc:  # the pool has dropped the broken server; the next try gets a new one
                v = Verdict("runtime_error", 0, problem.num_tests, error=f"sandbox error after {attempt + 1} tries: {exc}")
        if progress:
            progress(v)
        return v

    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(one, pairs))


# An assert problem's program with one empty test after it: it passes iff the module imports.
_IMPORT_ONLY = Problem(id="import-only", question="", kind="assert", tests=["pass\n"])


def loads_many(programs, **options):
    """Whether each program of an `assert` problem (HumanEval, MBPP: it defines functions) runs as
    a module in the sandbox without an error, a timeout or the memory limit (options: judge_many's).
    No test is run, so this needs nothing but the program; one that fails here fails every test of
    its problem. (Not for `call` problems: the judge gives their modules names APPS starters assume.)"""
    return [v.verdict == "pass" for v in judge_many([(p, _IMPORT_ONLY) for p in programs], **options)]


# Marks the line a call's value is printed on: a program's own prints at import come before it.
_OUTPUT_MARK = "\x1eforkcode-output\x1e"


def stdin_outputs(program, inputs, *, timeout=JUDGE_TIMEOUT, limits=None):
    """What a stdin/stdout program prints for each input, run in the sandbox, each in a fresh
    process under the judge's limits: its standard output, or the way it failed ("error:
    ValueError", "timeout", "memory_limit", "output_limit", "compile_error"), as call_outputs
    gives a function's answers."""
    probe = Problem(id="stdin", question="", kind="stdio", inputs=list(inputs), outputs=[""] * len(inputs))
    # Compared with "" every output is a wrong answer: a run that ended well either way printed it.
    return _outputs(program, probe, lambda raw, status: raw["stdout"] if status in ("pass", "wrong_answer") else None,
                    timeout, limits)


def call_outputs(program, calls, *, timeout=JUDGE_TIMEOUT, limits=None):
    """What each call expression (e.g. "add(2, 3)") gives, run in the program's namespace in the
    sandbox, each in a fresh process under the judge's limits: the repr of its value, or the way it
    failed ("error: TypeError", "timeout", "memory_limit", "output_limit", "compile_error"). A
    program that hangs or floods its output costs at most the limits, as when it is judged."""
    probe = Problem(id="calls", question="", kind="assert", tests=[f"print({_OUTPUT_MARK!r} + repr({c}))\n" for c in calls])

    def value(raw, status):  # the repr printed after the mark (never the program's own prints)
        return raw["stdout"].rsplit(_OUTPUT_MARK, 1)[1].rstrip("\n") if status == "pass" and _OUTPUT_MARK in raw["stdout"] else None
    return _outputs(program, probe, value, timeout, limits)


def _outputs(program, probe, answer, timeout, limits):
    """Each of the probe's tests run in its own process: answer(raw result, status), or else how it
    failed."""
    limits = limits or Limits()
    n = probe.num_tests
    if not n:
        return []
    if len(program.encode("utf-8", "replace")) > MAX_PROGRAM_BYTES:
        return ["compile_error"] * n
    header, raws = run_job(program, probe.kind, probe.runner_tests(), timeout=timeout, limits=limits)
    if "compile_error" in header:
        return ["compile_error"] * n
    out = ["timeout"] * n  # the tests after a timeout do not run
    for raw in raws:
        status = _classify(raw, probe, raw["i"], "strict", limits).status
        got = answer(raw, status)
        if got is not None:
            out[raw["i"]] = got
        elif status in ("runtime_error", "wrong_answer"):
            out[raw["i"]] = f"error: {(raw.get('status') or {}).get('exc') or 'exit'}"
        else:
            out[raw["i"]] = status
    return out
