"""What every approximate index of the node shares: candidates re-scored on the stored rows.

An index (the HNSW graph, ``hnsw.py``; the inverted file of large databases, ``ivf.py``) only has to
*find* rows: :class:`RescoredIndex` re-scores its candidates on the matrix rows (float32 arithmetic),
so scores, and the ``threshold`` applied to them, are the cosines of the stored rows on every path,
and decides whether to trust the answer:

* **Unfiltered**: ``2k`` candidates (more for the inverted file: ``candidate_count``), re-scored,
  the best ``k`` kept.
* **Untrusted**: an index built by this version carries its own measurement (``calibration.py``):
  the search effort that reached the recall target on a held-out sample, and ``min_kth_score``.  An
  answer whose weakest result (its k-th score) is below that floor (a query far from the data) is
  tried once more with more effort (the index's "wide" search, where it has one worth its cost: the
  inverted file, and graphs of ``hnsw.WIDE_MIN_ROWS`` rows or more) and, if still under it, declined:
  the matrix answers it on its exact-quality path.
* **Filtered, selective** (fewer than :data:`SELECTIVE` of the rows pass, or the oversampling below
  would need more than :data:`MAX_CANDIDATES` candidates): declined, so the matrix searches the
  passing rows exactly.
* **Filtered, broad**: ``2k / fraction + 16`` candidates, those that pass kept, answered when at
  least ``k`` do; otherwise declined.

Pure: no I/O of its own (``read_rows`` may read a file; the caller decides).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from .calibration import Calibration
from .rows import as_float32, row_scores

__all__ = ["MAX_CANDIDATES", "SELECTIVE", "Answer", "RescoredIndex"]

#: Filters passing fewer than this fraction of rows are searched exactly over the passing rows.
SELECTIVE = 0.1
#: Candidates a filtered search may ask for before it falls back to exact search.
MAX_CANDIDATES = 4096

Answer = tuple[np.ndarray, np.ndarray]


class RescoredIndex:
    """Approximate candidates (:meth:`candidates`, from a subclass) re-scored on the matrix rows.

    ``read_rows(rows)`` returns those rows of the matrix (any float dtype; ``rows`` sorted or not).
    """

    #: What the index's "effort" is called in its calibration (``expansion_search`` or lists probed).
    effort_name = "effort"

    def __init__(
        self, read_rows: Callable[[np.ndarray], np.ndarray], calibration: Calibration | None, effort: int
    ) -> None:
        self._read_rows = read_rows
        self.calibration = calibration
        #: Unfiltered answers whose weakest result scores below this are declined (None: all trusted).
        self.min_kth_score = calibration.min_kth_score if calibration is not None else None
        #: The search effort (usearch's ``expansion_search``, or the inverted file's lists probed).
        self.expansion_search = calibration.expansion_search if calibration is not None else effort

    def __len__(self) -> int:
        raise NotImplementedError

    # --- what a subclass provides

    @property
    def has_wide(self) -> bool:
        """Whether :meth:`candidates` can search with more effort (``wide=True``) for an untrusted answer."""
        return False

    def candidates(self, query: np.ndarray, count: int, *, wide: bool = False) -> np.ndarray:
        """Row numbers (int64) of (up to) the ``count`` best rows for ``query`` (a float32 unit vector),
        as the index finds them."""
        raise NotImplementedError

    def candidate_count(self, count: int) -> int:
        """Candidates re-scored for an unfiltered top-``count``."""
        return min(len(self), 2 * count)

    def candidates_batch(self, queries: np.ndarray, count: int) -> list[np.ndarray]:
        """:meth:`candidates` of each row of ``queries`` (B x d float32)."""
        return [self.candidates(q, count) for q in queries]

    # --- shared

    def rescore(self, query: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """float32 cosines of ``rows`` with ``query``, from the stored rows."""
        if len(rows) == 0:
            return np.empty(0, np.float32)
        return row_scores(self._read_rows(rows), query)

    def ranked(self, rows: np.ndarray, scores: np.ndarray, count: int) -> Answer | None:
        """The best ``count`` of ``rows`` by their ``scores`` (ties by row), or None: k-th under the floor."""
        order = np.lexsort((rows, -scores))[:count]
        floor = self.min_kth_score
        if floor is not None and (len(order) == 0 or float(scores[order[-1]]) < floor):
            return None
        return rows[order], scores[order]

    def search(self, query: np.ndarray, count: int) -> Answer | None:
        """Up to ``count`` rows, best first by their true cosine with ``query`` (a float32 unit vector).

        None when the answer is not trusted, even with the wide search: the matrix answers exactly.
        """
        if len(self) == 0 or count < 1:
            return np.empty(0, np.int64), np.empty(0, np.float32)
        rows = self.candidates(query, self.candidate_count(count))
        answer = self.ranked(rows, self.rescore(query, rows), count)
        return answer if answer is not None else self._retry(query, count)

    def _retry(self, query: np.ndarray, count: int) -> Answer | None:
        """An untrusted answer tried once more with the wide search; None if there is none or it fails too."""
        if not self.has_wide:
            return None
        rows = self.candidates(query, self.candidate_count(count), wide=True)
        return self.ranked(rows, self.rescore(query, rows), count)

    def search_batch(self, queries: np.ndarray, count: int) -> list[Answer | None]:
        """:meth:`search` for each row of ``queries`` (B x d float32 unit vectors), answer for answer the
        same, with one read of all their candidate rows."""
        if len(self) == 0 or count < 1:
            return [(np.empty(0, np.int64), np.empty(0, np.float32)) for _ in range(len(queries))]
        candidates = self.candidates_batch(queries, self.candidate_count(count))
        union = np.unique(np.concatenate(candidates)) if candidates else np.empty(0, np.int64)
        stored = as_float32(self._read_rows(union)) if len(union) else None
        out: list[Answer | None] = []
        for query, rows in zip(queries, candidates):
            if len(rows) == 0:
                scores = np.empty(0, np.float32)
            else:
                assert stored is not None
                scores = row_scores(stored[np.searchsorted(union, rows)], query)
            answer = self.ranked(rows, scores, count)
            out.append(answer if answer is not None else self._retry(query, count))
        return out

    def search_subset(self, query: np.ndarray, k: int, rows: np.ndarray, n: int) -> Answer | None:
        """The best ``k`` of ``rows`` (the rows a filter passes), or None: search them exactly."""
        if len(rows) == 0 or len(rows) < SELECTIVE * n:
            return None
        fraction = len(rows) / n
        count = math.ceil(2 * k / fraction) + 16
        if count > MAX_CANDIDATES or count >= n:
            return None
        found = self.candidates(query, count)
        passing = np.zeros(n, bool)
        passing[rows] = True
        found = found[passing[found]]
        if len(found) < k:
            return None  # the filter removed too many candidates: exact fallback
        scores = self.rescore(query, found)
        order = np.lexsort((found, -scores))[:k]
        return found[order], scores[order]
