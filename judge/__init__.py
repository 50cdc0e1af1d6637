"""The judge: run untrusted Python programs against APPS / HumanEval / MBPP tests in a sandbox."""

from judge.core import VERDICTS, TestResult, Verdict, judge, judge_many
from judge.problems import Problem, ProblemError, load_dataset, load_problem
from judge.sandbox import Limits, SandboxError, isolation_level

__all__ = ["VERDICTS", "Limits", "Problem", "ProblemError", "SandboxError", "TestResult", "Verdict",
           "isolation_level", "judge", "judge_many", "load_dataset", "load_problem"]
