"""Build the stored files of a vector database (the inverse of the readers).

Used by ``fabstir-node publish``, by benchmarks and by tests.  Pure: it maps
relative paths to bytes and leaves storing them to the caller.

CBOR output is what the SDK produces through s5.js ``fs.put`` (cbor-x with
``useRecords: false``, ``useFloat32: 0``): plain objects become maps with
their keys sorted (s5.js sorts with ``localeCompare``, approximated here by a
case-insensitive order), heads are minimal, and every JS number follows
cbor-x's rule — a 32-bit integer (including ``-0`` and integral floats)
becomes a CBOR integer, an integer above 2^53 becomes a 64-bit integer, any
other number a float64 item (``0xfb``).  ``None`` is ``null``; a field the SDK
leaves ``undefined`` (the manifest's ``description``) is written as CBOR
``undefined`` (``0xf7``).  Vectors are encoded with numpy, not per float.

JSON output is what ``JSON.stringify`` gives for the same objects (undefined
fields dropped).  Either can be wrapped in AES-256-GCM with a session key.
"""

from __future__ import annotations

import math
import struct
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal

import attrs
import cbor2
import numpy as np
import orjson

from .blob import encrypt_blob
from .paths import database_dir

__all__ = ["UNDEFINED", "Record", "build_database", "encode_cbor"]

#: JS ``undefined``: written as CBOR simple value 23, dropped from JSON.
UNDEFINED = cbor2.undefined

_MAX_SAFE_INTEGER = 2**53 - 1
_FLOAT64 = struct.Struct(">d")

VectorEncoding = Literal["float64", "float32", "typed"]


@attrs.frozen
class Record:
    """One vector to store."""

    id: str
    vector: Sequence[float] | np.ndarray = attrs.field(repr=False)
    metadata: Mapping[str, Any] | None = attrs.field(default=None, repr=False)


# --- CBOR, the cbor-x way ---------------------------------------------------------


_TINY_HEADS = [[bytes((major << 5 | value,)) for value in range(24)] for major in range(8)]


def _head(major: int, value: int) -> bytes:
    if value < 24:
        return _TINY_HEADS[major][value]
    if value < 0x100:
        return bytes((major << 5 | 24, value))
    if value < 0x10000:
        return bytes((major << 5 | 25,)) + value.to_bytes(2, "big")
    if value < 0x100000000:
        return bytes((major << 5 | 26,)) + value.to_bytes(4, "big")
    return bytes((major << 5 | 27,)) + value.to_bytes(8, "big")


def _number(value: float) -> bytes:
    """A JS number as cbor-x writes it."""
    if math.isfinite(value) and value == int(value):
        integer = int(value)
        if 0 <= integer < 0x100000000:
            return _head(0, integer)
        if -0x80000000 <= integer < 0:
            return _head(1, -1 - integer)
        if _MAX_SAFE_INTEGER < integer < 2**64:  # s5.js turns these into BigInt
            return _head(0, integer)
    return b"\xfb" + _FLOAT64.pack(float(value))


def _sort_key(key: str) -> tuple[str, str]:
    return (key.lower(), key.swapcase())


class _Encoder:
    """cbor-x's encoding of plain values, with caches for what repeats from
    record to record (map keys and their order)."""

    _CACHE_LIMIT = 10_000

    def __init__(self) -> None:
        self.keys: dict[str, bytes] = {}
        self.orders: dict[tuple[str, ...], list[str]] = {}

    def text(self, value: str) -> bytes:
        raw = value.encode("utf-8")
        return _head(3, len(raw)) + raw

    def key(self, key: Any) -> bytes:
        encoded = self.keys.get(key)
        if encoded is None:
            if type(key) is not str:
                raise TypeError("object keys must be strings")
            encoded = self.text(key)
            if len(self.keys) < self._CACHE_LIMIT:
                self.keys[key] = encoded
        return encoded

    def order(self, value: Mapping[str, Any]) -> list[str]:
        names = tuple(value)
        order = self.orders.get(names)
        if order is None:
            if not all(type(name) is str for name in names):
                raise TypeError("object keys must be strings")
            order = sorted(names, key=_sort_key)
            if len(self.orders) < self._CACHE_LIMIT:
                self.orders[names] = order
        return order

    def encode(self, value: Any, out: list[bytes]) -> None:
        kind = type(value)
        if kind is str:
            out.append(self.text(value))
        elif kind is dict or (kind is not list and isinstance(value, Mapping)):
            out.append(_head(5, len(value)))
            for name in self.order(value):
                out.append(self.key(name))
                self.encode(value[name], out)
        elif kind is int or kind is float:
            out.append(_number(value))
        elif value is None:
            out.append(b"\xf6")
        elif value is UNDEFINED:
            out.append(b"\xf7")
        elif value is True:
            out.append(b"\xf5")
        elif value is False:
            out.append(b"\xf4")
        elif kind is list or kind is tuple:
            out.append(_head(4, len(value)))
            for item in value:
                self.encode(item, out)
        elif isinstance(value, (np.integer, np.floating)):
            out.append(_number(value.item()))
        elif isinstance(value, np.ndarray):
            self.encode(value.tolist(), out)
        else:
            raise TypeError(f"cannot encode {kind.__name__} as CBOR")

    def __call__(self, value: Any) -> bytes:
        out: list[bytes] = []
        self.encode(value, out)
        return b"".join(out)


def encode_cbor(value: Any) -> bytes:
    """Encode plain values (dict/list/str/number/bool/None/:data:`UNDEFINED`)
    as the SDK's cbor-x would."""
    return _Encoder()(value)


class _VectorRows:
    """The CBOR encoding of each row of a float32 matrix, built with numpy."""

    def __init__(self, vectors: np.ndarray, encoding: VectorEncoding) -> None:
        n, d = vectors.shape
        self.vectors = vectors
        self.encoding = encoding
        self.special = np.zeros(n, dtype=bool)
        if encoding == "typed":
            self.head = b"\xd8\x55" + _head(2, 4 * d)  # tag 85: float32 little-endian
            self.raw = memoryview(vectors.astype("<f4").tobytes())
            self.width = 4 * d
            return
        self.head = _head(4, d)
        if encoding == "float64":
            wide = vectors.astype(np.float64)
            # cbor-x writes a number that is a 32-bit integer as an integer.
            integral = (wide == np.trunc(wide)) & (wide >= -(2**31)) & (wide < 2**32)
            self.special = integral.any(axis=1)
            items = np.empty((n, d), dtype=[("t", "u1"), ("v", ">f8")])
            items["t"] = 0xFB
            items["v"] = wide
            self.width = 9 * d
        else:
            items = np.empty((n, d), dtype=[("t", "u1"), ("v", ">f4")])
            items["t"] = 0xFA
            items["v"] = vectors
            self.width = 5 * d
        self.raw = memoryview(items.tobytes())

    def row(self, i: int) -> list[bytes | memoryview]:
        if self.special[i]:
            return [encode_cbor([float(x) for x in self.vectors[i]])]
        return [self.head, self.raw[i * self.width : (i + 1) * self.width]]


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


def _cbor_chunk(
    encoder: _Encoder, chunk_id: int, ids: list[str], rows: _VectorRows, start: int, metadata: list[Any]
) -> bytes:
    parts: list[Any] = [b"\xa2", encoder("chunkId"), encoder(chunk_id)]
    parts += (encoder("vectors"), _head(4, len(ids)))
    for offset, ident in enumerate(ids):
        meta = metadata[offset]
        parts += (b"\xa3\x62id", encoder.text(ident), b"\x68metadata")
        encoder.encode({} if meta is None else meta, parts)
        parts.append(b"\x66vector")
        parts += rows.row(start + offset)
    return b"".join(parts)


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
) -> dict[str, bytes]:
    """The files of a database: ``{relative path: stored bytes}``.

    ``records`` is an iterable of :class:`Record` (or dicts with the same
    keys), or a tuple ``(ids, vectors float32 (n, d), metadata)`` as
    :func:`~fabstir_node.formats.synthetic.synthetic_records` returns.  Files
    are ``{dir}/manifest.json`` and ``{dir}/chunk-{N}.json`` under
    ``home/vector-databases/{owner}/{name}``.  ``format`` picks CBOR (the SDK)
    or JSON text; ``key`` wraps every file in AES-256-GCM.  ``cbor_vectors``
    is for tests: ``"float64"`` (the SDK), ``"float32"`` items, or RFC 8746
    ``"typed"`` arrays.
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
    encoder = _Encoder()

    files: dict[str, bytes] = {}
    chunk_refs = []
    for chunk_id, start in enumerate(range(0, n, chunk_size)):
        stop = min(start + chunk_size, n)
        path = f"{directory}/chunk-{chunk_id}.json"
        if rows is not None:
            body = _cbor_chunk(encoder, chunk_id, ids[start:stop], rows, start, metadata[start:stop])
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
        "created": now,
        "lastAccessed": now,
        "updated": now,
        "chunks": chunk_refs,
        "chunkCount": len(chunk_refs),
        "folderPaths": folders,
        "deleted": False,
    }
    if n:
        manifest["dimensions"] = int(vectors.shape[1])
    if format == "cbor":
        files[f"{directory}/manifest.json"] = encoder(manifest)
    else:
        if description is None:
            del manifest["description"]  # JSON.stringify drops undefined fields
        files[f"{directory}/manifest.json"] = orjson.dumps(manifest)
    if key is not None:
        files = {path: encrypt_blob(body, key) for path, body in files.items()}
    return files
