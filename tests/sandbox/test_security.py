"""The security suite: one hostile program per isolation property. Each checks the verdict, that the
host is untouched (files, processes, network listeners, environment) and that the executor still
judges correctly afterwards. Everything runs real programs in the real sandbox; properties that need
root (namespaces, uid drop) are skipped with a reason when the suite is not run as root."""

import os
import socket
import threading
import time

import pytest

from sandbox.local import LocalExecutor
from sandbox.spec import RunRequest, TestCase, Verdict

CANARY_ENV = "CODEALIGN_SANDBOX_CANARY"
CANARY_VALUE = "canary-7f3a9c1e-service-secret"

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="full isolation needs root (namespaces, uid drop)")


@pytest.fixture(autouse=True)
def _full_isolation_for_root_tests(request, ex):
    """Root-only properties need the namespaces too (a container without CAP_SYS_ADMIN lacks them)."""
    if request.node.get_closest_marker("skipif") is not None and ex.isolation != "full":
        pytest.skip(f"full isolation unavailable here: {ex.isolation}")


def T(i, o):
    return TestCase(input=i, output=o)


@pytest.fixture(scope="module")
def ex():
    # The service's environment holds a secret the programs must never see.
    os.environ[CANARY_ENV] = CANARY_VALUE
    try:
        with LocalExecutor(workers=2, cache_size=0) as e:
            assert e.run(RunRequest(code="print(1)", tests=[T("", "1")])).verdict == Verdict.AC
            yield e
    finally:
        os.environ.pop(CANARY_ENV, None)


def sandbox_processes(ex) -> list[int]:
    """Host pids running as any of the executor's sandbox uids."""
    uids = {str(w["uid"]) for w in ex.worker_info() if w.get("uid") is not None}
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith("Uid:") and line.split()[1] in uids:
                        found.append(int(pid))
        except OSError:
            pass
    return found


def still_works(ex):
    r = ex.run(RunRequest(code="print(sum(map(int, input().split())))", tests=[T("2 40", "42")]))
    assert r.verdict == Verdict.AC, r.tests[0]
    assert not sandbox_processes(ex)


def test_fork_bomb_is_contained_and_leaves_nothing(ex):
    code = "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n"
    before = len(os.listdir("/proc"))
    t0 = time.monotonic()
    r = ex.run(RunRequest(code=code, time_limit_s=1, tests=[T("", "")]))
    assert r.verdict in (Verdict.TLE, Verdict.RE, Verdict.MLE) and time.monotonic() - t0 < 20
    assert len([p for p in os.listdir("/proc") if p.isdigit()]) < before + 20
    still_works(ex)


def test_memory_bomb_is_mle(ex):
    code = "x = []\nwhile True:\n    x.append(b'x' * 10**7)\n"
    r = ex.run(RunRequest(code=code, memory_limit_mb=256, tests=[T("", "")]))
    assert r.verdict == Verdict.MLE, r.tests[0]
    still_works(ex)


@needs_root
def test_memory_bomb_spread_over_processes_is_mle(ex):
    # Each child stays under the per-process limit; together they exceed it (cgroup, not rlimit).
    code = ("import os, time\nkids = []\nfor _ in range(8):\n    pid = os.fork()\n    if pid == 0:\n"
            "        x = b'x' * (150 * 2**20)\n        time.sleep(2)\n        os._exit(0)\n    kids.append(pid)\n"
            "for k in kids:\n    os.waitpid(k, 0)\nprint('done')\n")
    if not ex.worker_info()[0].get("memory_cgroup"):
        pytest.skip("no cgroup-v1 memory controller on this host")
    r = ex.run(RunRequest(code=code, memory_limit_mb=256, time_limit_s=3, tests=[T("", "done")]))
    assert r.verdict == Verdict.MLE, r.tests[0]
    still_works(ex)


def test_busy_loop_is_tle(ex):
    r = ex.run(RunRequest(code="while True:\n    pass\n", time_limit_s=0.5, tests=[T("", "")]))
    assert r.verdict == Verdict.TLE
    still_works(ex)


def test_sleep_is_tle_by_wall_clock(ex):
    t0 = time.monotonic()
    r = ex.run(RunRequest(code="import time\ntime.sleep(1000)\n", time_limit_s=0.5, tests=[T("", "")]))
    assert r.verdict == Verdict.TLE and time.monotonic() - t0 < 10
    still_works(ex)


def test_signal_ignoring_loop_is_still_killed(ex):
    code = ("import signal\nfor s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGXCPU, signal.SIGALRM,"
            " signal.SIGUSR1):\n    signal.signal(s, signal.SIG_IGN)\nwhile True:\n    pass\n")
    t0 = time.monotonic()
    r = ex.run(RunRequest(code=code, time_limit_s=0.5, tests=[T("", "")]))
    assert r.verdict == Verdict.TLE and r.tests[0].signal == 9 and time.monotonic() - t0 < 10
    still_works(ex)


@needs_root
def test_background_child_does_not_outlive_the_test(ex):
    code = ("import os, time\nif os.fork() == 0:\n    os.setsid()\n    if os.fork() == 0:\n"
            "        time.sleep(300)\n    os._exit(0)\nprint('parent done')\n")
    r = ex.run(RunRequest(code=code, tests=[T("", "parent done")]))
    assert r.verdict == Verdict.AC, r.tests[0]
    assert not sandbox_processes(ex)  # the PID namespace died with the program
    still_works(ex)


@needs_root
def test_no_network_to_the_hosts_loopback(ex):
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    listener.settimeout(0.2)
    port = listener.getsockname()[1]
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", 0))
    udp.settimeout(0.2)
    uport = udp.getsockname()[1]
    accepted = []
    stop = threading.Event()

    def accept_loop():
        while not stop.is_set():
            try:
                accepted.append(listener.accept())
            except OSError:
                pass

    th = threading.Thread(target=accept_loop, daemon=True)
    th.start()
    code = f"""import socket
for host in ("127.0.0.1", "localhost", "0.0.0.0"):
    try:
        socket.create_connection((host, {port}), timeout=2)
        print("CONNECTED", host)
    except OSError:
        print("blocked")
try:
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    u.sendto(b"escape", ("127.0.0.1", {uport}))
    print("sent")
except OSError:
    print("blocked")
"""
    try:
        r = ex.run(RunRequest(code=code, tests=[T("", "")]))
        time.sleep(0.3)
    finally:
        stop.set()
        th.join()
        listener.close()
    assert "CONNECTED" not in r.tests[0].stdout, r.tests[0]
    assert accepted == []
    try:
        data = udp.recv(100)
    except OSError:
        data = b""
    udp.close()
    assert data == b""
    still_works(ex)


@needs_root
def test_host_files_are_invisible_and_unwritable(ex, tmp_path):
    canary = tmp_path / "canary.txt"
    canary.write_text("host secret 42\n")
    os.chmod(tmp_path, 0o777)
    os.chmod(canary, 0o666)  # even a world-writable host file must be out of reach
    code = f"""import os
def attempt(label, fn):
    try:
        fn()
        print(label, "OK")
    except OSError as e:
        print(label, "denied", type(e).__name__)
attempt("read-canary", lambda: print(open({str(canary)!r}).read()))
attempt("write-canary", lambda: open({str(canary)!r}, "w").write("pwned"))
attempt("create-beside", lambda: open({str(tmp_path / 'new.txt')!r}, "w").write("pwned"))
attempt("write-etc", lambda: open("/etc/passwd", "a").write("evil"))
attempt("write-usr", lambda: open("/usr/evil", "w").write("evil"))
attempt("write-tmp-root", lambda: open("/tmp/evil", "w").write("evil"))
attempt("read-shadow", lambda: open("/etc/shadow").read())
attempt("read-repo", lambda: os.listdir("/work"))
attempt("read-proc", lambda: print(os.listdir("/proc")))
attempt("chmod-usr", lambda: os.chmod("/usr/bin", 0o777))
attempt("own-dir", lambda: open("mine.txt", "w").write("fine"))
print("uid", os.getuid(), "root-entries", sorted(os.listdir("/")))
"""
    r = ex.run(RunRequest(code=code, tests=[T("", "")]))
    out = r.tests[0].stdout
    assert r.verdict == Verdict.WA, r.tests[0]  # ran to the end (the expected output is empty)
    for label in ("read-canary", "write-canary", "create-beside", "write-etc", "write-usr", "write-tmp-root",
                  "read-shadow", "read-repo", "chmod-usr"):
        assert f"{label} denied" in out, out
    assert "own-dir OK" in out
    assert "host secret" not in out
    assert "uid 0 " not in out
    assert canary.read_text() == "host secret 42\n"
    assert not (tmp_path / "new.txt").exists()
    assert not os.path.exists("/usr/evil") and "evil" not in open("/etc/passwd").read()
    still_works(ex)


def test_service_environment_is_not_visible(ex):
    code = f"""import os
print(sorted(os.environ.items()))
for path in ("/proc/self/environ", "/proc/1/environ", "/proc/{os.getpid()}/environ", "/proc/{os.getppid()}/environ"):
    try:
        print(open(path, "rb").read())
    except OSError as e:
        print(path, "denied")
"""
    r = ex.run(RunRequest(code=code, tests=[T("", "")]))
    assert CANARY_VALUE not in r.tests[0].stdout + r.tests[0].stderr
    assert CANARY_ENV not in r.tests[0].stdout
    assert "PATH" in r.tests[0].stdout  # the program does get a (clean) environment
    still_works(ex)


def test_huge_output_is_ole_quickly(ex):
    code = "import os\nwhile True:\n    os.write(1, b'z' * 1048576)\n"
    t0 = time.monotonic()
    r = ex.run(RunRequest(code=code, output_limit_mb=8, tests=[T("", "")]))
    assert r.verdict == Verdict.OLE and r.tests[0].stdout_truncated and time.monotonic() - t0 < 10
    still_works(ex)


@needs_root
def test_killing_the_parent_or_everyone_does_not_help(ex):
    workers = [w["pid"] for w in ex.worker_info()]
    targets = [os.getpid(), *workers, 1]
    code = f"""import os, signal
for pid in {targets!r} + [os.getppid()]:
    try:
        os.kill(pid, signal.SIGKILL)
        print("killed", pid)
    except OSError as e:
        print("denied", pid, type(e).__name__)
try:
    os.kill(-1, signal.SIGKILL)
except OSError:
    pass
print("still here")
"""
    r = ex.run(RunRequest(code=code, tests=[T("", "")]))
    assert "still here" in r.tests[0].stdout, r.tests[0]
    for pid in workers:
        os.kill(pid, 0)  # raises if the worker died
    assert [w["pid"] for w in ex.worker_info()] == workers
    still_works(ex)


@needs_root
def test_privilege_escalation_attempts_fail(ex):
    code = """import ctypes, os
libc = ctypes.CDLL(None, use_errno=True)
def attempt(label, fn):
    try:
        rc = fn()
        print(label, "denied" if rc not in (None, 0) else "OK")
    except (OSError, PermissionError) as e:
        print(label, "denied")
attempt("setuid0", lambda: os.setuid(0))
attempt("chroot", lambda: os.chroot("/tmp"))
attempt("unshare-user", lambda: libc.unshare(0x10000000))
attempt("unshare-net", lambda: libc.unshare(0x40000000))
attempt("mount", lambda: libc.mount(b"tmpfs", b"/tmp", b"tmpfs", 0, None))
"""
    r = ex.run(RunRequest(code=code, tests=[T("", "")]))
    out = r.tests[0].stdout
    for label in ("setuid0", "chroot", "unshare-user", "unshare-net", "mount"):
        assert f"{label} denied" in out, out
    still_works(ex)


def test_files_do_not_leak_between_tests(ex):
    writer = "open('left.txt', 'w').write('from an earlier program')\nprint('w')"
    reader = "import os\nprint(sorted(os.listdir('.')))"
    for _ in range(2):  # both workers
        assert ex.run(RunRequest(code=writer, tests=[T("", "w")] * 2)).verdict == Verdict.AC
    r = ex.run(RunRequest(code=reader, tests=[T("", "[]")] * 4))
    assert r.verdict == Verdict.AC, [t.stdout for t in r.tests]


@needs_root  # degraded mode has no size-capped tmpfs: the program would fill the host's disk
def test_filling_the_temp_dir_is_contained(ex):
    code = ("import os\ni = 0\ntry:\n    while True:\n        with open(f'f{i}', 'wb') as f:\n"
            "            f.write(b'x' * (8 << 20))\n        i += 1\nexcept OSError as e:\n    print('full', type(e).__name__)\n")
    r = ex.run(RunRequest(code=code, memory_limit_mb=1024, time_limit_s=4, tests=[T("", "full OSError")]))
    assert r.verdict == Verdict.AC, r.tests[0]  # the worker's tmpfs is capped: ENOSPC, not a full host disk
    still_works(ex)


def test_many_parallel_requests_are_all_judged_right(ex):
    programs = {
        "print(int(input()) * 2)": lambda n: (str(2 * n), Verdict.AC),
        "print(int(input()) * 2 + 1)": lambda n: (str(2 * n), Verdict.WA),
        "n = int(input())\nprint(1 // (n - n))": lambda n: ("", Verdict.RE),
    }
    jobs = []
    for k in range(60):
        code, expect = list(programs.items())[k % 3]
        n = k * 7 + 1
        out, verdict = expect(n)
        jobs.append((RunRequest(code=code + f"\n# {k}", tests=[T(str(n), out), T(str(n), out)]), verdict))
    results: dict[int, Verdict] = {}

    def worker(ids):
        for i in ids:
            results[i] = ex.run(jobs[i][0]).verdict

    threads = [threading.Thread(target=worker, args=(range(t, 60, 12),)) for t in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [results[i] for i in range(60)] == [v for _, v in jobs]
    still_works(ex)


@needs_root
def test_sysv_shared_memory_does_not_survive_the_test(ex):
    """IPC objects outlive processes; a fresh IPC namespace per test keeps them from persisting
    (piling up memory, or carrying data to the next program)."""
    create = ("import ctypes\nlibc = ctypes.CDLL(None, use_errno=True)\n"
              "print('created', libc.shmget(4242, 1 << 20, 0o1666) >= 0)\n")
    find = "import ctypes\nlibc = ctypes.CDLL(None, use_errno=True)\nprint('found', libc.shmget(4242, 0, 0o666) >= 0)\n"
    assert ex.run(RunRequest(code=create, tests=[T("", "created True")] * 2)).verdict == Verdict.AC
    assert ex.run(RunRequest(code=find, tests=[T("", "found False")] * 4)).verdict == Verdict.AC
    still_works(ex)


def test_compiler_fed_an_endless_file_is_a_compile_error(ex):
    from sandbox import languages

    if languages.availability()["cpp"]:
        pytest.skip("g++ not installed")
    t0 = time.monotonic()
    r = ex.run(RunRequest(language="cpp", code='#include "/dev/zero"\nint main() {}', tests=[T("", "")]))
    assert r.verdict == Verdict.CE and time.monotonic() - t0 < 130
    still_works(ex)


@needs_root
def test_jvm_with_its_own_proc_sees_only_its_namespace(ex):
    """Java runs get a /proc (the JVM needs one) and no address-space rlimit: check that this /proc
    shows only the program's own PID namespace and that heap bombs are still MLE."""
    from sandbox import languages

    if languages.availability()["java"]:
        pytest.skip("no JDK installed")
    code = f"""import java.io.*; import java.net.*; import java.util.*;
public class Main {{ public static void main(String[] a) throws Exception {{
  int n = 0; for (File f : new File("/proc").listFiles()) if (f.getName().matches("\\\\d+")) n++;
  System.out.println("pids " + n);
  System.out.println("service proc " + new File("/proc/{os.getpid()}/environ").canRead());
  System.out.println("env " + System.getenv().containsKey("{CANARY_ENV}"));
  try {{ new Socket("127.0.0.1", 9); System.out.println("net open"); }} catch (IOException e) {{ System.out.println("net blocked"); }}
}} }}"""
    r = ex.run(RunRequest(language="java", code=code, tests=[T("", "")]))
    out = r.tests[0].stdout
    assert "service proc false" in out and "env false" in out and "net blocked" in out, r.tests[0]
    assert int(out.split("pids ")[1].split()[0]) <= 3  # the JVM itself (PID 1), nothing of the host
    bomb = """import java.util.*;
public class Main { public static void main(String[] a) { List<long[]> l = new ArrayList<>();
  while (true) l.add(new long[1 << 20]); } }"""
    r = ex.run(RunRequest(language="java", code=bomb, memory_limit_mb=256, tests=[T("", "")]))
    assert r.verdict == Verdict.MLE, r.tests[0]
    still_works(ex)
