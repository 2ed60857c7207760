"""(Problem, program) -> sandbox verdicts, through any judge client (``sandbox.client.make_client``).

Identical programs for the same problem are judged once. The trainer and ``codealign eval`` both call
:func:`judge_many`; :func:`outcome` reduces a :class:`RunResult` to what pass@k, n@k and APPS' test-case
average need.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from sandbox.spec import RunRequest, RunResult, TestCase, Verdict

from codealign.extract import extract_code, humaneval_program
from codealign.problems import Problem

log = logging.getLogger(__name__)

# HumanEval: the program, then this harness with the dataset's check code (which ends with
# ``check(entry_point)``), judged as a call-based test of HUMANEVAL_DONE that expects True. The
# sandbox reports a call-based value only after the function returned, authenticated by a per-run
# nonce that the program never sees before that: a program that leaves early (``sys.exit(0)``,
# ``raise SystemExit``, ``exit()``, ``os._exit(0)``, an ``atexit`` hook after a failing assert) or
# raises anything from its body produces no value and fails. The entry point is wrapped so that its
# answers must be plain data (no object whose ``__eq__`` says yes to every assert). Its prints do not
# matter: a call-based test's stdout is not compared.
HUMANEVAL_DONE = "__codealign_humaneval_done"
HUMANEVAL_PLAIN = """

def __codealign_plain(fn):
    import functools
    plain = (bool, int, float, complex, str, bytes, type(None), list, tuple, dict, set, frozenset)

    @functools.wraps(fn)
    def checked(*args, **kwargs):
        value = fn(*args, **kwargs)
        todo = [value]
        while todo:
            v = todo.pop()
            if type(v) not in plain:
                raise TypeError(f"{fn.__name__} returned a {type(v).__name__}: HumanEval answers are plain values")
            if type(v) is dict:
                todo.extend(v.keys())
                todo.extend(v.values())
            elif type(v) in (list, tuple, set, frozenset):
                todo.extend(v)
        return value

    return checked
"""


# APPS' own harness runs every program after a fixed block of imports (typing's List among them), and
# LeetCode-style starter code relies on it. numpy (also in that block) is added only when the program
# names ``np.`` as a word of its own (``inp.split()`` does not), because importing it costs ~0.1 s per
# test; and inside ``try`` so that a sandbox without numpy fails only the programs that use it.
APPS_IMPORTS = (
    "import sys, time, itertools, collections, math, fractions, random, heapq\n"
    "from itertools import accumulate, product, permutations, combinations\n"
    "from collections import Counter, OrderedDict, deque, defaultdict, ChainMap\n"
    "from functools import lru_cache\n"
    "from math import sqrt, sin, cos, tan, ceil, fabs, floor, gcd, exp, log, log2\n"
    "from typing import List, Tuple\n"
    "from heapq import *\n"
)
_NUMPY_IMPORT = "try:\n    import numpy as np\nexcept ImportError:\n    pass\n"
_USES_NP = re.compile(r"(?<![\w.])np\s*\.")


def program_from_completion(problem: Problem, completion: str) -> str | None:
    """The program to judge for a completion (``None``: no program in it). See :mod:`codealign.extract`."""
    if problem.test_code is not None and problem.fn_name:
        return humaneval_program(problem.starter_code, completion, problem.fn_name)
    return extract_code(completion)


def build_request(problem: Problem, code: str, *, tests: Sequence[TestCase] | None = None, stop_on_first_failure: bool = False) -> RunRequest:
    """The sandbox request judging ``code`` on ``tests`` (default: all of the problem's tests) with its limits and checker."""
    fn_name, checker = (problem.fn_name if problem.call_based else None), problem.checker
    tests = list(problem.all_tests() if tests is None else tests)
    if problem.test_code is not None:
        test_code, call = problem.test_code.rstrip(), f"check({problem.fn_name})"
        if test_code.endswith(call):  # the loader's last line: check the wrapped entry point instead
            test_code = test_code[: -len(call)] + f"check(__codealign_plain({problem.fn_name}))"
        code = f"{code}{HUMANEVAL_PLAIN}\n{test_code}\n\n\ndef {HUMANEVAL_DONE}():\n    return True\n"
        fn_name, checker = HUMANEVAL_DONE, "exact"
        tests = [TestCase(input=[], output=True) for _ in tests]  # one per dataset test: totals stay the same
    elif problem.checker == "apps" and "from __future__" not in code:
        code = APPS_IMPORTS + (_NUMPY_IMPORT if _USES_NP.search(code) else "") + code
    return RunRequest(
        language="python",
        code=code,
        tests=tests,
        fn_name=fn_name,
        time_limit_s=min(problem.time_limit_s, 120.0),
        memory_limit_mb=min(problem.memory_limit_mb, 16384),
        stop_on_first_failure=stop_on_first_failure,
        checker=checker,
    )


def no_program_result(problem: Problem) -> RunResult:
    """The verdict for a completion with no program in it: CE on every test, nothing run."""
    return RunResult(verdict=Verdict.CE, passed=0, total=len(problem.all_tests()), compile_output="no program found in the completion")


def judge_many(
    client: Any,
    pairs: Sequence[tuple[Problem, str | None]],
    *,
    timeout_s: float | None = None,
    stop_on_first_failure: bool = False,
    on_result: Callable[[int, RunResult | None], None] | None = None,
) -> list[RunResult | None]:
    """Judge ``(problem, code)`` pairs; results in input order.

    A ``None`` code (nothing extracted) is a CE without running. Identical ``code`` for the same problem
    id runs once and its result is shared. ``timeout_s`` bounds the whole call (seconds): what has not
    finished by then, or everything when the client fails (service down, bad request), comes back as
    ``None`` — this never raises for a judging failure, so a training loop cannot stall on it.
    ``on_result(i, result)`` fires for each input index as its result arrives (possibly on another thread).
    """
    results: list[RunResult | None] = [None] * len(pairs)
    groups: dict[tuple[str, str], list[int]] = {}
    reqs: list[RunRequest] = []
    keys: list[tuple[str, str]] = []
    for i, (problem, code) in enumerate(pairs):
        if code is None:
            results[i] = no_program_result(problem)
            if on_result:
                on_result(i, results[i])
            continue
        key = (problem.id, code)
        if key not in groups:
            groups[key] = []
            keys.append(key)
            reqs.append(build_request(problem, code, stop_on_first_failure=stop_on_first_failure))
        groups[key].append(i)
    lock = threading.Lock()
    closed = False  # set at the deadline: late results are dropped, the returned list no longer changes

    def deliver(j: int, result: RunResult) -> None:
        with lock:
            if closed:
                return
            for i in groups[keys[j]]:
                results[i] = result
        if on_result:
            for i in groups[keys[j]]:
                on_result(i, result)

    def work() -> None:
        try:
            client.run_many(reqs, timeout_s=timeout_s, on_result=deliver)
        except Exception as e:  # noqa: BLE001 - a judging failure must not kill the caller's loop
            log.warning("judging stopped early (%s: %s)", type(e).__name__, e)

    if reqs:
        # The overall deadline is enforced here, whatever the client's own timeout semantics are.
        thread = threading.Thread(target=work, name="codealign-judge", daemon=True)
        thread.start()
        thread.join(timeout_s)
        with lock:
            closed = True
            snapshot = list(results)
        missing = sum(r is None for r in snapshot)
        if missing:
            log.warning("%d of %d samples have no verdict (timeout %s s or judge failure)", missing, len(pairs), timeout_s)
        return snapshot
    return results


@dataclass(frozen=True)
class Outcome:
    """What the metrics need from one judged sample.

    ``passed``/``total`` count tests; ``correct`` = every test passed; ``public_ok`` = every public test
    passed (AlphaCode's filter); ``signature`` hashes the program's behaviour (its outputs, or the
    verdict when it did not finish normally) on the clustering inputs, for n@k.
    """

    verdict: str
    passed: int
    total: int
    correct: bool
    public_ok: bool
    signature: str


def outcome(problem: Problem, result: RunResult) -> Outcome:
    n_public = len(problem.public_tests)
    tests = result.tests
    if tests:
        public_ok = all(t.verdict == Verdict.AC for t in tests[:n_public])
    else:  # CE or no per-test detail: public tests passed only if the whole run did
        public_ok = result.verdict == Verdict.AC or n_public == 0 and result.verdict not in (Verdict.CE,)
    cluster = problem.cluster_inputs()
    start = len(problem.public_tests) + (len(problem.private_tests) if problem.generated_tests else 0)
    h = hashlib.sha256()
    for t in tests[start : start + len(cluster)]:
        if t.verdict in (Verdict.AC, Verdict.WA):
            # Call-based tests: the return value (when the sandbox reports it), else what was printed.
            value = getattr(t, "value", None)
            behaviour = json.dumps(value, sort_keys=True, default=repr) if value is not None else " ".join(t.stdout.split())
        else:
            behaviour = t.verdict.value
        h.update(behaviour.encode("utf-8", "replace") + b"\x00")
    if not tests:
        h.update(result.verdict.value.encode())
    return Outcome(
        verdict=result.verdict.value,
        passed=result.passed,
        total=result.total,
        # A problem with no tests proves nothing: never correct (the sandbox calls a run of 0 tests AC).
        correct=result.verdict == Verdict.AC and result.passed == result.total > 0,
        public_ok=public_ok,
        signature=h.hexdigest()[:16],
    )


@dataclass(frozen=True)
class ReferenceCheck:
    """One dataset reference solution judged on its own problem's tests."""

    problem_id: str
    source: str
    solution_index: int
    result: RunResult | None

    @property
    def accepted(self) -> bool:
        return self.result is not None and self.result.verdict == Verdict.AC


def judge_references(
    client: Any,
    problems: Sequence[Problem],
    *,
    max_per_problem: int | None = None,
    timeout_s: float | None = None,
    stop_on_first_failure: bool = True,
) -> list[ReferenceCheck]:
    """Judge each problem's Python reference solutions (up to ``max_per_problem``) on all its tests.

    By default a run stops at its first failing test (only AC or not matters here).

    Reference solutions should all be AC: disagreements point at the judge (checker semantics, limits,
    stdin handling) or at the data (problems with special checkers, truncated tests).
    """
    index: list[tuple[Problem, int]] = []
    pairs: list[tuple[Problem, str | None]] = []
    for p in problems:
        sols = p.solutions.get("python", [])[:max_per_problem]
        for j, code in enumerate(sols):
            index.append((p, j))
            pairs.append((p, code))
    results = judge_many(client, pairs, timeout_s=timeout_s, stop_on_first_failure=stop_on_first_failure)
    return [ReferenceCheck(p.id, p.source, j, r) for (p, j), r in zip(index, results)]
