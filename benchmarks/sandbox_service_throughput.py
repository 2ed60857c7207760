"""Throughput of the sandbox over HTTP: what the batch path buys, and what SandboxFusion-style calls cost.

Starts ``python -m sandbox serve`` on 127.0.0.1 (``--workers``, default one per core) and prints tests/s for:

  1. in-process LocalExecutor, many distinct programs x T tests (the ceiling: no HTTP);
  2. HTTP, the same programs through SandboxClient.run_many (test-set batch path);
  3. HTTP, the same programs, one POST /v1/run each (tests resent with every program);
  4. HTTP, SandboxFusion style: one POST /run_code per (program, test), as verl's reward does,
     with stdout compared by the caller.

    .venv/bin/python benchmarks/sandbox_service_throughput.py [--programs 48] [--tests 50] [--workers 0] [--pad-kb 0]

Programs are distinct (a comment differs), so the engine's result cache never answers.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sandbox.client import AsyncSandboxClient, SandboxClient  # noqa: E402
from sandbox.local import LocalExecutor  # noqa: E402
from sandbox.spec import RunRequest, TestCase  # noqa: E402

PROGRAM = "import sys\na, b = map(int, sys.stdin.read().split())\nprint(a + b)  # variant {k}\n"


def make_requests(programs: int, tests: int, pad_kb: int = 0) -> list[RunRequest]:
    pad = " " * (pad_kb * 1024)  # whitespace the program ignores: big tests, as CodeContests has
    cases = [TestCase(input=f"{i} {2 * i}\n{pad}", output=str(3 * i)) for i in range(tests)]
    return [RunRequest(code=PROGRAM.format(k=k), tests=cases) for k in range(programs)]


def start_server(workers: int) -> tuple[subprocess.Popen, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, "-m", "sandbox", "serve", "--port", str(port), "--workers", str(workers),
           "--log-level", "warning", "--max-queue", "100000", "--queue-timeout", "600"]
    proc = subprocess.Popen(cmd, cwd=Path(__file__).resolve().parents[1])
    url = f"http://127.0.0.1:{port}"
    for _ in range(600):
        try:
            if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                return proc, url
        except httpx.TransportError:
            time.sleep(0.1)
    proc.kill()
    raise SystemExit("server did not start")


def timed(label: str, n_tests: int, fn) -> float:
    start = time.perf_counter()
    verdicts = fn()
    seconds = time.perf_counter() - start
    bad = sum(v != "AC" for v in verdicts)
    rate = n_tests / seconds
    print(f"{label:<58} {seconds:7.2f} s  {rate:8.0f} tests/s" + (f"  ({bad} not AC!)" if bad else ""))
    return rate


async def fusion_calls(url: str, reqs: list[RunRequest], concurrency: int) -> list[str]:
    sem = asyncio.Semaphore(concurrency)
    async with httpx.AsyncClient(timeout=600) as http:

        async def one(code: str, test: TestCase) -> str:
            body = {"code": code, "language": "python", "stdin": test.input, "run_timeout": 4,
                    "compile_timeout": 10, "files": {}, "fetch_files": []}
            async with sem:
                resp = await http.post(url + "/run_code", json=body)
            data = resp.json()
            ok = data.get("status") == "Success" and data["run_result"]["stdout"].strip() == str(test.output).strip()
            return "AC" if ok else "WA"

        jobs = [one(r.code, t) for r in reqs for t in r.tests]
        return list(await asyncio.gather(*jobs))


async def per_program_calls(url: str, reqs: list[RunRequest]) -> list[str]:
    async with AsyncSandboxClient(url) as client:  # run() never batches
        results = await asyncio.gather(*(client.run(r) for r in reqs))
    return [r.verdict.value for r in results]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--programs", type=int, default=48)
    parser.add_argument("--tests", type=int, default=50)
    parser.add_argument("--workers", type=int, default=0, help="0 = one per core")
    parser.add_argument("--pad-kb", type=int, default=0, help="KiB of whitespace added to each test's input")
    args = parser.parse_args()
    workers = args.workers or len(os.sched_getaffinity(0))
    n = args.programs * args.tests
    print(f"{args.programs} distinct Python programs x {args.tests} stdin tests (+{args.pad_kb} KiB each) = {n} tests; "
          f"{workers} workers")

    proc, url = start_server(workers)
    try:
        salt = [0]

        def fresh() -> list[RunRequest]:  # new variants each time: no cache hits across measurements
            salt[0] += 1
            reqs = make_requests(args.programs, args.tests, args.pad_kb)
            return [r.model_copy(update={"code": r.code + f"# run {salt[0]}\n"}) for r in reqs]

        with LocalExecutor(workers) as local:
            local.run_many(fresh()[:2])  # warm
            timed("1. in-process LocalExecutor.run_many", n, lambda: [r.verdict.value for r in local.run_many(fresh())])
        with SandboxClient(url) as client:
            timed("2. HTTP SandboxClient.run_many (test-set batch path)", n,
                  lambda: [r.verdict.value for r in client.run_many(fresh())])
        timed("3. HTTP one POST /v1/run per program", n, lambda: asyncio.run(per_program_calls(url, fresh())))
        timed("4. HTTP one POST /run_code per test (SandboxFusion style)", n,
              lambda: asyncio.run(fusion_calls(url, fresh(), concurrency=4 * workers)))
    finally:
        proc.terminate()
        proc.wait()


if __name__ == "__main__":
    main()
