"""The previous version's graph answering for a new version (engine/overlay.py)."""

from __future__ import annotations

import numpy as np

from fabstir_node.engine import calibration as cal
from fabstir_node.engine.hnsw import HnswIndex
from fabstir_node.engine.matrix import VectorMatrix
from fabstir_node.engine.overlay import OverlayIndex
from fabstir_node.storage.index_builder import build_index

D = 16


def unit(rows):
    return (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)


def versions(seed=0):
    """Version 1 (600 rows) and version 2: rows 100-109 removed, 0-4 changed, 20 appended."""
    rng = np.random.default_rng(seed)
    old = unit(rng.standard_normal((600, D)))
    old_ids = [f"v{i}" for i in range(600)]
    keep = [i for i in range(600) if not 100 <= i < 110]
    new_rows = old[keep].copy()
    new_rows[:5] = unit(rng.standard_normal((5, D)))  # changed: same ids, new vectors
    added = unit(rng.standard_normal((20, D)))
    new = np.concatenate([new_rows, added])
    new_ids = [old_ids[i] for i in keep] + [f"n{i}" for i in range(20)]
    mapping = np.array([i if i >= 5 else -1 for i in keep] + [-1] * 20, np.int64)  # new row -> old row
    return old, old_ids, new, new_ids, mapping


def overlay_of(old, new, mapping, floor=None):
    graph = build_index(old, connectivity=8, expansion_add=64, threads=1)
    old_graph = HnswIndex(graph, old, calibration=cal.Calibration(128, floor))
    rows_of_label = np.full(len(old), -1, np.int64)
    kept = np.flatnonzero(mapping >= 0)
    rows_of_label[mapping[kept]] = kept
    extra = np.flatnonzero(mapping < 0)
    return OverlayIndex(old_graph, rows_of_label, extra, new[extra], new.__getitem__, len(new))


def test_the_overlay_answers_like_exact_search_on_the_new_version():
    old, old_ids, new, new_ids, mapping = versions()
    matrix = VectorMatrix.from_arrays(new_ids, new.copy(), [b""] * len(new), dtype="f32")
    searched = matrix.with_index(overlay_of(old, matrix.vectors, mapping))
    rng = np.random.default_rng(3)
    removed = {f"v{i}" for i in range(100, 110)}
    hits = 0
    queries = unit(np.concatenate([old[100:110], new[:5], new[-20:], rng.standard_normal((40, D))]))
    for q in queries:
        got = [h.id for h in searched.search(q, 10).hits]
        want = [h.id for h in matrix.search(q, 10).hits]  # exact, no index
        assert not removed & set(got)  # a removed row is never returned
        hits += len(set(got) & set(want))
    assert hits / (10 * len(queries)) >= 0.99
    for row in [0, 1, 2, 3, 4, len(new) - 1]:  # changed and new rows: found by their new vector
        assert searched.search(new[row], 1).hits[0].id == new_ids[row]


def test_an_overlay_answer_under_the_floor_is_declined():
    old, _, new, _, mapping = versions(seed=1)
    overlay = overlay_of(old, new, mapping, floor=1.01)  # nothing can reach it
    assert overlay.search(new[50], 5) is None
    assert overlay.search_subset(new[50], 5, np.arange(100), len(new)) is None  # filters: exact path
    trusting = overlay_of(old, new, mapping)
    rows, scores = trusting.search(new[50], 5)
    assert rows[0] == 50 and abs(scores[0] - 1.0) < 1e-5
    assert len(trusting) == len(new) and trusting.search_batch(new[[50, 60]], 3)[1][0][0] == 60
