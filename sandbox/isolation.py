"""Linux isolation policy: the worker's namespaces, the minimal root, the memory cgroup, clean-up.

Every function here runs inside a sandbox worker's manager (never in the service process): it calls
``enter_worker_namespaces`` and ``build_root`` once at start and ``fresh_tmpfs`` after each test.
The raw primitives (clone, prctl, mount, rlimits) and what a test's child does with them are in
``sandbox/syscalls.py``, which the zygote imports without this module.

Layers and what each one stops (see docs/sandbox_engine.md):
- network namespace (per worker, empty: only a down loopback): no socket reaches the host;
- mount namespace (per worker) + chroot into a minimal read-only root: host files are invisible,
  nothing of the host is writable; the only writable place is the test's own tmpfs directory;
- PID namespace (per test, made by the clone): the program is PID 1 of a namespace that
  the kernel tears down, killing every process in it, when the program exits or is killed;
- an unprivileged uid/gid of its own (per worker), no supplementary groups, no_new_privs;
- rlimits on CPU seconds, address space, processes, file size and open files.
"""

from __future__ import annotations

import errno
import os
import shutil
import stat
from dataclasses import dataclass

from sandbox.syscalls import (CLONE_NEWIPC, CLONE_NEWNET, CLONE_NEWNS, CLONE_NEWUTS, MS_BIND, MS_NODEV, MS_NOEXEC,
                              MS_NOSUID, MS_PRIVATE, MS_RDONLY, MS_REC, MS_REMOUNT, mount, umount_detached, unshare)

# Where things appear inside the sandbox root.
INNER_TMP = "/tmp"  # read-only; holds only the work dir
INNER_WORK = "/tmp/w"  # the program's work dir (HOME, TMPDIR): a fresh tmpfs per test
INNER_BIN = "/sbx/bin"
INNER_PY = "/sbx/py"  # third-party Python packages programs may import (numpy), read-only
TMP_OPTIONS = "nr_inodes=65536,mode=700"  # the per-test work dir (plus size=<tmp_mb>m, uid and gid of the sandbox user)
SHM_OPTIONS = "size=64m,nr_inodes=4096,mode=1777"  # the per-test /dev/shm


def fresh_tmpfs(path: bytes, options: bytes) -> None:
    """Replace whatever is mounted at ``path`` by a new, empty tmpfs (``options``: its mount data).

    The old one is detached at once and freed by the kernel when its last user is gone: nothing a
    program left in it (deep trees, symlinks, fifos, sockets, files or directories it chmod-ed to
    000) can make this fail or survive it, and it takes the same time whatever the tree holds.
    Arguments are bytes: this runs after every test."""
    umount_detached(path)
    mount(b"tmpfs", path, b"tmpfs", MS_NOSUID | MS_NODEV, options)


def enter_worker_namespaces() -> None:
    """Give the calling worker its own mount, network, IPC and UTS namespaces (needs root)."""
    unshare(CLONE_NEWNS | CLONE_NEWNET | CLONE_NEWIPC | CLONE_NEWUTS)
    # Our mounts must never propagate back to the host.
    mount(None, "/", None, MS_REC | MS_PRIVATE)


def _bind_ro(src: str, dst: str) -> None:
    mount(src, dst, None, MS_BIND | MS_REC)
    mount(None, dst, None, MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV)


@dataclass
class Root:
    path: str  # the root directory, as the worker (outside the chroot) sees it
    work: str  # the work dir's mount point, outside view (INNER_WORK inside)
    shm: str  # /dev/shm, outside view


# /etc entries the toolchains need (dynamic loader cache, java's config); nothing else of /etc.
_ETC_KEEP = ("ld.so.cache", "ld.so.conf", "ld.so.conf.d", "passwd", "group", "nsswitch.conf",
             "localtime", "alternatives", "java-17-openjdk", "java-21-openjdk", "mime.types")
_DEVICES = ("null", "zero", "random", "urandom")


def build_root(base: str, bin_cache: str, packages: dict[str, str] | None = None) -> Root:
    """Build the minimal root under ``base`` (inside the worker's private mount namespace).

    The root is a tmpfs holding: /usr (read-only bind; /bin, /lib, ... as on the host), the
    interpreter's prefix at its own path (read-only), a few /etc files, /dev/{null,zero,random,
    urandom}, the compiled-binary cache at /sbx/bin (read-only), the third-party packages
    ``packages`` (name -> host directory, e.g. numpy's) under /sbx/py (read-only), and the mount points
    of the writable places the worker mounts per test: the work dir /tmp/w and /dev/shm. No /proc, /sys,
    /home, /root contents, /work: the service's files and processes are not there.
    """
    import sys

    os.makedirs(base, exist_ok=True)
    mount("tmpfs", base, "tmpfs", MS_NOSUID | MS_NODEV, "size=16m,mode=755")
    r = lambda p: os.path.join(base, p.lstrip("/"))  # noqa: E731
    os.makedirs(r("/usr"))
    _bind_ro("/usr", r("/usr"))
    for top in ("bin", "sbin", "lib", "lib32", "lib64", "libx32"):
        host = "/" + top
        if os.path.islink(host):
            os.symlink(os.readlink(host), r(host))
        elif os.path.isdir(host):
            os.makedirs(r(host))
            _bind_ro(host, r(host))
    prefixes = {os.path.realpath(sys.base_prefix)}
    for prefix in sorted(prefixes):
        if prefix.startswith("/usr/") or prefix == "/usr":
            continue
        os.makedirs(r(prefix), exist_ok=True)
        _bind_ro(prefix, r(prefix))
    # Intermediate directories (e.g. /root of /root/.pyenv/...) are ours, traversable by anyone.
    for dirpath, dirnames, _ in os.walk(base):
        os.chmod(dirpath, 0o755)
        dirnames[:] = [d for d in dirnames if not os.path.ismount(os.path.join(dirpath, d))]
    os.makedirs(r("/etc"))
    for name in _ETC_KEEP:
        src = os.path.join("/etc", name)
        if os.path.islink(src):
            os.symlink(os.readlink(src), r(src))
        elif os.path.isdir(src):
            shutil.copytree(src, r(src), symlinks=True)
        elif os.path.isfile(src):
            shutil.copy2(src, r(src))
    os.makedirs(r("/dev"))
    for dev in _DEVICES:
        open(r("/dev/" + dev), "w").close()
        mount("/dev/" + dev, r("/dev/" + dev), None, MS_BIND)
    os.symlink("/proc/self/fd", r("/dev/fd"))
    os.makedirs(r("/dev/shm"))  # POSIX semaphores/shared memory (multiprocessing): a fresh tmpfs per test
    os.makedirs(r("/proc"))  # stays empty, except for programs that need their own /proc (the JVM)
    os.makedirs(r(INNER_BIN))
    _bind_ro(bin_cache, r(INNER_BIN))
    os.makedirs(r(INNER_PY))
    for name, src in sorted((packages or {}).items()):
        os.makedirs(r(f"{INNER_PY}/{name}"))
        _bind_ro(src, r(f"{INNER_PY}/{name}"))
    os.makedirs(r(INNER_WORK))
    # The root itself becomes read-only; only the work dir and /dev/shm (tmpfs of their own) are writable.
    mount(None, base, None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV)
    return Root(path=base, work=r(INNER_WORK), shm=r("/dev/shm"))


class MemoryCgroup:
    """A cgroup-v1 memory group per worker: caps the memory of a test's whole process tree (rlimits
    are per process, so a fork bomb of 64 processes x RLIMIT_AS would otherwise add up), measures
    its peak and says whether the kernel's OOM killer fired.

    Where the group lives is read from /proc/self/cgroup and /proc/self/mountinfo, so it is found
    whether the memory hierarchy is mounted at its root (a host), at the container's own group
    (Docker with the host's cgroup namespace) or in a private cgroup namespace. Docker mounts it
    read-only; a worker (root with CAP_SYS_ADMIN, in its own mount namespace) remounts its view
    read-write, which changes nothing outside that namespace."""

    def __init__(self, path: str) -> None:
        self.path = path
        # Kept open: a test then costs three system calls on them, not three opens and closes.
        self._limit = os.open(os.path.join(path, "memory.limit_in_bytes"), os.O_WRONLY | os.O_CLOEXEC)
        self._max_usage = os.open(os.path.join(path, "memory.max_usage_in_bytes"), os.O_RDWR | os.O_CLOEXEC)
        self._oom = os.open(os.path.join(path, "memory.oom_control"), os.O_RDONLY | os.O_CLOEXEC)
        self._limit_mb = -1

    @staticmethod
    def _locate() -> tuple[str, str, str]:
        """(mount point, the mount's root in the hierarchy, this process's group) of the memory
        controller; OSError when there is no cgroup-v1 memory hierarchy."""
        try:
            with open("/proc/self/cgroup") as f:
                own = next(line.split(":", 2)[2].strip() for line in f if line.split(":")[1] == "memory")
        except (OSError, StopIteration, IndexError):
            raise OSError(errno.ENOENT, "no cgroup-v1 memory controller (a cgroup-v2-only host?)") from None
        with open("/proc/self/mountinfo") as f:
            for line in f:
                left, _, right = line.partition(" - ")
                fields, extra = left.split(), right.split()
                if len(fields) >= 5 and len(extra) >= 3 and extra[0] == "cgroup" and "memory" in extra[2].split(","):
                    root, point = fields[3], fields[4]
                    if own == root or own.startswith(root.rstrip("/") + "/"):
                        return point, root, own
        raise OSError(errno.ENOENT, f"the memory cgroup {own} is not under any mounted memory hierarchy")

    @classmethod
    def path_of(cls, name: str) -> str | None:
        """Where the group ``name`` lives: under this process's own memory cgroup (None: no cgroup v1)."""
        try:
            point, root, own = cls._locate()
        except OSError:
            return None
        return os.path.join(point, own[len(root):].lstrip("/"), name)

    @classmethod
    def create(cls, name: str) -> "MemoryCgroup":
        """Make (or reuse) the group ``name``; OSError with the reason when that is impossible."""
        point, root, own = cls._locate()
        path = os.path.join(point, own[len(root):].lstrip("/"), name)
        if not os.access(point, os.W_OK):  # Docker's read-only mount: remount our view of it
            mount(None, point, None, MS_REMOUNT | MS_BIND | MS_NOSUID | MS_NODEV | MS_NOEXEC)
        os.makedirs(path, exist_ok=True)
        cg = cls(path)
        cg._write("memory.swappiness", "0")
        return cg

    def _write(self, name: str, value: str) -> None:
        with open(os.path.join(self.path, name), "w") as f:
            f.write(value)

    def prepare(self, limit_mb: int) -> None:
        """Before a test (nothing runs in the group): set its limit, reset the peak."""
        if limit_mb != self._limit_mb:
            self._limit_mb = -1  # unknown until the write succeeded
            os.pwrite(self._limit, b"%d" % (limit_mb * 1024 * 1024), 0)
            self._limit_mb = limit_mb
        os.pwrite(self._max_usage, b"0", 0)

    def peak_mb(self) -> float:
        return int(os.pread(self._max_usage, 64, 0)) / (1024 * 1024)

    def oom_kills(self) -> int:
        data = os.pread(self._oom, 4096, 0)
        at = data.find(b"oom_kill ")
        return int(data[at + 9:data.index(b"\n", at)]) if at >= 0 else 0

    def remove(self) -> None:
        for fd in (self._limit, self._max_usage, self._oom):
            os.close(fd)
        try:
            os.rmdir(self.path)
        except OSError:
            pass


def remove_tree(path: str) -> None:
    """Remove ``path`` and everything under it, whatever a program left there: trees of any depth
    (iterative, at most two descriptors open), symlinks (never followed), fifos, sockets, files and
    directories chmod-ed to 000. Raises OSError only when something cannot be removed at all."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISDIR(st.st_mode):
        os.unlink(path)
        return
    os.chmod(path, 0o700)
    flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW
    fd = os.open(path, flags)
    names: list[str] = []  # the directories we are in, below ``path``
    try:
        while True:
            child = None
            with os.scandir(fd) as it:
                for entry in it:
                    if entry.is_dir(follow_symlinks=False):
                        child = entry.name
                        break
                    os.unlink(entry.name, dir_fd=fd)
            if child is not None:  # go down; an unreadable directory is made ours first
                os.chmod(child, 0o700, dir_fd=fd, follow_symlinks=False)
                sub = os.open(child, flags, dir_fd=fd)
                os.close(fd)
                fd = sub
                names.append(child)
                continue
            if not names:
                break
            parent = os.open("..", flags, dir_fd=fd)  # up again, then remove the emptied directory
            os.close(fd)
            fd = parent
            os.rmdir(names.pop(), dir_fd=fd)
    finally:
        os.close(fd)
    os.rmdir(path)


def package_dirs(names: tuple[str, ...]) -> dict[str, str]:
    """Host directories of the importable third-party packages ``names`` (and their vendored
    shared libraries, e.g. ``numpy.libs``), found without importing them; missing ones are left out."""
    import importlib.util

    out = {}
    for name in names:
        try:
            spec = importlib.util.find_spec(name)
        except (ImportError, ValueError):
            continue
        if spec is None or not spec.submodule_search_locations:
            continue
        pkg = os.path.realpath(list(spec.submodule_search_locations)[0])
        out[name] = pkg
        libs = os.path.join(os.path.dirname(pkg), f"{name}.libs")
        if os.path.isdir(libs):
            out[f"{name}.libs"] = os.path.realpath(libs)
    return out
