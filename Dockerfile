# The sandbox service image: python3, g++ and (by default) a JDK, serving `python -m sandbox serve` on :8080.
#
#   docker build -t codealign-sandbox .                       # public base image (python:3.11-slim)
#   docker build --build-arg BASE_IMAGE=my/debian:bookworm .  # any Debian/Ubuntu image with python3 >= 3.10
#   docker run -d -p 8080:8080 --cap-add SYS_ADMIN --security-opt seccomp=unconfined \
#       --security-opt apparmor=unconfined --cgroupns private codealign-sandbox   # why: docs/sandbox_service.md
#
# Only the standalone `sandbox/` package goes in (it never imports codealign), with the three libraries
# it needs (fastapi, uvicorn, pydantic) and numpy for the programs it judges (they may import it, as
# under APPS's harness): `pip install .` would pull torch and the trainer's stack.
ARG BASE_IMAGE=python:3.11-slim
FROM ${BASE_IMAGE}

# INSTALL_JDK=0 leaves Java out (smaller, faster build); the service then answers Java requests with a
# clear "language unavailable" error.
ARG INSTALL_JDK=1
# Index for the three Python libraries (e.g. a local mirror); empty means pip's default.
ARG PIP_INDEX_URL=

ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1

# Optional wheelhouse: a `wheels/` folder in the build context (CI fills one where the build cannot
# reach an index) is used instead of the index. The glob copies nothing when the folder is absent;
# sandbox/__init__.py is listed only because COPY needs at least one source that exists.
COPY sandbox/__init__.py wheel[s] /tmp/wheels/

# A python:slim image has a complete python3 with ensurepip; a bare Debian image (e.g. debootstrap's
# python3-minimal) lacks most of the standard library and venv, which python3-venv brings in.
RUN set -eux; \
    pkgs="g++ ca-certificates tini"; \
    if ! python3 -c "import ensurepip, venv, http.client, sqlite3" >/dev/null 2>&1; then pkgs="$pkgs python3-venv"; fi; \
    if [ "$INSTALL_JDK" = "1" ]; then pkgs="$pkgs default-jdk-headless"; fi; \
    apt-get update; \
    apt-get install -y --no-install-recommends $pkgs; \
    rm -rf /var/lib/apt/lists/*; \
    python3 -m venv /opt/sandbox-venv; \
    if ls /tmp/wheels/*.whl >/dev/null 2>&1; then src="--no-index --find-links /tmp/wheels"; \
    else src="${PIP_INDEX_URL:+--index-url $PIP_INDEX_URL}"; fi; \
    /opt/sandbox-venv/bin/pip install $src "fastapi>=0.110" "uvicorn>=0.29" "pydantic>=2.5" "numpy>=1.26"; \
    rm -rf /tmp/wheels

COPY sandbox /opt/codealign/sandbox
ENV PATH=/opt/sandbox-venv/bin:$PATH \
    PYTHONPATH=/opt/codealign
WORKDIR /opt/codealign
# The class-data archive every Java test's JVM maps (sandbox/jvm_archive.py; docs/sandbox_engine.md,
# "Java start"), built once here instead of at the first Java request of every container.
RUN if [ "$INSTALL_JDK" = "1" ]; then \
      python -c "from sandbox import languages; assert languages.java_archive(None, wait=True), 'no JVM archive'"; fi

EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s \
    CMD python -c "import urllib.request,sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=2).status != 200)"
# The service runs as root so that it can build each worker's namespaces and memory cgroup and drop
# programs to an unprivileged uid; the programs themselves never run as root.
# --isolate on: without the namespaces or the memory cgroup (see the docker run flags above) it refuses
# to start rather than judge hostile code with weaker limits. Arguments after the image name are
# appended (e.g. --workers 4).
# tini is PID 1 (as a subreaper, so `docker run --init` works too): it reaps every orphan, e.g. the
# children of a killed `docker exec`, which the service (a Python process) would leave as zombies.
ENTRYPOINT ["tini", "-s", "--", "python", "-m", "sandbox", "serve", "--host", "0.0.0.0", "--port", "8080", "--isolate", "on"]
