"""Round trips of every encoder/decoder pair, and hostile input: only our error types may escape."""

from __future__ import annotations

import cbor2
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fabstir_node.errors import ErrorCode, FabstirError
from fabstir_node.s5 import cborx, multibase
from fabstir_node.s5.cid import BlobId, verify_blob
from fabstir_node.s5.content import decode_content, encode_content
from fabstir_node.s5.dirv1 import DirRef, DirV1, FileRef, decode_dirv1, encode_dirv1, file_encryption_extra
from fabstir_node.s5.encryption import decrypt_chunked, decrypt_mutable, encrypt_chunked, encrypt_mutable
from fabstir_node.s5.hamt import decode_hamt
from fabstir_node.s5.identity import DirectoryKeys, S5Identity
from fabstir_node.s5.registry import decode_entry, entry_from_json, latest, sign_entry
from fabstir_node.s5.seed import entropy_to_phrase, phrase_to_entropy

FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
keys32 = st.binary(min_size=32, max_size=32)
names = st.text(min_size=1, max_size=12).filter(lambda s: "/" not in s)

# --- round trips ----------------------------------------------------------------------


@FAST
@given(st.binary(max_size=80), st.sampled_from(multibase.BASES))
def test_multibase_round_trip(data: bytes, base: str) -> None:
    assert multibase.decode(multibase.encode(data, base)) == data


@FAST
@given(keys32, st.integers(0, 2**64 - 1), st.sampled_from(multibase.BASES))
def test_blob_id_round_trip(digest: bytes, size: int, base: str) -> None:
    blob_id = BlobId(digest, size)
    assert BlobId.parse(blob_id.to_string(base)) == blob_id
    assert BlobId.from_bytes(blob_id.to_legacy_bytes()) == blob_id


@FAST
@given(st.binary(max_size=300))
def test_verify_blob_accepts_exactly_the_named_bytes(data: bytes) -> None:
    verify_blob(BlobId.for_data(data), data)
    with pytest.raises(FabstirError) as info:
        verify_blob(BlobId.for_data(data), data + b"\0")
    assert info.value.code is ErrorCode.S5_HASH_MISMATCH


@FAST
@given(keys32, st.integers(0, 2**64 - 1), st.binary(max_size=64))
def test_registry_round_trip_and_tamper(seed: bytes, revision: int, data: bytes) -> None:
    entry = sign_entry(seed, revision, data)
    assert decode_entry(entry.to_bytes()).verify() == entry
    assert entry_from_json(entry.to_json()) == entry
    tampered = decode_entry(entry.to_bytes()[:-1] + bytes([entry.signature[-1] ^ 1]))
    assert not tampered.is_valid()
    older = sign_entry(seed, max(revision - 1, 0), b"old")
    assert latest([older, tampered, entry]) == entry if revision else True


@FAST
@given(st.binary(min_size=16, max_size=16))
def test_seed_phrase_round_trip(entropy: bytes) -> None:
    phrase = entropy_to_phrase(entropy)
    assert phrase_to_entropy(phrase.upper()) == entropy
    assert repr(entropy.hex()) not in repr(S5Identity(entropy))


@FAST
@given(keys32, st.binary(max_size=9000), st.binary(min_size=24, max_size=24))
def test_mutable_encryption_round_trip(key: bytes, payload: bytes, nonce: bytes) -> None:
    stored = encrypt_mutable(key, payload, nonce)
    assert decrypt_mutable(key, stored) == payload
    with pytest.raises(FabstirError) as info:
        decrypt_mutable(bytes(32) if key != bytes(32) else b"\1" * 32, stored)
    assert info.value.code is ErrorCode.DECRYPTION_FAILED


@settings(max_examples=10, deadline=None)
@given(keys32, st.integers(0, 600_000))
def test_chunked_encryption_round_trip(key: bytes, size: int) -> None:
    plaintext = bytes(i % 253 for i in range(size))
    ciphertext = encrypt_chunked(key, plaintext)
    assert decrypt_chunked(key, ciphertext, size) == plaintext
    if ciphertext:
        flipped = bytearray(ciphertext)
        flipped[len(flipped) // 2] ^= 0x80
        with pytest.raises(FabstirError):
            decrypt_chunked(key, bytes(flipped), size)


file_refs = st.builds(
    FileRef,
    hash=keys32,
    size=st.integers(0, 2**64 - 1),
    media_type=st.none() | st.text(max_size=20),
    timestamp=st.none() | st.integers(0, 2**40),
    timestamp_subsec_nanos=st.none() | st.integers(0, 999_999_999),
    locations=st.none() | st.lists(st.tuples(st.just(1), st.text(max_size=10)), max_size=2).map(tuple),
    extra=st.none() | st.builds(file_encryption_extra, keys32, keys32),
)
dir_refs = st.builds(
    DirRef,
    link=st.tuples(st.sampled_from([b"\x1e", b"\xed"]), keys32).map(lambda t: t[0] + t[1]),
    ts_seconds=st.none() | st.integers(0, 2**32),
    ts_nanos=st.none() | st.integers(0, 999_999_999),
)


@FAST
@given(st.dictionaries(names, file_refs, max_size=5), st.dictionaries(names, dir_refs, max_size=5))
def test_dirv1_round_trip(files: dict, dirs: dict) -> None:
    directory = DirV1({}, dirs, files)
    blob = encode_dirv1(directory)
    decoded = decode_dirv1(blob)
    assert decoded == directory
    assert encode_dirv1(decoded) == blob
    for name, ref in files.items():
        if ref.extra:
            assert decoded.files[name].encryption.key == ref.encryption.key


json_like = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**31), 2**32 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=20,
)


@FAST
@given(st.dictionaries(st.text(max_size=6), json_like, max_size=5))
def test_fs_put_get_round_trip(value: dict) -> None:
    data, media = encode_content(value, "manifest.json")
    assert media == "application/json"
    assert decode_content(data, media) == value


def test_fs_get_fallbacks() -> None:
    assert decode_content(b'{"a": [1, 2]}', "application/json") == {"a": [1, 2]}
    assert decode_content("héllo\n".encode(), "text/plain") == "héllo\n"
    assert decode_content(b"\xff\xfe\x00", "text/plain") == b"\xff\xfe\x00"
    assert decode_content(b"a\x01b", None) == b"a\x01b"  # control characters: binary
    assert decode_content(cborx.encode_s5({"a": 1}), "application/octet-stream") == cborx.encode_s5({"a": 1})
    assert decode_content(b"5", "text/plain") == -22  # s5.js: CBOR is tried first, and 0x35 is CBOR -22


def test_secrets_stay_out_of_reprs() -> None:
    keys = S5Identity(b"\x07" * 16).root()
    assert keys.write_key.hex() not in repr(keys) and keys.encryption_key.hex() not in repr(keys)
    ref = FileRef(b"\0" * 32, 1, extra=file_encryption_extra(b"\x42" * 32, b"\0" * 32))
    assert "66, 66" not in repr(ref) and "4242" not in repr(ref.encryption)


# --- hostile input ----------------------------------------------------------------------

cbor_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=8)
    | st.binary(max_size=40),
    lambda inner: st.lists(inner, max_size=4)
    | st.dictionaries(st.integers(0, 30) | st.text(max_size=4), inner, max_size=4),
    max_leaves=25,
)


def _dirv1_shaped(draw_values: object) -> bytes:
    return b"\x5f\x5d" + cbor2.dumps(draw_values)


def _only_ours(fn, *args, **kwargs) -> None:
    try:
        fn(*args, **kwargs)
    except FabstirError:
        pass


@FAST
@given(st.text(max_size=80))
def test_hostile_text(text: str) -> None:
    _only_ours(multibase.decode, text)
    _only_ours(BlobId.parse, text)
    _only_ours(phrase_to_entropy, text)
    _only_ours(DirectoryKeys.from_public_key, text.encode()[:40])


@FAST
@given(st.binary(max_size=200))
def test_hostile_bytes(data: bytes) -> None:
    _only_ours(BlobId.from_bytes, data)
    _only_ours(decode_entry, data)
    _only_ours(decode_dirv1, data)
    _only_ours(decode_hamt, data, root=True)
    _only_ours(decode_hamt, data, root=False)
    _only_ours(cborx.decode, data, code=ErrorCode.INVALID_DATABASE)
    _only_ours(decrypt_mutable, b"\1" * 32, b"\x8d\x01" + data)
    _only_ours(decrypt_chunked, b"\1" * 32, data, len(data))
    decode_content(data, None)  # never raises


@FAST
@given(
    st.text(max_size=8),
    cbor_values,
    st.dictionaries(st.text(max_size=6), cbor_values, max_size=3),
    st.dictionaries(
        st.text(max_size=6), st.dictionaries(st.integers(0, 25), cbor_values, max_size=6), max_size=3
    ),
)
def test_hostile_directories(magic: str, header: object, dirs: dict, files: dict) -> None:
    for shape in (["S5.pro", header, dirs, files], ["S5.pro", {}, files, dirs], [magic, {}, {}, {}]):
        try:
            directory = decode_dirv1(_dirv1_shaped(shape))
        except FabstirError:
            continue
        for ref in directory.files.values():
            _only_ours(lambda r=ref: r.encryption)
        _only_ours(lambda d=directory: d.sharding)


@FAST
@given(cbor_values, cbor_values)
def test_hostile_hamt_and_entries(node: object, other: object) -> None:
    leaf = {"type": "leaf", "entries": [["f:x", other]]}
    blob = cbor2.dumps({"version": 1, "root": {"children": [node, leaf]}})
    _only_ours(decode_hamt, blob, root=True)
    _only_ours(entry_from_json, {"pk": node, "revision": other, "data": "", "signature": node})


def test_cbor_reader_refuses_tricks() -> None:
    for hostile in (
        b"\x81" * 5000 + b"\x00",  # deep nesting
        bytes.fromhex("d81c81d81d00"),  # shared reference (a cycle)
        bytes.fromhex("c074323032302d30312d30315430303a30303a30305a"),  # a datetime tag
        b"\x00\x00",  # trailing bytes
        b"\x5b" + b"\xff" * 8,  # a 2**64-byte string
    ):
        with pytest.raises(FabstirError) as info:
            cborx.decode(hostile, code=ErrorCode.INVALID_DATABASE)
        assert info.value.code is ErrorCode.INVALID_DATABASE
