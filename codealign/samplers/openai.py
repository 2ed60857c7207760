"""``openai`` sampler: any OpenAI-compatible ``/v1/completions`` server (``vllm serve``, SGLang, TGI...).

Prompts are sent concurrently (``concurrency`` requests in flight) over one ``httpx`` connection pool;
each request asks for at most ``max_n_per_request`` samples (``n``), so large n is split. Connection
errors and 429/5xx answers are retried with backoff. Token ids are not returned (``token_ids=None``).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

from codealign.samplers.base import Completion, Sampler, SamplingParams


class OpenAISampler(Sampler):
    """Sample from a running OpenAI-compatible server.

    ``base_url``: e.g. ``http://127.0.0.1:8000`` (with or without the trailing ``/v1``). ``model``: the
    served model name. Times are seconds.
    """

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        api_key: str | None = None,
        concurrency: int = 16,
        max_n_per_request: int = 64,
        timeout_s: float = 600.0,
        max_retries: int = 4,
    ):
        import httpx

        base = base_url.rstrip("/")
        self.url = (base if base.endswith("/v1") else base + "/v1") + "/completions"
        self.model = model
        self.concurrency = concurrency
        self.max_n_per_request = max_n_per_request
        self.max_retries = max_retries
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._http = httpx.Client(
            timeout=httpx.Timeout(timeout_s, connect=10.0),
            limits=httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency),
            headers=headers,
        )

    def sample(self, prompts: Sequence[str], n: int, params: SamplingParams) -> list[list[Completion]]:
        if n < 1:
            raise ValueError("n must be >= 1")
        jobs = []  # (prompt index, samples in this request, request seed)
        for i in range(len(prompts)):
            for part, start in enumerate(range(0, n, self.max_n_per_request)):
                seed = None if params.seed is None else params.seed + 1_000_003 * i + part
                jobs.append((i, min(self.max_n_per_request, n - start), seed))
        out: list[list[Completion]] = [[] for _ in prompts]
        with ThreadPoolExecutor(max_workers=self.concurrency) as pool:
            parts = list(pool.map(lambda job: self._request(prompts[job[0]], job[1], job[2], params), jobs))
        for (i, _, _), completions in zip(jobs, parts):
            out[i].extend(completions)
        return out

    def _request(self, prompt: str, n: int, seed: int | None, params: SamplingParams) -> list[Completion]:
        import httpx

        body = {
            "model": self.model,
            "prompt": prompt,
            "n": n,
            "max_tokens": params.max_new_tokens,
            "temperature": params.temperature,
            "top_p": params.top_p,
        }
        if seed is not None:
            body["seed"] = seed
        if params.stop:
            body["stop"] = list(params.stop)
        for attempt in range(self.max_retries + 1):
            try:
                resp = self._http.post(self.url, json=body)
            except httpx.TransportError as e:
                error: str = f"{type(e).__name__}: {e}"
            else:
                if resp.status_code == 200:
                    choices = sorted(resp.json()["choices"], key=lambda c: c.get("index", 0))
                    if len(choices) != n:
                        raise RuntimeError(f"{self.url} returned {len(choices)} choices for n={n}")
                    return [Completion(text=c["text"], token_ids=None, finish_reason=c.get("finish_reason")) for c in choices]
                if resp.status_code != 429 and resp.status_code < 500:
                    raise RuntimeError(f"{self.url} rejected the request (HTTP {resp.status_code}): {resp.text[:500]}")
                error = f"HTTP {resp.status_code}"
            if attempt < self.max_retries:
                time.sleep(min(0.5 * 2**attempt, 8.0))
        raise ConnectionError(f"{self.url}: no answer after {self.max_retries + 1} attempts ({error})")

    def close(self) -> None:
        self._http.close()
