"""What each isolation step of a sandbox test costs, measured one step at a time (root, Linux).

    .venv/bin/python benchmarks/sandbox_steps.py [--n 2000]

Each row repeats one step ``--n`` times in a process shaped like the engine's (a clone of a process
that preloaded what the zygote preloads, inside a private mount namespace, with a real memory
cgroup) and prints CPU microseconds per step (user + system, the process and the children it
reaped). The steps are the ones a test of the engine goes through (sandbox/worker.py,
sandbox/zygote.py); their sum is an estimate, the measured per-test total by role is
benchmarks/sandbox_profile.py. Figures and what they mean: docs/sandbox_engine.md, "Where a test's
CPU goes".
"""

from __future__ import annotations

import argparse
import importlib
import marshal
import os
import resource
import socket
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sandbox import checker, isolation, protocol, syscalls, zygote  # noqa: E402


def cpu() -> float:
    s, c = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return s.ru_utime + s.ru_stime + c.ru_utime + c.ru_stime


def timed(n: int, step) -> float:
    """CPU microseconds per call of ``step`` (including the children it reaps)."""
    t0 = cpu()
    for _ in range(n):
        step()
    return (cpu() - t0) / n * 1e6


def clone_and_reap(new_namespaces: bool, child=None):
    def step():
        pid = _clone(new_namespaces)
        if pid == 0:
            if child is not None:
                child()
            os._exit(0)
        os.waitpid(pid, 0)
    return step


def _clone(new_namespaces: bool) -> int:
    # clone_sibling's flags without CLONE_PARENT: here the caller itself reaps the child
    flags = (syscalls.CLONE_NEWPID | syscalls.CLONE_NEWIPC if new_namespaces else 0) | 17  # SIGCHLD
    return syscalls._pylibc.syscall(syscalls.ctypes.c_long(syscalls._SYS_CLONE), syscalls.ctypes.c_long(flags),
                                    *(syscalls.ctypes.c_long(0),) * 4)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=2000)
    n = ap.parse_args().n
    if os.geteuid() != 0:
        raise SystemExit("run as root: the steps are namespaces, mounts, cgroups and uid changes")
    for name in zygote.PRELOAD:  # the zygote's size: what a clone copies and an exit tears down
        try:
            importlib.import_module(name)
        except ImportError:
            pass
    isolation.enter_worker_namespaces()
    base = f"/tmp/codealign-steps-{os.getpid()}"
    os.makedirs(base + "/w", exist_ok=True)
    os.makedirs(base + "/shm", exist_ok=True)
    cg = isolation.MemoryCgroup.create(f"codealign-steps-{os.getpid()}")
    rows = []
    try:
        rows.append(("clone + exit + reap (no namespaces)", timed(n, clone_and_reap(False))))
        rows.append(("clone + exit + reap, new PID + IPC namespaces", timed(n, clone_and_reap(True))))
        procs = os.open(os.path.join(cg.path, "cgroup.procs"), os.O_WRONLY)
        rows.append(("  ... + join the memory cgroup (child)", timed(n, clone_and_reap(True, lambda: os.write(procs, b"0")))
                     - rows[-1][1]))
        os.close(procs)
        rows.append(("  ... + chroot + chdir (child)", timed(n, clone_and_reap(True, lambda: (os.chroot("/"), os.chdir("/"))))
                     - rows[1][1]))
        uid = 1_000_000 + os.getpid()

        def drop():
            os.setresgid(uid, uid, uid)
            os.setresuid(uid, uid, uid)
        rows.append(("  ... + setresgid + setresuid (child)", timed(n, clone_and_reap(True, drop)) - rows[1][1]))
        limits = dict(cpu_s=4, address_space_mb=512, nproc=64, fsize_mb=64, nofile=64, stack_mb=512)
        rows.append(("  ... + 7 rlimits (child)", timed(n, clone_and_reap(True, lambda: syscalls.apply_rlimits(**limits)))
                     - rows[1][1]))
        rows.append(("  ... + PR_SET_PDEATHSIG (child)", timed(n, clone_and_reap(True, syscalls.die_with_parent)) - rows[1][1]))
        opts = f"size=256m,{isolation.TMP_OPTIONS},uid={uid},gid={uid}".encode()
        rows.append(("fresh tmpfs for the work dir (umount + mount)", timed(n, lambda: isolation.fresh_tmpfs((base + "/w").encode(), opts))))
        rows.append(("fresh tmpfs for /dev/shm (umount + mount)",
                     timed(n, lambda: isolation.fresh_tmpfs((base + "/shm").encode(), isolation.SHM_OPTIONS.encode()))))
        rows.append(("memory cgroup: reset peak, read peak and OOM count", timed(n, lambda: (cg.prepare(512), cg.peak_mb(), cg.oom_kills()))))

        def pipes():
            fds = [fd for _ in range(5) for fd in os.pipe()]
            for fd in fds:
                os.close(fd)
        rows.append(("5 pipes made and closed", timed(n, pipes)))
        from sandbox.worker import _sealed_memfd
        rows.append(("stdin as a sealed memfd (100 bytes)", timed(n, lambda: os.close(_sealed_memfd(b"1 2\n" * 25)))))
        a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        r, w = os.pipe()

        def pass_fds():
            socket.send_fds(a, [b"J" + bytes(200)], [r, w, r, w, r, w])
            _, fds, _, _ = socket.recv_fds(b, 1024, 8)
            for fd in fds:
                os.close(fd)
            b.send(b"1234")
            a.recv(32)
        rows.append(("job + 6 descriptors to the zygote, pid back (SCM_RIGHTS)", timed(n, pass_fds)))
        job = {"op": "run", "mode": "python", "code_id": "x" * 64, "cpu_s": 4, "wall_s": 10.0, "as_mb": 512,
               "nproc": 64, "fsize_mb": 64, "nofile": 64, "stack_mb": 512, "stdout_cap": 1 << 20, "stderr_cap": 1 << 16,
               "blob_stdin": 0, "cgroup_mb": 768}
        import io

        def frames():
            for header, blobs in ((job, [b"1 2\n"]), ({"status": "ok", "exit_code": 0, "wall_s": 0.001}, [b"3\n", b"", b""])):
                protocol.read_frame(io.BytesIO(protocol.encode(header, blobs)))
        rows.append(("executor <-> manager frames (encode + decode both ways)", timed(n, frames)))
        rows.append(("the child's job (marshal dumps + loads)", timed(n, lambda: marshal.loads(marshal.dumps(((1,) * 11, b"c" * 300, None))))))
        rows.append(("checker: compare a 10-token output", timed(n, lambda: checker.check_stdout("tokens", "1 2 3 4 5 6 7 8 9 10\n", "1 2 3 4 5 6 7 8 9 10"))))
    finally:
        for d in ("/w", "/shm"):
            syscalls.umount_detached((base + d).encode())
        isolation.remove_tree(base)
        cg.remove()
    print(f"CPU per step, microseconds ({n} repetitions, load average {os.getloadavg()[0]:.1f}):")
    for name, us in rows:
        print(f"  {name:<62} {us:8.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
