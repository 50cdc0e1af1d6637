"""judge: run untrusted Python programs against APPS / HumanEval / MBPP tests in a sandbox.

`judge.problems`: one Problem type and the loaders of every source; `judge.sandbox`: the fork server
and its isolation; `judge.compare`: output comparison (strict, apps-legacy); `judge.core`: judge,
judge_many, loads_many, call_outputs and stdin_outputs (what a program's calls give, what it
prints); `judge.examples`: the examples a statement shows; `judge.cli`: the `judge` command.

May import only common (layers, bottom to top: common, judge, lm, datagen, valuemodel, engine, bench;
each imports only the ones below it); `judge/_runner.py`, which runs inside the sandbox, imports
nothing of forkcode.
"""

from judge.core import VERDICTS, TestResult, Verdict, call_outputs, judge, judge_many, loads_many, stdin_outputs
from judge.problems import Problem, ProblemError, load_dataset, load_problem
from judge.sandbox import JUDGE_TIMEOUT, Limits, SandboxError, isolation_level

__all__ = ["JUDGE_TIMEOUT", "VERDICTS", "Limits", "Problem", "ProblemError", "SandboxError", "TestResult", "Verdict",
           "call_outputs", "isolation_level", "judge", "judge_many", "load_dataset", "load_problem", "loads_many",
           "stdin_outputs"]
