"""SandboxFusion compatibility: its ``POST /run_code`` request and response, mapped onto our judge.

Users of SandboxFusion's API (e.g. verl's ``sandbox_fusion`` reward, which posts one request per test
and compares ``run_result.stdout`` itself) can point at this service unchanged. The field names and
statuses follow SandboxFusion's server:

- ``status``: ``Success`` (compiled and ran with exit code 0), ``Failed`` (compile error, non-zero
  exit, time limit, memory or output limit), ``SandboxError`` (the sandbox itself failed).
- ``compile_result`` (compiled languages only) and ``run_result``: ``{status: Finished | Error |
  TimeLimitExceeded, execution_time, return_code, stdout, stderr}``; ``run_result`` is absent after a
  compile error. A program killed by a signal has a negative ``return_code`` (like Python's subprocess).

Differences, documented in docs/sandbox_service.md: only ``python``, ``cpp`` and ``java`` (others
get 422); ``run_timeout`` is the CPU-time limit, and ``run_timeout`` + 1 s the wall-clock limit,
both counted from when the program starts (never while it waits for a worker);
``compile_timeout`` is not configurable per request; ``files`` and ``fetch_files`` must be empty;
a Python syntax error is reported the way SandboxFusion reports it (a run with exit code 1 and the
error in ``stderr``), and ``message`` carries our verdict and its reason on ``Failed``.
"""

from __future__ import annotations

from enum import Enum
from typing import Optional

from pydantic import BaseModel, ConfigDict, Field, field_validator

from sandbox.spec import RunRequest, RunResult, TestCase, Verdict

SUPPORTED_LANGUAGES = ("python", "cpp", "java")
COMPILED_LANGUAGES = ("cpp", "java")
DEFAULT_MEMORY_LIMIT_MB = 1024
"""Memory limit used when the request says ``memory_limit_MB: -1`` (SandboxFusion's "no limit")."""
RUN_WALL_SLACK_S = 1.0
"""Wall-clock limit of a /run_code program beyond its ``run_timeout``, seconds."""
FUSION_OUTPUT_CHARS = 1 << 20
"""stdout/stderr characters returned, as SandboxFusion keeps 1 MiB of each (more stdout than the
engine's output limit is still OLE: a Failed run)."""


class RunCodeRequest(BaseModel):
    """Body of ``POST /run_code`` (SandboxFusion's names and defaults; unknown fields are ignored)."""

    model_config = ConfigDict(extra="ignore")

    code: str = Field(description="The program.")
    language: str = Field(description="python, cpp or java.")
    stdin: Optional[str] = Field(default=None, description="Text fed to the program's stdin.")
    compile_timeout: float = Field(default=10, gt=0, description="Accepted for compatibility; see module doc.")
    run_timeout: float = Field(default=10, gt=0, le=120, description="CPU-time limit, seconds.")
    memory_limit_MB: int = Field(default=-1, description="Memory limit, MiB; -1 means the service default.")
    files: dict[str, Optional[str]] = Field(default_factory=dict, description="Must be empty here.")
    fetch_files: list[str] = Field(default_factory=list, description="Must be empty here.")

    @field_validator("language")
    @classmethod
    def _known_language(cls, language: str) -> str:
        if language not in SUPPORTED_LANGUAGES:
            raise ValueError(
                f"language {language!r} is not supported by this sandbox (supported: {', '.join(SUPPORTED_LANGUAGES)})"
            )
        return language

    @field_validator("memory_limit_MB")
    @classmethod
    def _memory(cls, mb: int) -> int:
        if mb != -1 and mb <= 0:
            raise ValueError("memory_limit_MB must be positive, or -1 for the service default")
        return mb

    @field_validator("files")
    @classmethod
    def _no_files(cls, files: dict[str, Optional[str]]) -> dict[str, Optional[str]]:
        if any(content is not None for content in files.values()):
            raise ValueError("files are not supported: programs run in an empty private directory")
        return files

    @field_validator("fetch_files")
    @classmethod
    def _no_fetch(cls, names: list[str]) -> list[str]:
        if names:
            raise ValueError("fetch_files is not supported: a program's directory is discarded after the run")
        return names

    def to_run_request(self) -> RunRequest:
        """The equivalent judge request: one test whose input is stdin; the output is not checked."""
        memory = DEFAULT_MEMORY_LIMIT_MB if self.memory_limit_MB == -1 else self.memory_limit_MB
        return RunRequest(
            language=self.language,  # type: ignore[arg-type]  # checked by _known_language
            code=self.code,
            tests=[TestCase(input=self.stdin or "", output="")],
            time_limit_s=self.run_timeout,
            # SandboxFusion's limit is wall clock: the engine kills the program then (+1 s of slack
            # for the interpreter's start), counted from its start, not from the request's arrival.
            wall_time_limit_s=min(self.run_timeout + RUN_WALL_SLACK_S, 600.0),
            memory_limit_mb=memory,
            checker="exact",
            max_output_chars=FUSION_OUTPUT_CHARS,
        )


class RunStatus(str, Enum):
    Success = "Success"
    Failed = "Failed"
    SandboxError = "SandboxError"


class CommandRunStatus(str, Enum):
    Finished = "Finished"
    Error = "Error"
    TimeLimitExceeded = "TimeLimitExceeded"


class CommandRunResult(BaseModel):
    status: CommandRunStatus
    execution_time: Optional[float] = None  # wall-clock seconds
    return_code: Optional[int] = None
    stdout: Optional[str] = None
    stderr: Optional[str] = None


class RunCodeResponse(BaseModel):
    status: RunStatus
    message: str = ""
    compile_result: Optional[CommandRunResult] = None
    run_result: Optional[CommandRunResult] = None
    executor_pod_name: Optional[str] = None
    files: dict[str, str] = Field(default_factory=dict)


def sandbox_error(message: str) -> RunCodeResponse:
    return RunCodeResponse(status=RunStatus.SandboxError, message=message)


def to_fusion_response(req: RunCodeRequest, result: RunResult) -> RunCodeResponse:
    """Translate our verdict on the single test into SandboxFusion's response."""
    compiled = req.language in COMPILED_LANGUAGES
    if result.verdict == Verdict.CE:
        if compiled:
            compile_result = CommandRunResult(
                status=CommandRunStatus.Finished, return_code=1, stdout="", stderr=result.compile_output
            )
            return RunCodeResponse(status=RunStatus.Failed, message="CE", compile_result=compile_result)
        # Python has no compile step in SandboxFusion: a syntax error is a run that exits with 1
        run_result = CommandRunResult(status=CommandRunStatus.Finished, return_code=1, stdout="", stderr=result.compile_output)
        return RunCodeResponse(status=RunStatus.Failed, message="CE", run_result=run_result)

    compile_result = (
        CommandRunResult(status=CommandRunStatus.Finished, return_code=0, stdout="", stderr=result.compile_output)
        if compiled
        else None
    )
    if not result.tests:
        return sandbox_error(f"the engine returned no test result (verdict {result.verdict.value})")
    test = result.tests[0]
    if test.verdict == Verdict.TLE:
        status, code = CommandRunStatus.TimeLimitExceeded, None
    else:
        status = CommandRunStatus.Finished
        if test.exit_code is not None:
            code = test.exit_code
        elif test.signal is not None:
            code = -test.signal
        else:
            code = 0 if test.verdict in (Verdict.AC, Verdict.WA) else 1
        if code == 0 and test.verdict not in (Verdict.AC, Verdict.WA):
            code = 1  # a limit was hit although the process exited cleanly (e.g. OLE): not a success
    run_result = CommandRunResult(
        status=status, execution_time=test.time_s, return_code=code, stdout=test.stdout, stderr=test.stderr
    )
    ok = status == CommandRunStatus.Finished and code == 0
    message = "" if ok else f"{test.verdict.value}: {test.message}".rstrip(": ")
    return RunCodeResponse(
        status=RunStatus.Success if ok else RunStatus.Failed,
        message=message,
        compile_result=compile_result,
        run_result=run_result,
    )
