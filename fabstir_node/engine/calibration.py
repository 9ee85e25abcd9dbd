"""A graph measures its own recall, and learns which answers not to trust.

An HNSW walk is good where the data is dense around the query and poor where it is not: a query far
from every stored vector (a uniformly random direction; in RAG, a question the knowledge base has
no good answer for) has near-tied top-k at low similarity, and the walk often ends in the wrong
neighbourhood (recall@10 ~0.5 on diffuse data).  Raising the search effort buys those back slowly.
So once a graph is built, the builder runs a held-out sample of queries through it and through an
exact scan (:func:`sample_queries`, :func:`recall_per_query`), and :func:`choose` picks:

* ``expansion_search``: the lowest effort at which the answers it trusts reach the target recall
  while few "near" queries are turned away (judged on the near and far queries; the "between" ones,
  the mean of two random stored vectors, are measured and reported: a graph needs a large effort for
  them, which every search would then pay);
* ``min_kth_score``: answers whose weakest result (the k-th re-scored cosine) is below it are not
  trusted, and the matrix answers them on its exact-quality path (``matrix.py``).  It is the lowest
  floor at which the trusted answers of every judged kind of sample query keep a mean recall of
  :data:`CHOSEN_RECALL` (a little above the target, for queries the sample did not hold) — the
  trusted answers, not the kind as a whole: with half of them answered exactly a kind would reach the
  target while the answers a client gets from the graph fall short (seen at 1M: 0.984).
  The k-th score, not the best: a query close to one stored vector but far from everything else
  (diffuse data) has a strong first hit and a tail of near-ties that a walk gets wrong.  A single
  badly wrong answer does not set the floor (an earlier rule did, and one such answer at a high score
  sent almost every query of a 100K database to the exact path): the mean recall of each kind does.

Recall counts ties: a result whose exact score equals the exact k-th score is as good as the row
the exact top-k happened to list (a knowledge base with duplicate passages has many such ties).

Pure: the builder does the searching; this module draws the sample and decides.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs
import numpy as np

__all__ = ["EFFORTS", "Calibration", "K", "acceptable", "choose", "recall_per_query", "sample_queries"]

#: Search efforts tried, lowest first.
EFFORTS = (64, 96, 128, 192, 256, 384, 512, 768, 1024)
#: The k the sample is measured at.
K = 10
#: Mean recall@K (untrusted answers counted as exact) each judged kind of query must reach.
TARGET = 0.99
#: What the floor is chosen for on the sample: the target plus a margin for queries it did not hold.
CHOSEN_RECALL = 0.995
#: The floor sits this far above the highest untrusted sample answer (unless a trusted one is closer).
MARGIN = 0.02
#: Scores this close to the exact k-th score count as ties (float32 rounding of equal rows).
TIE = 1e-6
#: Share of near queries an effort may turn away to the exact path and still count as good.
MAX_NEAR_FALLBACK = 0.01
#: The kinds of sample query the choice is judged on (the others are measured and reported).
JUDGED = ("near", "far")


@attrs.frozen
class Calibration:
    """What a graph's own measurement chose, and what it measured."""

    expansion_search: int
    #: Answers whose k-th score is below this are answered exactly (None: every answer trusted).
    min_kth_score: float | None
    #: Mean recall@10 of the sample with untrusted answers answered exactly, by kind, and overall.
    recall: dict[str, float] = attrs.field(factory=dict)
    #: Share of each kind of sample query answered exactly.
    fallback: dict[str, float] = attrs.field(factory=dict)
    queries: int = 0

    def to_json(self) -> dict[str, Any]:
        return attrs.asdict(self)

    @classmethod
    def from_json(cls, value: object) -> Calibration:
        """Parse what :meth:`to_json` wrote; ValueError for anything else."""
        if not isinstance(value, Mapping):
            raise ValueError("calibration is not an object")
        ef, floor = value.get("expansion_search"), value.get("min_kth_score")
        if not isinstance(ef, int) or isinstance(ef, bool) or ef < 1:
            raise ValueError("calibration has no valid expansion_search")
        if floor is not None and not isinstance(floor, (int, float)):
            raise ValueError("calibration has no valid min_kth_score")
        recall, fallback = value.get("recall", {}), value.get("fallback", {})
        if not isinstance(recall, Mapping) or not isinstance(fallback, Mapping):
            raise ValueError("calibration has no valid measurements")
        return cls(
            ef, None if floor is None else float(floor),
            {str(k): float(v) for k, v in recall.items()},
            {str(k): float(v) for k, v in fallback.items()},
            int(value.get("queries", 0)),
        )


def sample_queries(
    rows: np.ndarray, *, near: int = 200, between: int = 100, far: int = 100, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Unit queries (float32) and their kinds ("near", "between", "far") for a matrix's float32 ``rows``.

    near: a stored row plus noise (cosine 0.5-0.95 with it); between: the normalised mean of two
    random stored rows; far: uniformly random directions.
    """
    rng = np.random.default_rng(seed)
    n, d = rows.shape

    def pick(count: int) -> np.ndarray:
        return np.asarray(rows[np.sort(rng.integers(0, n, count))], np.float32)

    base = pick(near)
    noise = rng.standard_normal((near, d)).astype(np.float32)
    noise -= (noise * base).sum(axis=1, keepdims=True) * base  # orthogonal to the row
    noise /= np.maximum(np.linalg.norm(noise, axis=1, keepdims=True), 1e-12)
    cosine = rng.uniform(0.5, 0.95, (near, 1)).astype(np.float32)
    near_q = cosine * base + np.sqrt(1 - cosine**2) * noise
    between_q = pick(between) + pick(between)
    far_q = rng.standard_normal((far, d)).astype(np.float32)
    queries = np.concatenate([near_q, between_q, far_q])
    norms = np.linalg.norm(queries, axis=1, keepdims=True)
    good = norms[:, 0] > 1e-6
    queries = (queries[good] / norms[good]).astype(np.float32)
    kinds = np.array(["near"] * near + ["between"] * between + ["far"] * far)[good]
    return queries, kinds


def recall_per_query(
    found: list[np.ndarray], truth: list[np.ndarray], k: int = K, *,
    found_scores: list[np.ndarray] | None = None, kth_scores: np.ndarray | None = None,
) -> np.ndarray:
    """recall@k of each answer (row numbers, best first) against the exact top-k rows.

    With ``found_scores`` (the exact scores of ``found``) and ``kth_scores`` (each query's exact k-th
    score), a found row that ties the k-th score counts as found too: duplicate rows are
    interchangeable, and which of them the exact top-k lists is an accident of order.
    """
    out = np.empty(len(truth))
    for i, (got, want) in enumerate(zip(found, truth)):
        want_k = want[:k]
        hits = len(set(got[:k].tolist()) & set(want_k.tolist()))
        if found_scores is not None and kth_scores is not None and len(want_k) == k:
            tied = int((np.asarray(found_scores[i][:k]) >= kth_scores[i] - TIE).sum())
            hits = max(hits, min(tied, k))
        out[i] = hits / max(1, len(want_k))
    return out


def _floor_for(recall: np.ndarray, top: np.ndarray, kinds: np.ndarray) -> float | None:
    """The lowest k-th score to trust such that, for each kind, the trusted answers' mean recall is at
    least CHOSEN_RECALL (then so is the kind's recall with its untrusted answers exact).

    None: every answer may be trusted.  Answers are untrusted lowest score first (all answers of one
    score together) until every kind's trusted answers keep the mean.
    """
    order = np.argsort(top, kind="stable")
    labels = np.unique(kinds)
    trusted = {kind: int((kinds == kind).sum()) for kind in labels}
    deficit = {kind: float((1.0 - recall[kinds == kind]).sum()) for kind in labels}

    def failing() -> bool:
        return any(deficit[kind] > (1.0 - CHOSEN_RECALL) * trusted[kind] + 1e-9 for kind in labels)

    i = 0
    while failing():
        if i == len(order):
            return float(top.max()) + 1e-6  # nothing can be trusted
        score = top[order[i]]
        while i < len(order) and top[order[i]] == score:
            kind = kinds[order[i]]
            deficit[kind] -= 1.0 - recall[order[i]]
            trusted[kind] -= 1
            i += 1
    if i == 0:
        return None
    if i == len(order):
        return float(top.max()) + 1e-6
    # just above the highest untrusted answer (a query a little above it is like it), never above a trusted one
    return min(float(top[order[i]]), float(top[order[i - 1]]) + MARGIN)


def acceptable(calibration: Calibration) -> bool:
    """Whether a measured effort keeps the targets while turning few near queries away."""
    near_fallback = calibration.fallback.get("near", calibration.fallback.get("all", 1.0))
    kinds_keep = all(calibration.recall.get(kind, 1.0) >= TARGET for kind in JUDGED)
    return calibration.recall.get("all", 0.0) >= TARGET and kinds_keep and near_fallback <= MAX_NEAR_FALLBACK


def choose(
    recall_by_effort: Mapping[int, np.ndarray], top_by_effort: Mapping[int, np.ndarray], kinds: np.ndarray
) -> Calibration:
    """Pick the effort and the trust floor from the sample's per-query recall and k-th scores.

    The first effort (lowest first) at which every judged kind keeps the target (untrusted answers
    counted as exact) while at most :data:`MAX_NEAR_FALLBACK` of the near queries are turned away;
    else the one that turns away the fewest.
    """
    best: tuple[float, Calibration] | None = None
    judged = np.isin(kinds, JUDGED) if np.isin(kinds, JUDGED).any() else np.ones(len(kinds), bool)
    for effort in sorted(recall_by_effort):
        recall, top = recall_by_effort[effort], top_by_effort[effort]
        floor = _floor_for(recall[judged], top[judged], kinds[judged])
        trusted = np.ones(len(top), bool) if floor is None else top >= floor
        answered = np.where(trusted, recall, 1.0)  # the untrusted are answered exactly
        by_kind = {str(kind): float(answered[kinds == kind].mean()) for kind in np.unique(kinds)}
        by_kind["all"] = float(answered[judged].mean())
        fallback = {str(kind): float((~trusted)[kinds == kind].mean()) for kind in np.unique(kinds)}
        fallback["all"] = float((~trusted)[judged].mean())
        calibration = Calibration(effort, floor, by_kind, fallback, len(top))
        near_fallback = fallback.get("near", fallback["all"])
        if acceptable(calibration):
            return calibration
        if best is None or near_fallback < best[0]:
            best = (near_fallback, calibration)
    if best is None:
        raise ValueError("no effort was measured")
    return best[1]
