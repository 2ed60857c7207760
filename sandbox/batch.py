"""The batch path's wire contract: register a test set once, then judge many programs against it.

``POST /v1/testsets`` with :class:`TestSetRequest` stores a problem's tests under their content hash
(:func:`testset_id`) and answers :class:`TestSetRef`; ``POST /v1/batch`` with :class:`BatchRequest`
names that id and carries only programs, so the tests cross the network once per problem instead of
once per program. Client and server compute the id the same way, so a client can submit a batch
first and register only when the server answers 404 (unknown id: it restarted or is another replica).
"""

from __future__ import annotations

import hashlib
import json
from typing import Sequence

from pydantic import BaseModel, ConfigDict, Field, field_validator

from sandbox.spec import RunRequest, RunResult, TestCase

MAX_BATCH_PROGRAMS = 1024
"""Most programs one ``POST /v1/batch`` may carry (keeps one request's latency and memory bounded)."""


def testset_id(tests: Sequence[TestCase]) -> str:
    """The test set's content hash: sha256 (hex) of its canonical JSON (sorted keys, no spaces)."""
    payload = [t.model_dump(mode="json") for t in tests]
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class TestSetRequest(BaseModel):
    """Body of ``POST /v1/testsets``: one problem's tests."""

    model_config = ConfigDict(extra="forbid")
    __test__ = False

    tests: list[TestCase] = Field(min_length=1, description="The tests, as in RunRequest.tests.")


class TestSetRef(BaseModel):
    """Answer of ``POST /v1/testsets`` and ``GET /v1/testsets/{id}``."""

    __test__ = False

    id: str = Field(description="sha256 hex of the tests' canonical JSON (see testset_id).")
    count: int = Field(description="Number of tests in the set.")


class BatchRequest(BaseModel):
    """Body of ``POST /v1/batch``: programs to judge against one registered test set.

    Each program is a RunRequest whose ``tests`` is left empty: the server fills it from the set.
    """

    model_config = ConfigDict(extra="forbid")

    testset: str = Field(description="A test set id returned by POST /v1/testsets.")
    programs: list[RunRequest] = Field(min_length=1, max_length=MAX_BATCH_PROGRAMS)

    @field_validator("programs")
    @classmethod
    def _programs_carry_no_tests(cls, programs: list[RunRequest]) -> list[RunRequest]:
        for i, program in enumerate(programs):
            if program.tests:
                raise ValueError(f"programs[{i}] has its own tests; in a batch the tests come from the test set")
        return programs


class BatchResponse(BaseModel):
    """Answer of ``POST /v1/batch``: one RunResult per program, in the request's order."""

    results: list[RunResult]
