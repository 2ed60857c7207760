"""The raw process primitives a test's child needs, from libc through ctypes (Python 3.11 has no
``os.unshare``, ``mount`` or a way to fork into a new PID namespace).

The zygote imports this module, and every page the zygote maps is one more page table entry to copy
at each clone and to tear down at each program's exit: it imports nothing heavy (no ``ctypes.util``,
``platform`` or ``dataclasses``). The policy built on these (the minimal root, cgroups, clean-up)
is in ``sandbox/isolation.py``.
"""

from __future__ import annotations

import ctypes
import errno
import os
import resource
import signal

CLONE_PARENT = 0x00008000
CLONE_NEWNS = 0x00020000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000

MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_REMOUNT = 32
MS_BIND = 4096
MS_REC = 16384
MS_PRIVATE = 1 << 18
MNT_DETACH = 2

PR_SET_PDEATHSIG = 1
PR_SET_NO_NEW_PRIVS = 38

_libc = ctypes.CDLL(None, use_errno=True)  # the process's own libc, found without ctypes.util
_libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]
_libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
_libc.unshare.argtypes = [ctypes.c_int]
# prctl without argtypes: plain ints pass straight through and nothing is allocated (a clone calls it).
_prctl = ctypes.CDLL(None, use_errno=True).prctl
# Raw clone(2) through PyDLL, which keeps the GIL held across the call: the child resumes as an
# ordinary single-threaded copy of the caller.
_pylibc = ctypes.PyDLL(None, use_errno=True)
_pylibc.syscall.restype = ctypes.c_long
_SYS_CLONE = {"x86_64": 56, "aarch64": 220}.get(os.uname().machine)


def _text(s: str | bytes | None) -> str:
    return s.decode(errors="replace") if isinstance(s, bytes) else str(s)


def _fail(what: str) -> OSError:
    err = ctypes.get_errno()
    return OSError(err, f"{what}: {os.strerror(err)}")


def unshare(flags: int) -> None:
    if _libc.unshare(flags) != 0:
        raise _fail(f"unshare({flags:#x})")


def mount(source: str | bytes | None, target: str | bytes, fstype: str | bytes | None, flags: int,
          data: str | bytes | None = None) -> None:
    enc = lambda s: s.encode() if isinstance(s, str) else s  # noqa: E731
    if _libc.mount(enc(source), enc(target), enc(fstype), flags, enc(data)) != 0:
        raise _fail(f"mount {_text(source)} -> {_text(target)}")


def umount_detached(target: bytes) -> bool:
    """Detach whatever is mounted at ``target`` (freed once unused); False when nothing was mounted."""
    if _libc.umount2(target, MNT_DETACH) == 0:
        return True
    if ctypes.get_errno() == errno.EINVAL:
        return False
    raise _fail(f"umount {_text(target)}")


def prctl(option: int, arg: int) -> None:
    if _prctl(option, arg, 0, 0, 0) != 0:
        raise _fail(f"prctl({option})")


def die_with_parent() -> None:
    """Have the kernel SIGKILL the calling process when its parent dies (PR_SET_PDEATHSIG)."""
    prctl(PR_SET_PDEATHSIG, 9)  # SIGKILL


def forbid_new_privileges() -> None:
    """No supplementary groups, and no way to gain privileges through execve (setuid binaries, file
    capabilities): both are inherited, so the zygote sets them once for every program it clones."""
    os.setgroups([])
    prctl(PR_SET_NO_NEW_PRIVS, 1)


def clone(flags: int) -> int:
    """The raw clone(2) syscall with ``flags`` (no new stack: a fork-like copy); returns 0 in the child."""
    if _SYS_CLONE is None:
        raise OSError(errno.ENOSYS, f"clone: unsupported machine {os.uname().machine}")
    pid = _pylibc.syscall(ctypes.c_long(_SYS_CLONE), ctypes.c_long(flags),
                          ctypes.c_long(0), ctypes.c_long(0), ctypes.c_long(0), ctypes.c_long(0))
    if pid < 0:
        raise _fail(f"clone({flags:#x})")
    return pid


def clone_sibling(new_namespaces: bool) -> int:
    """fork(), except that the child becomes a child of the *caller's parent* (CLONE_PARENT), and,
    with ``new_namespaces``, PID 1 of a new PID namespace with a new IPC namespace. Returns 0 in the
    child. The zygote clones programs this way so that the worker's manager, not the zygote, waits
    for them and reads their output: the zygote never sees any of it."""
    # A fresh IPC namespace too: SysV shared memory and semaphores die with the test instead of
    # persisting (and piling up) in the worker's namespace for the next program to find.
    return clone(CLONE_PARENT | (CLONE_NEWPID | CLONE_NEWIPC if new_namespaces else 0) | signal.SIGCHLD)


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
