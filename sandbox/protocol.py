"""Framing between the executor and its workers: a JSON header plus raw byte blobs.

Frame = u32 header length | header (JSON, with "nblobs") | for each blob: u64 length | bytes.
Program output travels as raw blobs, never through JSON, so binary output costs nothing extra.
"""

from __future__ import annotations

import json
import os
import struct
from typing import Any, BinaryIO


def encode(header: dict[str, Any], blobs: list[bytes] = ()) -> bytes:
    hdr = json.dumps({**header, "nblobs": len(blobs)}).encode()
    parts = [struct.pack("<I", len(hdr)), hdr]
    for b in blobs:
        parts.append(struct.pack("<Q", len(b)))
        parts.append(b)
    return b"".join(parts)


def write_fd(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def _read_exact_fd(fd: int, n: int) -> bytes:
    chunks, got = [], 0
    while got < n:
        c = os.read(fd, min(n - got, 1 << 20))
        if not c:
            raise EOFError("channel closed")
        chunks.append(c)
        got += len(c)
    return b"".join(chunks)


def _read_exact_file(f: BinaryIO, n: int) -> bytes:
    data = f.read(n)
    if data is None or len(data) != n:
        raise EOFError("channel closed")
    return data


def read_frame(src: int | BinaryIO) -> tuple[dict[str, Any], list[bytes]]:
    """Read one frame from a file descriptor or a buffered binary file; EOFError when closed."""
    rd = (lambda n: _read_exact_fd(src, n)) if isinstance(src, int) else (lambda n: _read_exact_file(src, n))
    (hlen,) = struct.unpack("<I", rd(4))
    header = json.loads(rd(hlen))
    blobs = []
    for _ in range(header.pop("nblobs", 0)):
        (blen,) = struct.unpack("<Q", rd(8))
        blobs.append(rd(blen) if blen else b"")
    return header, blobs
