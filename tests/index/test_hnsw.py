"""The HNSW path: recall, true-cosine scores and thresholds, and filters on both paths."""

from __future__ import annotations

import numpy as np
import pytest
from _index_data import make_matrix, queries

from fabstir_node.engine import hnsw
from fabstir_node.engine.filters import compile_filter
from fabstir_node.engine.hnsw import HnswIndex
from fabstir_node.storage.index_builder import build_index


class Counting:
    """An HnswIndex wrapper counting which way each search went (the graph itself is real)."""

    def __init__(self, inner: HnswIndex) -> None:
        self.inner, self.graph, self.declined = inner, 0, 0

    def search(self, q, count):
        self.graph += 1
        return self.inner.search(q, count)

    def search_subset(self, q, k, rows, n):
        answer = self.inner.search_subset(q, k, rows, n)
        if answer is None:
            self.declined += 1
        else:
            self.graph += 1
        return answer


@pytest.fixture(scope="module", params=["i8", "f16"])
def indexed(request):
    """The same database exactly and through a graph of 8-bit (the default) or float16 vectors."""
    matrix, vectors = make_matrix(3000, 32)
    graph = build_index(matrix.vectors, dtype=request.param, connectivity=16, expansion_add=64, threads=2)
    return matrix, matrix.with_index(HnswIndex(graph, matrix.vectors, expansion_search=128)), vectors


def ids(result) -> list[str]:
    return [h.id for h in result.hits]


def test_unfiltered_recall_and_scores_are_true_cosines(indexed):
    exact, approx, vectors = indexed
    overlap = []
    for q in queries(vectors, 60):
        want, got = exact.search(q, 10), approx.search(q, 10)
        overlap.append(len(set(ids(want)) & set(ids(got))) / 10)
        for hit in got.hits:
            row = exact.row_of(hit.id)
            true = float(np.asarray(exact.vectors[row], np.float32) @ q)
            assert hit.score == pytest.approx(true, abs=1e-5)
        assert [h.score for h in got.hits] == sorted((h.score for h in got.hits), reverse=True)
        assert got.total == len(exact)
    assert np.mean(overlap) >= 0.95


def test_the_graph_answers_unfiltered_searches(indexed):
    exact, approx, vectors = indexed
    counting = Counting(approx.index)
    matrix = exact.with_index(counting)
    matrix.search(queries(vectors, 1)[0], 5)
    assert counting.graph == 1


def test_threshold_cuts_on_true_cosine(indexed):
    exact, approx, vectors = indexed
    for q in queries(vectors, 20, seed=3):
        scores = [h.score for h in exact.search(q, 50).hits]
        cut = scores[len(scores) // 2]
        got = approx.search(q, 50, threshold=cut)
        assert got.hits and all(h.score >= cut for h in got.hits)
        assert set(ids(got)) <= {h.id for h in exact.search(q, 200).hits if h.score >= cut - 1e-5}


@pytest.mark.parametrize(
    "flt",
    [
        {"chunkIndex": 3},  # 1 in 25 rows
        {"folderPath": "/legal/contracts", "tag": "draft"},
        {"chunkIndex": {"$in": [0, 1]}},
    ],
)
def test_selective_filters_give_exactly_the_exact_answer(indexed, flt):
    exact, approx, vectors = indexed
    compiled = compile_filter(flt)
    rows = np.flatnonzero(compiled.mask(exact))
    assert 0 < len(rows) < hnsw.SELECTIVE * len(exact)  # the case under test
    counting = Counting(approx.index)
    matrix = exact.with_index(counting)
    for q in queries(vectors, 15, seed=11):
        for threshold in (None, 0.3):
            want = exact.search(q, 10, flt=compiled, threshold=threshold)
            got = matrix.search(q, 10, flt=compiled, threshold=threshold)
            assert [(h.id, h.score) for h in got.hits] == [(h.id, h.score) for h in want.hits]
    assert counting.graph == 0 and counting.declined > 0


def test_broad_filters_use_the_graph_and_every_hit_passes(indexed):
    exact, approx, vectors = indexed
    compiled = compile_filter({"tag": {"$ne": "draft"}})
    counting = Counting(approx.index)
    matrix = exact.with_index(counting)
    overlap = []
    for q in queries(vectors, 30, seed=5):
        want, got = exact.search(q, 10, flt=compiled), matrix.search(q, 10, flt=compiled)
        assert len(got.hits) == 10
        assert all(h.metadata.get("tag") != "draft" for h in got.hits)
        overlap.append(len(set(ids(want)) & set(ids(got))) / 10)
    assert counting.graph == 30 and np.mean(overlap) >= 0.95


def test_too_few_passing_candidates_fall_back_to_exact(indexed):
    exact, approx, vectors = indexed
    q = queries(vectors, 1, seed=9)[0]
    # a broad filter (half the rows) that excludes exactly the query's neighbourhood
    near = {h.id for h in exact.search(q, len(exact) // 2).hits}
    rows = np.array(sorted(exact.row_of(i) for i in near), np.int64)
    assert approx.index.search_subset(q, 10, rows[:1], len(exact)) is None  # selective: declined
    far = np.setdiff1d(np.arange(len(exact)), rows)
    assert approx.index.search_subset(q, 10, far, len(exact)) is None  # broad, yet the graph finds none


def test_an_index_of_another_size_is_refused(indexed):
    exact, approx, _ = indexed
    with pytest.raises(ValueError):
        HnswIndex(approx.index._index, exact.vectors[:10])
