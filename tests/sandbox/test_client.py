"""sandbox.client against real servers on 127.0.0.1: batching, retries, spreading, errors, local fallback."""

from __future__ import annotations

import asyncio
import re
import threading
import time

import httpx
import pytest

from sandbox.client import (
    AsyncSandboxClient,
    SandboxClient,
    SandboxRequestError,
    SandboxUnavailable,
    make_client,
    parse_urls,
)
from sandbox.spec import RunRequest, RunResult, TestCase



def free_port() -> int:
    """A port nothing listens on (bound, read, released)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]

ECHO_SUM = "a, b = map(int, input().split())\nprint(a + b)\n"
TESTS = [TestCase(input="1 2\n", output="3"), TestCase(input="4 4\n", output="8")]
OTHER_TESTS = [TestCase(input="0 0\n", output="0")]


def requests_mix() -> tuple[list[RunRequest], list[str]]:
    """Programs over two problems plus one standalone; the verdict each must get."""
    reqs, want = [], []
    for k in range(6):  # six programs on the same tests: the batch path
        good = k % 2 == 0
        reqs.append(RunRequest(code=ECHO_SUM if good else f"print({k})", tests=TESTS))
        want.append("AC" if good else "WA")
    reqs.append(RunRequest(code=ECHO_SUM, tests=OTHER_TESTS))  # alone on its tests: /v1/run
    want.append("AC")
    reqs.append(RunRequest(code="raise ValueError", tests=[TestCase(input="5 5\n", output="10")]))
    want.append("RE")
    return reqs, want


def metric(url: str, name: str, **labels: str) -> float:
    text = httpx.get(url + "/metrics", timeout=10).text
    label_text = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    m = re.search(re.escape(name + ("{" + label_text + "}" if labels else "")) + r" ([0-9.e+-]+)$", text, re.M)
    return float(m.group(1)) if m else 0.0


def test_parse_urls_accepts_commas_lists_and_bare_host_ports():
    assert parse_urls("a:1, http://b:2/ ,") == ["http://a:1", "http://b:2"]
    assert parse_urls(["https://x"]) == ["https://x"]
    with pytest.raises(ValueError, match="no sandbox URL"):
        parse_urls(" , ")


def test_sync_client_run_many_keeps_order_and_batches_shared_tests(server_url):
    reqs, want = requests_mix()
    batches_before = metric(server_url, "sandbox_http_requests_total", route="/v1/batch", status="200")
    seen: dict[int, str] = {}
    lock = threading.Lock()

    def on_result(i: int, result: RunResult) -> None:
        with lock:
            seen[i] = result.verdict.value

    with make_client(server_url) as client:
        assert isinstance(client, SandboxClient)
        results = client.run_many(reqs, on_result=on_result)
        single = client.run(reqs[0])
    assert [r.verdict.value for r in results] == want
    assert seen == dict(enumerate(want))
    assert single.verdict.value == "AC" and single.passed == 2
    # The six programs sharing TESTS went as one batch (batch_size 32), not six /v1/run calls.
    assert metric(server_url, "sandbox_http_requests_total", route="/v1/batch", status="200") == batches_before + 1


def test_async_client_run_many_and_small_batches(server_url):
    reqs, want = requests_mix()

    async def go():
        async with AsyncSandboxClient([server_url], batch_size=4, max_concurrency=2) as client:
            many = await client.run_many(reqs)
            one = await client.run(reqs[1])
            health = await client.healthy()
            return many, one, health

    many, one, health = asyncio.run(go())
    assert [r.verdict.value for r in many] == want
    assert one.verdict.value == "WA"
    assert health == {server_url: True}


def test_client_retries_past_a_dead_endpoint(server_url):
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    reqs, want = requests_mix()
    with SandboxClient([dead, server_url], backoff_s=0.05) as client:
        assert [r.verdict.value for r in client.run_many(reqs)] == want
        assert [client.run(r).verdict.value for r in reqs[:3]] == want[:3]
        assert client.healthy() == {dead: False, server_url: True}


def test_client_gives_up_with_a_clear_error_when_nothing_answers():
    dead = f"http://127.0.0.1:{free_port()}"
    start = time.monotonic()
    with SandboxClient(dead, max_retries=2, backoff_s=0.05) as client:
        with pytest.raises(SandboxUnavailable, match=r"after 3 attempts.*ConnectError"):
            client.run(RunRequest(code="print(1)", tests=TESTS))
    assert time.monotonic() - start < 10


def test_async_client_gives_up_too():
    dead = f"http://127.0.0.1:{free_port()}"

    async def go():
        async with AsyncSandboxClient(dead, max_retries=1, backoff_s=0.05) as client:
            await client.run_many([RunRequest(code="print(1)", tests=TESTS)] * 3)

    with pytest.raises(SandboxUnavailable):
        asyncio.run(go())


def test_client_retries_504_until_the_overloaded_server_has_room(spawn_server):
    url = spawn_server("--max-queue", "0", "--queue-timeout", "0", workers=1)
    slow = [RunRequest(code=f"import time\ntime.sleep(0.6)\nprint({k})", tests=[TestCase(input="", output=str(k))])
            for k in range(4)]  # distinct tests: four /v1/run calls at once
    # max_retries=0: answers "full" (504) are retried for overload_patience_s, not counted as failures.
    with SandboxClient(url, max_concurrency=4, backoff_s=0.2, max_backoff_s=0.5, max_retries=0) as client:
        results = client.run_many(slow)
    assert [r.verdict.value for r in results] == ["AC"] * 4
    assert metric(url, "sandbox_rejected_total", route="/v1/run") > 0  # 504s happened and were retried


def test_client_stops_waiting_for_a_full_server_after_its_patience(spawn_server):
    url = spawn_server("--max-queue", "0", "--queue-timeout", "0", workers=1)
    hog = RunRequest(code="import time\ntime.sleep(4)", tests=[TestCase(input="", output="")], time_limit_s=8)
    busy = threading.Thread(target=lambda: httpx.post(url + "/v1/run", json=hog.model_dump(), timeout=60))
    busy.start()
    try:
        deadline = time.monotonic() + 30
        while metric(url, "sandbox_running") < 1:  # until the hog holds the only worker
            assert time.monotonic() < deadline, "the hog never started"
            time.sleep(0.05)
        with SandboxClient(url, overload_patience_s=0.6, backoff_s=0.1) as client:
            with pytest.raises(SandboxUnavailable, match="overloaded after 0.6 s"):
                client.run(RunRequest(code="print(1)", tests=[TestCase(input="", output="1")]))
    finally:
        busy.join()


def test_client_spreads_requests_over_replicas(spawn_server):
    a = spawn_server(workers=1)
    b = spawn_server(workers=1)
    reqs = [RunRequest(code=f"print({k})", tests=[TestCase(input="", output=str(k))]) for k in range(8)]
    with make_client(f"{a},{b}") as client:
        assert [r.verdict.value for r in client.run_many(reqs)] == ["AC"] * 8
    runs_a = metric(a, "sandbox_executions_total", language="python")
    runs_b = metric(b, "sandbox_executions_total", language="python")
    assert runs_a + runs_b == 8 and runs_a >= 2 and runs_b >= 2


def test_client_registers_test_sets_on_each_replica_that_lacks_them(spawn_server):
    a = spawn_server(workers=1)
    b = spawn_server(workers=1)
    reqs = [RunRequest(code=ECHO_SUM if k % 2 else "print(0)", tests=TESTS) for k in range(8)]
    with SandboxClient([a, b], batch_size=2) as client:  # four batches, two per replica
        results = client.run_many(reqs)
    assert [r.verdict.value for r in results] == ["WA", "AC"] * 4
    for url in (a, b):  # each replica was told the tests once, after answering 404 (to each batch in flight)
        assert metric(url, "sandbox_http_requests_total", route="/v1/testsets", status="200") == 1
        assert metric(url, "sandbox_http_requests_total", route="/v1/batch", status="404") in (1, 2)
        assert metric(url, "sandbox_http_requests_total", route="/v1/batch", status="200") == 2


def test_client_raises_request_errors_without_retrying(server_url):
    with SandboxClient(server_url) as client:
        with pytest.raises(SandboxRequestError) as info:
            client.run(RunRequest(language="python", code="print(1)", tests=TESTS, checker="no-such-checker"))
    assert 400 <= info.value.status_code < 500 and "checker" in str(info.value)


def test_make_client_without_url_judges_in_process():
    from sandbox.local import LocalExecutor

    reqs, want = requests_mix()
    with make_client(None, workers=1) as client:
        assert isinstance(client, LocalExecutor)
        assert [r.verdict.value for r in client.run_many(reqs)] == want
        assert client.run(reqs[1]).verdict.value == "WA"


def test_timeout_applies_to_each_request_and_raises(server_url):
    slow = RunRequest(code="import time\ntime.sleep(3)", tests=[TestCase(input="", output="")], time_limit_s=5)
    fast = [RunRequest(code=f"print({k})", tests=[TestCase(input="", output=str(k))]) for k in range(3)]
    with SandboxClient(server_url) as client:
        assert [r.verdict.value for r in client.run_many(fast, timeout_s=30)] == ["AC"] * 3
        start = time.monotonic()
        with pytest.raises(TimeoutError):
            client.run(slow, timeout_s=0.5)
        with pytest.raises(TimeoutError):
            client.run_many([*fast, slow], timeout_s=0.8)
        assert time.monotonic() - start < 2.5
        assert client.run(fast[0]).verdict.value == "AC"  # still usable
