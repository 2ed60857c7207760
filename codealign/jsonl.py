"""Append-only JSONL files that survive a kill: what ``codealign eval`` resumes from."""

from __future__ import annotations

import json
import threading
from pathlib import Path


def read_complete_rows(path: Path) -> list[dict]:
    """Rows of a JSONL file written by :class:`RowWriter`; a torn last line (killed mid-write) is cut off."""
    if not path.exists():
        return []
    data = path.read_bytes()
    end = data.rfind(b"\n") + 1
    if end < len(data):
        with path.open("r+b") as f:
            f.truncate(end)
    return [json.loads(line) for line in data[:end].decode("utf-8").splitlines() if line.strip()]


def write_rows(path: Path, rows: list[dict]) -> None:
    """Replace ``path`` with ``rows``."""
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


class RowWriter:
    """Thread-safe appender: each batch of rows is one ``write`` + flush, so a kill loses at most a torn line."""

    def __init__(self, path: Path):
        self._f = path.open("a", encoding="utf-8")
        self._lock = threading.Lock()

    def write(self, rows: list[dict]) -> None:
        if not rows:
            return
        text = "".join(json.dumps(r) + "\n" for r in rows)
        with self._lock:
            self._f.write(text)
            self._f.flush()

    def close(self) -> None:
        self._f.close()
