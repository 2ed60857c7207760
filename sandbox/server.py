"""The sandbox HTTP service: ``POST /v1/run``, the batch path, SandboxFusion's ``/run_code``, metrics.

One FastAPI app over one judge executor (by default :class:`sandbox.local.LocalExecutor` with one
warm worker per core). The event loop never blocks: executor calls run on a thread pool sized to
the workers. Admission control keeps the machine honest: at most ``workers`` programs are judged at
once; up to ``max_queue`` more wait for a worker; a single request waits at most ``queue_timeout_s``.
Beyond that the answer is 504 with ``Retry-After`` (SandboxFusion's clients, verl's included, retry on
504), so overload turns into client back-off, never into programs that share a core and time out.

Errors: malformed JSON 400; a body that does not fit the schema 422; a request the engine cannot
judge (``sandbox.errors.BadRequest``, e.g. Java without a JDK) 400; unknown test set 404; full 504;
the engine itself broken 500. Every error body is ``{"detail": "<what is wrong and how to fix it>"}``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
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
from sandbox.errors import BadRequest
from sandbox.fusion import (
    COMPILED_LANGUAGES,
    RunCodeRequest,
    RunCodeResponse,
    sandbox_error,
    to_fusion_response,
    wall_clock_exceeded,
)
from sandbox.metrics import ServiceMetrics
from sandbox.spec import RunRequest, RunResult, TestCase

log = logging.getLogger("sandbox.server")


def cpu_count() -> int:
    """Cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


class ServiceSettings(BaseModel):
    """How the service runs. Times are seconds."""

    workers: int = Field(default=0, ge=0, description="Programs judged at once; 0 means one per core.")
    isolate: Literal["auto", "on", "off"] = Field(
        default="auto",
        description="Engine isolation: 'on' refuses to start without namespaces (the Docker image uses it), "
        "'auto' falls back to rlimits only with a warning, 'off' never isolates.",
    )
    max_queue: int | None = Field(
        default=None, ge=0, description="Programs that may wait for a worker; None means 64 per worker."
    )
    queue_timeout_s: float = Field(
        default=10.0, ge=0, description="Longest wait of a single request for a worker before 504."
    )
    max_testsets: int = Field(default=4096, gt=0, description="Test sets kept for the batch path (LRU).")
    max_testset_bytes: int = Field(
        default=1 << 30, gt=0, description="Total JSON size of the kept test sets (LRU beyond it), bytes."
    )
    max_body_bytes: int = Field(default=256 << 20, gt=0, description="Largest request body accepted, bytes.")

    def resolved_workers(self) -> int:
        return self.workers or cpu_count()

    def resolved_max_queue(self) -> int:
        return 64 * self.resolved_workers() if self.max_queue is None else self.max_queue


class Overloaded(Exception):
    """No worker free and the queue is full (or the wait ran out): answer 504."""


class Admission:
    """At most ``slots`` programs judged at once, at most ``max_queue`` waiting. Event-loop only."""

    def __init__(self, slots: int, max_queue: int, metrics: ServiceMetrics):
        self.slots = slots
        self.max_queue = max_queue
        self.waiting = 0
        self.running = 0
        self._sem = asyncio.Semaphore(slots)
        self._metrics = metrics
        metrics.set("sandbox_workers", slots)

    def _publish(self) -> None:
        self._metrics.set("sandbox_queue_depth", self.waiting)
        self._metrics.set("sandbox_running", self.running)

    def admit(self, n: int) -> None:
        """Reserve places for ``n`` programs, or raise Overloaded: no worker free and the queue full.

        A batch is admitted whole when a worker is free or the queue has room, even if it overfills
        the queue: it was accepted as a unit (its size is capped by MAX_BATCH_PROGRAMS).
        """
        if self.running + self.waiting >= self.slots and self.waiting >= self.max_queue:
            raise Overloaded(f"{self.running} programs running and {self.waiting} waiting (queue limit {self.max_queue})")
        self.waiting += n
        self._publish()

    def withdraw(self, n: int) -> None:
        """Give back queue places of programs that will not run."""
        self.waiting -= n
        self._publish()

    async def acquire(self, timeout_s: float | None) -> None:
        """Wait (at most ``timeout_s``; None: as long as it takes) for a worker for one admitted program."""
        try:
            if timeout_s is None or not self._sem.locked():  # a free worker is taken without waiting
                await self._sem.acquire()
            else:
                await asyncio.wait_for(self._sem.acquire(), timeout_s)
        except asyncio.TimeoutError:
            self.withdraw(1)
            raise Overloaded(f"no worker became free within {timeout_s:g} s") from None
        except BaseException:
            self.withdraw(1)
            raise
        self.waiting -= 1
        self.running += 1
        self._publish()

    def release(self) -> None:
        """The engine has finished with the program (not merely the request that asked for it)."""
        self.running -= 1
        self._sem.release()
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

            return LocalExecutor(n, isolate=settings.isolate)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        state["executor"] = await asyncio.to_thread(executor_factory, workers)
        # Warm every worker (and learn the isolation mode) before /healthz says ready.
        warm_up = RunRequest(code="pass", tests=[TestCase(input="", output="")] * workers, time_limit_s=10)
        try:
            await asyncio.to_thread(state["executor"].run, warm_up)
        except Exception as e:
            await asyncio.to_thread(state["executor"].close)
            raise RuntimeError(
                f"the sandbox workers failed to start ({e}). With --isolate on they need root and namespaces: "
                "in Docker run the image with --cap-add SYS_ADMIN --security-opt seccomp=unconfined "
                "--security-opt apparmor=unconfined (see docs/sandbox_service.md)"
            ) from e
        state["pool"] = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="sandbox-judge")
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
        return _error(400, str(exc))

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

    async def judge(req: RunRequest, wait_s: float | None, wall_s: float | None = None) -> RunResult:
        """Judge one admitted program on a worker thread (raises Overloaded, BadRequest...).

        ``wall_s``: answer TimeoutError after that many seconds of judging. The worker stays taken
        until the engine really finishes (its own backstop kills the program), and so does the
        admission slot, even when the request that asked is gone: the count stays honest.
        """
        admission: Admission = state["admission"]
        await admission.acquire(wait_s)
        start = time.perf_counter()
        try:
            future = asyncio.get_running_loop().run_in_executor(state["pool"], state["executor"].run, req)
        except BaseException:
            admission.release()
            raise

        def finished(f: asyncio.Future) -> None:
            admission.release()
            if not f.cancelled() and f.exception() is None:  # exception() also marks it retrieved
                record(req, f.result(), time.perf_counter() - start)

        future.add_done_callback(finished)
        return await asyncio.wait_for(asyncio.shield(future), wall_s)

    async def judge_single(
        req: RunRequest, route: str, wall_s: float | None = None, wait_s: float | None = None
    ) -> RunResult | JSONResponse:
        try:
            state["admission"].admit(1)
        except Overloaded as e:
            metrics.inc("sandbox_rejected_total", route=route)
            return _overloaded(str(e))
        try:
            return await judge(req, settings.queue_timeout_s if wait_s is None else wait_s, wall_s)
        except Overloaded as e:
            metrics.inc("sandbox_rejected_total", route=route)
            return _overloaded(str(e))

    @app.get("/healthz")
    async def healthz():
        """200 once the workers are up and the service accepts work."""
        if not state["ready"]:
            return _error(503, "starting")
        stats = engine_stats()
        return {"status": "ok", "workers": workers, "isolation": stats.get("isolation", "unknown")}

    @app.get("/v1/ping")
    async def ping():
        """SandboxFusion's liveness probe: the JSON string "pong"."""
        return "pong"

    @app.post("/v1/run", response_model=RunResult)
    async def run(req: RunRequest):
        """Judge one program against its tests."""
        try:
            return await judge_single(req, "/v1/run")
        except BadRequest as e:
            return _error(400, str(e))

    @app.post("/v1/testsets", response_model=TestSetRef)
    async def register_testset(body: TestSetRequest, request: Request):
        """Store a test set for the batch path; its id is the sha256 of its canonical JSON."""
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
            return _error(400, f"programs[{bad}]: {e}")
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        return BatchResponse(results=results)

    @app.post("/run_code", response_model=RunCodeResponse, response_model_exclude_none=False)
    async def run_code(body: RunCodeRequest):
        """SandboxFusion's endpoint (see sandbox/fusion.py for the mapping)."""
        try:
            req = body.to_run_request()
        except ValidationError as e:
            return _error(422, _describe_validation(e.errors()))
        # SandboxFusion's limits are wall-clock: answer by then (its clients give up soon after).
        wall_s = body.run_timeout + (body.compile_timeout if body.language in COMPILED_LANGUAGES else 0.0) + 1.0
        try:
            # SandboxFusion clients wait compile_timeout + run_timeout + 10 s (verl): queueing at most
            # 8 s before a 504 (which they retry) keeps queue + wall_s inside that.
            outcome = await judge_single(req, "/run_code", wall_s, wait_s=min(settings.queue_timeout_s, 8.0))
        except BadRequest as e:
            return _error(400, str(e))
        except asyncio.TimeoutError:
            return wall_clock_exceeded(body, wall_s)
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
