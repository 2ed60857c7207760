"""Judge clients: one interface, an in-process executor or the HTTP service behind it.

Every client has ``run(req, timeout_s=None) -> RunResult``, ``run_many(reqs, *, timeout_s=None,
on_result=None) -> list[RunResult]`` (concurrent, order preserved), ``close()`` and is a context
manager; all are thread-safe. :func:`make_client` picks the backend:

- no URL: :class:`sandbox.local.LocalExecutor`, warm workers in this process (the default for codealign);
- ``"docker://IMAGE"``: the same over a service container started for the run (docker SDK);
- one or more URLs of ``python -m sandbox serve`` replicas: :class:`SandboxClient` (sync), built on
  :class:`AsyncSandboxClient` (asyncio), which
  * batches: programs in one ``run_many`` that share their tests go through the test-set path
    (``POST /v1/testsets`` once per server, then ``POST /v1/batch`` with only programs);
  * bounds the HTTP requests it has in flight (``max_concurrency``);
  * retries with exponential backoff and jitter on connection errors (``max_retries``) and on
    502/503/504, the service's "full, try again" answers (for up to ``overload_patience_s``);
  * spreads requests round-robin over the URLs and steers away from one that refused a connection.

A 4xx answer is the caller's mistake and raises :class:`SandboxRequestError` with the server's message;
it is never retried.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import threading
import time
from collections import defaultdict
from typing import TYPE_CHECKING, Any, Callable, Sequence

from pydantic import BaseModel, ConfigDict, Field

from sandbox.batch import testset_id
from sandbox.spec import RunRequest, RunResult, TestCase

if TYPE_CHECKING:  # httpx is imported lazily: the in-process executor does not need it
    import httpx

OnResult = Callable[[int, RunResult], None]


class SandboxRequestError(ValueError):
    """The service rejected a request (HTTP 4xx); ``detail`` is its explanation."""

    def __init__(self, status_code: int, detail: Any, url: str):
        self.status_code = status_code
        self.detail = detail
        self.url = url
        super().__init__(f"sandbox at {url} rejected the request (HTTP {status_code}): {detail}")


class SandboxUnavailable(ConnectionError):
    """No endpoint gave an answer within the retries (connection errors, overload, server errors)."""


class ClientSettings(BaseModel):
    """How an HTTP client talks to the service. Times are seconds."""

    model_config = ConfigDict(extra="forbid")

    max_concurrency: int | None = Field(
        default=None, gt=0, description="HTTP requests in flight at once; None means 8 per endpoint URL."
    )
    batch_size: int = Field(
        default=32, gt=0, le=1024, description="Programs per POST /v1/batch when several share their tests."
    )
    max_retries: int = Field(
        default=6, ge=0, description="Retries of one request after connection errors or server faults (5xx but 502-504)."
    )
    overload_patience_s: float = Field(
        default=600.0, ge=0, description="How long to keep retrying a request the service refuses as full (502/503/504)."
    )
    backoff_s: float = Field(default=0.25, gt=0, description="First retry delay; doubles each retry.")
    max_backoff_s: float = Field(default=8.0, gt=0, description="Cap on one retry delay.")
    down_cooldown_s: float = Field(
        default=5.0, ge=0, description="How long an endpoint that refused a connection is avoided."
    )
    connect_timeout_s: float = Field(default=5.0, gt=0, description="TCP connect timeout.")
    read_timeout_s: float = Field(
        default=900.0, gt=0, description="Longest wait for one answer (a big batch takes minutes)."
    )


def parse_urls(urls: str | Sequence[str]) -> list[str]:
    """Endpoint base URLs from a comma-separated string or a list; scheme defaults to http://."""
    items = urls.split(",") if isinstance(urls, str) else list(urls)
    out = []
    for item in items:
        url = item.strip().rstrip("/")
        if not url:
            continue
        if "://" not in url:
            url = "http://" + url
        out.append(url)
    if not out:
        raise ValueError(f"no sandbox URL in {urls!r}")
    return out


class AsyncSandboxClient:
    """asyncio client for one or more sandbox service replicas (see the module docstring).

    Use one instance per event loop: ``async with AsyncSandboxClient("http://host:8080") as c: ...``.
    """

    def __init__(self, urls: str | Sequence[str], settings: ClientSettings | None = None, **overrides: Any):
        import httpx

        self.urls = parse_urls(urls)
        base = settings or ClientSettings()
        self.settings = ClientSettings(**{**base.model_dump(), **overrides}) if overrides else base
        s = self.settings
        self.max_concurrency = s.max_concurrency or 8 * len(self.urls)
        limits = httpx.Limits(max_connections=self.max_concurrency + 4, max_keepalive_connections=self.max_concurrency)
        timeout = httpx.Timeout(s.read_timeout_s, connect=s.connect_timeout_s)
        self._http = httpx.AsyncClient(timeout=timeout, limits=limits)
        self._round_robin = itertools.count()
        self._down_until: dict[str, float] = {}
        self._slots: asyncio.Semaphore | None = None  # made in the running loop on first use
        self._register_locks: dict[tuple[str, str], asyncio.Lock] = {}
        self._registered_at: dict[tuple[str, str], float] = {}  # (url, test set id) -> when registered

    # -- interface -----------------------------------------------------------------------------

    async def run(self, req: RunRequest, timeout_s: float | None = None) -> RunResult:
        """Judge one program; ``timeout_s`` bounds it from when it is sent, retries included (TimeoutError)."""
        return await self._run_one(req, timeout_s)

    async def run_many(
        self,
        reqs: Sequence[RunRequest],
        *,
        timeout_s: float | None = None,
        on_result: OnResult | None = None,
    ) -> list[RunResult]:
        """Judge many programs concurrently; results in the order of ``reqs``.

        ``on_result(i, result)`` is called as each result arrives. ``timeout_s`` applies to each
        request (as in LocalExecutor), counted from when it is sent: a batch's programs share one
        deadline, and time waiting for the client's own concurrency limit does not count. A request
        that runs out raises TimeoutError and the call stops.
        """
        return await self._run_many(list(reqs), on_result, timeout_s)

    async def register_tests(self, tests: Sequence[TestCase], url: str | None = None) -> str:
        """Store a test set on one endpoint (default: the next one) and return its id."""
        body = {"tests": [t.model_dump(mode="json") for t in tests]}
        data = await self._post("/v1/testsets", body, url=url)
        return data["id"]

    async def healthy(self) -> dict[str, bool]:
        """``GET /healthz`` on every endpoint: URL -> whether it answered 200."""
        import httpx

        async def probe(url: str) -> bool:
            try:
                return (await self._http.get(url + "/healthz", timeout=self.settings.connect_timeout_s)).status_code == 200
            except httpx.HTTPError:
                return False

        answers = await asyncio.gather(*(probe(u) for u in self.urls))
        return dict(zip(self.urls, answers))

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> "AsyncSandboxClient":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # -- internals -----------------------------------------------------------------------------

    def _slot(self) -> asyncio.Semaphore:
        if self._slots is None:
            self._slots = asyncio.Semaphore(self.max_concurrency)
        return self._slots

    async def _run_one(self, req: RunRequest, timeout_s: float | None) -> RunResult:
        async with self._slot():
            data = await asyncio.wait_for(self._post("/v1/run", req.model_dump(mode="json")), timeout_s)
        return RunResult.model_validate(data)

    async def _run_batch(
        self, reqs: list[RunRequest], idxs: list[int], key: str, results: list, on_result, timeout_s: float | None
    ) -> None:
        tests = reqs[idxs[0]].tests
        body = {"testset": key, "programs": [reqs[i].model_dump(mode="json", exclude={"tests"}) for i in idxs]}
        async with self._slot():
            data = await asyncio.wait_for(self._post("/v1/batch", body, testset=(key, tests)), timeout_s)
        answers = data["results"]
        if len(answers) != len(idxs):
            raise SandboxUnavailable(f"batch answer has {len(answers)} results for {len(idxs)} programs")
        for i, answer in zip(idxs, answers):
            results[i] = RunResult.model_validate(answer)
            if on_result is not None:
                on_result(i, results[i])

    async def _run_single(self, reqs: list[RunRequest], i: int, results: list, on_result, timeout_s) -> None:
        results[i] = await self._run_one(reqs[i], timeout_s)
        if on_result is not None:
            on_result(i, results[i])

    async def _run_many(
        self, reqs: list[RunRequest], on_result: OnResult | None, timeout_s: float | None
    ) -> list[RunResult]:
        results: list[RunResult | None] = [None] * len(reqs)
        by_tests: dict[str, list[int]] = defaultdict(list)
        singles: list[int] = []
        hashed: dict[tuple[int, ...], str] = {}  # callers reuse TestCase objects: hash each set once
        for i, req in enumerate(reqs):
            if req.tests:
                ident = tuple(map(id, req.tests))
                if ident not in hashed:
                    hashed[ident] = testset_id(req.tests)
                by_tests[hashed[ident]].append(i)
            else:
                singles.append(i)
        jobs = []
        for key, idxs in by_tests.items():
            if len(idxs) == 1:  # registering a set for one program costs more than sending its tests
                singles.extend(idxs)
                continue
            size = self.settings.batch_size
            for start in range(0, len(idxs), size):
                jobs.append(self._run_batch(reqs, idxs[start : start + size], key, results, on_result, timeout_s))
        jobs.extend(self._run_single(reqs, i, results, on_result, timeout_s) for i in sorted(singles))
        tasks = [asyncio.ensure_future(job) for job in jobs]
        try:
            await asyncio.gather(*tasks)
        except BaseException:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise
        return results  # type: ignore[return-value]  # every slot is filled once gather returns

    def _pick(self) -> str:
        """Next endpoint round-robin, skipping those that recently refused connections."""
        now = time.monotonic()
        n = len(self.urls)
        start = next(self._round_robin)
        for k in range(n):
            url = self.urls[(start + k) % n]
            if self._down_until.get(url, 0.0) <= now:
                return url
        return min(self.urls, key=lambda u: self._down_until.get(u, 0.0))  # all down: the soonest back

    async def _post(
        self,
        path: str,
        body: dict,
        *,
        url: str | None = None,
        testset: tuple[str, Sequence[TestCase]] | None = None,
    ) -> dict:
        """POST with retries; ``testset`` (id, tests) lets a 404 for that id register it and resend."""
        import httpx

        s = self.settings
        failures = 0  # connection errors and server faults: at most max_retries
        busy = 0  # 502/503/504 answers: a live but full service, retried for overload_patience_s
        busy_since: float | None = None
        registrations = 0
        last_error = ""
        while True:
            target = url or self._pick()
            sent_at = time.monotonic()
            try:
                resp = await self._http.post(target + path, json=body)
            except httpx.TransportError as e:  # refused, reset, timed out: the server may be gone
                self._down_until[target] = time.monotonic() + s.down_cooldown_s
                last_error = f"{target}: {type(e).__name__}: {e}"
                failures += 1
            else:
                status = resp.status_code
                if status == 200:
                    return resp.json()
                detail = _detail(resp)
                if status == 404 and testset is not None and _unknown_testset(resp, testset[0]) and registrations < 3:
                    registrations += 1  # the server does not know the set (restart, other replica): send it
                    await self._register_once(target, testset, sent_at)
                    url = target  # resend where it was registered
                    continue
                last_error = f"{target}: HTTP {status}: {detail}"
                if status in (502, 503, 504):
                    busy += 1
                    busy_since = busy_since or sent_at
                    if time.monotonic() - busy_since > s.overload_patience_s:
                        raise SandboxUnavailable(
                            f"sandbox request {path} still refused as overloaded after {s.overload_patience_s:g} s "
                            f"({busy} answers) over {self.urls}; last error: {last_error}"
                        )
                elif 400 <= status < 500:
                    raise SandboxRequestError(status, detail, target)
                else:  # a server fault: another replica may do better, but do not hammer
                    failures += 1
            if failures > s.max_retries:
                raise SandboxUnavailable(
                    f"sandbox request {path} failed after {failures + busy} attempts over {self.urls}; last error: {last_error}"
                )
            if url is not None and testset is not None:
                url = None  # a resend after registering may go elsewhere once it failed there
            delay = min(s.max_backoff_s, s.backoff_s * 2 ** (max(failures, busy) - 1))
            await asyncio.sleep(delay * (0.5 + random.random() / 2))

    async def _register_once(self, url: str, testset: tuple[str, Sequence[TestCase]], since: float) -> None:
        """Register a test set on ``url`` unless a concurrent batch did so after ``since``."""
        key = (url, testset[0])
        lock = self._register_locks.setdefault(key, asyncio.Lock())
        async with lock:
            if self._registered_at.get(key, float("-inf")) > since:
                return  # another batch registered it while this one was in flight
            await self._post("/v1/testsets", {"tests": [t.model_dump(mode="json") for t in testset[1]]}, url=url)
            self._registered_at[key] = time.monotonic()


def _detail(resp: "httpx.Response") -> Any:
    try:
        data = resp.json()
    except ValueError:
        return resp.text[:500]
    return data.get("detail", data) if isinstance(data, dict) else data


def _unknown_testset(resp: "httpx.Response", key: str) -> bool:
    try:
        data = resp.json()
    except ValueError:
        return False
    return isinstance(data, dict) and data.get("testset") == key


class SandboxClient:
    """Thread-safe synchronous client: an :class:`AsyncSandboxClient` driven on a private I/O thread.

    ``on_result`` callbacks run on that I/O thread.
    """

    def __init__(self, urls: str | Sequence[str], settings: ClientSettings | None = None, **overrides: Any):
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="sandbox-client-io", daemon=True)
        self._thread.start()
        self._closed = False
        self._lock = threading.Lock()

        async def make() -> AsyncSandboxClient:
            return AsyncSandboxClient(urls, settings, **overrides)

        try:
            self._client = self._call(make())
        except BaseException:
            self._stop_loop()
            raise
        self.urls = self._client.urls
        self.settings = self._client.settings

    def _call(self, coro):
        future = asyncio.run_coroutine_threadsafe(coro, self._loop)
        try:
            return future.result()
        except BaseException:
            future.cancel()  # e.g. KeyboardInterrupt in the caller: stop the work on the I/O thread
            raise

    def run(self, req: RunRequest, timeout_s: float | None = None) -> RunResult:
        """Judge one program (see :meth:`AsyncSandboxClient.run`)."""
        return self._call(self._client.run(req, timeout_s))

    def run_many(
        self,
        reqs: Sequence[RunRequest],
        *,
        timeout_s: float | None = None,
        on_result: OnResult | None = None,
    ) -> list[RunResult]:
        """Judge many programs concurrently, order preserved (see :meth:`AsyncSandboxClient.run_many`)."""
        return self._call(self._client.run_many(reqs, timeout_s=timeout_s, on_result=on_result))

    def register_tests(self, tests: Sequence[TestCase], url: str | None = None) -> str:
        return self._call(self._client.register_tests(tests, url))

    def healthy(self) -> dict[str, bool]:
        return self._call(self._client.healthy())

    def _stop_loop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
        try:
            self._call(self._client.aclose())
        finally:
            self._stop_loop()

    def __enter__(self) -> "SandboxClient":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class DockerSandboxClient(SandboxClient):
    """A :class:`SandboxClient` over a service container it started itself, removed again on close()."""

    def __init__(self, image: str, workers: int | None = None, **overrides: Any):
        from sandbox.docker_backend import DockerSandbox

        self.container = DockerSandbox(image, workers=workers or 0)
        url = self.container.start()
        try:
            super().__init__(url, **overrides)
        except BaseException:
            self.container.stop()
            raise

    def close(self) -> None:
        try:
            super().close()
        finally:
            self.container.stop()


DOCKER_SCHEME = "docker://"


def make_client(urls: str | Sequence[str] | None = None, *, workers: int | None = None, isolate: str = "on"):
    """The judge client codealign uses.

    - ``urls`` None (or empty): an in-process :class:`sandbox.local.LocalExecutor` with ``workers``
      warm workers (None: one per core) and ``isolate`` ("on": full isolation or refuse to start;
      "off": without root, trusted code only, reported in every result);
    - ``"docker://IMAGE"``: start the service image (default ``codealign-sandbox:latest``) with the
      docker SDK, judge there with ``workers`` workers, remove the container on close();
    - service URLs (a comma-separated string or a list): a :class:`SandboxClient`; ``workers`` is then
      the servers' business and is ignored.
    """
    if urls is None or (isinstance(urls, str) and not urls.strip()) or (not isinstance(urls, str) and not list(urls)):
        from sandbox.local import LocalExecutor  # lazily: the engine is heavier than the HTTP client

        return LocalExecutor(workers, isolate=isolate)
    if isinstance(urls, str) and urls.strip().startswith(DOCKER_SCHEME):
        image = urls.strip()[len(DOCKER_SCHEME):] or "codealign-sandbox:latest"
        return DockerSandboxClient(image, workers)
    return SandboxClient(urls)
