"""The content-addressed result cache on its own: keys, LRU order, count and byte bounds."""

from sandbox.cache import ResultCache, request_key
from sandbox.spec import RunRequest, RunResult, TestCase, TestResult, Verdict


def result(n_chars: int = 0) -> RunResult:
    return RunResult(verdict=Verdict.AC, passed=1, total=1, tests=[TestResult(verdict=Verdict.AC, stdout="x" * n_chars)])


def test_key_covers_every_field_and_the_versions():
    base = RunRequest(code="print(1)", tests=[TestCase(input="", output="1")])
    keys = {
        request_key(base, "1", "1"),
        request_key(base, "1", "2"),
        request_key(base.model_copy(update={"code": "print(2)"}), "1", "1"),
        request_key(base.model_copy(update={"checker": "exact"}), "1", "1"),
        request_key(base.model_copy(update={"memory_limit_mb": 256}), "1", "1"),
        request_key(base.model_copy(update={"tests": [TestCase(input="", output="2")]}), "1", "1"),
        request_key(base.model_copy(update={"fn_name": "f"}), "1", "1"),
    }
    assert len(keys) == 7
    assert request_key(base, "1", "1") == request_key(RunRequest(**base.model_dump()), "1", "1")


def test_lru_eviction_by_count_and_by_bytes():
    c = ResultCache(capacity=2)
    c.put("a", result())
    c.put("b", result())
    assert c.get("a") is not None  # a is now the most recent
    c.put("c", result())
    assert c.get("b") is None and c.get("a").cached and len(c) == 2
    small = ResultCache(capacity=100, max_bytes=12_000)  # ~3.8 kB per result
    for k in range(10):
        small.put(str(k), result(3000))
    assert len(small) == 3 and small.get("9") is not None and small.get("0") is None
    small.put("huge", result(50_000))  # larger than the whole budget: not kept
    assert small.get("huge") is None


def test_disabled_cache_keeps_nothing_and_hits_are_copies():
    off = ResultCache(capacity=0)
    off.put("a", result())
    assert off.get("a") is None
    c = ResultCache(capacity=4)
    c.put("a", result())
    hit = c.get("a")
    hit.tests[0].stdout = "changed"
    assert c.get("a").tests[0].stdout == ""


def test_the_compiled_binary_cache_stays_within_its_bound(tmp_path):
    """Real compiles of ~1 MiB C++ programs into a 3 MiB cache: the least recently used go (never one
    in use or used in the last minute), the cache stays bounded, and an evicted program compiles again."""
    import os
    import time

    import pytest

    from sandbox import languages
    from sandbox.local import LocalExecutor

    if languages.availability()["cpp"] or os.geteuid() != 0:
        pytest.skip("needs g++ and root")

    def big(k: int) -> str:  # ~1 MiB of initialised data in the binary
        return (f"char blob[1 << 20] = {{{k}}};\n"
                f"int main(int argc, char**) {{ return blob[(argc - 1) * 4096] == {k} ? 0 : 1; }}\n")

    with LocalExecutor(workers=1, cache_size=0, bin_cache=str(tmp_path / "bin"), bin_cache_mb=3) as ex:
        for k in (1, 2):
            assert ex.run(RunRequest(language="cpp", code=big(k), tests=[TestCase(input="", output="")])).verdict == Verdict.AC
        entries = sorted(os.listdir(tmp_path / "bin"))
        assert len(entries) == 2
        old = time.time() - 3600  # as if both were last used an hour ago
        for name in entries:
            os.utime(tmp_path / "bin" / name, (old, old))
        os.utime(tmp_path / "bin" / entries[0], (old + 60, old + 60))  # ... the first a minute later
        assert ex.run(RunRequest(language="cpp", code=big(3), tests=[TestCase(input="", output="")])).verdict == Verdict.AC
        left = sorted(os.listdir(tmp_path / "bin"))
        assert entries[0] in left and entries[1] not in left and len(left) == 2
        assert ex._bins.size_mb() <= 3
        for k in (1, 2, 3):  # whatever was evicted compiles again
            assert ex.run(RunRequest(language="cpp", code=big(k), tests=[TestCase(input="", output="")])).verdict == Verdict.AC
        assert ex.stats()["compiles"]["cpp"] >= 4
