"""Judging through the real in-process sandbox executor: dedup, missing programs, deadlines, dataset semantics."""

import time
from pathlib import Path

import pytest

from sandbox.client import make_client
from sandbox.spec import TestCase

from codealign.judge import build_request, judge_many, judge_references, outcome, program_from_completion
from codealign.loaders import load_problems
from codealign.problems import Problem

DATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"


class Recording:
    """A real executor that also records what it was asked to run."""

    def __init__(self, inner):
        self.inner = inner
        self.requests = []

    def run_many(self, reqs, **kw):
        self.requests.extend(reqs)
        return self.inner.run_many(reqs, **kw)


@pytest.fixture(scope="module")
def executor():
    with make_client(workers=2) as ex:
        yield ex


def double_problem(**kw) -> Problem:
    return Problem(
        id="double", source="test", statement="Print twice the input number.",
        public_tests=[TestCase(input="2\n", output="4\n")],
        private_tests=[TestCase(input="5\n", output="10\n"), TestCase(input="-1\n", output="-2\n")],
        time_limit_s=2.0, memory_limit_mb=512, **kw,
    )


def test_identical_programs_run_once_and_every_sample_gets_its_verdict(executor):
    p = double_problem()
    right, wrong = "print(int(input()) * 2)\n", "print(int(input()) + 2)\n"
    rec = Recording(executor)
    results = judge_many(rec, [(p, right), (p, wrong), (p, right), (p, None), (p, right)])
    assert [r.verdict.value for r in results] == ["AC", "WA", "AC", "CE", "AC"]
    assert [r.passed for r in results] == [3, 1, 3, 0, 3]  # wrong passes only 2 -> 4
    assert len(rec.requests) == 2  # two distinct programs; the missing one never ran
    assert rec.requests[0].checker == "tokens" and rec.requests[0].time_limit_s == 2.0


def test_on_result_fires_once_per_sample(executor):
    p = double_problem()
    seen = []
    judge_many(executor, [(p, "print(0)"), (p, "print(0)"), (p, None)], on_result=lambda i, r: seen.append((i, r.verdict.value)))
    assert sorted(seen) == [(0, "WA"), (1, "WA"), (2, "CE")]


def test_deadline_returns_none_for_unfinished_work(executor):
    p = double_problem()
    start = time.monotonic()
    results = judge_many(executor, [(p, "while True:\n    pass\n"), (p, None)], timeout_s=0.5)
    assert time.monotonic() - start < 1.5
    assert results[0] is None and results[1].verdict.value == "CE"


def test_unreachable_service_gives_none_not_an_exception():
    p = double_problem()
    with make_client("http://127.0.0.1:9") as client:
        start = time.monotonic()
        assert judge_many(client, [(p, "print(1)")], timeout_s=2.0) == [None]
        assert time.monotonic() - start < 4


def test_outcome_filters_on_public_tests_and_clusters_by_outputs(executor):
    p = double_problem()
    codes = [
        "print(int(input()) * 2)",  # correct
        "x = int(input())\nprint(x + x)",  # correct, same outputs
        "x = int(input())\nprint(4 if x == 2 else 0)",  # passes public only
        "print(4)",  # passes public only, different wrong outputs on hidden inputs... same as above? no: 4 vs 0
    ]
    outs = [outcome(p, r) for r in judge_many(executor, [(p, c) for c in codes])]
    assert [o.correct for o in outs] == [True, True, False, False]
    assert all(o.public_ok for o in outs)
    assert outs[0].signature == outs[1].signature
    assert len({o.signature for o in outs}) == 3
    assert outcome(p, judge_many(executor, [(p, None)])[0]).public_ok is False


def test_humaneval_check_program_decides_and_prints_do_not_matter(executor):
    p = Problem(
        id="HumanEval/x", source="humaneval", statement="def inc(x):\n", starter_code="def inc(x):\n", fn_name="inc",
        private_tests=[TestCase(input="", output="")], test_code="def check(f):\n    assert f(1) == 2\n\ncheck(inc)\n",
    )
    ok = program_from_completion(p, "    print('debug')\n    return x + 1\n")
    bad = program_from_completion(p, "    return x\n")
    assert [r.verdict.value for r in judge_many(executor, [(p, ok), (p, bad)])] == ["AC", "RE"]
    assert build_request(p, ok).fn_name == "__codealign_humaneval_done"  # passes only once check() returned


def test_apps_call_based_starter_code_gets_the_apps_imports(executor):
    p = Problem(
        id="apps-call", source="apps", statement="", fn_name="total", checker="apps",
        starter_code="class Solution:\n    def total(self, xs: List[int]) -> int:\n",
        private_tests=[TestCase(input=[[1, 2, 3]], output=[6]), TestCase(input=[[]], output=[0])],
    )
    code = "class Solution:\n    def total(self, xs: List[int]) -> int:\n        return sum(xs)\n"
    (r,) = judge_many(executor, [(p, code)])
    assert r.verdict.value == "AC" and r.passed == 2
    assert build_request(p, code).code.startswith("import sys")


@pytest.mark.skipif(not DATA.exists(), reason=f"real data samples not found at {DATA}")
def test_real_problem_reference_solution_is_accepted(executor):
    problems = {p.id: p for p in load_problems(DATA / "apps" / "train.jsonl")}
    checks = judge_references(executor, [problems["4184"]], max_per_problem=3)
    assert len(checks) == 3 and all(c.accepted for c in checks)


def test_call_based_samples_cluster_on_their_return_values(executor):
    p = Problem(
        id="apps-cluster", source="apps", statement="", fn_name="f", checker="apps",
        public_tests=[TestCase(input=[1], output=[2])],
        private_tests=[TestCase(input=[5], output=[10]), TestCase(input=[7], output=[14])],
    )
    codes = [
        "def f(x):\n    return 2 * x\n",
        "def f(x):\n    return x + x\n",  # same values as the first
        "def f(x):\n    return 2 if x == 1 else 0\n",  # passes the public test only
        "def f(x):\n    return 2 if x == 1 else -1\n",  # also, but with other wrong values
    ]
    outs = [outcome(p, r) for r in judge_many(executor, [(p, c) for c in codes])]
    assert [o.correct for o in outs] == [True, True, False, False] and all(o.public_ok for o in outs)
    assert outs[0].signature == outs[1].signature
    assert len({o.signature for o in outs}) == 3


def test_numpy_is_imported_only_for_programs_that_name_np(executor):
    """Class 10 (#9): `inp.split()` contains the text `np.` and was run after `import numpy as np`."""
    p = Problem(id="apps-np", source="apps", statement="", checker="apps",
                private_tests=[TestCase(input="3 4\n", output="3\n")])
    words = "inp = input()\nprint(inp.split()[0])\n"
    assert "numpy" not in build_request(p, words).code
    (r,) = judge_many(executor, [(p, words)])
    assert r.verdict.value == "AC"
    uses = "import sys\nx = np.array([int(v) for v in input().split()])\nprint(x[0])\n"
    request = build_request(p, uses).code
    # numpy as APPS' harness has it, guarded: a sandbox without numpy fails only programs using np.
    assert "try:\n    import numpy as np\nexcept ImportError:" in request
    for text in ("z = snp.x", "a.np.b", "q = 1"):
        assert "numpy" not in build_request(p, text).code


def test_a_problem_without_tests_is_never_correct(executor):
    """Class 10 (#9): an APPS row with an empty input_output ran 0 tests and counted as AC."""
    p = Problem(id="empty", source="apps", statement="", checker="apps")
    (r,) = judge_many(executor, [(p, "print(1)\n")])
    o = outcome(p, r)
    assert (o.passed, o.total) == (0, 0) and not o.correct
