"""The sans-io resolver, driven by in-memory blob and registry stores (below the I/O boundary)."""

from __future__ import annotations

from typing import Any

import pytest

from fabstir_node.errors import ErrorCode, FabstirError, StorageNotFound, StorageUnavailable
from fabstir_node.s5.cid import MHASH_BLAKE3, BlobId, blake3_hash
from fabstir_node.s5.dirv1 import DirRef, DirV1, FileRef, decode_dirv1, encode_dirv1
from fabstir_node.s5.hamt import HamtLeaf, HamtNode, HamtNodeRef, encode_hamt, sharded_header
from fabstir_node.s5.identity import DirectoryKeys, S5Identity
from fabstir_node.s5.registry import sign_entry
from fabstir_node.s5.resolve import NeedBlob, NeedEntry, ResolvedDirectory, Resolver
from fabstir_node.s5.writer import TreeWriter

PHRASE = "ability license absence limit achieve listen action lobby admit look affect loud agency seize like"
DB = "home/vector-databases/0xabc0000000000000000000000000000000000000/docs"
MANIFEST = {"name": "docs", "owner": "0xabc" + "0" * 37, "dimensions": 3, "chunks": []}


class Store:
    """A dict of blobs and registry entries, with counters (what a portal would hold)."""

    def __init__(self, publication: Any = None) -> None:
        self.blobs: dict[bytes, bytes] = dict(publication.blobs) if publication else {}
        self.entries: dict[bytes, Any] = dict(publication.entries) if publication else {}
        self.blob_requests: list[NeedBlob] = []

    def entry(self, pk: bytes) -> Any:
        return self.entries.get(pk)

    def blob(self, blob_id: BlobId) -> bytes | None:
        return self.blobs.get(blob_id.hash)

    def add_blob(self, data: bytes) -> bytes:
        digest = blake3_hash(data)
        self.blobs[digest] = data
        return digest

    def point(self, keys: DirectoryKeys, blob: bytes, revision: int = 1) -> None:
        """Store ``blob`` and a registry entry for ``keys`` pointing at it."""
        data = bytes([MHASH_BLAKE3]) + self.add_blob(blob)
        self.entries[keys.public_key] = sign_entry(keys.write_key, revision, data)

    def resolve(self, start: DirectoryKeys, path: str, **kwargs: Any) -> Any:
        resolver = Resolver(start, path, **kwargs)
        while (request := resolver.request) is not None:
            if isinstance(request, NeedEntry):
                resolver.feed(self.entry(request.public_key))
            else:
                self.blob_requests.append(request)
                resolver.feed(self.blob(request.blob_id))
        return resolver.result


@pytest.fixture
def identity() -> S5Identity:
    return S5Identity.from_phrase(PHRASE)


def publish(identity: S5Identity, **files: Any) -> Store:
    writer = TreeWriter(identity.root(), timestamp=1700000000)
    for path, value in files.items():
        writer.put(path.replace("__", "/"), value)
    return Store(writer.build())


def test_resolves_through_encrypted_root_and_decodes_cbor(identity: S5Identity) -> None:
    writer = TreeWriter(identity.root(), timestamp=1700000000)
    writer.put(f"{DB}/manifest.json", MANIFEST)
    store = Store(writer.build())
    root_blob = store.blobs[store.entries[identity.root().public_key].data[1:]]
    assert root_blob[:2] == b"\x8d\x01"  # the root really is encrypted
    resolved = store.resolve(identity.root(), f"/{DB}//manifest.json/")
    assert resolved.content() == MANIFEST
    assert resolved.ref.media_type == "application/json"
    # Every blob request named an exact hash; the file one also its size.
    assert store.blob_requests[-1].blob_id == BlobId(resolved.ref.hash, resolved.ref.size)


def test_shared_directory_key_reads_only_that_subtree(identity: S5Identity) -> None:
    writer = TreeWriter(identity.root(), timestamp=1)
    writer.put(f"{DB}/manifest.json", MANIFEST)
    writer.put(f"{DB}/sub/chunk-0.json", {"chunkId": 0})
    writer.put("home/secret.txt", "not shared")
    store = Store(writer.build())
    shared = DirectoryKeys.from_public_key(identity.directory(DB).public_key32)
    assert store.resolve(shared, "manifest.json").content() == MANIFEST
    assert store.resolve(shared, "sub/chunk-0.json").content() == {"chunkId": 0}
    with pytest.raises(StorageNotFound):
        store.resolve(shared, "secret.txt")
    # Without the root encryption key, the root cannot be read at all.
    bare_root = DirectoryKeys.from_public_key(identity.root().public_key)
    with pytest.raises(FabstirError) as info:
        store.resolve(bare_root, "home/secret.txt")
    assert info.value.code is ErrorCode.DECRYPTION_FAILED


def test_wallet_identity_tree(identity: S5Identity) -> None:
    wallet = S5Identity.from_wallet("0xABC0000000000000000000000000000000000000", 84532)
    store = publish(wallet, **{"home__db__manifest.json": MANIFEST})
    assert store.resolve(wallet.root(), "home/db/manifest.json").content() == MANIFEST
    with pytest.raises(StorageNotFound):  # someone else's identity finds nothing
        store.resolve(identity.root(), "home/db/manifest.json")


def test_encrypted_file_is_decrypted_and_tampering_refused(identity: S5Identity) -> None:
    key = bytes(range(32))
    body = bytes(i % 251 for i in range(300_000))  # two chunks
    writer = TreeWriter(identity.root(), timestamp=1)
    ref = writer.put("home/enc/big.bin", body, encryption_key=key)
    store = Store(writer.build())
    assert store.blobs[ref.hash] != body[: len(store.blobs[ref.hash])]
    resolved = store.resolve(identity.root(), "home/enc/big.bin")
    assert resolved.data == body and resolved.content() == body  # octet-stream stays bytes
    assert store.blob_requests[-1].blob_id.size == len(body) + 32  # ciphertext size, two tags

    # A ciphertext that matches the FileRef hash but was encrypted with another key.
    wrong = TreeWriter(identity.root(), timestamp=1)
    wrong_ref = wrong.put("home/enc/big.bin", body, encryption_key=bytes(32))
    other = wrong.build()
    directory = DirV1({}, {}, {"big.bin": FileRef(wrong_ref.hash, wrong_ref.size, extra=ref.extra)})
    store.blobs[wrong_ref.hash] = other.blobs[wrong_ref.hash]
    enc_keys = identity.directory("home/enc")
    store.entries[enc_keys.public_key] = sign_entry(
        enc_keys.write_key, 5, bytes([MHASH_BLAKE3]) + store.add_blob(encode_dirv1(directory))
    )
    with pytest.raises(FabstirError) as info:
        store.resolve(identity.root(), "home/enc/big.bin")
    assert info.value.code is ErrorCode.DECRYPTION_FAILED


def test_stale_revision_is_ignored_and_forgery_dropped(identity: S5Identity) -> None:
    old = publish(identity, **{"home__db__manifest.json": {"version": 1}})
    new_writer = TreeWriter(identity.root(), timestamp=2)
    new_writer.put("home/db/manifest.json", {"version": 2})
    new = new_writer.build({pk: e.revision for pk, e in old.entries.items()})
    store = Store(old)
    store.blobs.update(new.blobs)
    db_pk = identity.directory("home/db").public_key
    stale, fresh = old.entries[db_pk], new.entries[db_pk]
    assert fresh.revision == stale.revision + 1
    forged = sign_entry(bytes(32), 99, fresh.data)  # valid signature, but for another key
    forged_same_pk = type(fresh)(pk=db_pk, revision=100, data=stale.data, signature=fresh.signature)

    resolver = Resolver(identity.root(), "home/db/manifest.json")
    while (request := resolver.request) is not None:
        if isinstance(request, NeedEntry) and request.public_key == db_pk:
            # Several sources answer; the stale one comes last and must not win.
            resolver.feed([fresh, forged, forged_same_pk, stale])
        elif isinstance(request, NeedEntry):
            resolver.feed(store.entry(request.public_key))
        else:
            resolver.feed(store.blob(request.blob_id))
    assert resolver.result.content() == {"version": 2}

    only_forged = Resolver(identity.root(), "home/db/manifest.json")
    while isinstance(only_forged.request, NeedEntry) and only_forged.request.public_key != db_pk:
        only_forged.feed(store.entry(only_forged.request.public_key))
        if isinstance(only_forged.request, NeedBlob):
            only_forged.feed(store.blob(only_forged.request.blob_id))
    with pytest.raises(FabstirError) as info:
        only_forged.feed([forged_same_pk])
    assert info.value.code is ErrorCode.S5_INVALID_ENTRY
    assert only_forged.request == NeedEntry(db_pk)  # still waiting: another source may answer
    only_forged.feed(fresh)
    assert isinstance(only_forged.request, NeedBlob)


def test_hash_mismatch_is_refused_and_request_stays_pending(identity: S5Identity) -> None:
    store = publish(identity, **{"home__a.txt": "hello"})
    resolver = Resolver(identity.root(), "home/a.txt")
    fed_bad = 0
    while (request := resolver.request) is not None:
        if isinstance(request, NeedEntry):
            resolver.feed(store.entry(request.public_key))
            continue
        good = store.blob(request.blob_id)
        bad = bytearray(good)
        bad[-1] ^= 1
        with pytest.raises(FabstirError) as info:
            resolver.feed(bytes(bad))
        assert info.value.code is ErrorCode.S5_HASH_MISMATCH
        with pytest.raises(FabstirError):
            resolver.feed(good + b"x")  # right prefix, wrong size
        fed_bad += 1
        assert resolver.request == request
        resolver.feed(good)
    assert fed_bad == 3  # root, home, file
    assert resolver.result.content() == "hello"


def test_missing_things(identity: S5Identity) -> None:
    store = publish(identity, **{"home__db__manifest.json": MANIFEST})
    with pytest.raises(StorageNotFound):
        store.resolve(identity.root(), "home/db/nope.json")
    with pytest.raises(StorageNotFound):
        store.resolve(identity.root(), "home/other/manifest.json")
    db_entry = store.entries[identity.directory("home/db").public_key]
    del store.blobs[db_entry.data[1:]]  # entry present, blob not (yet) propagated
    with pytest.raises(StorageUnavailable):
        store.resolve(identity.root(), "home/db/manifest.json")
    with pytest.raises(StorageNotFound):
        Store().resolve(identity.root(), "home/db/manifest.json")
    with pytest.raises(FabstirError):
        Resolver(identity.root(), "///")


def test_sharded_directory_written_and_read(identity: S5Identity) -> None:
    writer = TreeWriter(identity.root(), timestamp=1)
    for i in range(1000):
        writer.put(f"home/big/chunk-{i}.json", {"chunkId": i})
    writer.put("home/big/sub/leaf.txt", "deep")
    store = Store(writer.build())
    big = store.resolve(identity.root(), "home/big", kind="directory")
    assert isinstance(big, ResolvedDirectory)
    assert big.directory.sharding is not None and big.directory.files == {}
    assert big.directory.sharding.total_entries == 1001
    assert store.resolve(identity.root(), "home/big/chunk-777.json").content() == {"chunkId": 777}
    assert store.resolve(identity.root(), "home/big/sub/leaf.txt").content() == "deep"


def test_multi_level_hamt_and_lossy_links(identity: S5Identity) -> None:
    """A HAMT with child node blobs, and a mutable DirRef whose key s5.js dropped."""
    store = Store()
    file_hash = store.add_blob(b"payload")
    sub_keys = identity.directory("home/x/sub")
    store.point(sub_keys, encode_dirv1(DirV1({}, {}, {"f.bin": FileRef(file_hash, 7)})))
    leaf = HamtLeaf((("f:deep.bin", FileRef(file_hash, 7)),))
    leaf_node = HamtNode((leaf,), bitmap=1 << 3, count=1, depth=2)
    mid_hash = store.add_blob(encode_hamt(leaf_node, root=False))
    middle = HamtNode((HamtNodeRef(bytes([MHASH_BLAKE3]) + mid_hash),), bitmap=1 << 9, count=1, depth=1)
    middle_hash = store.add_blob(encode_hamt(middle, root=False))
    root = HamtNode(
        (
            HamtLeaf((("f:other", FileRef(file_hash, 7)), ("d:sub", None))),
            HamtNodeRef(bytes([MHASH_BLAKE3]) + middle_hash),
        ),
        bitmap=0b11, count=3,
    )  # fmt: skip
    hamt_root = store.add_blob(encode_hamt(root, root=True))
    x_dir = DirV1(sharded_header(bytes([MHASH_BLAKE3]) + hamt_root, 3), {}, {})
    x_keys = identity.directory("home/x")
    store.point(x_keys, encode_dirv1(x_dir))
    home = DirV1({}, {"x": DirRef(x_keys.public_key)}, {})
    home_keys = identity.directory("home")
    store.point(home_keys, encode_dirv1(home))
    root_dir = encode_dirv1(DirV1({}, {"home": DirRef(home_keys.public_key)}, {}))
    from fabstir_node.s5.encryption import encrypt_mutable

    root_keys = identity.root()
    root_blob = encrypt_mutable(root_keys.encryption_key, root_dir)
    store.point(root_keys, root_blob)

    assert store.resolve(root_keys, "home/x/deep.bin").data == b"payload"
    # "d:sub" has no link (as s5.js writes mutable links into HAMT leaves): derivable with the write key ...
    assert store.resolve(root_keys, "home/x/sub/f.bin").data == b"payload"
    # ... but not from a shared public key.
    with pytest.raises(FabstirError) as info:
        store.resolve(DirectoryKeys.from_public_key(x_keys.public_key32), "sub/f.bin")
    assert info.value.code is ErrorCode.S5_INVALID_DIRECTORY
    with pytest.raises(StorageNotFound):
        store.resolve(root_keys, "home/x/absent.bin")


def test_repeated_hamt_child_is_fetched_once() -> None:
    """Content addressing rules out true cycles; repeated child ids are still fetched only once."""
    store = Store()
    keys = DirectoryKeys.from_write_key(bytes(range(32)))
    empty_child = store.add_blob(encode_hamt(HamtNode((HamtLeaf(()),)), root=False))
    ref = HamtNodeRef(bytes([MHASH_BLAKE3]) + empty_child)
    hamt_root = store.add_blob(encode_hamt(HamtNode((ref, ref, ref)), root=True))
    directory = DirV1(sharded_header(bytes([MHASH_BLAKE3]) + hamt_root, 0), {}, {})
    store.point(keys, encode_dirv1(directory))
    with pytest.raises(StorageNotFound):
        store.resolve(keys, "x")
    assert [r.purpose for r in store.blob_requests] == ["directory", "hamt", "hamt"]


def test_directory_listing_decodes_like_s5js(identity: S5Identity) -> None:
    store = publish(identity, **{"home__db__a.json": {"x": 1}, "home__db__b.txt": "b"})
    listing = store.resolve(identity.root(), "home/db", kind="directory")
    assert sorted(listing.directory.files) == ["a.json", "b.txt"]
    assert listing.keys.public_key == identity.directory("home/db").public_key
    raw_root = store.resolve(identity.root(), "", kind="directory")
    assert sorted(raw_root.directory.dirs) == ["home"]
    assert decode_dirv1(encode_dirv1(listing.directory)) == listing.directory
