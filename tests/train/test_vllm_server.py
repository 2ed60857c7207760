"""Server mode: sampling from a vLLM server and pushing the policy's weights to it after each update.

vLLM cannot run here (no GPU), so the server is a stand-in, a real HTTP server on 127.0.0.1 with the
endpoints ``vllm serve`` has in development mode (``VLLM_SERVER_DEV_MODE=1``) in the supported versions:
``GET /version``, ``POST /v1/completions`` (with ``return_token_ids``), ``POST /collective_rpc`` (here:
``reload_weights`` reads the safetensors checkpoint at ``weights_path``, as the worker's loader does) and
``POST /reset_prefix_cache``. The tests check what the trainer sends and in which order; they do not
show that a real server behaves this way.
"""

import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import torch

from codealign.samplers.base import SamplingParams
from codealign.train.config import SamplingConfig
from codealign.train.rollouts import PolicySampler, build_engine

sys.path.insert(0, str(Path(__file__).parent))
from _helpers import tiny_lm  # noqa: E402


class StandInServer:
    def __init__(self, version="0.30.0", dev_mode=True):
        self.version, self.dev_mode = version, dev_mode
        self.log, self.completions, self.loaded = [], [], []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def answer(self, code, body):
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                self.answer(200, {"version": server.version}) if self.path == "/version" else self.answer(404, {})

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"null")
                server.log.append(self.path)
                if self.path == "/v1/completions":
                    server.completions.append(body)
                    choices = [{"index": i, "text": f"c{i}", "token_ids": [7, i], "finish_reason": "stop"} for i in range(body["n"])]
                    return self.answer(200, {"choices": choices})
                if not server.dev_mode:
                    return self.answer(404, {"detail": "Not Found"})
                if self.path == "/collective_rpc":
                    from safetensors.torch import load_file

                    assert body["method"] == "reload_weights" and body["kwargs"]["is_checkpoint_format"] is True
                    server.loaded.append((body["kwargs"]["weights_path"], load_file(Path(body["kwargs"]["weights_path"]) / "model.safetensors")))
                    return self.answer(200, {"results": [None]})
                if self.path == "/reset_prefix_cache":
                    return self.answer(200, {})
                self.answer(404, {})

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    s = StandInServer()
    yield s
    s.close()


class OneProcess:
    """What build_engine reads from accelerate's Accelerator, for one process."""

    is_main_process, process_index, local_process_index, num_processes = True, 0, 0, 1

    def __init__(self):
        self.barriers = 0

    def wait_for_everyone(self):
        self.barriers += 1


def server_config(url, weights_dir):
    return SamplingConfig(sampler="vllm", vllm={"mode": "server", "server_url": url, "weights_dir": str(weights_dir)})


def test_samples_come_from_the_server_with_their_token_ids(server, tmp_path):
    engine = build_engine(server_config(server.url, tmp_path), "Qwen/x", OneProcess(), seed=0)
    out = PolicySampler(server_config(server.url, tmp_path), None, engine).sample(None, ["p"], 2, SamplingParams(max_new_tokens=5, seed=3))
    assert [[c.token_ids for c in row] for row in out] == [[[7, 0], [7, 1]]]
    body = server.completions[0]
    assert body["model"] == "Qwen/x" and body["return_token_ids"] is True and body["n"] == 2 and body["max_tokens"] == 5


def test_each_push_writes_a_checkpoint_the_server_reloads_then_resets_its_prefix_cache(server, tmp_path):
    acc = OneProcess()
    cfg = server_config(server.url, tmp_path / "weights")
    sampler = PolicySampler(cfg, None, build_engine(cfg, "m", acc, seed=0))
    model = tiny_lm()
    sampler.sync(model)
    with torch.no_grad():
        model.lm_head.weight.add_(1.0)  # an update
    sampler.sync(model)
    assert server.log == ["/collective_rpc", "/reset_prefix_cache"] * 2 and acc.barriers == 2
    (first_dir, _), (second_dir, pushed) = server.loaded
    assert first_dir != second_dir and not Path(first_dir).exists() and Path(second_dir).exists()  # the old one is gone
    expected = model.state_dict()
    assert set(pushed) == set(expected) and {t.dtype for t in pushed.values()} == {torch.bfloat16}
    assert all(torch.equal(pushed[k], v.to(torch.bfloat16)) for k, v in expected.items())


def test_other_processes_wait_at_the_barrier_without_pushing(server, tmp_path):
    acc = OneProcess()
    acc.is_main_process = False
    cfg = server_config(server.url, tmp_path)
    PolicySampler(cfg, None, build_engine(cfg, "m", acc, seed=0)).sync(tiny_lm())
    assert server.log == [] and acc.barriers == 1 and not any(tmp_path.iterdir())


def test_a_server_without_dev_endpoints_or_of_another_version_is_a_clear_error(tmp_path):
    from codealign.samplers.vllm_server import VLLMServerSampler

    plain = StandInServer(dev_mode=False)
    old = StandInServer(version="0.20.0")
    try:
        engine = VLLMServerSampler(plain.url, "m", tmp_path)
        with pytest.raises(RuntimeError, match="VLLM_SERVER_DEV_MODE=1"):
            engine.load_weights(tiny_lm().state_dict().items())
        with pytest.raises(RuntimeError, match="vLLM 0.20.0 is not supported"):
            VLLMServerSampler(old.url, "m", tmp_path)
    finally:
        plain.close()
        old.close()
    with pytest.raises(ConnectionError, match="no vLLM server"):
        VLLMServerSampler(plain.url, "m", tmp_path, timeout_s=2)


def test_server_mode_needs_its_address_and_a_weights_directory():
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="server_url and sampling.vllm.weights_dir"):
        SamplingConfig(sampler="vllm", vllm={"mode": "server", "server_url": "http://h:8000"})
