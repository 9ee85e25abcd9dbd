"""What a database version is made of: its manifest *and* its chunks' content ids.

The shared cache and the disk cache key a loaded database on the manifest's
content.  The SDK rewrites the manifest on every change (its ``updated`` time
moves), but another writer may rewrite chunks and leave the manifest
byte-identical; keyed on the manifest alone, the node would then serve the
old vectors.  So when the storage backend can name a file's content without
downloading it (``storage.content_id(path)``: native S5 gives the BLAKE3 hash
in the directory entry, the local store a token of size, mtime and inode),
the key also covers every chunk's content id.  The S5 bridge cannot, and
there the manifest alone decides (docs/operations.md, "Database versions").
"""

from __future__ import annotations

import hashlib
from typing import Any

import trio

from ..errors import ErrorCode, FabstirError, StorageError
from ..formats.manifest import Manifest
from ..formats.paths import chunk_path

__all__ = ["version_digest"]

#: Content ids looked up at once (directory lookups are shared; local stats are cheap).
PARALLEL = 8


async def version_digest(storage: Any, manifest_path: str, manifest: Manifest) -> str:
    """``manifest.digest``, extended by the chunks' content ids when ``storage`` can give them."""
    content_id = getattr(storage, "content_id", None)
    if content_id is None or not manifest.chunks:
        return manifest.digest
    ids: list[bytes] = [b""] * len(manifest.chunks)
    limiter = trio.CapacityLimiter(PARALLEL)

    async def one(i: int) -> None:
        async with limiter:
            ids[i] = await content_id(chunk_path(manifest_path, manifest.chunks[i].chunk_id))

    try:
        async with trio.open_nursery() as nursery:
            for i in range(len(ids)):
                nursery.start_soon(one, i)
    except* StorageError as group:
        first = group.exceptions[0]
        while isinstance(first, BaseExceptionGroup):
            first = first.exceptions[0]
        raise FabstirError(ErrorCode.CHUNK_DOWNLOAD_FAILED, "a chunk of the database is missing",
                           detail=str(first)) from None
    hasher = hashlib.sha256(manifest.digest.encode())
    for i, cid in enumerate(ids):
        hasher.update(f"\x00{manifest.chunks[i].chunk_id}\x00".encode() + cid)
    return hasher.hexdigest()
