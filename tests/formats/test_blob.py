"""Opening stored files: AES-GCM envelope, JSON, CBOR, and the failures."""

from __future__ import annotations

from typing import Any

import cbor2
import orjson
import pytest

from fabstir_node.errors import ErrorCode, FabstirError
from fabstir_node.formats.blob import (
    MAX_NESTING,
    OpenedBlob,
    decode_object,
    detect_format,
    encrypt_blob,
    open_blob,
)

KEY = bytes(range(32))
OTHER_KEY = bytes(range(1, 33))


def _code(call: Any, *args: Any) -> ErrorCode:
    with pytest.raises(FabstirError) as info:
        call(*args)
    return info.value.code


def test_webcrypto_vector_decrypts(test_vectors: dict[str, Any]) -> None:
    vector = test_vectors["aes_gcm_webcrypto_blob"]
    key = bytes.fromhex(vector["key"])
    blob = bytes.fromhex(vector["blob"])
    opened = open_blob(blob, key)
    assert opened == OpenedBlob("json", vector["plaintext_utf8"].encode(), encrypted=True)
    assert decode_object(opened)["vectors"][0]["vector"] == [0.5, 0.25]


def test_encrypt_blob_reproduces_the_webcrypto_vector(test_vectors: dict[str, Any]) -> None:
    vector = test_vectors["aes_gcm_webcrypto_blob"]
    blob = encrypt_blob(
        vector["plaintext_utf8"].encode(), bytes.fromhex(vector["key"]), bytes.fromhex(vector["nonce"])
    )
    assert blob.hex() == vector["blob"]


def test_encrypt_blob_uses_a_fresh_nonce() -> None:
    a, b = encrypt_blob(b"{}", KEY), encrypt_blob(b"{}", KEY)
    assert a[:12] != b[:12]
    assert open_blob(a, KEY).plaintext == open_blob(b, KEY).plaintext == b"{}"


def test_encrypted_cbor_is_accepted() -> None:
    blob = encrypt_blob(cbor2.dumps({"a": 1}), KEY)
    opened = open_blob(blob, KEY)
    assert (opened.format, opened.encrypted) == ("cbor", True)
    assert decode_object(opened) == {"a": 1}


@pytest.mark.parametrize("nonce", [bytes(12), b"{}" + bytes(10), b'{"' + bytes(10), b"\xa1\x61a" + bytes(9)])
def test_wrong_key_is_decryption_failed(nonce: bytes) -> None:
    """Even when the envelope's nonce happens to look like JSON or CBOR."""
    blob = encrypt_blob(b'{"a": 1}', KEY, nonce=nonce)
    with pytest.raises(FabstirError) as info:
        decode_object(open_blob(blob, OTHER_KEY))
    assert info.value.code is ErrorCode.DECRYPTION_FAILED


def test_corrupt_plaintext_with_a_key_is_decryption_failed_and_without_is_invalid() -> None:
    corrupt = cbor2.dumps({"a": [1, 2, 3]})[:-1]
    assert _code(decode_object, open_blob(corrupt, KEY)) is ErrorCode.DECRYPTION_FAILED
    assert _code(decode_object, open_blob(corrupt, None)) is ErrorCode.INVALID_DATABASE


def test_random_envelopes_are_rarely_taken_for_plaintext() -> None:
    """Without a key an envelope should read as "encrypted", not as a broken file."""
    plausible = sum(detect_format(encrypt_blob(b'{"a": 1}', KEY)) is not None for _ in range(2000))
    assert plausible <= 5  # about 1 in 5000 expected; a bare map-head test gives ~230


def test_tampered_envelope_is_decryption_failed() -> None:
    blob = bytearray(encrypt_blob(b'{"a": 1}', KEY))
    blob[14] ^= 1
    assert _code(open_blob, bytes(blob), KEY) is ErrorCode.DECRYPTION_FAILED


def test_encrypted_database_without_a_key_asks_for_one() -> None:
    # (a nonce starting 0x01 is neither "{" nor a CBOR map head)
    blob = encrypt_blob(b'{"a": 1}', KEY, nonce=b"\x01" * 12)
    with pytest.raises(FabstirError) as info:
        open_blob(blob, None)
    assert info.value.code is ErrorCode.INVALID_SESSION_KEY
    assert "no session key" in info.value.message


def test_decrypted_garbage_is_invalid_database() -> None:
    blob = encrypt_blob(b"not json", KEY)
    assert _code(open_blob, blob, KEY) is ErrorCode.INVALID_DATABASE


@pytest.mark.parametrize("key", [b"", b"short", bytes(31), bytes(33), "0" * 64])
def test_bad_key_sizes_are_refused(key: Any) -> None:
    assert _code(open_blob, b"{}", key) is ErrorCode.INVALID_SESSION_KEY


@pytest.mark.parametrize("key", [None, KEY])
def test_plaintext_json_opens_with_or_without_a_key(key: bytes | None) -> None:
    opened = open_blob(b'  \n{"a": [1, 2.5]}', key)
    assert (opened.format, opened.encrypted) == ("json", False)
    assert decode_object(opened) == {"a": [1, 2.5]}


@pytest.mark.parametrize("key", [None, KEY])
def test_plaintext_cbor_opens_with_or_without_a_key(key: bytes | None) -> None:
    opened = open_blob(cbor2.dumps({"a": [1, 2.5]}), key)
    assert (opened.format, opened.encrypted) == ("cbor", False)
    assert decode_object(opened) == {"a": [1, 2.5]}


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"{}", "json"),
        (b" \t\r\n{}", "json"),
        (b"[1]", None),
        (b'{ "a": 1}', "json"),
        (b"{x", None),
        (b"\xa0", "cbor"),
        (b"\xa1\x67chunkId\x00", "cbor"),
        (b"\xb9\x00\x01\x61a\x01", "cbor"),
        (b"\xbf\xff", "cbor"),  # indefinite-length map, empty
        (b"\xbf\x61a\x01\xff", "cbor"),
        (b"\xd9\xd9\xf7\xa0", "cbor"),  # self-describe tag
        (b"\xc1\xd8\x20\xa1\x61a\x01", "cbor"),  # tags before the map
        (b"\xa0\x00", None),  # an empty map is the whole file
        (b"\xb9\x00\x01", None),  # entries missing
        (b"\xba\xff\xff\xff\xff\x61a\x01", None),  # more entries than bytes
        (b"\xa1\x41a\x01", None),  # byte-string key
        (b"\xa1\x01\x01", None),  # integer key
        (b"\xa1\x61\x07\x01", None),  # control character key
        (b"\xa1\x62\xff\xfe\x01", None),  # key not UTF-8
        (b"\xa1\x7f", None),
        (b"\xd8", None),  # truncated tag
        (b"\x80", None),  # an array, not a map
        (b"\xbc", None),  # reserved
        (b"", None),
        (b"\xef\xbb\xbf{}", None),
    ],
)
def test_detect_format(data: bytes, expected: str | None) -> None:
    assert detect_format(data) == expected


def test_cbor_undefined_becomes_none() -> None:
    opened = open_blob(b"\xa1\x64desc\xf7", None)
    assert decode_object(opened) == {"desc": None}


@pytest.mark.parametrize(
    ("tag", "payload", "expected"),
    [
        (85, b"\x00\x00\x80\x3f\x00\x00\x00\xbf", [1.0, -0.5]),  # float32 LE
        (81, b"\x3f\x80\x00\x00\xbf\x00\x00\x00", [1.0, -0.5]),  # float32 BE
        (86, b"\x00\x00\x00\x00\x00\x00\xf0\x3f", [1.0]),  # float64 LE
        (82, b"\x3f\xf0\x00\x00\x00\x00\x00\x00", [1.0]),  # float64 BE
    ],
)
def test_typed_float_arrays_become_lists(tag: int, payload: bytes, expected: list[float]) -> None:
    opened = open_blob(cbor2.dumps({"v": cbor2.CBORTag(tag, payload)}), None)
    assert decode_object(opened) == {"v": expected}


@pytest.mark.parametrize(
    "value",
    [
        {"v": cbor2.CBORTag(85, b"\x00\x00\x80")},  # not a multiple of 4
        {"v": cbor2.CBORTag(85, "text")},
        {"v": cbor2.CBORTag(64, b"\x01")},  # uint8 typed array
        {"v": cbor2.CBORTag(999, 1)},
        {"v": b"bytes"},
        {"a": 1, 1: "non-string key"},
        {"v": 2**70},
        {"v": cbor2.CBORSimpleValue(16)},
    ],
)
def test_cbor_values_without_json_meaning_are_invalid(value: Any) -> None:
    opened = open_blob(cbor2.dumps(value), None)
    assert _code(decode_object, opened) is ErrorCode.INVALID_DATABASE


def test_cbor_datetime_tag_is_refused() -> None:
    opened = open_blob(b"\xa1\x61t\xc1\x1a\x00\x00\x00\x01", None)  # tag 1 (epoch)
    assert _code(decode_object, opened) is ErrorCode.INVALID_DATABASE


def test_cbor_trailing_bytes_are_refused() -> None:
    opened = open_blob(cbor2.dumps({"a": 1}) + b"\x00", None)
    assert _code(decode_object, opened) is ErrorCode.INVALID_DATABASE


@pytest.mark.parametrize("data", [b"\xa1\x61a", b"\xa1\x61a\x9a\xff\xff\xff\xff", b"\xbf\x61a\x01"])
def test_truncated_cbor_is_invalid(data: bytes) -> None:
    assert _code(decode_object, open_blob(data, None)) is ErrorCode.INVALID_DATABASE


@pytest.mark.parametrize("data", [b'{"a"', b'{"a": NaN}', b'{"a": 1} x', b'{"a": "\xff"}'])
def test_bad_json_is_invalid(data: bytes) -> None:
    assert _code(decode_object, open_blob(data, None)) is ErrorCode.INVALID_DATABASE


def test_deep_cbor_nesting_is_refused_not_a_recursion_error() -> None:
    data = b"\xa1\x61a" + b"\x81" * 100_000 + b"\x00"
    assert _code(decode_object, open_blob(data, None)) is ErrorCode.INVALID_DATABASE


def test_deep_json_nesting_is_refused_not_a_recursion_error() -> None:
    data = b'{"a":' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    assert _code(decode_object, open_blob(data, None)) is ErrorCode.INVALID_DATABASE


def test_moderate_nesting_is_fine() -> None:
    depth = MAX_NESTING - 2
    value: Any = 1
    for _ in range(depth):
        value = [value]
    assert decode_object(open_blob(cbor2.dumps({"a": value}), None)) == {"a": value}


def test_plaintext_stays_out_of_the_repr() -> None:
    opened = open_blob(orjson.dumps({"secret": "hunter2"}), None)
    assert "hunter2" not in repr(opened)
