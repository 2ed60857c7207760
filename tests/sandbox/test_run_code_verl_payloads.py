"""The load of ``benchmarks/run_code_load.py`` is what verl sends, and ``/run_code`` judges it right.

Real CodeContests and APPS rows from ../shared/data, posted as verl posts them (one request per test,
a fresh connection each) to the shared ``python -m sandbox serve`` on 127.0.0.1, and read with verl's
own verdict rules. The benchmark's speed figures are not checked here (docs/sandbox_service.md).
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

from sandbox.fusion import RunCodeRequest

REPO = Path(__file__).resolve().parents[2]
DATA = REPO / ".." / "shared" / "data"


def _load_benchmark():
    spec = importlib.util.spec_from_file_location("run_code_load", REPO / "benchmarks" / "run_code_load.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


bench = _load_benchmark()


def _judge(url: str, calls) -> list[str]:
    verdicts = []
    for call in calls:
        RunCodeRequest.model_validate(call.body)  # the body fits SandboxFusion's schema as we read it
        answer, retries = bench.post_like_verl(url, json.dumps(call.body).encode(), timeout_s=60)
        verdicts.append(bench.verl_verdict(answer, call.expected))
    return verdicts


@pytest.fixture(scope="module")
def apps_call_problems():
    if not (DATA / "apps" / "train.jsonl").is_file():
        pytest.skip(f"no APPS rows at {DATA}")
    return {p.fn_name: p for p in bench.row_problems(DATA, "apps-call", 100)}


def test_body_has_verls_fields_and_defaults():
    body = bench.fusion_body("print(1)", "x")
    assert set(body) == {"code", "stdin", "language", "compile_timeout", "run_timeout", "memory_limit_MB",
                         "files", "fetch_files"}
    assert (body["compile_timeout"], body["run_timeout"], body["memory_limit_MB"]) == (10, 10, 1024)


def test_codecontests_reference_passes_every_test_and_a_wrong_program_does_not(server_url):
    if not (DATA / "code_contests" / "train.jsonl").is_file():
        pytest.skip(f"no CodeContests rows at {DATA}")
    problem = bench.row_problems(DATA, "codecontests", 1)[0]
    sample = next(bench.codecontests_samples([problem]))
    assert len(sample) == len(problem.all_tests()) > 1
    assert _judge(server_url, sample) == ["pass"] * len(sample)

    wrong = [bench.Call(bench.fusion_body("print(0)", c.body["stdin"]), c.expected) for c in sample]
    assert "pass" not in _judge(server_url, wrong[:3])


def test_call_based_wrapper_passes_references_of_a_function_and_a_solution_method(server_url, apps_call_problems):
    for fn_name in ("is_prime", "findKthPositive"):  # a module-level function; a method of class Solution
        problem = apps_call_problems[fn_name]
        sample = next(bench.apps_call_samples([problem]))
        assert _judge(server_url, sample) == ["pass"] * len(sample), fn_name


def test_call_based_wrapper_fails_wrong_and_raising_functions(server_url, apps_call_problems):
    problem = apps_call_problems["is_prime"]
    tests = problem.all_tests()
    assert {t.output[0] for t in tests} == {True, False}  # so a constant answer must fail somewhere

    def calls(code: str):
        program = bench.call_based_program(code, "is_prime")
        return [bench.Call(bench.fusion_body(program, bench.call_stdin(t.input)), bench.apps_expected(t.output))
                for t in tests]

    assert "wrong" in _judge(server_url, calls("def is_prime(n):\n    return True\n"))
    # verl's wrapper prints the traceback and exits 0: an empty stdout, read as a wrong answer
    assert set(_judge(server_url, calls("def is_prime(n):\n    raise ValueError(n)\n"))) == {"wrong"}
    # a missing function is reported the same way
    assert set(_judge(server_url, calls("def prime(n):\n    return True\n"))) == {"wrong"}
