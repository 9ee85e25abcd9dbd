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

A load's copy also keeps each block's codes *packed* for numkong (``dots_pack``: the layout its
kernels stream), and scans those with the query as the left operand: 1M x 384 on one core
29.7 ms instead of 53 ms with the rows as the left operand and the query packed, 16.4 ms in two
threads (2026-12-06, Xeon with AMX; 41 vs 67 ms with AMX switched off, 53 vs 95 ms with only
AVX2).  The packed blocks live in memory, so the plain codes can go to a file (a
:class:`CodeSink`, the loader's) and the copy still costs the memory of one.  They serve until the
database's index answers; the saved copy that serves its declined answers afterwards is mapped
and scanned plain (packing it again would cost more than the scans it saves).

Pure: no I/O of its own (a sink writes).  Filling is thread-safe for disjoint row ranges; scans are
safe from any thread.
"""

from __future__ import annotations

import contextlib
import mmap
import threading
from collections.abc import Callable, Sequence
from typing import Any, Generic, Protocol, TypeVar

import numkong
import numpy as np

from .parallel import run_parallel

__all__ = ["SCAN_ROWS", "SPLIT_ROWS", "CodeSink", "Int8Rows", "candidate_count", "code_candidates",
           "code_candidates_many", "drop_array_pages", "drop_pages", "packed_query", "quantize_rows"]

#: Candidates re-scored for a top-k.  In the 8-bit order the exact top-10 sat within the best 14 rows
#: for every one of 1,600 queries (100K x 384, tight and diffuse sets, near and far queries; p99 11 —
#: 2026-12-06), and within 12 at 1M: 96 leaves a margin of seven for a far query's near-ties.
MIN_CANDIDATES = 96
PER_K = 8
#: Rows scored at a time by a scan of plain codes (packed ones go block by block): a scan keeps only each
#: query's best candidates between them, so 64 queries of a batch hold 64 x 65,536 scores, not 64 x 1M.
SCAN_ROWS = 65_536
#: Scans of at least this many rows run in two threads taking blocks as they come (:class:`_Blocks`), at
#: once when the service lends a spare core (``parallel.py``): 1M x 384, 66 -> 34-36 ms on this machine's
#: two cores as two fixed halves (2026-12-06).
SPLIT_ROWS = 100_000
#: A split scan of plain codes goes in at least this many blocks, for its two threads to share (``_Blocks``).
SHARED_BLOCKS = 8


def drop_pages(mapping: mmap.mmap) -> None:
    """Unmap ``mapping``'s pages from the process (``MADV_DONTNEED``; a file's pages stay in the page
    cache and come back on the next touch).  Safe while other threads read through it; a no-op where
    the mapping is closed or the platform has no ``madvise``."""
    with contextlib.suppress(OSError, ValueError, AttributeError):
        mapping.madvise(mmap.MADV_DONTNEED)


def drop_array_pages(array: np.ndarray) -> None:
    """:func:`drop_pages` of the file ``array`` maps (an ``np.memmap``); a no-op for any other array."""
    mapping = getattr(array, "_mmap", None)  # np.memmap's mmap.mmap
    if mapping is not None:
        drop_pages(mapping)


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


class CodeSink(Protocol):
    """Where an :class:`Int8Rows` puts its plain codes instead of its own array (e.g. a file):
    ``write`` a block, then ``rows`` gives them all (once every block was written)."""

    def write(self, start: int, rows: np.ndarray) -> None: ...

    def rows(self) -> np.ndarray: ...


class Int8Rows:
    """int8 codes of ``n`` rows of dimension ``d``, filled block by block, then scanned.

    ``packed``: also keep each block packed for the query-major kernel (see the module's doc) and scan
    those once every row has one.  ``sink``: the plain codes go there, not to memory (with
    ``packed``); :meth:`seal` maps them back once every block was put.
    """

    __slots__ = ("_blocks", "_codes", "_lock", "_packed_rows", "_scales", "_sink")

    def __init__(self, n: int, d: int, *, packed: bool = False, sink: CodeSink | None = None) -> None:
        if sink is not None and not packed:
            raise ValueError("codes go to a sink only when the copy keeps them packed")
        self._sink = sink
        self._codes = np.zeros((n if sink is None else 0, d), np.int8)
        self._scales = np.zeros(n, np.float32)
        self._blocks: list[tuple[int, int, Any]] | None = [] if packed else None
        self._packed_rows = 0
        self._lock = threading.Lock()

    @classmethod
    def of(cls, codes: np.ndarray, scales: np.ndarray) -> Int8Rows:
        """Rows over existing arrays (e.g. memory-mapped files: each scan then drops their pages)."""
        if codes.ndim != 2 or codes.dtype != np.int8 or scales.shape != (len(codes),) or scales.dtype != np.float32:
            raise ValueError("codes must be n x d int8 and scales n float32")
        self = cls.__new__(cls)
        self._codes, self._scales, self._sink, self._blocks = codes, scales, None, None
        self._packed_rows, self._lock = 0, threading.Lock()
        return self

    def packed_copy(self, block: int = 16_384) -> Int8Rows:
        """These rows with their codes also packed (read block by block; a mapped file's pages dropped)."""
        copy = Int8Rows.of(self._codes, self._scales)
        copy._blocks = []
        for start in range(0, len(self), block):
            copy._pack(start, np.ascontiguousarray(self._codes[start : start + block]))
            self._drop_pages()
        return copy

    def seal(self) -> None:
        """Every block was put: the codes a sink took are mapped back as :attr:`codes`."""
        if self._sink is not None:
            self._codes, self._sink = self._sink.rows(), None

    @property
    def codes(self) -> np.ndarray:
        if self._sink is not None:
            raise ValueError("the codes are still being written")
        return self._codes

    @property
    def packed(self) -> bool:
        """Whether scans take the packed blocks (every row has one)."""
        return self._blocks is not None and self._packed_rows == len(self)

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
        if self._sink is not None:
            self._sink.write(start, codes)
        else:
            self._codes[start : start + len(codes)] = codes
        self._scales[start : start + len(codes)] = scales
        if self._blocks is not None and len(codes):
            self._pack(start, np.ascontiguousarray(codes, np.int8))

    def _pack(self, start: int, codes: np.ndarray) -> None:
        assert self._blocks is not None
        packed = numkong.dots_pack(codes)
        with self._lock:
            for i, (begin, end, _) in enumerate(self._blocks):
                if begin == start:  # the same rows put again (a block filled twice): the last one counts
                    self._packed_rows -= end - begin
                    del self._blocks[i]
                    break
            self._blocks.append((start, start + len(codes), packed))
            self._blocks.sort(key=lambda block: block[0])
            self._packed_rows += len(codes)

    def __len__(self) -> int:
        return len(self._scales)

    @property
    def nbytes(self) -> int:
        """Bytes held in memory (mapped files are not counted)."""
        held = 0 if isinstance(self._codes, np.memmap) else self._codes.nbytes
        packed = sum(int(block[2].nbytes) for block in self._blocks or ())
        return int(held + self._scales.nbytes + packed)

    def scores(self, query: np.ndarray) -> np.ndarray:
        """Approximate cosines of every row with a float32 unit ``query`` (up to a positive factor)."""
        dots = np.asarray(numkong.dots_packed(self._codes, packed_query(query))).reshape(-1)
        return dots * self._scales

    def candidates(self, query: np.ndarray, count: int) -> np.ndarray:
        """Row numbers (int64, unordered) of the ``count`` best rows by code score."""
        return self.candidates_many(np.asarray(query, np.float32)[None], count)[0]

    def candidates_many(self, queries: np.ndarray, count: int) -> list[np.ndarray]:
        """:meth:`candidates` of each row of ``queries`` (B x d float32 unit vectors), from one pass over
        the codes: the scan is bound by reading them, and numkong's kernels score a handful of queries
        for little more than one (1M x 384 on one core: 29 ms for one query, 35 ms for 4, 38 ms for 16;
        2026-12-06, Xeon with AMX)."""
        if self.packed:
            assert self._blocks is not None
            return _packed_candidates_many(self._blocks, self._scales, queries, count)
        try:
            return code_candidates_many(self._codes, self._scales, queries, count)
        finally:
            self._drop_pages()

    def _drop_pages(self) -> None:
        for array in (self._codes, self._scales):  # mapped files: leave their pages to the page cache
            drop_array_pages(array)


def code_candidates(codes: np.ndarray, scales: np.ndarray, query: np.ndarray, count: int) -> np.ndarray:
    """Positions (int64, unordered) of the ``count`` best of ``codes`` (with their per-row ``scales``) by
    code score with the float32 unit ``query``; :data:`SPLIT_ROWS` or more in two threads
    (``parallel.run_parallel``)."""
    return code_candidates_many(codes, scales, np.asarray(query, np.float32)[None], count)[0]


def code_candidates_many(codes: np.ndarray, scales: np.ndarray, queries: np.ndarray, count: int) -> list[np.ndarray]:
    """:func:`code_candidates` of each row of ``queries`` (B x d), from one pass over ``codes``: scored as
    the rows against the queries packed (the plain layout a saved copy has)."""
    n, many = len(codes), len(queries)
    if count >= n:
        return [np.arange(n, dtype=np.int64) for _ in range(many)]
    query_codes, _ = quantize_rows(np.asarray(queries, np.float32))
    packed = numkong.dots_pack(query_codes)

    step = SCAN_ROWS if n < SPLIT_ROWS else min(SCAN_ROWS, -(-n // SHARED_BLOCKS))

    def score(start: int) -> tuple[int, np.ndarray]:
        stop = min(n, start + step)
        dots = np.asarray(numkong.dots_packed(codes[start:stop], packed))  # rows x queries (int32)
        return start, np.multiply(dots.T, scales[start:stop], dtype=np.float32)  # not float64: half the bytes

    return _scanned(list(range(0, n, step)), score, n, count)


def _packed_candidates_many(
    blocks: Sequence[tuple[int, int, Any]], scales: np.ndarray, queries: np.ndarray, count: int
) -> list[np.ndarray]:
    """:func:`code_candidates_many` over packed blocks (``(start, stop, packed)``, in order, covering every
    row), the queries as the left operand (the layout numkong's kernels stream fastest)."""
    n, many = len(scales), len(queries)
    if count >= n:
        return [np.arange(n, dtype=np.int64) for _ in range(many)]
    codes, _ = quantize_rows(np.asarray(queries, np.float32))

    def score(block: tuple[int, int, Any]) -> tuple[int, np.ndarray]:
        start, stop, packed = block
        scores = np.asarray(numkong.dots_packed(codes, packed)).astype(np.float32)
        scores *= scales[start:stop]
        return start, scores

    return _scanned(list(blocks), score, n, count)


_T = TypeVar("_T")


class _Blocks(Generic[_T]):
    """A scan's blocks, handed out one at a time to whichever of its threads is free.

    Two fixed halves finish when the slower one does, and on a shared machine one core often is slower
    for a while (another tenant, the kernel writing pages back): in the daemon the two halves of one 1M
    scan took 20-28 ms each.  Taking blocks as they come, the faster thread does more of them.  A 1M
    database's scans before its index, three alternating pairs of ``scripts/bench`` runs (2026-12-06
    23:47-23:51 UTC, 2 vCPU Xeon): p99 37.0 / 33.3 / 39.6 ms with fixed halves, 31.3 / 29.0 / 27.6 ms
    shared, the p50 alike (21.7-23.3 ms); at 100K (three pairs) no difference either way.
    """

    __slots__ = ("_items", "_lock", "_next")

    def __init__(self, items: list[_T]) -> None:
        self._items, self._next, self._lock = items, 0, threading.Lock()

    def __len__(self) -> int:
        return len(self._items)

    def take(self) -> _T | None:
        with self._lock:
            if self._next >= len(self._items):
                return None
            self._next += 1
            return self._items[self._next - 1]


def _scanned(
    blocks: list[_T], score: Callable[[_T], tuple[int, np.ndarray]], n: int, count: int
) -> list[np.ndarray]:
    """Each query's ``count`` best rows of a scan of ``n`` rows in ``blocks``, ``score(block)`` giving a
    block's first row and its scores (queries x its rows): :data:`SPLIT_ROWS` rows or more by two threads
    taking the blocks as they come (``parallel.run_parallel``; one after the other, the first takes them all)."""
    shared = _Blocks(blocks)

    def best() -> tuple[np.ndarray, np.ndarray] | None:
        kept: tuple[np.ndarray, np.ndarray] | None = None
        while (block := shared.take()) is not None:
            first, scores = score(block)
            kept = _with_block(kept, scores, first, count)
        return kept

    parts = [best()] if n < SPLIT_ROWS or len(blocks) < 2 else run_parallel([best, best])
    return _best_of_many([part for part in parts if part is not None], count)


def _part_best_many(scores: np.ndarray, first: int, count: int) -> tuple[np.ndarray, np.ndarray]:
    """For each row of ``scores`` (queries x the rows of one part), the row numbers (``first`` +
    position) and scores of its best ``count``."""
    width = scores.shape[1]
    keep = min(count, width)
    top = np.argpartition(scores, width - keep, axis=1)[:, width - keep :]
    return first + top.astype(np.int64), np.take_along_axis(scores, top, 1)


def _with_block(
    kept: tuple[np.ndarray, np.ndarray] | None, scores: np.ndarray, first: int, count: int
) -> tuple[np.ndarray, np.ndarray]:
    """Each query's best ``count`` of the (rows, scores) kept so far and a block's ``scores`` (queries x the
    block's rows, the first being row ``first``).

    Once a single query holds ``count``, only the block's rows above the worst it keeps can enter: those
    few (none at all for most blocks late in a large scan) are picked out directly instead of partitioning
    the whole block.  Offline, one query against 1M x 384 packed in 10,000-row blocks on one core
    (2026-12-07, Xeon): 37.0-38.6 ms with every block partitioned, 31.6-31.9 ms now, numkong's kernels
    alone 28-30 ms.
    """
    if kept is not None and len(scores) == 1 and kept[1].shape[1] >= count:
        above = np.flatnonzero(scores[0] > kept[1][0].min())
        return kept if above.size == 0 else _kept_best(kept, ((first + above)[None], scores[:, above]), count)
    return _kept_best(kept, _part_best_many(scores, first, count), count)


def _kept_best(
    kept: tuple[np.ndarray, np.ndarray] | None, new: tuple[np.ndarray, np.ndarray], count: int
) -> tuple[np.ndarray, np.ndarray]:
    """Each query's best ``count`` of the (rows, scores) kept so far and a new part's."""
    if kept is None:
        return new
    rows = np.concatenate([kept[0], new[0]], axis=1)
    scores = np.concatenate([kept[1], new[1]], axis=1)
    width = scores.shape[1]
    keep = min(count, width)
    top = np.argpartition(scores, width - keep, axis=1)[:, width - keep :]
    return np.take_along_axis(rows, top, 1), np.take_along_axis(scores, top, 1)


def _best_of_many(parts: Sequence[tuple[np.ndarray, np.ndarray]], count: int) -> list[np.ndarray]:
    """For each query, the rows of its best ``count`` among the parts' (rows, scores)."""
    kept: tuple[np.ndarray, np.ndarray] | None = None
    for part in parts:
        kept = _kept_best(kept, part, count)
    assert kept is not None
    return list(kept[0])
