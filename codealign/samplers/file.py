"""``file`` samples: pre-generated completions, JSONL rows ``{"problem_id": str, "completion": str}``.

Row order within a problem is the sample index. Optional extra fields are ignored.
"""

from __future__ import annotations

import json
from pathlib import Path


class SamplesFileError(ValueError):
    """A samples file that cannot be read as documented."""


def read_samples(path: str | Path) -> dict[str, list[str]]:
    """Completions per problem id, in file order (first-seen problem order kept)."""
    path = Path(path)
    if not path.is_file():
        raise SamplesFileError(f"samples file not found: {path}")
    out: dict[str, list[str]] = {}
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise SamplesFileError(f"{path}:{lineno}: not valid JSON ({e})") from e
            if not isinstance(row, dict) or "problem_id" not in row or not isinstance(row.get("completion"), str):
                raise SamplesFileError(f'{path}:{lineno}: expected {{"problem_id": str, "completion": str}}, got {line.strip()[:200]}')
            out.setdefault(str(row["problem_id"]), []).append(row["completion"])
    if not out:
        raise SamplesFileError(f"{path}: no samples in the file")
    return out

