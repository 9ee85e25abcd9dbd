"""The inverted-file index (``engine/ivf.py``) as one file, written block by block and memory-mapped.

Layout: the magic :data:`MAGIC` (16 bytes), the header's length (8 bytes, little-endian), the header
(JSON: ``rows``, ``dimensions``, ``lists`` and each array's ``[offset, dtype, shape]``), then the
arrays, each at a 64-byte boundary: ``centroids`` (float32), ``bounds`` and ``order`` (int64),
``scales`` (float32) and ``codes`` (int8, the largest, last).  :func:`write` takes the codes as
blocks (the builder never holds them all); :func:`open_lists` maps the file read-only and returns
views, checked (``IvfLists.check``).  ``disk_cache.py`` names, hashes and adopts the file as it does
a graph.
"""

from __future__ import annotations

import mmap
import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import orjson

from ..engine.ivf import IvfLists
from ..engine.matrix import drop_pages

__all__ = ["MAGIC", "Pages", "open_lists", "write"]

MAGIC = b"FABSTIR-IVF-1\x00\x00\x00"
_ALIGN = 64
_ARRAYS = ("centroids", "bounds", "order", "scales", "codes")


def _layout(rows: int, dimensions: int, lists: int) -> tuple[bytes, dict[str, tuple[int, str, tuple[int, ...]]]]:
    specs = {
        "centroids": ("<f4", (lists, dimensions)),
        "bounds": ("<i8", (lists + 1,)),
        "order": ("<i8", (rows,)),
        "scales": ("<f4", (rows,)),
        "codes": ("|i1", (rows, dimensions)),
    }
    # the header's own length moves the arrays: lay out with room for it, then check it fits
    room = 4096
    while True:
        offset, arrays = len(MAGIC) + 8 + room, {}
        for name in _ARRAYS:
            dtype, shape = specs[name]
            offset = -(-offset // _ALIGN) * _ALIGN
            arrays[name] = (offset, dtype, shape)
            offset += int(np.dtype(dtype).itemsize * int(np.prod(shape)))
        header = orjson.dumps({"rows": rows, "dimensions": dimensions, "lists": lists,
                               "arrays": {k: [o, d, list(s)] for k, (o, d, s) in arrays.items()}})
        if len(header) <= room:
            return header.ljust(room), arrays
        room *= 2


def write(
    path: Path, centroids: np.ndarray, order: np.ndarray, bounds: np.ndarray,
    blocks: Iterable[tuple[int, np.ndarray, np.ndarray]],
) -> None:
    """Write the index to ``path`` (created or truncated) and flush it to disk.

    ``blocks`` yields ``(start, codes, scales)`` in list order (``engine/ivf.encoded_blocks``).
    """
    rows, dimensions, lists = len(order), centroids.shape[1], len(centroids)
    header, arrays = _layout(rows, dimensions, lists)
    end = max(o + np.dtype(d).itemsize * int(np.prod(s)) for o, d, s in arrays.values())
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.ftruncate(fd, end)
        os.pwrite(fd, MAGIC + len(header).to_bytes(8, "little") + header, 0)
        for name, value in (("centroids", centroids), ("bounds", bounds), ("order", order)):
            offset, dtype, _ = arrays[name]
            os.pwrite(fd, np.ascontiguousarray(value, dtype).tobytes(), offset)
        written = 0
        for start, codes, scales in blocks:
            os.pwrite(fd, np.ascontiguousarray(codes, np.int8).tobytes(), arrays["codes"][0] + start * dimensions)
            os.pwrite(fd, np.ascontiguousarray(scales, "<f4").tobytes(), arrays["scales"][0] + start * 4)
            written += len(codes)
        if written != rows:
            raise ValueError(f"{written} rows encoded for an index of {rows}")
        os.fsync(fd)
    finally:
        os.close(fd)


class Pages:
    """The file's mapping, for dropping its pages from the process after a full scan.

    The arrays are views of it and keep it alive; it is unmapped when the last of them goes, so
    there is nothing to close (and no way to close it under a reader).
    """

    def __init__(self, mapping: mmap.mmap) -> None:
        self._mapping = mapping

    def drop_pages(self) -> None:
        drop_pages(self._mapping)


def open_lists(path: Path, rows: int, dimensions: int) -> tuple[Pages, IvfLists]:
    """``(pages, lists)``: the file mapped read-only and its arrays as views of it; ValueError if it is
    not an index of ``rows`` rows of ``dimensions``."""
    with open(path, "rb") as f:
        mapping = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    try:
        return Pages(mapping), _views(mapping, rows, dimensions)
    except (ValueError, KeyError, TypeError, orjson.JSONDecodeError) as exc:
        raise ValueError(f"not an inverted-file index of this matrix ({exc})") from None


def _views(buffer: mmap.mmap, rows: int, dimensions: int) -> IvfLists:
    if len(buffer) < len(MAGIC) + 8 or bytes(buffer[: len(MAGIC)]) != MAGIC:
        raise ValueError("bad magic")
    size = int.from_bytes(buffer[len(MAGIC) : len(MAGIC) + 8], "little")
    start = len(MAGIC) + 8
    if size > len(buffer) - start:
        raise ValueError("truncated header")
    header = orjson.loads(bytes(buffer[start : start + size]))
    if header["rows"] != rows or header["dimensions"] != dimensions:
        raise ValueError("shape differs")
    lists = int(header["lists"])
    _, want = _layout(rows, dimensions, lists)
    arrays = {}
    for name in _ARRAYS:
        offset, dtype, shape = header["arrays"][name]
        if (offset, dtype, tuple(shape)) != want[name]:
            raise ValueError(f"unexpected layout of {name}")
        count = int(np.prod(shape))
        if offset + np.dtype(dtype).itemsize * count > len(buffer):
            raise ValueError("truncated file")
        arrays[name] = np.frombuffer(buffer, dtype=dtype, count=count, offset=offset).reshape(shape)
    ivf = IvfLists(**arrays)
    ivf.check(rows, dimensions)
    return ivf
