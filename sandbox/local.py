"""``LocalExecutor``: the in-process judge client (same interface as the HTTP clients).

It owns one sandbox worker process per core (``sandbox/worker.py``) and a queue of test jobs: each
test of each request is one job, so a single request with 400 tests keeps every worker busy, and
the queue hands out jobs round-robin by request, so a 1-test request never waits behind a
100k-test one. Programs are compiled once (Python: to a code object here; C++/Java: inside the
sandbox, into a content-addressed binary cache), results are compared here, outside the sandbox,
with ``sandbox.checker``, and whole results are memoized by content (``RunResult.cached``).

    with LocalExecutor(workers=2) as ex:
        res = ex.run(RunRequest(code="print(int(input())*2)", tests=[TestCase(input="2", output="4")]))
"""

from __future__ import annotations

import itertools
import json
import logging
import math
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, OrderedDict, deque
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Sequence

from pydantic import ValidationError

from sandbox import languages, protocol, worker
from sandbox.cache import BinaryCache, ResultCache, request_key
from sandbox.checker import CHECKER_VERSION, CHECKERS, check_stdout, check_value
from sandbox.errors import BadRequest, QueueTimeout, RequestTooLarge, SandboxFailure
from sandbox.languages import CompileError, Program
from sandbox.spec import RunRequest, RunResult, TestCase, TestResult, Verdict

log = logging.getLogger("sandbox")

ENGINE_VERSION = "2"  # bump when verdict semantics change (it keys the result cache)
DEFAULT_BIN_CACHE = os.path.join(tempfile.gettempdir(), f"codealign-sandbox-{os.geteuid()}", "bin")
NPROC_LIMIT = 128  # processes + threads per test (RLIMIT_NPROC of the worker's own uid): 64 threads and more
NOFILE_LIMIT = 128  # open files per test
FSIZE_LIMIT_MB = 64  # largest file a program may write in its temp dir
STDERR_CAP = 256 * 1024  # bytes of stderr kept per test; the rest is drained and dropped
VALUE_CAP = 64 * 1024  # chars of JSON: larger call-based return values are not carried back
VALUE_DEPTH = 100  # nesting: deeper return values are compared but not carried back (JSON encoders stop at ~255)
WALL_FACTOR, WALL_EXTRA_S = 3.0, 1.0  # wall-clock backstop = time_limit * 3 + 1 s (TLE is CPU time;
# the backstop catches sleeping or blocked programs, with room for a loaded machine)
MIN_START_WAIT_S = 0.1  # a job an idle worker can take is never turned away by start_timeout_s=0
ATTEMPTS = 2  # a test whose worker broke (died, set-up failed) runs again once, on a fresh worker


class _Task:
    __slots__ = ("make", "code_id", "code_blob", "skip", "on_done", "on_start", "done", "response")

    def __init__(self, make: Callable[[], tuple[dict, list[bytes]]], *, code_id: str = "", code_blob: bytes = b"",
                 skip: Callable[[], bool] | None = None, on_done: Callable[["_Task"], None] | None = None,
                 on_start: Callable[[], None] | None = None):
        # ``make`` builds the job frame when a worker takes it, so queued tests hold no encoded copies
        self.make, self.code_id, self.code_blob = make, code_id, code_blob
        self.skip, self.on_done, self.on_start = skip, on_done, on_start
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


class _FairQueue:
    """Test jobs of many requests, handed out round-robin by request (its ``group``): a request
    waits for at most one job of each other active request per free worker, never for all of them."""

    def __init__(self) -> None:
        self._cv = threading.Condition()
        self._groups: OrderedDict[int, deque[_Task]] = OrderedDict()  # rotation order
        self._size = 0
        self._stopped = False

    def put(self, group: int, tasks: Sequence[_Task]) -> None:
        if not tasks:
            return
        with self._cv:
            self._groups.setdefault(group, deque()).extend(tasks)
            self._size += len(tasks)
            self._cv.notify(len(tasks))

    def get(self) -> _Task | None:
        """The next job (None once stopped)."""
        with self._cv:
            while not self._size and not self._stopped:
                self._cv.wait()
            if self._stopped:
                return None
            group, jobs = next(iter(self._groups.items()))
            task = jobs.popleft()
            self._size -= 1
            del self._groups[group]
            if jobs:  # to the back of the rotation
                self._groups[group] = jobs
            return task

    def stop(self) -> list[_Task]:
        """Stop handing out jobs; returns those still queued."""
        with self._cv:
            self._stopped = True
            left = [t for jobs in self._groups.values() for t in jobs]
            self._groups.clear()
            self._size = 0
            self._cv.notify_all()
            return left

    def qsize(self) -> int:
        return self._size


class _Slot:
    """One worker process and the thread that feeds it jobs from the shared queue."""

    def __init__(self, ex: "LocalExecutor", idx: int) -> None:
        self.ex, self.idx = ex, idx
        self.proc: subprocess.Popen | None = None
        self.known: set[str] = set()
        self.hello: dict = {}
        self.replaced = 0  # workers this slot replaced (died, set-up or clean-up failed)
        self.broken = ""  # why the slot has no working worker now ("" when it has one)
        self.thread = threading.Thread(target=self._loop, name=f"sandbox-slot-{idx}", daemon=True)

    def start(self) -> None:
        """Start a worker; SandboxFailure (with the worker's reason) when it refuses or dies."""
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
        try:
            hello, _ = protocol.read_frame(self.proc.stdout)
        except (EOFError, OSError, ValueError) as e:
            self._discard()
            self.broken = f"sandbox worker died while starting ({e!r})"
            raise SandboxFailure(self.broken) from None
        if not hello.get("ready", True):
            self._discard()
            self.broken = f"sandbox worker refused to start: {hello.get('error')}"
            raise SandboxFailure(self.broken)
        self.hello, self.broken = hello, ""
        self.ex._note_isolation(hello)

    def _discard(self) -> None:
        """Stop (kill) the current worker process, if any, and remove what it left behind."""
        if self.proc is None:
            return
        proc, self.proc = self.proc, None
        try:
            proc.stdin.close()
            proc.wait(timeout=5)
        except Exception:
            proc.kill()
            proc.wait()
        for f in (proc.stdout,):
            try:
                f.close()
            except OSError:
                pass
        _remove_worker_leftovers(proc.pid)

    def _replace(self, why: str) -> None:
        """A broken worker goes; a fresh one takes its place now (``broken`` says why not, if not)."""
        log.warning("sandbox worker %d replaced: %s", self.idx, why)
        self._discard()
        self.replaced += 1
        self.broken = f"replacing a worker: {why}"
        try:
            self.start()
        except SandboxFailure as e:
            log.error("sandbox worker %d cannot be replaced: %s", self.idx, e)

    def _send(self, task: _Task) -> tuple[dict, list[bytes]]:
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

    def _call(self, task: _Task) -> tuple[dict, list[bytes]]:
        """Run one job; a worker that breaks on it (dies, or its set-up fails: nothing of the program
        ran) is replaced and the job runs again on the fresh one (ATTEMPTS in all)."""
        why = ""
        for _ in range(ATTEMPTS):
            if self.proc is not None and self.proc.poll() is not None:
                self._replace(f"exited with status {self.proc.returncode} while idle")
            if self.proc is None:
                try:
                    self.start()
                except SandboxFailure as e:
                    why = str(e)
                    continue
            try:
                resp, rblobs = self._send(task)
            except (EOFError, OSError, ValueError) as e:
                why = f"worker died during a test ({e!r})"
                self._replace(why)
                continue
            if resp.get("status") == "setup_failed":
                why = str(resp.get("error"))
                self._replace(f"test set-up failed: {why}")
                continue
            if resp.get("retire"):  # the test ran; only the clean-up after it failed
                self._replace(f"clean-up failed: {resp.get('cleanup_error')}")
            return resp, rblobs
        return {"status": "error", "error": f"sandbox worker failed {ATTEMPTS} times on one test: {why}"}, []

    def _loop(self) -> None:
        while True:
            task = self.ex._queue.get()
            if task is None:
                break
            if task.skip is not None and task.skip():
                task.finish(None)
                continue
            if task.on_start is not None:
                task.on_start()
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
        self._discard()


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
        self.started = threading.Event()

    def skip(self, i: int) -> bool:
        return self.abandoned or (self.stop and self.first_fail < i)


class LocalExecutor:
    """In-process sandbox executor: ``run``, ``run_many``, ``stats``, ``health``, ``close``; thread-safe.

    Args:
        workers: worker processes (default: one per CPU core).
        cache_size: results kept in the content-addressed result cache (0 disables it).
        bin_cache: directory of compiled C++/Java programs, shared by executors on this host.
        isolate: "on" (the default) or "auto" (the same, kept for compatibility): full isolation, or
            the executor refuses to start; "off": run without namespaces, chroot or uid drop (trusted
            code only), with a loud warning, and every result lists what is not enforced.
        tmp_mb: size of each test's writable tmpfs /tmp (MiB).
        memory_cgroup: cap each test's whole process tree with a cgroup-v1 memory group; when the
            host has none the executor refuses to start. False runs without it (per-process
            RLIMIT_AS only), reported in every result and in ``health()``.
        max_tests: most tests one request may carry (more is ``RequestTooLarge``, a 413 over HTTP).
        max_request_mb: most test data (inputs and expected outputs) one request may carry, MiB.
        bin_cache_mb: size bound of the compiled-binary cache, MiB (least recently used go first).

    Raises SandboxFailure at once when the workers cannot start with the isolation asked for.
    """

    def __init__(self, workers: int | None = None, *, cache_size: int = 4096, bin_cache: str | None = None,
                 isolate: str = "on", tmp_mb: int = 256, memory_cgroup: bool = True, max_tests: int = 10_000,
                 max_request_mb: int = 256, bin_cache_mb: int = 1024) -> None:
        if isolate not in ("auto", "on", "off"):
            raise ValueError("isolate must be 'on', 'auto' or 'off'")
        self.workers = max(1, workers or len(os.sched_getaffinity(0)) or 1)  # the cores we may use
        self.isolate, self.tmp_mb, self.memory_cgroup = isolate, tmp_mb, memory_cgroup
        self.max_tests, self.max_request_bytes = max_tests, max_request_mb * 1024 * 1024
        self.bin_cache = bin_cache or DEFAULT_BIN_CACHE
        self._bins = BinaryCache(self.bin_cache, bin_cache_mb)
        self._cache = ResultCache(cache_size)
        self._queue = _FairQueue()
        self._groups = itertools.count()
        self._lock = threading.Lock()
        self._busy = 0
        self._closed = False
        self._isolation: str | None = None
        self._unenforced: list[str] = []
        self._counts: Counter[str] = Counter()
        self._verdicts: Counter[str] = Counter()
        self._test_verdicts: Counter[str] = Counter()
        self._compile_locks: dict[str, threading.Lock] = {}
        self._compile_failures: dict[str, str] = {}
        _sweep_dead_workers()
        self._slots = [_Slot(self, i) for i in range(self.workers)]
        with ThreadPoolExecutor(self.workers) as pool:  # start them all now: refuse at once, not on the first job
            errors = [e for e in pool.map(_start_error, self._slots) if e]
        if errors:
            for s in self._slots:
                s._discard()
            raise SandboxFailure(f"the sandbox cannot start: {errors[0]}")
        if self._unenforced:
            log.warning("sandbox limits NOT enforced on this host: %s (see docs/sandbox_engine.md)",
                        ", ".join(self._unenforced))
        for s in self._slots:
            s.thread.start()

    # -- the judge-client interface -------------------------------------------------------------

    def run(self, req: RunRequest | dict, timeout_s: float | None = None, *, start_timeout_s: float | None = None,
            on_start: Callable[[], None] | None = None) -> RunResult:
        """Judge one program against its tests. Raises BadRequest (RequestTooLarge, LanguageUnavailable)
        for requests that cannot be judged, TimeoutError after ``timeout_s`` seconds (None: no limit),
        QueueTimeout when no test of it has started within ``start_timeout_s`` seconds (then nothing
        of it runs). ``on_start()`` is called (from a worker thread) when its first job starts."""
        req = self._coerce(req)
        self._validate(req)
        return self._run(req, None if timeout_s is None else time.monotonic() + timeout_s, start_timeout_s, on_start)

    def run_many(self, reqs: Sequence[RunRequest | dict], *, timeout_s: float | None = None,
                 on_result: Callable[[int, RunResult], None] | None = None) -> list[RunResult]:
        """Judge many requests concurrently; results in request order. ``on_result(i, result)`` is
        called (from a pool thread) as each finishes. ``timeout_s`` applies to each request.
        All requests are validated before any runs. Requests never affect one another: every one
        runs to its end (and reaches ``on_result``) even if another fails; then the first failure,
        if any, is raised."""
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
            futures = [pool.submit(one, i) for i in range(len(reqs))]
            return [f.result() for f in futures]

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
                "workers_replaced": sum(s.replaced for s in self._slots),
                "unenforced": list(self._unenforced),
            }

    def health(self) -> dict[str, Any]:
        """``healthy`` (every slot has a working worker), ``broken`` (slot -> why not), how many
        workers were replaced, the isolation and what this host does not enforce (for /healthz)."""
        broken = {str(s.idx): s.broken for s in self._slots if s.broken or not s.thread.is_alive()}
        return {"healthy": not broken and not self._closed, "broken": broken,
                "workers_replaced": sum(s.replaced for s in self._slots),
                "isolation": self._isolation or "starting", "unenforced": list(self._unenforced)}

    def worker_info(self) -> list[dict[str, Any]]:
        """What each started worker reported: pid, sandbox uid, isolation, memory_cgroup."""
        return [dict(s.hello) for s in self._slots if s.hello]

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
        for task in self._queue.stop():  # fail whatever is still queued
            task.finish(None)
        for s in self._slots:
            s.thread.join(timeout=30)
            if not s.thread.is_alive():
                s._discard()

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
            self._unenforced = sorted(set(self._unenforced) | set(hello.get("unenforced") or ()))

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

    def _validate(self, req: RunRequest) -> None:
        languages.require(req.language)
        if req.checker not in CHECKERS:
            raise BadRequest(f"unknown checker {req.checker!r}; choose one of {', '.join(CHECKERS)}")
        if len(req.tests) > self.max_tests:
            raise RequestTooLarge(f"the request has {len(req.tests)} tests; at most {self.max_tests} are judged "
                                  "per request: split it")
        size = len(req.code) + sum(_test_size(t) for t in req.tests)
        if size > self.max_request_bytes:
            raise RequestTooLarge(f"the request's tests and code hold {size} bytes; at most {self.max_request_bytes} "
                                  "are judged per request: split it")
        if req.fn_name is not None:
            if req.language != "python":
                raise BadRequest("fn_name (call-based tests) is only supported for python")
            if not req.fn_name.isidentifier():
                raise BadRequest(f"fn_name {req.fn_name!r} is not a Python identifier")
            for i, t in enumerate(req.tests):
                if not isinstance(t.input, list):
                    raise BadRequest(f"test {i}: call-based tests need an argument list as input")
                try:
                    json.dumps(t.input).encode()
                except (TypeError, ValueError, RecursionError) as e:
                    raise BadRequest(f"test {i}: arguments are not JSON data: {type(e).__name__}: {e}") from None
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

    def _run(self, req: RunRequest, deadline: float | None, start_timeout_s: float | None = None,
             on_start: Callable[[], None] | None = None) -> RunResult:
        self._check_open()
        key = request_key(req, ENGINE_VERSION, CHECKER_VERSION)
        hit = self._cache.get(key)
        if hit is not None:
            with self._lock:
                self._counts["cache_hits"] += 1
            if on_start is not None:
                on_start()
            return hit
        group = next(self._groups)
        state = _RunState(len(req.tests), req.stop_on_first_failure)

        def started() -> None:
            if not state.started.is_set():
                state.started.set()
                if on_start is not None:
                    on_start()

        try:
            prog = self._compile(req, deadline, group, state, started, start_timeout_s)
        except CompileError as e:
            started()
            result = RunResult(verdict=Verdict.CE, passed=0, total=len(req.tests), compile_output=str(e)[:65536],
                               tests=[TestResult(verdict=Verdict.CE, message="compile error") for _ in req.tests],
                               unenforced=list(self._unenforced))
            self._finish(req, key, result, [])
            return result
        if prog.language != "python":
            self._bins.acquire(prog.bin_key)
        try:
            return self._run_tests(req, prog, key, group, state, started, deadline, start_timeout_s)
        finally:
            if prog.language != "python":
                self._bins.release(prog.bin_key)

    def _run_tests(self, req: RunRequest, prog: Program, key: str, group: int, state: _RunState,
                   started: Callable[[], None], deadline: float | None, start_timeout_s: float | None) -> RunResult:
        tasks = []
        for i, test in enumerate(req.tests):

            def on_done(task: _Task, i: int = i, test: TestCase = test) -> None:
                if task.response is None:
                    return
                tr = self._judge_safely(req, prog, test, *task.response, state)
                state.results[i] = tr
                if tr.verdict != Verdict.AC:
                    state.first_fail = min(state.first_fail, i)

            tasks.append(_Task(lambda test=test: self._test_job(req, prog, test), code_id=prog.code_id,
                               code_blob=prog.code_blob, skip=lambda i=i: state.skip(i), on_done=on_done,
                               on_start=started))
        self._queue.put(group, tasks)
        try:
            if tasks and start_timeout_s is not None and not state.started.wait(max(start_timeout_s, MIN_START_WAIT_S)):
                raise QueueTimeout(f"no worker became free within {start_timeout_s:g} s")
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
                           total=len(tests), tests=tests, compile_output=prog.compile_output,
                           unenforced=list(self._unenforced))
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

    def _compile(self, req: RunRequest, deadline: float | None, group: int, state: _RunState,
                 started: Callable[[], None], start_timeout_s: float | None) -> Program:
        if req.language == "python":
            return languages.python_program(req.code)
        key = languages.build_key(req.language, req.code)
        if not os.path.exists(self._bins.entry(key)):
            with self._lock:
                lock = self._compile_locks.setdefault(key, threading.Lock())
            try:
                with lock:  # concurrent requests for one program: the first compiles, the others wait
                    if key in self._compile_failures:
                        raise CompileError(self._compile_failures[key])
                    if not os.path.exists(self._bins.entry(key)):
                        self._compile_now(req, key, deadline, group, state, started, start_timeout_s)
            finally:
                with self._lock:  # later requests find the binary (or the failure) instead
                    if self._compile_locks.get(key) is lock and not lock.locked():
                        del self._compile_locks[key]
        return languages.compiled_program(req.language, req.code, key, req.memory_limit_mb, self.bin_cache)

    def _compile_now(self, req: RunRequest, key: str, deadline: float | None, group: int, state: _RunState,
                     started: Callable[[], None], start_timeout_s: float | None) -> None:
        header, blobs = languages.compile_job(req.language, req.code, key)
        abandoned = threading.Event()
        task = _Task(lambda: (header, blobs), on_start=started, skip=abandoned.is_set)
        self._queue.put(group, [task])
        try:
            if start_timeout_s is not None and not state.started.wait(max(start_timeout_s, MIN_START_WAIT_S)):
                raise QueueTimeout(f"no worker became free within {start_timeout_s:g} s")
            self._wait(task, deadline)
        except BaseException:
            abandoned.set()
            raise
        resp, rblobs = task.response
        if resp.get("status") != "ok":
            raise SandboxFailure(f"compiling failed inside the sandbox: {resp.get('error')}")
        with self._lock:
            self._counts[f"compile:{req.language}"] += 1
        if resp.get("collected"):
            evicted = self._bins.evict()
            if evicted:
                log.info("binary cache: evicted %d least recently used programs", len(evicted))
            return
        out = (rblobs[1] + rblobs[0]).decode("utf-8", "replace")
        if resp.get("wall_timeout") or (resp.get("signal") == signal.SIGKILL and not resp.get("cgroup_oom")):
            out = "compilation exceeded its time limit\n" + out
        elif resp.get("cgroup_oom") or resp.get("exec_enomem"):
            out = f"compilation exceeded its memory limit ({languages.COMPILE_MEMORY_MB} MiB)\n" + out
        elif not out.strip():
            out = f"compiler exited with status {resp.get('exit_code')} signal {resp.get('signal')}"
            if resp.get("collect_error"):
                out += f"; its output could not be collected: {resp['collect_error']}"
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

    def _judge_safely(self, req: RunRequest, prog: Program, test: TestCase, h: dict, blobs: list[bytes],
                      state: _RunState) -> TestResult:
        """The test's verdict. The engine's own failures (a worker that broke twice) fail the run;
        nothing the program did can: an error while judging its output is that test's failure."""
        if h.get("status") != "ok":
            state.error = f"sandbox failure: {h.get('error')}"
            log.error("%s", state.error)
            return TestResult(verdict=Verdict.RE, message=state.error)
        try:
            return self._judge(req, prog, test, h, blobs)
        except Exception as e:  # a judge bug: logged loudly, never an AC and never a 5xx
            log.exception("judging a test failed")
            return TestResult(verdict=Verdict.WA, message=f"the judge could not evaluate the output: {type(e).__name__}: {e}")

    def _judge(self, req: RunRequest, prog: Program, test: TestCase, h: dict, blobs: list[bytes]) -> TestResult:
        out_b, err_b, report = blobs
        stdout, stderr = out_b.decode("utf-8", "replace"), err_b.decode("utf-8", "replace")
        n = req.max_output_chars
        child = worker.read_report(h, report)
        code, sig, cpu = h["exit_code"], h["signal"], h["cpu_s"]
        if isinstance(child.get("signal"), int) and code == 128 + child["signal"]:
            code, sig = None, child["signal"]  # a signal the PID-1 shim turned into an exit (zygote._die)
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
        elif h.get("exec_enomem"):
            v, msg = Verdict.MLE, f"the program does not fit in the memory limit ({req.memory_limit_mb} MiB)"
        elif failed and (child.get("exc") == "MemoryError" or "std::bad_alloc" in stderr
                         or "java.lang.OutOfMemoryError" in stderr
                         or (prog.mode == "python" and stderr.rstrip().endswith("MemoryError"))):
            v, msg = Verdict.MLE, f"memory limit ({req.memory_limit_mb} MiB) exceeded"
        elif req.fn_name and child.get("missing_fn"):
            v, msg = Verdict.CE, f"no function or Solution method named {req.fn_name!r}"
        elif failed:
            if sig is not None:
                v, msg = Verdict.RE, f"killed by signal {sig} ({_signame(sig)})"
            else:
                v, msg = Verdict.RE, f"exit code {code}" + (f" ({child['exc']})" if child.get("exc") else "")
        elif req.fn_name:
            if child.get("unreadable"):
                v, msg = Verdict.WA, "the returned value cannot be compared (too large or nested too deeply to read)"
            elif "value" not in child:
                why = f"raised {child['exc']}" if "exc" in child else "it exited before returning"
                v, msg = Verdict.RE, f"the function returned no value to the judge ({why})"
            else:
                tr.value = _wire_value(child["value"])
                ok, why = check_value(req.checker, child["value"], test.output)
                v, msg = (Verdict.AC, "") if ok else (Verdict.WA, why)
        else:
            ok, why = check_stdout(req.checker, stdout, test.output)
            v, msg = (Verdict.AC, "") if ok else (Verdict.WA, why)
        tr.verdict, tr.message = v, msg
        return tr


def _start_error(slot: _Slot) -> str:
    try:
        slot.start()
        return ""
    except SandboxFailure as e:
        return str(e)


def _test_size(t: TestCase) -> int:
    """Rough bytes of a test (inputs and expected output), as they would travel."""
    total = 0
    for part in (t.input, t.output):
        if isinstance(part, str):
            total += len(part)
        elif isinstance(part, list) and all(isinstance(x, str) for x in part):
            total += sum(len(x) + 1 for x in part)
        else:
            try:
                total += len(json.dumps(part))
            except (TypeError, ValueError, RecursionError):
                total += 64
    return total


def _wire_value(value: Any) -> Any:
    """The return value as the result carries it: JSON that any client can decode (valid UTF-8, at
    most VALUE_DEPTH deep and VALUE_CAP characters), else None; it is compared either way."""
    stack = [(value, 1)]
    while stack:
        v, depth = stack.pop()
        if depth > VALUE_DEPTH:
            return None
        if isinstance(v, list):
            stack.extend((x, depth + 1) for x in v)
        elif isinstance(v, dict):
            stack.extend((x, depth + 1) for x in v.values())
    try:
        text = json.dumps(value, ensure_ascii=False)
        text.encode("utf-8")
    except (TypeError, ValueError, RecursionError):  # UnicodeEncodeError (lone surrogates) is a ValueError
        return None
    return value if len(text) <= VALUE_CAP else None


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
