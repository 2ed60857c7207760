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


class ResultCache:
    """Thread-safe LRU of RunResults by request key. ``capacity=0`` disables it."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._items: OrderedDict[str, RunResult] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: str) -> RunResult | None:
        with self._lock:
            hit = self._items.get(key)
            if hit is not None:
                self._items.move_to_end(key)
        return hit.model_copy(deep=True, update={"cached": True}) if hit is not None else None

    def put(self, key: str, result: RunResult) -> None:
        if self.capacity <= 0:
            return
        with self._lock:
            self._items[key] = result.model_copy(deep=True)
            self._items.move_to_end(key)
            while len(self._items) > self.capacity:
                self._items.popitem(last=False)

    def __len__(self) -> int:
        return len(self._items)
