"""The HTTP contract outside tests rely on, against a real server process and the real container.

Each test runs twice through the ``service_url`` fixture (see conftest.py): ``[process]`` is
``python -m sandbox serve`` on 127.0.0.1, ``[docker]`` the service image started with the docker SDK.
"""

from __future__ import annotations

import re
import shutil
import time

import httpx
import pytest

from sandbox import batch
from sandbox.spec import TestCase

ECHO_SUM = "a, b = map(int, input().split())\nprint(a + b)\n"
SUM_TESTS = [{"input": "1 2\n", "output": "3\n"}, {"input": "5 7\n", "output": "12"}]

CPP_SUM = """#include <cstdio>
int main() { long long a, b; if (scanf("%lld %lld", &a, &b) != 2) return 1; printf("%lld\\n", a + b); }
"""

JAVA_SUM = """import java.util.Scanner;
public class Main { public static void main(String[] a) { Scanner s = new Scanner(System.in);
  long x = s.nextLong(), y = s.nextLong(); System.out.println(x + y); } }
"""


def post(url: str, path: str, body=None, **kw) -> httpx.Response:
    return httpx.post(url + path, json=body, timeout=120, **kw)


def test_healthz_answers_200(service_url):
    resp = httpx.get(service_url + "/healthz", timeout=10)
    assert resp.status_code == 200
    assert resp.json()["status"] == "ok"


def test_run_accepts_a_correct_python_program(service_url):
    resp = post(
        service_url,
        "/v1/run",
        {"language": "python", "code": ECHO_SUM, "tests": SUM_TESTS, "fn_name": None, "time_limit_s": 2,
         "memory_limit_mb": 256, "stop_on_first_failure": False},
    )
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["verdict"] == "AC" and body["passed"] == 2 and body["total"] == 2
    assert [t["verdict"] for t in body["tests"]] == ["AC", "AC"]
    assert all(isinstance(t["time_s"], float) and t["time_s"] >= 0 for t in body["tests"])


def test_run_fills_defaults_for_optional_fields(service_url):
    resp = post(service_url, "/v1/run", {"code": ECHO_SUM, "tests": SUM_TESTS})
    assert resp.status_code == 200, resp.text
    assert resp.json()["verdict"] == "AC"


def test_run_reports_wrong_answer_and_skips_after_first_failure(service_url):
    tests = [{"input": "1 1\n", "output": "2"}, {"input": "2 2\n", "output": "5"}, {"input": "3 3\n", "output": "6"}]
    body = post(service_url, "/v1/run", {"code": ECHO_SUM, "tests": tests, "stop_on_first_failure": True}).json()
    assert body["verdict"] == "WA" and body["passed"] == 1 and body["total"] == 3
    assert [t["verdict"] for t in body["tests"]] == ["AC", "WA", "SKIPPED"]
    body = post(service_url, "/v1/run", {"code": ECHO_SUM, "tests": tests}).json()
    assert [t["verdict"] for t in body["tests"]] == ["AC", "WA", "AC"]


def test_run_judges_runtime_error_and_time_limit(service_url):
    re_body = post(service_url, "/v1/run", {"code": "raise SystemExit(3)", "tests": SUM_TESTS[:1]}).json()
    assert re_body["verdict"] == "RE" and re_body["tests"][0]["exit_code"] == 3
    tle = post(service_url, "/v1/run", {"code": "while True: pass", "tests": SUM_TESTS[:1], "time_limit_s": 0.5}).json()
    assert tle["verdict"] == "TLE" and tle["passed"] == 0


def test_run_calls_fn_name_for_call_based_tests(service_url):
    code = "class Solution:\n    def add(self, a, b):\n        return a + b\n"
    tests = [{"input": [1, 2], "output": [3]}, {"input": [10, -4], "output": 6}]
    body = post(service_url, "/v1/run", {"code": code, "tests": tests, "fn_name": "add"}).json()
    assert body["verdict"] == "AC", body


def test_run_compiles_cpp_and_reports_compile_errors(service_url):
    ok = post(service_url, "/v1/run", {"language": "cpp", "code": CPP_SUM, "tests": SUM_TESTS}).json()
    assert ok["verdict"] == "AC", ok
    bad = post(service_url, "/v1/run", {"language": "cpp", "code": "int main( {", "tests": SUM_TESTS}).json()
    assert bad["verdict"] == "CE" and bad["passed"] == 0
    assert "error" in bad["compile_output"]


def test_run_java_when_a_jdk_is_present_else_a_clear_error(service_url, request):
    resp = post(service_url, "/v1/run", {"language": "java", "code": JAVA_SUM, "tests": SUM_TESTS})
    has_jdk = "docker" in request.node.callspec.id or (shutil.which("javac") and shutil.which("java"))
    if has_jdk:  # the image installs a JDK
        assert resp.status_code == 200 and resp.json()["verdict"] == "AC", resp.text
    else:
        assert resp.status_code == 400
        assert re.search(r"java", resp.json()["detail"], re.I), resp.text


@pytest.mark.parametrize(
    ("raw", "body", "status", "phrase"),
    [
        (b'{"code": "print(1)", ', None, 400, "malformed JSON"),
        (None, {"language": "cobol", "code": "x", "tests": []}, 422, "language"),
        (None, {"code": "x", "tests": [], "time_limit_s": -1}, 422, "time_limit_s"),
        (None, {"code": "x", "tests": [], "memory_limit_mb": -5}, 422, "memory_limit_mb"),
        (None, {"tests": SUM_TESTS}, 422, "code: Field required"),
        (None, {"code": "x", "tests": [{"input": "1"}]}, 422, "output"),
        (None, {"code": "x", "tests": "not a list"}, 422, "tests"),
        (None, ["not", "an", "object"], 422, "body"),
        (None, {"code": "x", "tests": [], "surprise": 1}, 422, "surprise"),
        (None, {"code": "x", "tests": SUM_TESTS, "checker": "nope"}, 400, "unknown checker"),
        (None, {"language": "cpp", "code": "int main(){}", "fn_name": "f", "tests": [{"input": [1], "output": 1}]}, 400,
         "fn_name"),
    ],
    ids=["malformed-json", "unknown-language", "negative-time", "negative-memory", "missing-code",
         "test-without-output", "tests-not-list", "body-not-object", "unknown-field", "unknown-checker",
         "fn-name-with-cpp"],
)
def test_bad_requests_get_a_clear_4xx_and_the_service_keeps_serving(service_url, raw, body, status, phrase):
    if raw is not None:
        resp = httpx.post(service_url + "/v1/run", content=raw, headers={"content-type": "application/json"}, timeout=30)
    else:
        resp = post(service_url, "/v1/run", body)
    assert resp.status_code == status, resp.text
    assert phrase.lower() in resp.json()["detail"].lower()
    again = post(service_url, "/v1/run", {"code": ECHO_SUM, "tests": SUM_TESTS})
    assert again.status_code == 200 and again.json()["verdict"] == "AC"


def test_batch_path_judges_many_programs_against_a_registered_test_set(service_url):
    reg = post(service_url, "/v1/testsets", {"tests": SUM_TESTS})
    assert reg.status_code == 200, reg.text
    key = reg.json()["id"]
    assert key == batch.testset_id([TestCase(**t) for t in SUM_TESTS]) and reg.json()["count"] == 2
    assert httpx.get(f"{service_url}/v1/testsets/{key}", timeout=10).json() == {"id": key, "count": 2}

    programs = [
        {"code": ECHO_SUM},
        {"code": "print(0)"},
        {"code": CPP_SUM, "language": "cpp"},
        {"code": "import sys; sys.exit(1)"},
    ]
    resp = post(service_url, "/v1/batch", {"testset": key, "programs": programs})
    assert resp.status_code == 200, resp.text
    assert [r["verdict"] for r in resp.json()["results"]] == ["AC", "WA", "AC", "RE"]


def test_batch_with_unknown_test_set_is_404_with_a_hint(service_url):
    resp = post(service_url, "/v1/batch", {"testset": "0" * 64, "programs": [{"code": "print(1)"}]})
    assert resp.status_code == 404
    assert "POST /v1/testsets" in resp.json()["detail"]
    assert httpx.get(f"{service_url}/v1/testsets/{'0' * 64}", timeout=10).status_code == 404


def test_batch_rejects_programs_that_carry_their_own_tests(service_url):
    key = post(service_url, "/v1/testsets", {"tests": SUM_TESTS}).json()["id"]
    resp = post(service_url, "/v1/batch", {"testset": key, "programs": [{"code": "x", "tests": SUM_TESTS}]})
    assert resp.status_code == 422 and "test set" in resp.json()["detail"]
    assert post(service_url, "/v1/testsets", {"tests": []}).status_code == 422


def _metric(text: str, name: str, **labels: str) -> float:
    label_text = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    pattern = re.escape(name + ("{" + label_text + "}" if labels else "")) + r" ([0-9.e+-]+)$"
    match = re.search(pattern, text, re.M)
    return float(match.group(1)) if match else 0.0


def test_metrics_count_executions_verdicts_queue_and_latency(service_url):
    before = httpx.get(service_url + "/metrics", timeout=10).text
    post(service_url, "/v1/run", {"code": ECHO_SUM, "tests": SUM_TESTS})
    post(service_url, "/v1/run", {"code": "print(0)", "tests": SUM_TESTS})
    resp = httpx.get(service_url + "/metrics", timeout=10)
    assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/plain")
    after = resp.text
    assert _metric(after, "sandbox_executions_total", language="python") >= _metric(before, "sandbox_executions_total", language="python") + 2
    assert _metric(after, "sandbox_runs_total", verdict="WA") >= _metric(before, "sandbox_runs_total", verdict="WA") + 1
    assert _metric(after, "sandbox_tests_total", verdict="AC") >= _metric(before, "sandbox_tests_total", verdict="AC") + 2
    assert "# TYPE sandbox_queue_depth gauge" in after and re.search(r"^sandbox_queue_depth \d+$", after, re.M)
    assert "# TYPE sandbox_run_latency_seconds histogram" in after
    count = _metric(after, "sandbox_run_latency_seconds_count")
    assert count >= 2 and _metric(after, "sandbox_run_latency_seconds_bucket", le="+Inf") == count
    assert _metric(after, "sandbox_workers") >= 1


# -- SandboxFusion's /run_code ------------------------------------------------------------------------


def run_code(url: str, **fields) -> httpx.Response:
    body = {"compile_timeout": 10, "run_timeout": 10, "stdin": "", "files": {}, "fetch_files": [], **fields}
    return post(url, "/run_code", body)


def test_sandbox_fusion_ping_answers_pong(service_url):
    resp = httpx.get(service_url + "/v1/ping", timeout=10)
    assert resp.status_code == 200 and resp.json() == "pong"


def test_run_code_success_returns_stdout(service_url):
    resp = run_code(service_url, code=ECHO_SUM, language="python", stdin="20 22\n")
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["status"] == "Success" and body["compile_result"] is None
    run = body["run_result"]
    assert run["status"] == "Finished" and run["return_code"] == 0 and run["stdout"] == "42\n"
    assert isinstance(run["execution_time"], float) and run["stderr"] == ""


def test_run_code_returns_large_stdout_whole(service_url):
    body = run_code(service_url, code="print('x' * 300000)\nprint('end')", language="python").json()
    assert body["status"] == "Success"
    assert body["run_result"]["stdout"] == "x" * 300000 + "\nend\n"


def test_run_code_runtime_error_is_failed_with_nonzero_return_code(service_url):
    body = run_code(service_url, code="import sys\nprint('x', file=sys.stderr)\nsys.exit(4)", language="python").json()
    assert body["status"] == "Failed"
    assert body["run_result"]["status"] == "Finished" and body["run_result"]["return_code"] == 4
    assert "x" in body["run_result"]["stderr"]


def test_run_code_cpp_compile_error_and_success(service_url):
    bad = run_code(service_url, code="int main( {", language="cpp").json()
    assert bad["status"] == "Failed" and bad["run_result"] is None
    assert bad["compile_result"]["status"] == "Finished" and bad["compile_result"]["return_code"] != 0
    assert "error" in bad["compile_result"]["stderr"]
    ok = run_code(service_url, code=CPP_SUM, language="cpp", stdin="2 3").json()
    assert ok["status"] == "Success" and ok["run_result"]["stdout"] == "5\n"
    assert ok["compile_result"]["return_code"] == 0


def test_run_code_timeout_is_time_limit_exceeded(service_url):
    body = run_code(service_url, code="while True: pass", language="python", run_timeout=1).json()
    assert body["status"] == "Failed"
    assert body["run_result"]["status"] == "TimeLimitExceeded" and body["run_result"]["return_code"] is None


def test_run_code_time_limit_is_wall_clock_as_in_sandbox_fusion(service_url):
    """A sleeping program uses no CPU; SandboxFusion's run_timeout is wall clock, so it is TLE by then."""
    start = time.monotonic()
    body = run_code(service_url, code="import time\ntime.sleep(30)", language="python", run_timeout=1).json()
    assert time.monotonic() - start < 6  # the answer comes near run_timeout + 1 s, not at the engine's backstop
    assert body["status"] == "Failed" and body["run_result"]["status"] == "TimeLimitExceeded"
    ok = run_code(service_url, code="print(7)", language="python").json()  # waits for the freed worker if needed
    assert ok["status"] == "Success" and ok["run_result"]["stdout"] == "7\n"


@pytest.mark.parametrize(
    ("fields", "phrase"),
    [
        ({"code": "print(1)", "language": "brainfuck"}, "not supported"),
        ({"language": "python"}, "code"),
        ({"code": "print(1)", "language": "python", "run_timeout": -1}, "run_timeout"),
        ({"code": "print(1)", "language": "python", "files": {"a.txt": "aGk="}}, "files"),
    ],
    ids=["unknown-language", "missing-code", "negative-timeout", "files"],
)
def test_run_code_bad_request_is_4xx(service_url, fields, phrase):
    resp = post(service_url, "/run_code", fields)
    assert 400 <= resp.status_code < 500, resp.text
    assert phrase in resp.json()["detail"]


HOSTILE = {
    "fork-bomb": ("import os\nwhile True:\n    os.fork()", ("RE", "TLE", "MLE")),
    "memory-bomb": ("x = []\nwhile True:\n    x.append(bytearray(1 << 24))", ("MLE", "RE")),
    "kill-parent": ("import os, signal\nos.kill(os.getppid(), signal.SIGKILL)\nos.kill(1, signal.SIGKILL)\nprint(1)", None),
    "kill-all": ("import os, signal\ntry:\n    os.kill(-1, signal.SIGKILL)\nexcept OSError:\n    pass\nprint(1)", None),
    "flood-output": ("import sys\nwhile True:\n    sys.stdout.write('y' * 65536)", ("OLE",)),
    "ignore-signals": ("import signal\nfor s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):\n    signal.signal(s, signal.SIG_IGN)\nwhile True: pass", ("TLE",)),
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_programs_get_a_verdict_and_the_service_keeps_serving(service_url, name):
    """The engine's security suite covers each property; here: through HTTP, the service survives."""
    code, verdicts = HOSTILE[name]
    resp = post(service_url, "/v1/run", {"code": code, "tests": [{"input": "", "output": "1"}], "time_limit_s": 1,
                                         "memory_limit_mb": 256})
    assert resp.status_code == 200, resp.text
    if verdicts is not None:
        assert resp.json()["verdict"] in verdicts, resp.text
    assert httpx.get(service_url + "/healthz", timeout=10).status_code == 200
    again = post(service_url, "/v1/run", {"code": ECHO_SUM, "tests": SUM_TESTS})
    assert again.status_code == 200 and again.json()["verdict"] == "AC"
