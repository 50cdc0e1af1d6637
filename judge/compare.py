"""Output comparison: `strict` (the default) and `apps-legacy` (the hendrycks/apps cascade).

strict, stdin/stdout: trailing whitespace on each line and trailing blank lines are ignored; each
line must have the same whitespace-separated tokens, where two numeric tokens that are not both
integers match within 1e-6 (absolute or relative).
strict, call-based: JSON values compared structurally (tuples are lists, dict keys are strings as
in the test data), bool and numbers kept apart, floats within 1e-6; an APPS output wrapped as [x]
also accepts x.

apps-legacy reproduces the acceptance rules of hendrycks/apps `testing_util.py`, so pass rates can
be compared with published APPS numbers. Its known false positives are kept on purpose: it compares
sets of per-line token sets, so lines in the wrong order, repeated lines, and tokens shuffled within
a line are all accepted; and a call-based output equal to the first element of the expected list
is accepted.
"""

import math

from common.cli import ConfigError

MODES = ("strict", "apps-legacy")
FLOAT_TOL = 1e-6


# --- strict --------------------------------------------------------------------------------------

def _lines(text):
    lines = [line.rstrip() for line in text.split("\n")]
    while lines and not lines[-1]:
        lines.pop()
    return lines


def _number(token):
    try:
        return float(token)
    except ValueError:
        return None


def _tokens_equal(got, want):
    if got == want:
        return True
    a, b = _number(got), _number(want)
    if a is None or b is None or _is_integer_literal(got) and _is_integer_literal(want):
        return False
    return math.isclose(a, b, rel_tol=FLOAT_TOL, abs_tol=FLOAT_TOL)


def _is_integer_literal(token):
    return token.lstrip("+-").isdigit()


def _as_text(expected):
    return "\n".join(expected) if isinstance(expected, list) else str(expected)


def strict_stdout_equal(got, expected):
    got_lines, want_lines = _lines(got), _lines(_as_text(expected))
    if len(got_lines) != len(want_lines):
        return False
    for g, w in zip(got_lines, want_lines):
        gt, wt = g.split(), w.split()
        if len(gt) != len(wt) or not all(_tokens_equal(a, b) for a, b in zip(gt, wt)):
            return False
    return True


def _values_equal(got, want):
    if isinstance(want, bool) or isinstance(got, bool):
        return isinstance(got, bool) and isinstance(want, bool) and got == want
    if isinstance(want, (int, float)) and isinstance(got, (int, float)):
        if isinstance(want, int) and isinstance(got, int):
            return got == want
        return math.isclose(got, want, rel_tol=FLOAT_TOL, abs_tol=FLOAT_TOL)
    if isinstance(want, list) and isinstance(got, list):
        return len(got) == len(want) and all(_values_equal(g, w) for g, w in zip(got, want))
    if isinstance(want, dict) and isinstance(got, dict):
        return got.keys() == want.keys() and all(_values_equal(got[k], want[k]) for k in want)
    return type(got) is type(want) and got == want


def strict_value_equal(got, expected):
    if _values_equal(got, expected):
        return True
    return isinstance(expected, list) and len(expected) == 1 and _values_equal(got, expected[0])


# --- apps-legacy ---------------------------------------------------------------------------------

def legacy_stdout_equal(got, expected):
    """The hendrycks cascade for standard-input problems, on the captured stdout text."""
    out = got.splitlines()
    want = _as_text(expected)
    if "\n".join(out).strip() == want.strip():
        return True
    if "\n".join(o.strip() for o in out).strip() == want.strip():
        return True
    want_lines = [w.strip() for w in want.split("\n") if w]
    if out == want_lines or out == [want]:
        return True
    out = [o for o in out if o]
    if out == want_lines:
        return True
    try:
        a, b = [float(o) for o in out], [float(w) for w in want_lines]
        if len(a) == len(b) and all(abs(x - y) <= 1e-8 + 1e-5 * abs(y) for x, y in zip(a, b)):
            return True
    except ValueError:
        pass
    want_sets = [set(w.split()) for w in want_lines]
    out_sets = [set(o.split()) for o in out if o.split()]
    if {frozenset(s) for s in out_sets} == {frozenset(s) for s in want_sets}:
        return True
    try:
        rounded = lambda sets: {frozenset(round(float(t), 3) for t in s) for s in sets}
        return rounded(out_sets) == rounded(want_sets)
    except ValueError:
        return False


def legacy_value_equal(got, expected):
    """The hendrycks rules for call-based problems (Python ==, so True == 1 passes)."""
    if got == expected:
        return True
    return isinstance(expected, list) and bool(expected) and got == expected[0]


def outputs_equal(got, expected, mode="strict", kind="stdio"):
    if mode not in MODES:
        raise ConfigError(f"unknown comparison mode {mode!r}: use strict or apps-legacy")
    if kind == "stdio":
        return (strict_stdout_equal if mode == "strict" else legacy_stdout_equal)(got, expected)
    return (strict_value_equal if mode == "strict" else legacy_value_equal)(got, expected)
