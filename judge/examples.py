"""Examples a problem's statement shows: the calls (or stdin texts) and answers written in its text,
the first check a person makes of a program. Best effort: a statement with no example that parses
gives none. Only the statement is read, never the judge's tests.

- Function problems (HumanEval style, `fn_name` set): doctest lines (`>>> f(x)` and the lines
  after it, up to a blank line or the next prompt), one-line examples `f(x) == y`, `f(x) ==> y`,
  `f(x) -> y`, `f(x) ➞ y`, `f(x) = y`, `f(x) should return y`, and arguments by name ("For n = 5
  the output should be 3", LeetCode's "Input: a = 1, b = 2 / Output: 3").
- stdin problems (APPS / CodeContests style): the statement's Example/Sample Input and Output blocks.
"""

import ast
import math
import re
from dataclasses import dataclass

from judge.problems import Problem


@dataclass(frozen=True)
class Example:
    given: str            # a call expression of the entry point (e.g. "add(2, 3)"), or a stdin text
    expected: str | None  # the answer as written: an expression, or stdout text; None if the statement shows none


def statement_examples(problem: Problem) -> list[Example]:
    """The examples of `problem`'s statement, in order, without repeats."""
    if problem.kind == "stdio":
        found = _stdio_examples(problem.question)
    elif problem.fn_name:
        name = problem.fn_name.split(".")[-1]  # Solution().twoSum -> twoSum
        found = (_doctest_examples(problem.question, name) + _inline_examples(problem.question, name)
                 + _named_examples(problem.question, name))
        found = [Example(call_expression(problem, e.given), e.expected) for e in found]
    else:
        found = []
    return list(dict.fromkeys(found))


def call_expression(problem, call):
    """A call of the entry point written by its bare name ("twoSum(...)") as it runs in the program's
    namespace: the function itself, a method of a fresh Solution() (LeetCode's Solution().twoSum),
    or for APPS call problems whichever the program defines (the judge resolves it the same way)."""
    name = problem.fn_name.split(".")[-1]
    if "." in problem.fn_name:
        callee = problem.fn_name
    elif problem.kind == "call":
        callee = f"(Solution().{name} if isinstance(globals().get('Solution'), type) else {name})"
    else:
        callee = name
    return callee + call[len(name):]


def _is_expression(text):
    try:
        ast.parse(text, mode="eval")
        return True
    except (SyntaxError, ValueError):
        return False


def _doctest_examples(text, name):
    out, lines = [], text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i].strip()
        if not line.startswith(">>> "):
            i += 1
            continue
        call = line[4:]
        i += 1
        while i < len(lines) and lines[i].strip().startswith("... "):
            call += "\n" + lines[i].strip()[4:]
            i += 1
        answer = []
        while i < len(lines) and lines[i].strip() and not lines[i].strip().startswith(">>>") \
                and not lines[i].strip().startswith(('"""', "'''")):
            answer.append(lines[i].strip())
            i += 1
        expected = " ".join(answer) if answer else "None"  # doctest prints nothing for None
        if name + "(" in call and _is_expression(call) and _is_expression(expected):
            out.append(Example(call, expected))
    return out


_SEPARATORS = re.compile(r"\s*(?:==>|==|➞|->|=>|=|should return|returns|⇒|→)\s*")


def _call_at(text, start):
    """The balanced call `name(...)` beginning at `start`, or None."""
    depth, quote = 0, None
    for j in range(text.index("(", start), len(text)):
        c = text[j]
        if quote:
            if c == quote and text[j - 1] != "\\":
                quote = None
        elif c in "'\"":
            quote = c
        elif c in "([{":
            depth += 1
        elif c in ")]}":
            depth -= 1
            if depth == 0:
                return text[start:j + 1]
    return None


def _inline_examples(text, name):
    out = []
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith(">>>"):
            continue
        for match in re.finditer(rf"(?<![\w.]){re.escape(name)}\(", stripped):
            call = _call_at(stripped, match.start())
            if not call:
                continue
            rest = stripped[match.start() + len(call):]
            sep = _SEPARATORS.match(rest)
            if not sep:
                continue
            expected = _answer(rest[sep.end():])
            if expected and _is_expression(call):
                out.append(Example(call, expected))
    return out


def _answer(text):
    """The answer of an example line: the text itself, or a worked one's result (`19 - 5 - 6 = 8`
    gives 8); None if neither is an expression."""
    text = text.strip().rstrip(".,;").strip()
    for candidate in (text, text.rsplit("=", 1)[-1].strip()):
        if candidate and _is_expression(candidate):
            return candidate
    return None


# "For num = "AB" the output should be 1." and "Input: nums = [2,7], target = 9 / Output: [0,1]"
# (LeetCode style): the arguments by name.
_NAMED = re.compile(r"for\s+(\w+\s*=.+?),?\s+the\s+output\s+should\s+be\s+(.+)", re.IGNORECASE)
_INPUT_OUTPUT = re.compile(r"input\s*:\s*(\w+\s*=.+?)\s*\n\s*output\s*:\s*(.+)", re.IGNORECASE)


def _named_examples(text, name):
    out = []
    for pattern in (_NAMED, _INPUT_OUTPUT):
        for arguments, answer in pattern.findall(text):
            call, expected = f"{name}({arguments.strip().rstrip(',')})", _answer(answer)
            if expected and _is_expression(call):
                out.append(Example(call, expected))
    return out


_BLOCK = re.compile(r"(?:sample|example)?[ \t]*input[ \t]*(?:\d+)?[ \t]*:?[ \t]*\n(.*?)\n\s*(?:sample|example)?[ \t]*"
                    r"output[ \t]*(?:\d+)?[ \t]*:?[ \t]*\n(.*?)(?=\n\s*\n|\n\s*(?:sample|example|note|explanation|-----)|\Z)",
                    re.IGNORECASE | re.DOTALL)


def _stdio_examples(text):
    out = []
    for given, expected in _BLOCK.findall(text.replace("\r\n", "\n")):
        given, expected = given.strip("\n"), expected.strip("\n")
        if given.strip() and expected.strip():
            out.append(Example(given + "\n", expected + "\n"))
    return out


def same_answer(output, expected):
    """Whether a call's output (a repr, from judge.call_outputs) is the example's answer: equal as
    Python literals (floats within 1e-6, tuples as lists), else as text without spaces."""
    try:
        got, want = ast.literal_eval(output), ast.literal_eval(expected)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return output.replace(" ", "") == expected.replace(" ", "")
    return _equal(got, want)


def _equal(a, b):
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-9)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_equal(a[k], b[k]) for k in a)
    return a == b
