"""LocalExecutor end to end: real worker processes judge real programs; one test per verdict kind,
plus call-based tests, stdin-from-a-file, stop_on_first_failure, the result cache and bad requests."""

import threading

import pytest

from sandbox.errors import BadRequest, LanguageUnavailable
from sandbox.local import LocalExecutor
from sandbox.spec import RunRequest, TestCase, Verdict


def T(i, o):
    return TestCase(input=i, output=o)


@pytest.fixture(scope="module")
def ex():
    with LocalExecutor(workers=2, cache_size=0) as e:
        yield e


def test_accepted_and_wrong_answer(ex):
    req = RunRequest(code="a, b = map(int, input().split())\nprint(a + b)",
                     tests=[T("1 2\n", "3\n"), T("5 5", "10"), T("2 2", "5")])
    r = ex.run(req)
    assert [t.verdict for t in r.tests] == [Verdict.AC, Verdict.AC, Verdict.WA]
    assert r.verdict == Verdict.WA and r.passed == 2 and r.total == 3
    assert r.tests[0].stdout == "3\n" and r.tests[0].exit_code == 0
    assert "expected '5', got '4'" in r.tests[2].message
    assert all(t.time_s > 0 and t.memory_mb > 0 for t in r.tests)


def test_stdin_is_a_file_so_the_fstat_idiom_reads_everything(ex):
    code = "import os\ndata = os.read(0, os.fstat(0).st_size).split()\nprint(sum(map(int, data)))"
    r = ex.run(RunRequest(code=code, tests=[T("1 2 3\n4\n", "10")]))
    assert r.verdict == Verdict.AC, r.tests[0]


def test_stdin_cannot_be_changed_by_the_program(ex):
    """Stdin is a sealed file: writing, truncating or growing it fails, and it stays the test's input."""
    code = ("import os\nfor f in (lambda: os.write(0, b'x'), lambda: os.ftruncate(0, 0), lambda: os.ftruncate(0, 99)):\n"
            "    try:\n        f()\n        print('changed')\n    except OSError:\n        pass\n"
            "print(os.pread(0, 100, 0).decode().split())")
    r = ex.run(RunRequest(code=code, tests=[T("7 8", "['7', '8']")] * 2))
    assert r.verdict == Verdict.AC, r.tests[0]


def test_runtime_error_reports_exit_code_and_traceback(ex):
    r = ex.run(RunRequest(code="x = [1]\nprint(x[5])", tests=[T("", "")]))
    t = r.tests[0]
    assert r.verdict == Verdict.RE and t.exit_code == 1
    assert "IndexError" in t.stderr and 'File "main.py", line 2' in t.stderr


def test_exit_code_and_signal_are_runtime_errors(ex):
    r = ex.run(RunRequest(code="import sys\nprint(1)\nsys.exit(3)", tests=[T("", "1")]))
    assert r.verdict == Verdict.RE and r.tests[0].exit_code == 3
    r = ex.run(RunRequest(code="import os, signal\nos.kill(os.getpid(), signal.SIGTERM)\nprint(1)", tests=[T("", "")]))
    assert r.verdict == Verdict.RE and r.tests[0].signal == 15 and r.tests[0].stdout == ""
    r = ex.run(RunRequest(code="import ctypes\nctypes.string_at(0)", tests=[T("", "")]))  # a real segfault
    assert r.verdict == Verdict.RE and r.tests[0].signal == 11


def test_sys_exit_zero_is_a_normal_end(ex):
    r = ex.run(RunRequest(code="print(7)\nraise SystemExit", tests=[T("", "7")]))
    assert r.verdict == Verdict.AC


def test_cpu_bound_loop_is_time_limit_exceeded(ex):
    r = ex.run(RunRequest(code="while True: pass", time_limit_s=0.5, tests=[T("", "")]))
    assert r.verdict == Verdict.TLE and r.tests[0].signal == 9


def test_sleeping_program_hits_the_wall_clock_backstop(ex):
    r = ex.run(RunRequest(code="import time\ntime.sleep(60)", time_limit_s=0.5, tests=[T("", "")]))
    assert r.verdict == Verdict.TLE and r.tests[0].time_s < 10


def test_memory_hog_is_memory_limit_exceeded(ex):
    r = ex.run(RunRequest(code="x = bytearray(400 * 2**20)\nprint(len(x))", memory_limit_mb=128,
                          tests=[T("", "")]))
    assert r.verdict == Verdict.MLE, r.tests[0]
    ok = ex.run(RunRequest(code="x = bytearray(40 * 2**20)\nprint(len(x))", memory_limit_mb=256,
                           tests=[T("", str(40 * 2**20))]))
    assert ok.verdict == Verdict.AC and ok.tests[0].memory_mb >= 40


def test_too_much_output_is_output_limit_exceeded_and_flagged(ex):
    r = ex.run(RunRequest(code="while True: print('y' * 1000)", output_limit_mb=1, tests=[T("", "")]))
    t = r.tests[0]
    assert r.verdict == Verdict.OLE and t.stdout_truncated and t.time_s < 5
    assert len(t.stdout) == 4096  # what the result carries (max_output_chars)


def test_large_output_within_the_cap_is_drained_completely(ex):
    n = 300_000  # ~2 MB: far more than a pipe buffer, so reading only at exit would deadlock
    r = ex.run(RunRequest(code=f"import sys\nsys.stdout.write('\\n'.join(map(str, range({n}))))",
                          tests=[T("", "\n".join(map(str, range(n))))]))
    assert r.verdict == Verdict.AC and r.tests[0].stdout_truncated


def test_stderr_flood_is_truncated_not_fatal(ex):
    code = "import sys\nfor _ in range(2000): sys.stderr.write('e' * 1000)\nprint('ok')"
    r = ex.run(RunRequest(code=code, max_output_chars=100, tests=[T("", "ok")]))
    assert r.verdict == Verdict.AC and r.tests[0].stderr_truncated and len(r.tests[0].stderr) == 100


def test_syntax_error_is_compile_error(ex):
    r = ex.run(RunRequest(code="def f(:\n  pass", tests=[T("", ""), T("", "")]))
    assert r.verdict == Verdict.CE and r.passed == 0 and r.total == 2
    assert "SyntaxError" in r.compile_output


def test_stop_on_first_failure_skips_later_tests(ex):
    tests = [T(str(i), str(i)) for i in range(6)]
    tests[2] = T("2", "wrong")
    r = ex.run(RunRequest(code="print(input())", tests=tests, stop_on_first_failure=True))
    assert [t.verdict for t in r.tests] == [Verdict.AC, Verdict.AC, Verdict.WA] + [Verdict.SKIPPED] * 3
    assert r.verdict == Verdict.WA and r.passed == 2
    r = ex.run(RunRequest(code="print(input())", tests=tests))
    assert [t.verdict for t in r.tests].count(Verdict.AC) == 5


def test_overall_verdict_is_the_first_failing_tests(ex):
    code = "n = int(input())\nif n == 1: print(1/0)\nif n == 2:\n    while True: pass\nprint(n)"
    r = ex.run(RunRequest(code=code, time_limit_s=0.5, tests=[T("0", "0"), T("2", "2"), T("1", "1")]))
    assert [t.verdict for t in r.tests] == [Verdict.AC, Verdict.TLE, Verdict.RE]
    assert r.verdict == Verdict.TLE


def test_call_based_function_with_apps_list_wrapping(ex):
    code = "def add(a, b):\n    return a + b\n"
    r = ex.run(RunRequest(code=code, fn_name="add", tests=[T([1, 2], [3]), T([[1], [2]], [[1, 2]]), T([1, 2], 3),
                                                          T([2, 2], [5])]))
    assert [t.verdict for t in r.tests] == [Verdict.AC, Verdict.AC, Verdict.AC, Verdict.WA]


def test_call_based_solution_class_method_and_tuples(ex):
    code = "class Solution:\n    def pair(self, x):\n        print('debug output is ignored')\n        return (x, x * 2)\n"
    r = ex.run(RunRequest(code=code, fn_name="pair", tests=[T([3], [[3, 6]]), T([1], [1, 2])]))
    assert r.verdict == Verdict.AC, r.tests


def test_call_based_missing_function_and_exception(ex):
    r = ex.run(RunRequest(code="def other(): pass", fn_name="f", tests=[T([], 1)]))
    assert r.verdict == Verdict.CE and "'f'" in r.tests[0].message
    r = ex.run(RunRequest(code="def f(x): return x[10]", fn_name="f", tests=[T([[1]], 1)]))
    assert r.verdict == Verdict.RE and "IndexError" in r.tests[0].stderr


def test_call_based_sets_and_unserializable_values(ex):
    r = ex.run(RunRequest(code="def f(): return {3, 1, 2}", fn_name="f", tests=[T([], [[1, 2, 3]])]))
    assert r.verdict == Verdict.AC
    r = ex.run(RunRequest(code="def f(): return object()", fn_name="f", tests=[T([], [1])]))
    assert r.verdict == Verdict.WA


def test_stdin_list_input_is_joined_with_newlines(ex):
    r = ex.run(RunRequest(code="print(input() + input())", tests=[T(["ab", "cd"], "abcd")]))
    assert r.verdict == Verdict.AC


def test_checker_choice_changes_the_verdict(ex):
    base = dict(code="print('YES ')", tests=[T("", "yes")])
    assert ex.run(RunRequest(**base)).verdict == Verdict.WA
    assert ex.run(RunRequest(**base, checker="codecontests")).verdict == Verdict.AC
    assert ex.run(RunRequest(code="print('yes')", tests=[T("", "yes")], checker="exact")).verdict == Verdict.WA


def test_empty_test_list_is_accepted_vacuously(ex):
    r = ex.run(RunRequest(code="print(1)", tests=[]))
    assert r.verdict == Verdict.AC and r.total == 0


def test_bad_requests_raise_clear_errors(ex):
    with pytest.raises(LanguageUnavailable, match="unknown language"):
        ex.run({"language": "cobol", "code": "", "tests": []})
    with pytest.raises(BadRequest, match="unknown checker"):
        ex.run(RunRequest(code="", checker="fuzzy"))
    with pytest.raises(BadRequest, match="only supported for python"):
        ex.run(RunRequest(language="cpp", code="", fn_name="f"))
    with pytest.raises(BadRequest, match="argument list"):
        ex.run(RunRequest(code="", fn_name="f", tests=[T("1 2", 3)]))
    with pytest.raises(BadRequest, match="invalid run request"):
        ex.run({"code": "print(1)", "time_limit_s": -1})
    assert ex.run(RunRequest(code="print(1)", tests=[T("", "1")])).verdict == Verdict.AC


def test_timeout_s_bounds_the_call(ex):
    with pytest.raises(TimeoutError):
        ex.run(RunRequest(code="import time\ntime.sleep(5)", time_limit_s=3, tests=[T("", "")]), timeout_s=0.5)


def test_result_cache_answers_identical_requests_once():
    with LocalExecutor(workers=1) as e:
        req = RunRequest(code="print(int(input()) + 1)", tests=[T("1", "2"), T("2", "3")])
        first, second = e.run(req), e.run(req)
        assert not first.cached and second.cached
        assert second.verdict == first.verdict == Verdict.AC and second.tests == first.tests
        changed = e.run(req.model_copy(update={"time_limit_s": 2.0}))
        assert not changed.cached
        s = e.stats()
        assert s["cache_hits"] == 1 and s["executions"] == 2 and s["tests_executed"] == 4


def test_run_many_keeps_order_and_calls_back(ex):
    reqs = [RunRequest(code=f"print(int(input()) * {k})", tests=[T("3", str(3 * k))]) for k in range(12)]
    reqs[5] = RunRequest(code="print(0)", tests=[T("3", "15")])
    seen = {}
    lock = threading.Lock()

    def cb(i, res):
        with lock:
            seen[i] = res.verdict

    out = ex.run_many(reqs, on_result=cb)
    assert [r.verdict for r in out] == [Verdict.AC] * 5 + [Verdict.WA] + [Verdict.AC] * 6
    assert seen == {i: r.verdict for i, r in enumerate(out)}


def test_stats_count_verdicts_and_report_isolation(ex):
    s = ex.stats()
    for key in ("workers", "busy_workers", "queue_depth", "executions", "verdicts", "test_verdicts",
                "compiles", "isolation"):
        assert key in s
    assert s["workers"] == 2 and s["verdicts"].get("AC", 0) >= 1 and s["queue_depth"] == 0


def test_python_runtime_matches_a_real_interpreter(ex):
    """Details real solutions rely on: std stream attributes (FastIO templates), atexit hooks,
    closing stdout inside the program, __name__ == '__main__', a fresh random seed per run."""
    code = """import sys, os, atexit, random
assert sys.stdin.mode == 'r' and sys.stdout.mode == 'w' and sys.stdin.name == '<stdin>'
assert 'x' not in sys.stdout.mode and __name__ == '__main__'
atexit.register(lambda: os.write(1, b"from atexit\\n"))
print(random.random())
with sys.stdin as fin, sys.stdout as fout:
    fout.write(fin.readline())
"""
    r = ex.run(RunRequest(code=code, tests=[T("hello\n", "x"), T("hello\n", "x")]))
    outs = [t.stdout.splitlines() for t in r.tests]
    assert all(t.exit_code == 0 for t in r.tests), r.tests
    assert [o[1:] for o in outs] == [["hello", "from atexit"]] * 2
    assert outs[0][0] != outs[1][0]  # not the same random stream in every run


def test_a_killed_worker_is_replaced_and_leaves_nothing_behind():
    import os
    import signal
    import time

    with LocalExecutor(workers=1, cache_size=0) as e:
        req = RunRequest(code="print(input())", tests=[T("a", "a")])
        assert e.run(req).verdict == Verdict.AC
        old = e.worker_info()[0]["pid"]
        os.kill(old, signal.SIGKILL)
        time.sleep(0.2)
        assert e.run(req).verdict == Verdict.AC  # retried on a fresh worker
        assert e.worker_info()[0]["pid"] != old
        assert not os.path.exists(f"/tmp/codealign-sandbox-root-{old}")


def test_deep_recursion_idioms_work(ex):
    """Competitive solutions raise the recursion limit, the stack rlimit and the thread stack size."""
    code = """import sys, threading, resource
resource.setrlimit(resource.RLIMIT_STACK, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
sys.setrecursionlimit(10**6)
threading.stack_size(10**8)
def f(n): return 0 if n == 0 else 1 + f(n - 1)
def main(): print(f(10**5))
t = threading.Thread(target=main); t.start(); t.join()
"""
    r = ex.run(RunRequest(code=code, tests=[T("", "100000")]))
    assert r.verdict == Verdict.AC, r.tests[0]


def test_wall_time_limit_overrides_the_backstop(ex):
    import time

    t0 = time.monotonic()
    r = ex.run(RunRequest(code="import time\ntime.sleep(30)", time_limit_s=5, wall_time_limit_s=0.7,
                          tests=[T("", "")]))
    assert r.verdict == Verdict.TLE and time.monotonic() - t0 < 5
    assert "0.7 s" in r.tests[0].message
    # The backstop for 0.3 s of CPU would be 1.9 s; the explicit wall limit lets a 2.5 s sleep finish.
    ok = ex.run(RunRequest(code="import time\ntime.sleep(2.5)\nprint(1)", time_limit_s=0.3, wall_time_limit_s=8,
                           tests=[T("", "1")]))
    assert ok.verdict == Verdict.AC, ok.tests[0]  # sleeping uses wall time, not CPU time


def test_call_based_results_carry_the_return_value(ex):
    r = ex.run(RunRequest(code="def f(n): return [n, str(n)]", fn_name="f", tests=[T([3], [[3, "3"]]), T([4], [0])]))
    assert [t.value for t in r.tests] == [[3, "3"], [4, "4"]]
    big = ex.run(RunRequest(code="def f(): return 'x' * 100000", fn_name="f", tests=[T([], "")]))
    assert big.tests[0].value is None and big.verdict == Verdict.WA
    stdin = ex.run(RunRequest(code="print(1)", tests=[T("", "1")]))
    assert stdin.tests[0].value is None


def test_closing_during_a_run_fails_it_instead_of_hanging():
    import threading

    from sandbox.errors import SandboxFailure

    e = LocalExecutor(workers=1, cache_size=0)
    errors = []

    def run():
        try:
            e.run(RunRequest(code="import time\ntime.sleep(0.5)\nprint(1)", tests=[T("", "1")] * 20))
        except SandboxFailure as err:
            errors.append(err)

    th = threading.Thread(target=run)
    th.start()
    import time

    time.sleep(1.0)
    e.close()
    th.join(timeout=30)
    assert not th.is_alive() and len(errors) == 1
    with pytest.raises(SandboxFailure, match="closed"):
        e.run(RunRequest(code="print(1)", tests=[T("", "1")]))


def test_multiprocessing_pool_works_and_leaves_no_shared_memory(ex):
    code = """import multiprocessing, os
def sq(x): return x * x
if __name__ == "__main__":
    with multiprocessing.Pool(2) as p:
        print(sum(p.map(sq, range(10))))
    open("/dev/shm/left_behind", "w").write("x")  # raw, so no resource tracker cleans it up
"""
    r = ex.run(RunRequest(code=code, tests=[T("", "285")]))
    assert r.tests[0].stdout.split() == ["285"], r.tests[0]
    look = ex.run(RunRequest(code="import os\nprint(os.listdir('/dev/shm') if os.path.isdir('/dev/shm') else [])",
                             tests=[T("", "[]")] * 4))
    assert look.verdict == Verdict.AC, [t.stdout for t in look.tests]


def test_python_compile_warnings_go_to_compile_output_not_stderr(ex, capfd):
    r = ex.run(RunRequest(code="print(1 is 1)", tests=[T("", "True")]))  # SyntaxWarning: "is" with a literal
    assert r.verdict == Verdict.AC
    assert "SyntaxWarning" in r.compile_output
    assert "SyntaxWarning" not in capfd.readouterr().err


def test_site_builtins_and_modules_not_preloaded_work_as_under_python3(ex):
    """The zygote runs without site (python -I -S) and preloads only what solutions commonly import:
    exit()/quit() still end the program with their status, and any other stdlib module imports from
    the interpreter's read-only prefix inside the sandbox."""
    r = ex.run(RunRequest(code="print(input())\nexit()\nprint('not reached')", tests=[T("a\n", "a")]))
    assert r.verdict == Verdict.AC and r.tests[0].stdout == "a\n", r.tests[0]
    r = ex.run(RunRequest(code="quit(3)", tests=[T("", "")]))
    assert r.tests[0].verdict == Verdict.RE and r.tests[0].exit_code == 3, r.tests[0]
    code = ("import hashlib, statistics, dataclasses, sys\n"
            "assert callable(help) and 'Python' in str(copyright)\n"
            "print(hashlib.sha256(b'x').hexdigest()[:8], statistics.median([3, 1, 2]),"
            " 'hashlib' in sys.modules)")
    r = ex.run(RunRequest(code=code, tests=[T("", "2d711642 2 True")]))
    assert r.verdict == Verdict.AC, r.tests[0]


def test_a_worker_whose_zygote_cannot_start_refuses_with_the_reason(tmp_path):
    """A real worker process whose zygote command exits at once: the worker's hello says why."""
    import subprocess
    import sys

    script = ("import sys\nfrom sandbox import worker\n"
              "worker.zygote_command = lambda config: [sys.executable, '-c', 'raise SystemExit(3)']\n"
              f"w = worker.Worker({str(tmp_path)!r}, 64, 'off')\nprint(w.error, file=sys.stderr)\n")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert "the zygote did not start" in out.stderr, out.stderr


def test_threads_still_running_when_the_code_ends_are_joined_as_under_python3(ex):
    """The runtime's exit joins non-daemon threads (and runs concurrent.futures' exit hook) before
    flushing, as CPython's finalization does; daemon threads are not waited for."""
    code = ("import threading, time, sys\nfrom concurrent.futures import ThreadPoolExecutor\n"
            "def late(tag):\n    time.sleep(0.2)\n    print(tag, flush=True)\n"
            "threading.Thread(target=late, args=('thread',)).start()\n"
            "ThreadPoolExecutor(1).submit(late, 'pool')\n"
            "threading.Thread(target=lambda: (time.sleep(30), print('daemon')), daemon=True).start()\n"
            "print('main')\n")
    r = ex.run(RunRequest(code=code, tests=[T("", "")], wall_time_limit_s=10))
    t = r.tests[0]
    assert t.exit_code == 0 and sorted(t.stdout.split()) == ["main", "pool", "thread"], t
    assert t.time_s < 5, t  # the daemon thread's sleep was not waited for
