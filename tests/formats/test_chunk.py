"""Chunk decoding: every validation failure, in both encodings and both paths."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import cbor2
import numpy as np
import orjson
import pytest
from _edit import set_at

from fabstir_node.errors import ErrorCode, FabstirError
from fabstir_node.formats.blob import OpenedBlob, open_blob
from fabstir_node.formats.chunk import decode_chunk
from fabstir_node.formats.writer import UNDEFINED
from fabstir_node.s5.cborx import encode_s5

DIM = 4


def chunk_obj(n: int = 3, chunk_id: int = 2) -> dict[str, Any]:
    return {
        "chunkId": chunk_id,
        "vectors": [
            {"id": f"v{i}", "vector": [0.5 + i, -0.25, 0.125, 3.5], "metadata": {"i": i, "t": "x"}}
            for i in range(n)
        ],
    }


# The same object through three encoders: SDK-style CBOR (fast path), cbor2's
# own choices (float64 items become smaller floats where exact), and JSON.
ENCODERS: dict[str, Callable[[Any], bytes]] = {
    "sdk-cbor": encode_s5,
    "cbor2": cbor2.dumps,
    "json": lambda obj: orjson.dumps(obj, default=lambda v: None if v is UNDEFINED else v),
}


def _decode(data: bytes, **kwargs: Any) -> Any:
    params: dict[str, Any] = {"chunk_id": 2, "expected_count": 3, "dimensions": DIM}
    params.update(kwargs)
    return decode_chunk(open_blob(data, None), **params)


def _code(data: bytes, **kwargs: Any) -> ErrorCode:
    with pytest.raises(FabstirError) as info:
        _decode(data, **kwargs)
    return info.value.code


@pytest.mark.parametrize("encoder", ENCODERS.values(), ids=ENCODERS.keys())
def test_valid_chunk(encoder: Callable[[Any], bytes]) -> None:
    chunk = _decode(encoder(chunk_obj()))
    assert chunk.chunk_id == 2
    assert chunk.ids == ["v0", "v1", "v2"]
    assert chunk.dimensions == DIM
    assert chunk.vectors.dtype == np.float32 and chunk.vectors.shape == (3, DIM)
    assert chunk.vectors[1].tolist() == [1.5, -0.25, 0.125, 3.5]
    assert chunk.metadata == [b'{"i":0,"t":"x"}', b'{"i":1,"t":"x"}', b'{"i":2,"t":"x"}']


@pytest.mark.parametrize("encoder", ENCODERS.values(), ids=ENCODERS.keys())
def test_dimensions_from_the_first_vector(encoder: Callable[[Any], bytes]) -> None:
    assert _decode(encoder(chunk_obj()), dimensions=None).dimensions == DIM


def test_out_receives_the_vectors() -> None:
    matrix = np.zeros((5, DIM), dtype=np.float32)
    chunk = _decode(encode_s5(chunk_obj()), out=matrix[1:4])
    assert np.shares_memory(chunk.vectors, matrix)
    assert matrix[2].tolist() == [1.5, -0.25, 0.125, 3.5]
    assert not matrix[0].any() and not matrix[4].any()


def test_out_with_unknown_dimensions_takes_its_width() -> None:
    with pytest.raises(FabstirError) as info:
        _decode(encode_s5(chunk_obj()), dimensions=None, out=np.zeros((3, 5), dtype=np.float32))
    assert info.value.code is ErrorCode.DIMENSION_MISMATCH


@pytest.mark.parametrize("meta", [None, UNDEFINED, {}])
@pytest.mark.parametrize("encoder", ENCODERS.values(), ids=ENCODERS.keys())
def test_absent_metadata_is_an_empty_object(meta: Any, encoder: Callable[[Any], bytes]) -> None:
    obj = chunk_obj()
    obj["vectors"][0]["metadata"] = meta
    del obj["vectors"][1]["metadata"]
    chunk = _decode(encoder(obj))
    assert chunk.metadata[:2] == [b"{}", b"{}"]


def test_cbor_metadata_undefined_inside_becomes_null() -> None:
    obj = chunk_obj()
    obj["vectors"][0]["metadata"] = {"a": UNDEFINED, "b": [UNDEFINED]}
    assert _decode(encode_s5(obj)).metadata[0] == b'{"a":null,"b":[null]}'


@pytest.mark.parametrize(
    ("tag", "dtype"), [(85, "<f4"), (81, ">f4"), (86, "<f8"), (82, ">f8")]
)
def test_typed_array_vectors(tag: int, dtype: str) -> None:
    obj = chunk_obj()
    for record in obj["vectors"]:
        record["vector"] = cbor2.CBORTag(tag, np.array(record["vector"], dtype=dtype).tobytes())
    chunk = _decode(cbor2.dumps(obj))
    assert chunk.vectors[2].tolist() == [2.5, -0.25, 0.125, 3.5]


def test_mixed_integer_and_float_items_decode() -> None:
    obj = chunk_obj()
    obj["vectors"][0]["vector"] = [0, 1, -0.5, 2**40]  # what cbor-x writes for integral numbers
    chunk = _decode(encode_s5(obj))
    assert chunk.vectors[0].tolist() == [0.0, 1.0, -0.5, 2.0**40]


def test_record_keys_in_any_order_and_extra_keys() -> None:
    obj = {
        "other": [1, {"x": 2}],
        "vectors": [
            {"vector": [1.5, 2.5, 3.5, 4.5], "extra": "ignored", "metadata": {"a": 1}, "id": "z"}
            for _ in range(3)
        ],
        "chunkId": 2,
    }
    for data in (cbor2.dumps(obj), orjson.dumps(obj)):
        chunk = _decode(data)
        assert chunk.ids == ["z"] * 3 and chunk.metadata[0] == b'{"a":1}'


def test_json_reserialised_from_cbor_matches() -> None:
    data = encode_s5(chunk_obj())
    from_cbor = _decode(data)
    bridge = orjson.dumps(cbor2.loads(data))
    from_json = _decode(bridge)
    assert np.array_equal(from_cbor.vectors, from_json.vectors)
    assert from_cbor.ids == from_json.ids and from_cbor.metadata == from_json.metadata


def test_encrypted_chunk() -> None:
    from fabstir_node.formats.blob import encrypt_blob

    key = bytes(32)
    opened = open_blob(encrypt_blob(encode_s5(chunk_obj()), key), key)
    assert opened.encrypted
    chunk = decode_chunk(opened, chunk_id=2, expected_count=3, dimensions=DIM)
    assert chunk.ids == ["v0", "v1", "v2"]


# --- failures ----------------------------------------------------------------------------


def _set(path: tuple[Any, ...], value: Any) -> Callable[[dict[str, Any]], None]:
    return lambda obj: set_at(obj, path, value)


V0 = ("vectors", 0)
FAILURES: list[tuple[str, Callable[[dict[str, Any]], None], ErrorCode]] = [
    ("wrong chunk id", _set(("chunkId",), 3), ErrorCode.INVALID_DATABASE),
    ("chunk id missing", _set(("chunkId",), KeyError), ErrorCode.INVALID_DATABASE),
    ("chunk id text", _set(("chunkId",), "2"), ErrorCode.INVALID_DATABASE),
    ("chunk id bool", _set(("chunkId",), True), ErrorCode.INVALID_DATABASE),
    ("vectors missing", _set(("vectors",), KeyError), ErrorCode.INVALID_DATABASE),
    ("vectors not a list", _set(("vectors",), {"0": 1}), ErrorCode.INVALID_DATABASE),
    ("too few", lambda o: o["vectors"].pop(), ErrorCode.INVALID_DATABASE),
    ("too many", lambda o: o["vectors"].append(copy.deepcopy(o["vectors"][0])), ErrorCode.INVALID_DATABASE),
    ("record not a map", _set(V0, [1, 2]), ErrorCode.INVALID_DATABASE),
    ("id missing", _set(V0 + ("id",), KeyError), ErrorCode.INVALID_DATABASE),
    ("id empty", _set(V0 + ("id",), ""), ErrorCode.INVALID_DATABASE),
    ("id number", _set(V0 + ("id",), 7), ErrorCode.INVALID_DATABASE),
    ("id too long", _set(V0 + ("id",), "x" * 513), ErrorCode.INVALID_DATABASE),
    ("vector missing", _set(V0 + ("vector",), KeyError), ErrorCode.INVALID_DATABASE),
    ("vector not a list", _set(V0 + ("vector",), "1,2,3,4"), ErrorCode.INVALID_DATABASE),
    ("vector null", _set(V0 + ("vector",), None), ErrorCode.INVALID_DATABASE),
    ("vector short", _set(V0 + ("vector",), [1.5, 2.5, 3.5]), ErrorCode.DIMENSION_MISMATCH),
    ("vector long", _set(V0 + ("vector",), [1.5] * 5), ErrorCode.DIMENSION_MISMATCH),
    ("later vector short", _set(("vectors", 2, "vector"), [1.5]), ErrorCode.DIMENSION_MISMATCH),
    ("vector empty", _set(V0 + ("vector",), []), ErrorCode.DIMENSION_MISMATCH),
    ("string item", _set(V0 + ("vector",), [1.5, "2.5", 3.5, 4.5]), ErrorCode.INVALID_DATABASE),
    ("bool item", _set(V0 + ("vector",), [1.5, True, 3.5, 4.5]), ErrorCode.INVALID_DATABASE),
    ("bool in row 2", _set(("vectors", 2, "vector"), [False, 0.5, 3.5, 4.5]), ErrorCode.INVALID_DATABASE),
    ("null item", _set(V0 + ("vector",), [1.5, None, 3.5, 4.5]), ErrorCode.INVALID_DATABASE),
    ("nested item", _set(V0 + ("vector",), [1.5, [2.5], 3.5, 4.5]), ErrorCode.INVALID_DATABASE),
    ("map item", _set(V0 + ("vector",), [1.5, {}, 3.5, 4.5]), ErrorCode.INVALID_DATABASE),
    ("beyond float32", _set(V0 + ("vector",), [1.5, 1e300, 3.5, 4.5]), ErrorCode.INVALID_DATABASE),
    ("metadata list", _set(V0 + ("metadata",), [1]), ErrorCode.INVALID_DATABASE),
    ("metadata string", _set(V0 + ("metadata",), "x"), ErrorCode.INVALID_DATABASE),
    ("metadata too big", _set(V0 + ("metadata",), {"t": "x" * 70_000}), ErrorCode.LIMIT_EXCEEDED),
    ("chunk not a map", lambda o: o.clear(), ErrorCode.INVALID_DATABASE),
]


@pytest.mark.parametrize("encoder", ENCODERS.values(), ids=ENCODERS.keys())
@pytest.mark.parametrize(("change", "code"), [f[1:] for f in FAILURES], ids=[f[0] for f in FAILURES])
def test_validation_failures(
    encoder: Callable[[Any], bytes], change: Callable[[Any], None], code: ErrorCode
) -> None:
    obj = chunk_obj()
    change(obj)
    with pytest.raises(FabstirError) as info:
        _decode(encoder(obj))
    assert info.value.code is code
    assert "v0" not in info.value.message  # positions, never stored ids


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
@pytest.mark.parametrize("row", [0, 2])
def test_non_finite_values_in_cbor(value: float, row: int) -> None:
    obj = chunk_obj()
    obj["vectors"][row]["vector"][1] = value
    with pytest.raises(FabstirError) as info:
        _decode(encode_s5(obj))
    assert info.value.code is ErrorCode.INVALID_DATABASE
    assert f"vector {row}" in info.value.message


@pytest.mark.parametrize("text", [b"NaN", b"Infinity", b"1e999"])
def test_non_finite_values_in_json(text: bytes) -> None:
    data = orjson.dumps(chunk_obj()).replace(b"-0.25", text, 1)
    assert _code(data) is ErrorCode.INVALID_DATABASE


def test_metadata_limit_is_a_parameter() -> None:
    data = encode_s5(chunk_obj())
    assert _code(data, max_metadata_bytes=10) is ErrorCode.LIMIT_EXCEEDED
    assert len(_decode(data, max_metadata_bytes=15).metadata) == 3


def test_count_mismatch_with_the_manifest() -> None:
    assert _code(encode_s5(chunk_obj()), expected_count=4) is ErrorCode.INVALID_DATABASE


def test_integers_beyond_64_bits_are_not_numbers() -> None:
    obj = chunk_obj()
    obj["vectors"][1]["vector"] = [1.5, 2**64 - 1, 3.5, 2**70]  # cbor2 writes a bignum tag
    assert _code(cbor2.dumps(obj)) is ErrorCode.INVALID_DATABASE
    obj["vectors"][1]["vector"] = [1.5, 2**64 - 1, 3.5, 4.5]
    assert _decode(cbor2.dumps(obj)).vectors[1][1] == np.float32(2**64)


@pytest.mark.parametrize("cut", [10, 100, -1, -9])
def test_truncated_cbor_chunk(cut: int) -> None:
    data = encode_s5(chunk_obj())
    assert _code(data[:cut]) is ErrorCode.INVALID_DATABASE


def test_truncated_cbor_chunk_with_a_key_is_decryption_failed() -> None:
    data = encode_s5(chunk_obj())[:-3]
    with pytest.raises(FabstirError) as info:
        decode_chunk(open_blob(data, bytes(32)), chunk_id=2, expected_count=3, dimensions=DIM)
    assert info.value.code is ErrorCode.DECRYPTION_FAILED


def test_trailing_bytes_after_a_cbor_chunk() -> None:
    assert _code(encode_s5(chunk_obj()) + b"\x00") is ErrorCode.INVALID_DATABASE


def test_indefinite_length_cbor_goes_through_the_generic_path() -> None:
    body = encode_s5(chunk_obj())
    # replace the top-level map head (a2) with an indefinite map
    data = b"\xbf" + body[1:] + b"\xff"
    assert _decode(data).ids == ["v0", "v1", "v2"]


def test_duplicate_keys_in_cbor_follow_cbor2() -> None:
    """A record with two "vector" entries: the fast path defers to cbor2 (last wins)."""
    record = b"\xa3" + b"".join(
        encode_s5(item) for item in ("id", "a", "vector", [9.5] * DIM, "vector", [1.5] * DIM)
    )
    data = b"\xa2" + encode_s5("chunkId") + b"\x02" + encode_s5("vectors") + b"\x81" + record
    chunk = decode_chunk(open_blob(data, None), chunk_id=2, expected_count=1, dimensions=DIM)
    assert chunk.vectors[0].tolist() == [1.5] * DIM


def test_opened_blob_built_by_hand_is_accepted() -> None:
    chunk = decode_chunk(
        OpenedBlob("json", orjson.dumps(chunk_obj())), chunk_id=2, expected_count=3, dimensions=DIM
    )
    assert chunk.ids == ["v0", "v1", "v2"]


def test_empty_chunk() -> None:
    chunk = _decode(encode_s5({"chunkId": 2, "vectors": []}), expected_count=0)
    assert chunk.vectors.shape == (0, DIM) and chunk.ids == []


def test_decoded_data_stays_out_of_the_repr() -> None:
    chunk = _decode(encode_s5(chunk_obj()))
    assert "v0" not in repr(chunk) and "0.125" not in repr(chunk)


@pytest.mark.parametrize("length_head", [b"\x9a\xff\xff\xff\xff", b"\x9b\x00\x00\x01\x00\x00\x00\x00\x00"])
def test_claimed_sizes_never_size_an_allocation(length_head: bytes) -> None:
    """A vector head claiming billions of items, with the manifest agreeing on
    a huge count, fails cleanly instead of allocating count x length floats."""
    data = b"\xa2" + encode_s5("chunkId") + b"\x02" + encode_s5("vectors") + b"\x9a\x3b\x9a\xca\x00"
    data += b"\xa3" + encode_s5("id") + encode_s5("a") + encode_s5("metadata") + b"\xa0"
    data += encode_s5("vector") + length_head + b"\xfb" + bytes(8)
    with pytest.raises(FabstirError) as info:
        decode_chunk(open_blob(data, None), chunk_id=2, expected_count=10**9, dimensions=None)
    assert info.value.code is ErrorCode.INVALID_DATABASE
