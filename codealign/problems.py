"""One programming problem, whatever dataset it came from.

Loaders (``codealign/loaders.py``) turn dataset rows into :class:`Problem`; prompts, judging, metrics,
evaluation and the trainer all consume this one model.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from sandbox.spec import TestCase

#: Per-test CPU-time limit used when a dataset row has none (CodeContests' ``time_limit`` is null in
#: many rows; APPS has none at all and its harness uses 4 s), seconds.
DEFAULT_TIME_LIMIT_S = 4.0
#: Per-test address-space limit used when a row has none (CodeContests' ``memory_limit_bytes`` = 0;
#: APPS has none), MiB.
DEFAULT_MEMORY_LIMIT_MB = 1024


class Problem(BaseModel):
    """A problem with its tests, limits and reference solutions.

    ``public_tests`` are the examples a solver may see (AlphaCode filters samples on them);
    ``private_tests`` are the hidden tests; ``generated_tests`` are CodeContests' extra tests (hidden as
    well; their inputs are also what n@k clusters samples on). A sample is correct when it passes
    :meth:`all_tests`. ``checker`` names the sandbox's output comparison matching the dataset's official
    harness ("codecontests", "apps", "tokens", "exact").
    """

    model_config = ConfigDict(extra="forbid")

    id: str
    source: str = Field(description="Dataset family: 'codecontests', 'apps', 'humaneval' or another name.")
    split: str = "train"
    statement: str
    starter_code: str = ""
    fn_name: str | None = Field(default=None, description="Call-based problems: the function (or Solution method) to call.")
    public_tests: list[TestCase] = Field(default_factory=list)
    private_tests: list[TestCase] = Field(default_factory=list)
    generated_tests: list[TestCase] = Field(default_factory=list)
    time_limit_s: float = Field(default=DEFAULT_TIME_LIMIT_S, gt=0, description="CPU-time limit per test, seconds.")
    memory_limit_mb: int = Field(default=DEFAULT_MEMORY_LIMIT_MB, gt=0, description="Memory limit per test, MiB.")
    difficulty: str | None = None
    solutions: dict[str, list[str]] = Field(default_factory=dict, description="Reference solutions by language.")
    incorrect_solutions: dict[str, list[str]] = Field(default_factory=dict)
    checker: str = "tokens"
    test_code: str | None = Field(
        default=None,
        description="HumanEval-style check program appended to the sample (its asserts are the tests).",
    )
    metadata: dict[str, Any] = Field(default_factory=dict, description="Source fields kept for reference (url, tags...).")

    def all_tests(self) -> list[TestCase]:
        """Every test a correct program must pass: public, then private, then generated."""
        return [*self.public_tests, *self.private_tests, *self.generated_tests]

    def cluster_inputs(self) -> list[TestCase]:
        """Tests whose *inputs* n@k clusters samples on: the generated tests, else the private ones."""
        return list(self.generated_tests or self.private_tests)

    @property
    def call_based(self) -> bool:
        return self.fn_name is not None and self.test_code is None
