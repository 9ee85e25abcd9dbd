"""The 8-bit candidate scan, the graph's trust floor and its calibration."""

from __future__ import annotations

import numpy as np
import pytest

from fabstir_node.engine import builder as builder_module
from fabstir_node.engine import calibration as cal
from fabstir_node.engine import matrix as matrix_module
from fabstir_node.engine.builder import MatrixBuilder
from fabstir_node.engine.hnsw import HnswIndex
from fabstir_node.engine.matrix import VectorMatrix
from fabstir_node.engine.quantized import Int8Rows, candidate_count, quantize_rows
from fabstir_node.storage.index_builder import build_index, calibrate


def unit(rows: np.ndarray) -> np.ndarray:
    return (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)


def diffuse(n: int, d: int = 32, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((12, d)).astype(np.float32)
    return unit(centres[rng.integers(0, 12, n)] + 1.2 * rng.standard_normal((n, d)).astype(np.float32))


def test_quantize_rows_round_trips_within_half_a_step():
    rows = diffuse(500)
    codes, scales = quantize_rows(rows)
    assert codes.dtype == np.int8 and np.abs(codes).max() == 127
    assert np.all(np.abs(codes * scales[:, None] - rows) <= scales[:, None] / 2 + 1e-7)
    zero_codes, zero_scale = quantize_rows(np.zeros((2, 8), np.float32))
    assert not zero_codes.any() and not zero_scale.any()


def test_int8_candidates_hold_the_exact_top_k_near_and_far():
    rows = diffuse(20_000, seed=1)
    coarse = Int8Rows.from_rows(rows)
    rng = np.random.default_rng(2)
    far = unit(rng.standard_normal((30, rows.shape[1])).astype(np.float32))
    near = unit(rows[rng.integers(0, len(rows), 30)] + 0.3 * far)
    for q in np.concatenate([near, far]):
        truth = set(np.argsort(-(rows @ q), kind="stable")[:10].tolist())
        found = set(coarse.candidates(q, candidate_count(10, len(rows))).tolist())
        assert truth <= found


def test_a_large_matrix_answers_exactly_through_its_8bit_copy(monkeypatch):
    monkeypatch.setattr(matrix_module, "COARSE_MIN_ROWS", 1000)
    monkeypatch.setattr(builder_module, "COARSE_MIN_ROWS", 1000)
    rows = diffuse(6000, seed=3)
    builder = MatrixBuilder(len(rows), rows.shape[1], "f16")
    for start in range(0, len(rows), 1000):
        builder.fill(start, rows[start : start + 1000])
    ids, meta = [f"v{i}" for i in range(len(rows))], [b""] * len(rows)
    big = builder.finish(ids, meta)
    assert big.coarse is not None and len(big.coarse) == len(rows)
    plain = VectorMatrix.from_arrays(ids, rows.copy(), meta, dtype="f16").with_index(None)
    monkeypatch.setattr(matrix_module, "COARSE_MIN_ROWS", 10**9)  # the reference: a full scan
    rng = np.random.default_rng(4)
    queries = np.concatenate([rows[:10], rng.standard_normal((10, rows.shape[1])).astype(np.float32)])
    expected = [plain.search(q, 10).hits for q in queries]
    monkeypatch.setattr(matrix_module, "COARSE_MIN_ROWS", 1000)
    for q, want in zip(queries, expected):
        got = big.search(q, 10).hits
        # the same rows; the order of near-ties may differ (the full f16 scan rounds the query to f16)
        assert {h.id for h in got} == {h.id for h in want}
        assert [h.score for h in got] == pytest.approx([h.score for h in want], abs=2e-4)


class _FixedGraph:
    """A stand-in usearch index below the unit: always the same candidates (a wrong neighbourhood)."""

    def __init__(self, n: int, keys: list[int]) -> None:
        self._n, self._keys, self.expansion_search = n, np.asarray(keys, np.uint64), 0
        self.calls = 0

    def __len__(self) -> int:
        return self._n

    def search(self, query, count, threads=1, exact=False):
        self.calls += 1
        keys = self._keys[:count]

        class Matches:  # one query: its keys; a batch (2-D): a row of keys and a count per query
            pass

        matches = Matches()
        if np.ndim(query) == 2:
            matches.keys = np.tile(keys, (len(query), 1))
            matches.counts = np.full(len(query), len(keys))
        else:
            matches.keys = keys
        return matches


def test_an_untrusted_graph_answer_goes_to_the_exact_path():
    rows = diffuse(300, seed=5)
    matrix = VectorMatrix.from_arrays([f"v{i}" for i in range(300)], rows.copy(), [b""] * 300, dtype="f32")
    q = rows[42]
    wrong = HnswIndex(_FixedGraph(300, [1, 2, 3]), matrix.vectors,
                      calibration=cal.Calibration(64, min_kth_score=0.999))
    assert wrong.search(q, 3) is None  # its third result scores under the floor
    assert [h.id for h in matrix.with_index(wrong).search(q, 3).hits] == [h.id for h in matrix.search(q, 3).hits]
    trusting = HnswIndex(_FixedGraph(300, [1, 2, 3]), matrix.vectors, calibration=cal.Calibration(64, None))
    assert trusting.search(q, 3) is not None and trusting.expansion_search == 64


def test_a_result_says_how_it_was_answered():
    rows = diffuse(300, seed=5)
    matrix = VectorMatrix.from_arrays([f"v{i}" for i in range(300)], rows.copy(), [b""] * 300, dtype="f32")
    declining = matrix.with_index(HnswIndex(_FixedGraph(300, [1, 2, 3]), matrix.vectors,
                                            calibration=cal.Calibration(64, min_kth_score=0.999)))
    trusting = matrix.with_index(HnswIndex(_FixedGraph(300, [1, 2, 3]), matrix.vectors,
                                           calibration=cal.Calibration(64, None)))
    queries = [rows[42], rows[7], rows[100], rows[200]]
    assert [matrix.search(q, 3).path for q in queries[:1]] == ["exact"]  # no graph
    assert declining.search(queries[0], 3).path == "declined"
    assert trusting.search(queries[0], 3).path == "graph"
    for searched, path in ((matrix, "exact"), (declining, "declined"), (trusting, "graph")):
        answers = searched.search_many([(q, 3, None) for q in queries])
        assert [a.path for a in answers] == [path] * len(queries)
        assert [a.hits for a in answers] == [searched.search(q, 3).hits for q in queries]


def test_recall_counts_ties_with_the_kth_score_as_found():
    truth = [np.array([0, 1, 2])]
    found = [np.array([0, 1, 7])]  # row 7 duplicates row 2
    assert cal.recall_per_query(found, truth, 3)[0] == pytest.approx(2 / 3)
    tied = cal.recall_per_query(found, truth, 3, found_scores=[np.array([0.9, 0.8, 0.7])],
                                kth_scores=np.array([0.7]))
    assert tied[0] == 1.0
    lower = cal.recall_per_query(found, truth, 3, found_scores=[np.array([0.9, 0.8, 0.69])],
                                 kth_scores=np.array([0.7]))
    assert lower[0] == pytest.approx(2 / 3)


def test_choose_takes_the_lowest_effort_that_keeps_the_targets():
    kinds = np.array(["near"] * 8 + ["far"] * 2)
    top = np.array([0.9] * 8 + [0.2, 0.3])
    low = np.array([1.0] * 8 + [0.4, 0.5])  # far answers wrong: untrusted below 0.32
    chosen = cal.choose({64: low, 128: np.ones(10)}, {64: top, 128: top}, kinds)
    assert chosen.expansion_search == 64 and chosen.min_kth_score == pytest.approx(0.32)
    assert chosen.recall["all"] == 1.0 and chosen.fallback == {"far": 1.0, "near": 0.0, "all": 0.2}
    # near answers wrong at a high score: the floor would turn every near query away, so more effort
    bad_near = low.copy()
    bad_near[0] = 0.5
    chosen = cal.choose({64: bad_near, 128: np.ones(10)}, {64: top, 128: top}, kinds)
    assert chosen.expansion_search == 128 and chosen.min_kth_score is None
    # one badly wrong near answer among many at a high score does not send them all to the exact path
    kinds = np.array(["near"] * 400 + ["far"] * 200)
    top = np.concatenate([np.linspace(0.4, 0.9, 400), np.linspace(0.1, 0.25, 200)])
    recall = np.concatenate([np.ones(400), np.full(200, 0.5)])
    recall[300] = 0.0  # near, k-th score ~0.78
    recall[399] = 0.9
    chosen = cal.choose({64: recall}, {64: top}, kinds)
    assert chosen.min_kth_score == pytest.approx(0.25 + cal.MARGIN)  # every far answer exact, no near one
    assert chosen.fallback["near"] == 0.0 and chosen.fallback["far"] == 1.0
    assert min(chosen.recall["near"], chosen.recall["far"]) >= cal.CHOSEN_RECALL
    assert cal.acceptable(chosen)
    # half the near answers wrong-ish: the kind would reach the target with them exact, but the answers
    # a client gets from the graph must keep it too
    kinds = np.array(["near"] * 200)
    top = np.linspace(0.4, 0.9, 200)
    recall = np.where(np.arange(200) % 2 == 0, 1.0, 0.97)  # trusted mean 0.985 wherever the floor is
    recall[:100] = 1.0  # ... except below 0.65, where the graph is right
    chosen = cal.choose({64: recall}, {64: top}, kinds)
    trusted = top >= chosen.min_kth_score
    assert not trusted.any()  # no floor keeps the trusted mean: every answer is exact
    assert cal.Calibration.from_json(chosen.to_json()) == chosen
    with pytest.raises(ValueError):
        cal.Calibration.from_json({"expansion_search": "x"})


def test_calibrating_a_real_graph_reaches_the_target_on_a_fresh_sample():
    rows = diffuse(4000, d=24, seed=6)
    matrix = VectorMatrix.from_arrays([f"v{i}" for i in range(4000)], rows.copy(), [b""] * 4000, dtype="f16")
    graph = build_index(matrix.vectors, connectivity=8, expansion_add=32, threads=1)
    calibration = calibrate(graph, matrix.vectors, seed=1)
    assert calibration.recall["all"] >= cal.TARGET
    searched = matrix.with_index(HnswIndex(graph, matrix.vectors, calibration=calibration))
    queries, kinds = cal.sample_queries(rows, seed=99)
    recall = [len({h.id for h in searched.search(q, 10).hits} & {h.id for h in matrix.search(q, 10).hits}) / 10
              for q in queries]
    assert np.mean(recall) >= 0.98  # a fresh sample, near, between and far


def _astray(monkeypatch, wide_min_rows: int):
    """A 300-row matrix, a query, its true top 3, a floor just under their k-th score, and a graph whose
    walk always goes astray with a wide view that would find them (graphs of ``wide_min_rows`` or more
    rows use it)."""
    from fabstir_node.engine import hnsw

    monkeypatch.setattr(hnsw, "WIDE_MIN_ROWS", wide_min_rows)
    rows = diffuse(300, seed=8)
    matrix = VectorMatrix.from_arrays([f"v{i}" for i in range(300)], rows.copy(), [b""] * 300, dtype="f32")
    q = rows[17]
    truth = [int(h.id[1:]) for h in matrix.search(q, 3).hits]
    floor = cal.Calibration(64, min_kth_score=float(matrix.search(q, 3).hits[-1].score) - 1e-6)
    wide = _FixedGraph(300, truth + [0, 1, 2])
    found = HnswIndex(_FixedGraph(300, [250, 251, 252]), matrix.vectors, calibration=floor, wide=wide)
    return matrix, q, truth, floor, wide, found


def test_an_untrusted_answer_is_tried_once_more_with_more_effort(monkeypatch):
    matrix, q, truth, floor, wide, found = _astray(monkeypatch, 300)
    assert wide.expansion_search == 4 * 64  # the wide view searches with more effort
    answer = found.search(q, 3)
    assert answer is not None and answer[0].tolist() == truth  # the retry found the neighbourhood
    assert found.search_batch(q[None], 3)[0][0].tolist() == truth
    lost = HnswIndex(_FixedGraph(300, [250, 251, 252]), matrix.vectors, calibration=floor,
                     wide=_FixedGraph(300, [250, 251, 252]))
    assert lost.search(q, 3) is None and lost.search_batch(q[None], 3) == [None]


def test_a_small_graph_sends_an_untrusted_answer_straight_to_the_exact_path(monkeypatch):
    _, q, _, _, wide, found = _astray(monkeypatch, 301)  # the graph has 300 rows
    assert not found.has_wide
    assert found.search(q, 3) is None  # declined without the wide walk, though it would have found them
    assert wide.calls == 0


def test_a_matrix_holds_an_8bit_copy_of_every_row_or_none():
    rows = diffuse(100, seed=9)
    matrix = VectorMatrix.from_arrays([f"v{i}" for i in range(100)], rows.copy(), [b""] * 100, dtype="f16")
    assert matrix.with_index(None, coarse=Int8Rows.from_rows(rows)).coarse is not None
    with pytest.raises(ValueError, match="99 rows for a matrix of 100"):
        matrix.with_index(None, coarse=Int8Rows.from_rows(rows[:99]))
