"""``LocalExecutor``: the in-process judge client (same interface as the HTTP clients).

It owns one sandbox worker process per core (``sandbox/worker.py``) and a FIFO of test jobs: each
test of each request is one job, so a single request with 400 tests keeps every worker busy, and many
concurrent requests interleave fairly. Programs are compiled once (Python: to a code object here;
C++/Java: inside the sandbox, into a content-addressed binary cache), results are compared here,
outside the sandbox, with ``sandbox.checker``, and whole results are memoized by content
(``RunResult.cached``).

    with LocalExecutor(workers=2) as ex:
        res = ex.run(RunRequest(code="print(int(input())*2)", tests=[TestCase(input="2", output="4")]))
"""

from __future__ import annotations

import json
import logging
import math
import os
import queue
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Sequence

from pydantic import ValidationError

from sandbox import languages, protocol, worker
from sandbox.cache import ResultCache, request_key
from sandbox.checker import CHECKER_VERSION, CHECKERS, check_stdout, check_value
from sandbox.errors import BadRequest, SandboxFailure
from sandbox.languages import CompileError, Program
from sandbox.spec import RunRequest, RunResult, TestCase, TestResult, Verdict

log = logging.getLogger("sandbox")

ENGINE_VERSION = "1"  # bump when verdict semantics change (it keys the result cache)
DEFAULT_BIN_CACHE = os.path.join(tempfile.gettempdir(), f"codealign-sandbox-{os.geteuid()}", "bin")
NPROC_LIMIT = 64  # processes + threads per test (RLIMIT_NPROC of the worker's own uid)
NOFILE_LIMIT = 128  # open files per test
FSIZE_LIMIT_MB = 64  # largest file a program may write in its temp dir
STDERR_CAP = 256 * 1024  # bytes of stderr kept per test; the rest is drained and dropped
VALUE_CAP = 64 * 1024  # chars of JSON: larger call-based return values are not carried back
WALL_FACTOR, WALL_EXTRA_S = 3.0, 1.0  # wall-clock backstop = time_limit * 3 + 1 s (TLE is CPU time;
# the backstop catches sleeping or blocked programs, with room for a loaded machine)


class _Task:
    __slots__ = ("make", "code_id", "code_blob", "skip", "on_done", "done", "response")

    def __init__(self, make: Callable[[], tuple[dict, list[bytes]]], *, code_id: str = "", code_blob: bytes = b"",
                 skip: Callable[[], bool] | None = None, on_done: Callable[["_Task"], None] | None = None):
        # ``make`` builds the job frame when a worker takes it, so queued tests hold no encoded copies
        self.make, self.code_id, self.code_blob = make, code_id, code_blob
        self.skip, self.on_done = skip, on_done
        self.done = threading.Event()
        self.response: tuple[dict, list[bytes]] | None = None

    def finish(self, response: tuple[dict, list[bytes]] | None) -> None:
        self.response = response
        try:
            if self.on_done is not None:
                self.on_done(self)
        except Exception:
            log.exception("sandbox job callback failed")
        finally:
            self.done.set()


class _Slot:
    """One worker process and the thread that feeds it jobs from the shared queue."""

    def __init__(self, ex: "LocalExecutor", idx: int) -> None:
        self.ex, self.idx = ex, idx
        self.proc: subprocess.Popen | None = None
        self.known: set[str] = set()
        self.hello: dict = {}
        self.thread = threading.Thread(target=self._loop, name=f"sandbox-slot-{idx}", daemon=True)

    def _start(self) -> None:
        pkg_parent = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8", "PYTHONPATH": pkg_parent,
               "PYTHONDONTWRITEBYTECODE": "1"}
        cmd = [sys.executable, "-m", "sandbox.worker", "--bin-cache", self.ex.bin_cache,
               "--isolate", self.ex.isolate, "--tmp-mb", str(self.ex.tmp_mb)]
        if not self.ex.memory_cgroup:
            cmd.append("--no-memory-cgroup")
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, cwd="/",
                                     close_fds=True)
        self.known = set()
        self.hello, _ = protocol.read_frame(self.proc.stdout)
        self.ex._note_isolation(self.hello)

    def _stop(self) -> None:
        if self.proc is not None:
            try:
                self.proc.stdin.close()
                self.proc.wait(timeout=5)
            except Exception:
                self.proc.kill()
                self.proc.wait()
            _remove_worker_leftovers(self.proc.pid)
            self.proc = None

    def _call(self, task: _Task) -> tuple[dict, list[bytes]]:
        last: Exception | None = None
        for _ in range(2):  # one retry on a fresh worker if the worker itself broke
            try:
                if self.proc is not None and self.proc.poll() is not None:  # died while idle
                    _remove_worker_leftovers(self.proc.pid)
                    self.proc = None
                if self.proc is None:
                    self._start()
                send_code = bool(task.code_id) and task.code_id not in self.known
                job_header, job_blobs = task.make()
                for _ in range(2):
                    header, blobs = job_header, list(job_blobs)
                    if send_code:
                        header = {**header, "blob_code": len(blobs)}
                        blobs.append(task.code_blob)
                    self.proc.stdin.write(protocol.encode(header, blobs))
                    self.proc.stdin.flush()
                    resp, rblobs = protocol.read_frame(self.proc.stdout)
                    if resp.get("status") != "need_code":
                        break
                    send_code = True  # the worker evicted it
                if task.code_id:
                    self.known.add(task.code_id)
                return resp, rblobs
            except (EOFError, OSError, ValueError) as e:
                last = e
                if self.proc is not None:
                    self.proc.kill()
                    self.proc.wait()
                    _remove_worker_leftovers(self.proc.pid)
                    self.proc = None
        return {"status": "error", "error": f"sandbox worker failed twice: {last!r}"}, []

    def _loop(self) -> None:
        try:
            self._start()
        except Exception as e:  # retried on the first job
            log.error("sandbox worker %d failed to start: %r", self.idx, e)
        while True:
            task = self.ex._queue.get()
            if task is None:
                break
            if task.skip is not None and task.skip():
                task.finish(None)
                continue
            with self.ex._lock:
                self.ex._busy += 1
            try:
                resp = self._call(task)
            except Exception as e:  # never let one job take the slot thread down
                log.exception("sandbox slot %d failed", self.idx)
                resp = ({"status": "error", "error": f"{type(e).__name__}: {e}"}, [])
            finally:
                with self.ex._lock:
                    self.ex._busy -= 1
            task.finish(resp)
        self._stop()


def _remove_worker_leftovers(pid: int) -> None:
    """What a killed worker could not remove itself (empty directories named after its pid)."""
    for path in worker.leftover_dirs(pid):
        try:
            os.rmdir(path)
        except OSError:
            pass


def _sweep_dead_workers() -> None:
    """Leftovers of workers that died with their executor (e.g. a killed test run)."""
    parent, prefix = os.path.split(worker.ROOT_PREFIX)
    try:
        names = os.listdir(parent)
    except OSError:
        return
    for name in names:
        pid = name[len(prefix):]
        if name.startswith(prefix) and pid.isdigit() and not os.path.exists(f"/proc/{pid}"):
            _remove_worker_leftovers(int(pid))


class _RunState:
    """Per-request bookkeeping shared by the request's test jobs."""

    def __init__(self, n: int, stop_on_first_failure: bool) -> None:
        self.results: list[TestResult | None] = [None] * n
        self.first_fail = math.inf
        self.stop = stop_on_first_failure
        self.abandoned = False
        self.error: str | None = None

    def skip(self, i: int) -> bool:
        return self.abandoned or (self.stop and self.first_fail < i)


class LocalExecutor:
    """In-process sandbox executor: ``run``, ``run_many``, ``stats``, ``close``; thread-safe.

    Args:
        workers: worker processes (default: one per CPU core).
        cache_size: results kept in the content-addressed result cache (0 disables it).
        bin_cache: directory of compiled C++/Java programs, shared by executors on this host.
        isolate: "auto" (full isolation when root and namespaces work, else degraded and logged),
            "on" (refuse to run without it) or "off".
        tmp_mb: size of each worker's writable tmpfs (MiB), shared by its sequential tests.
        memory_cgroup: cap each test's whole process tree with a cgroup-v1 memory group (when
            available; per-process RLIMIT_AS applies regardless).
    """

    def __init__(self, workers: int | None = None, *, cache_size: int = 4096, bin_cache: str | None = None,
                 isolate: str = "auto", tmp_mb: int = 256, memory_cgroup: bool = True) -> None:
        if isolate not in ("auto", "on", "off"):
            raise ValueError("isolate must be 'auto', 'on' or 'off'")
        self.workers = max(1, workers or len(os.sched_getaffinity(0)) or 1)  # the cores we may use
        self.isolate, self.tmp_mb, self.memory_cgroup = isolate, tmp_mb, memory_cgroup
        self.bin_cache = bin_cache or DEFAULT_BIN_CACHE
        os.makedirs(self.bin_cache, mode=0o711, exist_ok=True)
        # Traversable but not listable: a program cannot enumerate (and read) other programs'
        # binaries; their names are content hashes it cannot guess without their source.
        os.chmod(self.bin_cache, 0o711)
        self._cache = ResultCache(cache_size)
        self._queue: queue.Queue[_Task | None] = queue.Queue()
        self._lock = threading.Lock()
        self._busy = 0
        self._closed = False
        self._isolation: str | None = None
        self._counts: Counter[str] = Counter()
        self._verdicts: Counter[str] = Counter()
        self._test_verdicts: Counter[str] = Counter()
        self._compile_locks: dict[str, threading.Lock] = {}
        self._compile_failures: dict[str, str] = {}
        _sweep_dead_workers()
        self._slots = [_Slot(self, i) for i in range(self.workers)]
        for s in self._slots:
            s.thread.start()

    # -- the judge-client interface -------------------------------------------------------------

    def run(self, req: RunRequest | dict, timeout_s: float | None = None) -> RunResult:
        """Judge one program against its tests. Raises BadRequest / LanguageUnavailable for requests
        that cannot be judged, TimeoutError after ``timeout_s`` seconds (None: no limit)."""
        req = self._coerce(req)
        self._validate(req)
        return self._run(req, None if timeout_s is None else time.monotonic() + timeout_s)

    def run_many(self, reqs: Sequence[RunRequest | dict], *, timeout_s: float | None = None,
                 on_result: Callable[[int, RunResult], None] | None = None) -> list[RunResult]:
        """Judge many requests concurrently; results in request order. ``on_result(i, result)`` is
        called (from a pool thread) as each finishes. ``timeout_s`` applies to each request.
        All requests are validated before any runs."""
        reqs = [self._coerce(r) for r in reqs]
        for r in reqs:
            self._validate(r)
        if not reqs:
            return []

        def one(i: int) -> RunResult:
            deadline = None if timeout_s is None else time.monotonic() + timeout_s
            res = self._run(reqs[i], deadline)
            if on_result is not None:
                on_result(i, res)
            return res

        # Each request thread mostly waits on its jobs; enough of them keep every worker fed.
        with ThreadPoolExecutor(max_workers=min(len(reqs), 4 * self.workers + 4),
                                thread_name_prefix="sandbox-run") as pool:
            return list(pool.map(one, range(len(reqs))))

    def stats(self) -> dict[str, Any]:
        """Counters for /metrics: executions, verdict counts, queue depth, busy workers, compiles."""
        with self._lock:
            return {
                "workers": self.workers,
                "busy_workers": self._busy,
                "queue_depth": self._queue.qsize(),
                "executions": self._counts["runs"],
                "tests_executed": self._counts["tests"],
                "cache_hits": self._counts["cache_hits"],
                "verdicts": dict(self._verdicts),
                "test_verdicts": dict(self._test_verdicts),
                "compiles": {k[8:]: v for k, v in self._counts.items() if k.startswith("compile:")},
                "isolation": self._isolation or "starting",
            }

    def worker_info(self) -> list[dict[str, Any]]:
        """What each started worker reported: pid, sandbox uid, isolation, memory_cgroup."""
        return [dict(s.hello) for s in self._slots if s.hello]

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
        while True:  # fail whatever is still queued
            try:
                task = self._queue.get_nowait()
            except queue.Empty:
                break
            if task is not None:
                task.finish(None)
        for _ in self._slots:
            self._queue.put(None)
        for s in self._slots:
            s.thread.join(timeout=30)

    def __enter__(self) -> "LocalExecutor":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- internals --------------------------------------------------------------------------------

    @property
    def isolation(self) -> str | None:
        """"full", "degraded: <reason>", or None before the first worker reported."""
        return self._isolation

    def _note_isolation(self, hello: dict) -> None:
        state = "full" if hello.get("isolation") == "full" else f"degraded: {hello.get('reason')}"
        with self._lock:
            if state != self._isolation and state != "full":
                log.warning("sandbox running WITHOUT full isolation (%s); see docs/sandbox_engine.md",
                            hello.get("reason"))
            self._isolation = state

    @staticmethod
    def _coerce(req: RunRequest | dict) -> RunRequest:
        if isinstance(req, RunRequest):
            return req
        if isinstance(req, dict) and "language" in req:
            languages.require(req["language"])  # an unknown language is LanguageUnavailable, not a typo
        try:
            return RunRequest.model_validate(req)
        except ValidationError as e:
            raise BadRequest(f"invalid run request: {e}") from None

    @staticmethod
    def _validate(req: RunRequest) -> None:
        languages.require(req.language)
        if req.checker not in CHECKERS:
            raise BadRequest(f"unknown checker {req.checker!r}; choose one of {', '.join(CHECKERS)}")
        if req.fn_name is not None:
            if req.language != "python":
                raise BadRequest("fn_name (call-based tests) is only supported for python")
            if not req.fn_name.isidentifier():
                raise BadRequest(f"fn_name {req.fn_name!r} is not a Python identifier")
            for i, t in enumerate(req.tests):
                if not isinstance(t.input, list):
                    raise BadRequest(f"test {i}: call-based tests need an argument list as input")
                try:
                    json.dumps(t.input)
                except (TypeError, ValueError) as e:
                    raise BadRequest(f"test {i}: arguments are not JSON data: {e}") from None
        else:
            for i, t in enumerate(req.tests):
                if isinstance(t.input, list) and not all(isinstance(x, str) for x in t.input):
                    raise BadRequest(f"test {i}: stdin input must be a string (or a list of lines)")

    def _check_open(self) -> None:
        if self._closed:
            raise SandboxFailure("executor is closed")

    def _wait(self, task: _Task, deadline: float | None) -> None:
        while not task.done.wait(1.0 if deadline is None else max(0.0, min(1.0, deadline - time.monotonic()))):
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError("sandbox run exceeded timeout_s")
            if self._closed and not any(s.thread.is_alive() for s in self._slots):
                raise SandboxFailure("executor closed during the run")  # nobody is left to run it
        if task.response is None and self._closed:
            raise SandboxFailure("executor closed during the run")

    def _run(self, req: RunRequest, deadline: float | None) -> RunResult:
        self._check_open()
        key = request_key(req, ENGINE_VERSION, CHECKER_VERSION)
        hit = self._cache.get(key)
        if hit is not None:
            with self._lock:
                self._counts["cache_hits"] += 1
            return hit
        try:
            prog = self._compile(req, deadline)
        except CompileError as e:
            result = RunResult(verdict=Verdict.CE, passed=0, total=len(req.tests), compile_output=str(e)[:65536],
                               tests=[TestResult(verdict=Verdict.CE, message="compile error") for _ in req.tests])
            self._finish(req, key, result, [])
            return result
        state = _RunState(len(req.tests), req.stop_on_first_failure)
        tasks = []
        for i, test in enumerate(req.tests):

            def on_done(task: _Task, i: int = i, test: TestCase = test) -> None:
                if task.response is None:
                    return
                try:
                    tr = self._judge(req, prog, test, *task.response, state)
                except Exception as e:  # a bug in judging must fail this run, not the worker thread
                    log.exception("judging test %d failed", i)
                    state.error = f"judging failed: {type(e).__name__}: {e}"
                    return
                state.results[i] = tr
                if tr.verdict != Verdict.AC:
                    state.first_fail = min(state.first_fail, i)

            task = _Task(lambda test=test: self._test_job(req, prog, test), code_id=prog.code_id,
                         code_blob=prog.code_blob,
                         skip=lambda i=i: state.skip(i), on_done=on_done)
            tasks.append(task)
            self._queue.put(task)
        try:
            for t in tasks:
                self._wait(t, deadline)
        except BaseException:
            state.abandoned = True
            raise
        if state.error:
            raise SandboxFailure(state.error)
        tests: list[TestResult] = []
        for i, tr in enumerate(state.results):
            if tr is None or (req.stop_on_first_failure and i > state.first_fail):
                tr = TestResult(verdict=Verdict.SKIPPED, message="not run: an earlier test failed")
            tests.append(tr)
        failing = next((t.verdict for t in tests if t.verdict not in (Verdict.AC, Verdict.SKIPPED)), None)
        result = RunResult(verdict=failing or Verdict.AC, passed=sum(t.verdict == Verdict.AC for t in tests),
                           total=len(tests), tests=tests, compile_output=prog.compile_output)
        self._finish(req, key, result, tests)
        return result

    def _finish(self, req: RunRequest, key: str, result: RunResult, tests: list[TestResult]) -> None:
        self._cache.put(key, result)
        with self._lock:
            self._counts["runs"] += 1
            self._verdicts[result.verdict.value] += 1
            for t in tests:
                if t.verdict != Verdict.SKIPPED:
                    self._counts["tests"] += 1
                self._test_verdicts[t.verdict.value] += 1

    def _compile(self, req: RunRequest, deadline: float | None) -> Program:
        if req.language == "python":
            return languages.python_program(req.code)
        key = languages.build_key(req.language, req.code)
        if not os.path.exists(os.path.join(self.bin_cache, key)):
            with self._lock:
                lock = self._compile_locks.setdefault(key, threading.Lock())
            try:
                with lock:  # concurrent requests for one program: the first compiles, the others wait
                    if key in self._compile_failures:
                        raise CompileError(self._compile_failures[key])
                    if not os.path.exists(os.path.join(self.bin_cache, key)):
                        self._compile_now(req, key, deadline)
            finally:
                with self._lock:  # later requests find the binary (or the failure) instead
                    if self._compile_locks.get(key) is lock and not lock.locked():
                        del self._compile_locks[key]
        return languages.compiled_program(req.language, req.code, key, req.memory_limit_mb)

    def _compile_now(self, req: RunRequest, key: str, deadline: float | None) -> None:
        header, blobs = languages.compile_job(req.language, req.code, key)
        task = _Task(lambda: (header, blobs))
        self._queue.put(task)
        self._wait(task, deadline)
        resp, rblobs = task.response
        if resp.get("status") != "ok":
            raise SandboxFailure(f"compiling failed inside the sandbox: {resp.get('error')}")
        with self._lock:
            self._counts[f"compile:{req.language}"] += 1
        if resp.get("collected"):
            return
        out = (rblobs[1] + rblobs[0]).decode("utf-8", "replace")
        if resp.get("wall_timeout") or resp.get("signal") == signal.SIGKILL:
            out = "compilation exceeded its time limit\n" + out
        elif not out.strip():
            out = f"compiler exited with status {resp.get('exit_code')} signal {resp.get('signal')}"
        with self._lock:
            self._compile_failures[key] = out
            if len(self._compile_failures) > 4096:
                self._compile_failures.pop(next(iter(self._compile_failures)))
        raise CompileError(out)

    def _test_job(self, req: RunRequest, prog: Program, test: TestCase) -> tuple[dict, list[bytes]]:
        tl = req.time_limit_s
        header: dict[str, Any] = {
            "op": "run", "mode": prog.mode, "code_id": prog.code_id, "argv": prog.argv,
            "cpu_s": int(math.ceil(tl)) + 1,
            "wall_s": _wall_limit(req),
            "as_mb": req.memory_limit_mb if prog.address_space else None,
            "stack_mb": min(req.memory_limit_mb, 1024),
            "nproc": NPROC_LIMIT + prog.extra_nproc,
            "fsize_mb": FSIZE_LIMIT_MB,
            "nofile": NOFILE_LIMIT if prog.address_space else 4 * NOFILE_LIMIT,
            "stdout_cap": req.output_limit_mb * 1024 * 1024,
            "stderr_cap": max(STDERR_CAP, req.max_output_chars),
            "fn_name": req.fn_name,
            "proc": prog.needs_proc,
            # The whole process tree's memory (cgroup); the JVM's heap (-Xmx) is the limit, plus
            # room for its own metaspace and code; others get a margin for the zygote's pages.
            "cgroup_mb": req.memory_limit_mb + (384 if prog.language == "java" else 64),
        }
        blobs: list[bytes] = []
        if req.fn_name is not None:
            header["blob_args"] = 0
            blobs.append(json.dumps(test.input).encode())
        else:
            text = "\n".join(test.input) if isinstance(test.input, list) else test.input
            header["blob_stdin"] = 0
            blobs.append(text.encode("utf-8", "surrogatepass"))  # any str, even with lone surrogates
        return header, blobs

    def _judge(self, req: RunRequest, prog: Program, test: TestCase, h: dict, blobs: list[bytes],
               state: _RunState) -> TestResult:
        if h.get("status") != "ok":
            state.error = f"sandbox failure: {h.get('error')}"
            log.error("%s", state.error)
            return TestResult(verdict=Verdict.RE, message=state.error)
        out_b, err_b = blobs
        stdout, stderr = out_b.decode("utf-8", "replace"), err_b.decode("utf-8", "replace")
        n = req.max_output_chars
        child = h.get("child") or {}
        code, sig, cpu = h["exit_code"], h["signal"], h["cpu_s"]
        tr = TestResult(verdict=Verdict.AC, time_s=round(h["wall_s"], 6), cpu_s=round(cpu, 6),
                        memory_mb=round(max(h.get("cgroup_peak_mb") or 0.0, h["maxrss_kb"] / 1024), 3), exit_code=code, signal=sig,
                        stdout=stdout[:n], stderr=stderr[:n], stdout_truncated=h["ole"] or len(stdout) > n,
                        stderr_truncated=h["stderr_truncated"] or len(stderr) > n)
        failed = code != 0 or sig is not None
        tl = req.time_limit_s
        v, msg = Verdict.AC, ""
        if h["ole"]:
            v, msg = Verdict.OLE, f"more than {req.output_limit_mb} MiB of output"
        elif h["wall_timeout"]:
            v, msg = Verdict.TLE, f"wall-clock limit ({_wall_limit(req):g} s) reached"
        elif cpu > tl or sig == signal.SIGXCPU or (sig == signal.SIGKILL and cpu >= math.ceil(tl) + 0.9):
            v, msg = Verdict.TLE, f"CPU time {cpu:.2f} s > {tl:g} s"
        elif h.get("cgroup_oom"):  # some process of the tree was OOM-killed, even if main survived
            v, msg = Verdict.MLE, f"memory limit ({req.memory_limit_mb} MiB) exceeded by the process tree"
        elif failed and (child.get("exc") == "MemoryError" or "std::bad_alloc" in stderr
                         or "java.lang.OutOfMemoryError" in stderr
                         or (prog.mode == "python" and stderr.rstrip().endswith("MemoryError"))):
            v, msg = Verdict.MLE, f"memory limit ({req.memory_limit_mb} MiB) exceeded"
        elif code == worker.SETUP_FAILED and child.get("setup_error"):
            v, msg = Verdict.RE, "the sandbox could not start the program"
        elif req.fn_name and child.get("missing_fn"):
            v, msg = Verdict.CE, f"no function or Solution method named {req.fn_name!r}"
        elif failed:
            if sig is not None:
                v, msg = Verdict.RE, f"killed by signal {sig} ({_signame(sig)})"
            else:
                v, msg = Verdict.RE, f"exit code {code}" + (f" ({child['exc']})" if child.get("exc") else "")
        elif req.fn_name:
            if "value" not in child:
                v, msg = Verdict.RE, "the function returned no value to the judge"
            else:
                if len(json.dumps(child["value"])) <= VALUE_CAP:
                    tr.value = child["value"]
                ok, why = check_value(req.checker, child["value"], test.output)
                v, msg = (Verdict.AC, "") if ok else (Verdict.WA, why)
        else:
            ok, why = check_stdout(req.checker, stdout, test.output)
            v, msg = (Verdict.AC, "") if ok else (Verdict.WA, why)
        tr.verdict, tr.message = v, msg
        return tr


def _wall_limit(req: RunRequest) -> float:
    """Seconds of wall clock a test may take: the request's own limit, else the backstop."""
    if req.wall_time_limit_s is not None:
        return req.wall_time_limit_s
    return req.time_limit_s * WALL_FACTOR + WALL_EXTRA_S


def _signame(sig: int) -> str:
    try:
        return signal.Signals(sig).name
    except ValueError:
        return "?"
