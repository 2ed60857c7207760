"""Fixtures for the service, client and Docker tests: real servers on 127.0.0.1 and a real container.

- ``spawn_server(*args)`` starts ``python -m sandbox serve`` on a free port (extra CLI args allowed) and
  returns its base URL once ``GET /healthz`` answers 200; every server is stopped at the test's end.
- ``server_url``: one shared 2-worker server for the whole session.
- ``docker_url``: the service's container (image ``$CODEALIGN_SANDBOX_IMAGE``, default
  ``codealign-sandbox:ci``), started through ``sandbox.docker_backend``. Without a Docker engine or
  the image these tests skip with the reason, unless ``CODEALIGN_REQUIRE_DOCKER=1`` (CI), where they fail.
- ``service_url``: parametrized over both, so the HTTP contract tests run against each.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DOCKER_IMAGE = os.environ.get("CODEALIGN_SANDBOX_IMAGE", "codealign-sandbox:ci")
REQUIRE_DOCKER = os.environ.get("CODEALIGN_REQUIRE_DOCKER") == "1"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_healthy(url: str, proc: subprocess.Popen, log_path: Path, timeout_s: float = 90.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"sandbox server exited with {proc.returncode}:\n{log_path.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url + "/healthz", timeout=2) as resp:
                if resp.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.1)
    raise TimeoutError(f"sandbox server at {url} not healthy after {timeout_s} s:\n{log_path.read_text()[-3000:]}")


class _Servers:
    def __init__(self, tmp_dir: Path):
        self.tmp_dir = tmp_dir
        self.procs: list[subprocess.Popen] = []

    def start(self, *args: str, workers: int = 2) -> str:
        port = free_port()
        log_path = self.tmp_dir / f"server-{port}.log"
        cmd = [sys.executable, "-m", "sandbox", "serve", "--host", "127.0.0.1", "--port", str(port)]
        cmd += ["--workers", str(workers), "--log-level", "warning", *args]
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self.procs.append(proc)
        url = f"http://127.0.0.1:{port}"
        _wait_healthy(url, proc, log_path)
        return url

    def stop_all(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


@pytest.fixture
def spawn_server(tmp_path):
    servers = _Servers(tmp_path)
    yield servers.start
    servers.stop_all()


@pytest.fixture(scope="session")
def server_url(tmp_path_factory):
    servers = _Servers(tmp_path_factory.mktemp("sandbox-server"))
    try:
        yield servers.start(workers=2)
    finally:
        servers.stop_all()


def _docker_unavailable_reason() -> str | None:
    try:
        import docker
    except ImportError:
        return "the docker SDK is not installed (pip install docker)"
    try:
        client = docker.from_env()
        client.ping()
    except Exception as e:  # no socket, no permission, daemon down
        return f"no Docker engine reachable ({type(e).__name__}: {e})"
    try:
        client.images.get(DOCKER_IMAGE)
    except Exception:
        return f"image {DOCKER_IMAGE} not built (bash .ci/docker.sh builds it; or set CODEALIGN_SANDBOX_IMAGE)"
    return None


def need_docker() -> None:
    """Skip (locally) or fail (CODEALIGN_REQUIRE_DOCKER=1) when Docker or the image is missing."""
    reason = _docker_unavailable_reason()
    if reason is not None:
        if REQUIRE_DOCKER:
            pytest.fail(f"CODEALIGN_REQUIRE_DOCKER=1 but {reason}")
        pytest.skip(reason)


@pytest.fixture
def docker_image() -> str:
    """The service image's name, once Docker and the image are known to be there."""
    need_docker()
    return DOCKER_IMAGE


@pytest.fixture(scope="session")
def docker_url():
    need_docker()
    from sandbox.docker_backend import DockerSandbox

    sandbox = DockerSandbox(DOCKER_IMAGE, workers=2)
    url = sandbox.start()
    try:
        yield url
    finally:
        sandbox.stop()


@pytest.fixture(params=["process", "docker"])
def service_url(request):
    """The same contract tests against a server process and against the container."""
    if request.param == "process":
        return request.getfixturevalue("server_url")
    return request.getfixturevalue("docker_url")
