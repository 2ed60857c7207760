"""Start and stop the sandbox service's container for a run, with the docker SDK (``pip install docker``).

    with DockerSandbox("codealign-sandbox") as url:       # waits until GET /healthz answers 200
        with make_client(url) as client:
            client.run_many(requests)

The container needs to create namespaces, mounts and memory cgroups for its workers, which Docker's
defaults forbid: by default it gets CAP_SYS_ADMIN with seccomp and AppArmor unconfined, in a private
cgroup namespace (the narrowest set that works; ``security="privileged"`` is the blunt alternative).
The flags and why are in docs/sandbox_service.md.
"""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from typing import Any, Literal

from pydantic import BaseModel, Field

CONTAINER_PORT = 8080


class DockerSandboxSettings(BaseModel):
    """How the container is started. Times are seconds."""

    image: str = Field(default="codealign-sandbox:latest", description="The image built from the repo's Dockerfile.")
    host: str = Field(default="127.0.0.1", description="Host address the service port is published on.")
    port: int | None = Field(default=None, description="Host port; None picks a free one.")
    workers: int = Field(
        default=0, ge=0, description="Service workers; 0 = one per CPU of `cpus` if set, else one per visible core."
    )
    cpus: float | None = Field(default=None, gt=0, description="CPU quota for the container (docker --cpus).")
    memory_mb: int | None = Field(default=None, gt=0, description="Memory cap for the container, MiB.")
    security: Literal["narrow", "privileged", "none"] = Field(
        default="narrow",
        description="narrow: CAP_SYS_ADMIN with seccomp and AppArmor unconfined, private cgroup namespace; "
        "privileged: --privileged; none: Docker's defaults, under which the image refuses to start (it needs "
        "namespaces).",
    )
    startup_timeout_s: float = Field(default=120.0, gt=0, description="Longest wait for /healthz.")
    environment: dict[str, str] = Field(default_factory=dict, description="Extra environment of the service.")
    command: list[str] = Field(
        default_factory=list, description="Extra `python -m sandbox serve` arguments (after --workers)."
    )
    name: str | None = Field(default=None, description="Container name; None lets Docker pick.")
    pull: bool = Field(default=False, description="Pull the image when it is not on the engine.")


def security_options(security: str) -> dict[str, Any]:
    """docker SDK ``containers.create`` keywords that let the service build its namespaces."""
    if security == "privileged":
        return {"privileged": True, "cgroupns": "private"}
    if security == "none":
        return {}
    return {"cap_add": ["SYS_ADMIN"], "security_opt": ["seccomp=unconfined", "apparmor=unconfined"],
            "cgroupns": "private"}


class DockerSandbox:
    """One service container: :meth:`start` returns its URL, :meth:`stop` removes it."""

    def __init__(self, image: str | None = None, settings: DockerSandboxSettings | None = None, **overrides: Any):
        base = settings or DockerSandboxSettings()
        updates = {**overrides, **({"image": image} if image else {})}
        self.settings = DockerSandboxSettings(**{**base.model_dump(), **updates}) if updates else base
        self.container = None
        self.url: str | None = None

    def start(self) -> str:
        """Run the container, wait for GET /healthz = 200 and return the service's base URL."""
        import docker

        s = self.settings
        client = docker.from_env()
        try:
            client.images.get(s.image)
        except docker.errors.ImageNotFound:
            if not s.pull:
                raise docker.errors.ImageNotFound(
                    f"image {s.image!r} is not on this Docker engine: build it with `docker build -t {s.image} .` "
                    "in the codealign repo (or set pull=True to pull it)"
                ) from None
            client.images.pull(s.image)
        kwargs: dict[str, Any] = {
            "ports": {f"{CONTAINER_PORT}/tcp": (s.host, s.port)},
            "command": ["--workers", str(self.workers()), *s.command],  # appended to the image's `serve` entrypoint
            "name": s.name,
            "environment": s.environment or None,
            **security_options(s.security),
        }
        if s.cpus is not None:
            kwargs["nano_cpus"] = int(s.cpus * 1e9)
        if s.memory_mb is not None:
            kwargs["mem_limit"] = f"{s.memory_mb}m"
        self.container = client.containers.create(s.image, **kwargs)
        try:
            self.container.start()
            self.container.reload()
            binding = self.container.attrs["NetworkSettings"]["Ports"][f"{CONTAINER_PORT}/tcp"][0]
            self.url = f"http://{s.host}:{binding['HostPort']}"
            self._wait_healthy()
        except BaseException:
            self.stop()
            raise
        return self.url

    def workers(self) -> int:
        """Service workers: as configured, else one per CPU of the quota (the container sees every core,
        and more workers than CPUs would make programs share them), else 0 (one per visible core)."""
        s = self.settings
        if s.workers:
            return s.workers
        return max(1, int(s.cpus)) if s.cpus is not None else 0

    def _wait_healthy(self) -> None:
        deadline = time.monotonic() + self.settings.startup_timeout_s
        while True:
            try:
                with urllib.request.urlopen(self.url + "/healthz", timeout=2) as resp:
                    if resp.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, OSError):
                pass
            self.container.reload()
            if self.container.status in ("exited", "dead"):
                logs = self.container.logs(tail=40).decode(errors="replace")
                raise RuntimeError(f"sandbox container exited during start-up; its last output:\n{logs}")
            if time.monotonic() > deadline:
                logs = self.container.logs(tail=40).decode(errors="replace")
                raise TimeoutError(
                    f"sandbox container not healthy after {self.settings.startup_timeout_s:g} s; its last output:\n{logs}"
                )
            time.sleep(0.25)

    def logs(self, tail: int = 100) -> str:
        return "" if self.container is None else self.container.logs(tail=tail).decode(errors="replace")

    def stop(self) -> None:
        """Stop and remove the container (idempotent)."""
        if self.container is None:
            return
        container, self.container = self.container, None
        try:
            container.stop(timeout=5)
        except Exception:  # already gone: removal below settles it
            pass
        try:
            container.remove(force=True)
        except Exception:
            pass

    def __enter__(self) -> str:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
