#!/usr/bin/env bash
# CI set-up for the Docker tests (idempotent; run as root on a Debian machine without Docker Hub):
#   1. install docker.io and debootstrap, start dockerd if it is not running;
#   2. build a local base image from debootstrap (bookworm + python3-minimal) and `docker import` it;
#   3. download the service's Python libraries (and numpy, for the programs it judges) on the host (its pip knows how to reach an index)
#      into a wheelhouse and build the Dockerfile on that base image from a temporary context.
# Prints `export ...` lines for the tests on stdout (everything else goes to stderr), so use it as
#   eval "$(bash .ci/docker.sh)"
# Environment: SANDBOX_BASE_IMAGE (default codealign-base:bookworm), SANDBOX_IMAGE (default
# codealign-sandbox:ci, also tagged codealign-sandbox:latest for the README's commands),
# SANDBOX_INSTALL_JDK (default 1), DEBIAN_MIRROR.
set -euo pipefail
cd "$(dirname "$0")/.."
exec 3>&1 1>&2  # stdout is only for the export lines

BASE_IMAGE=${SANDBOX_BASE_IMAGE:-codealign-base:bookworm}
IMAGE=${SANDBOX_IMAGE:-codealign-sandbox:ci}
INSTALL_JDK=${SANDBOX_INSTALL_JDK:-1}
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
t0=$(date +%s)
step() { echo "[docker.sh +$(( $(date +%s) - t0 ))s] $*"; }

if ! command -v dockerd >/dev/null || ! command -v debootstrap >/dev/null; then
  step "installing docker.io and debootstrap"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q >/dev/null
  apt-get install -y -q --no-install-recommends docker.io debootstrap >/dev/null
fi

if ! docker info >/dev/null 2>&1; then
  step "starting dockerd"
  # fd 3 is the caller's $(...) pipe: dockerd must not hold it open, or the caller never sees EOF
  nohup dockerd >/var/log/codealign-dockerd.log 2>&1 3>&- &
  for _ in $(seq 1 60); do docker info >/dev/null 2>&1 && break; sleep 1; done
  docker info >/dev/null 2>&1 || { echo "dockerd did not start; see /var/log/codealign-dockerd.log" >&2; tail -20 /var/log/codealign-dockerd.log >&2; exit 1; }
fi

if ! docker image inspect "$BASE_IMAGE" >/dev/null 2>&1; then
  step "building base image $BASE_IMAGE with debootstrap"
  rootfs=$(mktemp -d /tmp/codealign-rootfs.XXXXXX)
  debootstrap --variant=minbase --include=python3-minimal bookworm "$rootfs" "$MIRROR" >/tmp/codealign-debootstrap.log 2>&1 \
    || { tail -20 /tmp/codealign-debootstrap.log >&2; exit 1; }
  tar -C "$rootfs" -c . | docker import - "$BASE_IMAGE" >/dev/null
  rm -rf "$rootfs"
fi

step "building $IMAGE on $BASE_IMAGE (JDK: $INSTALL_JDK)"
ctx=$(mktemp -d /tmp/codealign-docker-ctx.XXXXXX)
trap 'rm -rf "$ctx"' EXIT
cp Dockerfile .dockerignore "$ctx"/
cp -r sandbox "$ctx"/sandbox
find "$ctx"/sandbox -name __pycache__ -prune -exec rm -rf {} +
pyver=$(docker run --rm "$BASE_IMAGE" python3 -c 'import sys; print("%d.%d" % sys.version_info[:2])')
PIP=${PIP:-.venv/bin/pip}
command -v "$PIP" >/dev/null 2>&1 || PIP="python3 -m pip"
$PIP download -q --only-binary=:all: --python-version "$pyver" --implementation cp \
  --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 --platform any \
  -d "$ctx"/wheels "fastapi>=0.110" "uvicorn>=0.29" "pydantic>=2.5" "numpy>=1.26"
docker build -q --build-arg BASE_IMAGE="$BASE_IMAGE" --build-arg INSTALL_JDK="$INSTALL_JDK" -t "$IMAGE" "$ctx" >/dev/null
# The README's `docker run ... codealign-sandbox` names the image without a tag: give the default
# build that name too (only the default one: a build under another name leaves it alone).
if [ "$IMAGE" = "codealign-sandbox:ci" ]; then docker tag "$IMAGE" codealign-sandbox:latest; fi
step "done: $IMAGE"

echo "export CODEALIGN_SANDBOX_IMAGE=$IMAGE" >&3
echo "export CODEALIGN_REQUIRE_DOCKER=1" >&3
