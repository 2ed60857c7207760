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
