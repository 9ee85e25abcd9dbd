"""Exact search over a VectorMatrix, checked against a float64 brute-force reference."""

from __future__ import annotations

import sys
import warnings
from typing import Any

import numpy as np
import orjson
import pytest
from _engine_data import make_clustered, make_queries, reference_search

from fabstir_node.engine.filters import compile_filter
from fabstir_node.engine.matrix import MAX_CACHED_COLUMNS, VectorMatrix
from fabstir_node.engine.rows import as_float32, to_bfloat16
from fabstir_node.errors import ErrorCode, FabstirError

FILTERS: list[dict[str, Any]] = [
    {"folder": "/docs/3"},
    {"folder": {"$ne": "/docs/3"}},
    {"topic": {"$in": [1, 2, 3, "4"]}},
    {"topic": {"$nin": [1, 2, 3]}},
    {"rank": {"$gt": 0.5}},
    {"rank": {"$gte": -0.25, "$lt": 0.25}},
    {"rank": {"$lte": -0.9}},
    {"flag": {"$exists": True}},
    {"flag": {"$exists": False}, "tags": "t2"},
    {"folder": None},
    {"info.lang": "de"},
    {"info.pages": {"$gt": 6}},
    {"$or": [{"tags": "t0"}, {"$and": [{"flag": False}, {"rank": {"$lt": 0}}]}]},
    {"topic": {"$gt": "1"}},
]


def _build(data: dict[str, Any], dtype: Any = "f32") -> VectorMatrix:
    return VectorMatrix.from_arrays(
        data["ids"], data["vectors"].copy(), [orjson.dumps(m) for m in data["metadata"]], dtype=dtype
    )


@pytest.fixture(scope="module")
def f32_matrix(clustered: dict[str, Any]) -> VectorMatrix:
    return _build(clustered)


def _assert_same(got: list[tuple[str, float]], want: list[tuple[str, float]], tol: float = 1e-5) -> None:
    assert [i for i, _ in got] == [i for i, _ in want]
    np.testing.assert_allclose([s for _, s in got], [s for _, s in want], atol=tol)


def _pairs(result: Any) -> list[tuple[str, float]]:
    return [(h.id, h.score) for h in result.hits]


@pytest.mark.parametrize("k", [1, 5, 100])
@pytest.mark.parametrize("threshold", [None, 0.5, -0.2, 1.5])
def test_exact_against_reference(
    clustered: dict[str, Any], f32_matrix: VectorMatrix, k: int, threshold: Any
) -> None:
    for query in clustered["queries"][:10]:
        result = f32_matrix.search(query.tolist(), k, threshold=threshold)
        want = reference_search(clustered["vectors"], clustered["ids"], query, k, threshold=threshold)
        _assert_same(_pairs(result), want)
        assert result.total == len(clustered["ids"])
    if threshold == 1.5:
        assert want == []


@pytest.mark.parametrize("spec", FILTERS, ids=[orjson.dumps(f).decode() for f in FILTERS])
@pytest.mark.parametrize("threshold", [None, 0.3])
def test_filter_and_threshold_against_reference(
    clustered: dict[str, Any], f32_matrix: VectorMatrix, spec: dict[str, Any], threshold: Any
) -> None:
    flt = compile_filter(spec)
    metadata = clustered["metadata"]
    passing = sum(flt.matches(m) for m in metadata)
    assert 0 < passing < len(metadata)  # each filter really selects
    for query in clustered["queries"][:5]:
        for k in (5, 100):
            result = f32_matrix.search(query, k, threshold=threshold, flt=flt)
            want = reference_search(
                clustered["vectors"],
                clustered["ids"],
                query,
                k,
                threshold=threshold,
                keep=lambda r: flt.matches(metadata[r]),
            )
            _assert_same(_pairs(result), want)
            assert all(flt.matches(h.metadata) for h in result.hits)


def test_hits_carry_decoded_metadata(clustered: dict[str, Any], f32_matrix: VectorMatrix) -> None:
    result = f32_matrix.search(clustered["queries"][0], 20)
    for hit in result.hits:
        assert hit.metadata == clustered["metadata"][int(hit.id.split("-")[1])]
    assert "folder" not in repr(result) and "folder" not in repr(f32_matrix)


def test_filter_matching_nothing_gives_no_hits(f32_matrix: VectorMatrix, clustered: dict[str, Any]) -> None:
    result = f32_matrix.search(clustered["queries"][0], 10, flt=compile_filter({"folder": "/nowhere"}))
    assert result.hits == [] and result.total == len(f32_matrix)


def test_k_larger_than_matches_returns_all_sorted(
    f32_matrix: VectorMatrix, clustered: dict[str, Any]
) -> None:
    flt = compile_filter({"folder": "/docs/3", "flag": True})
    result = f32_matrix.search(clustered["queries"][1], 1000, flt=flt)
    assert len(result.hits) == sum(flt.matches(m) for m in clustered["metadata"])
    scores = [h.score for h in result.hits]
    assert scores == sorted(scores, reverse=True)


def test_ties_are_broken_by_row_order() -> None:
    base = np.array([1.0, 2.0, 3.0], np.float32)
    vectors = np.stack([base * s for s in (1, 5, 2, 3, 0.5)] + [np.array([-1, 0, 0], np.float32)])
    ids = ["a", "b", "c", "d", "e", "neg"]
    for dtype in ("f32", "f16", "bf16"):
        matrix = VectorMatrix.from_arrays(ids, vectors.copy(), [b""] * 6, dtype=dtype)
        assert [h.id for h in matrix.search(base, 3).hits] == ["a", "b", "c"]
        assert [h.id for h in matrix.search(base, 10).hits] == ["a", "b", "c", "d", "e", "neg"]
        assert matrix.search(base, 1).hits[0].score == pytest.approx(1.0, abs=1e-3)


def test_negative_scores_and_thresholds() -> None:
    vectors = np.array([[1, 0], [-1, 0], [0, 1], [-1, -1]], np.float32)
    matrix = VectorMatrix.from_arrays(["p", "n", "o", "d"], vectors, [b""] * 4)
    everything = matrix.search([1, 0], 4)
    assert [h.id for h in everything.hits] == ["p", "o", "d", "n"]
    assert [round(h.score, 5) for h in everything.hits] == [1.0, 0.0, round(-1 / np.sqrt(2), 5), -1.0]
    assert [h.id for h in matrix.search([1, 0], 4, threshold=-0.8).hits] == ["p", "o", "d"]
    assert [h.id for h in matrix.search([1, 0], 4, threshold=0).hits] == ["p", "o"]


def test_degenerate_and_duplicate_rows_at_build() -> None:
    vectors = np.array([[3, 4], [0, 0], [np.nan, 1], [1, 0], [0, 2]], np.float32)
    matrix = VectorMatrix.from_arrays(
        ["a", "z", "bad", "a", "b"], vectors, [b'{"v":1}', b"", b"", b'{"v":2}', b""]
    )
    assert len(matrix) == 4 and matrix.dropped_duplicates == 1 and matrix.degenerate_rows == 2
    hits = {h.id: h for h in matrix.search([1, 0], 10).hits}
    assert hits["a"].metadata == {"v": 2} and hits["a"].score == pytest.approx(1.0)
    assert hits["z"].score == 0.0 and hits["bad"].score == 0.0
    assert matrix.row_of("b") == 3 and matrix.row_of("missing") is None


@pytest.mark.parametrize("dtype", ["f32", "f16", "bf16"])
@pytest.mark.parametrize("source", [np.float32, np.float64, np.int64])
def test_rows_of_any_magnitude_normalise(dtype: Any, source: Any) -> None:
    tiny = np.finfo(np.float32).smallest_subnormal if source is np.float32 else 1e-300
    big = 3e38 if source is np.float32 else 1e150
    raw = (
        [[tiny, 0, tiny], [big, -big, 0], [0, 0, 0], [1, 2, 2]]
        if source is not np.int64
        else [[1, 0, 1], [10**15, -(10**15), 0], [0, 0, 0], [1, 2, 2]]
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        matrix = VectorMatrix.from_arrays(list("abcd"), np.array(raw, source), [b""] * 4, dtype=dtype)
    norms = np.linalg.norm(as_float32(matrix.vectors).astype(np.float64), axis=1)
    np.testing.assert_allclose(norms, [1, 1, 0, 1], atol=1e-2 if dtype == "bf16" else 1e-3)
    assert matrix.degenerate_rows == 1
    assert matrix.search([1, 0, 1], 1).hits[0].id == "a"


def test_f32_normalises_in_place_and_f16_halves_memory(clustered: dict[str, Any]) -> None:
    vectors = clustered["vectors"].copy()
    matrix = VectorMatrix.from_arrays(clustered["ids"], vectors, [b""] * len(vectors))
    assert np.shares_memory(matrix.vectors, vectors)
    np.testing.assert_allclose(np.linalg.norm(matrix.vectors, axis=1), 1.0, atol=1e-6)
    half = VectorMatrix.from_arrays(clustered["ids"], clustered["vectors"], [b""] * len(vectors), dtype="f16")
    assert half.dtype == "f16" and half.vectors.dtype == np.float16
    assert half.nbytes < matrix.nbytes
    assert matrix.nbytes > matrix.vectors.nbytes + sum(len(i) for i in clustered["ids"])
    with pytest.raises(ValueError):
        matrix.vectors[0, 0] = 1.0


def test_nbytes_counts_metadata(clustered: dict[str, Any]) -> None:
    bare = _build({**clustered, "metadata": [{}] * len(clustered["ids"])})
    full = _build(clustered)
    encoded = sum(len(orjson.dumps(m)) for m in clustered["metadata"])
    assert full.nbytes - bare.nbytes >= encoded - 2 * len(clustered["ids"])


@pytest.mark.parametrize("dtype", ["f16", "bf16"])
def test_16_bit_recall_against_f32(dtype: Any) -> None:
    vectors, _ = make_clustered(4000, 64, topics=80, seed=5)
    queries = make_queries(vectors, 40, seed=6)
    ids = [str(i) for i in range(len(vectors))]
    f32 = VectorMatrix.from_arrays(ids, vectors.copy(), [b""] * len(ids))
    f16 = VectorMatrix.from_arrays(ids, vectors, [b""] * len(ids), dtype=dtype)
    assert f16.dtype == dtype
    found = total = 0
    for q in queries:
        exact = f32.search(q, 10).hits
        approx = f16.search(q, 10).hits
        found += len({h.id for h in exact} & {h.id for h in approx})
        total += len(exact)
        for a, b in zip(exact, approx):
            if a.id == b.id:
                assert a.score == pytest.approx(b.score, abs=2e-3)
    assert found / total >= 0.99


def test_f16_filter_and_threshold(clustered: dict[str, Any]) -> None:
    f16 = _build(clustered, "f16")
    flt = compile_filter({"rank": {"$gt": 0}})
    metadata = clustered["metadata"]
    agree = total = 0
    for q in clustered["queries"][:10]:
        got = f16.search(q, 10, threshold=0.2, flt=flt).hits
        want = reference_search(
            clustered["vectors"],
            clustered["ids"],
            q,
            10,
            threshold=0.2,
            keep=lambda r: flt.matches(metadata[r]),
        )
        assert all(h.score >= 0.2 and h.metadata["rank"] > 0 for h in got)
        agree += len({h.id for h in got} & {i for i, _ in want})
        total += len(want)
    assert agree / total >= 0.99


def test_many_filter_fields_overflow_the_column_cache(
    f32_matrix: VectorMatrix, clustered: dict[str, Any]
) -> None:
    spec = {"$or": [{f"nothing{i}": 1} for i in range(MAX_CACHED_COLUMNS + 5)] + [{"folder": "/docs/1"}]}
    flt = compile_filter(spec)
    result = f32_matrix.search(clustered["queries"][0], 5, flt=flt)
    assert result.hits and all(h.metadata["folder"] == "/docs/1" for h in result.hits)
    again = f32_matrix.search(clustered["queries"][0], 5, flt=flt)
    assert again == result


class _ExactIndex:
    """A stand-in ANN index: exact scores over the matrix's own rows."""

    def __init__(self, vectors: np.ndarray) -> None:
        self.vectors = vectors
        self.calls = 0

    def search(self, query: np.ndarray, count: int) -> tuple[np.ndarray, np.ndarray]:
        self.calls += 1
        scores = self.vectors @ query
        top = np.argsort(-scores, kind="stable")[:count]
        return top, scores[top]


def test_attached_index_answers_unfiltered_searches(
    clustered: dict[str, Any], f32_matrix: VectorMatrix
) -> None:
    index = _ExactIndex(f32_matrix.vectors)
    indexed = f32_matrix.with_index(index)
    q = clustered["queries"][2]
    assert indexed.search(q, 7, threshold=0.1) == f32_matrix.search(q, 7, threshold=0.1)
    assert index.calls == 1
    flt = compile_filter({"folder": "/docs/2"})
    assert indexed.search(q, 7, flt=flt) == f32_matrix.search(q, 7, flt=flt)
    assert index.calls == 1  # filtered searches stay exact


@pytest.mark.parametrize(
    "query, code",
    [
        ([1.0, 2.0], ErrorCode.DIMENSION_MISMATCH),
        ([0.0] * 48, ErrorCode.INVALID_MESSAGE),
        ([float("nan")] + [1.0] * 47, ErrorCode.INVALID_MESSAGE),
        ([float("inf")] + [1.0] * 47, ErrorCode.INVALID_MESSAGE),
        ([10**400] + [1] * 47, ErrorCode.INVALID_MESSAGE),
        ([True] + [1.0] * 47, ErrorCode.INVALID_MESSAGE),
        (["1"] + [1.0] * 47, ErrorCode.INVALID_MESSAGE),
        ([], ErrorCode.INVALID_MESSAGE),
        ("1,2", ErrorCode.INVALID_MESSAGE),
        (None, ErrorCode.INVALID_MESSAGE),
        (np.ones((2, 48)), ErrorCode.INVALID_MESSAGE),
    ],
)
def test_bad_queries(f32_matrix: VectorMatrix, query: Any, code: ErrorCode) -> None:
    with pytest.raises(FabstirError) as info:
        f32_matrix.search(query, 5)
    assert info.value.code is code


@pytest.mark.parametrize(
    "k, threshold",
    [(0, None), (-1, None), (True, None), (2.0, None), (5, "0.2"), (5, float("nan")), (5, 10**400)],
)
def test_bad_k_and_threshold(f32_matrix: VectorMatrix, k: Any, threshold: Any) -> None:
    with pytest.raises(FabstirError) as info:
        f32_matrix.search([1.0] * 48, k, threshold=threshold)
    assert info.value.code is ErrorCode.INVALID_MESSAGE


def test_huge_finite_query_components_are_fine(f32_matrix: VectorMatrix, clustered: dict[str, Any]) -> None:
    q = clustered["queries"][3]
    assert f32_matrix.search(q * 1e300, 5) == f32_matrix.search(q, 5)


def test_structural_mistakes_raise_value_error() -> None:
    with pytest.raises(ValueError):
        VectorMatrix.from_arrays(["a"], np.ones((2, 3), np.float32), [b"", b""])
    with pytest.raises(ValueError):
        VectorMatrix.from_arrays(["a"], np.ones(3, np.float32), [b""])
    with pytest.raises(ValueError):
        VectorMatrix.from_arrays([1], np.ones((1, 3), np.float32), [b""])  # type: ignore[list-item]
    with pytest.raises(ValueError):
        VectorMatrix.from_arrays(["a"], np.ones((1, 3), np.float32), [b""], dtype="i8")


def test_empty_matrix_returns_nothing() -> None:
    matrix = VectorMatrix.from_arrays([], np.empty((0, 4), np.float32), [])
    assert matrix.search([1, 0, 0, 0], 3) == matrix.search([1, 0, 0, 0], 3, flt=compile_filter({"a": 1}))
    assert len(matrix) == 0 and matrix.dimensions == 4


@pytest.mark.parametrize("threshold", [None, -0.2, 0.0])
def test_full_ranking_with_negative_scores(
    clustered: dict[str, Any], f32_matrix: VectorMatrix, threshold: Any
) -> None:
    n = len(f32_matrix)
    query = clustered["queries"][4]
    want = reference_search(clustered["vectors"], clustered["ids"], query, n, threshold=threshold)
    assert any(s < 0 for _, s in reference_search(clustered["vectors"], clustered["ids"], query, n))
    _assert_same(_pairs(f32_matrix.search(query, n, threshold=threshold)), want)


@pytest.mark.parametrize("dtype", ["f32", "f16", "bf16"])
def test_dense_filter_whose_rows_all_rank_low(dtype: Any) -> None:
    """40 % of rows pass, but every one of them ranks below the query's own cluster (f16 re-ranks deeper)."""
    vectors, topic = make_clustered(3000, 32, topics=5, seed=9)
    ids = [str(i) for i in range(len(vectors))]
    metadata = [orjson.dumps({"topic": int(t)}) for t in topic]
    matrix = VectorMatrix.from_arrays(ids, vectors.copy(), metadata, dtype=dtype)
    wanted = [t for t in range(5) if t != topic[0]][:2]
    flt = compile_filter({"topic": {"$in": wanted}})
    assert 0.3 < np.isin(topic, wanted).mean() < 0.5
    query = vectors[0]
    want = reference_search(vectors, ids, query, 10, keep=lambda r: topic[r] in wanted)
    got = matrix.search(query, 10, flt=flt).hits
    assert all(orjson.loads(metadata[int(h.id)])["topic"] in wanted for h in got)
    assert len({h.id for h in got} & {i for i, _ in want}) >= (10 if dtype == "f32" else 9)


def test_packed_strings_hold_ids_compactly_and_give_them_back() -> None:
    from fabstir_node.engine.packed import PackedStrings

    ids = [f"doc-{i}-é" for i in range(1000)] + [""]
    packed = PackedStrings(ids)
    assert len(packed) == len(ids) and list(packed) == ids
    assert packed[0] == ids[0] and packed[-1] == "" and packed[-2] == ids[-2]
    assert packed.nbytes < sys.getsizeof(ids) + sum(map(sys.getsizeof, ids))
    with pytest.raises(IndexError):
        packed[len(ids)]


def test_bfloat16_bits_round_to_nearest_even_and_widen_exactly() -> None:
    values = np.array([1.0, -2.5, 0.0, 1 + 2**-8, 1 + 3 * 2**-8, 1 + 2**-8 + 2**-20, 3.0e38], np.float32)
    bits = to_bfloat16(values)
    assert bits.dtype == np.uint16
    # ties go to the even pattern (1 + 2^-8 -> 1.0; 1 + 3*2^-8 -> 1 + 2^-6), above a tie rounds up
    assert bits.tolist()[:6] == [0x3F80, 0xC020, 0x0000, 0x3F80, 0x3F82, 0x3F81]
    assert as_float32(bits).tolist()[:3] == [1.0, -2.5, 0.0]
    assert as_float32(bits)[6] == pytest.approx(3.0e38, rel=2**-8)
    assert np.array_equal(to_bfloat16(as_float32(bits)), bits)  # widening is exact


def test_bf16_matrix_keeps_bit_patterns_and_scores_on_them() -> None:
    vectors, _ = make_clustered(500, 48, topics=10, seed=3)
    ids = [str(i) for i in range(len(vectors))]
    matrix = VectorMatrix.from_arrays(ids, vectors.copy(), [b""] * len(ids), dtype="bf16")
    assert matrix.dtype == "bf16" and matrix.vectors.dtype == np.uint16
    assert matrix.nbytes < VectorMatrix.from_arrays(ids, vectors.copy(), [b""] * len(ids)).nbytes
    query = vectors[7]
    unit = matrix.query_vector(query)
    stored = as_float32(matrix.vectors)
    for hit in matrix.search(query, 5).hits:  # the dot product of the stored rows, within bf16 query rounding
        assert hit.score == pytest.approx(float(stored[int(hit.id)] @ unit), abs=2e-3)
    assert matrix.search(query, 1).hits[0].id == "7"


def test_packed_sequences_concatenate_in_order() -> None:
    from fabstir_node.engine.packed import PackedBlobs, PackedStrings

    parts = [[b"a", b"", b"ccc"], [], [b"dd"], [b"", b"e"]]
    joined = PackedBlobs.concat([PackedBlobs(p) for p in parts])
    assert list(joined) == [item for p in parts for item in p]
    assert joined.offsets.tolist() == [0, 1, 1, 4, 6, 6, 7]
    words = [["x", "ÿz"], [], ["", "w"]]
    strings = PackedStrings.concat([PackedStrings(w) for w in words])
    assert list(strings) == ["x", "ÿz", "", "w"] and strings[1] == "ÿz"
    assert len(PackedBlobs.concat([])) == 0 and list(PackedStrings.concat([])) == []
