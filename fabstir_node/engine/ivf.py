"""An inverted-file index over 8-bit codes: the index of large databases (``IVF_MIN_VECTORS`` and more).

An HNSW graph over a million clustered embeddings is slow to build on two cores (130-190 s) and its
walk often ends in the wrong cluster: on the benchmark's million (documents of 25 chunks, topics of
20 documents, added in document order) recall@10 of queries near the data was 0.62 at effort 64 and
0.94 at 512 (2026-12-06), so nearly every answer was declined to the exact scan.  Grouping rows by
their nearest centroid finds a near query's neighbours in the few groups nearest to it:

* **Lists**: spherical k-means (:func:`train_centroids`, on a sample of :data:`TRAIN_PER_LIST` rows
  per list) puts every row in the list of its nearest centroid (by 8-bit codes while building:
  ``_CodeAssigner``; :func:`assign` in float32 for a new version's rows); about
  :data:`LIST_ROWS` rows per list (:func:`list_count`).  Rows are stored list after list
  (:class:`IvfLists`: ``order`` maps a position to its row) as int8 codes with a per-row scale
  (``quantized.quantize_rows``), so a list is one contiguous slice.
* **Search**: the query's ``nprobe`` nearest centroids; their lists' code scores
  (numkong's packed int8 dot kernels) pick :meth:`IvfIndex.candidate_count` candidates, which
  :class:`~.rescored.RescoredIndex` re-scores on the stored rows, ranks, and judges against the trust
  floor.  ``nprobe`` and the floor come from the index's own recall measurement (``calibration.py``,
  the lists probed being the "effort"); the wide search probes :data:`WIDE_FACTOR` times as many.
* **Scan**: :meth:`IvfIndex.scan` scores every code: the exact path's candidates for a matrix without
  its own 8-bit copy (one saved before ``codes.npy`` existed); otherwise the matrix scans that copy.

Measured on that million (2026-12-06, 2 vCPU Xeon): 2,000 lists trained and assigned in ~21 s with
float32 training and per-centroid scales, 4.7 s now (one core, no BLAS: see ``_CodeAssigner``); near
queries recall@10 1.0 probing 8 lists, far ones (random directions) 0.58-0.89 at 8-64 lists: the
floor declines those to the exact path, as on a graph.

Pure: arrays in, arrays out.  Building runs in the builder's process (``storage/index_builder.py``),
the file is ``storage/ivf_file.py``'s.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import attrs
import numkong
import numpy as np

from .calibration import Calibration
from .quantized import code_candidates, packed_query, quantize_rows
from .rescored import RescoredIndex

__all__ = [
    "LIST_ROWS",
    "NPROBES",
    "IvfIndex",
    "IvfLists",
    "assign",
    "build_lists",
    "encoded_blocks",
    "list_count",
    "order_lists",
    "train_centroids",
    "updated_lists",
]

#: Rows per list the index aims at.
LIST_ROWS = 500
MIN_LISTS, MAX_LISTS = 8, 16_384
#: Training sample: this many rows per list (all rows when the database is smaller).
TRAIN_PER_LIST = 40
#: Rounds of k-means.
ITERATIONS = 8
#: Lists probed, tried lowest first by the recall measurement (the index's "effort").
NPROBES = (4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256)
#: An untrusted answer is tried once more probing this many times the lists.
WIDE_FACTOR = 4
#: Candidates re-scored for a top-k: at least MIN_RESCORE, else RESCORE_PER_K per result.
MIN_RESCORE = 64
RESCORE_PER_K = 6
#: Rows assigned per matrix product while building.
BLOCK = 65_536


def list_count(n: int) -> int:
    """Lists for ``n`` rows: about :data:`LIST_ROWS` rows each."""
    return int(min(MAX_LISTS, max(MIN_LISTS, round(n / LIST_ROWS))))


def _unit(rows: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(rows, axis=1, keepdims=True)
    out: np.ndarray = (rows / np.maximum(norms, np.float32(1e-12))).astype(np.float32)
    return out


def train_centroids(sample: np.ndarray, lists: int, *, seed: int = 0, iterations: int = ITERATIONS) -> np.ndarray:
    """``lists`` unit centroids (float32) of the unit rows ``sample`` by spherical k-means.

    Each round assigns the sample by 8-bit codes (:class:`_CodeAssigner`, one thread) and moves each
    centroid to its members' normalised sum (in float32).  A list left empty by a round gets a random
    sample row as its centroid again.
    """
    sample = np.ascontiguousarray(sample, np.float32)
    rng = np.random.default_rng(seed)
    lists = min(lists, len(sample))
    centroids = sample[rng.choice(len(sample), lists, replace=False)].copy()
    codes, _ = quantize_rows(sample)  # a row's own scale does not change its nearest centroid
    for _ in range(iterations):
        nearest = _CodeAssigner(centroids).nearest(codes)
        order, bounds = order_lists(nearest, lists)
        sums = np.zeros_like(centroids)
        filled = np.flatnonzero(np.diff(bounds) > 0)
        sums[filled] = np.add.reduceat(sample[order], bounds[filled], axis=0)
        empty = np.diff(bounds) == 0
        sums[empty] = sample[rng.choice(len(sample), int(empty.sum()))]
        centroids = _unit(sums)
    return centroids


def assign(rows: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """The nearest centroid (int32) of each float32 row, by cosine (rows of any norm)."""
    out = np.empty(len(rows), np.int32)
    for start in range(0, len(rows), BLOCK):
        block = np.asarray(rows[start : start + BLOCK], np.float32)
        out[start : start + len(block)] = np.argmax(block @ centroids.T, axis=1)
    return out


class _CodeAssigner:
    """The nearest centroid of each row by 8-bit codes (numkong's int8 kernel, one thread).

    The centroids are quantised with one scale for all of them, so the int32 dot products rank them
    as they are (no per-centroid rescaling of 2,000 products per row), in blocks of :data:`ROWS`
    rows whose products stay in the cache: a 1M x 384 matrix's saved codes against 2,000 centroids
    in ~1.2 s of one core, where per-centroid scales, 8,192-row blocks and re-quantising the rows
    took ~12 s, and numpy's float32 product ~12 s of both cores (2026-12-06, Xeon).  A row near the
    boundary of two lists may go to the second nearest (~1 % of rows on the benchmark's million): the
    index stays correct (every row is in one list), and its recall is measured afterwards all the same.
    """

    #: Rows per product (int32 results: 1,024 x 2,000 x 4 bytes = 8 MB).
    ROWS = 1024

    def __init__(self, centroids: np.ndarray) -> None:
        values = np.asarray(centroids, np.float32)
        peak = float(np.abs(values).max()) if values.size else 0.0
        step = peak / 127.0 if peak > 0 else 1.0
        self._packed = numkong.dots_pack(np.clip(np.rint(values / step), -127, 127).astype(np.int8))

    def __call__(self, rows: np.ndarray) -> np.ndarray:
        codes, _ = quantize_rows(np.asarray(rows, np.float32))
        return self.nearest(codes)

    def nearest(self, codes: np.ndarray) -> np.ndarray:
        """The nearest centroid (int32) of each row given by its int8 codes."""
        out = np.empty(len(codes), np.int32)
        for start in range(0, len(codes), self.ROWS):
            stop = min(len(codes), start + self.ROWS)
            dots = np.asarray(numkong.dots_packed(np.ascontiguousarray(codes[start:stop]), self._packed))
            out[start:stop] = np.argmax(dots, axis=1)
        return out


def order_lists(nearest: np.ndarray, lists: int) -> tuple[np.ndarray, np.ndarray]:
    """``(order, bounds)``: rows list after list (ascending within a list), and each list's slice."""
    order = np.argsort(nearest, kind="stable").astype(np.int64)
    bounds = np.searchsorted(nearest[order], np.arange(lists + 1)).astype(np.int64)
    return order, bounds


def encoded_blocks(
    order: np.ndarray, read_rows: Callable[[np.ndarray], np.ndarray], block: int = BLOCK
) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """``(start, codes, scales)`` of the rows in ``order``, block by block (``read_rows`` gives float rows)."""
    for start in range(0, len(order), block):
        rows = order[start : start + block]
        # read in row order (sequential on disk), put back in list order
        ascending = np.argsort(rows, kind="stable")
        read = np.asarray(read_rows(rows[ascending]), np.float32)
        values = np.empty_like(read)
        values[ascending] = read
        codes, scales = quantize_rows(values)
        yield start, codes, scales


@attrs.frozen(eq=False)
class IvfLists:
    """The index's arrays (possibly views of a mapped file): ``centroids`` (L x d float32, unit),
    ``bounds`` (L + 1 int64: list ``i`` is positions ``bounds[i]:bounds[i + 1]``), ``order`` (n int64:
    the row at each position), ``scales`` (n float32) and ``codes`` (n x d int8), in list order."""

    centroids: np.ndarray
    bounds: np.ndarray
    order: np.ndarray
    scales: np.ndarray
    codes: np.ndarray

    def __len__(self) -> int:
        return len(self.order)

    @property
    def lists(self) -> int:
        return len(self.centroids)

    def check(self, rows: int, dimensions: int) -> None:
        """ValueError unless the arrays describe ``rows`` rows of ``dimensions`` in whole lists."""
        lists = len(self.centroids)
        if self.centroids.shape != (lists, dimensions) or self.centroids.dtype != np.float32 or lists < 1:
            raise ValueError("centroids do not fit the matrix")
        if self.codes.shape != (rows, dimensions) or self.codes.dtype != np.int8:
            raise ValueError("codes do not fit the matrix")
        if self.order.shape != (rows,) or self.scales.shape != (rows,):
            raise ValueError("the row order does not fit the matrix")
        b = self.bounds
        if b.shape != (lists + 1,) or b[0] != 0 or b[-1] != rows or np.any(np.diff(b) < 0):
            raise ValueError("list bounds do not cover the rows")
        if rows and (self.order.min() < 0 or self.order.max() >= rows):
            raise ValueError("the row order names rows the matrix does not have")
        if rows and not np.array_equal(np.bincount(self.order, minlength=rows), np.ones(rows, np.int64)):
            raise ValueError("the row order does not name every row once")


def build_lists(
    rows: int, read_rows: Callable[[np.ndarray], np.ndarray], read_range: Callable[[int, int], np.ndarray],
    *, seed: int = 0, progress: Callable[[int], None] | None = None,
    read_codes: Callable[[int, int], np.ndarray] | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(centroids, order, bounds)`` of ``rows`` stored unit rows (codes come from :func:`encoded_blocks`).

    ``read_rows(sorted rows)`` and ``read_range(start, stop)`` give float rows of the matrix;
    ``read_codes(start, stop)``, when given, their int8 codes (the matrix's saved 8-bit copy), which
    the assignment then reads instead of quantising the rows again.
    """
    lists = list_count(rows)
    rng = np.random.default_rng(seed)
    size = min(rows, TRAIN_PER_LIST * lists)
    sample = np.asarray(read_rows(np.sort(rng.choice(rows, size, replace=False))), np.float32)
    centroids = train_centroids(sample, lists, seed=seed)
    nearest = np.empty(rows, np.int32)
    assigner = _CodeAssigner(centroids)
    for start in range(0, rows, BLOCK):
        stop = min(rows, start + BLOCK)
        if read_codes is not None:
            nearest[start:stop] = assigner.nearest(read_codes(start, stop))
        else:
            nearest[start:stop] = assigner(read_range(start, stop))
        if progress is not None:
            progress(stop)
    order, bounds = order_lists(nearest, len(centroids))
    return centroids, order, bounds


def updated_lists(
    old: IvfLists, mapping: np.ndarray, added: np.ndarray
) -> tuple[np.ndarray, np.ndarray, Iterator[tuple[int, np.ndarray, np.ndarray]]]:
    """The lists of a new version from the previous version's: ``(order, bounds, blocks)``, the centroids
    kept.

    ``mapping[new_row]`` is the previous row the new row is (-1: new or changed); ``added`` the unit
    vectors of the rows mapped to -1, in row order.  A kept row stays in its list with its codes (its
    stored row is the same, so are they); an added row goes to its nearest centroid.  ``blocks`` yields
    ``(start, codes, scales)`` in the new list order, for ``storage/ivf_file.write``.
    """
    lists, n = old.lists, len(mapping)
    new_rows = np.flatnonzero(mapping < 0)
    if len(new_rows) != len(added):
        raise ValueError("the added vectors do not fit the mapping")
    position_of = np.empty(len(old), np.int64)
    position_of[old.order] = np.arange(len(old))
    list_of = np.empty(len(old), np.int32)
    list_of[old.order] = np.repeat(np.arange(lists, dtype=np.int32), np.diff(old.bounds))
    nearest = np.empty(n, np.int32)
    kept = mapping >= 0
    nearest[kept] = list_of[mapping[kept]]
    if len(new_rows):
        nearest[new_rows] = assign(added, old.centroids)
    order, bounds = order_lists(nearest, lists)
    added_at = np.full(n, -1, np.int64)
    added_at[new_rows] = np.arange(len(new_rows))

    def blocks() -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
        for start in range(0, n, BLOCK):
            rows = order[start : start + BLOCK]
            source = mapping[rows]
            codes = np.empty((len(rows), old.codes.shape[1]), np.int8)
            scales = np.empty(len(rows), np.float32)
            reused = source >= 0
            positions = position_of[source[reused]]
            codes[reused], scales[reused] = old.codes[positions], old.scales[positions]
            if not reused.all():
                codes[~reused], scales[~reused] = quantize_rows(
                    np.asarray(added[added_at[rows[~reused]]], np.float32))
            yield start, codes, scales

    return order, bounds, blocks()


class IvfIndex(RescoredIndex):
    """Candidates from the lists nearest to the query, re-scored on the matrix rows."""

    effort_name = "nprobe"

    def __init__(
        self,
        lists: IvfLists,
        vectors: np.ndarray,
        *,
        nprobe: int = 16,
        read_rows: Callable[[np.ndarray], np.ndarray] | None = None,
        calibration: Calibration | None = None,
        pages: Any = None,
    ) -> None:
        if len(lists) != len(vectors):
            raise ValueError(f"the index has {len(lists)} rows, the matrix {len(vectors)}")
        super().__init__(read_rows if read_rows is not None else vectors.__getitem__, calibration, nprobe)
        self._lists = lists
        #: The centroids packed for numkong's kernel (one thread, no BLAS): numpy's ``centroids @ query``
        #: goes to a multi-threaded BLAS, whose threads stalled one search in ~50 by 5-15 ms in the daemon
        #: at 1M (2,000 lists; py-spy, 2026-12-06), while the event loop and clients shared the two cores.
        self._packed_centroids = numkong.dots_pack(np.ascontiguousarray(lists.centroids, np.float32))
        #: The mapped file the arrays are views of (``storage/ivf_file.Pages``), or None.
        self._pages = pages

    def __len__(self) -> int:
        return len(self._lists)

    def __repr__(self) -> str:
        return (f"IvfIndex(n={len(self)}, lists={self._lists.lists}, nprobe={self.expansion_search}, "
                f"min_kth_score={self.min_kth_score})")

    @property
    def lists(self) -> IvfLists:
        return self._lists

    @property
    def nbytes(self) -> int:
        """Bytes of the index's arrays (memory-mapped; resident only as far as searches touch them)."""
        ivf = self._lists
        return int(sum(a.nbytes for a in (ivf.centroids, ivf.bounds, ivf.order, ivf.scales, ivf.codes)))

    @property
    def has_wide(self) -> bool:
        return self.expansion_search < self._lists.lists

    def candidate_count(self, count: int) -> int:
        return min(len(self), max(MIN_RESCORE, RESCORE_PER_K * count))

    def probe(self, query: np.ndarray, nprobe: int) -> np.ndarray:
        """The ``nprobe`` lists whose centroids are nearest to ``query``, in list order."""
        lists: np.ndarray = self.probe_many(np.asarray(query, np.float32)[None], nprobe)[0]
        return lists

    def probe_many(self, queries: np.ndarray, nprobe: int) -> np.ndarray:
        """:meth:`probe` of each row of ``queries`` (B x d): B x ``nprobe`` lists, each row in list order.

        One pass over the centroids for every query of a batch (2,000 x 384 float32 at 1M: 3 MB, which
        16 queries probing one by one read 16 times).
        """
        lists = len(self._lists.centroids)
        if nprobe >= lists:
            return np.tile(np.arange(lists), (len(queries), 1))
        scores = np.asarray(numkong.dots_packed(np.ascontiguousarray(queries, np.float32), self._packed_centroids))
        return np.sort(np.argpartition(-scores.reshape(len(queries), lists), nprobe - 1, axis=1)[:, :nprobe], axis=1)

    def candidates_batch(self, queries: np.ndarray, count: int) -> list[np.ndarray]:
        """:meth:`candidates` of each row of ``queries``, their lists probed together (:meth:`probe_many`)."""
        probed = self.probe_many(queries, self.expansion_search)
        return [self._listed(query, count, lists) for query, lists in zip(queries, probed)]

    def candidates(self, query: np.ndarray, count: int, *, wide: bool = False) -> np.ndarray:
        nprobe = self.expansion_search * (WIDE_FACTOR if wide else 1)
        return self._listed(query, count, self.probe(query, nprobe))

    def _listed(self, query: np.ndarray, count: int, probed: np.ndarray) -> np.ndarray:
        """The ``count`` best rows of the lists ``probed`` by their codes' scores with ``query``."""
        ivf = self._lists
        starts, stops = ivf.bounds[probed], ivf.bounds[probed + 1]
        packed = packed_query(query)
        parts, positions = [], []
        for start, stop in zip(starts.tolist(), stops.tolist()):
            if stop > start:
                parts.append(np.asarray(numkong.dots_packed(ivf.codes[start:stop], packed)).reshape(-1))
                positions.append(np.arange(start, stop))
        if not parts:
            return np.empty(0, np.int64)
        where = np.concatenate(positions)
        scores = np.concatenate(parts) * ivf.scales[where]
        if count < len(where):
            where = where[np.argpartition(-scores, count - 1)[:count]]
        return np.asarray(ivf.order[where], np.int64)

    def scan(self, query: np.ndarray, count: int) -> np.ndarray:
        """Row numbers of the ``count`` best rows by the codes of every row (no lists)."""
        ivf = self._lists
        try:
            where = code_candidates(ivf.codes, ivf.scales, query, count)
        finally:
            # the scan touched every page of the codes: leave them to the page cache, not the process
            drop = getattr(self._pages, "drop_pages", None)
            if drop is not None:
                drop()
        return np.asarray(ivf.order[where], np.int64)
