"""The per-session upload store: validation item by item, limits, upserts, search."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from _engine_data import reference_search
from hypothesis import given, settings
from hypothesis import strategies as st

from fabstir_node.engine.filters import compile_filter
from fabstir_node.engine.uploads import UploadLimits, UploadStore
from fabstir_node.errors import ErrorCode, FabstirError


def _item(ident: Any, vector: Any, metadata: Any = None, **extra: Any) -> dict[str, Any]:
    item = {"id": ident, "vector": vector, **extra}
    if metadata is not None:
        item["metadata"] = metadata
    return item


def test_upload_then_search_matches_reference(clustered: dict[str, Any]) -> None:
    store = UploadStore()
    vectors, ids, metadata = clustered["vectors"], clustered["ids"], clustered["metadata"]
    for start in range(0, len(ids), 1000):  # the SDK's batch size; the buffer grows several times
        batch = [
            _item(ids[i], vectors[i].tolist(), metadata[i]) for i in range(start, min(start + 1000, len(ids)))
        ]
        outcome = store.add(batch)
        assert (outcome.status, outcome.uploaded, outcome.rejected, outcome.errors) == (
            "success",
            len(batch),
            0,
            [],
        )
    assert len(store) == len(ids) and store.dimensions == vectors.shape[1]
    flt = compile_filter({"rank": {"$gt": -0.5}, "tags": {"$ne": "t1"}})
    for query in clustered["queries"][:5]:
        for kwargs in ({}, {"threshold": 0.4}, {"flt": flt, "threshold": -0.1}):
            result = store.search(query.tolist(), 20, **kwargs)  # type: ignore[arg-type]
            keep = (lambda r: flt.matches(metadata[r])) if "flt" in kwargs else None
            want = reference_search(vectors, ids, query, 20, threshold=kwargs.get("threshold"), keep=keep)
            assert [h.id for h in result.hits] == [i for i, _ in want]
            np.testing.assert_allclose([h.score for h in result.hits], [s for _, s in want], atol=1e-5)
            assert result.total == len(ids)
            assert all(h.metadata == metadata[int(h.id.split("-")[1])] for h in result.hits)


REJECTIONS: list[tuple[Any, str]] = [
    ("not an object", "#1: item must be an object"),
    (_item("", [1.0, 0.0, 0.0]), "#1: id must be a non-empty string"),
    (_item(7, [1.0, 0.0, 0.0]), "#1: id must be a non-empty string"),
    ({"vector": [1.0, 0.0, 0.0]}, "#1: id must be a non-empty string"),
    (_item("x" * 513, [1.0, 0.0, 0.0]), "#1: id is longer than 512 characters"),
    ({"id": "v"}, "v: vector is missing"),
    (_item("v", [1.0, 0.0]), "v: dimension mismatch: expected 3, got 2"),
    (_item("v", [1.0, float("nan"), 0.0]), "v: vector contains a non-finite number"),
    (_item("v", [1.0, float("-inf"), 0.0]), "v: vector contains a non-finite number"),
    (_item("v", [1.0, 10**400, 0.0]), "v: vector contains a non-finite number"),
    (_item("v", [1.0, True, 0.0]), "v: vector must be a list of numbers"),
    (_item("v", [1.0, "2", 0.0]), "v: vector must be a list of numbers"),
    (_item("v", [[1.0], 0.0, 0.0]), "v: vector must be a list of numbers"),
    (_item("v", "1,0,0"), "v: vector must be a list of numbers"),
    (_item("v", []), "v: vector is empty"),
    (_item("v", [0, 0.0, -0.0]), "v: vector is all zeros"),
    (_item("v", [1.0, 0.0, 0.0], ["not", "an", "object"]), "v: metadata must be an object or null"),
    (_item("v", [1.0, 0.0, 0.0], {"n": 2**70}), "v: metadata cannot be encoded as JSON"),
    (
        _item("v", [1.0, 0.0, 0.0], {"text": "x" * 70_000}),
        "v: metadata is 70011 bytes encoded, the limit is 65536",
    ),
    (_item("v", [1.0] * 4097), "v: vector has 4097 dimensions, the maximum is 4096"),
]


@pytest.mark.parametrize("item, error", REJECTIONS, ids=[e for _, e in REJECTIONS])
def test_each_bad_item_is_rejected_alone(item: Any, error: str) -> None:
    store = UploadStore()
    outcome = store.add([_item("good", [3.0, 4.0, 0.0], {"a": 1}), item, _item("also", [0.0, 0.0, 2.0])])
    assert (outcome.status, outcome.uploaded, outcome.rejected, outcome.errors) == ("partial", 2, 1, [error])
    assert len(store) == 2
    assert [h.id for h in store.search([0.6, 0.8, 0.0], 5).hits] == ["good", "also"]


def test_statuses_and_metadata_spellings() -> None:
    store = UploadStore()
    assert store.add([]).status == "success"
    bad = store.add([_item("a", [0, 0])])
    assert (bad.status, bad.uploaded, bad.rejected) == ("error", 0, 1)
    assert store.dimensions is None  # a rejected vector fixes nothing
    ok = store.add(
        [_item("a", [1, 2]), {"id": "b", "vector": [2, 1], "metadata": None}, _item("c", [1, 1], {})]
    )
    assert (ok.status, ok.uploaded, ok.rejected) == ("success", 3, 0)
    assert {h.id: h.metadata for h in store.search([1, 2], 3).hits} == {"a": {}, "b": {}, "c": {}}


def test_first_vector_fixes_dimension_until_clear() -> None:
    store = UploadStore()
    store.add([_item("a", [1, 0, 0, 0])])
    assert store.dimensions == 4
    outcome = store.add([_item("b", [1, 0, 0])])
    assert outcome.errors == ["b: dimension mismatch: expected 4, got 3"]
    with pytest.raises(FabstirError) as info:
        store.search([1, 0, 0], 1)
    assert info.value.code is ErrorCode.DIMENSION_MISMATCH
    store.clear()
    assert len(store) == 0 and store.dimensions is None
    with pytest.raises(FabstirError) as info:
        store.search([1, 0, 0], 1)
    assert info.value.code is ErrorCode.NO_VECTORS
    assert store.add([_item("b", [1, 0, 0])]).status == "success"
    assert store.dimensions == 3 and [h.id for h in store.search([1, 0, 0], 5).hits] == ["b"]


def test_upsert_replaces_vector_and_metadata() -> None:
    store = UploadStore()
    store.add([_item("a", [1, 0], {"v": 1}), _item("b", [0, 1], {"v": 2})])
    before = store.search([1, 0], 1).hits[0]
    assert (before.id, before.metadata) == ("a", {"v": 1})
    outcome = store.add([_item("a", [-1, 0], {"v": 3})])
    assert (outcome.status, outcome.uploaded, len(store)) == ("success", 1, 2)
    hits = store.search([1, 0], 2).hits
    assert [(h.id, h.metadata) for h in hits] == [("b", {"v": 2}), ("a", {"v": 3})]
    assert hits[1].score == pytest.approx(-1.0)
    # within one batch the later item wins
    store.add([_item("c", [1, 1], {"v": 4}), _item("c", [1, 0], {"v": 5})])
    top = store.search([1, 0], 1).hits[0]
    assert (top.id, top.metadata, len(store)) == ("c", {"v": 5}, 3)
    assert store.search([1, 0], 3, flt=compile_filter({"v": 4})).hits == []


def test_batch_limit_fails_the_request() -> None:
    store = UploadStore(UploadLimits(max_batch=3))
    with pytest.raises(FabstirError) as info:
        store.add([_item(str(i), [1, i]) for i in range(4)])
    assert info.value.code is ErrorCode.LIMIT_EXCEEDED
    assert len(store) == 0
    with pytest.raises(FabstirError) as info:
        store.add({"id": "a", "vector": [1]})
    assert info.value.code is ErrorCode.INVALID_MESSAGE


def test_total_limit_rejects_new_ids_but_allows_upserts() -> None:
    store = UploadStore(UploadLimits(max_total=3))
    outcome = store.add([_item(str(i), [1, i]) for i in range(5)])
    assert (outcome.status, outcome.uploaded, outcome.rejected) == ("partial", 3, 2)
    assert outcome.errors == [
        "3: the session already holds the maximum of 3 vectors",
        "4: the session already holds the maximum of 3 vectors",
    ]
    assert store.add([_item("1", [0, 1], {"new": True})]).status == "success"
    assert store.search([0, 1], 1).hits[0].metadata == {"new": True}
    assert store.add([_item("9", [1, 1])]).status == "error"


def test_error_list_is_capped() -> None:
    store = UploadStore(UploadLimits(max_errors=5))
    outcome = store.add([_item(f"z{i}", [0, 0]) for i in range(12)] + [_item("ok", [1, 0])])
    assert (outcome.status, outcome.uploaded, outcome.rejected) == ("partial", 1, 12)
    assert outcome.errors[:5] == [f"z{i}: vector is all zeros" for i in range(5)]
    assert outcome.errors[5:] == ["... and 7 more rejected"]


def test_memory_grows_with_content_and_is_released_by_clear() -> None:
    store = UploadStore()
    empty = store.nbytes
    store.add([_item(f"id-{i}", [float(i + 1)] * 64, {"text": "y" * 200}) for i in range(500)])
    assert store.nbytes >= empty + 500 * (64 * 4 + 200)
    store.clear()
    assert store.nbytes == empty


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=3), inner, max_size=3),
    max_leaves=10,
)
_vectors = st.one_of(
    st.lists(st.floats(width=32) | st.integers(-5, 5), min_size=0, max_size=5),
    st.lists(
        st.floats(allow_nan=False, allow_infinity=False, min_value=-1e300, max_value=1e300),
        min_size=3,
        max_size=3,
    ),
    _json,
)
_items = st.one_of(
    st.fixed_dictionaries(
        {"id": st.one_of(st.text(max_size=4), _json), "vector": _vectors},
        optional={
            "metadata": st.one_of(st.none(), st.dictionaries(st.text(max_size=3), _json, max_size=3), _json)
        },
    ),
    _json,
)


@settings(max_examples=200, deadline=None)
@given(batches=st.lists(st.lists(_items, max_size=6), min_size=1, max_size=3), query=_vectors)
def test_arbitrary_items_never_raise(batches: list[list[Any]], query: Any) -> None:
    store = UploadStore(UploadLimits(max_batch=5, max_total=8))
    for batch in batches:
        try:
            outcome = store.add(batch)
        except FabstirError as error:
            assert error.code is ErrorCode.LIMIT_EXCEEDED and len(batch) > 5
            continue
        assert outcome.uploaded + outcome.rejected == len(batch)
        assert len(outcome.errors) == outcome.rejected
        assert outcome.status == (
            "success" if not outcome.rejected else "partial" if outcome.uploaded else "error"
        )
    assert len(store) <= 8
    try:
        result = store.search(query, 3)
    except FabstirError as error:
        assert error.code in (ErrorCode.NO_VECTORS, ErrorCode.DIMENSION_MISMATCH, ErrorCode.INVALID_MESSAGE)
    else:
        assert len(result.hits) == min(3, len(store))
        assert all(-1.0 <= h.score <= 1.0 for h in result.hits)
