"""Metadata filters: semantics, the vectorised mask agreeing with ``matches``, hostile specs."""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fabstir_node.engine.filters import MAX_DEPTH, compile_filter
from fabstir_node.engine.matrix import VectorMatrix
from fabstir_node.errors import ErrorCode, FabstirError

DOCS: list[dict[str, Any]] = [
    {"folder": "/docs", "n": 1, "tags": ["a", "b"], "info": {"lang": "en", "pages": 3}},  # 0
    {"folder": "/docs/x", "n": 2.5, "tags": ["c"], "flag": True},  # 1
    {"folder": "/other", "n": 10, "tags": [], "flag": False, "x": None},  # 2
    {"n": "10", "tags": "a", "info": {"lang": "de"}},  # 3
    {"folder": "/docs", "n": True, "tags": ["a", ["b"]], "x": [None, 1]},  # 4
    {},  # 5
    {"n": [1, 20], "info.lang": "literal", "big": 2**60 + 1},  # 6
    {"n": -3, "folder": "/Docs", "big": 2**60, "obj": {"a": 1, "b": [1, 2]}},  # 7
]

CASES: list[tuple[dict[str, Any], set[int]]] = [
    ({}, set(range(8))),
    ({"folder": "/docs"}, {0, 4}),
    ({"folder": {"$eq": "/docs"}}, {0, 4}),
    ({"folder": {"$ne": "/docs"}}, {1, 2, 3, 5, 6, 7}),
    ({"folder": {"$in": ["/docs", "/other"]}}, {0, 2, 4}),
    ({"folder": {"$nin": ["/docs", "/other"]}}, {1, 3, 5, 6, 7}),
    ({"folder": {"$in": []}}, set()),
    ({"folder": {"$nin": []}}, set(range(8))),
    # numbers: bools are not numbers, "10" is not 10, arrays match by element
    ({"n": 1}, {0, 6}),
    ({"n": 1.0}, {0, 6}),
    ({"n": True}, {4}),
    ({"n": {"$gt": 2}}, {1, 2, 6}),
    ({"n": {"$gte": 2.5}}, {1, 2, 6}),
    ({"n": {"$lt": 2}}, {0, 6, 7}),
    ({"n": {"$lte": 1}}, {0, 6, 7}),
    ({"n": {"$gt": 0, "$lt": 5}}, {0, 1, 6}),  # array: different elements may satisfy each
    ({"n": {"$gte": "1"}}, {3}),
    ({"n": {"$gt": 2**60}}, set()),
    ({"big": {"$gt": 2**60}}, {6}),
    ({"big": 2**60}, {7}),
    ({"big": {"$gte": 1.0}}, {6, 7}),
    ({"n": {"$in": [10, 2**61]}}, {2}),
    ({"big": {"$in": [2**60 + 1, -3]}}, {6}),
    ({"big": {"$nin": [2**60]}}, {0, 1, 2, 3, 4, 5, 6}),
    # strings compare by code point
    ({"folder": {"$gt": "/docs"}}, {1, 2}),
    ({"folder": {"$lt": "/docs"}}, {7}),
    ({"folder": {"$gte": "/docs", "$lt": "/p"}}, {0, 1, 2, 4}),
    # lists
    ({"tags": "a"}, {0, 3, 4}),
    ({"tags": ["a", "b"]}, {0}),
    ({"tags": ["b"]}, {4}),
    ({"tags": []}, {2}),
    ({"tags": {"$ne": "a"}}, {1, 2, 5, 6, 7}),
    ({"tags": {"$in": ["c", "z"]}}, {1}),
    # null and existence
    ({"x": None}, {0, 1, 2, 3, 4, 5, 6, 7}),
    ({"folder": None}, {3, 5, 6}),
    ({"folder": {"$ne": None}}, {0, 1, 2, 4, 7}),
    ({"x": {"$exists": True}}, {2, 4}),
    ({"x": {"$exists": False}}, {0, 1, 3, 5, 6, 7}),
    ({"flag": False}, {2}),
    ({"flag": {"$in": [True, 0]}}, {1}),
    # nested objects and dotted paths (a verbatim key wins)
    ({"info.lang": "en"}, {0}),
    ({"info.lang": {"$in": ["de", "literal"]}}, {3, 6}),
    ({"info.pages": {"$gt": 2}}, {0}),
    ({"info": {"lang": "de"}}, {3}),
    ({"obj": {"b": [1, 2], "a": 1}}, {7}),
    ({"obj": {"a": 1}}, set()),
    ({"obj.b": 2}, {7}),
    # logic
    ({"folder": "/docs", "n": 1}, {0}),
    ({"$and": [{"folder": "/docs"}, {"n": {"$exists": True}}]}, {0, 4}),
    ({"$or": [{"folder": "/other"}, {"n": {"$lt": 0}}]}, {2, 7}),
    ({"$or": [{"$and": [{"folder": "/docs"}, {"tags": "b"}]}, {"flag": True}]}, {0, 1}),
    ({"folder": {"$ne": "/docs"}, "$or": [{"n": 10}, {"n": "10"}]}, {2, 3}),
]


def _matrix(docs: list[Any]) -> VectorMatrix:
    rng = np.random.default_rng(0)
    blobs = [orjson.dumps(d) if d else b"" for d in docs]
    return VectorMatrix.from_arrays(
        [f"r{i}" for i in range(len(docs))], rng.standard_normal((len(docs), 4)).astype(np.float32), blobs
    )


@pytest.mark.parametrize("spec, expected", CASES, ids=[orjson.dumps(c[0]).decode() for c in CASES])
def test_semantics(spec: dict[str, Any], expected: set[int]) -> None:
    flt = compile_filter(spec)
    assert {i for i, d in enumerate(DOCS) if flt.matches(d)} == expected
    assert set(np.flatnonzero(flt.mask(_matrix(DOCS))).tolist()) == expected


def test_non_object_metadata_counts_as_empty() -> None:
    assert compile_filter({"a": {"$exists": False}}).matches(None)
    assert compile_filter({"a": {"$ne": 1}}).matches(["not", "an", "object"])
    assert not compile_filter({"a": 1}).matches("text")


def test_mask_reuses_cached_columns_and_stays_correct() -> None:
    matrix = _matrix(DOCS)
    first = compile_filter({"folder": "/docs"}).mask(matrix)
    cached = matrix.cache_nbytes
    assert cached > 0
    again = compile_filter({"folder": {"$in": ["/docs"]}}).mask(matrix)
    assert matrix.cache_nbytes == cached
    np.testing.assert_array_equal(first, again)


def _nest(depth: int) -> dict[str, Any]:
    spec: dict[str, Any] = {"a": 1}
    for _ in range(depth):
        spec = {"$and": [spec]}
    return spec


BAD_SPECS: list[object] = [
    None,
    [],
    "folder",
    {"folder": {"$regex": "x"}},
    {"$nor": [{"a": 1}]},
    {"$eq": 1},
    {"a": {"$in": "x"}},
    {"a": {"$nin": {"b": 1}}},
    {"$and": []},
    {"$or": {"a": 1}},
    {"$and": [1]},
    {"a": {"$gt": None}},
    {"a": {"$gt": True}},
    {"a": {"$lt": [1]}},
    {"a": {"$gt": float("nan")}},
    {"a": float("inf")},
    {"a": {"$exists": 1}},
    {"a": {"$eq": 1, "b": 2}},
    {"a": {"$in": [{1: 2}]}},
    {1: 2},
    {"a": b"bytes"},
    {"a": {"$in": [[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]}},
    _nest(MAX_DEPTH + 1),
    {"$or": [{"a": i} for i in range(2000)]},
]


@pytest.mark.parametrize("spec", BAD_SPECS, ids=range(len(BAD_SPECS)))
def test_bad_specs_are_invalid_message(spec: object) -> None:
    with pytest.raises(FabstirError) as info:
        compile_filter(spec)
    assert info.value.code is ErrorCode.INVALID_MESSAGE
    assert info.value.message.startswith("metadataFilter: ")


def test_depth_limit_allows_reasonable_nesting() -> None:
    flt = compile_filter(_nest(MAX_DEPTH - 1))
    assert flt.matches({"a": 1}) and not flt.matches({"a": 2})


# --- hypothesis ----------------------------------------------------------------------

_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**63), 2**64 - 1),  # what orjson can carry
    st.sampled_from([2**53, 2**53 + 1, -(2**53) - 1, 2.0**53]),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from(["a", "b", "", "10", "/docs"]),
)
_json = st.recursive(
    _scalars,
    lambda inner: st.lists(inner, max_size=3)
    | st.dictionaries(st.sampled_from(["a", "b", "c", "a.b"]), inner, max_size=3),
    max_leaves=12,
)
_keys = st.sampled_from(
    [
        "a",
        "b",
        "a.b",
        "$and",
        "$or",
        "$eq",
        "$ne",
        "$in",
        "$nin",
        "$gt",
        "$gte",
        "$lt",
        "$lte",
        "$exists",
        "$x",
    ]
)
_anything = st.recursive(
    st.one_of(_scalars, st.floats(), st.binary(max_size=2)),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_keys | st.integers(0, 2), inner, max_size=3),
    max_leaves=20,
)
_metadata = st.dictionaries(st.sampled_from(["a", "b", "c", "a.b"]), _json, max_size=4)


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(spec=_anything, docs=st.lists(_metadata, min_size=1, max_size=6))
def test_hostile_specs_raise_only_our_error_and_mask_agrees(spec: object, docs: list[dict[str, Any]]) -> None:
    try:
        flt = compile_filter(spec)
    except FabstirError as error:
        assert error.code is ErrorCode.INVALID_MESSAGE
        return
    expected = [flt.matches(d) for d in docs]
    assert flt.mask(_matrix(docs)).tolist() == expected


_ops = st.sampled_from(["$eq", "$ne", "$in", "$nin", "$gt", "$gte", "$lt", "$lte", "$exists"])
_paths = st.sampled_from(["a", "b", "a.b", "c"])


def _operand(op: str) -> st.SearchStrategy[Any]:
    if op in ("$in", "$nin"):
        return st.lists(_json, max_size=4)
    if op == "$exists":
        return st.booleans()
    if op.startswith(("$g", "$l")):
        return st.one_of(
            st.integers(-(2**64), 2**64),
            st.floats(allow_nan=False, allow_infinity=False),
            st.sampled_from(["", "a", "b"]),
        )
    return _json


_clause = _ops.flatmap(lambda op: st.tuples(_paths, st.just(op), _operand(op))).map(
    lambda t: {t[0]: {t[1]: t[2]}}
)
_valid = st.recursive(
    _clause | st.builds(lambda p, v: {p: v}, _paths, _json),
    lambda inner: st.builds(
        lambda k, xs: {k: xs}, st.sampled_from(["$and", "$or"]), st.lists(inner, min_size=1, max_size=3)
    ),
    max_leaves=6,
)


@settings(max_examples=250, deadline=None)
@given(spec=_valid, docs=st.lists(_metadata, min_size=1, max_size=8))
def test_valid_specs_compile_and_mask_agrees_with_matches(
    spec: dict[str, Any], docs: list[dict[str, Any]]
) -> None:
    flt = compile_filter(spec)
    assert flt.mask(_matrix(docs)).tolist() == [flt.matches(d) for d in docs]


@settings(max_examples=200, deadline=None)
@given(spec=_valid, doc=_anything)
def test_matches_never_raises_on_arbitrary_metadata(spec: dict[str, Any], doc: object) -> None:
    assert compile_filter(spec).matches(doc) in (True, False)
