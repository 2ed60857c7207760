"""Content-addressed caches: results (an identical program, tests, limits and checker is judged
once) and compiled binaries (a distinct C++/Java program is compiled once, kept within a size bound)."""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from collections import OrderedDict

from sandbox import isolation
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


class BinaryCache:
    """The directory of compiled programs (one file or directory per content hash), shared by every
    worker and by executors on the same host, kept under ``max_mb`` MiB by evicting the least
    recently used entries (each use touches the entry's mtime, so executors sharing the directory
    share the order). Entries in use here, or used in the last ``grace_s`` seconds (by anyone), are
    never evicted, so a program is never deleted between its compile and its runs."""

    def __init__(self, path: str, max_mb: int, grace_s: float = 60.0) -> None:
        self.path, self.max_bytes, self.grace_s = path, max_mb * 1024 * 1024, grace_s
        os.makedirs(path, mode=0o711, exist_ok=True)
        # Traversable but not listable: a program cannot enumerate (and read) other programs'
        # binaries; their names are content hashes it cannot guess without their source.
        os.chmod(path, 0o711)
        self._lock = threading.Lock()
        self._in_use: dict[str, int] = {}

    def entry(self, key: str) -> str:
        return os.path.join(self.path, key)

    def acquire(self, key: str) -> None:
        """``key`` is about to run: keep it (and mark it recently used)."""
        with self._lock:
            self._in_use[key] = self._in_use.get(key, 0) + 1
        try:
            os.utime(self.entry(key))
        except OSError:
            pass

    def release(self, key: str) -> None:
        with self._lock:
            n = self._in_use.pop(key, 1) - 1
            if n > 0:
                self._in_use[key] = n

    def size_mb(self) -> float:
        return sum(size for _, _, size in self._entries()) / (1024 * 1024)

    def _entries(self) -> list[tuple[float, str, int]]:
        """(mtime, name, bytes) of every entry; a directory counts all its files."""
        out = []
        try:
            names = os.listdir(self.path)
        except OSError:
            return out
        for name in names:
            path = self.entry(name)
            try:
                st = os.lstat(path)
                size = st.st_size
                if os.path.isdir(path):
                    for dirpath, _, files in os.walk(path):
                        size += sum(os.lstat(os.path.join(dirpath, f)).st_size for f in files)
            except OSError:
                continue
            out.append((st.st_mtime, name, size))
        return out

    def evict(self) -> list[str]:
        """Remove least recently used entries until the cache fits; returns the removed names."""
        entries = sorted(self._entries())
        total = sum(size for _, _, size in entries)
        removed = []
        now = time.time()
        for mtime, name, size in entries:
            if total <= self.max_bytes:
                break
            with self._lock:
                busy = name in self._in_use
            if busy or now - mtime < self.grace_s:
                continue
            try:
                isolation.remove_tree(self.entry(name))
            except OSError:
                continue
            total -= size
            removed.append(name)
        return removed
