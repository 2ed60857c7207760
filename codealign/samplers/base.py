"""The one sampler interface: prompts in, n completions per prompt out."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence

from pydantic import BaseModel, ConfigDict, Field


class SamplingParams(BaseModel):
    """How to sample. Defaults suit pass@k at large k (temperature sampling, no nucleus cut)."""

    model_config = ConfigDict(extra="forbid")

    max_new_tokens: int = Field(default=512, gt=0, description="New tokens per completion at most.")
    temperature: float = Field(default=1.0, ge=0, description="0 = greedy.")
    top_p: float = Field(default=1.0, gt=0, le=1)
    seed: int | None = Field(default=None, description="Makes sampling repeatable for a given sampler and batch layout (hf: its own RNG stream; the caller's is untouched).")
    stop: list[str] = Field(default_factory=list, description="Generation ends at the first of these strings (not included in the text).")


class Completion(BaseModel):
    """One sampled completion.

    ``token_ids`` are the *response* tokens (no prompt, no padding; EOS included when the model produced
    it; when a stop string ended it, the tokens up to the one that completed the stop string), or
    ``None`` when the backend does not return them (the OpenAI-compatible client).
    """

    text: str
    token_ids: list[int] | None = None
    finish_reason: str | None = None  # "stop" (EOS or stop string) or "length"


class Sampler(ABC):
    """Anything that turns prompts into completions."""

    @abstractmethod
    def sample(self, prompts: Sequence[str], n: int, params: SamplingParams) -> list[list[Completion]]:
        """``n`` completions for each prompt, in prompt order: ``result[i][j]`` is sample j of prompt i."""

    def context_length(self) -> int | None:
        """Positions the model attends to (prompt + response, tokens), when this sampler knows it."""
        return None

    def close(self) -> None:
        """Release resources (threads, engines). Safe to call twice."""

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def cut_at_stop(text: str, stop: Sequence[str]) -> tuple[str, bool]:
    """``text`` cut before the earliest stop string, and whether one was found."""
    cut = min((i for i in (text.find(s) for s in stop if s) if i >= 0), default=-1)
    return (text[:cut], True) if cut >= 0 else (text, False)
