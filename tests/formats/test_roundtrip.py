"""writer → open_blob → parse_manifest / decode_chunk, in every encoding."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import cbor2
import numpy as np
import orjson
import pytest

from fabstir_node.formats.blob import decode_object, open_blob
from fabstir_node.formats.chunk import decode_chunk
from fabstir_node.formats.manifest import check_access, parse_manifest
from fabstir_node.formats.paths import chunk_path
from fabstir_node.formats.synthetic import synthetic_records
from fabstir_node.formats.writer import Record, build_database
from fabstir_node.s5.cborx import encode_s5

OWNER = "0xAbC0000000000000000000000000000000000001"
KEY = bytes(range(32))
MANIFEST = f"home/vector-databases/{OWNER}/db/manifest.json"


@pytest.fixture(scope="module")
def data() -> tuple[list[str], np.ndarray, list[dict[str, Any]]]:
    return synthetic_records(250, 24, seed=3)


def _load(files: dict[str, bytes], key: bytes | None) -> tuple[Any, list[Any]]:
    manifest = parse_manifest(decode_object(open_blob(files[MANIFEST], key)))
    check_access(manifest, OWNER.lower())
    chunks = []
    matrix = np.zeros((manifest.vector_count, manifest.dimensions), dtype=np.float32)
    row = 0
    for ref in manifest.chunks:
        opened = open_blob(files[chunk_path(MANIFEST, ref.chunk_id)], key)
        out = matrix[row : row + ref.vector_count]
        chunk = decode_chunk(
            opened,
            chunk_id=ref.chunk_id,
            expected_count=ref.vector_count,
            dimensions=manifest.dimensions,
            out=out,
        )
        assert np.shares_memory(chunk.vectors, matrix)
        chunks.append(chunk)
        row += ref.vector_count
    return manifest, chunks


@pytest.mark.parametrize("fmt", ["cbor", "json"])
@pytest.mark.parametrize("key", [None, KEY])
def test_round_trip_is_exact(data: Any, fmt: str, key: bytes | None) -> None:
    ids, vectors, metadata = data
    files = build_database(
        data, owner=OWNER, name="db", format=fmt, key=key, chunk_size=100, now_ms=1764000000000
    )
    assert sorted(files) == sorted([MANIFEST] + [chunk_path(MANIFEST, i) for i in range(3)])
    manifest, chunks = _load(files, key)
    assert (manifest.vector_count, manifest.chunk_count, manifest.dimensions) == (250, 3, 24)
    assert [c.vector_count for c in manifest.chunks] == [100, 100, 50]
    assert manifest.chunks[2].cid == chunk_path(MANIFEST, 2)
    assert manifest.folder_paths == tuple(sorted({m["folderPath"] for m in metadata}))
    got = np.concatenate([c.vectors for c in chunks])
    assert got.dtype == np.float32
    assert np.array_equal(got, vectors)  # bit-exact float32
    assert [i for c in chunks for i in c.ids] == ids
    assert [orjson.loads(m) for c in chunks for m in c.metadata] == metadata
    assert all(c.dimensions == 24 for c in chunks)


def test_digest_is_the_same_for_every_encoding(data: Any) -> None:
    digests = set()
    for fmt in ("cbor", "json"):
        for key in (None, KEY):
            files = build_database(
                data, owner=OWNER, name="db", format=fmt, key=key, now_ms=5_000_000_000_000
            )
            digests.add(parse_manifest(decode_object(open_blob(files[MANIFEST], key))).digest)
    assert len(digests) == 1


def test_bridge_json_of_sdk_cbor_decodes_the_same(data: Any) -> None:
    """The S5 bridge returns a CBOR file re-serialised as JSON text."""
    files = build_database(data, owner=OWNER, name="db", format="cbor", chunk_size=1000)
    cbor_bytes = files[chunk_path(MANIFEST, 0)]
    bridge = orjson.dumps(decode_object(open_blob(cbor_bytes, None)))
    a = decode_chunk(open_blob(cbor_bytes, None), chunk_id=0, expected_count=250, dimensions=24)
    b = decode_chunk(open_blob(bridge, None), chunk_id=0, expected_count=250, dimensions=24)
    assert np.array_equal(a.vectors, b.vectors)
    assert a.ids == b.ids
    assert [orjson.loads(m) for m in a.metadata] == [orjson.loads(m) for m in b.metadata]


def test_sdk_cbor_layout(data: Any) -> None:
    """What s5.js ``fs.put`` writes for S5VectorStore's objects: the top-level
    map sorted, nested objects in insertion order behind ``b9 00 NN``, float64
    items, an undefined description."""
    files = build_database(data, owner=OWNER, name="db", format="cbor", chunk_size=1000)
    manifest_bytes = files[MANIFEST]
    manifest_raw = cbor2.loads(manifest_bytes)
    assert manifest_raw["description"] is cbor2.undefined
    assert list(manifest_raw) == sorted(manifest_raw, key=str.lower)
    assert manifest_bytes[0] == 0xA0 | len(manifest_raw)  # the top level is a Map: minimal head
    entry = b"\xb9\x00\x05\x67chunkId\x00\x63cid"  # the SDK's _saveChunk order
    assert manifest_bytes.index(b"\x66chunks\x81" + entry) > 0
    assert list(manifest_raw["chunks"][0]) == ["chunkId", "cid", "vectorCount", "sizeBytes", "updatedAt"]
    chunk_bytes = files[chunk_path(MANIFEST, 0)]
    assert chunk_bytes.startswith(b"\xa2\x67chunkId\x00\x67vectors\x98\xfa\xb9\x00\x03\x62id")
    first = cbor2.loads(chunk_bytes)["vectors"][0]
    assert list(first) == ["id", "vector", "metadata"]  # the SDK's addVector order
    assert list(first["metadata"]) == list(data[2][0])  # metadata keeps its own order
    # each component is a float64 item: 0xfb + 8 bytes big-endian
    vector_at = chunk_bytes.index(b"\x66vector") + 7
    assert chunk_bytes[vector_at : vector_at + 2] == b"\x98\x18"  # array(24)
    assert chunk_bytes[vector_at + 2 : vector_at + 2 + 9 * 24 : 9] == b"\xfb" * 24
    metadata_at = vector_at + 2 + 9 * 24
    assert chunk_bytes[metadata_at : metadata_at + 12] == b"\x68metadata\xb9\x00" + bytes([len(data[2][0])])


S5_CBOR_VECTORS = {
    item["name"]: item["outputs"]["cbor_hex"]
    for item in orjson.loads((Path(__file__).parent.parent / "data" / "s5-vectors.json").read_bytes())[
        "vectors"
    ]["cbor"]
}


@pytest.mark.parametrize(
    ("encoding", "name"), [("float64", "chunk_minimal"), ("typed", "chunk_float32array")]
)
def test_chunk_bytes_are_what_s5js_wrote(encoding: str, name: str) -> None:
    """``{chunkId:0, vectors:[{id:'a', vector:[0.5,0.25,-1], metadata:{t:'x'}}]}``
    through s5.js ``encodeS5`` (s5-vectors.json), with a number[] and a Float32Array."""
    files = build_database(
        (["a"], np.array([[0.5, 0.25, -1]], dtype=np.float32), [{"t": "x"}]),
        owner=OWNER,
        name="db",
        cbor_vectors=encoding,  # type: ignore[arg-type]
    )
    assert files[chunk_path(MANIFEST, 0)].hex() == S5_CBOR_VECTORS[name]


def test_manifest_chunk_entries_are_what_s5js_wrote() -> None:
    """The chunk entry of the SDK-shaped manifest in s5-vectors.json, up to its timestamp."""
    owner = "0xabc0000000000000000000000000000000000000"
    expected = bytes.fromhex(S5_CBOR_VECTORS["manifest_sdk_shape"])
    entry = expected[expected.index(b"\x66chunks") : expected.index(b"updatedAt")]
    files = build_database(
        (["a"], np.zeros((1, 3), np.float32), [None]), owner=owner, name="docs", description="test db"
    )
    manifest = files[f"home/vector-databases/{owner}/docs/manifest.json"]
    assert entry in manifest
    assert b"\x6bdescription\x67test db" in manifest


def test_json_manifest_drops_undefined_description(data: Any) -> None:
    files = build_database(data, owner=OWNER, name="db", format="json")
    assert "description" not in orjson.loads(files[MANIFEST])
    files = build_database(data, owner=OWNER, name="db", format="json", description="mine")
    assert orjson.loads(files[MANIFEST])["description"] == "mine"


@pytest.mark.parametrize("encoding", ["float32", "typed"])
def test_other_cbor_vector_encodings(data: Any, encoding: str) -> None:
    files = build_database(
        data, owner=OWNER, name="db", chunk_size=1000, cbor_vectors=encoding  # type: ignore[arg-type]
    )
    raw = cbor2.loads(files[chunk_path(MANIFEST, 0)])["vectors"][0]["vector"]
    if encoding == "typed":
        assert isinstance(raw, cbor2.CBORTag) and raw.tag == 85
    opened = open_blob(files[chunk_path(MANIFEST, 0)], None)
    chunk = decode_chunk(opened, chunk_id=0, expected_count=250, dimensions=24)
    assert np.array_equal(chunk.vectors, data[1])


def test_integral_components_are_written_as_integers_like_cbor_x() -> None:
    vectors = np.array([[0.0, 1.0, -2.0, 0.5], [-0.0, 3e9, 5e9, -0.25]], dtype=np.float32)
    records = [Record(id="a", vector=vectors[0]), Record(id="b", vector=vectors[1], metadata={"k": 1})]
    files = build_database(records, owner=OWNER, name="db")
    raw = cbor2.loads(files[chunk_path(MANIFEST, 0)])
    assert raw["vectors"][0]["vector"] == [0, 1, -2, 0.5]
    assert [type(x) for x in raw["vectors"][0]["vector"]] == [int, int, int, float]
    assert [type(x) for x in raw["vectors"][1]["vector"]] == [int, int, float, float]
    assert raw["vectors"][0]["metadata"] == {}
    opened = open_blob(files[chunk_path(MANIFEST, 0)], None)
    chunk = decode_chunk(opened, chunk_id=0, expected_count=2, dimensions=4)
    assert np.array_equal(chunk.vectors, np.abs(vectors) * np.sign(vectors) + 0.0)
    assert chunk.metadata == [b"{}", b'{"k":1}']


def test_encode_s5_numbers_follow_js_rules() -> None:
    assert encode_s5(5) == b"\x05"
    assert encode_s5(-1) == b"\x20"
    assert encode_s5(2**32 - 1) == b"\x1a\xff\xff\xff\xff"
    assert encode_s5(2**32) == b"\xfb" + np.array(2.0**32, ">f8").tobytes()
    assert encode_s5(-(2**31) - 1)[:1] == b"\xfb"
    assert encode_s5(2**53 + 2) == b"\x1b" + (2**53 + 2).to_bytes(8, "big")
    assert encode_s5(1.0) == b"\x01"
    assert encode_s5(-0.0) == b"\x00"
    assert encode_s5(0.1) == b"\xfb" + np.array(0.1, ">f8").tobytes()
    assert encode_s5(None) == b"\xf6"
    assert encode_s5([True, False]) == b"\x82\xf5\xf4"


def test_empty_database_has_no_chunks_and_no_dimensions() -> None:
    files = build_database([], owner=OWNER, name="db")
    assert list(files) == [MANIFEST]
    manifest = parse_manifest(decode_object(open_blob(files[MANIFEST], None)))
    assert (manifest.vector_count, manifest.dimensions, manifest.chunks) == (0, None, ())


def test_synthetic_data_is_clustered_deterministic_and_normalised() -> None:
    ids, vectors, metadata = synthetic_records(2000, 64, seed=7)
    again = synthetic_records(2000, 64, seed=7)
    other = synthetic_records(2000, 64, seed=8)
    assert np.array_equal(vectors, again[1]) and ids == again[0] and metadata == again[2]
    assert not np.array_equal(vectors, other[1])
    assert vectors.dtype == np.float32 and vectors.shape == (2000, 64)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-5)
    sims = vectors[:200] @ vectors.T
    sims[np.arange(200), np.arange(200)] = -1
    top1 = sims.max(axis=1).mean()
    assert 0.7 < top1 < 0.95  # neighbours exist, but not duplicates
    assert abs(float((vectors[:100] @ vectors[1900:].T).mean())) < 0.2  # unrelated topics
    assert len(set(ids)) == 2000
    sizes = [len(orjson.dumps(m)) for m in metadata]
    assert 80 < sum(sizes) / len(sizes) < 200
    assert set(metadata[0]) == {"source", "folderPath", "chunkIndex", "tag", "title"}
    assert len({m["folderPath"] for m in metadata}) > 1


def test_synthetic_long_texts() -> None:
    _, _, metadata = synthetic_records(10, 8, seed=1, text_chars=500)
    assert all(len(m["text"]) == 500 for m in metadata)
