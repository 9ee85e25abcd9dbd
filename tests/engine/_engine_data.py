"""Test data for the engine tests: clustered vectors, varied metadata, a float64 reference search."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np


def make_clustered(n: int, d: int, *, topics: int = 40, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``n`` float32 vectors around ``topics`` random centres, plus each row's topic.

    Neighbours are well separated from the rest (like real embeddings), which is
    what recall comparisons need; i.i.d. random vectors would not do.
    """
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((topics, d))
    topic = rng.integers(0, topics, n)
    noise = rng.standard_normal((n, d)) * 0.6
    scale = rng.uniform(0.5, 3.0, (n, 1))  # unnormalised on purpose
    return ((centres[topic] + noise) * scale).astype(np.float32), topic


def make_queries(vectors: np.ndarray, count: int, *, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    picks = vectors[rng.integers(0, len(vectors), count)].astype(np.float64)
    return picks + rng.standard_normal(picks.shape) * 0.5


def make_metadata(n: int, topic: np.ndarray, *, seed: int = 2) -> list[dict[str, Any]]:
    """Varied metadata: strings, ints, floats, bools, nulls, lists, nesting, missing fields."""
    rng = np.random.default_rng(seed)
    docs: list[dict[str, Any]] = []
    for i in range(n):
        doc: dict[str, Any] = {
            "topic": int(topic[i]),
            "folder": f"/docs/{i % 7}",
            "rank": float(rng.uniform(-1, 1)),
        }
        if i % 3:
            doc["tags"] = [f"t{(i + j) % 5}" for j in range(i % 4)]
        if i % 5 == 0:
            doc["flag"] = bool(i % 2)
        if i % 11 == 0:
            doc["folder"] = None
        if i % 4 == 1:
            doc["info"] = {"lang": ["en", "de", "fr"][i % 3], "pages": i % 13}
        if i % 13 == 0:
            doc["topic"] = str(topic[i])  # same field, other type
        docs.append(doc)
    return docs


def reference_search(
    vectors: np.ndarray,
    ids: list[str],
    query: np.ndarray,
    k: int,
    *,
    threshold: float | None = None,
    keep: Callable[[int], bool] | None = None,
) -> list[tuple[str, float]]:
    """Brute force in float64, straight from the definition."""
    x = vectors.astype(np.float64)
    norms = np.linalg.norm(x, axis=1)
    x = np.divide(x, norms[:, None], out=np.zeros_like(x), where=norms[:, None] > 0)
    q = np.asarray(query, np.float64)
    scores = x @ (q / np.linalg.norm(q))
    rows = [
        r
        for r in range(len(x))
        if (keep is None or keep(r)) and (threshold is None or scores[r] >= threshold)
    ]
    rows.sort(key=lambda r: (-scores[r], r))
    return [(ids[r], float(scores[r])) for r in rows[:k]]
