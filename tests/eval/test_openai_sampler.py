"""The `openai` sampler against a real HTTP server on 127.0.0.1 speaking /v1/completions."""

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from codealign.samplers.base import SamplingParams
from codealign.samplers.openai import OpenAISampler


class CompletionsServer:
    """Answers POST /v1/completions with deterministic choices; can fail the first requests with 503."""

    def __init__(self, fail_first: int = 0, delay_s: float = 0.0):
        self.requests: list[dict] = []
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
                    failing = len(outer.requests) <= outer.fail_first
                    outer.in_flight += 1
                    outer.max_in_flight = max(outer.max_in_flight, outer.in_flight)
                time.sleep(delay_s)
                with outer.lock:
                    outer.in_flight -= 1
                if self.path != "/v1/completions":
                    return self._send(404, {"error": "not found"})
                if failing:
                    return self._send(503, {"error": "busy"})
                if body["max_tokens"] <= 0:
                    return self._send(400, {"error": "max_tokens must be positive"})
                choices = [
                    {"index": i, "text": f"{body['prompt']}#{body.get('seed')}#{i}", "finish_reason": "length"}
                    for i in reversed(range(body["n"]))  # out of order on purpose
                ]
                self._send(200, {"id": "x", "object": "text_completion", "model": body["model"], "choices": choices})

            def _send(self, code, obj):
                data = json.dumps(obj).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

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
    assert server.max_in_flight > 1  # requests really overlapped
    assert all(c.token_ids is None for row in out for c in row)


def test_retries_busy_server_and_reports_client_errors():
    with CompletionsServer(fail_first=2) as server:
        with OpenAISampler(server.url + "/v1", "m", max_retries=3) as s:
            out = s.sample(["a"], 2, SamplingParams(max_new_tokens=3))
            assert len(out[0]) == 2 and len(server.requests) == 3
            with pytest.raises(RuntimeError, match="HTTP 400"):
                s.sample(["a"], 1, SamplingParams.model_construct(max_new_tokens=0, temperature=1.0, top_p=1.0, seed=None, stop=[]))


def test_unreachable_server_is_a_clear_connection_error():
    with OpenAISampler("http://127.0.0.1:9", "m", max_retries=1) as s:
        with pytest.raises(ConnectionError, match="no answer after 2 attempts"):
            s.sample(["a"], 1, SamplingParams(max_new_tokens=3))
