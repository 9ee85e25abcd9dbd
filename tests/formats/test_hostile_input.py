"""Hostile input: only FabstirError may escape the readers, whatever the bytes."""

from __future__ import annotations

from typing import Any

import cbor2
import numpy as np
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fabstir_node.errors import FabstirError
from fabstir_node.formats import chunk as chunk_module
from fabstir_node.formats.blob import OpenedBlob, decode_object, encrypt_blob, open_blob
from fabstir_node.formats.chunk import decode_chunk
from fabstir_node.formats.manifest import check_access, parse_manifest
from fabstir_node.formats.writer import UNDEFINED, build_database
from fabstir_node.s5.cborx import encode_s5

KEY = bytes(range(32))
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=8),
)
json_like = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=5), st.dictionaries(st.text(max_size=6), inner, max_size=5)
    ),
    max_leaves=30,
)
cbor_extra = st.one_of(
    st.binary(max_size=9),
    st.just(UNDEFINED),
    st.builds(cbor2.CBORTag, st.sampled_from([1, 2, 81, 82, 85, 86, 64, 55799]), st.binary(max_size=17)),
    st.builds(cbor2.CBORSimpleValue, st.integers(min_value=0, max_value=19)),
)
cbor_like = st.recursive(
    st.one_of(scalars, cbor_extra),
    lambda inner: st.one_of(
        st.lists(inner, max_size=5),
        st.dictionaries(st.one_of(st.text(max_size=6), st.integers(0, 3)), inner, max_size=5),
    ),
    max_leaves=30,
)


def _only_fabstir_errors(call: Any, *args: Any, **kwargs: Any) -> Any:
    try:
        return call(*args, **kwargs)
    except FabstirError:
        return None


def _read_everything(opened: OpenedBlob) -> None:
    obj = _only_fabstir_errors(decode_object, opened)
    if obj is not None:
        manifest = _only_fabstir_errors(parse_manifest, obj)
        if manifest is not None:
            _only_fabstir_errors(check_access, manifest, "0xabc")
    for dims in (None, 2, 4):
        _only_fabstir_errors(decode_chunk, opened, chunk_id=0, expected_count=2, dimensions=dims)


@FUZZ
@given(st.binary(max_size=200), st.sampled_from([None, KEY]))
def test_random_bytes(data: bytes, key: bytes | None) -> None:
    opened = _only_fabstir_errors(open_blob, data, key)
    if opened is not None:
        _read_everything(opened)


@FUZZ
@given(st.binary(max_size=120), st.sampled_from(["json", "cbor"]))
def test_random_bytes_forced_into_either_parser(data: bytes, fmt: str) -> None:
    _read_everything(OpenedBlob(fmt, data))  # type: ignore[arg-type]


@FUZZ
@given(json_like)
def test_random_json_objects(value: Any) -> None:
    try:
        data = orjson.dumps(value)
    except (TypeError, orjson.JSONEncodeError):
        return
    _read_everything(OpenedBlob("json", data))


@FUZZ
@given(cbor_like)
def test_random_cbor_objects(value: Any) -> None:
    _read_everything(OpenedBlob("cbor", cbor2.dumps(value)))


def _chunk_shaped(draw: Any) -> dict[str, Any]:
    records = draw(
        st.lists(
            st.fixed_dictionaries(
                {"id": st.one_of(st.text(max_size=4), cbor_like), "vector": st.one_of(
                    st.lists(st.one_of(st.floats(width=32), scalars), min_size=0, max_size=5), cbor_like
                )},
                optional={"metadata": cbor_like},
            ),
            max_size=3,
        )
    )
    return {"chunkId": draw(st.one_of(st.just(0), cbor_like)), "vectors": records}


chunk_shaped = st.composite(_chunk_shaped)()
manifest_shaped = st.fixed_dictionaries(
    {
        "name": st.one_of(st.just("db"), cbor_like),
        "owner": st.one_of(st.just("0xABC"), cbor_like),
        "vectorCount": st.one_of(st.integers(-2, 4), cbor_like),
        "chunkCount": st.one_of(st.integers(-1, 3), cbor_like),
        "chunks": st.lists(
            st.dictionaries(
                st.sampled_from(["chunkId", "vectorCount", "cid", "sizeBytes"]),
                st.one_of(st.integers(-1, 3), cbor_like),
            ),
            max_size=3,
        ),
    },
    optional={"dimensions": cbor_like, "deleted": cbor_like, "folderPaths": cbor_like, "created": cbor_like},
)


@FUZZ
@given(st.one_of(chunk_shaped, manifest_shaped), st.sampled_from(["sdk", "cbor2", "json"]))
def test_shaped_objects(value: Any, encoder: str) -> None:
    try:
        if encoder == "sdk":
            data, fmt = encode_s5(value), "cbor"
        elif encoder == "cbor2":
            data, fmt = cbor2.dumps(value), "cbor"
        else:
            data, fmt = orjson.dumps(value), "json"
    except (TypeError, ValueError, orjson.JSONEncodeError):
        return  # not representable in that encoding
    _read_everything(OpenedBlob(fmt, data))  # type: ignore[arg-type]


def _valid_files() -> dict[str, bytes]:
    ids = ["a", "b"]
    vectors = np.array([[0.5, -1.5, 2.25, 0.0], [1e-3, 2.0, -0.125, 7.5]], dtype=np.float32)
    return build_database((ids, vectors, [{"k": "v"}, None]), owner="0xabc", name="db", chunk_size=2)


VALID = _valid_files()
VALID_CHUNK = VALID["home/vector-databases/0xabc/db/chunk-0.json"]
VALID_MANIFEST = VALID["home/vector-databases/0xabc/db/manifest.json"]


@FUZZ
@given(
    st.sampled_from([VALID_CHUNK, VALID_MANIFEST, orjson.dumps(cbor2.loads(VALID_CHUNK))]),
    st.lists(st.tuples(st.integers(min_value=0), st.integers(0, 255)), min_size=1, max_size=4),
    st.one_of(st.none(), st.integers(min_value=0)),
    st.booleans(),
)
def test_mutated_valid_files(
    base: bytes, flips: list[tuple[int, int]], cut: int | None, encrypt: bool
) -> None:
    data = bytearray(base)
    for position, value in flips:
        data[position % len(data)] = value
    if cut is not None:
        data = data[: cut % (len(data) + 1)]
    blob = encrypt_blob(bytes(data), KEY) if encrypt else bytes(data)
    for key in (None, KEY):
        opened = _only_fabstir_errors(open_blob, blob, key)
        if opened is not None:
            _read_everything(opened)


# --- the fast path is the one the SDK's files take -------------------------------------------


@pytest.fixture
def no_generic_cbor(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(opened: OpenedBlob) -> Any:
        raise AssertionError("the CBOR fast path fell back to the generic decoder")

    monkeypatch.setattr(chunk_module, "decode_object", refuse)


@pytest.mark.parametrize("encoding", ["float64", "float32", "typed"])
def test_sdk_cbor_takes_the_fast_path(no_generic_cbor: None, encoding: str) -> None:
    vectors = np.array(
        [[0.5, -1.5, 2.25, 0.0], [1e-3, 2.0, -0.125, 7.5], [0.1, 0.2, 0.3, 0.4]], dtype=np.float32
    )
    metadata = [{"k": UNDEFINED, "n": [1, 2.5]}, None, {}]
    files = build_database(
        (["a", "b", "c"], vectors, metadata),
        owner="0xabc",
        name="db",
        cbor_vectors=encoding,  # type: ignore[arg-type]
    )
    opened = open_blob(files["home/vector-databases/0xabc/db/chunk-0.json"], None)
    chunk = decode_chunk(opened, chunk_id=0, expected_count=3, dimensions=4)
    assert np.array_equal(chunk.vectors, vectors)
    assert chunk.metadata == [b'{"k":null,"n":[1,2.5]}', b"{}", b"{}"]


def test_sdk_records_skip_the_generic_key_loop(
    no_generic_cbor: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Records as s5.js writes them (``b9 00 03`` id, vector, metadata) take the
    exact-layout reader once the dimensions are known."""
    generic: list[int] = []
    record = chunk_module._Walker.record

    def counting(self: Any, pos: int, index: int) -> int:
        generic.append(index)
        return record(self, pos, index)

    monkeypatch.setattr(chunk_module._Walker, "record", counting)
    vectors = np.array([[0.5, -1.5, 2.25], [1e-3, 2.5, -0.125], [0.1, 0.2, 0.3]], dtype=np.float32)
    ids = ["a", "é" * 100, "c"]  # a one-byte and a two-byte text length
    metadata = [{"z": 1, "a": [UNDEFINED]}, None, {"t": "x" * 300}]
    files = build_database((ids, vectors, metadata), owner="0xabc", name="db")
    opened = open_blob(files["home/vector-databases/0xabc/db/chunk-0.json"], None)
    for dimensions, expected in ((3, []), (None, [0])):
        generic.clear()
        chunk = decode_chunk(opened, chunk_id=0, expected_count=3, dimensions=dimensions)
        assert generic == expected  # without the manifest's dimensions the first record sets them
        assert np.array_equal(chunk.vectors, vectors)
        assert chunk.ids == ids
        assert chunk.metadata == [b'{"z":1,"a":[null]}', b"{}", orjson.dumps({"t": "x" * 300})]
