"""The frames a worker process and the daemon exchange over a pipe (sans-io: no reads, no writes).

A frame is a 4-byte big-endian length, a JSON header (an object) of that length, then the
header's ``sizes``: that many raw buffers back to back.  Bulk data (a chunk's bytes, the decoded
rows) travels as buffers, never inside the JSON and never pickled: a worker reads untrusted chunk
bytes, and nothing it sends back is executed.  numpy arrays are described in the header by
:func:`describe` and rebuilt with :func:`array`.

Both ends read with their own I/O: :func:`header_length` tells how long the header is,
:func:`parse_header` what follows it, :func:`split` cuts the body into buffers.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from typing import Any

import numpy as np
import orjson

__all__ = ["PREFIX_SIZE", "FrameError", "array", "describe", "encode", "header_length", "parse_header", "split"]

PREFIX_SIZE = 4
#: A header is small (names, numbers, buffer sizes); a longer one means the stream is out of step.
MAX_HEADER = 1 << 20
#: No buffer a worker exchanges comes near this (a chunk is at most the storage's object limit).
MAX_BODY = 1 << 34

_PREFIX = struct.Struct(">I")


class FrameError(ValueError):
    """The bytes are not a frame (the other end is out of step or gone mad)."""


def encode(header: dict[str, Any], buffers: Sequence[Any] = ()) -> list[Any]:
    """The pieces of one frame, to be written in order (buffers are not copied)."""
    views = [memoryview(b).cast("B") for b in buffers]
    head = orjson.dumps({**header, "sizes": [len(v) for v in views]})
    return [_PREFIX.pack(len(head)), head, *views]


def header_length(prefix: bytes | bytearray | memoryview) -> int:
    (length,) = _PREFIX.unpack(bytes(prefix))
    if not 2 <= length <= MAX_HEADER:
        raise FrameError(f"a frame header of {length} bytes")
    return int(length)


def parse_header(head: bytes | bytearray | memoryview) -> tuple[dict[str, Any], list[int]]:
    """The header and the sizes of the buffers that follow it."""
    try:
        header = orjson.loads(bytes(head))
    except orjson.JSONDecodeError as exc:
        raise FrameError("a frame header that is not JSON") from exc
    sizes = header.pop("sizes", None) if isinstance(header, dict) else None
    if not isinstance(sizes, list) or not all(type(s) is int and s >= 0 for s in sizes) or sum(sizes) > MAX_BODY:
        raise FrameError("a frame header without valid buffer sizes")
    return header, sizes


def split(body: bytearray | memoryview, sizes: Sequence[int]) -> list[memoryview]:
    """The buffers of a frame's body (views, no copies)."""
    view = memoryview(body)
    if len(view) != sum(sizes):
        raise FrameError("a frame body of the wrong length")
    parts, at = [], 0
    for size in sizes:
        parts.append(view[at : at + size])
        at += size
    return parts


def describe(values: np.ndarray) -> dict[str, Any]:
    """How :func:`array` rebuilds ``values`` from its bytes (send ``np.ascontiguousarray(values)``)."""
    return {"dtype": values.dtype.str, "shape": list(values.shape)}


def array(spec: Any, buffer: memoryview) -> np.ndarray:
    """The array :func:`describe` described, over ``buffer`` (shared, not copied)."""
    if not isinstance(spec, dict):
        raise FrameError("an array without a description")
    dtype, shape = np.dtype(spec["dtype"]), tuple(int(n) for n in spec["shape"])
    if dtype.hasobject or int(np.prod(shape, dtype=np.int64)) * dtype.itemsize != len(buffer):
        raise FrameError("an array whose bytes do not match its description")
    return np.frombuffer(buffer, dtype=dtype).reshape(shape)
