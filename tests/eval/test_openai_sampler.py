"""The `openai` sampler's request handling against a scripted HTTP server on 127.0.0.1.

The server here is a stand-in that misbehaves on purpose (busy, rate-limiting, slow, capping n,
refusing long prompts): error paths a real server shows only under load. The happy path against a
real OpenAI-compatible server (`transformers serve`) is in `test_served_eval.py`.
"""

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from codealign.samplers.base import SamplingParams
from codealign.samplers.openai import OpenAISampler, Part, PromptTooLong


class CompletionsServer:
    """Answers POST /v1/completions with deterministic choices; can fail the first requests with 503."""

    def __init__(self, fail_first: int = 0, delay_s: float = 0.0, fail_status: int = 503, fail_headers: dict | None = None,
                 n_cap: int | None = None, slow_first_s: float = 0.0, too_long: str | None = None):
        self.requests: list[dict] = []
        self.times: list[float] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self.fail_first = fail_first
        self.lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with outer.lock:
                    outer.requests.append({"path": self.path, "auth": self.headers.get("Authorization"), **body})
                    outer.times.append(time.monotonic())
                    first = len(outer.requests) == 1
                    failing = len(outer.requests) <= outer.fail_first
                    outer.in_flight += 1
                    outer.max_in_flight = max(outer.max_in_flight, outer.in_flight)
                time.sleep(delay_s + (slow_first_s if first else 0.0))
                with outer.lock:
                    outer.in_flight -= 1
                if self.path != "/v1/completions":
                    return self._send(404, {"error": "not found"})
                if failing:
                    return self._send(fail_status, {"error": "busy"}, fail_headers or {})
                if body["max_tokens"] <= 0:
                    return self._send(400, {"error": "max_tokens must be positive"})
                if too_long is not None and too_long in body["prompt"]:
                    return self._send(400, {"error": "This model's maximum context length is 64 tokens. However, you requested 900 tokens."})
                n = min(body["n"], n_cap or body["n"])
                choices = [
                    {"index": i, "text": f"{body['prompt']}#{body.get('seed')}#{i}", "finish_reason": "length"}
                    for i in reversed(range(n))  # out of order on purpose
                ]
                usage = {"prompt_tokens": 3, "completion_tokens": 5 * n, "total_tokens": 3 + 5 * n}
                self._send(200, {"id": "x", "object": "text_completion", "model": body["model"], "choices": choices, "usage": usage})

            def _send(self, code, obj, headers=None):
                data = json.dumps(obj).encode()
                try:
                    self.send_response(code)
                    for key, value in (headers or {}).items():
                        self.send_header(key, value)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout test)
                    pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


def test_samples_n_per_prompt_in_order_with_splitting_and_concurrency():
    with CompletionsServer(delay_s=0.05) as server:
        with OpenAISampler(server.url, "my-model", api_key="k", concurrency=4, max_n_per_request=3) as s:
            out = s.sample(["p0", "p1", "p2"], 7, SamplingParams(max_new_tokens=5, temperature=0.8, seed=10, stop=["\n\n"]))
    assert [len(x) for x in out] == [7, 7, 7]
    assert [c.text.split("#")[0] for c in out[1]] == ["p1"] * 7
    # n=7 split as 3 + 3 + 1 per prompt, each request with its own seed; choices re-ordered by index.
    assert len(server.requests) == 9 and sorted(r["n"] for r in server.requests) == [1, 1, 1, 3, 3, 3, 3, 3, 3]
    assert [c.text.split("#")[2] for c in out[0]] == ["0", "1", "2", "0", "1", "2", "0"]
    assert len({c.text.split("#")[1] for c in out[0]}) == 3
    r = server.requests[0]
    assert r["path"] == "/v1/completions" and r["model"] == "my-model" and r["auth"] == "Bearer k"
    assert r["max_tokens"] == 5 and r["temperature"] == 0.8 and r["stop"] == ["\n\n"]
    assert 1 < server.max_in_flight <= 4  # requests really overlapped, never more than the pool
    assert all(c.token_ids is None for row in out for c in row)
    assert (s.stats.requests, s.stats.completion_tokens) == (9, 5 * 21) and s.n_limit is None


def test_retries_busy_server_and_reports_client_errors():
    with CompletionsServer(fail_first=2) as server:
        with OpenAISampler(server.url + "/v1", "m", max_retries=3) as s:
            out = s.sample(["a"], 2, SamplingParams(max_new_tokens=3))
            assert len(out[0]) == 2 and len(server.requests) == 3
            with pytest.raises(RuntimeError, match="HTTP 400"):
                s.sample(["a"], 1, SamplingParams.model_construct(max_new_tokens=0, temperature=1.0, top_p=1.0, seed=None, stop=[]))


def test_a_server_returning_fewer_choices_is_asked_again_and_its_limit_kept():
    with CompletionsServer(n_cap=2, delay_s=0.02) as server:
        with OpenAISampler(server.url, "m", concurrency=2) as s:
            out = s.sample(["p0", "p1"], 7, SamplingParams(max_new_tokens=4, seed=100))
            assert s.n_limit == 2
            # The limit is kept for the run: later calls ask for 2 at a time from the start.
            asked = len(server.requests)
            s.sample(["p2"], 4, SamplingParams(max_new_tokens=4, seed=100))
            assert [r["n"] for r in server.requests[asked:]] == [2, 2]
    assert [len(x) for x in out] == [7, 7]
    # Every sample came from its own (request seed, choice): nothing was served twice or lost.
    assert all(len({c.text for c in row}) == 7 for row in out)
    first = [r for r in server.requests[:asked] if r["prompt"] == "p0"]
    # seeds follow (prompt, first sample index): 100 + start for prompt 0; no two requests share one
    assert len({r["seed"] for r in first}) == len(first) and {r["seed"] - 100 for r in first} <= set(range(7))


def test_parts_ask_only_for_the_missing_indices_with_the_seed_of_their_start():
    with CompletionsServer() as server:
        got = []
        with OpenAISampler(server.url, "m", max_n_per_request=2) as s:
            s.sample_parts(["a", "b"], [Part(1, 5, 3)], SamplingParams(max_new_tokens=4, seed=10), lambda part, c, u: got.append((part, len(c))))
    assert sorted(got, key=lambda g: g[0].start) == [(Part(1, 5, 2), 2), (Part(1, 7, 1), 1)]
    assert sorted((r["prompt"], r["seed"]) for r in server.requests) == [("b", 10 + 1_000_003 + 5), ("b", 10 + 1_000_003 + 7)]


def test_rate_limit_honours_retry_after():
    with CompletionsServer(fail_first=1, fail_status=429, fail_headers={"Retry-After": "1"}) as server:
        with OpenAISampler(server.url, "m", backoff_s=0.01) as s:
            out = s.sample(["a"], 1, SamplingParams(max_new_tokens=3))
    assert len(out[0]) == 1 and len(server.requests) == 2 and s.stats.retries == 1
    assert server.times[1] - server.times[0] >= 0.95  # waited as told, not the 10 ms backoff


def test_a_request_that_times_out_is_retried():
    with CompletionsServer(slow_first_s=3.0) as server:
        with OpenAISampler(server.url, "m", timeout_s=0.5, backoff_s=0.01) as s:
            out = s.sample(["a"], 2, SamplingParams(max_new_tokens=3))
    assert len(out[0]) == 2 and s.stats.retries == 1 and len(server.requests) == 2


def test_server_errors_exhaust_retries_with_the_servers_message():
    with CompletionsServer(fail_first=100, fail_status=500) as server:
        with OpenAISampler(server.url, "m", max_retries=2, backoff_s=0.01) as s:
            with pytest.raises(ConnectionError, match=r"no answer after 3 attempts \(HTTP 500: .*busy"):
                s.sample(["a"], 1, SamplingParams(max_new_tokens=3))
    assert len(server.requests) == 3


def test_a_prompt_longer_than_the_context_is_reported_once_and_the_others_sampled():
    with CompletionsServer(too_long="LONG") as server:
        with OpenAISampler(server.url, "m", max_n_per_request=1) as s:
            with pytest.raises(PromptTooLong, match="maximum context length"):
                s.sample(["LONG prompt"], 2, SamplingParams(max_new_tokens=3))
            refused, got = [], []
            s.sample_parts(["ok", "LONG prompt"], [Part(0, 0, 3), Part(1, 0, 3)], SamplingParams(max_new_tokens=3),
                           lambda part, c, u: got.append(part), lambda i, msg: refused.append(i))
    assert refused == [1] and sum(p.count for p in got) == 3 and all(p.prompt == 0 for p in got)


def test_unreachable_server_is_a_clear_connection_error():
    with OpenAISampler("http://127.0.0.1:9", "m", max_retries=1) as s:
        with pytest.raises(ConnectionError, match="no answer after 2 attempts"):
            s.sample(["a"], 1, SamplingParams(max_new_tokens=3))
