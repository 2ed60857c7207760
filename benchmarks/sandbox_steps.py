"""What each isolation step of a sandbox test costs, measured one step at a time (root, Linux).

    .venv/bin/python benchmarks/sandbox_steps.py [--n 2000]

Prints CPU microseconds per step (user + system, including the children a step reaps), each step
repeated ``--n`` times (the cheap ones inside a test's child 10x more, for the CPU clock's
granularity):
- a clone of a zygote-shaped process (a fresh ``python -I -S`` that loaded what sandbox/zygote.py
  loads), its exit and reaping, with and without the new PID + IPC namespaces of a test;
- the steps a test's child takes after the clone (cgroup join, chroot, rlimits, prctl, uid
  syscalls), repeated inside one cloned child, so the variance of a clone does not swamp them;
- the manager's per-test work (fresh tmpfs mounts, the cgroup's counters, pipes, the stdin memfd,
  passing descriptors to the zygote) and the executor's (frames, the checker).
What this leaves out is what a clone pays while it runs Python: a copy-on-write page fault for each
page of the zygote it writes. benchmarks/sandbox_profile.py counts those and measures the per-test
total by role; docs/sandbox_engine.md ("Where a test's CPU goes") puts the two together.
"""

from __future__ import annotations

import argparse
import io
import json
import marshal
import os
import resource
import socket
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sandbox import checker, isolation, protocol, syscalls  # noqa: E402
from sandbox.worker import _sealed_memfd  # noqa: E402


def cpu() -> float:
    s, c = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return s.ru_utime + s.ru_stime + c.ru_utime + c.ru_stime


def timed(n: int, step) -> float:
    """CPU microseconds per call of ``step``."""
    t0 = cpu()
    for _ in range(n):
        step()
    return (cpu() - t0) / n * 1e6


# Run by a fresh `python -I -S` that loads what the zygote loads: the size of the process cloned is
# what a clone and an exit cost.
ZYGOTE_SHAPED = r"""
import gc, json, os, resource, sys
sys.path.insert(0, sys.argv[1])
from sandbox import syscalls, zygote
for name in zygote.PRELOAD:
    try:
        __import__(name)
    except ImportError:
        pass
gc.collect(); gc.freeze()
n = int(sys.argv[2])
def cpu():
    s, c = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return s.ru_utime + s.ru_stime + c.ru_utime + c.ru_stime
out = []
for name, flags in (("clone + exit + reap of a zygote-sized process", 17),  # SIGCHLD
                    ("  ... with new PID + IPC namespaces (a test's clone)", syscalls.CLONE_NEWPID | syscalls.CLONE_NEWIPC | 17)):
    t0 = cpu()
    for _ in range(n):
        pid = syscalls.clone(flags)
        if pid == 0:
            os._exit(0)
        os.waitpid(pid, 0)
    out.append((name, (cpu() - t0) / n * 1e6))
print(json.dumps(out))
"""


def clones_of_a_zygote(n: int) -> list[tuple[str, float]]:
    got = subprocess.run([sys.executable, "-I", "-S", "-c", ZYGOTE_SHAPED, str(ROOT), str(n)], capture_output=True,
                         text=True, check=True)
    return [tuple(x) for x in json.loads(got.stdout)]


def in_a_child(n: int, cg: isolation.MemoryCgroup) -> list[tuple[str, float]]:
    """The steps a test's child takes, each repeated inside one child cloned like a test's."""
    r, w = os.pipe()
    flags = syscalls.CLONE_NEWPID | syscalls.CLONE_NEWIPC | 17
    pid = syscalls.clone(flags)
    if pid == 0:
        try:
            procs = os.open(os.path.join(cg.path, "cgroup.procs"), os.O_WRONLY)
            parent = os.open(os.path.join(os.path.dirname(cg.path), "cgroup.procs"), os.O_WRONLY)

            def join():  # two real migrations: into the test's group and back out
                os.write(procs, b"0")
                os.write(parent, b"0")
            limits = dict(cpu_s=600, address_space_mb=None, nproc=4096, fsize_mb=1024, nofile=1024, stack_mb=None)
            steps = [("  join the memory cgroup (one migration)", join, 2),
                     ("  chroot + chdir", lambda: (os.chroot("/"), os.chdir("/")), 1),
                     ("  7 rlimits", lambda: syscalls.apply_rlimits(**limits), 1),
                     ("  PR_SET_PDEATHSIG", syscalls.die_with_parent, 1),
                     ("  setresgid + setresuid (to the same ids: the syscalls only)",
                      lambda: (os.setresgid(0, 0, 0), os.setresuid(0, 0, 0)), 1)]
            out = []
            for name, step, per in steps:
                out.append((name, timed(10 * n, step) / per))
            os.write(w, json.dumps(out).encode())
        finally:
            os._exit(0)
    os.close(w)
    data = b""
    while chunk := os.read(r, 65536):
        data += chunk
    os.close(r)
    os.waitpid(pid, 0)
    return [("in a test's child (PID 1 of new PID + IPC namespaces):", None)] + [tuple(x) for x in json.loads(data)]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=2000)
    n = ap.parse_args().n
    if os.geteuid() != 0:
        raise SystemExit("run as root: the steps are namespaces, mounts, cgroups and uid changes")
    rows = clones_of_a_zygote(n)
    isolation.enter_worker_namespaces()
    base = f"/tmp/codealign-steps-{os.getpid()}"
    os.makedirs(base + "/w", exist_ok=True)
    os.makedirs(base + "/shm", exist_ok=True)
    cg = isolation.MemoryCgroup.create(f"codealign-steps-{os.getpid()}")
    try:
        rows += in_a_child(n, cg)
        uid = 1_000_000 + os.getpid()
        work_opts = f"size=256m,{isolation.TMP_OPTIONS},uid={uid},gid={uid}".encode()
        rows.append(("fresh tmpfs for the work dir (umount + mount)",
                     timed(n, lambda: isolation.fresh_tmpfs((base + "/w").encode(), work_opts))))
        rows.append(("fresh tmpfs for /dev/shm (umount + mount)",
                     timed(n, lambda: isolation.fresh_tmpfs((base + "/shm").encode(), isolation.SHM_OPTIONS.encode()))))
        rows.append(("memory cgroup: reset peak, read peak and OOM count",
                     timed(n, lambda: (cg.prepare(512), cg.peak_mb(), cg.oom_kills()))))

        def pipes():
            for fd in [fd for _ in range(5) for fd in os.pipe()]:
                os.close(fd)
        rows.append(("5 pipes made and closed", timed(n, pipes)))
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
               "nproc": 64, "fsize_mb": 64, "nofile": 64, "stack_mb": 512, "stdout_cap": 1 << 20,
               "stderr_cap": 1 << 16, "blob_stdin": 0, "cgroup_mb": 768}

        def frames():
            for header, blobs in ((job, [b"1 2\n"]), ({"status": "ok", "exit_code": 0, "wall_s": 0.001}, [b"3\n", b"", b""])):
                protocol.read_frame(io.BytesIO(protocol.encode(header, blobs)))
        rows.append(("executor <-> manager frames (encode + decode both ways)", timed(n, frames)))
        rows.append(("the child's job (marshal dumps + loads)",
                     timed(n, lambda: marshal.loads(marshal.dumps(((1,) * 11, b"c" * 300, None))))))
        rows.append(("checker: compare a 10-token output",
                     timed(n, lambda: checker.check_stdout("tokens", "1 2 3 4 5 6 7 8 9 10\n", "1 2 3 4 5 6 7 8 9 10"))))
    finally:
        for d in ("/w", "/shm"):
            syscalls.umount_detached((base + d).encode())
        isolation.remove_tree(base)
        cg.remove()
    print(f"CPU per step, microseconds ({n} repetitions, load average {os.getloadavg()[0]:.1f}):")
    for name, us in rows:
        print(f"  {name:<66} {us:8.1f}" if us is not None else f"  {name}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
