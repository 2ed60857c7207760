"""Fixtures for the service, client and Docker tests: real servers on 127.0.0.1 and a real container.

- ``spawn_server(*args)`` starts ``python -m sandbox serve`` on a free port (extra CLI args allowed) and
  returns its base URL once ``GET /healthz`` answers 200; every server is stopped at the test's end.
- ``server_url``: one shared 2-worker server for the whole session.
- ``docker_url``: the service's container (image ``$CODEALIGN_SANDBOX_IMAGE``, default
  ``codealign-sandbox:ci``), started through ``sandbox.docker_backend``. Without a Docker engine or
  the image these tests skip with the reason, unless ``CODEALIGN_REQUIRE_DOCKER=1`` (CI), where they fail.
- ``service_url``: parametrized over both, so the HTTP contract tests run against each.
- ``target``: where the security and integrity suites judge their hostile programs, parametrized
  over ``local`` (an in-process LocalExecutor), ``http`` (``python -m sandbox serve`` on 127.0.0.1)
  and ``docker`` (the service's container); a test module narrows it with ``TARGETS = [...]``. Each
  target runs requests and inspects its host: the machine itself, or the inside of the container
  (through ``docker exec``). The service's environment holds ``CANARY_ENV`` in every target.
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

import httpx
import pytest

from sandbox.spec import RunRequest, RunResult

REPO = Path(__file__).resolve().parents[2]
CANARY_ENV = "CODEALIGN_SANDBOX_CANARY"
CANARY_VALUE = "canary-7f3a9c1e-service-secret"
SANDBOX_UID_BASE = 1_000_000  # sandbox.worker.UID_BASE
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

    def start(self, *args: str, workers: int = 2, env: dict[str, str] | None = None) -> str:
        port = free_port()
        log_path = self.tmp_dir / f"server-{port}.log"
        cmd = [sys.executable, "-m", "sandbox", "serve", "--host", "127.0.0.1", "--port", str(port)]
        cmd += ["--workers", str(workers), "--log-level", "warning", *args]
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                    env={**os.environ, **(env or {})})
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
def server(tmp_path_factory):
    """The shared 2-worker server process: ``(url, Popen)``. Its environment holds the canary."""
    servers = _Servers(tmp_path_factory.mktemp("sandbox-server"))
    try:
        url = servers.start(workers=2, env={CANARY_ENV: CANARY_VALUE})
        yield url, servers.procs[-1]
    finally:
        servers.stop_all()


@pytest.fixture(scope="session")
def server_url(server):
    return server[0]


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
def docker_service():
    """The service's container (a started ``DockerSandbox``, 2 workers, the canary in its environment)."""
    need_docker()
    from sandbox.docker_backend import DockerSandbox

    sandbox = DockerSandbox(DOCKER_IMAGE, workers=2, environment={CANARY_ENV: CANARY_VALUE})
    sandbox.start()
    try:
        yield sandbox
    finally:
        sandbox.stop()


@pytest.fixture(scope="session")
def docker_url(docker_service):
    return docker_service.url


@pytest.fixture(params=["process", "docker"])
def service_url(request):
    """The same contract tests against a server process and against the container."""
    if request.param == "process":
        return request.getfixturevalue("server_url")
    return request.getfixturevalue("docker_url")


# -- targets: where hostile programs are judged ------------------------------------------------------

_FIND_SANDBOX_PROCS = """
import os, sys
uids = set(sys.argv[1].split(",")) if len(sys.argv) > 1 and sys.argv[1] else None
for pid in os.listdir("/proc"):
    if pid.isdigit():
        try:
            uid = next(l.split()[1] for l in open(f"/proc/{pid}/status") if l.startswith("Uid:"))
        except (OSError, StopIteration):
            continue
        if (uid in uids) if uids is not None else int(uid) >= %d:
            print(pid)
""" % SANDBOX_UID_BASE


class Target:
    """Judges requests somewhere and looks at that somewhere's host (files, processes, health)."""

    name = ""

    def run(self, req: RunRequest) -> RunResult:
        raise NotImplementedError

    def post(self, path: str, body) -> httpx.Response:
        """The raw HTTP answer (HTTP targets only)."""
        raise NotImplementedError

    def host(self, code: str, *args: str) -> str:
        """Run ``python3 -c code args`` on the target's host (as the service's user); its stdout."""
        out = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        return out.stdout

    def sandbox_processes(self) -> list[int]:
        """Host pids running as one of this target's sandbox uids."""
        return [int(p) for p in self.host(_FIND_SANDBOX_PROCS, ",".join(self.uids())).split()]

    def uids(self) -> list[str]:
        return []

    def health(self) -> dict:
        raise NotImplementedError


class LocalTarget(Target):
    name = "local"

    def __init__(self, ex):
        self.ex = ex

    def run(self, req):
        return self.ex.run(req)

    def uids(self):
        return [str(w["uid"]) for w in self.ex.worker_info() if w.get("uid") is not None]

    def health(self):
        return self.ex.health()


class HttpTarget(Target):
    name = "http"

    def __init__(self, url: str, service_pid: int | None = None):
        self.url, self.service_pid = url, service_pid

    def post(self, path, body):
        return httpx.post(self.url + path, json=body, timeout=300)

    def run(self, req):
        resp = self.post("/v1/run", req.model_dump(mode="json"))
        assert resp.status_code == 200, resp.text
        return RunResult.model_validate(resp.json())

    def uids(self):  # the workers are the service's children: uid = UID_BASE + worker pid
        kids = self.host("import sys, os\nprint(open(f'/proc/{sys.argv[1]}/task/{sys.argv[1]}/children').read())",
                         str(self.service_pid)).split()
        return [str(SANDBOX_UID_BASE + int(k)) for k in kids]

    def health(self):
        return httpx.get(self.url + "/healthz", timeout=30).json()


class DockerTarget(HttpTarget):
    name = "docker"

    def __init__(self, sandbox):
        super().__init__(sandbox.url)
        self.container = sandbox.container

    def host(self, code, *args):
        code_, out = self.container.exec_run(["python3", "-c", code, *args])
        text = out.decode(errors="replace")
        assert code_ == 0, text
        return text

    def uids(self):
        return []  # everything with a sandbox uid in the container is ours


def pytest_generate_tests(metafunc):
    if "target" in metafunc.fixturenames:
        metafunc.parametrize("target", getattr(metafunc.module, "TARGETS", ["local", "http", "docker"]), indirect=True)


@pytest.fixture(scope="session")
def local_executor():
    """One 2-worker LocalExecutor (no result cache) for the suites, started with the canary set."""
    from sandbox.local import LocalExecutor

    if os.geteuid() != 0:
        pytest.skip("full isolation needs root (namespaces, uid drop, memory cgroup)")
    os.environ[CANARY_ENV] = CANARY_VALUE
    try:
        with LocalExecutor(workers=2, cache_size=0) as ex:
            yield ex
    finally:
        os.environ.pop(CANARY_ENV, None)


@pytest.fixture
def target(request) -> Target:
    """Parametrized by pytest_generate_tests over the module's TARGETS (default: all three)."""
    if request.param == "local":
        return LocalTarget(request.getfixturevalue("local_executor"))
    if request.param == "http":
        url, proc = request.getfixturevalue("server")
        return HttpTarget(url, proc.pid)
    return DockerTarget(request.getfixturevalue("docker_service"))
