"""Content-addressed result cache: an identical (program, tests, limits, checker) is judged once."""

from __future__ import annotations

import hashlib
import json
import threading
from collections import OrderedDict

from sandbox.spec import RunRequest, RunResult


def request_key(req: RunRequest, *versions: str) -> str:
    """sha256 over every field of the request (code, tests, fn_name, limits, checker) and versions."""
    h = hashlib.sha256()
    h.update(json.dumps([versions, req.model_dump(mode="json")], sort_keys=True, ensure_ascii=False,
                        separators=(",", ":")).encode("utf-8", "surrogatepass"))
    return h.hexdigest()


def _size(result: RunResult) -> int:
    """Rough bytes held by a result (its outputs dominate)."""
    return 512 + len(result.compile_output) + sum(
        256 + len(t.stdout) + len(t.stderr) + len(t.message) for t in result.tests)


class ResultCache:
    """Thread-safe LRU of RunResults by request key, bounded by count and by (rough) bytes.
    ``capacity=0`` disables it."""

    def __init__(self, capacity: int, max_bytes: int = 256 * 1024 * 1024) -> None:
        self.capacity, self.max_bytes = capacity, max_bytes
        self._items: OrderedDict[str, tuple[RunResult, int]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def get(self, key: str) -> RunResult | None:
        with self._lock:
            item = self._items.get(key)
            if item is not None:
                self._items.move_to_end(key)
        return item[0].model_copy(deep=True, update={"cached": True}) if item is not None else None

    def put(self, key: str, result: RunResult) -> None:
        if self.capacity <= 0:
            return
        size = _size(result)
        if size > self.max_bytes:
            return
        with self._lock:
            old = self._items.pop(key, None)
            if old is not None:
                self._bytes -= old[1]
            self._items[key] = (result.model_copy(deep=True), size)
            self._bytes += size
            while len(self._items) > self.capacity or self._bytes > self.max_bytes:
                _, (_, dropped) = self._items.popitem(last=False)
                self._bytes -= dropped

    def __len__(self) -> int:
        return len(self._items)
