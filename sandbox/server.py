"""The sandbox HTTP service: ``POST /v1/run``, the batch path, SandboxFusion's ``/run_code``, metrics.

One FastAPI app over one judge executor (by default :class:`sandbox.local.LocalExecutor` with one
warm worker per core). The event loop never blocks: executor calls run on a thread pool. Admission
control keeps the machine honest: at most ``workers + max_queue`` programs are in the service at
once, and the engine runs one test per worker (a test never shares its core), handing out the
tests of all admitted programs round-robin by program, so a small request never waits behind a big
one. A single request whose first test has not started within ``queue_timeout_s`` gives up its
place. Beyond either limit the answer is 504 with ``Retry-After`` (SandboxFusion's clients, verl's
included, retry on 504), so overload turns into client back-off, never into programs that time out.
Time limits start when a test starts, never while it waits.

Errors: malformed JSON 400; a body that does not fit the schema 422; a request the engine cannot
judge (``sandbox.errors.BadRequest``, e.g. Java without a JDK, a lone surrogate) 400; too many tests
or bytes 413; unknown test set 404; full 504; the engine itself broken 500 (never a program under
test). Every error body is ``{"detail": "<what is wrong and how to fix it>"}``.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import re
import os
import time
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Literal

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse
from pydantic import BaseModel, Field, ValidationError

from sandbox.batch import BatchRequest, BatchResponse, TestSetRef, TestSetRequest, testset_id
from sandbox.errors import BadRequest, QueueTimeout, RequestTooLarge
from sandbox.fusion import RunCodeRequest, RunCodeResponse, sandbox_error, to_fusion_response
from sandbox.metrics import ServiceMetrics
from sandbox.spec import RunRequest, RunResult, TestCase

DEFAULT_QUEUE_TIMEOUT_S = 10.0  # a /v1/run request's wait for its first test, when not configured
RUN_CODE_MAX_WAIT_S = 60.0  # the longest a /run_code request waits, whatever its compile_timeout

log = logging.getLogger("sandbox.server")


def cpu_count() -> int:
    """Cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


class ServiceSettings(BaseModel):
    """How the service runs. Times are seconds."""

    workers: int = Field(default=0, ge=0, description="Tests judged at once; 0 means one per core.")
    isolate: Literal["auto", "on", "off"] = Field(
        default="on",
        description="Engine isolation: 'on' (and 'auto', kept for compatibility) refuse to start without full "
        "isolation; 'off' runs programs without namespaces or uid drop (trusted code only), with a loud warning, "
        "shown in /healthz and in every result.",
    )
    memory_cgroup: bool = Field(
        default=True,
        description="Cap each test's process tree with a memory cgroup; without one the service refuses to start. "
        "False (--no-memory-cgroup) runs without it: per-process limits only, shown in /healthz and every result.",
    )
    max_queue: int | None = Field(
        default=None, ge=0, description="Programs that may wait beyond one per worker; None means 64 per worker."
    )
    queue_timeout_s: float | None = Field(
        default=None, ge=0,
        description="Longest wait of a single request for its first test to start, before 504. None: 10 s for "
        "/v1/run; for /run_code as long as its SandboxFusion client still waits for the answer (see run_code_wait_s).",
    )
    max_testsets: int = Field(default=4096, gt=0, description="Test sets kept for the batch path (LRU).")
    max_testset_bytes: int = Field(
        default=1 << 30, gt=0, description="Total JSON size of the kept test sets (LRU beyond it), bytes."
    )
    max_body_bytes: int = Field(default=256 << 20, gt=0, description="Largest request body accepted, bytes.")
    max_tests: int = Field(default=10_000, gt=0, description="Most tests one program may be judged on (413 beyond).")

    def resolved_workers(self) -> int:
        return self.workers or cpu_count()

    def run_wait_s(self) -> float:
        """How long a /v1/run request may wait for its first test to start."""
        return DEFAULT_QUEUE_TIMEOUT_S if self.queue_timeout_s is None else self.queue_timeout_s

    def run_code_wait_s(self, compile_timeout: float) -> float:
        """How long a /run_code request may wait. SandboxFusion's clients wait ``compile_timeout +
        run_timeout + 10`` s for the answer (verl), and its program may then run ``run_timeout + 1`` s
        of wall clock, so it can wait ``compile_timeout + 8`` s (1 s to spare; at most RUN_CODE_MAX_WAIT_S)
        and still be answered in time: under verl's defaults (64 requests in flight) a fixed 8 s sent
        correct programs to 504s that exhausted verl's three tries. ``queue_timeout_s``, when set, caps it."""
        wait = min(compile_timeout + 8.0, RUN_CODE_MAX_WAIT_S)
        return wait if self.queue_timeout_s is None else min(wait, self.queue_timeout_s)

    def resolved_max_queue(self) -> int:
        return 64 * self.resolved_workers() if self.max_queue is None else self.max_queue


class Overloaded(Exception):
    """The service is full (or the wait for a worker ran out): answer 504."""


class Admission:
    """At most ``capacity`` programs in the service (waiting or running). Event-loop only.

    Scheduling itself is the engine's: it runs the tests of every admitted program round-robin by
    program, one test per worker. Here: the count, 504 beyond it, and the gauges."""

    def __init__(self, workers: int, max_queue: int, metrics: ServiceMetrics):
        self.capacity = workers + max_queue
        self.max_queue = max_queue
        self.waiting = 0  # admitted, no test started yet
        self.running = 0  # a test (or its compile) started
        self._metrics = metrics
        metrics.set("sandbox_workers", workers)

    def _publish(self) -> None:
        self._metrics.set("sandbox_queue_depth", self.waiting)
        self._metrics.set("sandbox_running", self.running)

    def admit(self, n: int) -> None:
        """Reserve places for ``n`` programs, or raise Overloaded when the service is full.

        A batch is admitted whole when there is room for one more program, even if it overfills
        the service: it was accepted as a unit (its size is capped by MAX_BATCH_PROGRAMS).
        """
        if self.running + self.waiting >= self.capacity:
            raise Overloaded(f"{self.running} programs running and {self.waiting} waiting "
                             f"(limit {self.capacity}: one per worker plus a queue of {self.max_queue})")
        self.waiting += n
        self._publish()

    def start(self) -> None:
        """One admitted program's first test started."""
        self.waiting -= 1
        self.running += 1
        self._publish()

    def finish(self, started: bool) -> None:
        """The engine has finished with the program (not merely the request that asked for it)."""
        if started:
            self.running -= 1
        else:
            self.waiting -= 1
        self._publish()


class TestSetStore:
    """Registered test sets by content hash, least recently used dropped first. Event-loop only."""

    __test__ = False

    def __init__(self, max_sets: int, max_bytes: int, metrics: ServiceMetrics):
        self._sets: OrderedDict[str, tuple[list[TestCase], int]] = OrderedDict()
        self._bytes = 0
        self.max_sets = max_sets
        self.max_bytes = max_bytes
        self._metrics = metrics

    def put(self, tests: list[TestCase], size: int) -> str:
        key = testset_id(tests)
        if key in self._sets:
            self._sets.move_to_end(key)
            return key
        self._sets[key] = (tests, size)
        self._bytes += size
        while len(self._sets) > 1 and (len(self._sets) > self.max_sets or self._bytes > self.max_bytes):
            _, (_, dropped) = self._sets.popitem(last=False)
            self._bytes -= dropped
        self._metrics.set("sandbox_testsets", len(self._sets))
        return key

    def get(self, key: str) -> list[TestCase] | None:
        entry = self._sets.get(key)
        if entry is None:
            return None
        self._sets.move_to_end(key)
        return entry[0]


def _error(status: int, detail: str, **extra: Any) -> JSONResponse:
    return JSONResponse(status_code=status, content={"detail": detail, **extra})


def _overloaded(detail: str) -> JSONResponse:
    return JSONResponse(
        status_code=504,
        content={"detail": f"sandbox overloaded: {detail}; retry later"},
        headers={"Retry-After": "1"},
    )


_SURROGATE = re.compile("[\ud800-\udfff]")


def reject_lone_surrogates(value: Any, where: str) -> None:
    """BadRequest (400) when a string in ``value`` holds a lone surrogate (an invalid unicode escape
    such as ``"\\ud800"``: JSON lets it through, UTF-8 cannot carry it). Paired escapes are fine:
    the JSON parser joins them into one character."""
    stack = [(value, where)]
    while stack:
        v, path = stack.pop()
        if isinstance(v, str):
            if _SURROGATE.search(v):
                raise BadRequest(f"{path or 'body'}: invalid unicode (a lone surrogate escape such as \\ud800); "
                                 "send valid UTF-8 text")
        elif isinstance(v, dict):
            stack.extend((x, f"{path}.{k}" if path else str(k)) for k, x in v.items())
        elif isinstance(v, list):
            stack.extend((x, f"{path}[{i}]") for i, x in enumerate(v))


def _describe_validation(errors: list[dict[str, Any]]) -> str:
    parts = []
    for err in errors:
        loc = ".".join(str(p) for p in err.get("loc", ()) if p != "body") or "body"
        msg = str(err.get("msg", "invalid")).removeprefix("Value error, ")
        parts.append(f"{loc}: {msg}")
    return "; ".join(parts)


def create_app(
    settings: ServiceSettings | None = None,
    executor_factory: Callable[[int], Any] | None = None,
) -> FastAPI:
    """The service. ``executor_factory(workers)`` makes the judge (default: LocalExecutor)."""
    settings = settings or ServiceSettings()
    workers = settings.resolved_workers()
    metrics = ServiceMetrics()
    state: dict[str, Any] = {"ready": False}

    if executor_factory is None:

        def executor_factory(n: int):
            from sandbox.local import LocalExecutor

            return LocalExecutor(n, isolate=settings.isolate, memory_cgroup=settings.memory_cgroup,
                                 max_tests=settings.max_tests, max_request_mb=max(1, settings.max_body_bytes >> 20))

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        try:
            state["executor"] = await asyncio.to_thread(executor_factory, workers)
            # Warm every worker (the engine already refuses to start without the isolation asked for).
            warm_up = RunRequest(code="pass", tests=[TestCase(input="", output="")] * workers, time_limit_s=10)
            await asyncio.to_thread(state["executor"].run, warm_up)
        except Exception as e:
            if "executor" in state:
                await asyncio.to_thread(state["executor"].close)
            raise RuntimeError(
                f"the sandbox workers failed to start ({e}). With --isolate on they need root, namespaces and a "
                "memory cgroup: in Docker run the image with --cap-add SYS_ADMIN --security-opt seccomp=unconfined "
                "--security-opt apparmor=unconfined --cgroupns private (see docs/sandbox_service.md)"
            ) from e
        health = state["executor"].health() if hasattr(state["executor"], "health") else {}
        if health.get("unenforced"):
            log.warning("SANDBOX LIMITS NOT ENFORCED: %s; /healthz and every result say so",
                        ", ".join(health["unenforced"]))
        # One thread per program in the service: each waits on its tests while the engine runs them.
        state["pool"] = ThreadPoolExecutor(max_workers=workers + settings.resolved_max_queue() + 1,
                                           thread_name_prefix="sandbox-judge")
        state["admission"] = Admission(workers, settings.resolved_max_queue(), metrics)
        state["testsets"] = TestSetStore(settings.max_testsets, settings.max_testset_bytes, metrics)
        state["ready"] = True
        log.info("sandbox service ready: %d workers, queue limit %d", workers, settings.resolved_max_queue())
        try:
            yield
        finally:
            state["ready"] = False
            state["pool"].shutdown(wait=False, cancel_futures=True)
            await asyncio.to_thread(state["executor"].close)

    app = FastAPI(
        title="codealign sandbox",
        description="Judges untrusted programs against tests. See docs/sandbox_service.md.",
        lifespan=lifespan,
    )

    # -- error handling: every bad request gets a 4xx with a message, never a 5xx --------------------

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        if any(e.get("type") == "json_invalid" for e in errors):
            ctx = next(e for e in errors if e.get("type") == "json_invalid").get("ctx", {})
            return _error(400, f"malformed JSON body: {ctx.get('error', 'cannot be parsed')}")
        return _error(422, _describe_validation(errors), errors=jsonable_encoder(errors, custom_encoder={Exception: str}))

    @app.exception_handler(BadRequest)
    async def _bad(request: Request, exc: BadRequest) -> JSONResponse:
        return _error(413 if isinstance(exc, RequestTooLarge) else 400, str(exc))

    @app.exception_handler(Exception)
    async def _broken(request: Request, exc: Exception) -> JSONResponse:
        log.error("internal error on %s", request.url.path, exc_info=exc)
        return _error(500, f"internal sandbox error: {type(exc).__name__}: {exc}")

    @app.middleware("http")
    async def _count_and_limit(request: Request, call_next):
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > settings.max_body_bytes:
            response = _error(413, f"request body of {length} bytes exceeds the limit of {settings.max_body_bytes}")
        else:
            response = await call_next(request)
        route = request.scope.get("route")
        path = getattr(route, "path", "unmatched")
        metrics.inc("sandbox_http_requests_total", route=path, status=str(response.status_code))
        return response

    # -- judging -----------------------------------------------------------------------------------

    def record(req: RunRequest, result: RunResult, seconds: float) -> None:
        metrics.inc("sandbox_executions_total", language=req.language)
        metrics.inc("sandbox_runs_total", verdict=result.verdict.value)
        for test in result.tests:
            metrics.inc("sandbox_tests_total", verdict=test.verdict.value)
        if result.cached:
            metrics.inc("sandbox_cache_hits_total")
        metrics.observe_latency(seconds)

    async def judge(req: RunRequest, wait_s: float | None) -> RunResult:
        """Judge one admitted program on a pool thread (raises Overloaded, BadRequest...).

        ``wait_s``: Overloaded when no test of it started within that many seconds (None: wait as
        long as it takes). The admission place is held until the engine really finishes, even when
        the request that asked is gone: the count stays honest.
        """
        admission: Admission = state["admission"]
        loop = asyncio.get_running_loop()
        started = False

        def on_start() -> None:  # from an engine thread, once
            def mark() -> None:
                nonlocal started
                if not started:
                    started = True
                    admission.start()

            loop.call_soon_threadsafe(mark)

        start = time.perf_counter()
        run = functools.partial(state["executor"].run, req, start_timeout_s=wait_s, on_start=on_start)
        try:
            future = loop.run_in_executor(state["pool"], run)
        except BaseException:
            admission.finish(False)
            raise

        def finished(f: asyncio.Future) -> None:
            # on_start's call_soon_threadsafe ran before this callback (same loop, FIFO)
            admission.finish(started)
            if not f.cancelled() and f.exception() is None:  # exception() also marks it retrieved
                record(req, f.result(), time.perf_counter() - start)

        future.add_done_callback(finished)
        try:
            return await asyncio.shield(future)
        except QueueTimeout as e:
            raise Overloaded(str(e)) from None

    async def judge_single(req: RunRequest, route: str, wait_s: float | None = None) -> RunResult | JSONResponse:
        try:
            state["admission"].admit(1)
        except Overloaded as e:
            metrics.inc("sandbox_rejected_total", route=route)
            return _overloaded(str(e))
        try:
            return await judge(req, settings.run_wait_s() if wait_s is None else wait_s)
        except Overloaded as e:
            metrics.inc("sandbox_rejected_total", route=route)
            return _overloaded(str(e))

    @app.get("/healthz")
    async def healthz():
        """200 once the workers are up and every one of them works; 503 with the reason otherwise."""
        if not state["ready"]:
            return _error(503, "starting")
        health_fn = getattr(state["executor"], "health", None)
        health = health_fn() if callable(health_fn) else {"healthy": True}
        body = {"status": "ok" if health["healthy"] else "unhealthy", "workers": workers,
                "isolation": health.get("isolation", engine_stats().get("isolation", "unknown")),
                "unenforced": health.get("unenforced", []), "workers_replaced": health.get("workers_replaced", 0),
                "broken_workers": health.get("broken", {})}
        if not health["healthy"]:
            return JSONResponse(status_code=503, content={"detail": "sandbox workers broken: " + "; ".join(
                f"worker {k}: {v}" for k, v in body["broken_workers"].items()), **body})
        return body

    @app.get("/v1/ping")
    async def ping():
        """SandboxFusion's liveness probe: the JSON string "pong"."""
        return "pong"

    @app.post("/v1/run", response_model=RunResult)
    async def run(req: RunRequest):
        """Judge one program against its tests."""
        reject_lone_surrogates(req.model_dump(), "")
        return await judge_single(req, "/v1/run")

    @app.post("/v1/testsets", response_model=TestSetRef)
    async def register_testset(body: TestSetRequest, request: Request):
        """Store a test set for the batch path; its id is the sha256 of its canonical JSON."""
        reject_lone_surrogates(body.model_dump(), "")
        if len(body.tests) > settings.max_tests:
            raise RequestTooLarge(f"the test set has {len(body.tests)} tests; at most {settings.max_tests} (--max-tests)")
        size = int(request.headers.get("content-length") or 0) or len(body.model_dump_json())
        key = state["testsets"].put(body.tests, size)
        return TestSetRef(id=key, count=len(body.tests))

    @app.get("/v1/testsets/{key}", response_model=TestSetRef)
    async def get_testset(key: str):
        tests = state["testsets"].get(key)
        if tests is None:
            return _unknown_testset(key)
        return TestSetRef(id=key, count=len(tests))

    def _unknown_testset(key: str) -> JSONResponse:
        return _error(404, f"unknown test set id {key!r}: register it with POST /v1/testsets first", testset=key)

    @app.post("/v1/batch", response_model=BatchResponse)
    async def batch(body: BatchRequest):
        """Judge many programs against one registered test set; results in order."""
        tests = state["testsets"].get(body.testset)
        if tests is None:
            return _unknown_testset(body.testset)
        reject_lone_surrogates([p.model_dump() for p in body.programs], "programs")
        programs = [p.model_copy(update={"tests": tests}) for p in body.programs]
        admission: Admission = state["admission"]
        try:
            admission.admit(len(programs))
        except Overloaded as e:
            metrics.inc("sandbox_rejected_total", route="/v1/batch")
            return _overloaded(str(e))
        # Admitted programs wait for a worker as long as it takes: the batch was accepted as a whole.
        tasks = [asyncio.ensure_future(judge(p, None)) for p in programs]
        try:
            results = await asyncio.gather(*tasks)
        except BadRequest as e:
            bad = next(i for i, t in enumerate(tasks) if t.done() and not t.cancelled() and t.exception() is e)
            return _error(413 if isinstance(e, RequestTooLarge) else 400, f"programs[{bad}]: {e}")
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        return BatchResponse(results=results)

    @app.post("/run_code", response_model=RunCodeResponse, response_model_exclude_none=False)
    async def run_code(body: RunCodeRequest):
        """SandboxFusion's endpoint (see sandbox/fusion.py for the mapping)."""
        reject_lone_surrogates(body.model_dump(), "")
        try:
            req = body.to_run_request()
        except ValidationError as e:
            return _error(422, _describe_validation(e.errors()))
        try:
            # The run's own wall-clock limit (the engine's, from when the program starts) is in the
            # request: see RunCodeRequest; how long it may queue: ServiceSettings.run_code_wait_s.
            outcome = await judge_single(req, "/run_code", wait_s=settings.run_code_wait_s(body.compile_timeout))
        except BadRequest:
            raise
        except Exception as e:  # SandboxFusion reports its own failures in the body, with 200
            log.exception("run_code failed")
            return sandbox_error(f"sandbox failure: {type(e).__name__}: {e}")
        if isinstance(outcome, JSONResponse):
            return outcome
        return to_fusion_response(body, outcome)

    def engine_stats() -> dict[str, Any]:
        stats = getattr(state.get("executor"), "stats", None)
        return stats() if callable(stats) else {}

    @app.get("/metrics", response_class=PlainTextResponse)
    async def prometheus():
        """Prometheus text format 0.0.4."""
        stats = engine_stats()
        metrics.set("sandbox_engine_queue_depth", stats.get("queue_depth", 0))
        metrics.set("sandbox_engine_busy_workers", stats.get("busy_workers", 0))
        return PlainTextResponse(metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")

    app.state.metrics = metrics
    app.state.settings = settings
    return app


def serve(host: str = "127.0.0.1", port: int = 8080, settings: ServiceSettings | None = None, log_level: str = "info") -> None:
    """Run the service with uvicorn until interrupted."""
    import uvicorn

    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    app = create_app(settings)
    uvicorn.run(app, host=host, port=port, log_level=log_level, access_log=False, timeout_graceful_shutdown=5)
