"""``openai`` sampler: any OpenAI-compatible server (``vllm serve``, SGLang, TGI, ``transformers serve``, a hosted API).

Completion style POSTs ``/v1/completions`` with the prompt text; chat style (``chat=True``) POSTs
``/v1/chat/completions`` with OpenAI messages, and the server applies the model's chat template.

Built for k=1000:

- **Bounded pool.** Requests run on ``concurrency`` threads over one ``httpx`` connection pool; a
  prompt's n samples are split into requests of at most ``max_n_per_request`` choices, and requests of
  all prompts share the pool, so even one prompt with n=1000 keeps ``concurrency`` requests in flight.
- **Servers that return fewer choices than ``n``** (``transformers serve`` returns one, some APIs cap
  ``n``): the rest is requested again, and the smallest count the server returned becomes the
  per-request limit for the rest of the run (:attr:`OpenAISampler.n_limit`).
- **Retries.** Connection errors, timeouts, 429 and 5xx are retried with exponential backoff and jitter;
  a ``Retry-After`` header (seconds or an HTTP date) is honoured. Other 4xx answers fail at once, with
  the server's message; a prompt the server refuses as longer than its context raises
  :class:`PromptTooLong`.
- **Parts.** :meth:`OpenAISampler.sample_parts` takes slices of sample indices (:class:`Part`) and reports
  each answered request as it arrives, so a caller can persist progress per request and resume without
  asking for a finished sample again. Each request's seed is a function of (seed, prompt index, first
  sample index), so a resumed run asks for what an uninterrupted one would.
- **Usage.** Token usage reported by the server is summed in :attr:`OpenAISampler.stats`.

Token ids are not returned (``token_ids=None``) unless ``return_token_ids`` asks a vLLM server for them
(its ``return_token_ids`` extension; the trainer's vLLM server mode needs the exact sampled tokens).
"""

from __future__ import annotations

import email.utils
import random
import re
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any

from codealign.samplers.base import Completion, Sampler, SamplingParams

# Error texts of servers refusing a prompt longer than the model's context (vLLM: "This model's maximum
# context length is ...", SGLang: "... is longer than the model's context length", TGI: "`inputs` tokens +
# `max_new_tokens` must be <= ...", OpenAI: "maximum context length").
_TOO_LONG = re.compile(r"context (length|window)|maximum (model |context |input )?length|must be <=|prompt is too long|too many tokens", re.I)


class PromptTooLong(RuntimeError):
    """The server refused a prompt as longer than the model's context."""


@dataclass(frozen=True)
class Part:
    """Samples ``start`` .. ``start + count - 1`` of prompt number ``prompt``."""

    prompt: int
    start: int
    count: int


@dataclass
class SamplingStats:
    """What a sampler did: answered requests, retries, and the token usage the server reported (tokens)."""

    requests: int = 0
    retries: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add_usage(self, usage: dict[str, int]) -> None:
        with self._lock:
            self.requests += 1
            for key in ("prompt_tokens", "completion_tokens", "total_tokens"):
                setattr(self, key, getattr(self, key) + int(usage.get(key) or 0))

    def add_retry(self) -> None:
        with self._lock:
            self.retries += 1


class OpenAISampler(Sampler):
    """Sample from a running OpenAI-compatible server.

    ``base_url``: e.g. ``http://127.0.0.1:8000`` (with or without the trailing ``/v1``). ``model``: the
    served model name. ``chat``: prompts are lists of ``{"role", "content"}`` messages sent to
    ``/v1/chat/completions``; otherwise strings sent to ``/v1/completions``. Times are seconds.
    """

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        api_key: str | None = None,
        chat: bool = False,
        concurrency: int = 16,
        max_n_per_request: int = 64,
        timeout_s: float = 600.0,
        max_retries: int = 8,
        backoff_s: float = 0.5,
        max_backoff_s: float = 30.0,
        return_token_ids: bool = False,
    ):
        import httpx

        if concurrency < 1 or max_n_per_request < 1:
            raise ValueError("concurrency and max_n_per_request must be >= 1")
        base = base_url.rstrip("/")
        self.url = (base if base.endswith("/v1") else base + "/v1") + ("/chat/completions" if chat else "/completions")
        self.model = model
        self.chat = chat
        self.concurrency = concurrency
        self.max_n_per_request = max_n_per_request
        self.timeout_s = timeout_s
        self.max_retries = max_retries
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self.return_token_ids = return_token_ids
        #: The most choices the server gave for one request, once it gave fewer than asked (None: never).
        self.n_limit: int | None = None
        self.stats = SamplingStats()
        self._stop = threading.Event()  # set when a run is abandoned: sleeping retries give up
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._http = httpx.Client(
            timeout=httpx.Timeout(timeout_s, connect=min(10.0, timeout_s)),
            limits=httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency),
            headers=headers,
        )

    def sample(self, prompts: Sequence[Any], n: int, params: SamplingParams) -> list[list[Completion]]:
        if n < 1:
            raise ValueError("n must be >= 1")
        out: list[list[Completion | None]] = [[None] * n for _ in prompts]

        def keep(part: Part, completions: list[Completion], usage: dict) -> None:
            out[part.prompt][part.start : part.start + part.count] = completions

        self.sample_parts(prompts, [Part(i, 0, n) for i in range(len(prompts))], params, keep)
        return out  # type: ignore[return-value]

    def sample_parts(
        self,
        prompts: Sequence[Any],
        parts: Sequence[Part],
        params: SamplingParams,
        on_part: Callable[[Part, list[Completion], dict], None],
        on_too_long: Callable[[int, str], None] | None = None,
        max_new_tokens: Sequence[int] | None = None,
    ) -> None:
        """Request every part; ``on_part(part, completions, usage)`` runs on this thread for each answer.

        The ``part`` given to ``on_part`` is the slice that answer covers (a request split by the
        per-request limit, or answered with fewer choices, covers less than the part asked for).
        ``on_too_long(prompt index, server message)``: a prompt the server refuses as too long is
        reported once and its other parts are dropped; without it :class:`PromptTooLong` is raised.
        Any other failure cancels the queued requests and raises (``ConnectionError`` when retries are
        exhausted, ``RuntimeError`` for a refused request). ``max_new_tokens``: per prompt, overrides
        ``params.max_new_tokens`` (to keep each prompt within the model's context).
        """
        queue = deque(p for p in parts if p.count > 0)
        refused: set[int] = set()
        running: dict[Future, Part] = {}
        self._stop.clear()
        pool = ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix="codealign-openai")
        try:
            while queue or running:
                while queue and len(running) < self.concurrency:
                    part = queue.popleft()
                    if part.prompt in refused:
                        continue
                    count = min(part.count, self.max_n_per_request, self.n_limit or part.count)
                    if count < part.count:  # the rest stays at the front: a prompt finishes early
                        queue.appendleft(Part(part.prompt, part.start + count, part.count - count))
                    sent = Part(part.prompt, part.start, count)
                    seed = None if params.seed is None else params.seed + 1_000_003 * sent.prompt + sent.start
                    ask = params if max_new_tokens is None else params.model_copy(update={"max_new_tokens": max_new_tokens[sent.prompt]})
                    running[pool.submit(self._request, prompts[sent.prompt], count, seed, ask)] = sent
                done, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in done:
                    sent = running.pop(future)
                    try:
                        completions, usage = future.result()
                    except PromptTooLong as e:
                        if on_too_long is None:
                            raise
                        if sent.prompt not in refused:
                            refused.add(sent.prompt)
                            on_too_long(sent.prompt, str(e))
                        continue
                    if sent.prompt in refused:
                        continue
                    got = len(completions)
                    if got < sent.count:
                        self.n_limit = min(self.n_limit or got, got)
                        queue.appendleft(Part(sent.prompt, sent.start + got, sent.count - got))
                    on_part(Part(sent.prompt, sent.start, got), completions, usage)
        except BaseException:
            self._stop.set()
            pool.shutdown(wait=False, cancel_futures=True)
            raise
        pool.shutdown(wait=True)

    def _body(self, prompt: Any, n: int, seed: int | None, params: SamplingParams) -> dict:
        body: dict[str, Any] = {"model": self.model}
        if self.chat:
            if not isinstance(prompt, list):
                raise TypeError("chat=True takes prompts as lists of {'role', 'content'} messages")
            body["messages"] = prompt
        else:
            if not isinstance(prompt, str):
                raise TypeError("the completion endpoint takes text prompts; use chat=True for messages")
            body["prompt"] = prompt
        body.update(n=n, max_tokens=params.max_new_tokens, temperature=params.temperature, top_p=params.top_p)
        if seed is not None:
            body["seed"] = seed
        if params.stop:
            body["stop"] = list(params.stop)
        if self.return_token_ids:
            body["return_token_ids"] = True  # vLLM: the exact sampled tokens, for a trainer
        return body

    def _request(self, prompt: Any, n: int, seed: int | None, params: SamplingParams) -> tuple[list[Completion], dict]:
        """One request (retried): (1 to n completions in choice order, the usage the server reported)."""
        import httpx

        body = self._body(prompt, n, seed, params)
        error = ""
        for attempt in range(self.max_retries + 1):
            wait_s = None
            try:
                resp = self._http.post(self.url, json=body)
            except httpx.TransportError as e:  # connection refused/reset, timeouts
                error = f"{type(e).__name__}: {e}"
            else:
                if resp.status_code == 200:
                    return self._parse(resp, n)
                error = f"HTTP {resp.status_code}: {resp.text[:300]}"
                if resp.status_code != 429 and resp.status_code < 500:
                    if _TOO_LONG.search(resp.text):
                        raise PromptTooLong(f"{self.url} refused the prompt as too long (HTTP {resp.status_code}): {resp.text[:300]}")
                    raise RuntimeError(f"{self.url} rejected the request (HTTP {resp.status_code}): {resp.text[:500]}")
                wait_s = _retry_after_s(resp.headers.get("retry-after"))
            if attempt == self.max_retries:
                break
            if wait_s is None:
                wait_s = min(self.backoff_s * 2**attempt, self.max_backoff_s) * random.uniform(0.5, 1.0)
            self.stats.add_retry()
            if self._stop.wait(min(wait_s, self.timeout_s)):
                break
        raise ConnectionError(f"{self.url}: no answer after {attempt + 1} attempts ({error})")

    def _parse(self, resp: Any, n: int) -> tuple[list[Completion], dict]:
        try:
            data = resp.json()
            choices = sorted(data["choices"], key=lambda c: c.get("index", 0))
            if self.chat:
                texts = [(c.get("message") or {}).get("content") or "" for c in choices]
            else:
                texts = [c["text"] for c in choices]
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            raise RuntimeError(f"{self.url} answered 200 with a body that is not an OpenAI {'chat ' if self.chat else ''}completion: {resp.text[:300]}") from e
        if not 1 <= len(texts) <= n:
            raise RuntimeError(f"{self.url} returned {len(texts)} choices for n={n}")
        ids = [c.get("token_ids") if self.return_token_ids else None for c in choices]
        if self.return_token_ids and any(i is None for i in ids):
            raise RuntimeError(f"{self.url} returned no token_ids (return_token_ids needs a vLLM server)")
        usage = data.get("usage") or {}
        self.stats.add_usage(usage)
        return [Completion(text=t, token_ids=i, finish_reason=c.get("finish_reason")) for t, i, c in zip(texts, ids, choices)], usage

    def close(self) -> None:
        self._stop.set()
        self._http.close()


def _retry_after_s(value: str | None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or an HTTP date); None if absent or unreadable."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())
