"""sandbox.docker_backend against a real Docker engine and the service image (see conftest.py for skips).

The HTTP contract itself runs against the container in test_service_contract.py ([docker] cases);
these pin down the backend's own job: start, publish, wait for health, confine, stop and remove.
"""

from __future__ import annotations

import time

import httpx
import pytest

from sandbox.client import make_client
from sandbox.docker_backend import DockerSandbox, security_options
from sandbox.spec import RunRequest, TestCase


def test_security_options_are_the_documented_flags():
    assert security_options("privileged") == {"privileged": True, "cgroupns": "private"}
    assert security_options("none") == {}
    narrow = security_options("narrow")
    assert narrow["cap_add"] == ["SYS_ADMIN"] and narrow["cgroupns"] == "private"
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


# -- no silently weaker container (issue #9, classes 6 and 8) ------------------------------------------


def _start(image: str, *args: str, security: str = "narrow", **create: object):
    """Run the image with ``args`` appended to its `serve` command; (container, url or None if it exited)."""
    import docker

    engine = docker.from_env()
    c = engine.containers.run(image, ["--workers", "1", *args], detach=True, ports={"8080/tcp": ("127.0.0.1", None)},
                              **security_options(security), **create)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        c.reload()
        if c.status in ("exited", "dead"):
            return c, None
        ports = c.attrs["NetworkSettings"]["Ports"].get("8080/tcp")
        if ports:
            url = f"http://127.0.0.1:{ports[0]['HostPort']}"
            try:
                if httpx.get(url + "/healthz", timeout=2).status_code == 200:
                    return c, url
            except httpx.HTTPError:
                pass
        time.sleep(0.3)
    raise TimeoutError(c.logs(tail=40).decode(errors="replace"))


def test_isolate_auto_without_the_namespace_flags_refuses_too(docker_image):
    """'auto' once fell back to running programs as uid 0 on the bridge network; it must refuse like 'on'."""
    c, url = _start(docker_image, "--isolate", "auto", security="none")
    try:
        assert url is None
        assert "full isolation required" in c.logs().decode(errors="replace")
    finally:
        c.remove(force=True)


def test_without_a_memory_cgroup_the_service_refuses_to_start(docker_image):
    c, url = _start(docker_image, tmpfs={"/sys/fs/cgroup": ""})  # no memory hierarchy in sight
    try:
        assert url is None
        assert "memory limit of a test's process tree cannot be enforced" in c.logs().decode(errors="replace")
    finally:
        c.remove(force=True)


SPREAD = ("import os, time\nkids = []\nfor _ in range(4):\n    pid = os.fork()\n    if pid == 0:\n"
          "        x = b'x' * (150 * 2**20)\n        time.sleep(1)\n        os._exit(0)\n    kids.append(pid)\n"
          "for k in kids:\n    os.waitpid(k, 0)\nprint('done')\n")


@pytest.mark.parametrize(("args", "security", "unenforced"), [
    (("--no-memory-cgroup",), "narrow", ["memory_tree"]),
    (("--isolate", "off"), "none", ["filesystem", "memory_tree", "network", "pid_namespace", "tmp_size", "uid"]),
], ids=["no-memory-cgroup", "isolate-off"])
def test_weaker_modes_are_opt_in_loud_and_reported_in_every_result(docker_image, args, security, unenforced):
    c, url = _start(docker_image, *args, security=security, tmpfs={"/sys/fs/cgroup": ""})
    try:
        assert url is not None, c.logs(tail=40).decode(errors="replace")
        health = httpx.get(url + "/healthz", timeout=10).json()
        assert health["unenforced"] == unenforced
        assert "NOT ENFORCED" in c.logs().decode(errors="replace")
        body = httpx.post(url + "/v1/run", json={"code": SPREAD, "memory_limit_mb": 256, "time_limit_s": 3,
                                                 "tests": [{"input": "", "output": "done"}]}, timeout=60).json()
        assert body["unenforced"] == unenforced  # here the tree's 600 MB pass: the result says why
    finally:
        c.remove(force=True)


def test_the_image_reaps_orphans_of_docker_exec(docker_url, docker_service):
    """PID 1 is an init (tini): the child of a `docker exec` that exits is reaped, not left a zombie."""
    c = docker_service.container
    assert c.exec_run(["cat", "/proc/1/comm"]).output.decode().strip() == "tini"
    c.exec_run(["sh", "-c", "sleep 0.2 & exit 0"])
    time.sleep(1.5)
    code = ("import os\nz = [p for p in os.listdir('/proc') if p.isdigit() and "
            "open(f'/proc/{p}/stat').read().rsplit(')', 1)[1].split()[0] == 'Z']\nprint(len(z))")
    assert c.exec_run(["python3", "-c", code]).output.decode().strip() == "0"


def test_the_readmes_docker_run_works_as_written(docker_image):
    """The README's `docker run` (its flags are the `narrow` set) serves after CI's build, which also
    tags the image `codealign-sandbox`. Only the published port is changed (8080 may be taken)."""
    import subprocess

    from tests.sandbox.conftest import REPO, free_port

    text = (REPO / "README.md").read_text()
    block = text[text.index("docker run -d -p 8080:8080"):].split("```")[0]
    cmd = " ".join(line.rstrip("\\").strip() for line in block.strip().splitlines())
    assert "--cap-add SYS_ADMIN" in cmd and "--cgroupns private" in cmd and "seccomp=unconfined" in cmd
    port = free_port()
    cmd = cmd.replace("-p 8080:8080", f"-p 127.0.0.1:{port}:8080")
    if docker_image != "codealign-sandbox:ci":  # a developer's own build: run that one instead
        cmd = cmd.replace(" codealign-sandbox", f" {docker_image}")
    cid = subprocess.run(["bash", "-c", cmd], capture_output=True, text=True, timeout=60)
    assert cid.returncode == 0, cid.stderr
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.3)
        body = httpx.post(f"http://127.0.0.1:{port}/v1/run", json={"code": "print(2)", "tests": [{"input": "", "output": "2"}]},
                          timeout=60).json()
        assert body["verdict"] == "AC"
    finally:
        subprocess.run(["docker", "rm", "-f", cid.stdout.strip()], capture_output=True, timeout=60)
