"""Sampling throughput of `codealign eval --sampler openai` at k=1000: is the client ever the bottleneck?

By default a local stand-in server (stdlib, 127.0.0.1) answers ``/v1/completions`` after a fixed latency
per request with ~300-character choices, capping n at ``--server-n-cap`` and answering a fraction
``--rate-limit`` of requests with 429 + ``Retry-After: 0``: what a loaded vLLM or a rate-limited API
does, minus the GPU; it runs in its own process. The client side is codealign's real path (``eval_sampling.sample_problems``: the
bounded request pool, splitting, the per-request log, samples.jsonl), so samples/s and the client's CPU
seconds per 1,000 samples measure codealign's own cost. A second call on the same folder must request
nothing (resume).

    python benchmarks/served_sampling.py [--problems 20] [--n 1000] [--concurrency 32] [--latency-ms 50]
        [--server-n-cap 0] [--max-n-per-request 64] [--rate-limit 0.0]
    python benchmarks/served_sampling.py --api-base http://127.0.0.1:8000 --model NAME   # a real server

With a real server the figures are that server's throughput (the synthetic held-out tasks as prompts).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import random
import shutil
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from codealign.eval_sampling import sample_problems
from codealign.evaluate import EvalConfig
from codealign.loaders import load_problems


def stand_in(latency_s: float, n_cap: int, rate_limit: float, port_out, counter) -> None:
    """The stand-in server, in its own process (so the client's CPU time is the client's alone)."""
    lock = threading.Lock()
    rng = random.Random(0)

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as real servers

        def log_message(self, *args):
            pass

        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            with lock:
                counter.value += 1
                limited = rng.random() < rate_limit
            time.sleep(latency_s)
            if limited:
                return self._send(429, {"error": "slow down"}, {"Retry-After": "0"})
            n = min(body["n"], n_cap or body["n"])
            text = "```python\nprint(sum(map(int, input().split())))\n```\n" * 6
            choices = [{"index": i, "text": f"{text}# {body.get('seed')} {i}", "finish_reason": "stop"} for i in range(n)]
            self._send(200, {"choices": choices, "usage": {"prompt_tokens": 60, "completion_tokens": 80 * n, "total_tokens": 60 + 80 * n}})

        def _send(self, code, obj, headers=None):
            data = json.dumps(obj).encode()
            self.send_response(code)
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    port_out.put(httpd.server_address[1])
    httpd.serve_forever()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--problems", type=int, default=20)
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--max-n-per-request", type=int, default=64)
    ap.add_argument("--latency-ms", type=float, default=50.0)
    ap.add_argument("--server-n-cap", type=int, default=0, help="the stand-in returns at most this many choices (0: all)")
    ap.add_argument("--rate-limit", type=float, default=0.0, help="fraction of requests answered 429")
    ap.add_argument("--api-base", default=None, help="a real server instead of the stand-in")
    ap.add_argument("--model", default="stand-in")
    ap.add_argument("--max-new-tokens", type=int, default=64)
    args = ap.parse_args()

    server, counter = None, None
    api_base = args.api_base
    if api_base is None:
        ports, counter = mp.Queue(), mp.Value("q", 0)
        server = mp.Process(target=stand_in, args=(args.latency_ms / 1000, args.server_n_cap, args.rate_limit, ports, counter), daemon=True)
        server.start()
        api_base = f"http://127.0.0.1:{ports.get(timeout=30)}"
    problems = load_problems("synthetic", "test")[: args.problems]
    out = Path(tempfile.mkdtemp(prefix="served-sampling-"))
    cfg = EvalConfig(out=out, model=args.model, sampler="openai", api_base=api_base, n=args.n, concurrency=args.concurrency,
                     max_n_per_request=args.max_n_per_request, max_new_tokens=args.max_new_tokens, progress=False)
    try:
        cpu0, t0 = time.process_time(), time.perf_counter()
        completions, report = sample_problems(cfg, problems, args.n, out / "samples.jsonl")
        wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
        total = sum(map(len, completions.values()))
        asked = counter.value if counter else None
        again, report2 = sample_problems(cfg, problems, args.n, out / "samples.jsonl")
        print(json.dumps({
            "problems": len(problems), "n": args.n, "samples": total, "concurrency": args.concurrency,
            "max_n_per_request": args.max_n_per_request, "server_n_limit": report.n_limit,
            "latency_ms": None if args.api_base else args.latency_ms, "rate_limited_fraction": None if args.api_base else args.rate_limit,
            "requests_answered": report.requests, "requests_sent": asked, "retries": report.retries,
            "wall_s": round(wall, 2), "samples_per_s": round(total / wall, 1), "client_cpu_s_per_1000_samples": round(1000 * cpu / total, 3),
            "usage": report.usage, "resume_sampled": report2.sampled, "resume_requests_sent": (counter.value - asked) if counter else None,
        }, indent=2))
        assert report2.sampled == 0 and again == completions
    finally:
        if server is not None:
            server.terminate()
        shutil.rmtree(out, ignore_errors=True)


if __name__ == "__main__":
    main()
