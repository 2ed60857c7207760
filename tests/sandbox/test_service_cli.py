"""Starting the service from the command line: `codealign sandbox serve` and `python -m sandbox serve`."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[2]


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_codealign_sandbox_serve_starts_a_working_service():
    port = _port()
    cli = Path(sys.executable).with_name("codealign")
    proc = subprocess.Popen(
        [str(cli), "sandbox", "serve", "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, proc.stdout.read().decode()
            try:
                health = httpx.get(url + "/healthz", timeout=2)
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "service did not come up"
                time.sleep(0.1)
        assert health.status_code == 200 and health.json()["workers"] == 1
        body = {"code": "print(int(input()) * 2)", "tests": [{"input": "21", "output": "42"}]}
        assert httpx.post(url + "/v1/run", json=body, timeout=60).json()["verdict"] == "AC"
    finally:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=20) == 0  # a clean shutdown on Ctrl-C


def test_python_m_sandbox_rejects_bad_arguments_with_usage():
    bad = subprocess.run([sys.executable, "-m", "sandbox", "serve", "--workers", "-1"], cwd=REPO,
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "workers" in bad.stderr
    unknown = subprocess.run([sys.executable, "-m", "sandbox", "launch"], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert unknown.returncode == 2 and "serve" in unknown.stderr


def _readme_block(starts_with: str) -> str:
    """The README's shell command that starts with ``starts_with`` (continuation lines joined)."""
    text = (REPO / "README.md").read_text()
    lines = text[text.index(starts_with):].splitlines()
    cmd = []
    for line in lines:
        cmd.append(line.rstrip("\\").strip())
        if not line.endswith("\\"):
            break
    return " ".join(cmd)


def test_the_readmes_curl_example_works_as_written(spawn_server):
    url = spawn_server(workers=1)
    cmd = _readme_block("curl -s localhost:8080/v1/run").replace("localhost:8080", url.removeprefix("http://"))
    out = subprocess.run(["bash", "-c", cmd], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and '"verdict":"AC"' in out.stdout, (cmd, out.stdout, out.stderr)
