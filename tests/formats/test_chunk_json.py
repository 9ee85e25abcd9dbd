"""The JSON fast path (simdjson) against the generic path (orjson): the same
answer, bit for bit, or the same error, on written-out and hostile texts."""

from __future__ import annotations

import json
from typing import Any
from unittest import mock

import numpy as np
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fabstir_node.errors import ErrorCode, FabstirError
from fabstir_node.formats import chunk as chunk_module
from fabstir_node.formats.blob import OpenedBlob
from fabstir_node.formats.chunk import decode_chunk
from fabstir_node.formats.writer import build_database


def _outcome(data: bytes, *, generic: bool, **params: Any) -> tuple[Any, ...]:
    opened = OpenedBlob("json", data)
    try:
        if generic:
            with mock.patch.object(chunk_module, "_decode_json", side_effect=chunk_module._Fallback):
                chunk = decode_chunk(opened, **params)
        else:
            chunk = decode_chunk(opened, **params)
    except FabstirError as exc:
        return ("error", exc.code, str(exc))
    return ("ok", chunk.chunk_id, chunk.ids, chunk.vectors.shape, chunk.vectors.tobytes(),
            chunk.metadata, chunk.dimensions)


def _same_as_generic(data: bytes, **params: Any) -> tuple[Any, ...]:
    fast = _outcome(data, generic=False, **params)
    assert fast == _outcome(data, generic=True, **params)
    return fast


@pytest.fixture
def no_generic_json() -> Any:
    def refuse(opened: OpenedBlob) -> Any:
        raise AssertionError("the JSON fast path fell back to the generic decoder")

    with mock.patch.object(chunk_module, "parse_json", refuse):
        yield


# --- the fast path is taken ------------------------------------------------------------


def test_bridge_json_takes_the_fast_path(no_generic_json: None) -> None:
    vectors = np.array([[0.5, -1.5, 2.25, 0.0], [1e-3, 2.0, -0.125, 7.5], [0.1, 0.2, 0.3, -0.0]], np.float32)
    metadata = [{"k": None, "n": [1, 2.5], "t": "[x]"}, None, {}]
    files = build_database((["a", "b[", "c"], vectors, metadata), owner="0xabc", name="db", format="json")
    data = files["home/vector-databases/0xabc/db/chunk-0.json"]
    chunk = decode_chunk(OpenedBlob("json", data), chunk_id=0, expected_count=3, dimensions=None)
    assert chunk.vectors.tobytes() == vectors.tobytes()  # -0.0 keeps its sign
    assert chunk.ids == ["a", "b[", "c"]
    assert chunk.metadata == [b'{"k":null,"n":[1,2.5],"t":"[x]"}', b"{}", b"{}"]


def test_numbers_whitespace_escapes_and_key_order_take_the_fast_path(no_generic_json: None) -> None:
    data = (
        b'\n{ "vectors" : [\t{"metadata":{"a":[1,{"b":[]}],"s":"\\u005b\\n"}, "vec\\u0074or":[1, -0 ,1e-5,'
        b' 2.5E+1 ],"\\u0069d":"x\\u005by"},\r\n{"id":"y","vector":[-1,0.0,123456789,-7.25e-3]}],'
        b'"chunkId":2.0 }  '
    )
    chunk = decode_chunk(OpenedBlob("json", data), chunk_id=2, expected_count=2, dimensions=4)
    expected = np.array([[1, 0, 1e-5, 25], [-1, 0, 123456789, -7.25e-3]], dtype=np.float64).astype(np.float32)
    assert chunk.vectors.tobytes() == expected.tobytes()
    assert not np.signbit(chunk.vectors[0, 1])  # JSON's -0 is the integer 0
    assert chunk.ids == ["x[y", "y"]
    assert chunk.metadata == [b'{"a":[1,{"b":[]}],"s":"[\\n"}', b"{}"]


# --- what only the generic path decides --------------------------------------------------

HOSTILE = [
    # nested lists, which simdjson's as_buffer would flatten
    b'{"chunkId":0,"vectors":[{"id":"a","vector":[[1],2]}]}',
    b'{"chunkId":0,"vectors":[{"id":"a","vector":[[[1]],[2]]}]}',
    # ... with an escaped bracket in a string to make up for the nested one
    b'{"chunkId":0,"vectors":[{"id":"\\u005b","vector":[1,2],"metadata":{"x":"\\u005B"}},'
    b'{"id":"b","vector":[[1],2]}]}',
    b'{"chunkId":0,"vectors":[{"id":"\\\\u005b","vector":[[1],2]}]}',
    # duplicate keys: orjson keeps the last
    b'{"chunkId":0,"vectors":[{"id":"a","vector":[1,2],"vector":[3,4]}]}',
    b'{"chunkId":0,"vectors":[{"id":"a","id":"b","vector":[3,4]}]}',
    b'{"chunkId":0,"vectors":[{"id":"a","vector":[1,2],"metadata":{"k":1,"j":[2],"k":3}}]}',
    b'{"chunkId":0,"chunkId":1,"vectors":[{"id":"a","vector":[1,2]}]}',
    b'{"chunkId":0,"vectors":[],"vectors":[{"id":"a","vector":[1,2]}]}',
    # integers simdjson refuses or that are not exact as float64
    b'{"chunkId":0,"vectors":[{"id":"a","vector":[18446744073709551616,2]}]}',
    b'{"chunkId":0,"vectors":[{"id":"a","vector":[-9223372036854775809,2]}]}',
    b'{"chunkId":0,"vectors":[{"id":"a","vector":[1152921573326323713,2]}]}',
    b'{"chunkId":0,"vectors":[{"id":"a","vector":[1152921573326323713,2.5]}]}',
    b'{"chunkId":0,"vectors":[{"id":"a","vector":[9007199254740993,-1]}]}',
    b'{"chunkId":18446744073709551617,"vectors":[]}',
    # not numbers, not finite, not float32
    b'{"chunkId":0,"vectors":[{"id":"a","vector":[true,2]}]}',
    b'{"chunkId":0,"vectors":[{"id":"a","vector":[null,2]}]}',
    b'{"chunkId":0,"vectors":[{"id":"a","vector":["1",2]}]}',
    b'{"chunkId":0,"vectors":[{"id":"a","vector":[{},2]}]}',
    b'{"chunkId":0,"vectors":[{"id":"a","vector":[1e400,2]}]}',
    b'{"chunkId":0,"vectors":[{"id":"a","vector":[1e39,2]}]}',
    b'{"chunkId":0,"vectors":[{"id":"a","vector":[NaN,2]}]}',
    # layout: extra keys, wrong types, missing parts
    b'{"chunkId":0,"vectors":[{"id":"a","vector":[1,2],"extra":[[1]]}]}',
    b'{"chunkId":0,"extra":1,"vectors":[{"id":"a","vector":[1,2]}]}',
    b'{"chunkId":0,"vectors":[{"id":"a","vector":[1,2],"metadata":[1]}]}',
    b'{"chunkId":0,"vectors":[{"id":"a","vector":[1,2],"metadata":"x"}]}',
    b'{"chunkId":0,"vectors":[{"id":"a","vector":[1,2],"metadata":null}]}',
    b'{"chunkId":0,"vectors":[{"id":"","vector":[1,2]}]}',
    b'{"chunkId":0,"vectors":[{"id":1,"vector":[1,2]}]}',
    b'{"chunkId":0,"vectors":[{"vector":[1,2]}]}',
    b'{"chunkId":0,"vectors":[{"id":"a"}]}',
    b'{"chunkId":0,"vectors":[{"id":"a","vector":[]}]}',
    b'{"chunkId":0,"vectors":[{"id":"a","vector":{"0":1}}]}',
    b'{"chunkId":0,"vectors":[{"id":"a","vector":[1,2]},{"id":"b","vector":[1,2,3]}]}',
    b'{"chunkId":0,"vectors":[[1,2]]}',
    b'{"chunkId":0,"vectors":{}}',
    b'{"chunk_id":0,"vectors":[{"id":"a","vector":[1,2]}]}',
    b'{"chunkId":"0","vectors":[{"id":"a","vector":[1,2]}]}',
    b'{"chunkId":0.5,"vectors":[{"id":"a","vector":[1,2]}]}',
    b'[{"chunkId":0}]',
    # text that one parser might take and the other not
    b'\xef\xbb\xbf{"chunkId":0,"vectors":[{"id":"a","vector":[1,2]}]}',
    b'{"chunkId":0,"vectors":[{"id":"\\ud800","vector":[1,2]}]}',
    b'{"chunkId":0,"vectors":[{"id":"a","vector":[1,2]}]} x',
    b'{"chunkId":0,"vectors":[{"id":"a","vector":[1,2],}]}',
    b'{"chunkId":0,"vectors":[{"id":"a","vector":[01,2]}]}',
    b'{"chunkId":0,"vectors":[{"id":"\xff","vector":[1,2]}]}',
    b'{"chunkId":0,"vectors":[{"id":"a","vector":[1,2],"metadata":'
    + b'{"a":' * 300 + b"1" + b"}" * 301 + b"]}",
    b'{"chunkId":0,"vectors":[{"id":"' + b"x" * 600 + b'","vector":[1,2]}]}',
    b'{"chunkId":0,"vectors":[{"id":"a","vector":[1,2],"metadata":{"t":"' + b"x" * 70000 + b'"}}]}',
    b"",
]


@pytest.mark.parametrize("data", HOSTILE, ids=range(len(HOSTILE)))
def test_hostile_texts_get_the_generic_answer(data: bytes) -> None:
    outcome = _same_as_generic(data, chunk_id=0, expected_count=data.count(b'"vector"') or 1, dimensions=None)
    if b'"vector":[[' in data or b",[[1]" in data:
        assert outcome[0] == "error"


def test_a_nested_list_is_an_error_not_a_number() -> None:
    data = b'{"chunkId":0,"vectors":[{"id":"a","vector":[[1],2]}]}'
    outcome = _same_as_generic(data, chunk_id=0, expected_count=1, dimensions=2)
    assert outcome[:2] == ("error", ErrorCode.INVALID_DATABASE)


def test_many_backslashes_are_counted_in_one_pass() -> None:
    text = "\\" * 5000 + "[" + "\\u005b"
    record = {"id": "a", "vector": [1.0, 2.0], "metadata": {"t": text}}
    data = orjson.dumps({"chunkId": 0, "vectors": [record]})
    assert _same_as_generic(data, chunk_id=0, expected_count=1, dimensions=2)[0] == "ok"


# --- property: any chunk-shaped text, the same answer ---------------------------------------

_GOOD_NUMBERS = st.one_of(
    st.floats(width=32, allow_nan=False, allow_infinity=False).map(lambda v: repr(float(v))),
    st.floats(allow_nan=False, allow_infinity=False, min_value=-1e15, max_value=1e15).map(repr),
    st.integers(-(2**53), 2**53).map(str),
    st.sampled_from(["-0", "-0.0", "0e0", "1E+2", "1e-5", "-7.25e-3", "3.4028235e38", "1e-400", "4.9e-324",
                     "16777217", "0.1000000000000000055511151231257827", "2.5e-45", "1.0000000596046448"]),
)
_BAD_NUMBERS = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False).map(repr),
    st.floats(min_value=2.0**53, max_value=1e38).map(repr),
    st.integers(-(2**64), 2**65).map(str),
    st.sampled_from(["9007199254740993", "1152921573326323713", "3.5e38", "1e400", "true", "null", '"1"',
                     "[1]", "[]", "{}", "[[2]]"]),
)
_GOOD_STRINGS = st.one_of(
    st.text(min_size=1, max_size=6).map(lambda s: json.dumps(s, ensure_ascii=False)),
    st.text(min_size=1, max_size=6).map(json.dumps),  # \\u escapes
    st.sampled_from(['"\\u005b"', '"\\u005B["', '"\\\\u005b"', '"["', '"a\\"[b"', '"x\\u0000"']),
)
_BAD_STRINGS = st.sampled_from(['""', '"\\ud800"', "1", "null", "[]"])
_KEYS = st.sampled_from(['"id"', '"vector"', '"metadata"', '"\\u0069d"', '"vec\\u0074or"', '"extra"',
                         '"meta"', '"Id"'])
_WS = st.sampled_from(["", " ", "\n", "\t ", "\r\n"])


def _rarely(draw: Any, hostile: bool) -> bool:
    return hostile and draw(st.integers(0, 9)) == 0


@st.composite
def _value(draw: Any, depth: int = 0, hostile: bool = False) -> str:
    kind = draw(st.integers(0, 4 if depth < 2 else 1))
    if kind == 0:
        return draw(_BAD_NUMBERS if _rarely(draw, hostile) else _GOOD_NUMBERS)
    if kind == 1:
        return draw(_GOOD_STRINGS)
    if kind == 2:
        items = draw(st.lists(_value(depth + 1, hostile), max_size=3))
        return "[" + ",".join(items) + "]"
    if kind == 3:  # keys may repeat: orjson keeps the last value
        pairs = draw(st.lists(st.tuples(st.sampled_from(['"a"', '"b"', '"["', '"\\u005b"']),
                                        _value(depth + 1, hostile)), max_size=3))
        return "{" + ",".join(f"{k}:{v}" for k, v in pairs) + "}"
    return draw(st.sampled_from(["null", "true", "false"]))


@st.composite
def _record(draw: Any, dims: int, hostile: bool) -> str:
    ws = draw(_WS)
    length = dims
    if _rarely(draw, hostile):
        length = draw(st.sampled_from([dims - 1, dims + 1]))
    numbers = [draw(_BAD_NUMBERS if _rarely(draw, hostile) else _GOOD_NUMBERS) for _ in range(max(length, 0))]
    entries = {
        '"id"': draw(_BAD_STRINGS if _rarely(draw, hostile) else _GOOD_STRINGS),
        '"vector"': "[" + ws + f",{ws}".join(numbers) + ws + "]",
    }
    if draw(st.booleans()):
        meta = draw(st.one_of(st.just("null"), st.just('{"t":"x","n":[1,2.5]}'),
                              _value(2 if not hostile else 0, hostile).map(lambda v: '{"v":' + v + "}")))
        entries['"metadata"'] = draw(_value(0, True)) if _rarely(draw, hostile) else meta
    pairs = list(entries.items())
    if _rarely(draw, hostile):
        pairs.append((draw(_KEYS), draw(_value(0, hostile))))
    if draw(st.booleans()):  # escaped spellings of the same keys
        pairs = [(k.replace("i", "\\u0069", 1), v) for k, v in pairs]
    pairs = draw(st.permutations(pairs))
    return "{" + ws + f",{ws}".join(f"{k}{ws}:{ws}{v}" for k, v in pairs) + ws + "}"


@st.composite
def _chunk_text(draw: Any, hostile: bool) -> tuple[bytes, int, int | None]:
    dims = draw(st.integers(1, 4))
    count = draw(st.integers(0, 4))
    records = [draw(_record(dims, hostile)) for _ in range(count)]
    ws = draw(_WS)
    chunk_id = draw(st.sampled_from(["0", "0.0", "-0", "0e5"]))
    if _rarely(draw, hostile):
        chunk_id = draw(st.sampled_from(["1", '"0"', "0.5", "18446744073709551617"]))
    pairs = [('"chunkId"', chunk_id), ('"vectors"', "[" + ws + f",{ws}".join(records) + ws + "]")]
    if _rarely(draw, hostile):
        pairs.append((draw(st.sampled_from(['"chunkId"', '"vectors"', '"other"'])), draw(_value(0, hostile))))
    pairs = draw(st.permutations(pairs))
    text = ws + "{" + ",".join(f"{k}:{ws}{v}" for k, v in pairs) + "}" + ws
    expected = count + 1 if _rarely(draw, hostile) else count
    return text.encode(), expected, draw(st.sampled_from([None, dims]))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_chunk_text(hostile=False))
def test_fast_path_matches_the_generic_path(case: tuple[bytes, int, int | None]) -> None:
    data, expected, dims = case
    _same_as_generic(data, chunk_id=0, expected_count=expected, dimensions=dims)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_chunk_text(hostile=True))
def test_fast_path_matches_the_generic_path_on_hostile_text(case: tuple[bytes, int, int | None]) -> None:
    data, expected, dims = case
    _same_as_generic(data, chunk_id=0, expected_count=expected, dimensions=dims)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.lists(st.floats(width=32, allow_nan=False, allow_infinity=False), min_size=3, max_size=3),
                min_size=1, max_size=5))
def test_float32_values_round_trip_exactly(rows: list[list[float]]) -> None:
    vectors = np.array(rows, dtype=np.float32)
    files = build_database(([f"v{i}" for i in range(len(rows))], vectors, [None] * len(rows)),
                           owner="0xabc", name="db", format="json")
    data = files["home/vector-databases/0xabc/db/chunk-0.json"]
    outcome = _same_as_generic(data, chunk_id=0, expected_count=len(rows), dimensions=3)
    assert outcome[0] == "ok" and outcome[4] == vectors.tobytes()
