"""The shared cbor-x encoder beyond s5-vectors.json: ``encodeS5``'s preprocessing
(s5.js ``cbor-config.ts`` ``preprocessValue``, cbor-x 1.6's BigInt branch),
pre-encoded items and the Python types that stand for JS values."""

from __future__ import annotations

import enum
import math

import cbor2
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from fabstir_node.s5.cborx import MAX_DEPTH, Encoded, JsMap, encode, encode_head, encode_s5


def test_numbers_above_max_safe_integer_become_bigints_only_where_preprocessing_reaches() -> None:
    big = 2**53 + 2
    as_bigint = b"\x1b" + big.to_bytes(8, "big")
    as_number = b"\xfb" + np.array(float(big), ">f8").tobytes()
    assert encode_s5(big) == as_bigint
    assert encode_s5(float(big)) == as_bigint
    assert encode_s5([[big]]) == b"\x81\x81" + as_bigint  # arrays are walked
    assert encode_s5({"v": big}) == b"\xa1\x61v" + as_number  # object values are not
    assert encode_s5(2**53 - 1) == b"\xfb" + np.array(2.0**53 - 1, ">f8").tobytes()
    huge = 2**70
    assert cbor2.loads(encode_s5(huge)) == huge  # tag 2 bignum beyond 64 bits
    assert encode_s5(huge)[:2] == b"\xc2\x49"
    with pytest.raises(ValueError):
        encode_s5(math.inf)  # BigInt(Infinity) throws in s5.js
    assert encode_s5({"v": math.inf}) == b"\xa1\x61v\xfb\x7f\xf0" + bytes(6)


def test_objects_reached_through_arrays_only_are_sorted() -> None:
    assert encode_s5([[{"b": 1, "a": 2}]]) == b"\x81\x81\xa2\x61a\x02\x61b\x01"
    # below an object, nothing is sorted and plain objects keep the 16-bit head
    assert encode_s5({"x": [{"b": 1, "a": 2}]}) == b"\xa1\x61x\x81\xb9\x00\x02\x61b\x01\x61a\x02"
    # a Map keeps its order wherever it is
    assert encode_s5(JsMap(b=1, a=2)) == b"\xa2\x61b\x01\x61a\x02"


def test_encoded_items_are_copied_as_they_are() -> None:
    item = Encoded(memoryview(b"\x83\x01\x02\x03"))
    assert encode_s5({"v": item, "a": [item]}) == b"\xa2\x61a\x81\x83\x01\x02\x03\x61v\x83\x01\x02\x03"
    assert "bytes" in repr(item) and "\\x83" not in repr(item)


def test_python_stand_ins_for_js_numbers() -> None:
    class Level(enum.IntEnum):
        HIGH = 7

    stand_ins = {"i": np.int64(5), "f": np.float32(0.5), "e": Level.HIGH}
    assert encode(stand_ins) == encode({"i": 5, "f": 0.5, "e": 7})
    assert encode(np.array([1.0, 0.5])) == b"\x82\x01\xfb" + np.array(0.5, ">f8").tobytes()
    with pytest.raises(TypeError):
        encode({1: "x"})  # a plain object's keys are strings
    with pytest.raises(TypeError):
        encode(object())


def test_nesting_is_limited() -> None:
    deep: list = []
    for _ in range(MAX_DEPTH + 1):
        deep = [deep]
    with pytest.raises(ValueError):
        encode(deep)
    with pytest.raises(ValueError):
        encode_s5(deep)


@given(st.integers(0, 2**64 - 1), st.integers(0, 7))
def test_heads_are_minimal_and_valid(n: int, major: int) -> None:
    head = encode_head(major, n)
    assert head[0] >> 5 == major
    width = {24: 1, 25: 2, 26: 4, 27: 8}.get(head[0] & 0x1F, 0)
    assert len(head) == 1 + width
    assert (head[0] & 0x1F if not width else int.from_bytes(head[1:], "big")) == n
    assert width == 0 or n >= (24 if width == 1 else 1 << (4 * width))
