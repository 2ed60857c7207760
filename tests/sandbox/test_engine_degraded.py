"""Degraded mode (what a non-root service gets): no namespaces, chroot or uid drop, but rlimits,
a session killed as a group, a clean environment and a private temp dir; verdicts unchanged.
``isolate="off"`` takes exactly the code path a worker takes when it is not root."""

import logging

import pytest

from sandbox.local import LocalExecutor
from sandbox.spec import RunRequest, TestCase, Verdict


def T(i, o):
    return TestCase(input=i, output=o)


@pytest.fixture(scope="module")
def ex():
    with LocalExecutor(workers=1, cache_size=0, isolate="off") as e:
        yield e


def test_degraded_mode_is_reported_and_logged(ex, caplog):
    with caplog.at_level(logging.WARNING, logger="sandbox"):
        with LocalExecutor(workers=1, isolate="off") as e2:
            assert e2.run(RunRequest(code="print(1)", tests=[T("", "1")])).verdict == Verdict.AC
            assert e2.isolation.startswith("degraded")
            assert e2.stats()["isolation"].startswith("degraded")
    assert any("WITHOUT full isolation" in r.message for r in caplog.records)


def test_degraded_mode_still_judges_every_verdict(ex):
    cases = [
        ("print(int(input()) + 1)", "1", "2", Verdict.AC),
        ("print(5)", "", "6", Verdict.WA),
        ("raise ValueError", "", "", Verdict.RE),
        ("while True: pass", "", "", Verdict.TLE),
        ("x = b'x' * (600 * 2**20)", "", "", Verdict.MLE),
        ("while True: print('x' * 1000)", "", "", Verdict.OLE),
    ]
    for code, inp, out, verdict in cases:
        r = ex.run(RunRequest(code=code, time_limit_s=0.5, memory_limit_mb=256, output_limit_mb=1,
                              tests=[T(inp, out)]))
        assert r.verdict == verdict, (code, r.tests[0])


def test_degraded_mode_kills_the_process_group_on_timeout(ex):
    code = "import os, time\nif os.fork() == 0:\n    time.sleep(300)\ntime.sleep(300)\n"
    r = ex.run(RunRequest(code=code, time_limit_s=0.5, tests=[T("", "")]))
    assert r.verdict == Verdict.TLE and r.tests[0].time_s < 10


DEGRADED = ["filesystem", "memory_tree", "network", "pid_namespace", "tmp_size", "uid"]


def test_what_degraded_mode_does_not_enforce_is_in_health_and_in_every_result(ex):
    assert ex.health()["unenforced"] == DEGRADED
    r = ex.run(RunRequest(code="print(1)", tests=[T("", "1")]))
    assert r.verdict == Verdict.AC and r.unenforced == DEGRADED


@pytest.mark.skipif(__import__("os").geteuid() != 0, reason="full isolation needs root")
def test_running_without_a_memory_cgroup_is_an_explicit_choice_reported_everywhere(caplog):
    """memory_cgroup=False: the tree's memory is not capped (the per-process limit still holds), and
    the executor says so at start, in health() and in every result, cached ones included."""
    spread = ("import os, time\nkids = []\nfor _ in range(3):\n    pid = os.fork()\n    if pid == 0:\n"
              "        x = b'x' * (150 * 2**20)\n        time.sleep(1)\n        os._exit(0)\n    kids.append(pid)\n"
              "for k in kids:\n    os.waitpid(k, 0)\nprint('done')\n")
    with caplog.at_level(logging.WARNING, logger="sandbox"):
        with LocalExecutor(workers=1, memory_cgroup=False) as e:
            assert e.health()["unenforced"] == ["memory_tree"] and e.isolation == "full"
            req = RunRequest(code=spread, memory_limit_mb=256, time_limit_s=3, tests=[T("", "done")])
            for _ in range(2):
                r = e.run(req)
                assert r.verdict == Verdict.AC and r.unenforced == ["memory_tree"]
            assert r.cached
    assert any("NOT enforced" in rec.message and "memory_tree" in rec.message for rec in caplog.records)
