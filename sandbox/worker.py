"""A sandbox worker: a manager, and a pristine zygote that clones one isolated child per test.

The executor starts one worker per core (``python -m sandbox.worker``), with a clean environment.
At start the worker (as root) enters its own mount/network/IPC/UTS namespaces, builds the minimal
root and its memory cgroup once, then starts its **zygote** (``sandbox/zygote.py``: a fresh, lean
interpreter, not a fork of the manager), which pre-imports the stdlib modules competitive programs
use, makes everything every Python program starts with (standard streams, signal handlers,
environment, import path), and from then on only clones. Per test:

    executor --frame--> manager: fresh tmpfs work dir and /dev/shm; the test's stdin (and a large
                        job) in sealed memfds; five pipes; sends the descriptors
    manager --"clone"--> zygote --clone(CLONE_PARENT|CLONE_NEWPID|CLONE_NEWIPC)--> program

The *program* process (the manager's child, PID 1 of a fresh PID namespace) reads its job, joins the
memory cgroup, chroots into the root, applies rlimits, drops to the worker's own unprivileged uid
and then either runs the compiled Python code object in place (no new interpreter) or ``execve``s
the compiled binary. The *manager* drains stdout/stderr while it runs (caps, OLE), enforces the wall
clock with SIGKILL (which takes down the whole PID namespace), collects rusage and the program's
report and answers.

Each page the zygote maps is copied into every clone's page tables, and each page a program writes
after a clone is a copy (a page fault, ~3 us here), so the per-test path does as little as it can
in the clone: whatever is the same for every program is made once in the zygote, the zygote holds
nothing else, and the manager (a process of its own, never cloned) does the rest.
docs/sandbox_engine.md has the breakdown per test.

What this layout guarantees (docs/sandbox_engine.md, "Judge integrity"):
- the zygote never holds any program's code, input, output or result (it learns only "clone now",
  with a job it zeroes after the clone), so every program starts from the same pristine memory and
  cannot find another's data in it (frames, ``gc.get_objects()``, or a raw scan of its address space);
- the report of a call-based run (its return value, or the exception) is authenticated: it must
  start with a random nonce the manager writes into a pipe per test, which the runtime reads only
  after the program's code has returned. A program that exits early (``sys.exit``, ``os._exit``,
  an ``atexit`` hook) or writes into the descriptor cannot produce an accepted report; compiled
  programs never have the descriptor at all;
- a test whose sandbox set-up failed (nothing of the program ran: the child says so on a pipe it
  closes before the program starts) is answered ``setup_failed``, and the executor retries it on a
  fresh worker; a worker whose clean-up failed answers ``retire`` and is replaced.

When isolation is disabled (``--isolate off``: not root, or explicitly) the worker runs *degraded*
(rlimits, a session killed as a group, a clean environment and a private temp dir only) and says
so in its hello frame, with the layers it cannot enforce.
"""

from __future__ import annotations

import argparse
import errno
import fcntl
import json
import marshal
import os
import select
import shutil
import signal
import socket
import sys
import time
import traceback
from collections import OrderedDict

from sandbox import isolation, protocol
from sandbox.zygote import (CGROUP_FD, CHILD_JOB, HIGH_FD, INLINE_JOB_BYTES, NONCE_BYTES, READY, SETUP_FAILED,
                            command as zygote_command)

PACKAGES = ("numpy",)  # third-party packages programs may import (read-only, at INNER_PY), when installed

UID_BASE = 1_000_000  # sandbox uid = UID_BASE + worker pid: unique per live worker, never a real user
MAX_CODES = 512  # compiled Python programs the manager keeps per worker
ZYGOTE_START_S = 60  # how long the zygote may take to import and set up

ROOT_PREFIX = "/tmp/codealign-sandbox-root-"


def root_dir(pid: int) -> str:
    """The mount point of worker ``pid``'s minimal root (outside view)."""
    return f"{ROOT_PREFIX}{pid}"


def cgroup_name(pid: int) -> str:
    """The name of worker ``pid``'s memory cgroup."""
    return f"codealign-sandbox-{pid}"


def leftover_dirs(pid: int) -> list[str]:
    """The empty directories worker ``pid`` creates outside its namespaces and removes on exit,
    unless it is killed: its root mount point and its memory cgroup."""
    cgroup = isolation.MemoryCgroup.path_of(cgroup_name(pid))
    return [root_dir(pid)] + ([cgroup] if cgroup else [])


class _Refused(Exception):
    """The worker cannot give the isolation or the limits it was asked for."""


class Worker:
    """The manager: talks to the executor, prepares each test, drains and reports it."""

    def __init__(self, bin_cache: str, tmp_mb: int, isolate: str, memory_cgroup: bool = True) -> None:
        os.umask(0o022)
        self.rfile = os.fdopen(os.dup(0), "rb")  # buffered: a frame is usually one read
        self.wfd = os.dup(1)
        devnull = os.open(os.devnull, os.O_RDWR)
        os.dup2(devnull, 0)
        os.dup2(devnull, 1)
        os.close(devnull)
        self.bin_cache = os.path.realpath(bin_cache)
        self.tmp_mb = tmp_mb
        self.codes: OrderedDict[str, bytes] = OrderedDict()  # code id -> marshalled code object
        self.isolated = False
        self.reason = ""
        self.uid: int | None = None
        self.cgroup: isolation.MemoryCgroup | None = None
        self.unenforced: list[str] = []
        self.packages = isolation.package_dirs(PACKAGES)
        self.error = ""  # why this worker refuses to serve (sent in its hello)
        self.zygote_pid = 0
        self.sock: socket.socket | None = None
        self.oom_base = 0
        try:
            self._set_up(isolate, memory_cgroup)
        except _Refused as e:
            self.error = str(e)
        except OSError as e:  # the per-test tmpfs or the zygote: a broken host
            self.error = f"the worker could not set up: {e}"

    def _set_up(self, isolate: str, memory_cgroup: bool) -> None:
        if isolate != "off" and os.geteuid() == 0:
            try:
                isolation.enter_worker_namespaces()
                self.root = isolation.build_root(root_dir(os.getpid()), self.bin_cache, self.packages)
                self.isolated = True
                self.uid = UID_BASE + os.getpid()
            except OSError as e:
                self.reason = f"namespaces unavailable ({e})"
        elif isolate == "off":
            self.reason = "isolation disabled by configuration (--isolate off)"
        else:
            self.reason = "not running as root"
        if not self.isolated:
            if isolate != "off":  # weaker isolation is never a fallback: only an explicit choice
                raise _Refused(f"full isolation required but {self.reason}")
            self.root = None
            self.unenforced = ["network", "filesystem", "pid_namespace", "uid", "memory_tree", "tmp_size"]
            self.host_tmp = f"/tmp/codealign-sandbox-tmp-{os.getpid()}"
            os.makedirs(self.host_tmp, mode=0o700, exist_ok=True)
            self.work = os.path.join(self.host_tmp, "w")
        else:
            self.work = self.root.work
            # mount(2) arguments of the per-test tmpfs, made once: the work dir belongs to the sandbox uid
            self._work_mount = (self.root.work.encode(),
                                f"size={self.tmp_mb}m,{isolation.TMP_OPTIONS},uid={self.uid},gid={self.uid}".encode())
            self._shm_mount = (self.root.shm.encode(), isolation.SHM_OPTIONS.encode())
            if memory_cgroup:
                try:
                    self.cgroup = isolation.MemoryCgroup.create(cgroup_name(os.getpid()))
                except OSError as e:
                    raise _Refused(f"the memory limit of a test's process tree cannot be enforced: no memory cgroup ({e})")
            else:
                self.unenforced = ["memory_tree"]
        self._fresh_tmp()
        self._start_zygote()

    def _start_zygote(self) -> None:
        """Start the zygote (sandbox/zygote.py) as a fresh, lean interpreter, before this process has
        read anything from the executor; wait until it says it is ready."""
        mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        config = {"isolated": self.isolated, "uid": self.uid, "root": self.root.path if self.isolated else None,
                  "work": isolation.INNER_WORK if self.isolated else self.work,  # as programs see them
                  "bin": isolation.INNER_BIN if self.isolated else self.bin_cache, "cgroup": self.cgroup is not None,
                  "packages": [isolation.INNER_PY] if self.isolated
                  else sorted({os.path.dirname(p) for p in self.packages.values()})}
        argv = zygote_command(config)
        procs = os.open(os.path.join(self.cgroup.path, "cgroup.procs"), os.O_WRONLY) if self.cgroup else -1
        pid = os.fork()
        if pid == 0:  # only descriptor moves and exec here
            try:
                os.dup2(theirs.fileno(), HIGH_FD)
                if procs >= 0:
                    os.dup2(procs, CGROUP_FD)
                os.closerange(3, HIGH_FD)
                os.closerange(CGROUP_FD + 1, 1 << 20)
                os.execv(argv[0], argv)
            finally:
                os._exit(SETUP_FAILED)
        theirs.close()
        if procs >= 0:
            os.close(procs)
        self.zygote_pid, self.sock = pid, mine
        mine.settimeout(ZYGOTE_START_S)
        try:
            hello = mine.recv(16)
        except OSError as e:
            hello = f"{type(e).__name__}: {e}".encode()
        mine.settimeout(None)
        if hello != READY:
            raise OSError(errno.EIO, f"the zygote did not start ({hello.decode(errors='replace') or 'it exited'}; "
                                     "its traceback is in the service's log)")

    def serve(self) -> None:
        hello = {"ready": not self.error, "error": self.error, "isolation": "full" if self.isolated else "degraded",
                 "reason": self.reason, "uid": self.uid, "pid": os.getpid(), "memory_cgroup": self.cgroup is not None,
                 "unenforced": self.unenforced}
        protocol.write_fd(self.wfd, protocol.encode(hello))
        if self.error:
            return
        while True:
            try:
                header, blobs = protocol.read_frame(self.rfile)
            except EOFError:
                break
            try:
                reply, out_blobs = self.handle(header, blobs)
            except Exception as e:  # a bug here must not be blamed on the program: a fresh worker retries
                reply, out_blobs = {"status": "setup_failed", "error": f"{type(e).__name__}: {e}",
                                    "trace": traceback.format_exc()}, []
            if reply["status"] == "setup_failed":
                reply["retire"] = True
            protocol.write_fd(self.wfd, protocol.encode(reply, out_blobs))
            if reply.get("retire"):  # the executor starts a fresh worker in our place
                break
        self.shutdown()

    def shutdown(self) -> None:
        if self.sock is not None:
            self.sock.close()  # the zygote sees EOF and exits
            try:
                os.waitpid(self.zygote_pid, 0)
            except ChildProcessError:
                pass
        if self.root is None:
            shutil.rmtree(self.host_tmp, ignore_errors=True)
        if self.cgroup is not None:
            self.cgroup.remove()

    # -- one test ----------------------------------------------------------------------------------

    def handle(self, job: dict, blobs: list[bytes]) -> tuple[dict, list[bytes]]:
        """One job: the answer's header and blobs (stdout, stderr, the runtime's report). ``status``
        is "ok" (the program ran; ``retire`` set when the clean-up after it failed), "need_code" or
        "setup_failed" (nothing of the program ran)."""
        if job.get("op") == "ping":
            return {"status": "ok"}, []
        code_blob = None
        if job["mode"] == "python":
            cid = job["code_id"]
            if "blob_code" in job:
                self.codes[cid] = blobs[job["blob_code"]]
                if len(self.codes) > MAX_CODES:
                    self.codes.popitem(last=False)
            if cid not in self.codes:
                return {"status": "need_code"}, []
            self.codes.move_to_end(cid)
            code_blob = self.codes[cid]
        try:
            theirs, message = self._prepare(job, blobs, code_blob)
        except OSError as e:
            return {"status": "setup_failed", "error": f"test set-up failed: {e}"}, []
        header, out_blobs = self._run(job, theirs, message)
        if header["status"] == "ok" and job.get("collect"):
            header["collected"] = self._collect(job["collect"], header)
        try:
            self._fresh_tmp()  # empty work dir and /dev/shm now: the next program finds nothing of this one
        except OSError as e:
            header["retire"] = True  # the answer stands; the worker is replaced
            header["cleanup_error"] = str(e)
        return header, out_blobs

    def _fresh_tmp(self) -> None:
        """A new, empty work dir and /dev/shm: see isolation.fresh_tmpfs. Degraded: remove the tree."""
        if self.isolated:
            isolation.fresh_tmpfs(*self._work_mount)
            isolation.fresh_tmpfs(*self._shm_mount)
        else:
            isolation.remove_tree(self.work)
            os.mkdir(self.work, 0o700)

    def _prepare(self, job: dict, blobs: list[bytes], code_blob: bytes | None) -> tuple[list[int], bytes]:
        """Write the test's files; returns the descriptors for the child after stdout..ready (its
        stdin, and a large job) and the zygote's message. The child's job (limits, argv, code,
        arguments) travels in that message when it is small (the zygote receives it into a buffer it
        zeroes after the clone), else in a sealed memfd; the child reads it before it drops privileges.
        Stdin is a sealed memfd too: a regular file (``os.fstat(0).st_size`` works, as do seeks and
        ``mmap``) that no path leads to and no one can write."""
        for name, idx in job.get("files", {}).items():  # a compile's sources, readable by the compiler
            with open(os.path.join(self.work, name), "wb") as f:
                f.write(blobs[idx])
        child_job = tuple(job.get(k) for k in CHILD_JOB)
        args = blobs[job["blob_args"]] if "blob_args" in job else None
        payload = marshal.dumps((child_job, code_blob, args))  # marshal: the cheapest to load in the child
        stdin = _sealed_memfd(blobs[job["blob_stdin"]] if "blob_stdin" in job else b"")
        extra = [stdin]
        if len(payload) < INLINE_JOB_BYTES:
            message = b"J" + payload
        else:
            message = b"F"
            extra.append(_sealed_memfd(payload))
        if self.cgroup is not None:
            self.cgroup.prepare(job["cgroup_mb"])
            self.oom_base = self.cgroup.oom_kills()  # a cumulative counter: compare after the test
        return extra, message

    def _run(self, job: dict, extra: list[int], message: bytes) -> tuple[dict, list[bytes]]:
        """Clone the program through the zygote, drain it, wait for it; the answer frame's parts."""
        pipes = [os.pipe() for _ in range(5)]  # stdout, stderr, result, nonce, ready
        (out_r, out_w), (err_r, err_w), (res_r, res_w), (nonce_r, nonce_w), (ready_r, ready_w) = pipes
        theirs = [extra[0], out_w, err_w, res_w, nonce_r, ready_w] + extra[1:]  # they land at 0, 1, ... JOB_FD
        mine = [out_r, err_r, res_r, ready_r]
        # The nonce waits in the pipe (the manager's memory is never cloned into a program; the
        # zygote never reads the pipe); the runtime reads it once the program's code has returned.
        nonce = os.urandom(NONCE_BYTES)
        os.write(nonce_w, nonce)
        os.close(nonce_w)
        t0 = time.monotonic()
        try:
            try:
                socket.send_fds(self.sock, [message], theirs)
                answer = self.sock.recv(32)
            finally:
                for fd in theirs:
                    os.close(fd)
            pid = int(answer or b"0")
            if pid <= 0:
                raise OSError(-pid or errno.EIO, f"the zygote could not clone a program: {os.strerror(-pid or errno.EIO)}")
            header, out_blobs = _drain_and_wait(self, job, pid, t0, out_r, err_r, res_r, nonce)
        except OSError as e:
            return {"status": "setup_failed", "error": f"starting the program failed: {e}"}, []
        finally:
            ready = _read_available(ready_r)
            for fd in mine:
                os.close(fd)
        if ready == b"R" or (not ready and header["wall_timeout"]):  # killed at its wall limit while starting: TLE
            return header, out_blobs
        why = ready.lstrip(b"R")[1:].decode("utf-8", "replace")
        if ready.startswith(b"RF") and why.startswith("ENOMEM"):  # execve: the binary does not fit the limit
            header["exec_enomem"] = True  # the program's own fault, like a MemoryError at start
            return header, out_blobs
        # The program never started: the sandbox, not the program, failed.
        return {"status": "setup_failed", "error": f"sandbox set-up failed: {why or 'the child died before the program started'}",
                "stderr": out_blobs[1][-4000:].decode("utf-8", "replace")}, []

    def _collect(self, collect: dict, header: dict) -> bool:
        """Move a compiler's product into the shared binary cache, atomically, readable by all.
        False when there is nothing usable to collect (the compile then counts as failed)."""
        src = os.path.join(self.work, collect["path"])
        if header.get("exit_code") != 0 or os.path.islink(src) or not os.path.exists(src):
            return False
        dest = os.path.join(self.bin_cache, collect["dest"])
        staging = f"{dest}.tmp-{os.getpid()}"
        try:
            isolation.remove_tree(staging)
            if os.path.isdir(src):
                shutil.copytree(src, staging, symlinks=True)
                for dirpath, _, files in os.walk(staging):
                    os.chmod(dirpath, 0o755)
                    for f in files:
                        os.chmod(os.path.join(dirpath, f), 0o644)
            else:
                shutil.copyfile(src, staging)
                os.chmod(staging, 0o755)
        except (OSError, RecursionError, shutil.Error) as e:  # a hostile compiler output (deep package trees...)
            header["collect_error"] = f"{type(e).__name__}: {e}"
            try:
                isolation.remove_tree(staging)
            except OSError:
                pass
            return False
        try:
            os.rename(staging, dest)
        except OSError:  # another worker got there first: its copy is the same program
            isolation.remove_tree(staging)
        return True



def _read_available(fd: int) -> bytes:
    os.set_blocking(fd, False)
    try:
        return os.read(fd, 1 << 16)
    except BlockingIOError:
        return b""


def _sealed_memfd(data: bytes) -> int:
    """A read-only regular file holding ``data``, with no name anywhere (a sealed memfd at offset 0)."""
    fd = os.memfd_create("sandbox", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        fcntl.fcntl(fd, fcntl.F_ADD_SEALS, fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_WRITE | fcntl.F_SEAL_SEAL)
        os.lseek(fd, 0, os.SEEK_SET)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _kill(wk: Worker, pid: int) -> None:
    try:
        if wk.isolated:
            os.kill(pid, signal.SIGKILL)  # PID 1 of its namespace: the kernel kills everything in it
        else:
            os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _drain_and_wait(wk: Worker, job: dict, pid: int, t0: float, out_r: int, err_r: int, res_r: int,
                    nonce: bytes) -> tuple[dict, list[bytes]]:
    out_cap, err_cap, res_cap = job["stdout_cap"], job["stderr_cap"], job["stdout_cap"] + NONCE_BYTES
    bufs = {out_r: bytearray(), err_r: bytearray(), res_r: bytearray()}
    caps = {out_r: out_cap, err_r: err_cap, res_r: res_cap}
    truncated = {out_r: False, err_r: False, res_r: False}
    pidfd = os.pidfd_open(pid)
    poller = select.poll()
    for fd in (out_r, err_r, res_r, pidfd):
        poller.register(fd, select.POLLIN)
    open_fds = {out_r, err_r, res_r}
    deadline = t0 + job["wall_s"]
    exited = killed = wall_timeout = ole = False
    grace_end = None
    while open_fds or not exited:
        now = time.monotonic()
        if not killed and now >= deadline:
            _kill(wk, pid)
            killed = wall_timeout = True
        if exited and grace_end is None:
            grace_end = now + 0.5  # degraded mode: an escaped grandchild may still hold the pipes
        if grace_end is not None and now >= grace_end:
            break
        limit = (grace_end if grace_end is not None else deadline if not killed else now + 1.0) - now
        for fd, _ in poller.poll(max(0.0, limit) * 1000):
            if fd == pidfd:
                exited = True
                poller.unregister(pidfd)
                continue
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                poller.unregister(fd)
                open_fds.discard(fd)
                continue
            buf = bufs[fd]
            room = caps[fd] - len(buf)
            if len(chunk) > room:
                buf += chunk[:max(room, 0)]
                truncated[fd] = True
                if fd == out_r and not killed:  # more output than allowed: OLE, stop it now
                    _kill(wk, pid)
                    killed = ole = True
            else:
                buf += chunk
    if not exited:
        _kill(wk, pid)
    _, status, ru = os.wait4(pid, 0)  # rusage includes the children the program waited for
    wall = time.monotonic() - t0
    os.close(pidfd)
    if not wk.isolated:
        _kill(wk, pid)  # whatever of its process group is left
    cg_peak = cg_oom = None
    if wk.cgroup is not None:
        cg_peak, cg_oom = wk.cgroup.peak_mb(), wk.cgroup.oom_kills() > wk.oom_base
    # The runtime's report is what follows this test's nonce: anything the program wrote before it
    # is ignored, and it cannot write after it (the runtime closes the channel). The executor reads it.
    res = bytes(bufs[res_r])
    at = res.find(nonce)
    report = res[at + NONCE_BYTES:] if at >= 0 else b""
    header = {
        "status": "ok",
        "exit_code": os.WEXITSTATUS(status) if os.WIFEXITED(status) else None,
        "signal": os.WTERMSIG(status) if os.WIFSIGNALED(status) else None,
        "wall_s": wall,
        "cpu_s": ru.ru_utime + ru.ru_stime,
        "maxrss_kb": ru.ru_maxrss,
        "cgroup_peak_mb": cg_peak,
        "cgroup_oom": cg_oom,
        "wall_timeout": wall_timeout,
        "ole": ole,
        "stderr_truncated": truncated[err_r],
        "report": at >= 0,
    }
    return header, [bytes(bufs[out_r]), bytes(bufs[err_r]), report]


_REPORT_KEYS = {"value": object, "exc": str, "missing_fn": str, "signal": int, "unserializable": bool}


def read_report(header: dict, data: bytes) -> dict:
    """The runtime's authenticated report from a test's answer (``header["report"]``: the nonce was
    found; ``data``: what followed it). No report: {}. A report that cannot be read (a number beyond
    Python's 4300-digit parsing limit, JSON nested deeper than the parser goes) is {"unreadable": True}.
    Keys and types are checked."""
    if not header.get("report"):
        return {}
    try:
        report = json.loads(data)
    except (ValueError, RecursionError, MemoryError):
        return {"unreadable": True}
    if not isinstance(report, dict):
        return {}
    return {k: v for k, v in report.items() if k in _REPORT_KEYS and isinstance(v, _REPORT_KEYS[k])}




def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m sandbox.worker")
    p.add_argument("--bin-cache", required=True)
    p.add_argument("--tmp-mb", type=int, default=512)
    p.add_argument("--isolate", choices=("auto", "on", "off"), default="on")
    p.add_argument("--no-memory-cgroup", action="store_true")
    a = p.parse_args(argv)
    Worker(a.bin_cache, a.tmp_mb, a.isolate, memory_cgroup=not a.no_memory_cgroup).serve()
    return 0


if __name__ == "__main__":
    sys.exit(main())
