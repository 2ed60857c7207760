"""Completion -> program.

Policy (in this order):

1. Fenced blocks (lines starting with three backticks). The last block tagged ``python``/``py``/
   ``python3`` wins; otherwise the last block with no tag or another tag. A final block the model did
   not close (it ran out of tokens) counts, up to the end of the text. Models often restate a snippet or
   show usage before the final answer, so the last block is the answer; a tagged block beats untagged
   ones because untagged blocks are usually sample input/output.
2. No fence at all: the whole text, when it parses as Python (``ast.parse``) and is more than bare
   names or constants (a one-word answer such as ``none`` parses, but is prose, not a program).
3. Otherwise ``None`` (no program; judged as a compile error).

A completion that *continues* an opened fence (code, then a closing fence, then prose) is handled by
rule 1 when the caller prefixes the opening fence; :func:`extract_code` itself does not guess.
"""

from __future__ import annotations

import ast
import re

_FENCE = re.compile(r"^[ \t]*```+[ \t]*([\w+#.-]*)[^\n]*$")
_PYTHON_TAGS = {"python", "py", "python3", "py3"}


def _blocks(text: str) -> list[tuple[str, str]]:
    """(tag, body) of each fenced block, in order; an unclosed final block runs to the end."""
    blocks: list[tuple[str, str]] = []
    tag: str | None = None
    body: list[str] = []
    for line in text.splitlines():
        m = _FENCE.match(line)
        if m is None:
            if tag is not None:
                body.append(line)
            continue
        if tag is None:  # opening fence
            tag, body = m.group(1).lower(), []
        else:  # closing fence (any tag text after it is ignored)
            blocks.append((tag, "\n".join(body)))
            tag = None
    if tag is not None:
        blocks.append((tag, "\n".join(body)))
    return blocks


def _parse(code: str) -> ast.Module | None:
    try:
        return ast.parse(code)
    except (SyntaxError, ValueError, MemoryError, RecursionError):
        # ValueError: null bytes. MemoryError / RecursionError: CPython's parser gives up on deeply
        # nested or very long expressions ('the ' * 2000, a 200k-term sum); such text is no program.
        return None


def parses(code: str) -> bool:
    """Whether ``code`` is syntactically valid Python 3."""
    return _parse(code) is not None


def _is_program(code: str) -> bool:
    tree = _parse(code)
    bare = lambda node: isinstance(node, ast.Expr) and isinstance(node.value, (ast.Name, ast.Constant))  # noqa: E731
    return tree is not None and not all(bare(node) for node in tree.body)


def extract_code(completion: str) -> str | None:
    """The program in a model's completion, or ``None`` when there is none (see the module policy)."""
    blocks = [(tag, body) for tag, body in _blocks(completion) if body.strip()]
    if blocks:
        python = [body for tag, body in blocks if tag in _PYTHON_TAGS]
        code = (python or [body for _, body in blocks])[-1]
        return code.strip("\n") + "\n"
    if "```" not in completion and completion.strip() and _is_program(completion):
        return completion.strip("\n") + "\n"
    return None


def humaneval_program(prompt: str, completion: str, entry_point: str) -> str | None:
    """HumanEval: a completion that defines ``entry_point`` stands alone; else it continues ``prompt``.

    A continuation is cut at the first line that starts at column 0 after the body (the usual
    HumanEval stop sequences ``\\ndef``, ``\\nclass``, ``\\nif``, ``\\nprint``, ``\\n#``), so trailing
    test code or prose does not break the function.
    """
    code = extract_code(completion)
    if code is not None and re.search(rf"^\s*def\s+{re.escape(entry_point)}\s*\(", code, re.M):
        return code
    body = re.split(r"\n(?=\S)", completion, maxsplit=1)[0] if not completion.startswith(("def ", "class ")) else completion
    program = prompt + body
    return program + "\n" if parses(program) else None
