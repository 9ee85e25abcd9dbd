"""Build the stored files of a vector database (the inverse of the readers).

Used by ``fabstir-node publish``, by benchmarks and by tests.  Pure: it maps
relative paths to bytes and leaves storing them to the caller.

CBOR output is byte for byte what the SDK stores: each file is the object
S5VectorStore hands to s5.js ``fs.put``, encoded by
:func:`fabstir_node.s5.cborx.encode_s5` (the encoder checked against
s5.js's own output).  So the top-level object is a map with its keys in
``localeCompare`` order, nested objects (a chunk's records, their metadata,
the manifest's chunk entries) keep insertion order behind a ``b9 00 NN``
header, numbers follow cbor-x's JS rules (a vector mixes ``fb`` items and
integers), and the manifest's ``description`` is ``undefined`` (``f7``) when
there is none.  Records are ``{id, vector, metadata}`` in that order, as the
SDK's ``addVector`` builds them.  Vectors are encoded with numpy, not per
float, and passed to the encoder as :class:`~fabstir_node.s5.cborx.Encoded`.

JSON output is what ``JSON.stringify`` gives for the same objects (undefined
fields dropped).  Either can be wrapped in AES-256-GCM with a session key.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal

import attrs
import numpy as np
import orjson

from ..s5.cborx import UNDEFINED, Encoded, encode_head, encode_s5
from .blob import encrypt_blob
from .paths import database_dir

__all__ = ["UNDEFINED", "Record", "build_database"]

VectorEncoding = Literal["float64", "float32", "typed"]


@attrs.frozen
class Record:
    """One vector to store."""

    id: str
    vector: Sequence[float] | np.ndarray = attrs.field(repr=False)
    metadata: Mapping[str, Any] | None = attrs.field(default=None, repr=False)


# --- vectors, encoded with numpy ---------------------------------------------------


class _VectorRows:
    """The CBOR item of each row of a float32 matrix, built with numpy.

    ``"float64"`` is what cbor-x writes for a JS ``number[]``: ``fb`` + 8 bytes
    per item -- except that a number which is a 32-bit integer becomes a CBOR
    integer, so rows holding one are left to the encoder as Python floats.
    ``"float32"`` (``fa`` items) and ``"typed"`` (RFC 8746 tag 85, what cbor-x
    writes for a ``Float32Array``) exist for tests.
    """

    def __init__(self, vectors: np.ndarray, encoding: VectorEncoding) -> None:
        n, d = vectors.shape
        self.vectors = vectors
        self.special = np.zeros(n, dtype=bool)
        if encoding == "typed":
            head = b"\xd8\x55" + encode_head(2, 4 * d)  # tag 85: float32 little-endian
            tag, items = None, vectors.astype("<f4", copy=False)
        elif encoding == "float64":
            head = encode_head(4, d)
            tag, items = 0xFB, vectors.astype(">f8")
            # cbor-x writes a number that is a 32-bit integer as an integer.
            integral = (vectors == np.trunc(vectors)) & (vectors >= -(2**31)) & (vectors < 2**32)
            self.special = integral.any(axis=1)
        else:
            head = encode_head(4, d)
            tag, items = 0xFA, vectors.astype(">f4")
        # One byte matrix: each row is the array's head, then its items.
        size = items.dtype.itemsize
        rows = np.empty((n, len(head) + d * (size + (tag is not None))), dtype=np.uint8)
        rows[:, : len(head)] = np.frombuffer(head, dtype=np.uint8)
        body = rows[:, len(head) :]
        if tag is None:
            body[:] = items.view(np.uint8).reshape(n, d * size)
        else:
            cells = body.reshape(n, d, size + 1)
            cells[:, :, 0] = tag
            # Copy each value's bytes as one opaque item, not byte by byte.
            cells[:, :, 1:].view(f"V{size}").reshape(n, d)[:] = items.view(f"V{size}")
        self.width = rows.shape[1]
        self.raw = rows.reshape(-1).data

    def row(self, i: int) -> Any:
        """Row ``i`` as a value for :func:`~fabstir_node.s5.cborx.encode_s5`."""
        if self.special[i]:
            return self.vectors[i].tolist()
        return Encoded(self.raw[i * self.width : (i + 1) * self.width])


# --- records and files ------------------------------------------------------------


def _as_arrays(records: Any) -> tuple[list[str], np.ndarray, list[Mapping[str, Any] | None]]:
    if isinstance(records, tuple) and len(records) == 3 and isinstance(records[1], np.ndarray):
        ids, vectors, metadata = records
        ids, metadata = list(ids), list(metadata)
    else:
        items = [r if isinstance(r, Record) else Record(**r) for r in records]
        ids = [r.id for r in items]
        metadata = [r.metadata for r in items]
        vectors = np.array([np.asarray(r.vector, dtype=np.float32) for r in items], dtype=np.float32)
        if not items:
            vectors = np.empty((0, 0), dtype=np.float32)
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    if vectors.ndim != 2 or not (len(ids) == len(vectors) == len(metadata)):
        raise ValueError("ids, vectors (n, d) and metadata must have the same length")
    return ids, vectors, metadata


def _cbor_chunk(chunk_id: int, ids: list[str], rows: _VectorRows, start: int, metadata: list[Any]) -> bytes:
    records = [
        {"id": ident, "vector": rows.row(start + i), "metadata": {} if metadata[i] is None else metadata[i]}
        for i, ident in enumerate(ids)
    ]
    return encode_s5({"chunkId": chunk_id, "vectors": records})


def _json_chunk(chunk_id: int, ids: list[str], vectors: np.ndarray, metadata: list[Any]) -> bytes:
    lists = vectors.tolist()  # doubles of the float32 values, as JS would print them
    records = [
        {"id": ident, "vector": lists[i], "metadata": {} if metadata[i] is None else metadata[i]}
        for i, ident in enumerate(ids)
    ]
    return orjson.dumps({"chunkId": chunk_id, "vectors": records})


def build_database(
    records: Iterable[Record] | tuple[Sequence[str], np.ndarray, Sequence[Mapping[str, Any] | None]],
    *,
    owner: str,
    name: str,
    format: Literal["cbor", "json"] = "cbor",
    key: bytes | None = None,
    chunk_size: int = 10_000,
    now_ms: int | None = None,
    description: str | None = None,
    cbor_vectors: VectorEncoding = "float64",
    created_ms: int | None = None,
) -> dict[str, bytes]:
    """The files of a database: ``{relative path: stored bytes}``.

    ``records`` is an iterable of :class:`Record` (or dicts with the same
    keys), or a tuple ``(ids, vectors float32 (n, d), metadata)`` as
    :func:`~fabstir_node.formats.synthetic.synthetic_records` returns.  Files
    are ``{dir}/manifest.json`` and ``{dir}/chunk-{N}.json`` under
    ``home/vector-databases/{owner}/{name}``.  ``format`` picks CBOR (the SDK)
    or JSON text; ``key`` wraps every file in AES-256-GCM.  ``cbor_vectors``
    is for tests: ``"float64"`` (the SDK), ``"float32"`` items, or RFC 8746
    ``"typed"`` arrays.  ``created_ms`` keeps a new version's ``created`` time
    (default ``now_ms``, which also sets ``updated`` and ``lastAccessed``).
    """
    if format not in ("cbor", "json"):
        raise ValueError("format must be 'cbor' or 'json'")
    if chunk_size < 1:
        raise ValueError("chunk_size must be positive")
    ids, vectors, metadata = _as_arrays(records)
    directory = database_dir(owner, name)
    now = int(time.time() * 1000) if now_ms is None else now_ms
    n = len(ids)
    rows = _VectorRows(vectors, cbor_vectors) if format == "cbor" and n else None

    files: dict[str, bytes] = {}
    chunk_refs = []
    for chunk_id, start in enumerate(range(0, n, chunk_size)):
        stop = min(start + chunk_size, n)
        path = f"{directory}/chunk-{chunk_id}.json"
        if rows is not None:
            body = _cbor_chunk(chunk_id, ids[start:stop], rows, start, metadata[start:stop])
        else:
            body = _json_chunk(chunk_id, ids[start:stop], vectors[start:stop], metadata[start:stop])
        files[path] = body
        chunk_refs.append(
            {"chunkId": chunk_id, "cid": path, "vectorCount": stop - start, "sizeBytes": 0, "updatedAt": now}
        )

    folders = sorted({m["folderPath"] for m in metadata if m and isinstance(m.get("folderPath"), str)})
    manifest: dict[str, Any] = {
        "name": name,
        "owner": owner,
        "description": UNDEFINED if description is None else description,
        "vectorCount": n,
        "storageSizeBytes": 0,
        "created": now if created_ms is None else created_ms,
        "lastAccessed": now,
        "updated": now,
        "chunks": chunk_refs,
        "chunkCount": len(chunk_refs),
        "folderPaths": folders,
    }
    if n:
        manifest["dimensions"] = int(vectors.shape[1])
    if format == "cbor":
        files[f"{directory}/manifest.json"] = encode_s5(manifest)
    else:
        if description is None:
            del manifest["description"]  # JSON.stringify drops undefined fields
        files[f"{directory}/manifest.json"] = orjson.dumps(manifest)
    if key is not None:
        files = {path: encrypt_blob(body, key) for path, body in files.items()}
    return files
