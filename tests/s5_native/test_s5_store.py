"""S5Store: database paths resolved through a real local portal, in each kind of tree."""

from __future__ import annotations

import base64
import os
import shutil

import pytest
import trio
from _s5_native_helpers import file_hash
from hypothesis import given, settings
from hypothesis import strategies as st

from fabstir_node.errors import ErrorCode, FabstirError, StorageError, StorageNotFound
from fabstir_node.protocol.messages import VectorDatabaseRef
from fabstir_node.s5.encryption import MUTABLE_MAGIC
from fabstir_node.s5.identity import S5Identity
from fabstir_node.s5.writer import TreeWriter
from fabstir_node.storage.base import Storage
from fabstir_node.storage.s5_publish import publish_files
from fabstir_node.storage.s5_store import S5Store, parse_directory_key

DB = "home/vector-databases/0xabc/docs"
OWNER = "0xAbC0000000000000000000000000000000000001"


def ref(directory_key: str | None = None, path: str = f"{DB}/manifest.json") -> VectorDatabaseRef:
    return VectorDatabaseRef(path, OWNER, directory_key)


async def test_the_host_tree_resolves_what_was_published_and_keeps_siblings(start_portal, make_client, identity):
    portal = await start_portal()
    client = make_client(portal)
    await publish_files(client, identity.root(), DB, {"manifest.json": b"m1", "chunk-0.json": b"c0"})
    await publish_files(client, identity.root(), "home/vector-databases/0xabc/other", {"manifest.json": b"m2"})
    store = S5Store(client, seed_phrase=identity.phrase)
    assert isinstance(store, Storage)
    assert await store.get(f"{DB}/manifest.json") == b"m1"
    assert await store.get(f"{DB}/chunk-0.json") == b"c0"
    assert await store.get("home/vector-databases/0xabc/other/manifest.json") == b"m2"
    with pytest.raises(StorageNotFound):
        await store.get(f"{DB}/chunk-1.json")
    with pytest.raises(StorageNotFound):
        await store.get("home/vector-databases/0xdef/docs/manifest.json")
    # the root directory is stored encrypted, as s5.js stores it
    root_entry = await client.get_entry(identity.root().public_key)
    assert portal.blob_file(root_entry.data[1:]).read_bytes()[:2] == MUTABLE_MAGIC
    with pytest.raises(FabstirError) as caught:
        await store.get("../etc/passwd")
    assert caught.value.code is ErrorCode.INVALID_PATH


async def test_put_adds_one_file_and_replacing_publish_drops_old_files(start_portal, make_client, identity):
    client = make_client(await start_portal())
    store = S5Store(client, seed_phrase=identity.phrase)
    await publish_files(client, identity.root(), DB, {"manifest.json": b"v1", "chunk-0.json": b"c0"})
    await store.put(f"{DB}/chunk-1.json", b"c1")
    assert [await store.get(f"{DB}/{n}") for n in ("manifest.json", "chunk-0.json", "chunk-1.json")] == [
        b"v1", b"c0", b"c1"
    ]
    await publish_files(client, identity.root(), DB, {"manifest.json": b"v2"})
    assert await store.get(f"{DB}/manifest.json") == b"v2"
    with pytest.raises(StorageNotFound):
        await store.get(f"{DB}/chunk-0.json")


async def test_a_sharded_directory_resolves(start_portal, make_client, identity):
    portal = await start_portal()
    client = make_client(portal)
    writer = TreeWriter(identity.root(), 1_700_000_000)
    for i in range(1000):  # the s5.js threshold: the directory is written as a HAMT
        writer.put(f"{DB}/chunk-{i}.json", f"chunk {i}".encode())
    writer.put(f"{DB}/manifest.json", b"sharded manifest")
    publication = writer.build()
    for blob in publication.blobs.values():  # straight into the portal's directory: 1000 uploads are slow
        await portal.portal.directory.put_blob(blob)
    for entry in publication.entries.values():
        await client.set_entry(entry)
    store = S5Store(client, seed_phrase=identity.phrase)
    assert await store.get(f"{DB}/manifest.json") == b"sharded manifest"
    assert await store.get(f"{DB}/chunk-737.json") == b"chunk 737"
    with pytest.raises(StorageNotFound):
        await store.get(f"{DB}/chunk-1000.json")
    # and the shared directory key reaches into it too
    view = store.for_database(ref(identity.directory(DB).public_key32.hex()))
    assert await view.get(f"{DB}/chunk-3.json") == b"chunk 3"


async def test_an_encrypted_file_is_decrypted_after_its_ciphertext_is_verified(start_portal, make_client, identity):
    portal = await start_portal()
    client = make_client(portal)
    plaintext = os.urandom(300_000)  # two 256 KiB chunks of XChaCha20-Poly1305
    await publish_files(client, identity.root(), DB, {"chunk-0.json": plaintext, "manifest.json": b"m"},
                        encryption_key=lambda name: os.urandom(32) if name.startswith("chunk") else None)
    store = S5Store(client, seed_phrase=identity.phrase)
    assert await store.get(f"{DB}/chunk-0.json") == plaintext
    stored = portal.blob_file(await file_hash(client, identity.root(), f"{DB}/chunk-0.json")).read_bytes()
    assert len(stored) == len(plaintext) + 2 * 16 and plaintext[:1000] not in stored


async def test_a_stale_portal_cannot_roll_a_directory_back(start_portal, make_client, identity, tmp_path):
    old_portal = await start_portal("old")
    await publish_files(make_client(old_portal), identity.root(), DB, {"manifest.json": b"version 1"})
    shutil.copytree(old_portal.root, tmp_path / "new")
    new_portal = await start_portal("new", root=tmp_path / "new")
    await publish_files(make_client(new_portal), identity.root(), DB, {"manifest.json": b"version 2"})
    for order in ((old_portal, new_portal), (new_portal, old_portal)):
        store = S5Store(make_client(*order), seed_phrase=identity.phrase)
        assert await store.get(f"{DB}/manifest.json") == b"version 2"
    assert await S5Store(make_client(old_portal), seed_phrase=identity.phrase).get(f"{DB}/manifest.json") == (
        b"version 1"
    )


async def test_a_tampered_blob_is_refused(start_portal, make_client, identity):
    portal = await start_portal()
    client = make_client(portal)
    await publish_files(client, identity.root(), DB, {"manifest.json": b"genuine manifest"})
    blob_hash = await file_hash(client, identity.root(), f"{DB}/manifest.json")
    portal.blob_file(blob_hash).write_bytes(b"forged  manifest")
    with pytest.raises(FabstirError) as caught:
        await S5Store(client, seed_phrase=identity.phrase).get(f"{DB}/manifest.json")
    assert caught.value.code is ErrorCode.S5_HASH_MISMATCH


async def test_a_shared_directory_key_reads_only_inside_that_directory(start_portal, make_client, identity):
    client = make_client(await start_portal())
    keys = await publish_files(client, identity.root(), DB, {"manifest.json": b"m", "chunk-0.json": b"c"})
    assert keys.public_key32 == identity.directory(DB).public_key32
    store = S5Store(client)  # no identity of its own
    for spelling in (keys.public_key32.hex(), "0x" + keys.public_key.hex(),
                     base64.urlsafe_b64encode(keys.public_key32).decode().rstrip("=")):
        view = store.for_database(ref(spelling))
        assert await view.get(f"{DB}/manifest.json") == b"m"
        assert await view.get(f"{DB}/chunk-0.json") == b"c"
        assert keys.public_key32.hex() in view.name
    with pytest.raises(StorageNotFound, match="outside"):
        await view.get("home/vector-databases/0xabc/other/manifest.json")
    with pytest.raises(StorageError):
        await view.put(f"{DB}/x.json", b"x")
    with pytest.raises(StorageNotFound):
        await store.get(f"{DB}/manifest.json")  # the store alone has no tree


async def test_whose_tree_each_database_is_read_in(start_portal, make_client, identity):
    client = make_client(await start_portal())
    host = S5Store(client, seed_phrase=identity.phrase)
    wallet = S5Store(client, seed_phrase=identity.phrase, allow_wallet_identity=True)
    nobody = S5Store(client)
    assert [t.label for t in host.trees_for(ref())] == ["seed"]
    assert [t.label for t in wallet.trees_for(ref(), 84532)] == ["seed", "wallet"]
    assert [t.label for t in wallet.trees_for(ref("ab" * 32))] == ["directory"]
    wallet_root = S5Identity.from_wallet(OWNER, 84532).root()
    assert wallet.trees_for(ref(), 84532)[1].start.public_key == wallet_root.public_key
    assert wallet.trees_for(ref(), 1)[1].start.public_key != wallet_root.public_key
    assert host.for_database(ref()).name != wallet.for_database(ref(), 84532).name
    with pytest.raises(FabstirError) as caught:
        nobody.for_database(ref())
    assert caught.value.code is ErrorCode.MANIFEST_NOT_FOUND and "directoryKey" in caught.value.message
    # no part of the phrase: two words in a row (one word alone may be, e.g., "wallet", a field name)
    words = identity.phrase.split()
    assert "phrase" not in repr(host) and " ".join(words[:2]) not in repr(host) and identity.phrase not in repr(host)


async def test_parallel_reads_of_one_view_fetch_each_directory_once(start_portal, make_client, identity):
    portal = await start_portal()
    client = make_client(portal)
    files = {f"chunk-{i}.json": f"c{i}".encode() for i in range(8)}
    await publish_files(client, identity.root(), DB, files)
    view = S5Store(client, seed_phrase=identity.phrase).for_database(ref())
    portal.requests.clear()
    results: dict[str, bytes] = {}

    async def read(name: str) -> None:
        results[name] = await view.get(f"{DB}/{name}")

    async with trio.open_nursery() as nursery:
        for name in files:
            nursery.start_soon(read, name)
    assert results == files
    assert len(portal.saw("/s5/registry")) == 5  # root, home, vector-databases, 0xabc, docs
    assert len({path for _, path, _ in portal.saw("/s5/blob/")}) == len(portal.saw("/s5/blob/"))


def test_directory_keys_in_every_spelling_and_nothing_else():
    key = bytes(range(32))
    assert parse_directory_key(key.hex()) == key
    assert parse_directory_key("0x" + key.hex().upper()) == key
    assert parse_directory_key(base64.urlsafe_b64encode(key).decode().rstrip("=")) == key
    assert parse_directory_key((b"\xed" + key).hex()) == b"\xed" + key
    for bad in ("", "zz" * 32, "ab" * 31, "ab" * 33, "not a key"):
        with pytest.raises(FabstirError) as caught:
            parse_directory_key(bad)
        assert caught.value.code is ErrorCode.INVALID_SESSION_KEY


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=100))
def test_hostile_directory_keys_raise_only_our_errors(text):
    try:
        key = parse_directory_key(text)
    except FabstirError:
        return
    assert len(key) in (32, 33)
