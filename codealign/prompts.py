"""Problem -> prompt: a plain completion prompt, and a chat prompt for instruction-tuned models.

The completion prompt ends with ``"### Answer\\n"`` and does *not* open a code fence: the model is
expected to answer with a fenced block (```` ```python ... ``` ````), which :func:`codealign.extract.extract_code`
takes out. HumanEval problems are the exception: their completion prompt is the dataset's own prompt
(a function signature and docstring) and the model continues the function body.
"""

from __future__ import annotations

from typing import Any, Literal

from codealign.problems import Problem

PromptStyle = Literal["auto", "completion", "chat"]

SYSTEM_PROMPT = "You are an expert competitive programmer. You answer with one complete Python 3 program in a ```python code block."


def instructions(problem: Problem) -> str:
    """How the program is run: stdin/stdout, or a call of ``fn_name`` (a ``Solution`` method when the starter code has that class)."""
    if problem.fn_name and problem.test_code is None:
        where = "the method of class `Solution`" if "class Solution" in problem.starter_code else "the function"
        return (
            f"Complete the starter code below. Your code is not run as a script: {where} `{problem.fn_name}` "
            "is called with each test's arguments and its return value is checked. Do not read input or print."
        )
    if problem.test_code is not None:
        return f"Complete the function `{problem.fn_name}`."
    return "Write a Python 3 program that reads the input from standard input and writes the answer to standard output."


def user_message(problem: Problem) -> str:
    """The problem as one user message: statement, instructions, starter code."""
    parts = [problem.statement.strip(), "", instructions(problem)]
    if problem.starter_code.strip():
        parts += ["", "Starter code:", "```python", problem.starter_code.rstrip(), "```"]
    parts += ["", "Answer with the complete program in a single ```python code block."]
    return "\n".join(parts)


def completion_prompt(problem: Problem) -> str:
    """A plain-text prompt for base models; ends with ``"### Answer\\n"`` (HumanEval: the dataset's prompt)."""
    if problem.test_code is not None:
        return problem.statement
    return f"### Problem\n{user_message(problem)}\n\n### Answer\n"


def chat_messages(problem: Problem, *, system: str | None = SYSTEM_PROMPT) -> list[dict[str, str]]:
    """OpenAI-style messages for a chat model."""
    messages = [{"role": "system", "content": system}] if system else []
    return [*messages, {"role": "user", "content": user_message(problem)}]


def has_chat_template(tokenizer: Any) -> bool:
    return bool(getattr(tokenizer, "chat_template", None))


def chat_prompt(problem: Problem, tokenizer: Any, *, system: str | None = SYSTEM_PROMPT) -> str:
    """The chat messages rendered with the tokenizer's chat template, ready for generation.

    Raises ``ValueError`` when the tokenizer has no chat template (use :func:`completion_prompt`).
    """
    if not has_chat_template(tokenizer):
        raise ValueError("the tokenizer has no chat template; use the completion prompt")
    return tokenizer.apply_chat_template(chat_messages(problem, system=system), tokenize=False, add_generation_prompt=True)


def build_prompt(problem: Problem, tokenizer: Any = None, style: PromptStyle = "auto") -> str:
    """``"auto"``: the chat prompt when the tokenizer has a chat template, else the completion prompt."""
    if style == "chat" or (style == "auto" and tokenizer is not None and has_chat_template(tokenizer)):
        if tokenizer is None:
            raise ValueError("the chat prompt style needs a tokenizer with a chat template")
        return chat_prompt(problem, tokenizer)
    if style not in ("auto", "completion", "chat"):
        raise ValueError(f"unknown prompt style {style!r}; use auto, completion or chat")
    return completion_prompt(problem)
