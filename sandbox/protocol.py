"""Framing between the executor and its workers: a small marshalled header plus raw byte blobs.

Frame = u32 header length | header (``marshal`` of a dict of plain values, with "blobs": the blob
lengths) | the blobs, back to back. Program output travels as raw blobs, never inside the header,
so binary output costs nothing extra. Both ends are the same interpreter (the executor starts its
workers with its own ``sys.executable``), which is what ``marshal`` needs; it is several times
cheaper than JSON both ways, and this channel carries one frame each way per test.
"""

from __future__ import annotations

import marshal
import os
import struct
from typing import Any, BinaryIO

_U32 = struct.Struct("<I")


def encode(header: dict[str, Any], blobs: list[bytes] = ()) -> bytes:
    hdr = marshal.dumps({**header, "blobs": [len(b) for b in blobs]})
    return b"".join([_U32.pack(len(hdr)), hdr, *blobs])


def write_fd(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def read_frame(src: BinaryIO) -> tuple[dict[str, Any], list[bytes]]:
    """Read one frame from a buffered binary file; EOFError when the other end is gone."""

    def rd(n: int) -> bytes:
        data = src.read(n)
        if data is None or len(data) != n:
            raise EOFError("channel closed")
        return data

    (hlen,) = _U32.unpack(rd(4))
    header = marshal.loads(rd(hlen))
    return header, [rd(n) if n else b"" for n in header.pop("blobs", ())]
