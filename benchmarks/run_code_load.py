"""SandboxFusion-style load on ``POST /run_code``, as verl's ``sandbox_fusion`` reward sends it.

verl judges a sample by posting one ``/run_code`` request per test case (a fresh HTTP connection
each, from a thread pool, with at most ``max_concurrent`` = 64 requests in flight over the whole
reward computation), and compares ``run_result.stdout`` with the expected output itself. The body of
every request is ``{"code", "stdin", "language", "compile_timeout", "run_timeout",
"memory_limit_MB", "files": {}, "fetch_files": []}`` with ``compile_timeout = run_timeout = 10`` and
``memory_limit_MB = 1024`` (verl's defaults). For a call-based problem (``fn_name``) the code is
verl's wrapper around the sample: star-imports of 18 stdlib modules, the sample, then a driver that
reads one JSON value per stdin line as the arguments, calls the function (or the method of
``Solution()``) and prints the result. A 504 answer is retried twice, after 1 s and 2 s.

This script fires that load, closed-loop (``--concurrency`` requests in flight, each on a new
connection), the same ``--requests`` per row on any server, and prints requests/s, latency p50/p99 and
the CPU per request of the whole service process tree (the programs included) for these rows:

  trivial       ``print(input())``, 10 tests per sample: the per-request overhead;
  trivial-call  verl's call-based wrapper around ``def echo(x): return x``: the wrapper's own cost;
  codecontests  CodeContests stdin tests (``--data``/code_contests/train.jsonl) with the problems'
                reference Python solutions;
  apps-call     APPS call-based tests (``--data``/apps/train.jsonl, problems with reference
                solutions) through verl's wrapper.

The data rows cycle over the first ``--problems`` problems and their reference solutions (real
programs: some are slow, e.g. one of APPS' ``is_prime`` references takes ~1.5 s of CPU per test, so
the program's own CPU dominates those rows). Every sample is distinct (a ``# sample k`` comment), so
no result cache can answer. The verdicts are verl's (pass, wrong, runtime_error, timeout,
compile_error, sandbox_error, api_error) and are printed too: with reference solutions the only
expected misses are verl's exact comparison on multiple-answer problems and references that print
extra lines, the same on every server; timeouts or api_errors are the server's.

CPU: the service runs in a fresh cgroup-v1 ``cpuacct`` group created here (root), so every process
it starts counts, whoever reaps it; without one (cgroup v2, not root) the live process tree is read
from /proc (utime + stime + the times of reaped children), which misses programs reparented outside
the tree. ``client CPU`` is this script's own CPU per request.

    .venv/bin/python benchmarks/run_code_load.py                       # starts `python -m sandbox serve`
    .venv/bin/python benchmarks/run_code_load.py --rows trivial --requests 2000 --workers 2
    # any SandboxFusion-compatible server, started (and measured) by this script; {port} is filled in:
    .venv/bin/python benchmarks/run_code_load.py --serve-cmd 'cd /tmp/sandboxfusion && exec uvicorn sandbox.server.server:app --port {port}'
    # one already running (CPU only with --pid, from /proc):
    .venv/bin/python benchmarks/run_code_load.py --url http://127.0.0.1:8080 [--pid PID]

See docs/sandbox_service.md, "Load as verl sends it", for figures.
"""

from __future__ import annotations

import argparse
import http.client
import itertools
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator
from urllib.parse import urlsplit

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / ".." / "shared" / "data"

# verl's defaults (verl/workers/config/reward_model.py SandboxFusionConfig, and
# verl/utils/reward_score/sandbox_fusion/utils.py): one timeout for compile and run, seconds.
VERL_TIMEOUT_S = 10
VERL_MEMORY_MB = 1024
VERL_MAX_CONCURRENT = 64
VERL_RETRY_DELAYS_S = (1, 2)  # after the 1st and 2nd 504; a 3rd 504 is an api_error
VERL_API_SLACK_S = 10  # HTTP timeout = compile_timeout + run_timeout + this

# The modules verl's call-based wrapper star-imports (in this order) before the sample, then imports.
WRAPPER_MODULES = ("string re datetime collections heapq bisect copy math random statistics itertools functools "
                   "operator io sys json builtins typing").split()

_DRIVER = '''
_FN_NAME = {fn_name!r}


def _call_sample():
    _text = sys.stdin.read()
    _args = [json.loads(_line) for _line in _text.split("\\n")] if _text.strip() else []
    if _FN_NAME in globals():
        _target = globals()[_FN_NAME]
    elif "Solution" in globals():
        _target = getattr(globals()["Solution"](), _FN_NAME)
    else:
        raise NameError(f"function or method {{_FN_NAME!r}} not found")
    return _target(*_args)


if __name__ == "__main__":
    try:
        _result = _call_sample()
    except Exception:  # reported on stderr; the exit code stays 0, as in verl's wrapper
        traceback.print_exc()
    else:
        print(json.dumps(_result) if _result is None or isinstance(_result, (dict, list, tuple, bool)) else str(_result))
'''


def call_based_program(code: str, fn_name: str) -> str:
    """The program verl posts for one test of a call-based problem (its wrapper around ``code``)."""
    header = ["import traceback", *(f"from {m} import *" for m in WRAPPER_MODULES),
              *(f"import {m}" for m in WRAPPER_MODULES if m not in ("builtins", "typing"))]
    return "\n".join(header) + "\n\n" + code + "\n" + _DRIVER.format(fn_name=fn_name)


def call_stdin(args: list[Any]) -> str:
    """The stdin of a call-based test: one JSON value per line, one line per argument."""
    return "\n".join(json.dumps(a) for a in args)


def printed(value: Any) -> str:
    """What the wrapper prints for a return value (before print's newline)."""
    return json.dumps(value) if value is None or isinstance(value, (dict, list, tuple, bool)) else str(value)


def fusion_body(code: str, stdin: str | None, language: str = "python", timeout_s: int = VERL_TIMEOUT_S,
                memory_mb: int = VERL_MEMORY_MB) -> dict[str, Any]:
    """The JSON body of one ``POST /run_code`` as verl sends it."""
    return {"compile_timeout": timeout_s, "run_timeout": timeout_s, "code": code, "stdin": stdin,
            "memory_limit_MB": memory_mb, "language": language, "files": {}, "fetch_files": []}


@dataclass
class Call:
    """One request: its body and the stdouts that pass (compared as verl does: trailing newlines dropped)."""

    body: dict[str, Any]
    expected: tuple[str, ...]


def verl_verdict(response: dict[str, Any] | None, expected: tuple[str, ...]) -> str:
    """verl's reading of a /run_code answer (check_correctness' statuses)."""
    if response is None:
        return "api_error"
    status, compiled, run = response.get("status"), response.get("compile_result"), response.get("run_result")
    if status == "SandboxError":
        return "sandbox_error"
    if status == "Failed":
        if compiled and (compiled.get("status") in ("Error", "TimeLimitExceeded")
                         or (compiled.get("status") == "Finished" and compiled.get("return_code") != 0)):
            return "compile_error"
        if not run:
            return "unknown_failure"
        if run.get("status") == "TimeLimitExceeded":
            return "timeout"
        if run.get("status") == "Error" or (run.get("status") == "Finished" and run.get("return_code") != 0):
            return "runtime_error"
        return "unknown_failure"
    if status == "Success" and run and run.get("status") == "Finished":
        out = (run.get("stdout") or "").rstrip("\n")
        return "pass" if any(out == e.rstrip("\n") for e in expected) else "wrong"
    return f"unknown_status_{status}"


# -- the rows: endless streams of samples, each a list of calls (one per test) -------------------------

def trivial_samples() -> Iterator[list[Call]]:
    for k in itertools.count():
        code = f"print(input())\n# sample {k}\n"
        yield [Call(fusion_body(code, f"{k} {i}"), (f"{k} {i}",)) for i in range(10)]


def trivial_call_samples() -> Iterator[list[Call]]:
    """verl's call-based wrapper around a function that returns its argument: the wrapper's own cost."""
    for k in itertools.count():
        program = call_based_program(f"def echo(x):\n    return x\n# sample {k}\n", "echo")
        yield [Call(fusion_body(program, call_stdin([[k, i]])), (printed([k, i]),)) for i in range(10)]


def codecontests_samples(problems) -> Iterator[list[Call]]:
    for k in itertools.count():
        p = problems[k % len(problems)]
        refs = p.solutions["python"]
        code = refs[(k // len(problems)) % len(refs)] + f"\n# sample {k}\n"
        yield [Call(fusion_body(code, t.input), (t.output,)) for t in p.all_tests()]


def apps_expected(output: Any) -> tuple[str, ...]:
    """Accepted stdouts of an APPS call-based test: its value printed, or the one element of a
    one-element list (APPS' harness compares both ways; the data keep many outputs wrapped)."""
    accepted = [printed(output)]
    if isinstance(output, list) and len(output) == 1:
        accepted.append(printed(output[0]))
    return tuple(accepted)


def apps_call_samples(problems) -> Iterator[list[Call]]:
    for k in itertools.count():
        p = problems[k % len(problems)]
        refs = p.solutions["python"]
        code = refs[(k // len(problems)) % len(refs)] + f"\n# sample {k}\n"
        program = call_based_program(code, p.fn_name)
        yield [Call(fusion_body(program, call_stdin(t.input)), apps_expected(t.output)) for t in p.all_tests()]


ROW_FILES = {"trivial": None, "trivial-call": None, "codecontests": "code_contests/train.jsonl",
             "apps-call": "apps/train.jsonl"}
"""The rows and the file under --data each one reads."""
ROW_REQUESTS = {"trivial": 640, "trivial-call": 320, "codecontests": 320, "apps-call": 128}
"""Requests per row by default: tens of seconds on SandboxFusion on 2 cores."""


def row_problems(data: Path, name: str, limit: int) -> list:
    """The problems a data row uses: those with reference Python solutions (call-based ones for apps-call)."""
    from codealign.loaders import load_problems

    problems = [p for p in load_problems(data / ROW_FILES[name]) if p.solutions.get("python") and p.all_tests()
                and (p.call_based if name == "apps-call" else not p.fn_name)]
    if not problems:
        raise SystemExit(f"{data / ROW_FILES[name]} has no problem with reference Python solutions for row {name}")
    return problems[:limit]


def load_rows(data: Path, names: list[str], problems_per_row: int) -> dict[str, Iterator[list[Call]]]:
    make = {"trivial": lambda: trivial_samples(), "trivial-call": lambda: trivial_call_samples(),
            "codecontests": lambda: codecontests_samples(row_problems(data, "codecontests", problems_per_row)),
            "apps-call": lambda: apps_call_samples(row_problems(data, "apps-call", problems_per_row))}
    return {name: make[name]() for name in names}


# -- CPU of the service's process tree ------------------------------------------------------------------

CPUACCT = Path("/sys/fs/cgroup/cpuacct")


class CpuMeter:
    """CPU seconds of a service and everything it starts: a fresh cpuacct group, else /proc."""

    def __init__(self, pid: int | None = None) -> None:
        """``pid``: a server already running (read from /proc); None: one to start in a new group."""
        self.group: Path | None = None
        self.pid = pid
        if pid is None and (CPUACCT / "cpuacct.usage").exists():
            group = CPUACCT / f"run_code_load-{os.getpid()}"
            try:
                group.mkdir()
                self.group = group
            except OSError:
                pass
        self.method = "cgroup cpuacct" if self.group else "/proc tree"

    def enter(self) -> None:
        """Called in the service's process before exec (preexec_fn): join the group."""
        if self.group is not None:
            (self.group / "cgroup.procs").write_text(str(os.getpid()))

    def seconds(self) -> float | None:
        if self.group is not None:
            return int((self.group / "cpuacct.usage").read_text()) / 1e9
        return None if self.pid is None else proc_tree_seconds(self.pid)

    def close(self) -> None:
        if self.group is not None:
            for _ in range(100):  # the group can be removed once its last process is gone
                try:
                    self.group.rmdir()
                    return
                except OSError:
                    time.sleep(0.1)


def proc_tree_seconds(root: int) -> float:
    """utime + stime + reaped children's times of ``root`` and its live descendants, seconds."""
    parent, ticks = {}, {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parent[int(entry.name)] = int(fields[1])
        ticks[int(entry.name)] = sum(int(x) for x in fields[11:15])  # utime stime cutime cstime
    total, stack = 0, [root]
    while stack:
        pid = stack.pop()
        total += ticks.get(pid, 0)
        stack.extend(c for c, p in parent.items() if p == pid)
    return total / os.sysconf("SC_CLK_TCK")


# -- the service ----------------------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_service(cmd: list[str] | str, url: str, meter: CpuMeter, log: Path) -> subprocess.Popen:
    """Start a server in the meter's group; return once ``GET /v1/ping`` answers (and ours is healthy)."""
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, shell=isinstance(cmd, str), cwd=REPO, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True, preexec_fn=meter.enter)
    meter.pid = proc.pid
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the server exited with {proc.returncode}; its log:\n{log.read_text()[-3000:]}")
        if get_status(url, "/v1/ping") == 200 and get_status(url, "/healthz") in (200, 404):
            return proc
        time.sleep(0.2)
    stop_service(proc)
    raise SystemExit(f"the server did not answer on {url} within 120 s; its log:\n{log.read_text()[-3000:]}")


def stop_service(proc: subprocess.Popen) -> None:
    for sig, wait_s in ((signal.SIGTERM, 15), (signal.SIGKILL, 15)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout=wait_s)
            break
        except subprocess.TimeoutExpired:
            continue


def get_status(url: str, path: str) -> int | None:
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port or 80, timeout=2)
    try:
        conn.request("GET", path)
        return conn.getresponse().status
    except OSError:
        return None
    finally:
        conn.close()


# -- the load -------------------------------------------------------------------------------------------

def post_like_verl(url: str, body: bytes, timeout_s: float) -> tuple[dict[str, Any] | None, int]:
    """POST /run_code on a new connection, retrying 504 after 1 s and 2 s. (answer or None, retries)."""
    parts = urlsplit(url)
    headers = {"Content-Type": "application/json", "Accept": "application/json"}
    for attempt in range(len(VERL_RETRY_DELAYS_S) + 1):
        conn = http.client.HTTPConnection(parts.hostname, parts.port or 80, timeout=timeout_s)
        try:
            conn.request("POST", "/run_code", body, headers)
            resp = conn.getresponse()
            data = resp.read()
        except OSError:
            return None, attempt
        finally:
            conn.close()
        if resp.status == 504:
            if attempt < len(VERL_RETRY_DELAYS_S):
                time.sleep(VERL_RETRY_DELAYS_S[attempt])
            continue
        if resp.status != 200:
            return None, attempt
        try:
            return json.loads(data), attempt
        except ValueError:
            return None, attempt
    return None, len(VERL_RETRY_DELAYS_S)


@dataclass
class RowResult:
    requests: int = 0
    seconds: float = 0.0
    service_cpu_s: float | None = None
    client_cpu_s: float = 0.0
    retries: int = 0
    latencies: list[float] = field(default_factory=list)
    verdicts: dict[str, int] = field(default_factory=dict)


def fire(url: str, samples: Iterator[list[Call]], requests: int, concurrency: int, meter: CpuMeter | None) -> RowResult:
    """Send the first ``requests`` calls of ``samples``, ``concurrency`` in flight at a time."""
    calls = itertools.islice((c for sample in samples for c in sample), requests)
    lock = threading.Lock()
    result = RowResult()

    def loop() -> None:
        while True:
            with lock:
                call = next(calls, None)
            if call is None:
                return
            body = json.dumps(call.body).encode()
            timeout = call.body["compile_timeout"] + call.body["run_timeout"] + VERL_API_SLACK_S
            start = time.perf_counter()
            answer, retries = post_like_verl(url, body, timeout)
            latency = time.perf_counter() - start
            verdict = verl_verdict(answer, call.expected)
            with lock:
                result.requests += 1
                result.retries += retries
                result.latencies.append(latency)
                result.verdicts[verdict] = result.verdicts.get(verdict, 0) + 1

    cpu0 = meter.seconds() if meter else None
    client0, start = time.process_time(), time.perf_counter()
    threads = [threading.Thread(target=loop) for _ in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    result.seconds = time.perf_counter() - start
    result.client_cpu_s = time.process_time() - client0
    cpu1 = meter.seconds() if meter else None
    if cpu0 is not None and cpu1 is not None:
        result.service_cpu_s = cpu1 - cpu0
    return result


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def report(name: str, r: RowResult) -> str:
    n = max(r.requests, 1)
    cpu = "n/a" if r.service_cpu_s is None else f"{1000 * r.service_cpu_s / n:6.1f}"
    passed = r.verdicts.get("pass", 0)
    others = ", ".join(f"{k} {v}" for k, v in sorted(r.verdicts.items()) if k != "pass")
    return (f"{name:<13} {r.requests:6d} {r.seconds:6.1f} {r.requests / r.seconds:8.1f} "
            f"{1000 * quantile(r.latencies, 0.5):7.0f} {1000 * quantile(r.latencies, 0.99):7.0f} {cpu:>8} "
            f"{1000 * r.client_cpu_s / n:7.1f}   pass {passed}/{r.requests}" + (f" ({others})" if others else "")
            + (f", 504 retries {r.retries}" if r.retries else ""))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", help="an already running SandboxFusion-compatible server (default: start ours)")
    ap.add_argument("--pid", type=int, help="with --url: the server's pid, to read its CPU from /proc")
    ap.add_argument("--serve-cmd", help="shell command starting another server on 127.0.0.1:{port}, measured here")
    ap.add_argument("--workers", type=int, default=2, help="workers of our service (`serve --workers`)")
    ap.add_argument("--data", type=Path, default=DATA, help="directory with code_contests/ and apps/ (default: %(default)s)")
    ap.add_argument("--rows", default=",".join(ROW_FILES), help="comma-separated rows to run (default: %(default)s)")
    ap.add_argument("--requests", type=int, help="requests per row (default: "
                    + ", ".join(f"{k} {v}" for k, v in ROW_REQUESTS.items()) + ")")
    ap.add_argument("--concurrency", type=int, default=VERL_MAX_CONCURRENT,
                    help="requests in flight (verl's sandbox_fusion.max_concurrent, default %(default)s)")
    ap.add_argument("--problems", type=int, default=20, help="problems per data row")
    ap.add_argument("--warmup", type=int, default=64, help="untimed trivial requests before the rows")
    args = ap.parse_args()
    names = [n.strip() for n in args.rows.split(",") if n.strip()]
    for name in names:
        if name not in ROW_FILES:
            ap.error(f"unknown row {name!r} (rows: {', '.join(ROW_FILES)})")
        if ROW_FILES[name] and not (args.data / ROW_FILES[name]).is_file():
            ap.error(f"--data {args.data}: no {ROW_FILES[name]} there (row {name}; pass the directory holding it)")
    rows = load_rows(args.data, names, args.problems)

    meter: CpuMeter | None = None
    proc = None
    if args.url:
        url = args.url.rstrip("/")
        meter = CpuMeter(args.pid) if args.pid else None
        what = f"{url} (already running)"
    else:
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        meter = CpuMeter()
        if args.serve_cmd:
            cmd: list[str] | str = args.serve_cmd.format(port=port)
            what = f"`{cmd}`"
        else:
            cmd = [sys.executable, "-m", "sandbox", "serve", "--host", "127.0.0.1", "--port", str(port),
                   "--workers", str(args.workers), "--log-level", "warning"]
            what = f"python -m sandbox serve --workers {args.workers}"
    logs = tempfile.TemporaryDirectory(prefix="run_code_load-")  # the server's log, shown if it fails to start
    try:
        if not args.url:
            proc = start_service(cmd, url, meter, Path(logs.name) / "server.log")
        load0 = os.getloadavg()
        fire(url, trivial_samples(), args.warmup, args.concurrency, None)
        print(f"server: {what}; {args.concurrency} requests in flight; "
              f"CPU by {meter.method if meter else 'nothing (pass --pid)'}; {os.cpu_count()} cores")
        print(f"{'row':<13} {'reqs':>6} {'s':>6} {'req/s':>8} {'p50 ms':>7} {'p99 ms':>7} {'CPU ms':>8} "
              f"{'client':>7}   verl's verdicts")
        for name, samples in rows.items():
            n = args.requests or ROW_REQUESTS[name]
            print(report(name, fire(url, samples, n, args.concurrency, meter)), flush=True)
        load1 = os.getloadavg()
        print(f"load average (1 min) {load0[0]:.2f} at the start, {load1[0]:.2f} at the end")
    finally:
        if proc is not None:
            stop_service(proc)
        if meter is not None:
            meter.close()
        logs.cleanup()


if __name__ == "__main__":
    main()
