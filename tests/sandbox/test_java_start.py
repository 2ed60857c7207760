"""How a Java test's JVM starts in the sandbox (docs/sandbox_engine.md, "Java start"): it maps the
shared class-data archive (sandbox/jvm_archive.py) read-only and without relocation, no program can
write, delete or replace that archive, a damaged or foreign archive is a correct (slower) run, and the
JVM's own warnings never land in the program's stdout. Real JVMs in the real sandbox."""

import hashlib
import os

import pytest

from sandbox import jvm_archive, languages
from sandbox.local import LocalExecutor
from sandbox.spec import RunRequest, TestCase, Verdict

TARGETS = ["local", "docker"]


def T(i, o):
    return TestCase(input=i, output=o)


needs_jdk = pytest.mark.skipif(languages.availability()["java"] is not None, reason="no JDK installed")

# Lists the class-data archives the JVM mapped (the first address of each) and tries to open each for
# writing, delete it, rename it, and plant a file beside it.
MAPS = r"""import java.io.*; import java.nio.file.*; import java.util.*;
public class Main { public static void main(String[] a) throws Exception {
  Map<String, String> first = new LinkedHashMap<>();
  for (String line : Files.readAllLines(Paths.get("/proc/self/maps"))) {
    String[] f = line.trim().split("\\s+");
    if (f.length >= 6 && f[5].endsWith(".jsa")) first.putIfAbsent(f[5], f[0].split("-")[0]);
  }
  for (Map.Entry<String, String> e : first.entrySet()) {
    String p = e.getKey(), w;
    try (RandomAccessFile f = new RandomAccessFile(p, "rw")) { w = "writable"; } catch (IOException x) { w = "read-only"; }
    System.out.println(p + " " + e.getValue() + " " + w + " delete=" + new File(p).delete()
        + " rename=" + new File(p).renameTo(new File(p + ".x")));
  }
  try (FileOutputStream o = new FileOutputStream("/sbx/bin/planted.jsa")) { System.out.println("planted"); }
  catch (IOException x) { System.out.println("cannot plant"); }
} }"""

SUM = """import java.util.*;
public class Main { public static void main(String[] a) {
  Scanner s = new Scanner(System.in); System.out.println(s.nextLong() + s.nextLong()); } }"""


def _mapped(stdout: str) -> dict[str, list[str]]:
    return {line.split()[0]: line.split()[1:] for line in stdout.splitlines() if line.startswith("/")}


@needs_jdk
def test_the_jvm_maps_the_shared_archive_and_no_program_can_write_it(target):
    if target.name == "local":
        name = languages.java_archive(target.ex.bin_cache, wait=True)  # as the first Java request would, in the background
        assert name, "the class-data archive could not be built on this host"
    r = target.run(RunRequest(language="java", code=MAPS, tests=[T("", "")]))
    assert r.tests[0].exit_code == 0, r.tests[0]
    mapped = _mapped(r.tests[0].stdout)
    ours = [p for p in mapped if p.startswith("/sbx/bin/jvm-")]
    assert len(ours) == 1 and len(mapped) == 1, r.tests[0].stdout  # our archive, instead of the JDK's own
    address, *rest = mapped[ours[0]]
    if languages.jvm_start_flags():  # mapped where it was dumped: nothing to relocate
        assert int(address, 16) == 0x800000000, r.tests[0].stdout
    assert rest == ["read-only", "delete=false", "rename=false"], r.tests[0].stdout
    assert "cannot plant" in r.tests[0].stdout
    # On the host: still there, unchanged, writable by no one.
    info = target.host("import glob, hashlib, os, sys\n"
                       "for p in glob.glob('/tmp/codealign-sandbox-*/bin/' + sys.argv[1]):\n"
                       "    print(oct(os.stat(p).st_mode & 0o777), hashlib.sha256(open(p, 'rb').read()).hexdigest())",
                       os.path.basename(ours[0])).split()
    assert info[0] == "0o444", info
    if target.name == "local":
        store = os.path.join(jvm_archive.STORE, os.path.basename(ours[0]))
        assert info[1] == hashlib.sha256(open(store, "rb").read()).hexdigest()


@pytest.fixture(scope="module")
def private_ex(tmp_path_factory):
    if os.geteuid() != 0:
        pytest.skip("full isolation needs root")
    with LocalExecutor(workers=1, cache_size=0, bin_cache=str(tmp_path_factory.mktemp("bin"))) as ex:
        yield ex


@needs_jdk
@pytest.mark.parametrize("damage", ["garbage", "truncated", "other_flags"])
def test_a_damaged_or_foreign_archive_is_a_correct_run(private_ex, damage):
    """Same size, garbage (written in place): the JVM's header check rejects it and the JVM runs without
    it. Another size (a truncated copy crashes a JDK 17 JVM with SIGBUS; a valid archive of this JVM made
    for other flags): the engine finds the copy differs from the one built and replaces it before any
    test maps it. Either way: the right verdicts, nothing on stdout or stderr but the program's."""
    name = languages.java_archive(private_ex.bin_cache, wait=True)
    assert name
    path = os.path.join(private_ex.bin_cache, name)
    good = open(path, "rb").read()
    if damage == "garbage":
        data = os.urandom(len(good))
    elif damage == "truncated":
        data = good[: len(good) // 3]
    else:
        home = os.path.dirname(os.path.dirname(languages._tool("java")))
        other = os.path.join(home, "lib", "server", "classes_nocoops.jsa")
        if not os.path.exists(other):
            pytest.skip("this JDK ships no classes_nocoops.jsa")
        data = open(other, "rb").read()
    os.chmod(path, 0o644)
    with open(path, "r+b") as f:  # in place: the same file (inode)
        f.write(data)
        f.truncate()
    try:
        r = private_ex.run(RunRequest(language="java", code=SUM, tests=[T("1 2", "3"), T("40 2", "42")]))
        assert r.verdict == Verdict.AC, r.tests
        assert [t.stdout for t in r.tests] == ["3\n", "42\n"] and [t.stderr for t in r.tests] == ["", ""], r.tests
        r = private_ex.run(RunRequest(language="java", code=MAPS, tests=[T("", "")]))
        mapped = [p for p in _mapped(r.tests[0].stdout) if p.startswith("/sbx/bin/")]
        if damage == "garbage":
            assert not mapped, r.tests[0].stdout
        else:
            assert mapped == [f"/sbx/bin/{name}"], r.tests[0].stdout
            assert open(path, "rb").read() == open(os.path.join(jvm_archive.STORE, name), "rb").read()
    finally:
        if os.path.exists(path):
            os.chmod(path, 0o644)
        with open(path, "wb") as f:
            f.write(good)
        os.chmod(path, 0o444)


@needs_jdk
def test_jvm_warnings_go_to_stderr_not_to_the_programs_stdout(private_ex):
    """A JVM that cannot start a thread (the process limit) warns through unified logging, which
    writes to stdout by default: here it goes to stderr, and stdout is the program's alone."""
    code = """import java.util.concurrent.*;
public class Main { public static void main(String[] a) throws Exception {
  CountDownLatch never = new CountDownLatch(1); int n = 0;
  try { while (n < 100000) { Thread t = new Thread(() -> { try { never.await(); } catch (InterruptedException e) { } });
        t.setDaemon(true); t.start(); n++; } }
  catch (OutOfMemoryError e) { System.out.println("stopped"); }
  System.exit(0); } }"""
    r = private_ex.run(RunRequest(language="java", code=code, tests=[T("", "stopped")]))
    t = r.tests[0]
    assert r.verdict == Verdict.AC and t.stdout == "stopped\n", t
    assert "[warning][os,thread] Failed to start thread" in t.stderr, t


@needs_jdk
def test_an_archive_that_cannot_be_built_leaves_java_on_the_jdks_own(tmp_path, monkeypatch):
    """A build that fails (here: no javac) gives no archive and no error; Java tests keep the JDK's."""
    monkeypatch.setattr(jvm_archive, "STORE", str(tmp_path / "store"))
    java = languages._tool("java")
    flags = languages.JVM_FLAGS + ("-XX:+UseSerialGC",)  # another content address than the real one
    assert jvm_archive.ensure(str(tmp_path), java, str(tmp_path / "no-javac"), flags, wait=True) is None
    assert not [p for p in tmp_path.rglob("*") if p.is_file()]
