"""Exact cosine search over a compact matrix of vectors, ids and metadata.

A :class:`VectorMatrix` holds ``n`` L2-normalised vectors of one dimension in
a contiguous numpy array (float32, float16 or bfloat16 — the last as uint16
bit patterns, numpy having no bfloat16), their string ids, and each
row's metadata as orjson-encoded bytes.  Metadata is decoded only for the hits
a search returns, and for the per-field :class:`~.filters.Column` arrays that
filters build once and cache on the matrix; no dict per vector is kept.

Search is exact (protocol §3.2): ``score`` is the cosine similarity,
``threshold`` a minimum score, the filter and the threshold both apply, and
hits come best first with ties broken by row order.

* float32 storage scores every row with one BLAS GEMV (``vectors @ q``).
* float16 storage never uses numpy's float16 GEMV (slow, engine-notes §2.2);
  it scores every row with numkong's SIMD dot-product kernels
  (``numkong.cdist``, the kernels usearch itself is built on, picked for this
  CPU at run time, GIL released): rows and query in float16, sums in float32,
  within about 5e-5 of float32 arithmetic — the same dot product the HNSW path
  re-scores its candidates with.  100K × 384 on two cores: 6.5 ms, against
  13.7 ms for ``usearch.index.search(..., exact=True)``.

An approximate index (HNSW, ``hnsw.py``) can be attached with :meth:`with_index`;
it then answers unfiltered searches, and filtered ones when it is a
:class:`SubsetIndex` that takes them (else they stay exact).

A matrix is immutable once built; searches are safe from several threads.
"""

from __future__ import annotations

import math
import mmap
import sys
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any, Literal, Protocol

import attrs
import numkong
import numpy as np
import orjson

from ..errors import ErrorCode, FabstirError
from .filters import Column, Filter, build_columns
from .packed import PackedBlobs, PackedStrings
from .quantized import Int8Rows, candidate_count, drop_array_pages, drop_pages
from .rows import NUMPY_DTYPES, DType, normalise_rows, numpy_dtype, row_scores, to_bfloat16

_DTYPE_NAMES: dict[np.dtype[Any], DType] = {
    np.dtype(t): name for name, t in NUMPY_DTYPES.items()  # type: ignore[misc]
}
#: Bytes of a record digest (``formats/records.py`` DIGEST_SIZE; the engine does not import formats).
RECORD_DIGEST_SIZE = 16
#: Exact f16 scans of at least this many rows use every core.
_PARALLEL_SCAN_ROWS = 50_000
#: A file-backed matrix whose graph answers scans its rows through their mapping, on every core, and
#: then drops the mapping's pages from the process (``madvise(MADV_DONTNEED)``: they stay in the page
#: cache, so the next scan maps them again without reading the disk) — an answer the graph declines
#: leaves nothing resident.  Without the mapping (not an ``np.memmap``) it reads blocks of this many
#: rows with pread instead (100K x 384 f16 from the page cache, 40 queries of one run: pread blocks on
#: one thread 25 ms, the mapping on two cores then dropped 10.3 ms; ``_scan_mapped``); and it gathers
#: up to ``_READ_GATHER_ROWS`` filtered rows one by one.
_READ_BLOCK_ROWS = 8192
_READ_GATHER_ROWS = 4096
#: Per-field filter columns kept per matrix (oldest dropped first).
MAX_CACHED_COLUMNS = 32
#: Matrices of at least this many rows get an 8-bit copy (``quantized.py``) for their unfiltered
#: exact-quality searches: half the bytes of the f16 rows.  Below it a full 16-bit scan is as fast.
#: (100K x 384, 60 far queries declined by the graph: the f16 rows' mapping on both cores 15.1 ms p50,
#: the 8-bit copy on one core and 256 rows re-scored 5.6 ms; 2026-12-06.)  The disk cache keeps it as
#: files beside the rows (``codes.npy``, ``scales.npy``), mapped, its pages dropped after each scan.
COARSE_MIN_ROWS = 50_000

__all__ = [
    "SEARCH_PATHS",
    "CandidateIndex",
    "DType",
    "Hit",
    "SearchResult",
    "SubsetIndex",
    "VectorMatrix",
    "drop_pages",
    "unit_vector",
    "vector_from_json",
]


@attrs.frozen
class Hit:
    id: str
    score: float
    metadata: dict[str, Any] = attrs.field(repr=False)


#: How a search was answered (``SearchResult.path``): by the graph (its walk, or its candidates for a
#: filter), on the exact-quality path because the graph did not trust its answer, or exactly because
#: there is no graph (small databases, uploads, before the graph is ready, selective filters).
SEARCH_PATHS = ("graph", "declined", "exact")


@attrs.frozen
class SearchResult:
    """``hits`` best first; ``total`` = number of vectors searched over (``totalVectors``); ``path``: how
    it was answered (one of :data:`SEARCH_PATHS`)."""

    hits: list[Hit]
    total: int
    path: str = attrs.field(default="exact", eq=False)  # the same answer, however it was found


class CandidateIndex(Protocol):
    """An approximate index over the rows of one matrix (HNSW, later).

    ``search`` gets a float32 unit query and returns up to ``count`` row numbers
    (int64) and their cosine scores, or None when it does not trust its answer
    (the matrix then answers on its exact-quality path).
    """

    def search(self, query: np.ndarray, count: int) -> tuple[np.ndarray, np.ndarray] | None: ...


class SubsetIndex(CandidateIndex, Protocol):
    """A :class:`CandidateIndex` that may also answer filtered searches.

    ``search_subset`` gets the rows that pass the filter (sorted int64) and
    returns the best ``k`` of them, or None to have the matrix search them exactly.
    """

    def search_subset(
        self, query: np.ndarray, k: int, rows: np.ndarray, n: int
    ) -> tuple[np.ndarray, np.ndarray] | None: ...


# --- vectors from JSON ------------------------------------------------------------


def _is_number(x: object) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


_PLAIN_NUMBERS = frozenset({float, int})


def _all_numbers(items: list[Any]) -> bool:
    """Every item an int or float (not a bool); the common case (what orjson makes) without a Python loop."""
    return set(map(type, items)) <= _PLAIN_NUMBERS or all(map(_is_number, items))


def vector_from_json(obj: object, *, what: str = "vector", max_dimensions: int | None = None) -> np.ndarray:
    """A float64 1-D array from a JSON list of numbers (or a 1-D numeric array).

    Raises ``FabstirError(INVALID_MESSAGE)`` for anything else: not a list,
    empty, too long, a non-number (booleans included) or a non-finite value.
    """
    if isinstance(obj, np.ndarray):
        if obj.ndim != 1 or obj.dtype.kind not in "fiu":
            raise FabstirError(ErrorCode.INVALID_MESSAGE, f"{what} must be a list of numbers")
        arr = obj.astype(np.float64)
    elif isinstance(obj, list):
        if max_dimensions is not None and len(obj) > max_dimensions:
            raise FabstirError(
                ErrorCode.INVALID_MESSAGE,
                f"{what} has {len(obj)} dimensions, the maximum is {max_dimensions}",
            )
        if not _all_numbers(obj):
            raise FabstirError(ErrorCode.INVALID_MESSAGE, f"{what} must be a list of numbers")
        try:
            arr = np.array(obj, dtype=np.float64)
        except OverflowError:
            raise FabstirError(ErrorCode.INVALID_MESSAGE, f"{what} contains a non-finite number") from None
    else:
        raise FabstirError(ErrorCode.INVALID_MESSAGE, f"{what} must be a list of numbers")
    if arr.size == 0:
        raise FabstirError(ErrorCode.INVALID_MESSAGE, f"{what} is empty")
    if not np.isfinite(arr).all():
        raise FabstirError(ErrorCode.INVALID_MESSAGE, f"{what} contains a non-finite number")
    return arr


def unit_vector(vector: np.ndarray) -> np.ndarray | None:
    """``vector`` scaled to length 1 as float32, or None for a zero vector.

    Scales by the largest component first so huge finite values cannot overflow.
    """
    v = np.asarray(vector, dtype=np.float64)
    scale = float(np.abs(v).max(initial=0.0))
    if scale == 0.0:
        return None
    v = v / scale
    return (v / np.sqrt(v @ v)).astype(np.float32)


# --- compact metadata ---------------------------------------------------------------


def _take(items: Sequence[Any], rows: list[int]) -> list[Any]:
    """``items[row]`` for each of ``rows``: in one lookup where the sequence has one (packed ids and
    metadata: ``PackedBlobs.take``)."""
    take = getattr(items, "take", None)
    return take(rows) if take is not None else [items[row] for row in rows]


def _decode_metadata(blob: bytes) -> dict[str, Any]:
    if not blob:
        return {}
    try:
        value = orjson.loads(blob)
    except orjson.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}


# --- the matrix ---------------------------------------------------------------------


def _top_positions(scores: np.ndarray, k: int) -> np.ndarray:
    """Positions of the ``k`` largest scores, ties at the cut going to lower positions."""
    m = len(scores)
    if k >= m:
        return np.arange(m)
    kth = np.partition(scores, m - k)[m - k]
    above = np.flatnonzero(scores > kth)
    ties = np.flatnonzero(scores == kth)[: k - len(above)]
    return np.concatenate([above, ties])


def _check_k(k: object) -> int:
    if not isinstance(k, int) or isinstance(k, bool) or k < 1:
        raise FabstirError(ErrorCode.INVALID_MESSAGE, "k must be a positive integer")
    return k


def _check_threshold(threshold: object) -> float | None:
    if threshold is None:
        return None
    try:
        value = float(threshold) if _is_number(threshold) else math.nan  # type: ignore[arg-type]
    except OverflowError:
        value = math.nan
    if not math.isfinite(value):
        raise FabstirError(ErrorCode.INVALID_MESSAGE, "threshold must be a finite number or null")
    return value


def _scan_mapped(score: Callable[[np.ndarray], np.ndarray], vectors: np.ndarray) -> np.ndarray | None:
    """``score(vectors)`` for a memory-mapped matrix, whose pages are then dropped from the process
    (:func:`drop_pages`); None when ``vectors`` is not a mapping that can do that."""
    mapping = getattr(vectors, "_mmap", None)  # np.memmap's mmap.mmap
    if mapping is None or not hasattr(mapping, "madvise") or not hasattr(mmap, "MADV_DONTNEED"):
        return None
    try:
        return score(vectors)
    finally:
        drop_array_pages(vectors)


def _dots(data: np.ndarray, query: np.ndarray) -> np.ndarray:
    """float32 dot products of the 16-bit rows of ``data`` with one ``query`` of their dtype (1 × d).

    float16 rows are numpy float16; bf16 rows are uint16 bit patterns.
    """
    # one scan of a large matrix is split across the cores (100K x 384: 9.7 -> 6.5 ms on 2 cores);
    # below that, starting the threads costs more than it saves
    threads = 0 if len(data) >= _PARALLEL_SCAN_ROWS else 1
    kind: Literal["bf16", "f16"] = "bf16" if data.dtype == np.uint16 else "f16"
    scores = numkong.cdist(data, query, metric="dot", dtype=kind, out_dtype="float32", threads=threads)
    return np.asarray(scores).reshape(-1)


@attrs.define(eq=False, repr=False)
class VectorMatrix:
    """Vectors, ids and metadata of one searchable set.  Build with :meth:`from_arrays`."""

    _vectors: np.ndarray
    _ids: Sequence[str]
    _metadata: Sequence[bytes]
    _row_of: dict[str, int] | None = None
    index: CandidateIndex | None = None
    #: Rows that were zero or non-finite at build time; they score 0.
    degenerate_rows: int = 0
    #: Rows dropped at build time because a later row had the same id.
    dropped_duplicates: int = 0
    #: An 8-bit copy of the rows that picks candidates for unfiltered exact-quality searches (of every
    #: row: checked when the matrix is made, so users need only ask whether there is one).
    coarse: Int8Rows | None = attrs.field(default=None)
    #: Reads chosen rows for re-scoring (the disk cache's ``pread`` reader, so re-scoring a file-backed
    #: matrix does not map page after page of it into the process); None: index the rows.
    read_rows: Callable[[np.ndarray], np.ndarray] | None = None
    #: Each row's record digest (n x 16 uint8) when the rows were decoded from CBOR chunks: what the
    #: next version of the database is compared with (``formats/records.py``).
    record_digests: np.ndarray | None = None
    _columns: dict[str, Column] = attrs.field(factory=dict, init=False)
    _nbytes: int | None = attrs.field(default=None, init=False)

    @coarse.validator
    def _covers_every_row(self, attribute: Any, value: Int8Rows | None) -> None:
        if value is not None and len(value) != len(self._vectors):
            raise ValueError(f"an 8-bit copy of {len(value)} rows for a matrix of {len(self._vectors)}")

    @classmethod
    def from_arrays(
        cls,
        ids: Sequence[str],
        vectors: np.ndarray,
        metadata: Sequence[bytes],
        dtype: DType = "f32",
    ) -> VectorMatrix:
        """Build a matrix, taking ownership of ``vectors`` (n × d).

        With ``dtype="f32"`` a C-contiguous, writeable float32 ``vectors`` is
        normalised in place (no second copy); other inputs are copied.  With
        ``"f16"`` (or ``"bf16"``) a new 16-bit matrix is written block by block.  ``metadata``
        holds one orjson-encoded object per row (``b""`` for none).  When ids
        repeat, the last row with an id wins (as an upsert would).  Structural
        mistakes (shapes, lengths, id types, dtype name) raise ``ValueError``.
        """
        numpy_dtype(dtype)  # a ValueError for an unknown name
        vectors = np.asarray(vectors)
        if vectors.ndim != 2 or vectors.shape[1] == 0 or vectors.dtype.kind not in "fiu":
            raise ValueError("vectors must be a numeric (n, d) array with d >= 1")
        n = vectors.shape[0]
        if len(ids) != n or len(metadata) != n:
            raise ValueError(f"{n} vectors but {len(ids)} ids and {len(metadata)} metadata entries")
        if not all(isinstance(i, str) for i in ids):
            raise ValueError("ids must be strings")
        ids = list(ids)
        last = {ident: row for row, ident in enumerate(ids)}
        dropped = n - len(last)
        if dropped:
            keep = np.fromiter(sorted(last.values()), np.int64, len(last))
            vectors = vectors[keep]
            ids = [ids[i] for i in keep.tolist()]
            metadata = [metadata[i] for i in keep.tolist()]
        del last
        target = NUMPY_DTYPES[dtype]
        if (
            target is np.float32
            and vectors.dtype == np.float32
            and vectors.flags.c_contiguous
            and vectors.flags.writeable
        ):
            out = vectors
        else:
            out = np.empty(vectors.shape, target)
        degenerate = normalise_rows(vectors, out)
        return cls(out, ids, PackedBlobs(metadata), degenerate_rows=degenerate, dropped_duplicates=dropped)

    @classmethod
    def from_normalized(
        cls,
        vectors: np.ndarray,
        ids: Sequence[str],
        metadata: Sequence[bytes],
        row_of: dict[str, int] | None = None,
    ) -> VectorMatrix:
        """Wrap rows that are already unit length (float32, float16 or bf16 bits), sharing every argument."""
        return cls(vectors, ids, metadata, row_of)

    def with_index(self, index: CandidateIndex | None, *, coarse: Int8Rows | None = None) -> VectorMatrix:
        """The same data (shared, not copied) answered through ``index`` when unfiltered.

        ``coarse`` attaches an 8-bit copy of these same rows (e.g. the one a load built, carried over
        to the memory-mapped matrix); without it the matrix keeps its own.
        """
        return VectorMatrix(
            self._vectors,
            self._ids,
            self._metadata,
            self._row_of,
            index,
            self.degenerate_rows,
            self.dropped_duplicates,
            coarse if coarse is not None else self.coarse,
            self.read_rows,
            self.record_digests,
        )

    def with_row_reader(self, read_rows: Callable[[np.ndarray], np.ndarray]) -> VectorMatrix:
        """The same matrix re-scoring candidates on rows read by ``read_rows`` (sorted row numbers)."""
        copy = self.with_index(self.index)
        copy.read_rows = read_rows
        return copy

    # --- introspection

    def __len__(self) -> int:
        return int(self._vectors.shape[0])

    def __repr__(self) -> str:
        return f"VectorMatrix(n={len(self)}, dimensions={self.dimensions}, dtype={self.dtype!r})"

    @property
    def dimensions(self) -> int:
        return int(self._vectors.shape[1])

    @property
    def dtype(self) -> DType:
        return _DTYPE_NAMES[self._vectors.dtype]

    @property
    def vectors(self) -> np.ndarray:
        """The normalised rows (read-only view), e.g. for building an index."""
        view = self._vectors.view()
        view.flags.writeable = False
        return view

    @property
    def ids(self) -> Sequence[str]:
        return self._ids

    @property
    def metadata(self) -> Sequence[bytes]:
        """Each row's orjson-encoded metadata (``b""`` for none)."""
        return self._metadata

    def row_of(self, ident: str) -> int | None:
        """The row holding ``ident`` (the map is built on first use)."""
        if self._row_of is None:
            self._row_of = {i: r for r, i in enumerate(self._ids)}
        return self._row_of.get(ident)

    @property
    def nbytes(self) -> int:
        """Memory held by vectors, ids, metadata and the id map (not the filter-column cache)."""
        if self._nbytes is None:
            ids = (
                self._ids.nbytes
                if isinstance(self._ids, PackedStrings)
                else sys.getsizeof(self._ids) + sum(map(sys.getsizeof, self._ids))
            )
            meta = self._metadata
            meta_bytes = (
                meta.nbytes
                if isinstance(meta, PackedBlobs)
                else sys.getsizeof(meta) + sum(map(sys.getsizeof, meta))
            )
            self._nbytes = self._vectors.nbytes + ids + meta_bytes
        return self._nbytes + (sys.getsizeof(self._row_of) if self._row_of is not None else 0)

    @property
    def cache_nbytes(self) -> int:
        """Memory held by cached filter columns."""
        return sum(c.nbytes for c in self._columns.values())

    def columns(self, paths: Collection[str]) -> Mapping[str, Column]:
        """Filter columns for ``paths``, built in one decoding pass when not cached."""
        cache = self._columns
        found = {p: cache[p] for p in paths if p in cache}
        missing = [p for p in paths if p not in cache]
        if missing:
            built = build_columns(self._metadata, missing)
            found.update(built)
            fresh = {**cache, **built}  # copy-on-write: concurrent readers keep their snapshot
            for stale in list(fresh)[: max(0, len(fresh) - MAX_CACHED_COLUMNS)]:
                del fresh[stale]
            self._columns = fresh
        return found

    # --- search

    def query_vector(self, query: object) -> np.ndarray:
        """Validate a query: float32, unit length, of this matrix's dimension."""
        raw = vector_from_json(query, what="queryVector")
        if raw.shape[0] != self.dimensions:
            raise FabstirError(
                ErrorCode.DIMENSION_MISMATCH,
                f"query has {raw.shape[0]} dimensions, the vectors have {self.dimensions}",
            )
        unit = unit_vector(raw)
        if unit is None:
            raise FabstirError(ErrorCode.INVALID_MESSAGE, "queryVector must not be all zeros")
        return unit

    def search(
        self, query: object, k: int, *, threshold: float | None = None, flt: Filter | None = None
    ) -> SearchResult:
        """The ``k`` best rows by cosine similarity that pass ``flt`` and ``threshold``."""
        q = self.query_vector(query)
        k = _check_k(k)
        minimum = _check_threshold(threshold)
        n = len(self)
        if n == 0:
            return SearchResult([], 0)
        rows: np.ndarray | None = None
        if flt is not None and not flt.matches_all:
            rows = np.flatnonzero(flt.mask(self))
            if len(rows) == n:
                rows = None
        subset = None
        path = "exact"
        if rows is not None and self.index is not None and hasattr(self.index, "search_subset"):
            subset = self.index.search_subset(q, k, rows, n)
        if subset is not None:
            found, scores = subset
            path = "graph"
        elif rows is None and self.index is not None:
            answer = self.index.search(q, min(k, n))
            if answer is None:  # the graph does not trust its answer (hnsw.py): the exact-quality path
                found, scores = self._exact(q, k, None)
                path = "declined"
            else:
                found = np.asarray(answer[0], np.int64)
                scores = np.asarray(answer[1], np.float32)
                path = "graph"
        else:
            found, scores = self._exact(q, k, rows)
        return self._hits(found, scores, k, minimum, path)

    def search_many(
        self, requests: Sequence[tuple[object, int, float | None]]
    ) -> list[SearchResult | Exception]:
        """Unfiltered searches ``(query, k, threshold)`` answered together: each answer (or the error
        its request raises) is what :meth:`search` gives for it alone.

        The graph walks of queries with the same ``k`` run as one batch (``search_batch``: one call,
        one re-scoring read); a query whose graph answer is not trusted is answered exactly.
        """
        out: list[SearchResult | Exception | None] = [None] * len(requests)
        n = len(self)
        groups: dict[int, list[tuple[int, np.ndarray, int, float | None]]] = {}
        for i, (query, k, threshold) in enumerate(requests):
            try:
                q = self.query_vector(query)
                k = _check_k(k)
                minimum = _check_threshold(threshold)
            except Exception as error:  # noqa: BLE001 - it belongs to this request alone
                out[i] = error
                continue
            if n == 0:
                out[i] = SearchResult([], 0)
                continue
            groups.setdefault(min(k, n), []).append((i, q, k, minimum))
        index = self.index
        batch = getattr(index, "search_batch", None)
        for count, group in groups.items():
            answers: list[Any]
            try:
                if index is None:
                    answers = [None] * len(group)
                elif batch is not None and len(group) > 1:
                    answers = batch(np.stack([q for _, q, _, _ in group]), count)
                else:
                    answers = [index.search(q, count) for _, q, _, _ in group]
            except Exception as error:  # noqa: BLE001 - the batch failed: each of its requests gets the error
                for i, *_ in group:
                    out[i] = error
                continue
            # no graph, or the graph does not trust these answers: exactly, in one pass over the codes
            unanswered = [(i, q, k) for (i, q, k, _), answer in zip(group, answers) if answer is None]
            try:
                exact = self._exact_many([q for _, q, _ in unanswered], count) if len(unanswered) > 1 else None
            except Exception:  # noqa: BLE001 - each request is then answered (or fails) on its own
                exact = None
            exact_of = {i: found for (i, _, _), found in zip(unanswered, exact or [])}
            for (i, q, k, minimum), answer in zip(group, answers):
                try:
                    if answer is None:
                        found, scores = exact_of[i] if i in exact_of else self._exact(q, k, None)
                        path = "exact" if index is None else "declined"
                    else:
                        found = np.asarray(answer[0], np.int64)
                        scores = np.asarray(answer[1], np.float32)
                        path = "graph"
                    out[i] = self._hits(found, scores, k, minimum, path)
                except Exception as error:  # noqa: BLE001
                    out[i] = error
        return out  # type: ignore[return-value]

    def _exact_many(self, qs: list[np.ndarray], k: int) -> list[tuple[np.ndarray, np.ndarray]] | None:
        """:meth:`_exact` (unfiltered) of each of ``qs``, their candidates from one pass over the 8-bit
        copy (``Int8Rows.candidates_many``: a scan is bound by reading the codes, so several queries
        cost little more than one); None when this matrix answers without that copy (each alone then)."""
        count = self._candidate_count(k)
        if self.coarse is None or count is None or not qs:
            return None
        many = self.coarse.candidates_many(np.stack(qs), count)
        return [self._rescored_top(q, candidates, k) for q, candidates in zip(qs, many)]

    def _candidate_count(self, k: int) -> int | None:
        """How many candidates an unfiltered top ``k`` re-scores, or None: scan every row (matrices under
        :data:`COARSE_MIN_ROWS` rows, or asked for nearly all of them)."""
        n = len(self)
        count = candidate_count(k, n)
        return None if n < COARSE_MIN_ROWS or count >= n else count

    def _rescored_top(self, q: np.ndarray, candidates: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The best ``k`` of ``candidates`` by their true scores with ``q``, best first."""
        candidates = np.sort(candidates)
        scores = self.rescore(q, candidates)
        top = _top_positions(scores, k)
        return candidates[top], scores[top]

    def _candidates(self, q: np.ndarray, k: int) -> np.ndarray | None:
        """Rows holding the unfiltered top ``k`` for exact re-scoring, or None: scan every row.

        From the 8-bit copy when the matrix has one, else from a graph that can scan its own
        (8-bit) vectors (``HnswIndex.scan``), for matrices of :data:`COARSE_MIN_ROWS` rows or more.
        """
        count = self._candidate_count(k)
        if count is None:
            return None
        if self.coarse is not None:
            return self.coarse.candidates(q, count)
        scan = getattr(self.index, "scan", None)
        return None if scan is None else np.asarray(scan(q, count), np.int64)

    def rescore(self, q: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """float32 cosines of ``rows`` (int64 row numbers, in order) with the unit query ``q``."""
        if len(rows) == 0:
            return np.empty(0, np.float32)
        stored = self.read_rows(rows) if self.read_rows is not None else self._vectors[rows]
        return row_scores(stored, q)

    def _exact(self, q: np.ndarray, k: int, rows: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        """Exact scores of every row (or of the ``rows`` a filter passes) and the best ``k`` of them.

        float32 rows: one BLAS GEMV.  16-bit rows: numkong's dot kernels, the
        query in the rows' dtype.  When few rows pass (under a half for float32,
        a third for 16-bit rows, whose full scan is cheaper next to a gather),
        only those rows are gathered and scored.
        """
        if rows is None:
            candidates = self._candidates(q, k)
            if candidates is not None:
                return self._rescored_top(q, candidates, k)
        vectors = self._vectors
        score: Callable[[np.ndarray], np.ndarray]
        if vectors.dtype == np.float32:
            score, gather = (lambda data: data @ q), 2
        else:
            query = (to_bfloat16(q) if vectors.dtype == np.uint16 else q.astype(np.float16))[None]
            score, gather = (lambda data: _dots(data, query)), 3
        if rows is not None and len(rows) == 0:
            return np.empty(0, np.int64), np.empty(0, np.float32)
        # Once a graph answers, the mapping of a file-backed matrix is left alone: the answers the graph
        # does not take are scanned from blocks read with pread, so they add nothing resident.
        read_range = getattr(self.read_rows, "range", None) if self.index is not None else None
        if rows is not None and gather * len(rows) < len(self):
            if read_range is not None and self.read_rows is not None and len(rows) <= _READ_GATHER_ROWS:
                scores = score(self.read_rows(rows))
            elif read_range is None:
                scores = score(vectors[rows])
            else:
                scores = self._scan_blocks(score, read_range)[rows]
        elif read_range is not None:
            mapped = _scan_mapped(score, vectors)
            scores = self._scan_blocks(score, read_range) if mapped is None else mapped
            if rows is not None:
                scores = scores[rows]
        else:
            scores = score(vectors)
            if rows is not None:
                scores = scores[rows]
        top = _top_positions(scores, k)
        return (top if rows is None else rows[top]), scores[top]

    def _scan_blocks(
        self, score: Callable[[np.ndarray], np.ndarray], read_range: Callable[[int, int], np.ndarray]
    ) -> np.ndarray:
        """Scores of every row, from blocks of :data:`_READ_BLOCK_ROWS` read by ``read_range``."""
        n = len(self)
        scores = np.empty(n, np.float32)
        for start in range(0, n, _READ_BLOCK_ROWS):
            stop = min(n, start + _READ_BLOCK_ROWS)
            scores[start:stop] = score(read_range(start, stop))
        return scores

    def _hits(
        self, found: np.ndarray, scores: np.ndarray, k: int, minimum: float | None, path: str = "exact"
    ) -> SearchResult:
        scores = np.clip(scores, -1.0, 1.0)
        order = np.lexsort((found, -scores))[:k]
        found, scores = found[order], scores[order]
        if minimum is not None:
            keep = int(np.count_nonzero(scores >= minimum))  # scores are sorted: a prefix passes
            found, scores = found[:keep], scores[:keep]
        rows = found.tolist()
        hits = [
            Hit(ident, score, _decode_metadata(blob))
            for ident, score, blob in zip(_take(self._ids, rows), scores.tolist(), _take(self._metadata, rows))
        ]
        return SearchResult(hits, len(self), path)
