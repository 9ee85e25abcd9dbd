"""The previous version's graph answering for a new version, until the new version's own is ready.

A new version of a database the node holds (``service/lineage.py``) differs from the previous one
by a few percent of its rows.  Its graph is made from the previous one in another process
(``storage/index_update.py``), which takes about a second at 100K rows; a session on the new version
need not wait for it.  :class:`OverlayIndex` answers meanwhile:

* the previous graph (a read-only view; its labels are the previous version's rows) walks as
  usual; each label is translated to the new version's row (``rows_of_label``), and the labels of
  rows that were removed or changed are dropped (``-1``): a removed or stale vector is never
  returned;
* the rows the previous version did not have (new and changed), a few percent, are scored
  exactly (``extra_rows`` with their float32 unit vectors);
* both sets of candidates are re-scored on the new version's stored rows and ranked together, and
  the previous graph's trust floor applies as on any graph (``engine/hnsw.py``): an answer under it
  is tried once on the wide view (where the graph offers one: ``has_wide``), then declined, so the
  matrix answers it exactly.

So the answer is the graph's on the unchanged rows and exact on the rest.  Filtered searches are
declined (the matrix searches the passing rows exactly) for the second or so this lasts.  Pure:
no I/O; the caller opens the previous graph and reads rows.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from .rows import row_scores

__all__ = ["EXTRA_PAD", "OverlayIndex"]

#: Extra graph candidates asked for, so labels dropped as removed or changed do not shorten the answer.
EXTRA_PAD = 8


class OverlayIndex:
    """Candidates from a previous version's graph (translated) and from the new rows (exact).

    ``graph`` is the previous version's :class:`~.hnsw.HnswIndex`; ``rows_of_label[label]`` the new
    row of each previous row (-1: removed or changed); ``extra_rows`` (sorted) the new rows the graph
    does not hold and ``extra_vectors`` their float32 unit vectors; ``read_rows(rows)`` reads rows of
    the new version (sorted row numbers) for re-scoring.
    """

    def __init__(
        self,
        graph: Any,
        rows_of_label: np.ndarray,
        extra_rows: np.ndarray,
        extra_vectors: np.ndarray,
        read_rows: Callable[[np.ndarray], np.ndarray],
        count: int,
    ) -> None:
        if len(rows_of_label) != len(graph):
            raise ValueError("one new row (or -1) per label of the graph")
        if extra_vectors.shape[0] != len(extra_rows):
            raise ValueError("one vector per extra row")
        self._graph = graph
        self._rows_of_label = np.asarray(rows_of_label, np.int64)
        self._extra_rows = np.asarray(extra_rows, np.int64)
        self._extra_vectors = np.ascontiguousarray(extra_vectors, np.float32)
        self._read_rows = read_rows
        self._count = count
        self.calibration = graph.calibration
        self.min_kth_score = graph.min_kth_score
        self.expansion_search = graph.expansion_search

    def __len__(self) -> int:
        return self._count

    def __repr__(self) -> str:
        return f"OverlayIndex(n={self._count}, previous={len(self._graph)}, extra={len(self._extra_rows)})"

    @property
    def nbytes(self) -> int:
        return int(self._graph.nbytes) + self._extra_vectors.nbytes + self._rows_of_label.nbytes

    def _candidates(self, query: np.ndarray, count: int, wide: bool) -> np.ndarray:
        """New rows holding the top ``count``: the previous index's (its wide search if ``wide``) and the
        best extra rows."""
        graph = self._graph
        # twice what the graph itself asks for: the walk's beam holds them anyway (its effort is at least
        # 64), and the previous graph's dead labels (removed, changed, earlier tombstones) crowd it
        want = max(graph.candidate_count(count), min(len(graph), 4 * count + EXTRA_PAD))
        labels = graph.candidates(query, want, wide=wide)
        rows = self._rows_of_label[labels[(labels >= 0) & (labels < len(self._rows_of_label))]]
        rows = rows[rows >= 0]
        if len(self._extra_rows):
            scores = row_scores(self._extra_vectors, query)
            best = min(len(scores), 2 * count)
            top = np.argpartition(-scores, best - 1)[:best]
            rows = np.concatenate([rows, self._extra_rows[top]])
        return np.unique(rows)

    def search(self, query: np.ndarray, count: int) -> tuple[np.ndarray, np.ndarray] | None:
        """Up to ``count`` rows of the new version, best first; None when the answer is not trusted.

        Ranked, and judged against the floor, as the previous graph ranks its own (``HnswIndex``);
        an untrusted answer is tried once more on the graph's wide view when it has one.
        """
        if self._count == 0 or count < 1:
            return np.empty(0, np.int64), np.empty(0, np.float32)
        graph = self._graph
        for wide in (False, True) if graph.has_wide else (False,):
            rows = self._candidates(query, count, wide)
            if len(rows) == 0:
                continue
            scores = row_scores(self._read_rows(rows), query)
            answer: tuple[np.ndarray, np.ndarray] | None = graph.ranked(rows, scores, count)
            if answer is not None:
                return answer
        return None

    def search_batch(self, queries: np.ndarray, count: int) -> list[tuple[np.ndarray, np.ndarray] | None]:
        return [self.search(q, count) for q in queries]

    def search_subset(
        self, query: np.ndarray, k: int, rows: np.ndarray, n: int
    ) -> tuple[np.ndarray, np.ndarray] | None:
        """Declined: the matrix searches the passing rows exactly while the overlay lasts."""
        return None
