"""The database manifest (protocol §4.2) and who may open it.

:func:`parse_manifest` turns a decoded manifest (see
:func:`~fabstir_node.formats.blob.decode_object`) into a :class:`Manifest`,
checking everything the loader relies on: chunk ids ``0..n-1`` in order,
``chunkCount == len(chunks)``, the chunks' vector counts adding up to
``vectorCount``.  Unknown keys are ignored, and the fields a fresh SDK
manifest leaves out (``description``, ``dimensions``, ``deleted``) may be
missing.

The SDK's CBOR encoder (cbor-x) writes every JS number that is not a 32-bit
integer as a float64, so timestamps and large counts may arrive as integral
floats; they are accepted as integers.

:func:`check_access` decides whether a session's user may load the database.
"""

from __future__ import annotations

import hashlib
import math
from typing import Any

import attrs
import orjson

from ..errors import ErrorCode, FabstirError
from ..protocol.keys import lookup
from .blob import MAX_NESTING

__all__ = [
    "DEFAULT_MAX_CHUNKS",
    "DEFAULT_MAX_DIMENSIONS",
    "ChunkRef",
    "Manifest",
    "check_access",
    "manifest_digest",
    "parse_manifest",
]

DEFAULT_MAX_CHUNKS = 100_000
DEFAULT_MAX_DIMENSIONS = 65_536

_MISSING = object()


@attrs.frozen
class ChunkRef:
    """One entry of ``chunks``.  ``cid`` is informational: the SDK writes the
    chunk's path there, and the node derives the path itself."""

    chunk_id: int
    cid: str | None = attrs.field(repr=False)
    vector_count: int
    size_bytes: int


@attrs.frozen
class Manifest:
    """A parsed manifest.  ``digest`` identifies its content (see
    :func:`manifest_digest`).  Names, addresses and descriptions are user data
    and stay out of the repr."""

    name: str = attrs.field(repr=False)
    owner: str = attrs.field(repr=False)
    description: str | None = attrs.field(repr=False)
    dimensions: int | None
    vector_count: int
    chunks: tuple[ChunkRef, ...] = attrs.field(repr=False)
    chunk_count: int
    folder_paths: tuple[str, ...] = attrs.field(repr=False)
    deleted: bool
    created: int | None
    updated: int | None
    digest: str


def _invalid(message: str) -> FabstirError:
    return FabstirError(ErrorCode.INVALID_DATABASE, f"invalid manifest: {message}")


def _integer(value: Any, field: str, *, minimum: int = 0) -> int:
    """An integer >= ``minimum``; integral floats count, bools do not."""
    if type(value) is float and math.isfinite(value) and value.is_integer():
        value = int(value)
    if type(value) is not int:
        raise _invalid(f"'{field}' must be an integer")
    if value < minimum:
        raise _invalid(f"'{field}' must be at least {minimum}")
    return value


def _timestamp(obj: dict[str, Any], key: str) -> int | None:
    value = obj.get(key)
    if value is None:
        return None
    if type(value) is float and math.isfinite(value):
        return int(value)
    if type(value) is int:
        return value
    raise _invalid(f"'{key}' must be a number of milliseconds")


def _string(obj: dict[str, Any], key: str, *, required: bool) -> str | None:
    value = obj.get(key)
    if value is None and not required:
        return None
    if not isinstance(value, str) or (required and not value):
        raise _invalid(f"'{key}' must be a {'non-empty ' if required else ''}string")
    return value


def _required_string(obj: dict[str, Any], key: str) -> str:
    value = _string(obj, key, required=True)
    assert value is not None  # _string raised otherwise
    return value


def _canonical(value: Any, depth: int = 0) -> Any:
    """JSON-number semantics for hashing: integral floats become ints, and
    map entries whose value is null are dropped (JSON.stringify drops
    ``undefined`` fields, CBOR keeps them)."""
    if depth > MAX_NESTING:
        raise _invalid("nested too deeply")
    if type(value) is float:
        if value.is_integer() and abs(value) < 2**63:
            return int(value)
        return value
    if isinstance(value, dict):
        return {k: _canonical(v, depth + 1) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_canonical(v, depth + 1) for v in value]
    return value


def manifest_digest(obj: Any) -> str:
    """sha256 hex of the canonical JSON of a decoded manifest (sorted keys).

    The same content gives the same digest whether it was stored as JSON,
    CBOR, or encrypted, and whether the bridge re-serialised it.
    """
    try:
        encoded = orjson.dumps(_canonical(obj), option=orjson.OPT_SORT_KEYS)
    except (orjson.JSONEncodeError, TypeError) as exc:
        raise _invalid("holds a value JSON cannot represent") from exc
    return hashlib.sha256(encoded).hexdigest()


def _parse_chunk_ref(entry: Any, index: int) -> ChunkRef:
    if not isinstance(entry, dict):
        raise _invalid(f"chunks[{index}] must be an object")
    chunk_id = _integer(lookup(entry, "chunk_id"), f"chunks[{index}].chunkId")
    if chunk_id != index:
        raise _invalid(f"chunks[{index}].chunkId is {chunk_id}; chunk ids must be 0..n-1 in order")
    cid = lookup(entry, "cid")
    if cid is not None and not isinstance(cid, str):
        raise _invalid(f"chunks[{index}].cid must be a string")
    vector_count = _integer(lookup(entry, "vector_count"), f"chunks[{index}].vectorCount")
    size = lookup(entry, "size_bytes", 0)
    size_bytes = 0 if size is None else _integer(size, f"chunks[{index}].sizeBytes")
    return ChunkRef(chunk_id=chunk_id, cid=cid, vector_count=vector_count, size_bytes=size_bytes)


def parse_manifest(
    obj: Any,
    *,
    max_chunks: int = DEFAULT_MAX_CHUNKS,
    max_dimensions: int = DEFAULT_MAX_DIMENSIONS,
) -> Manifest:
    """Parse and check a decoded manifest.

    Raises ``INVALID_DATABASE`` (the message names the field) for a structural
    error, and ``LIMIT_EXCEEDED`` for more than ``max_chunks`` chunks or more
    than ``max_dimensions`` dimensions.
    """
    if not isinstance(obj, dict):
        raise _invalid("must be an object")
    name = _required_string(obj, "name")
    owner = _required_string(obj, "owner")
    description = _string(obj, "description", required=False)

    dimensions = lookup(obj, "dimensions")
    if dimensions is not None:
        dimensions = _integer(dimensions, "dimensions", minimum=1)
        if dimensions > max_dimensions:
            raise FabstirError(
                ErrorCode.LIMIT_EXCEEDED, f"database has more than {max_dimensions} dimensions"
            )
    vector_count = _integer(lookup(obj, "vector_count"), "vectorCount")

    chunks_obj = obj.get("chunks")
    if not isinstance(chunks_obj, list):
        raise _invalid("'chunks' must be a list")
    chunk_count = _integer(lookup(obj, "chunk_count", len(chunks_obj)), "chunkCount")
    if max(len(chunks_obj), chunk_count) > max_chunks:
        raise FabstirError(ErrorCode.LIMIT_EXCEEDED, f"database has more than {max_chunks} chunks")
    if chunk_count != len(chunks_obj):
        raise _invalid(f"'chunkCount' is {chunk_count} but 'chunks' has {len(chunks_obj)} entries")
    chunks = tuple(_parse_chunk_ref(entry, i) for i, entry in enumerate(chunks_obj))
    total = sum(chunk.vector_count for chunk in chunks)
    if total != vector_count:
        raise _invalid(f"'vectorCount' is {vector_count} but the chunks hold {total} vectors")

    folders = lookup(obj, "folder_paths")
    if folders is None:
        folders = []
    if not isinstance(folders, list) or not all(isinstance(f, str) for f in folders):
        raise _invalid("'folderPaths' must be a list of strings")

    deleted = obj.get("deleted")
    if deleted is None:
        deleted = False
    if type(deleted) is not bool:
        raise _invalid("'deleted' must be a boolean")

    return Manifest(
        name=name,
        owner=owner,
        description=description,
        dimensions=dimensions,
        vector_count=vector_count,
        chunks=chunks,
        chunk_count=chunk_count,
        folder_paths=tuple(folders),
        deleted=deleted,
        created=_timestamp(obj, "created"),
        updated=_timestamp(obj, "updated"),
        digest=manifest_digest(obj),
    )


def _same_address(a: str, b: str) -> bool:
    """Equal ignoring ASCII case only.  Non-ASCII never matches: ``lower()``
    and ``casefold()`` map some look-alikes (Kelvin sign K, dotless ı, ...)
    onto ASCII letters."""
    return a.isascii() and b.isascii() and a.lower() == b.lower()


def check_access(manifest: Manifest, user_address: str) -> None:
    """Raise unless ``user_address`` may load this database.

    ``OWNER_MISMATCH`` if the owner differs (ASCII case ignored; the message
    names no address), then ``MANIFEST_NOT_FOUND`` for a deleted database,
    then ``EMPTY_DATABASE`` if it holds no vectors.
    """
    if not isinstance(user_address, str) or not _same_address(manifest.owner, user_address):
        raise FabstirError(
            ErrorCode.OWNER_MISMATCH, "the database does not belong to this session's user"
        )
    if manifest.deleted:
        raise FabstirError(ErrorCode.MANIFEST_NOT_FOUND, "database has been deleted")
    if manifest.vector_count == 0:
        raise FabstirError(ErrorCode.EMPTY_DATABASE, "database has no vectors")
