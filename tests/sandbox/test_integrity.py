"""Judge integrity: hostile programs aimed at the *judge* rather than the host. No program may break
the judge for later programs, read another program's data, crash the judging step, or pass by
gaming the harness. Each class of issue #9 has its test here, run on every target (see conftest.py):
the in-process LocalExecutor, the HTTP service on 127.0.0.1 and the service's container."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import threading
import time

import httpx
import pytest

from sandbox.spec import RunRequest, TestCase, Verdict

TARGETS = ["local", "http", "docker"]


def T(i, o):
    return TestCase(input=i, output=o)


def judges_correctly(target) -> None:
    r = target.run(RunRequest(code="print(sum(map(int, input().split())))", tests=[T("2 40", "42")] * 4))
    assert r.verdict == Verdict.AC, r.tests[0]
    health = target.health()
    assert health["workers_replaced"] == 0 and not health.get("broken", health.get("broken_workers")), health


# -- 1. nothing a program leaves behind defeats the clean-up -------------------------------------------

LITTER = r"""
import os, socket, stat
home = os.getcwd()
os.mkdir("deep"); os.chdir("deep")
for _ in range(1300):                      # deeper than any recursive tree removal goes
    os.mkdir("d"); os.chdir("d")
os.chdir(home)
os.symlink("/", "root-link"); os.symlink("deep", "dir-link"); os.symlink("nowhere", "dangling")
os.mkfifo("fifo")
s = socket.socket(socket.AF_UNIX); s.bind("sock")
os.mkdir("locked"); open("locked/f", "w").write("x"); os.chmod("locked", 0)
open("nothing", "w").write("x"); os.chmod("nothing", 0)
os.chmod(".", stat.S_IRUSR)                # even the work dir itself
for name, make in (("shm-file", lambda p: open(p, "w").write("left")), ("shm-link", lambda p: os.symlink("/tmp", p)),
                   ("shm-dir", lambda p: os.mkdir(p)), ("shm-fifo", os.mkfifo)):
    try:
        make("/dev/shm/" + name)
    except OSError as e:
        print(name, e)
print("littered")
"""

LOOK = r"""
import os
seen = {}
for d in (".", "/dev/shm", "/tmp", "/tmp/in"):
    try:
        seen[d] = sorted(os.listdir(d))
    except OSError as e:
        seen[d] = type(e).__name__
print(seen)
"""


def test_nothing_a_program_leaves_behind_defeats_the_cleanup(target):
    for _ in range(2):  # every worker gets littered
        r = target.run(RunRequest(code=LITTER + f"# {secrets.token_hex(4)}", tests=[T("", "littered")] * 2))
        assert r.verdict == Verdict.AC, r.tests[0]
    r = target.run(RunRequest(code=LOOK, tests=[T("", "")] * 6))
    for t in r.tests:  # a fresh, empty work dir and /dev/shm on every worker; /tmp (read-only) holds only the work
        # dir, and no input file is anywhere (inputs arrive as descriptors)
        assert t.stdout.strip() == "{'.': [], '/dev/shm': [], '/tmp': ['w'], '/tmp/in': 'FileNotFoundError'}", t.stdout
    judges_correctly(target)


# -- 2. nothing of another program is in a program's memory -------------------------------------------

HUNTER = r"""
import gc, sys, types
own = input()
def strings(o):
    if isinstance(o, str):
        yield o
    elif isinstance(o, (bytes, bytearray)):
        yield bytes(o).decode("latin-1")
    elif isinstance(o, memoryview):
        try:
            yield o.tobytes().decode("latin-1")
        except Exception:
            pass
import re
token = re.compile("(?:NEIGH" + "BOUR|O" + "WN)-[0-9a-f]{16}")  # (split: the hunter's own code holds no token)
found = set()
def look(o):
    for s in strings(o):
        found.update(token.findall(s))
seen = set()
def walk(o, depth=0):
    if id(o) in seen or depth > 4:
        return
    seen.add(id(o))
    look(o)
    if isinstance(o, dict):
        for k, v in list(o.items()):
            walk(k, depth + 1); walk(v, depth + 1)
    elif isinstance(o, (list, tuple, set, frozenset)):
        for v in list(o):
            walk(v, depth + 1)
    elif isinstance(o, types.CodeType):
        for v in o.co_consts:
            walk(v, depth + 1)
    elif hasattr(o, "__dict__") and not isinstance(o, type):
        walk(vars(o), depth + 1)
f = sys._getframe()
while f is not None:                       # every frame up the stack: locals, globals, constants
    walk(f.f_locals); walk(f.f_globals); walk(f.f_code)
    f = f.f_back
for o in gc.get_objects():                 # every object the collector knows, and what they refer to
    walk(o)
for m in list(sys.modules.values()):
    walk(getattr(m, "__dict__", {}))
print(sorted(found))
"""


def test_no_earlier_program_or_test_data_is_reachable_in_memory(target):
    """A neighbour's output, input and code (and its return value) are nowhere in the hunter's frames,
    its gc objects or its modules; the hunter does find its own input, so the hunt works."""
    neighbour = "NEIGHBOUR-" + secrets.token_hex(8)
    code = f"x = input()\nprint('{neighbour}' + x[-1])\n"
    r = target.run(RunRequest(code=code, tests=[T(neighbour + "i", neighbour + "i")] * 4))
    assert r.verdict == Verdict.AC, r.tests[0]
    code = f"def f(a):\n    return '{neighbour}'\n"
    r = target.run(RunRequest(code=code, fn_name="f", tests=[TestCase(input=[neighbour + "a"], output=neighbour)] * 4))
    assert r.verdict == Verdict.AC, r.tests[0]
    own = "OWN-" + secrets.token_hex(8)
    r = target.run(RunRequest(code=HUNTER, tests=[T(own, "")] * 4, time_limit_s=10))
    for t in r.tests:
        assert t.exit_code == 0, t.stderr[-2000:]
        assert t.stdout.strip() == f"[{own!r}]", t.stdout[:2000]
    judges_correctly(target)


# -- 3. the result channel cannot be written or forged; every value compares ---------------------------

CPP_WRITES_FD3 = r"""#include <unistd.h>
#include <cstdio>
#include <cerrno>
int main() { long n = write(3, "\"x\"", 3); std::printf("%ld %d\n", n, errno); return 1; }
"""


@pytest.mark.parametrize(("code", "fn_name", "verdict"), [
    ("import os\nos.write(3, b'\"x\"')\nraise SystemExit(1)", None, Verdict.RE),
    ("import os\nos.write(3, b'[' * 100000)\nprint(42)", None, Verdict.AC),
    ("import os\nos.write(3, os.urandom(4096))\nprint(42)", None, Verdict.AC),
    ("import os\nos.write(3, b'{\"value\": 42}')\nos._exit(0)\ndef f():\n    return 0", "f", Verdict.RE),
    ("import os\ndef f():\n    os.write(3, b'{\"value\": 42}')\n    os._exit(0)", "f", Verdict.RE),
    ("import os\ndef f():\n    os.write(3, b'[' * 100000)\n    return 41", "f", Verdict.WA),
    ("import os\nos.close(3)\ndef f():\n    return 42", "f", Verdict.RE),
], ids=["fd3-string-then-exit-1", "fd3-deep-brackets", "fd3-garbage", "forged-value-then-exit",
        "forged-value-from-the-function", "deep-brackets-then-wrong", "closes-the-channel"])
def test_the_result_channel_cannot_be_forged_or_broken(target, code, fn_name, verdict):
    tests = [TestCase(input=[], output=42)] if fn_name else [T("", "42")]
    r = target.run(RunRequest(code=code + f"\n# {secrets.token_hex(4)}", fn_name=fn_name, tests=tests * 2))
    assert r.verdict == verdict, r.tests[0]
    judges_correctly(target)


FORKS_AND_TERMINATES = r"""
import os, signal, time, multiprocessing
def killed_child(fork):
    pid = fork()
    if pid == 0:
        time.sleep(30)
        os._exit(0)
    time.sleep(0.05)
    os.kill(pid, signal.SIGTERM)
    _, status = os.waitpid(pid, 0)
    return os.WTERMSIG(status) if os.WIFSIGNALED(status) else 1000 + os.WEXITSTATUS(status)
def f():
    import ctypes
    with multiprocessing.Pool(2) as p:  # __exit__ terminates the workers with SIGTERM
        total = sum(p.map(abs, range(-4, 5)))
    return [total, killed_child(os.fork), killed_child(ctypes.CDLL(None).fork)]
"""


def test_children_the_program_forks_die_by_signal_and_cannot_report(target):
    """A child a Python program forks (multiprocessing's workers, a bare os.fork or libc's fork) dies
    of SIGTERM as under python3, and never reports on the program's behalf: the program's own
    returned value is judged (the child once took the report nonce, and a second child then hung)."""
    req = RunRequest(code=FORKS_AND_TERMINATES + f"# {secrets.token_hex(4)}", fn_name="f",
                     tests=[TestCase(input=[], output=[20, 15, 15])] * 3)
    r = target.run(req)
    assert r.verdict == Verdict.AC, r.tests[0]
    judges_correctly(target)


def test_a_compiled_program_has_no_result_channel(target):
    r = target.run(RunRequest(language="cpp", code=CPP_WRITES_FD3, tests=[T("", "")]))
    assert r.verdict == Verdict.RE and r.tests[0].stdout.split() == ["-1", "9"], r.tests[0]  # EBADF
    judges_correctly(target)


VALUES = [
    ("10**400", 1.5), ("-(10**400)", [2.5]), ("chr(0xd800)", "x"), ("[chr(0xdfff), 'a']", ["a", "a"]),
    ("float('nan')", 1.0), ("float('inf')", 1e308), ("{1: 2, 'a': [3]}", {"1": 3}),
    ("{frozenset([1]), 'a'}", ["a"]), ("type('E', (), {'__eq__': lambda s, o: True})()", 1),
    ("deep(5000)", [[1]]), ("deep(150)", [[1]]), ("10**5000", 7),
]
VALUE_PRELUDE = ("import sys\nsys.set_int_max_str_digits(0)\n"
                 "def deep(n):\n    x = []\n    for _ in range(n):\n        x = [x]\n    return x\n")


@pytest.mark.parametrize(("expr", "want"), VALUES, ids=[v[0][:24] for v in VALUES])
def test_every_returned_value_compares_or_is_wrong_with_a_message(target, expr, want):
    code = VALUE_PRELUDE + f"def f():\n    return {expr}\n# {secrets.token_hex(4)}"
    req = RunRequest(code=code, fn_name="f", tests=[TestCase(input=[], output=want)])
    for _ in range(2):  # and again from the result cache (where there is one): never a cached 500
        r = target.run(req)
        t = r.tests[0]
        assert t.verdict == Verdict.WA and t.message, t
    judges_correctly(target)


def test_one_bad_sample_never_affects_another(target):
    good = [RunRequest(code=f"def f(a):\n    return a * 2\n# {k}", fn_name="f", tests=[TestCase(input=[k], output=2 * k)])
            for k in range(4)]
    bad = [RunRequest(code=VALUE_PRELUDE + f"def f(a):\n    return {expr}\n", fn_name="f",
                      tests=[TestCase(input=[0], output=want)]) for expr, want in VALUES[:6]]
    bad.append(RunRequest(code="import os\nos.write(3, b'[' * 100000)\nos._exit(1)", tests=[T("", "")]))
    reqs = [r for pair in zip(bad, good + good[:3]) for r in pair]
    if target.name == "local":
        results = target.ex.run_many(reqs)
    else:  # the batch path of the service: one request carrying good and bad programs
        from sandbox.client import SandboxClient

        with SandboxClient(target.url) as client:
            results = client.run_many(reqs)
    verdicts = [r.verdict for r in results]
    assert verdicts[1::2] == [Verdict.AC] * 7, verdicts
    assert all(v in (Verdict.WA, Verdict.RE) for v in verdicts[::2]), verdicts


def test_a_wall_limit_shorter_than_the_start_is_a_tle_not_a_broken_worker(target):
    r = target.run(RunRequest(code=f"print(1)  # {secrets.token_hex(4)}", wall_time_limit_s=0.0005, tests=[T("", "1")] * 3))
    assert r.verdict == Verdict.TLE and all("wall-clock" in t.message for t in r.tests), r.tests[0]
    judges_correctly(target)


# -- 7. fair scheduling, caps, time limits that start with the test ------------------------------------

def test_a_one_test_request_does_not_wait_behind_a_big_one(target):
    big = RunRequest(code=f"import time\ntime.sleep(0.05)\n# {secrets.token_hex(4)}", tests=[T("", "")] * 160,
                     time_limit_s=1)  # >= 4 s on 2 workers
    done = {}

    def submit_big():
        done["big"] = target.run(big)

    th = threading.Thread(target=submit_big)
    th.start()
    time.sleep(1.0)
    t0 = time.monotonic()
    small = target.run(RunRequest(code=f"print(1)\n# {secrets.token_hex(4)}", tests=[T("", "1")]))
    waited = time.monotonic() - t0
    assert small.verdict == Verdict.AC and "big" not in done
    assert waited < 2.0, waited  # ~2 jobs of 0.05 s ahead of it, not 140
    th.join()
    assert done["big"].verdict == Verdict.AC and done["big"].passed == 160


def test_too_many_tests_is_a_clear_4xx(target):
    req = {"code": "print(1)", "tests": [{"input": "", "output": "1"}] * 10_001}
    if target.name == "local":
        from sandbox.errors import RequestTooLarge

        with pytest.raises(RequestTooLarge, match="10001 tests"):
            target.ex.run(req)
        return
    resp = target.post("/v1/run", req)
    assert resp.status_code == 413 and "10001 tests" in resp.json()["detail"], resp.text
    resp = target.post("/v1/testsets", {"tests": req["tests"]})
    assert resp.status_code == 413, resp.text
    judges_correctly(target)


def test_run_code_time_limit_starts_when_the_program_starts(target):
    """/run_code's limits are the program's own: waiting for a worker behind other jobs is no TLE."""
    if target.name == "local":
        pytest.skip("/run_code is an HTTP endpoint")
    hog = {"code": f"import time\ntime.sleep(3)\n# {secrets.token_hex(4)}", "tests": [{"input": "", "output": ""}] * 2,
           "time_limit_s": 1, "wall_time_limit_s": 3.5}
    th = threading.Thread(target=lambda: target.post("/v1/run", hog))
    th.start()
    time.sleep(0.5)  # both workers are now busy for ~2.5 s more
    t0 = time.monotonic()
    body = target.post("/run_code", {"code": "print(1)", "language": "python", "run_timeout": 1}).json()
    assert body["status"] == "Success" and body["run_result"]["stdout"] == "1\n", body
    assert time.monotonic() - t0 > 1.5  # it did wait, and its 1 s limit did not start while it waited
    th.join()


# -- 8. housekeeping ----------------------------------------------------------------------------------

def test_sixty_four_threads_start_under_the_default_limits(target):
    code = ("import threading\nev = threading.Event()\nts = [threading.Thread(target=ev.wait) for _ in range(64)]\n"
            "for t in ts:\n    t.start()\nev.set()\nfor t in ts:\n    t.join()\nprint(len(ts))\n")
    r = target.run(RunRequest(code=code, tests=[T("", "64")]))
    assert r.verdict == Verdict.AC, r.tests[0]


@pytest.mark.parametrize("field", ["code", "stdin", "output", "fn_name", "testset"])
def test_an_invalid_unicode_escape_is_a_4xx(target, field):
    if target.name == "local":
        pytest.skip("an HTTP request field")
    bad = "\ud800"
    bodies = {
        "code": ("/v1/run", {"code": "print(1)" + bad, "tests": [{"input": "", "output": "1"}]}),
        "stdin": ("/run_code", {"code": "print(1)", "language": "python", "stdin": bad}),
        "output": ("/v1/run", {"code": "print(1)", "tests": [{"input": "", "output": bad}]}),
        "fn_name": ("/v1/run", {"code": "print(1)", "fn_name": "f" + bad, "tests": []}),
        "testset": ("/v1/testsets", {"tests": [{"input": bad, "output": "1"}]}),
    }
    path, body = bodies[field]
    raw = httpx.post(target.url + path, content=__import__("json").dumps(body).encode(),  # "\ud800" escaped
                     headers={"content-type": "application/json"}, timeout=60)
    assert 400 <= raw.status_code < 500 and "unicode" in raw.text.lower() + raw.json()["detail"], raw.text
    judges_correctly(target)


# -- 9. Python behaves as a fresh `python3 prog.py` ---------------------------------------------------

FRESH = {
    "dunder-stdout": "import sys\nsys.stdout = open('/dev/null', 'w')\nsys.__stdout__.write('via __stdout__\\n')\nprint('lost')\n",
    "del-at-exit": "class W:\n    def __del__(self):\n        print('finalizer ran')\nw = W()\nprint('main')\n",
    "unclosed-file-on-fd1": "import os\nout = open(1, 'w', closefd=False)\nout.write('buffered, never flushed\\n')\nprint('first')\n",
    "atexit": "import atexit, sys\natexit.register(lambda: print('from atexit'))\nsys.stdout.write('no newline')\n",
    "stringio-swap": ("import io, sys, atexit\nbuf = io.StringIO()\nsys.stdout = buf\nprint('kept')\n"
                      "atexit.register(lambda: sys.__stdout__.write(buf.getvalue()))\n"),
    "buffer-write": "import sys\nsys.stdout.buffer.write(b'raw bytes\\n')\nprint('text')\n",
    "wrapper-on-buffer": "import io, sys\nw = io.TextIOWrapper(sys.stdout.buffer)\nw.write('wrapped\\n')\n",
    "thread-after-main": ("import threading, time\ndef late():\n    time.sleep(0.2)\n    print('thread')\n"
                          "threading.Thread(target=late).start()\nprint('main')\n"),
    "exit-message": "import sys\nprint('out')\nsys.exit('bye')\n",
    "exit-code": "print('x', end='')\nraise SystemExit(3)\n",
    "uncaught": "print('before')\nraise ValueError('boom')\n",
    "cycle-finalizer": ("class N:\n    def __init__(self):\n        self.me = self\n    def __del__(self):\n"
                        "        print('cycle collected')\nN()\nprint('main')\n"),
    "numpy": "import numpy as np\nprint(int(np.arange(10).sum()), np.linalg.det(np.eye(3)))\n",
    "executable": ("import os, subprocess, sys\nprint(os.path.exists(sys.executable))\n"
                   "print(subprocess.run([sys.executable, '-c', 'import numpy; print(6 * 7)'], capture_output=True, "
                   "text=True).stdout.strip())\n"),
    "threading-stack-size": "import threading\nprint(threading.stack_size())\n",
    "fastio-bound-to-a-name": ("import os, sys\nfrom io import BytesIO, IOBase\nclass FastIO(IOBase):\n"
                               "    def __init__(self, fd):\n        self._fd, self.buffer = fd, BytesIO()\n"
                               "    def write(self, b):\n        self.buffer.write(b)\n"
                               "    def flush(self):\n        os.write(self._fd, self.buffer.getvalue())\n"
                               "        self.buffer.truncate(0)\n        self.buffer.seek(0)\n"
                               "out = FastIO(1)\nprint('first', flush=True)\nout.write(b'from the buffer at exit\\n')\n"),
    "fastio-as-stdout": ("import os, sys\nfrom io import BytesIO, IOBase\nclass FastIO(IOBase):\n"
                         "    def __init__(self, fd):\n        self._fd, self.buffer = fd, BytesIO()\n"
                         "    def write(self, s):\n        self.buffer.write(s.encode())\n"
                         "    def flush(self):\n        os.write(self._fd, self.buffer.getvalue())\n"
                         "        self.buffer.truncate(0)\n        self.buffer.seek(0)\n"
                         "sys.stdout = FastIO(1)\nprint('via a replaced sys.stdout')\n"),
}


@pytest.fixture(scope="module")
def fresh_outputs(tmp_path_factory):
    """What `python3 prog.py` prints (stdout, exit code) for each program, run fresh on this machine."""
    d = tmp_path_factory.mktemp("fresh")
    out = {}
    for name, code in FRESH.items():
        path = d / f"prog_{name.replace('-', '_')}.py"
        path.write_text(code)
        p = subprocess.run([sys.executable, str(path)], capture_output=True, text=True, timeout=60, cwd=d)
        out[name] = (p.stdout, p.returncode)
    return out


@pytest.mark.parametrize("name", sorted(FRESH))
def test_python_behaves_as_a_fresh_interpreter(target, fresh_outputs, name):
    r = target.run(RunRequest(code=FRESH[name] + f"# {secrets.token_hex(4)}", tests=[T("", "")], time_limit_s=10))
    t = r.tests[0]
    assert (t.stdout, t.exit_code) == fresh_outputs[name], (t.stdout, t.exit_code, t.stderr[-1500:])
    if name == "uncaught":
        assert "ValueError: boom" in t.stderr and 'File "main.py", line 2' in t.stderr and "sandbox" not in t.stderr
    if name == "exit-message":
        assert t.stderr.strip() == "bye"


# -- 1. (continued) a broken worker is replaced and its test retried; /healthz tells -------------------

def _children(pid: int) -> list[int]:
    with open(f"/proc/{pid}/task/{pid}/children") as f:
        return [int(p) for p in f.read().split()]


def test_a_broken_worker_is_replaced_and_its_test_retried():
    """Kill a worker's zygote (the test's set-up then fails before any program runs) and then a whole
    worker: each next test still gets its verdict, on a fresh worker, and health counts the replacements."""
    from sandbox.local import LocalExecutor

    if os.geteuid() != 0:
        pytest.skip("full isolation needs root")
    with LocalExecutor(workers=1, cache_size=0) as ex:
        req = RunRequest(code="print(input())", tests=[T("7", "7")])
        assert ex.run(req).verdict == Verdict.AC
        worker_pid = ex.worker_info()[0]["pid"]
        os.kill(_children(worker_pid)[0], 9)  # the zygote
        time.sleep(0.2)
        assert ex.run(req).verdict == Verdict.AC
        assert ex.health()["workers_replaced"] == 1 and ex.health()["healthy"]
        os.kill(ex.worker_info()[0]["pid"], 9)  # the fresh worker itself
        time.sleep(0.2)
        assert ex.run(req).verdict == Verdict.AC
        assert ex.health() | {"isolation": "full"} == {"healthy": True, "broken": {}, "workers_replaced": 2,
                                                       "isolation": "full", "unenforced": []}


def test_healthz_reports_a_worker_that_cannot_be_replaced(spawn_server, tmp_path):
    """A worker that cannot start again (its binary cache vanished) leaves the service unhealthy: /healthz
    is 503 with the reason (Docker's HEALTHCHECK then marks the container unhealthy); once the cause is
    gone the next test starts a worker and /healthz is 200 again."""
    import shutil

    if os.geteuid() != 0:
        pytest.skip("full isolation needs root")
    url = spawn_server(workers=1, env={"TMPDIR": str(tmp_path)})
    post = lambda: httpx.post(url + "/v1/run", json={"code": f"print(1)  # {secrets.token_hex(4)}",  # noqa: E731
                                                      "tests": [{"input": "", "output": "1"}]}, timeout=60)
    assert post().json()["verdict"] == "AC"
    port = url.rsplit(":", 1)[1]
    server_pid = int(next(p for p in os.listdir("/proc") if p.isdigit() and "sandbox serve " in _cmd(p)
                          and f" --port {port} " in _cmd(p)))
    (worker,) = [p for p in _children(server_pid) if "sandbox.worker" in _cmd(str(p))]
    bins = tmp_path / f"codealign-sandbox-{os.geteuid()}" / "bin"
    shutil.move(bins, tmp_path / "away")
    os.kill(worker, 9)
    time.sleep(0.3)
    resp = post()
    assert resp.status_code == 500  # the engine itself is broken, not the program
    health = httpx.get(url + "/healthz", timeout=10)
    assert health.status_code == 503 and health.json()["status"] == "unhealthy", health.text
    assert "refused to start" in health.json()["detail"] and health.json()["workers_replaced"] >= 1
    shutil.move(tmp_path / "away", bins)
    assert post().json()["verdict"] == "AC"
    assert httpx.get(url + "/healthz", timeout=10).status_code == 200


def _cmd(pid: str) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode().strip()
    except OSError:
        return ""
