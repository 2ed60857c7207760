"""Output checkers: how a program's output is compared with the expected one, outside the sandbox.

``CHECKER_VERSION`` changes whenever any checker's semantics change; it is part of the result
cache key, so cached verdicts never outlive the rules that produced them. Names (``RunRequest.checker``):

- ``tokens`` (default): split both texts on whitespace (so CRLF, trailing spaces and blank lines do
  not matter); equal token counts; each pair equal as text, except where the *expected* token is a
  real number (it has a '.' or an exponent): then the output token must be a number within 1e-5
  absolute or relative. Integer tokens compare exactly, as in testlib's standard checkers: a
  program that prints a round number near a large integer answer gets nothing.
- ``codecontests``: ``tokens``, and letter case is ignored too (as CodeContests' official checker
  does). Departures from that checker (``OutputsMatch`` in deepmind/code_contests) are documented in
  docs/sandbox_engine.md: it compares *every* numeric pair as doubles within 1e-5 absolute.
- ``apps``: APPS's own harness (``eval/testing_util.py``, stdin problems): a cascade of line-based
  comparisons, float comparison with ``numpy.allclose`` defaults, and its set-based fallbacks.
- ``exact``: byte-for-byte equal text.

Call-based (``fn_name``) tests compare the JSON-serialized return value with the expected one, as
APPS's harness does: ``value == expected``, or ``value == expected[0]`` when ``expected`` is a
non-empty list (APPS wraps outputs in a one-element list), or, when the value is a list of tuples,
its lists against ``expected[0]``. ``tokens``/``codecontests`` additionally accept a number within
1e-5 (absolute or relative) where the expected value is a float; integers compare exactly;
``apps``/``exact`` require ``==``. Any value compares: a value that cannot be compared (an integer
too large for a float, nesting too deep) is unequal, never an error.
"""

from __future__ import annotations

import math
import re
from typing import Any

CHECKER_VERSION = "2"  # 2: integer tokens and values compare exactly
CHECKERS = ("tokens", "codecontests", "apps", "exact")
FLOAT_TOL = 1e-5

_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")


def _num(tok: str) -> float | None:
    if not _NUMBER.fullmatch(tok):
        return None
    try:
        return float(tok)  # huge exponents give inf, which is never close to a finite number
    except (OverflowError, ValueError):
        return None


def _is_real(tok: str) -> bool:
    """A real-number token: numeric, with a decimal point or an exponent ('2.50', '1e9'; not '42')."""
    return bool(_NUMBER.fullmatch(tok)) and any(c in tok for c in ".eE")


def _close(a: float, b: float, tol: float = FLOAT_TOL) -> bool:
    """``a`` within ``tol`` of the expected ``b``, absolutely or relatively (finite numbers only)."""
    if not (math.isfinite(a) and math.isfinite(b)):
        return False
    return abs(a - b) <= tol or abs(a - b) <= tol * abs(b)


def _tokens_equal(got: str, want: str, ignore_case: bool) -> tuple[bool, str]:
    g, w = got.split(), want.split()
    if g == w:  # the common case, compared at C speed (outputs can have millions of tokens)
        return True, ""
    if len(g) != len(w):
        return False, f"expected {len(w)} tokens, got {len(g)}"
    for i, (a, b) in enumerate(zip(g, w)):
        if a == b or (ignore_case and a.lower() == b.lower()):
            continue
        if _is_real(b):  # tolerance only where the expected token is a real number
            na, nb = _num(a), _num(b)
            if na is not None and nb is not None and _close(na, nb):
                continue
        return False, f"token {i + 1}: expected {b[:50]!r}, got {a[:50]!r}"
    return True, ""


def _apps_stdout(got: str, want: Any) -> bool:
    """APPS's stdin/stdout comparison, step by step as its harness runs it (its quirks included)."""
    if isinstance(want, list):
        want = "\n".join(str(x) for x in want)
    want = str(want)
    lines = got.splitlines()  # the harness captures stdout as a list of lines
    # 1. the joined output, stripped, equals the expected text, stripped (also with lines stripped)
    if "\n".join(lines).strip() == want.strip() or "\n".join(x.strip() for x in lines).strip() == want.strip():
        return True
    # 2. the line list equals [expected]
    if lines == [want]:
        return True
    # 3. expected split into non-empty stripped lines
    want_lines = [x.strip() for x in want.split("\n") if x]
    if lines == [want_lines] or lines == want_lines:
        return True
    out = [x for x in lines if x]
    if out == want_lines:
        return True
    # 4. all lines numeric: numpy.allclose(rtol=1e-5, atol=1e-8)
    try:
        fo, fw = [float(x) for x in out], [float(x) for x in want_lines]
        if len(fo) == len(fw) and all(abs(a - b) <= 1e-8 + 1e-5 * abs(b) for a, b in zip(fo, fw)):
            return True
    except ValueError:
        pass
    # 5. sets: the harness compares per-line token sets with per-token character sets, then the
    #    same rounded to 3 decimals (it only matches in special cases; kept for fidelity).
    want_set = set(want.split())
    out_sets = [set(x.split()) for x in out if x.split()]
    try:
        if {frozenset(s) for s in out_sets} == {frozenset(s) for s in want_set}:
            return True
    except TypeError:
        pass
    try:
        return {frozenset(round(float(t), 3) for t in s) for s in out_sets} == \
            {frozenset(round(float(t), 3) for t in s) for s in want_set}
    except ValueError:
        return False


def check_stdout(checker: str, got: str, want: Any) -> tuple[bool, str]:
    """Compare a program's stdout with the expected output; returns (accepted, reason if not)."""
    if checker == "apps":
        return (True, "") if _apps_stdout(got, want) else (False, "output differs (APPS harness)")
    if isinstance(want, list):  # APPS stores some stdout outputs as a list of lines
        want = "\n".join(str(x) for x in want)
    want = str(want)
    if checker == "exact":
        return (True, "") if got == want else (False, "output differs (exact)")
    if checker in ("tokens", "codecontests"):
        return _tokens_equal(got, want, ignore_case=checker == "codecontests")
    raise ValueError(f"unknown checker {checker!r}")


def _as_float(x: int | float) -> float | None:
    try:
        return float(x)
    except OverflowError:  # an int beyond float range (10**400) is close to no float
        return None


def _values_equal(a: Any, b: Any, tolerant: bool) -> bool:
    """``a`` (the program's value) equals the expected ``b``; floats within 1e-5 when ``tolerant``
    and ``b`` is a float (integers compare exactly). Python's ``==`` never raises on JSON data."""
    if tolerant and isinstance(b, float) and isinstance(a, (int, float)) and not isinstance(a, bool):
        fa = _as_float(a)
        return a == b or (fa is not None and _close(fa, b))
    if tolerant and isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_values_equal(x, y, tolerant) for x, y in zip(a, b))
    if tolerant and isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_values_equal(a[k], b[k], tolerant) for k in a)
    return a == b


def check_value(checker: str, got: Any, want: Any) -> tuple[bool, str]:
    """Compare a call-based test's return value (JSON data) with the expected one."""
    if checker not in CHECKERS:
        raise ValueError(f"unknown checker {checker!r}")
    tolerant = checker in ("tokens", "codecontests")
    try:
        if _values_equal(got, want, tolerant):
            return True, ""
        if isinstance(want, list) and want and _values_equal(got, want[0], tolerant):
            return True, ""
    except RecursionError:  # nested deeper than the interpreter compares: not the expected value
        return False, "the value is nested too deeply to compare"
    return False, f"expected {_short(want)}, got {_short(got)}"


def _short(v: Any) -> str:
    """A short printable form of a value (ASCII: lone surrogates and the like are escaped)."""
    try:
        s = ascii(v)
    except (RecursionError, ValueError):  # ValueError: an int too long to print
        s = f"<{type(v).__name__}>"
    return s if len(s) <= 80 else s[:77] + "..."
