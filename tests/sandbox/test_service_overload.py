"""Admission control: a full service answers 504 with Retry-After at once, never queues into false TLEs."""

from __future__ import annotations

import asyncio
import re

import httpx

SLOW = {"code": "import time\ntime.sleep(1.5)\nprint(1)", "tests": [{"input": "", "output": "1"}], "time_limit_s": 4}


async def _flood(url: str, path: str, body: dict, n: int) -> list[httpx.Response]:
    async with httpx.AsyncClient(timeout=60) as client:
        return await asyncio.gather(*(client.post(url + path, json=body) for _ in range(n)))


def _rejected(url: str) -> float:
    text = httpx.get(url + "/metrics", timeout=10).text
    return sum(float(v) for v in re.findall(r"^sandbox_rejected_total\{[^}]*\} ([0-9.]+)$", text, re.M))


def test_full_service_answers_504_and_judges_what_it_admitted(spawn_server):
    url = spawn_server("--max-queue", "0", "--queue-timeout", "0", workers=1)
    answers = asyncio.run(_flood(url, "/v1/run", SLOW, 5))
    codes = sorted(r.status_code for r in answers)
    assert 200 in codes and 504 in codes, codes
    for r in answers:
        if r.status_code == 504:
            assert r.headers["retry-after"] == "1" and "overloaded" in r.json()["detail"]
        else:  # the admitted program ran alone on its worker: its sleep is no TLE
            assert r.json()["verdict"] == "AC", r.text
    assert _rejected(url) == codes.count(504)
    # Once the flood is over the service judges again.
    assert httpx.post(url + "/v1/run", json=SLOW, timeout=60).json()["verdict"] == "AC"


def test_run_code_is_504_when_full_so_sandbox_fusion_clients_retry(spawn_server):
    url = spawn_server("--max-queue", "0", "--queue-timeout", "0", workers=1)
    body = {"code": SLOW["code"], "language": "python", "run_timeout": 4}
    answers = asyncio.run(_flood(url, "/run_code", body, 4))
    codes = [r.status_code for r in answers]
    assert 504 in codes and 200 in codes, codes
    assert all(r.json()["status"] == "Success" for r in answers if r.status_code == 200)


def test_queued_request_gives_up_after_the_queue_timeout(spawn_server):
    url = spawn_server("--max-queue", "8", "--queue-timeout", "0.3", workers=1)
    answers = asyncio.run(_flood(url, "/v1/run", SLOW, 3))
    codes = sorted(r.status_code for r in answers)
    # One runs (1.5 s); the others wait 0.3 s in the queue and are turned away.
    assert codes == [200, 504, 504], codes
    assert any("within 0.3 s" in r.json()["detail"] for r in answers if r.status_code == 504)


def test_batch_is_admitted_whole_and_waits_for_workers(spawn_server):
    url = spawn_server("--max-queue", "0", "--queue-timeout", "0", workers=1)
    key = httpx.post(url + "/v1/testsets", json={"tests": SLOW["tests"]}, timeout=10).json()["id"]
    programs = [{"code": "print(1)"}, {"code": "print(2)"}, {"code": "print(1)"}]
    resp = httpx.post(url + "/v1/batch", json={"testset": key, "programs": programs}, timeout=60)
    assert resp.status_code == 200, resp.text
    assert [r["verdict"] for r in resp.json()["results"]] == ["AC", "WA", "AC"]


def test_oversized_body_is_413_and_the_service_keeps_serving(spawn_server):
    url = spawn_server("--max-body-mb", "1", workers=1)
    big = {"code": "print(1)", "tests": [{"input": "x" * (2 << 20), "output": "1"}]}
    resp = httpx.post(url + "/v1/run", json=big, timeout=60)
    assert resp.status_code == 413 and "exceeds the limit" in resp.json()["detail"]
    ok = httpx.post(url + "/v1/run", json={"code": "print(1)", "tests": [{"input": "", "output": "1"}]}, timeout=60)
    assert ok.json()["verdict"] == "AC"


def test_run_code_waits_as_long_as_its_client_does(spawn_server):
    """verl waits compile_timeout + run_timeout + 10 s for a /run_code answer: with the default queue
    timeout a request may wait compile_timeout + 8 s for a worker (a fixed 8 s turned correct programs
    into 504s that exhausted verl's retries), and an explicit --queue-timeout still caps it."""
    url = spawn_server(workers=1)
    body = {"code": SLOW["code"], "language": "python", "run_timeout": 4, "compile_timeout": 10}
    answers = asyncio.run(_flood(url, "/run_code", body, 7))  # the last waits ~9 s behind six 1.5 s runs
    assert [r.status_code for r in answers] == [200] * 7, [(r.status_code, r.text[:80]) for r in answers]
    assert all(r.json()["status"] == "Success" for r in answers)
    capped = spawn_server("--queue-timeout", "0.3", workers=1)
    codes = sorted(r.status_code for r in asyncio.run(_flood(capped, "/run_code", body, 3)))
    assert codes == [200, 504, 504], codes
