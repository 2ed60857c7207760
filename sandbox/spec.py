"""The judge's wire contract: requests, per-test results and verdicts.

These pydantic models are the single source of truth for the HTTP API (``POST /v1/run``), the
in-process executor and the clients. Field names are a contract that outside tests rely on: add
fields freely, never rename or drop one.
"""

from __future__ import annotations

from enum import Enum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class Verdict(str, Enum):
    """Outcome of one test (or of a whole run: AC if all pass, else the first failing test's)."""

    AC = "AC"  # accepted
    WA = "WA"  # wrong answer
    TLE = "TLE"  # time limit exceeded (CPU or wall clock)
    MLE = "MLE"  # memory limit exceeded
    RE = "RE"  # runtime error (non-zero exit, signal, uncaught exception)
    OLE = "OLE"  # output limit exceeded
    CE = "CE"  # compile error (also: Python syntax error, missing fn_name)
    SKIPPED = "SKIPPED"  # not run: an earlier test failed and stop_on_first_failure was set


Language = Literal["python", "cpp", "java"]


class TestCase(BaseModel):
    """One test. ``input`` is stdin text, or the argument list for a call-based (``fn_name``) test.

    ``output`` is the expected stdout text, or the expected return value for call-based tests.
    Expected outputs never enter the sandbox: they are compared outside it.
    """

    model_config = ConfigDict(extra="forbid")
    __test__ = False  # not a pytest class

    input: str | list[Any]
    output: Any


class RunRequest(BaseModel):
    """Judge one program against a list of tests."""

    model_config = ConfigDict(extra="forbid")

    language: Language = "python"
    code: str
    tests: list[TestCase] = Field(default_factory=list)
    fn_name: str | None = None
    time_limit_s: float = Field(default=4.0, gt=0, le=120, description="CPU-time limit per test, seconds.")
    memory_limit_mb: int = Field(default=512, gt=0, le=16384, description="Address-space limit per test, MiB.")
    stop_on_first_failure: bool = False
    checker: str = Field(
        default="tokens",
        description="Output comparison: 'tokens' (default), 'codecontests', 'apps' or 'exact'; see sandbox/checker.py.",
    )
    output_limit_mb: int = Field(
        default=64, gt=0, le=1024, description="stdout cap per test, MiB; more output is OLE (and stops the program)."
    )
    wall_time_limit_s: float | None = Field(
        default=None, gt=0, le=600,
        description="Wall-clock limit per test, seconds (then SIGKILL and TLE). None: the backstop "
        "3 * time_limit_s + 1, which leaves room for a loaded machine; set it where callers count wall time "
        "(e.g. SandboxFusion's run_timeout).",
    )
    max_output_chars: int = Field(
        default=4096, ge=0, le=64 * 1024 * 1024,
        description="How much of each test's stdout/stderr the result carries back (characters); the checker "
        "always sees the whole stdout.",
    )


class TestResult(BaseModel):
    """What happened on one test."""

    __test__ = False

    verdict: Verdict
    time_s: float = 0.0  # wall-clock seconds
    cpu_s: float = 0.0  # user + system CPU seconds
    memory_mb: float = 0.0  # peak resident memory, MiB
    exit_code: int | None = None
    signal: int | None = None
    stdout: str = ""  # truncated for transport; see stdout_truncated
    stderr: str = ""
    stdout_truncated: bool = False
    stderr_truncated: bool = False
    message: str = ""  # human-readable detail (e.g. the checker's reason for WA)
    value: Any = None  # call-based tests: the return value as JSON data (None if its JSON exceeds 64 KiB)


class RunResult(BaseModel):
    """What happened on a whole run."""

    verdict: Verdict
    passed: int
    total: int
    tests: list[TestResult] = Field(default_factory=list)
    compile_output: str = ""
    cached: bool = False  # answered from the content-addressed result cache
    unenforced: list[str] = Field(
        default_factory=list,
        description="Isolation layers and limits this sandbox could not enforce for the run (empty under full "
        "isolation): 'memory_tree' (no memory cgroup: the memory limit holds per process only), and in degraded "
        "mode also 'network', 'filesystem', 'pid_namespace', 'uid', 'tmp_size'. GET /healthz says the same.",
    )
