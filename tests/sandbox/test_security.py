"""The security suite: one hostile program per isolation property. Each checks the verdict, that the
host is untouched (files, processes, network listeners, environment) and that the judge still
judges correctly afterwards. Everything runs real programs in the real sandbox, on two targets
(see conftest.py): ``local`` (an in-process LocalExecutor on this machine, which needs root) and
``docker`` (the service's container, its documented flags, through HTTP; the "host" is then the
inside of the container, inspected with ``docker exec``)."""

import os
import socket
import threading
import time

import pytest

from sandbox.spec import RunRequest, TestCase, Verdict
from tests.sandbox.conftest import CANARY_ENV, CANARY_VALUE

TARGETS = ["local", "docker"]


def T(i, o):
    return TestCase(input=i, output=o)


def still_works(target):
    r = target.run(RunRequest(code="print(sum(map(int, input().split())))", tests=[T("2 40", "42")]))
    assert r.verdict == Verdict.AC, r.tests[0]
    assert not target.sandbox_processes()
    assert target.health()["workers_replaced"] == 0  # no program broke a worker


def test_fork_bomb_is_contained_and_leaves_nothing(target):
    code = "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n"
    t0 = time.monotonic()
    r = target.run(RunRequest(code=code, time_limit_s=1, tests=[T("", "")]))
    assert r.verdict in (Verdict.TLE, Verdict.RE, Verdict.MLE) and time.monotonic() - t0 < 20
    still_works(target)


def test_memory_bomb_is_mle(target):
    code = "x = []\nwhile True:\n    x.append(b'x' * 10**7)\n"
    r = target.run(RunRequest(code=code, memory_limit_mb=256, tests=[T("", "")]))
    assert r.verdict == Verdict.MLE, r.tests[0]
    still_works(target)


def test_memory_bomb_spread_over_processes_is_mle(target):
    """Each child stays under the per-process limit; together they exceed it: the memory cgroup (which
    every mode has, the container included, or the service refuses to start) catches the tree."""
    code = ("import os, time\nkids = []\nfor _ in range(8):\n    pid = os.fork()\n    if pid == 0:\n"
            "        x = b'x' * (150 * 2**20)\n        time.sleep(2)\n        os._exit(0)\n    kids.append(pid)\n"
            "for k in kids:\n    os.waitpid(k, 0)\nprint('done')\n")
    r = target.run(RunRequest(code=code, memory_limit_mb=256, time_limit_s=3, tests=[T("", "done")]))
    assert r.verdict == Verdict.MLE, r.tests[0]
    assert r.unenforced == []
    still_works(target)


def test_busy_loop_is_tle(target):
    r = target.run(RunRequest(code="while True:\n    pass\n", time_limit_s=0.5, tests=[T("", "")]))
    assert r.verdict == Verdict.TLE
    still_works(target)


def test_sleep_is_tle_by_wall_clock(target):
    t0 = time.monotonic()
    r = target.run(RunRequest(code="import time\ntime.sleep(1000)\n", time_limit_s=0.5, tests=[T("", "")]))
    assert r.verdict == Verdict.TLE and time.monotonic() - t0 < 10
    still_works(target)


def test_signal_ignoring_loop_is_still_killed(target):
    code = ("import signal\nfor s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGXCPU, signal.SIGALRM,"
            " signal.SIGUSR1):\n    signal.signal(s, signal.SIG_IGN)\nwhile True:\n    pass\n")
    t0 = time.monotonic()
    r = target.run(RunRequest(code=code, time_limit_s=0.5, tests=[T("", "")]))
    assert r.verdict == Verdict.TLE and r.tests[0].signal == 9 and time.monotonic() - t0 < 10
    still_works(target)


def test_background_child_does_not_outlive_the_test(target):
    code = ("import os, time\nif os.fork() == 0:\n    os.setsid()\n    if os.fork() == 0:\n"
            "        time.sleep(300)\n    os._exit(0)\nprint('parent done')\n")
    r = target.run(RunRequest(code=code, tests=[T("", "parent done")]))
    assert r.verdict == Verdict.AC, r.tests[0]
    assert not target.sandbox_processes()  # the PID namespace died with the program
    still_works(target)


def test_no_network_to_the_hosts_loopback_or_the_docker_bridge(target):
    """On the machine: a TCP and a UDP listener on its loopback. In the container: the service's own
    port on the container's loopback, and a listener on this machine reached through the bridge."""
    bind = "0.0.0.0" if target.name == "docker" else "127.0.0.1"
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind((bind, 0))
    listener.listen(8)
    listener.settimeout(0.2)
    port = listener.getsockname()[1]
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind((bind, 0))
    udp.settimeout(0.2)
    uport = udp.getsockname()[1]
    if target.name == "docker":
        target.container.reload()
        gateway = target.container.attrs["NetworkSettings"]["Gateway"] or "172.17.0.1"
        hosts = [("127.0.0.1", 8080), (gateway, port), ("localhost", 8080)]
        udp_host = gateway
    else:
        hosts = [("127.0.0.1", port), ("localhost", port), ("0.0.0.0", port)]
        udp_host = "127.0.0.1"
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
for host, port in {hosts!r}:
    try:
        socket.create_connection((host, port), timeout=2)
        print("CONNECTED", host)
    except OSError:
        print("blocked")
try:
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    u.sendto(b"escape", ({udp_host!r}, {uport}))
    print("sent")
except OSError:
    print("blocked")
"""
    try:
        r = target.run(RunRequest(code=code, tests=[T("", "")]))
        time.sleep(0.3)
    finally:
        stop.set()
        th.join()
        listener.close()
    assert "CONNECTED" not in r.tests[0].stdout, r.tests[0]
    assert r.tests[0].stdout.count("blocked") >= 3, r.tests[0]
    assert accepted == []
    try:
        data = udp.recv(100)
    except OSError:
        data = b""
    udp.close()
    assert data == b""
    still_works(target)


def test_host_files_are_invisible_and_unwritable(target):
    d = f"/tmp/codealign-canary-{os.getpid()}-{time.monotonic_ns()}"
    canary = f"{d}/canary.txt"
    target.host(f"import os\nos.makedirs({d!r})\nopen({canary!r}, 'w').write('host secret 42\\n')\n"
                f"os.chmod({d!r}, 0o777)\nos.chmod({canary!r}, 0o666)")  # even a world-writable host file
    code = f"""import os
def attempt(label, fn):
    try:
        fn()
        print(label, "OK")
    except OSError as e:
        print(label, "denied", type(e).__name__)
attempt("read-canary", lambda: print(open({canary!r}).read()))
attempt("write-canary", lambda: open({canary!r}, "w").write("pwned"))
attempt("create-beside", lambda: open({d + '/new.txt'!r}, "w").write("pwned"))
attempt("write-etc", lambda: open("/etc/passwd", "a").write("evil"))
attempt("write-usr", lambda: open("/usr/evil", "w").write("evil"))
attempt("write-tmp-root", lambda: open("/tmp/evil", "w").write("evil"))
attempt("read-shadow", lambda: open("/etc/shadow").read())
attempt("read-repo", lambda: os.listdir("/work"))
attempt("read-service", lambda: os.listdir("/opt/codealign"))
attempt("read-proc", lambda: print(os.listdir("/proc")))
attempt("read-cgroups", lambda: print(os.listdir("/sys/fs/cgroup")))
attempt("chmod-usr", lambda: os.chmod("/usr/bin", 0o777))
attempt("own-dir", lambda: open("mine.txt", "w").write("fine"))
print("uid", os.getuid(), "root-entries", sorted(os.listdir("/")))
"""
    r = target.run(RunRequest(code=code, tests=[T("", "")]))
    out = r.tests[0].stdout
    assert r.verdict == Verdict.WA, r.tests[0]  # ran to the end (the expected output is empty)
    for label in ("read-canary", "write-canary", "create-beside", "write-etc", "write-usr", "write-tmp-root",
                  "read-shadow", "read-repo", "read-service", "read-cgroups", "chmod-usr"):
        assert f"{label} denied" in out, out
    assert "own-dir OK" in out
    assert "host secret" not in out
    assert "uid 0 " not in out
    after = target.host(f"import os\nprint(open({canary!r}).read(), os.path.exists({d + '/new.txt'!r}), "
                        "os.path.exists('/usr/evil'), 'evil' in open('/etc/passwd').read())")
    assert after.split() == ["host", "secret", "42", "False", "False", "False"], after
    target.host(f"import shutil\nshutil.rmtree({d!r})")
    still_works(target)


def test_service_environment_is_not_visible(target):
    code = """import os
print(sorted(os.environ.items()))
for path in ("/proc/self/environ", "/proc/1/environ", "/proc/2/environ", "/proc/7/environ"):
    try:
        print(open(path, "rb").read())
    except OSError as e:
        print(path, "denied")
"""
    r = target.run(RunRequest(code=code, tests=[T("", "")]))
    assert CANARY_VALUE not in r.tests[0].stdout + r.tests[0].stderr
    assert CANARY_ENV not in r.tests[0].stdout
    assert "PATH" in r.tests[0].stdout  # the program does get a (clean) environment
    still_works(target)


def test_huge_output_is_ole_quickly(target):
    code = "import os\nwhile True:\n    os.write(1, b'z' * 1048576)\n"
    t0 = time.monotonic()
    r = target.run(RunRequest(code=code, output_limit_mb=8, tests=[T("", "")]))
    assert r.verdict == Verdict.OLE and r.tests[0].stdout_truncated and time.monotonic() - t0 < 10
    still_works(target)


def test_killing_the_parent_or_everyone_does_not_help(target):
    pids = [int(p) for p in target.host("import os\nprint(' '.join(p for p in os.listdir('/proc') if p.isdigit()))").split()]
    code = f"""import os, signal
for pid in {sorted(pids)[:200]!r} + [os.getppid(), 1]:
    try:
        os.kill(pid, signal.SIGKILL)
        print("killed", pid)
    except OSError as e:
        pass
try:
    os.kill(-1, signal.SIGKILL)
except OSError:
    pass
print("still here")
"""
    r = target.run(RunRequest(code=code, tests=[T("", "")]))
    out = r.tests[0].stdout
    assert "still here" in out, r.tests[0]
    # 0 and 1 are the program itself (PID 1 of its namespace, which ignores its own SIGKILL); every
    # other pid of the host is out of its reach
    assert {line.split()[1] for line in out.splitlines() if line.startswith("killed")} <= {"0", "1"}, out
    still_works(target)


def test_privilege_escalation_attempts_fail(target):
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
    r = target.run(RunRequest(code=code, tests=[T("", "")]))
    out = r.tests[0].stdout
    for label in ("setuid0", "chroot", "unshare-user", "unshare-net", "mount"):
        assert f"{label} denied" in out, out
    still_works(target)


def test_files_do_not_leak_between_tests(target):
    writer = "open('left.txt', 'w').write('from an earlier program')\nprint('w')"
    reader = "import os\nprint(sorted(os.listdir('.')))"
    for _ in range(2):  # both workers
        assert target.run(RunRequest(code=writer, tests=[T("", "w")] * 2)).verdict == Verdict.AC
    r = target.run(RunRequest(code=reader, tests=[T("", "[]")] * 4))
    assert r.verdict == Verdict.AC, [t.stdout for t in r.tests]


def test_filling_the_temp_dir_is_contained(target):
    code = ("import os\ni = 0\ntry:\n    while True:\n        with open(f'f{i}', 'wb') as f:\n"
            "            f.write(b'x' * (8 << 20))\n        i += 1\nexcept OSError as e:\n    print('full', type(e).__name__)\n")
    r = target.run(RunRequest(code=code, memory_limit_mb=1024, time_limit_s=4, tests=[T("", "full OSError")]))
    assert r.verdict == Verdict.AC, r.tests[0]  # the test's tmpfs is capped: ENOSPC, not a full host disk
    still_works(target)


def test_many_parallel_requests_are_all_judged_right(target):
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
        jobs.append((RunRequest(code=code + f"\n# {k} {time.monotonic_ns()}", tests=[T(str(n), out), T(str(n), out)]),
                     verdict))
    results: dict[int, Verdict] = {}

    def worker(ids):
        for i in ids:
            results[i] = target.run(jobs[i][0]).verdict

    threads = [threading.Thread(target=worker, args=(range(t, 60, 12),)) for t in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [results[i] for i in range(60)] == [v for _, v in jobs]
    still_works(target)


def test_sysv_shared_memory_does_not_survive_the_test(target):
    """IPC objects outlive processes; a fresh IPC namespace per test keeps them from persisting
    (piling up memory, or carrying data to the next program)."""
    create = ("import ctypes\nlibc = ctypes.CDLL(None, use_errno=True)\n"
              "print('created', libc.shmget(4242, 1 << 20, 0o1666) >= 0)\n")
    find = "import ctypes\nlibc = ctypes.CDLL(None, use_errno=True)\nprint('found', libc.shmget(4242, 0, 0o666) >= 0)\n"
    assert target.run(RunRequest(code=create, tests=[T("", "created True")] * 2)).verdict == Verdict.AC
    assert target.run(RunRequest(code=find, tests=[T("", "found False")] * 4)).verdict == Verdict.AC
    still_works(target)


def test_compiler_fed_an_endless_file_is_a_compile_error_within_its_memory_limit(target):
    """g++ reading /dev/zero: its cc1plus grows until its limit (RLIMIT_AS and the compile's memory
    cgroup, 2 GiB), in every mode, the container included; never gigabytes more."""
    from sandbox import languages

    if target.name == "local" and languages.availability()["cpp"]:
        pytest.skip("g++ not installed")
    t0 = time.monotonic()
    r = target.run(RunRequest(language="cpp", code=f'#include "/dev/zero"\nint main() {{}} // {time.monotonic_ns()}',
                              tests=[T("", "")]))
    assert r.verdict == Verdict.CE and time.monotonic() - t0 < 130, r.compile_output[-500:]
    assert "memory" in r.compile_output or "out of memory" in r.compile_output or "virtual memory" in r.compile_output, \
        r.compile_output[-500:]
    still_works(target)


def test_jvm_with_its_own_proc_sees_only_its_namespace(target):
    """Java runs get a /proc (the JVM needs one) and no address-space rlimit: check that this /proc
    shows only the program's own PID namespace and that heap bombs are still MLE."""
    from sandbox import languages

    if target.name == "local" and languages.availability()["java"]:
        pytest.skip("no JDK installed")
    code = f"""import java.io.*; import java.net.*; import java.util.*;
public class Main {{ public static void main(String[] a) throws Exception {{
  int n = 0; for (File f : new File("/proc").listFiles()) if (f.getName().matches("\\\\d+")) n++;
  System.out.println("pids " + n);
  boolean leak = false;
  for (File f : new File("/proc").listFiles()) {{
    try {{ leak |= new String(java.nio.file.Files.readAllBytes(new File(f, "environ").toPath())).contains("{CANARY_VALUE}"); }}
    catch (Exception e) {{ }}
  }}
  System.out.println("service proc " + leak);
  System.out.println("env " + System.getenv().containsKey("{CANARY_ENV}"));
  try {{ new Socket("127.0.0.1", 9); System.out.println("net open"); }} catch (IOException e) {{ System.out.println("net blocked"); }}
}} }}"""
    r = target.run(RunRequest(language="java", code=code, tests=[T("", "")]))
    out = r.tests[0].stdout
    assert "service proc false" in out and "env false" in out and "net blocked" in out, r.tests[0]
    assert int(out.split("pids ")[1].split()[0]) <= 3  # the JVM itself (PID 1), nothing of the host
    bomb = """import java.util.*;
public class Main { public static void main(String[] a) { List<long[]> l = new ArrayList<>();
  while (true) l.add(new long[1 << 20]); } }"""
    r = target.run(RunRequest(language="java", code=bomb, memory_limit_mb=256, tests=[T("", "")]))
    assert r.verdict == Verdict.MLE, r.tests[0]
    still_works(target)
