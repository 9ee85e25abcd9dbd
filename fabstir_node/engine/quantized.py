"""An 8-bit copy of a matrix's rows that picks candidates for exact re-scoring.

A full scan of a large f16 matrix is bound by memory bandwidth (1M x 384 is 768 MB: ~70-90 ms on
two cores here).  :class:`Int8Rows` holds each unit row as int8 codes with a per-row scale
(``row ~= scale * codes``, ``scale = max|row| / 127``): half the bytes, scanned with numkong's
packed int8 dot kernels (VNNI/AMX where the CPU has them).  Its scores are within a few thousandths
of the true cosines, so the best :func:`candidate_count` rows by code score hold the true top-k;
the matrix re-scores exactly those on its stored rows.  The result is the exact search's answer
unless more than that many rows sit within the quantisation error of the k-th score
(``scripts/bench`` measures recall against float32 exact search on tight and diffuse data, for
queries near the data and far from it).

Pure: no I/O.  Filling is thread-safe for disjoint row ranges; scans are safe from any thread.
"""

from __future__ import annotations

import contextlib
import mmap
from collections.abc import Callable
from typing import Any

import numkong
import numpy as np

from .parallel import run_parallel

__all__ = ["SPLIT_ROWS", "Int8Rows", "candidate_count", "code_candidates", "drop_pages", "packed_query",
           "quantize_rows"]

#: Candidates re-scored for a top-k: generous, since a far query's top-k are near-ties.
MIN_CANDIDATES = 256
PER_K = 32
#: Scans of at least this many rows run as two halves, at once when the service lends a spare core
#: (``parallel.py``): 1M x 384, 66 -> 34-36 ms on this machine's two cores (2026-12-06).
SPLIT_ROWS = 100_000


def drop_pages(mapping: mmap.mmap) -> None:
    """Unmap ``mapping``'s pages from the process (``MADV_DONTNEED``; a file's pages stay in the page
    cache and come back on the next touch).  Safe while other threads read through it; a no-op where
    the mapping is closed or the platform has no ``madvise``."""
    with contextlib.suppress(OSError, ValueError, AttributeError):
        mapping.madvise(mmap.MADV_DONTNEED)


def packed_query(query: np.ndarray) -> Any:
    """A float32 unit ``query`` as 8-bit codes packed for ``numkong.dots_packed`` against rows' codes."""
    codes, _ = quantize_rows(np.asarray(query, np.float32)[None])
    return numkong.dots_pack(codes)


def candidate_count(k: int, n: int) -> int:
    """How many code-score candidates a top-``k`` over ``n`` rows re-scores."""
    return min(n, max(MIN_CANDIDATES, PER_K * k))


def quantize_rows(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """int8 codes and float32 per-row scales of float rows (zero rows: zero codes, scale 0)."""
    values = np.array(rows, np.float32)  # a copy: scaled in place below
    if values.size == 0:
        return np.zeros(values.shape, np.int8), np.zeros(len(values), np.float32)
    peak = np.maximum(values.max(axis=1), -values.min(axis=1))
    scale = (peak / np.float32(127.0)).astype(np.float32)
    inverse = np.divide(np.float32(127.0), peak, out=np.zeros_like(peak), where=peak > 0)
    np.multiply(values, inverse[:, None], out=values)  # within [-127, 127] by construction
    np.rint(values, out=values)
    return values.astype(np.int8), scale


class Int8Rows:
    """int8 codes of ``n`` rows of dimension ``d``, filled block by block, then scanned."""

    __slots__ = ("_codes", "_scales")

    def __init__(self, n: int, d: int) -> None:
        self._codes = np.zeros((n, d), np.int8)
        self._scales = np.zeros(n, np.float32)

    @classmethod
    def of(cls, codes: np.ndarray, scales: np.ndarray) -> Int8Rows:
        """Rows over existing arrays (e.g. memory-mapped files: each scan then drops their pages)."""
        if codes.ndim != 2 or codes.dtype != np.int8 or scales.shape != (len(codes),) or scales.dtype != np.float32:
            raise ValueError("codes must be n x d int8 and scales n float32")
        self = cls.__new__(cls)
        self._codes, self._scales = codes, scales
        return self

    @property
    def codes(self) -> np.ndarray:
        return self._codes

    @property
    def scales(self) -> np.ndarray:
        return self._scales

    @classmethod
    def from_rows(cls, rows: np.ndarray, block: int = 65536) -> Int8Rows:
        """Codes of every row of ``rows`` (float values), quantised block by block."""
        return cls.from_blocks(len(rows), rows.shape[1], lambda start, stop: rows[start:stop], block)

    @classmethod
    def from_blocks(
        cls, n: int, d: int, read: Callable[[int, int], np.ndarray], block: int = 65536
    ) -> Int8Rows:
        """Codes of ``n`` rows of dimension ``d``, ``read(start, stop)`` giving each block as float values."""
        self = cls(n, d)
        for start in range(0, n, block):
            self.fill(start, read(start, min(n, start + block)))
        return self

    def fill(self, start: int, rows: np.ndarray) -> None:
        self.put(start, *quantize_rows(rows))

    def put(self, start: int, codes: np.ndarray, scales: np.ndarray) -> None:
        """Store codes and scales made by :func:`quantize_rows` (e.g. in a decode worker)."""
        self._codes[start : start + len(codes)] = codes
        self._scales[start : start + len(codes)] = scales

    def __len__(self) -> int:
        return len(self._scales)

    @property
    def nbytes(self) -> int:
        return int(self._codes.nbytes + self._scales.nbytes)

    def scores(self, query: np.ndarray) -> np.ndarray:
        """Approximate cosines of every row with a float32 unit ``query`` (up to a positive factor)."""
        dots = np.asarray(numkong.dots_packed(self._codes, packed_query(query))).reshape(-1)
        return dots * self._scales

    def candidates(self, query: np.ndarray, count: int) -> np.ndarray:
        """Row numbers (int64, unordered) of the ``count`` best rows by code score."""
        try:
            return code_candidates(self._codes, self._scales, query, count)
        finally:
            for array in (self._codes, self._scales):  # mapped files: leave their pages to the page cache
                mapping = getattr(array, "_mmap", None)
                if mapping is not None:
                    drop_pages(mapping)


def code_candidates(codes: np.ndarray, scales: np.ndarray, query: np.ndarray, count: int) -> np.ndarray:
    """Positions (int64, unordered) of the ``count`` best of ``codes`` (with their per-row ``scales``) by
    code score with the float32 unit ``query``; :data:`SPLIT_ROWS` or more in two halves
    (``parallel.run_parallel``)."""
    n = len(codes)
    if count >= n:
        return np.arange(n, dtype=np.int64)
    packed = packed_query(query)

    def best(start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
        scores = np.asarray(numkong.dots_packed(codes[start:stop], packed)).reshape(-1) * scales[start:stop]
        keep = min(count, stop - start)
        top = np.argpartition(scores, len(scores) - keep)[len(scores) - keep :]
        return start + top.astype(np.int64), scores[top]

    if n < SPLIT_ROWS:
        return best(0, n)[0]
    middle = n // 2
    parts = run_parallel([lambda: best(0, middle), lambda: best(middle, n)])
    rows = np.concatenate([part[0] for part in parts])
    scores = np.concatenate([part[1] for part in parts])
    return rows[np.argpartition(scores, len(scores) - count)[len(scores) - count :]]
