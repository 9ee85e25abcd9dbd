"""A database view names a file's content (its BLAKE3 hash) without downloading the file."""

from __future__ import annotations

import pytest
from _s5_native_helpers import file_hash

from fabstir_node.errors import StorageNotFound
from fabstir_node.protocol.messages import VectorDatabaseRef
from fabstir_node.storage.s5_publish import publish_files
from fabstir_node.storage.s5_store import S5Store

DB = "home/vector-databases/0xabc/docs"
OWNER = "0xAbC0000000000000000000000000000000000001"


async def test_content_id_follows_the_chunk_bytes_not_the_manifest(start_portal, make_client, identity):
    portal = await start_portal()
    client = make_client(portal)
    await publish_files(client, identity.root(), DB, {"manifest.json": b"m", "chunk-0.json": b"c0"})
    view = S5Store(client, seed_phrase=identity.phrase).for_database(VectorDatabaseRef(f"{DB}/manifest.json", OWNER))
    first = await view.content_id(f"{DB}/chunk-0.json")
    assert first == await file_hash(client, identity.root(), f"{DB}/chunk-0.json")
    await publish_files(client, identity.root(), DB, {"manifest.json": b"m", "chunk-0.json": b"c0-rewritten"})
    view = S5Store(client, seed_phrase=identity.phrase).for_database(VectorDatabaseRef(f"{DB}/manifest.json", OWNER))
    assert await view.content_id(f"{DB}/chunk-0.json") != first
    assert await view.get(f"{DB}/manifest.json") == b"m"
    with pytest.raises(StorageNotFound):
        await view.content_id(f"{DB}/chunk-9.json")
