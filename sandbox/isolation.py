"""Linux isolation primitives: namespaces, mounts, the minimal root, rlimits, privilege drop.

Python 3.11 has no ``os.unshare`` nor ``mount``, so they come from libc through ctypes. Every
function here runs inside a sandbox worker (never in the service process): the worker calls
``enter_worker_namespaces`` and ``build_root`` once at start, its zygote ``forbid_new_privileges``,
and each test's child (cloned by ``clone_sibling``) ``apply_rlimits``, chroot and a uid drop just
before running the untrusted program.

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

import ctypes
import ctypes.util
import errno
import os
import platform
import resource
import shutil
import signal
import stat
from dataclasses import dataclass

CLONE_PARENT = 0x00008000
CLONE_NEWNS = 0x00020000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000

MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_REMOUNT = 32
MS_BIND = 4096
MS_REC = 16384
MS_PRIVATE = 1 << 18
MS_NOEXEC = 8
MNT_DETACH = 2

PR_SET_NO_NEW_PRIVS = 38
PR_SET_PDEATHSIG = 1

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
_libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]
_libc.unshare.argtypes = [ctypes.c_int]
_libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
_libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]

# Where things appear inside the sandbox root.
INNER_TMP = "/tmp"  # read-only; holds only the work dir
INNER_WORK = "/tmp/w"  # the program's work dir (HOME, TMPDIR): a fresh tmpfs per test
INNER_BIN = "/sbx/bin"
INNER_PY = "/sbx/py"  # third-party Python packages programs may import (numpy), read-only
TMP_OPTIONS = "nr_inodes=65536,mode=700"  # the per-test work dir (plus size=<tmp_mb>m, uid and gid of the sandbox user)
SHM_OPTIONS = "size=64m,nr_inodes=4096,mode=1777"  # the per-test /dev/shm


def _check(rc: int, what: str) -> None:
    if rc != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def unshare(flags: int) -> None:
    _check(_libc.unshare(flags), f"unshare({flags:#x})")


def mount(source: str | None, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    enc = lambda s: None if s is None else s.encode()  # noqa: E731
    _check(_libc.mount(enc(source), enc(target), enc(fstype), flags, enc(data)), f"mount {source} -> {target}")


def prctl(option: int, arg: int) -> None:
    _check(_libc.prctl(option, arg, 0, 0, 0), f"prctl({option})")


# A second handle on prctl, without argtypes: plain ints pass straight through and nothing is
# allocated. A test's clone calls it, and every object a clone touches is a page copied.
_prctl_plain = ctypes.CDLL(None, use_errno=True).prctl
_SIGKILL = int(signal.SIGKILL)


def die_with_parent() -> None:
    """Have the kernel SIGKILL the calling process when its parent dies (PR_SET_PDEATHSIG)."""
    if _prctl_plain(PR_SET_PDEATHSIG, _SIGKILL) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"prctl(PR_SET_PDEATHSIG): {os.strerror(err)}")


def fresh_tmpfs(path: bytes, options: bytes) -> None:
    """Replace whatever is mounted at ``path`` by a new, empty tmpfs (``options``: its mount data).

    The old one is detached at once and freed by the kernel when its last user is gone: nothing a
    program left in it (deep trees, symlinks, fifos, sockets, files or directories it chmod-ed to
    000) can make this fail or survive it, and it takes the same time whatever the tree holds.
    Arguments are bytes: this runs after every test."""
    if _libc.umount2(path, MNT_DETACH) != 0 and ctypes.get_errno() != errno.EINVAL:  # EINVAL: not mounted
        err = ctypes.get_errno()
        raise OSError(err, f"umount {path.decode()}: {os.strerror(err)}")
    if _libc.mount(b"tmpfs", path, b"tmpfs", MS_NOSUID | MS_NODEV, options) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"mount tmpfs -> {path.decode()}: {os.strerror(err)}")


# Raw clone(2): Python has no way to fork straight into a new PID namespace. PyDLL keeps the GIL
# held across the call, so the child resumes as an ordinary single-threaded copy of the worker.
_SYS_CLONE = {"x86_64": 56, "aarch64": 220}.get(platform.machine())
_pylibc = ctypes.PyDLL(None, use_errno=True)
_pylibc.syscall.restype = ctypes.c_long


def clone_sibling(new_namespaces: bool) -> int:
    """fork(), except that the child becomes a child of the *caller's parent* (CLONE_PARENT), and,
    with ``new_namespaces``, PID 1 of a new PID namespace with a new IPC namespace. Returns 0 in the
    child. The zygote clones programs this way so that the worker's manager, not the zygote, waits
    for them and reads their output: the zygote never sees any of it."""
    if _SYS_CLONE is None:
        raise OSError(errno.ENOSYS, f"clone: unsupported machine {platform.machine()}")
    # A fresh IPC namespace too: SysV shared memory and semaphores die with the test instead of
    # persisting (and piling up) in the worker's namespace for the next program to find.
    flags = CLONE_PARENT | (CLONE_NEWPID | CLONE_NEWIPC if new_namespaces else 0) | signal.SIGCHLD
    pid = _pylibc.syscall(ctypes.c_long(_SYS_CLONE), ctypes.c_long(flags),
                          ctypes.c_long(0), ctypes.c_long(0), ctypes.c_long(0), ctypes.c_long(0))
    if pid < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"clone({flags:#x}): {os.strerror(err)}")
    return pid


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


def mount_own_proc(root: str) -> None:
    """Give the calling process (PID 1 of its own PID namespace) a private mount namespace with a
    /proc of *its* PID namespace only: the JVM and its loader need /proc/self; the service's
    processes stay invisible."""
    unshare(CLONE_NEWNS)
    mount("proc", os.path.join(root, "proc"), "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)


def apply_rlimits(*, cpu_s: int, address_space_mb: int | None, nproc: int, fsize_mb: int, nofile: int,
                  stack_mb: int | None) -> None:
    """Per-process resource limits, applied in the test's child just before the program starts.

    cpu_s: RLIMIT_CPU (soft = hard, so the kernel sends SIGKILL when it is reached); address_space_mb:
    RLIMIT_AS (None: unlimited, e.g. for the JVM, which reserves far more than it uses); nproc:
    RLIMIT_NPROC (processes + threads of the sandbox uid); fsize_mb: the largest file the program may
    write; nofile: RLIMIT_NOFILE; stack_mb: RLIMIT_STACK (None keeps the worker's). No core files."""
    setrlimit = resource.setrlimit
    setrlimit(resource.RLIMIT_CPU, (cpu_s, cpu_s))
    if address_space_mb is not None:
        setrlimit(resource.RLIMIT_AS, (address_space_mb << 20,) * 2)
    if stack_mb is not None:
        # Soft only: solutions that raise their stack limit keep working; memory stays capped by
        # RLIMIT_AS and the cgroup.
        setrlimit(resource.RLIMIT_STACK, (stack_mb << 20, resource.RLIM_INFINITY))
    setrlimit(resource.RLIMIT_NPROC, (nproc, nproc))
    setrlimit(resource.RLIMIT_FSIZE, (fsize_mb << 20,) * 2)
    setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))
    setrlimit(resource.RLIMIT_CORE, (0, 0))


def forbid_new_privileges() -> None:
    """No supplementary groups, and no way to gain privileges through execve (setuid binaries, file
    capabilities): both are inherited, so the zygote sets them once for every program it clones."""
    os.setgroups([])
    prctl(PR_SET_NO_NEW_PRIVS, 1)

