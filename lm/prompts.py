"""Prompts in the paper's framing, and robust code extraction from completions.

stdin/stdout problems and call-based problems (with starter code) are framed differently; assert
problems (HumanEval, MBPP) name the function and show the tests as examples. The framing is a choice:
"reason" (the paper's: reason briefly, then the complete program in one fenced Python block) or
"code" (only the fenced block: fewer tokens per sample, and fewer samples cut off at the length
limit).
"""

import ast
import re

from common.cli import ConfigError
from judge.problems import Problem

SYSTEM = "You are an expert Python programmer. You write correct, efficient Python 3 code."

STDIO = """Solve the following programming problem in Python 3.

{question}

Your program must read the input from standard input and print the answer to standard output.
{instruction}"""

CALL = """Solve the following programming problem in Python 3.

{question}

Complete this starter code (keep its signature; do not read input or print output):
```python
{starter}
```
{instruction}"""

ASSERT = """{question}

Write a Python 3 function named `{fn}`.{examples}
{instruction}"""

# LeetCode's statement already ends with its `class Solution` starter in a fenced block.
LEETCODE = """{query}

{instruction}"""
HUMANEVAL = """Complete the following Python 3 function.

```python
{prompt}
```
{instruction}"""


# The last line of every prompt, per framing; {what} names what the block holds.
FRAMINGS = {
    "reason": "First reason briefly about the approach, then give the complete {what} in a single ```python code block.",
    "code": "Give only the complete {what} in a single ```python code block, with no explanation.",
}
# The default, chosen on MBPP's validation split with Qwen2.5-Coder-0.5B (results/qwen/prompt.json): code-only
# passed as often (54.4% vs 51.9% of samples) with 2.4x fewer tokens (77 vs 186 per sample).
DEFAULT_FRAMING = "code"
# The --prompt option of every command that prompts a policy (a config field: common.cli.option).
PROMPT_OPTION = {"choices": tuple(FRAMINGS),
                 "help": "prompt framing: code (the code only; default) or reason (reason briefly, then the code: the paper's)"}


def signature(problem: Problem):
    """The entry point's `def` line in the first reference that defines it, or None."""
    for code in problem.references:
        try:
            tree = ast.parse(code)
        except (SyntaxError, ValueError):
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name == problem.fn_name:
                return f"def {node.name}({ast.unparse(node.args)}):"
    return None


def messages(problem: Problem, framing: str = DEFAULT_FRAMING, tests: bool = True):
    """Chat messages for a problem (rendered by the policy's chat template when it has one). An
    assert problem (MBPP) shows its tests, or with tests=False only its reference's signature: then
    no example in the prompt is also a test the judge runs."""
    if framing not in FRAMINGS:
        raise ConfigError(f"unknown prompt framing {framing!r}: choose from {', '.join(FRAMINGS)}")
    if problem.source == "humaneval":
        instruction = FRAMINGS[framing].format(what="function (with its imports)")
        user = HUMANEVAL.format(prompt=problem.starter_code.rstrip(), instruction=instruction)
    elif problem.source == "leetcode":
        user = LEETCODE.format(query=problem.question.strip(), instruction=FRAMINGS[framing].format(what="class Solution"))
    elif problem.kind == "stdio":
        user = STDIO.format(question=problem.question.strip(), instruction=FRAMINGS[framing].format(what="program"))
    elif problem.kind == "call":
        starter = problem.starter_code.rstrip() or f"def {problem.fn_name}(...):"
        user = CALL.format(question=problem.question.strip(), starter=starter,
                           instruction=FRAMINGS[framing].format(what="code"))
    else:
        shown = (problem.metadata.get("test_list") or []) if tests else []
        examples = ("\nIt must pass these tests:\n```python\n" + "\n".join(shown) + "\n```") if shown else ""
        sig = None if tests else signature(problem)
        if sig:
            examples = f" Its signature:\n```python\n{sig}\n```"
        user = ASSERT.format(question=problem.question.strip(), fn=problem.fn_name or "solution",
                             examples=examples, instruction=FRAMINGS[framing].format(what="code"))
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": user}]


TEST_INPUTS = """{statement}

Write {n} different calls of `{fn}` that would test a solution well: typical cases, edge cases and
tricky ones. Give only the calls, one per line, in a single ```python code block: no expected
results, no asserts, no prints."""


def test_input_messages(problem: Problem, n: int = 5):
    """Chat messages asking the policy for inputs to run every candidate on (calls of the entry
    point, never expected outputs: which answer is right is what the candidates vote on). A statement
    that does not show the entry point's signature comes with its reference's, never with tests."""
    statement = problem.starter_code.rstrip() if problem.source == "humaneval" else problem.question.strip()
    sig = signature(problem)
    if sig and f"def {problem.fn_name}(" not in statement:
        statement += f"\n\n```python\n{sig}\n```"
    fn = problem.fn_name.split(".")[-1]
    return [{"role": "system", "content": SYSTEM},
            {"role": "user", "content": TEST_INPUTS.format(statement=statement, n=n, fn=fn)}]


def test_input_calls(text: str, fn_name: str, limit: int = 5):
    """The calls of `fn_name` (the last part of a dotted name, e.g. twoSum for Solution().twoSum) in
    a response to test_input_messages, with literal arguments only, in order, without repeats. A
    small model often writes them inside prints, asserts or doctest lines, or after a solution of
    its own: any line of the response counts, and only the call is kept (never an expected value).
    A method call of that name (`Solution().twoSum(...)`) counts as the bare call."""
    name = fn_name.split(".")[-1]
    calls = []
    for line in text.splitlines():
        line = line.strip()
        line = line[4:] if line.startswith(">>> ") else line
        try:
            tree = ast.parse(line)
        except (SyntaxError, ValueError):
            continue
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call):
                continue
            method = isinstance(node.func, ast.Attribute) and node.func.attr == name  # Solution().f(...), s.f(...)
            if not (method or isinstance(node.func, ast.Name) and node.func.id == name):
                continue
            try:  # literal arguments only: a call that reads names or calls code is not an input
                for arg in [*node.args, *(k.value for k in node.keywords)]:
                    ast.literal_eval(arg)
            except (ValueError, SyntaxError, TypeError, RecursionError):
                continue
            call = ast.get_source_segment(line, node)
            if call and method:  # the call by the bare name, as for a function
                call = name + call[len(ast.get_source_segment(line, node.func)):]
            if call and call not in calls:
                calls.append(call)
    return calls[:limit]


def reference_response(problem: Problem, reference: str):
    """The assistant turn that teacher-forces a reference solution in the same format."""
    return f"```python\n{reference.strip()}\n```"


_FENCE = re.compile(r"```[ \t]*([\w+-]*)[^\n]*\n(.*?)(?:```|\Z)", re.S)


def _parses(code):
    try:
        ast.parse(code)
        return True
    except (SyntaxError, ValueError):
        return False


def extract_code(text: str) -> str:
    """The program in a completion: the last fenced block that parses (python-tagged blocks
    first), an unterminated final block, or the whole text if it parses; else the last block."""
    blocks = [(lang.lower(), body) for lang, body in _FENCE.findall(text)]
    python_blocks = [b for lang, b in blocks if lang in ("python", "py", "python3", "")]
    for body in reversed(python_blocks or [b for _, b in blocks]):
        if body.strip() and _parses(body):
            return body.strip("\n") + "\n"
    if not blocks and _parses(text):
        return text.strip("\n") + "\n"
    if blocks:
        return (python_blocks or [b for _, b in blocks])[-1].strip("\n") + "\n"
    return text.strip("\n") + "\n"


_CLOSED = re.compile(r"```[ \t]*[\w+-]*[^\n]*\n(.*?)\n[ \t]*```", re.S)


def code_block_closed(text: str) -> bool:
    """True once the text holds a closed fenced block of code that parses: the answer is done."""
    return any(body.strip() and _parses(body) for body in _CLOSED.findall(text))


def stop_after_code(prompt_len, decode):
    """A SamplingParams.stop_fn that ends a completion at the close of its first parsing code block
    (the response text counts from the end of the prompt, so forks inside a block work too)."""
    def stop(prefix, new):
        return code_block_closed(decode(list(prefix[prompt_len:]) + list(new)))
    return stop


def build_program(problem: Problem, code: str) -> str:
    """A complete program to judge. HumanEval completions that left out the signature get the
    prompt prepended; the prompt's imports are always kept. LeetCode programs follow the imports
    and helper classes the dataset's tests assume."""
    if problem.source == "humaneval":
        header = "".join(line + "\n" for line in problem.starter_code.splitlines()
                         if line.startswith(("import ", "from ")))
        if not re.search(rf"^\s*def\s+{re.escape(problem.fn_name)}\s*\(", code, re.M):
            return problem.starter_code + code
        return header + code
    if problem.source == "leetcode":  # the imports and helpers (ListNode, ...) its tests assume
        return problem.starter_code + "\n" + code
    return code


def program_from(problem: Problem, text: str) -> str:
    """The program to judge from a model's response text: its code, completed for the problem."""
    return build_program(problem, extract_code(text))
