"""C++ and Java through the sandbox: compile once per distinct program, reuse the binary, CE on
compiler errors, the usual runtime verdicts; and the clear error when a toolchain is missing."""

import threading

import pytest

from sandbox import languages
from sandbox.errors import LanguageUnavailable
from sandbox.local import LocalExecutor
from sandbox.spec import RunRequest, TestCase, Verdict


def T(i, o):
    return TestCase(input=i, output=o)


CPP_SUM = """#include <bits/stdc++.h>
int main() { long long a, b; std::cin >> a >> b; std::cout << a + b << "\\n"; }
"""


@pytest.fixture(scope="module")
def ex(tmp_path_factory):
    # A private binary cache, so "compiled exactly once" is measured from empty.
    with LocalExecutor(workers=2, cache_size=0, bin_cache=str(tmp_path_factory.mktemp("bin"))) as e:
        yield e


needs_gxx = pytest.mark.skipif(languages.availability()["cpp"] is not None, reason="g++ not installed")
needs_jdk = pytest.mark.skipif(languages.availability()["java"] is not None, reason="no JDK installed")


@needs_gxx
def test_cpp_compiles_once_for_all_tests_and_all_requests(ex):
    tests = [T(f"{i} {i}", str(2 * i)) for i in range(20)]
    before = ex.stats()["compiles"].get("cpp", 0)
    r = ex.run(RunRequest(language="cpp", code=CPP_SUM, tests=tests))
    assert r.verdict == Verdict.AC and r.passed == 20
    r2 = ex.run(RunRequest(language="cpp", code=CPP_SUM, tests=tests[:3]))  # another request, same program
    assert r2.verdict == Verdict.AC
    assert ex.stats()["compiles"]["cpp"] == before + 1


@needs_gxx
def test_cpp_concurrent_requests_for_one_new_program_compile_it_once(ex):
    code = CPP_SUM.replace("a + b", "b + a")
    before = ex.stats()["compiles"].get("cpp", 0)
    results = []
    threads = [threading.Thread(target=lambda: results.append(
        ex.run(RunRequest(language="cpp", code=code, tests=[T("1 2", "3")])))) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [r.verdict for r in results] == [Verdict.AC] * 6
    assert ex.stats()["compiles"]["cpp"] == before + 1


@needs_gxx
def test_cpp_compile_error_is_ce_with_diagnostics(ex):
    r = ex.run(RunRequest(language="cpp", code="int main() { return x; }", tests=[T("", "")]))
    assert r.verdict == Verdict.CE and "was not declared" in r.compile_output


@needs_gxx
def test_cpp_compiler_cannot_read_host_files(ex, tmp_path):
    secret = tmp_path / "secret.h"
    secret.write_text("int leaked = 1234567;\n")
    r = ex.run(RunRequest(language="cpp", code=f'#include "{secret}"\nint main() {{}}', tests=[T("", "")]))
    assert r.verdict == Verdict.CE and "1234567" not in r.compile_output
    assert "No such file" in r.compile_output


@needs_gxx
def test_cpp_runtime_verdicts(ex):
    cases = {
        "int main() { int *p = nullptr; return *p; }": Verdict.RE,
        "int main() { volatile unsigned long long x = 0; for (;;) x++; }": Verdict.TLE,
        "#include <vector>\nint main() { std::vector<char> v(1ull << 31, 1); return v[5]; }": Verdict.MLE,
        "#include <cstdio>\nint main() { for (;;) puts(\"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\"); }": Verdict.OLE,
        "int main() { return 4; }": Verdict.RE,
    }
    for code, verdict in cases.items():
        r = ex.run(RunRequest(language="cpp", code=code, time_limit_s=0.5, memory_limit_mb=256, output_limit_mb=1,
                              tests=[T("", "")]))
        assert r.verdict == verdict, (code, r.tests[0])


@needs_gxx
def test_cpp_reads_stdin_file_with_fstat(ex):
    code = """#include <bits/stdc++.h>
#include <sys/stat.h>
#include <unistd.h>
int main() { struct stat st; fstat(0, &st); std::string s(st.st_size, 0);
  size_t n = read(0, s.data(), s.size()); std::cout << n << "\\n"; }"""
    r = ex.run(RunRequest(language="cpp", code=code, tests=[T("hello world\n", "12")]))
    assert r.verdict == Verdict.AC, r.tests[0]


@needs_jdk
def test_java_runs_with_any_public_class_name(ex):
    code = """import java.util.*;
public class Solver { public static void main(String[] args) {
  Scanner s = new Scanner(System.in); long a = s.nextLong(), b = s.nextLong(); System.out.println(a * b); } }"""
    r = ex.run(RunRequest(language="java", code=code, tests=[T("6 7", "42"), T("2 3", "5")]))
    assert [t.verdict for t in r.tests] == [Verdict.AC, Verdict.WA], r.tests
    assert ex.stats()["compiles"]["java"] >= 1


@needs_jdk
def test_java_compile_error_and_exception(ex):
    r = ex.run(RunRequest(language="java", code="public class Main { void f( }", tests=[T("", "")]))
    assert r.verdict == Verdict.CE and "error" in r.compile_output
    code = "public class Main { public static void main(String[] a) { int[] x = new int[1]; x[2] = 1; } }"
    r = ex.run(RunRequest(language="java", code=code, tests=[T("", "")]))
    assert r.verdict == Verdict.RE and "ArrayIndexOutOfBounds" in r.tests[0].stderr


def test_missing_toolchain_is_language_unavailable(monkeypatch):
    monkeypatch.setattr(languages, "availability", lambda: {"python": None, "cpp": "g++ not found",
                                                            "java": "no JDK (javac/java) found"})
    with pytest.raises(LanguageUnavailable, match="no JDK"):
        languages.require("java")
    with pytest.raises(LanguageUnavailable, match="unknown language 'rust'"):
        languages.require("rust")


@needs_gxx
def test_cpp_deep_recursion_gets_a_stack_as_large_as_the_memory_limit(ex):
    code = """#include <cstdio>
int f(int n) { volatile char pad[64]; pad[0] = n; return n == 0 ? 0 : 1 + f(n - 1) + pad[0] * 0; }
int main() { printf("%d\\n", f(1000000)); }"""
    r = ex.run(RunRequest(language="cpp", code=code, tests=[T("", "1000000")]))
    assert r.verdict == Verdict.AC, r.tests[0]
