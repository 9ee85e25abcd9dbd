"""An HNSW index over the rows of one :class:`~.matrix.VectorMatrix`.

:class:`HnswIndex` wraps a usearch graph (built by ``storage/index_builder.py`` in another
process, opened here with ``view()``) whose keys are the matrix's row
numbers.  It is the matrix's :class:`~.matrix.SubsetIndex`; how each search runs (candidates re-scored on
the stored rows, filtered and untrusted answers) is :class:`~.rescored.RescoredIndex`'s, in short:

* **Unfiltered**: walk the graph with ``expansion_search`` for twice the
  wanted count, re-score those candidates on the stored rows (float32
  arithmetic), keep the best.  So scores, and the ``threshold`` applied to
  them, are the cosines of the stored rows on both paths (exact search
  rounds the query to the rows' precision: within ~5e-5 for f16), and the graph may
  hold its vectors coarsely (8-bit by default): it only has to steer the walk
  to the right neighbourhood.  The rows come from ``read_rows`` — the disk
  cache passes one that reads just those rows from the saved file, so the
  matrix's pages need not be resident while the graph answers.
* **Filtered, selective** (fewer than :data:`SELECTIVE` of the rows pass, or
  the oversampling below would need more than :data:`MAX_CANDIDATES`
  candidates): decline, so the matrix searches the passing rows exactly —
  the answer is exactly what exact search gives.
* **Filtered, broad**: walk the graph for ``2k / fraction + 16`` candidates,
  keep those that pass, and answer when at least ``k`` do; otherwise decline
  (exact fallback).
* **Untrusted**: a graph built by this version carries its own measurement
  (``calibration.py``): the search effort that reached the recall target on a
  held-out sample, and ``min_kth_score``.  An unfiltered answer whose
  weakest result (its k-th score) is below that floor (a query far from the data, where a walk often
  ends in the wrong neighbourhood) is declined, and the matrix answers it on
  its exact-quality path.  :meth:`scan` offers that path a scan of the
  graph's own 8-bit vectors for candidates (no second copy of the rows).

The graph is never mutated: a new database means a new graph, swapped in
by reference.  Searches from several threads are safe (usearch serialises
them on its own lock).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from .calibration import Calibration
from .rescored import MAX_CANDIDATES, SELECTIVE, RescoredIndex

__all__ = ["MAX_CANDIDATES", "SELECTIVE", "HnswIndex"]

#: Batches of at least this many queries walk the graph on every core (``candidates_batch``).
PARALLEL_BATCH = 4
#: An untrusted answer is tried once more with this many times the effort (at most MAX_WIDE_EFFORT).
WIDE_FACTOR = 4
MAX_WIDE_EFFORT = 1024
#: ... on graphs of at least this many rows.  Below it an answer under the floor goes straight to the
#: exact-quality path, which costs about what the wide walk does: on a 100K graph the wide walk took
#: 2.7 ms and rescued 27 of 319 declined answers (8 %), the 8-bit scan and re-scoring 3.4 ms
#: (2026-12-06, Xeon), so trying it first cost ~2.5 ms on average and ~2.7 ms at the p99.
WIDE_MIN_ROWS = 250_000


class HnswIndex(RescoredIndex):
    """Approximate candidates from a usearch graph, re-scored on ``vectors`` (the matrix rows).

    ``read_rows(rows)`` returns those rows of ``vectors`` (any float dtype);
    by default it indexes ``vectors``.
    """

    effort_name = "expansion_search"

    def __init__(
        self,
        index: Any,
        vectors: np.ndarray,
        *,
        expansion_search: int = 64,
        read_rows: Callable[[np.ndarray], np.ndarray] | None = None,
        calibration: Calibration | None = None,
        wide: Any = None,
        mapping: Any = None,
    ) -> None:
        if len(index) != len(vectors):
            raise ValueError(f"the graph has {len(index)} rows, the matrix {len(vectors)}")
        super().__init__(read_rows if read_rows is not None else vectors.__getitem__, calibration,
                         expansion_search)
        self._index = index
        index.expansion_search = self.expansion_search
        #: A second view of the same graph searched with :data:`WIDE_FACTOR` times the effort: an
        #: answer under the floor is tried there once before it goes to the exact path (a walk that went
        #: astray near the data usually finds its way with more effort; a far query's tail stays low).
        #: usearch's effort is a property of the index object, hence the second view, not a parameter.
        self._wide = wide
        #: The buffer both views read (usearch keeps no reference to it): closed after them, in __del__.
        self._mapping = mapping
        if wide is not None:
            wide.expansion_search = min(MAX_WIDE_EFFORT, WIDE_FACTOR * self.expansion_search)

    def __del__(self) -> None:
        # the views go first: a mapping closed under a live view would leave it reading unmapped memory
        self._index = self._wide = None
        mapping, self._mapping = getattr(self, "_mapping", None), None
        if mapping is not None:
            mapping.close()

    def __len__(self) -> int:
        return len(self._index)

    def __repr__(self) -> str:
        return (f"HnswIndex(n={len(self)}, expansion_search={self.expansion_search}, "
                f"min_kth_score={self.min_kth_score})")

    @property
    def nbytes(self) -> int:
        """Bytes of the graph file (memory-mapped; resident only as far as searches touch it)."""
        return int(self._index.serialized_length)

    @property
    def has_wide(self) -> bool:
        return self._wide is not None and len(self) >= WIDE_MIN_ROWS

    def candidates(self, query: np.ndarray, count: int, *, wide: bool = False) -> np.ndarray:
        index = self._wide if wide and self._wide is not None else self._index
        matches = index.search(query, count, threads=1)
        return np.asarray(matches.keys, np.int64)

    def candidates_batch(self, queries: np.ndarray, count: int) -> list[np.ndarray]:
        """One graph call for the whole batch; a batch of several walks on every core (16 clients on
        one 100K database: 8-16 % more searches/s in four alternating pairs of runs, 749-957/s on one
        thread, 811-1,078/s on two; 2026-12-06)."""
        threads = 0 if len(queries) >= PARALLEL_BATCH else 1
        matches = self._index.search(np.ascontiguousarray(queries, np.float32), count, threads=threads)
        keys = np.asarray(matches.keys, np.int64).reshape(len(queries), -1)
        counts = np.asarray(matches.counts, np.int64).reshape(-1)
        return [keys[i, : counts[i]] for i in range(len(queries))]

    def scan(self, query: np.ndarray, count: int) -> np.ndarray:
        """Row numbers of the ``count`` best rows by a full scan of the graph's own vectors (no walk)."""
        try:
            matches = self._index.search(query, min(count, len(self)), exact=True, threads=0)
        finally:
            # the scan touched every page of the graph file: leave them to the page cache, not the
            # process (``storage/disk_cache.MappedFile``), as a declined answer's scan of the rows does
            drop = getattr(self._mapping, "drop_pages", None)
            if drop is not None:
                drop()
        return np.asarray(matches.keys, np.int64)
