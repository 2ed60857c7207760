"""sandbox.docker_backend against a real Docker engine and the service image (see conftest.py for skips).

The HTTP contract itself runs against the container in test_service_contract.py ([docker] cases);
these pin down the backend's own job: start, publish, wait for health, confine, stop and remove.
"""

from __future__ import annotations

import httpx
import pytest

from sandbox.client import make_client
from sandbox.docker_backend import DockerSandbox, security_options
from sandbox.spec import RunRequest, TestCase


def test_security_options_are_the_documented_flags():
    assert security_options("privileged") == {"privileged": True}
    assert security_options("none") == {}
    narrow = security_options("narrow")
    assert narrow["cap_add"] == ["SYS_ADMIN"]
    assert set(narrow["security_opt"]) == {"seccomp=unconfined", "apparmor=unconfined"}


def test_workers_follow_the_cpu_quota_unless_set():
    assert DockerSandbox("x", cpus=1.5).workers() == 1
    assert DockerSandbox("x", cpus=3).workers() == 3
    assert DockerSandbox("x", cpus=3, workers=2).workers() == 2
    assert DockerSandbox("x").workers() == 0


def test_docker_sandbox_starts_serves_and_is_removed(docker_image):
    import docker

    sandbox = DockerSandbox(docker_image, cpus=1.0, memory_mb=1024)  # one worker for one CPU
    with sandbox as url:
        container_id = sandbox.container.id
        assert url.startswith("http://127.0.0.1:")
        assert httpx.get(url + "/healthz", timeout=10).json()["workers"] == 1
        with make_client(url) as client:
            result = client.run(RunRequest(code="print(input()[::-1])", tests=[TestCase(input="abc", output="cba")]))
        assert result.verdict.value == "AC"
    with pytest.raises(docker.errors.NotFound):
        docker.from_env().containers.get(container_id)


def test_programs_in_the_container_have_no_network(docker_url):
    """The container's own network is reachable from the service, never from the programs it judges."""
    code = (
        "import socket\n"
        "s = socket.socket()\n"
        "s.settimeout(2)\n"
        "try:\n"
        "    s.connect(('127.0.0.1', 8080))\n"
        "    print('connected')\n"
        "except OSError as e:\n"
        "    print('blocked')\n"
    )
    body = httpx.post(docker_url + "/v1/run", json={"code": code, "tests": [{"input": "", "output": "blocked"}]}, timeout=60)
    assert body.json()["verdict"] == "AC", body.text


def test_a_missing_image_fails_with_a_clear_error(docker_image):
    import docker

    with pytest.raises(docker.errors.ImageNotFound, match="docker build -t codealign-no-such-image:nope"):
        DockerSandbox("codealign-no-such-image:nope").start()


def test_without_the_namespace_flags_the_image_refuses_to_start(docker_image):
    """Docker's default seccomp profile forbids unshare(2): the service must not judge unconfined."""
    import docker

    sandbox = DockerSandbox(docker_image, workers=1, security="none", startup_timeout_s=60)
    with pytest.raises(RuntimeError, match="exited during start-up") as info:
        sandbox.start()
    assert "isolation required" in str(info.value) or "--cap-add SYS_ADMIN" in str(info.value)
    assert sandbox.container is None  # removed
    leftovers = docker.from_env().containers.list(all=True, filters={"ancestor": docker_image})
    assert not [c for c in leftovers if c.status != "running"]


def test_make_client_docker_scheme_starts_and_removes_its_container(docker_image):
    import docker

    engine = docker.from_env()
    before = {c.id for c in engine.containers.list(all=True)}
    with make_client("docker://" + docker_image, workers=1) as client:
        ids = {c.id for c in engine.containers.list(all=True)} - before
        assert len(ids) == 1  # its own container
        reqs = [RunRequest(code=f"print({k})", tests=[TestCase(input="", output=str(k))]) for k in range(3)]
        assert [r.verdict.value for r in client.run_many(reqs)] == ["AC"] * 3
    assert not ({c.id for c in engine.containers.list(all=True)} & ids)
