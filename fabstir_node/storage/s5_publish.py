"""Writing files into an FS5 tree through portals, the way s5.js ``fs.put`` does.

:func:`publish_files` puts files into one directory of a tree whose write key
we hold, and keeps everything else in the tree:

1. read the current DirV1 and registry revision of every directory from the
   root down to the target (the root decrypted with its key);
2. encode the files with :class:`~fabstir_node.s5.writer.TreeWriter` (s5.js
   ``fs.put`` encoding, optional per-file XChaCha20-Poly1305);
3. write the target directory with the new files (its other entries kept
   unless ``replace``), then each ancestor that does not yet link to its
   child -- an ancestor that already does is left alone, and so is everything
   above it (links are by public key, so they never go stale);
4. upload every blob, then set the registry entries bottom-up (revision =
   current + 1; the root stays encrypted), so a reader never meets a link to
   a directory that is not there yet.

Sharded (HAMT) directories are read by the resolver but not rewritten here:
adding to one raises ``S5_INVALID_DIRECTORY``.  A directory that reaches the
s5.js threshold is written sharded, as s5.js would.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping

import attrs
import trio

from ..errors import ErrorCode, FabstirError, StorageUnavailable
from ..s5.cid import MHASH_BLAKE3, BlobId, blake3_hash
from ..s5.dirv1 import DirRef, DirV1, FileRef, decode_dirv1, encode_dirv1
from ..s5.encryption import decrypt_mutable, encrypt_mutable, is_mutable_encrypted
from ..s5.hamt import encode_hamt, sharded_header, single_leaf_root
from ..s5.identity import DirectoryKeys, split_path
from ..s5.registry import RegistryEntry, entry_hash33, sign_entry
from ..s5.writer import SHARD_THRESHOLD, TreeWriter
from .s5_portal import PortalClient

__all__ = ["publish_files"]

#: Uploads in flight at once.
PARALLEL_UPLOADS = 4


@attrs.define
class _Current:
    """A directory as it is now: its keys, contents and registry revision (0 = none)."""

    keys: DirectoryKeys
    directory: DirV1
    revision: int


async def _read_directory(portal: PortalClient, keys: DirectoryKeys, where: str) -> _Current:
    entry = await portal.get_entry(keys.public_key)
    if entry is None:
        return _Current(keys, DirV1({}, {}, {}), 0)
    blob = await portal.get_blob(BlobId(entry_hash33(entry)[1:], 0))
    if blob is None:
        raise StorageUnavailable(where or "/", "directory blob not found; not overwriting it")
    if is_mutable_encrypted(blob):
        if keys.encryption_key is None:
            raise FabstirError(ErrorCode.DECRYPTION_FAILED, "directory is encrypted and no key was given")
        blob = decrypt_mutable(keys.encryption_key, blob)
    directory = decode_dirv1(blob)
    if directory.sharding is not None:
        raise FabstirError(
            ErrorCode.S5_INVALID_DIRECTORY, f"cannot add to the sharded directory {where or '/'!r}"
        )
    return _Current(keys, directory, entry.revision)


def _write_directory(
    current: _Current,
    dirs: dict[str, DirRef],
    files: dict[str, FileRef],
    blobs: dict[bytes, bytes],
    nonce: Callable[[int], bytes],
) -> RegistryEntry:
    """Encode (shard, encrypt) one directory into ``blobs``; its signed entry."""
    directory = DirV1(dict(current.directory.header), dirs, files)
    if len(dirs) + len(files) >= SHARD_THRESHOLD:
        hamt_blob = encode_hamt(single_leaf_root(files, dirs), root=True)
        hamt_hash = blake3_hash(hamt_blob)
        blobs[hamt_hash] = hamt_blob
        header = sharded_header(bytes([MHASH_BLAKE3]) + hamt_hash, len(dirs) + len(files))
        directory = DirV1(header, {}, {})
    blob = encode_dirv1(directory)
    keys = current.keys
    if keys.encryption_key is not None:
        blob = encrypt_mutable(keys.encryption_key, blob, nonce(24))
    blob_hash = blake3_hash(blob)
    blobs[blob_hash] = blob
    assert keys.write_key is not None
    return sign_entry(keys.write_key, current.revision + 1, bytes([MHASH_BLAKE3]) + blob_hash)


async def publish_files(
    portal: PortalClient,
    root: DirectoryKeys,
    directory: str,
    files: Mapping[str, bytes],
    *,
    replace: bool = True,
    encryption_key: Callable[[str], bytes | None] | None = None,
    timestamp: int | None = None,
    nonce: Callable[[int], bytes] = os.urandom,
) -> DirectoryKeys:
    """Put ``files`` (name -> bytes) into ``directory`` of the tree ``root``; returns that directory's keys.

    ``replace`` drops the directory's other files (its sub-directories stay).
    ``encryption_key(name)`` may give a 32-byte key to encrypt a file with
    (the key is stored in the directory, as s5.js does).  The returned keys'
    ``public_key32`` is what s5.js ``getPublicDirectoryKey`` would give.
    """
    if root.write_key is None:
        raise FabstirError(ErrorCode.INVALID_PATH, "writing a tree needs its write key")
    segments = split_path(directory)
    stamp = int(time.time()) if timestamp is None else timestamp
    chain = [root]
    for name in segments:
        chain.append(chain[-1].child(name))
    current = [
        await _read_directory(portal, keys, "/".join(segments[:depth])) for depth, keys in enumerate(chain)
    ]

    writer = TreeWriter(chain[-1], stamp, nonce)
    refs = {
        name: writer.put(name, data, encryption_key=encryption_key(name) if encryption_key else None)
        for name, data in files.items()
    }
    written = writer.build().blobs
    blobs: dict[bytes, bytes] = {ref.hash: written[ref.hash] for ref in refs.values()}
    entries: list[RegistryEntry] = []

    target = current[-1]
    new_files = dict(refs) if replace else {**target.directory.files, **refs}
    entries.append(_write_directory(target, dict(target.directory.dirs), new_files, blobs, nonce))
    for depth in range(len(segments) - 1, -1, -1):
        parent, name, child = current[depth], segments[depth], chain[depth + 1]
        link = parent.directory.dirs.get(name)
        if link is not None and link.link == child.public_key:
            break
        dirs = {**parent.directory.dirs, name: DirRef(child.public_key, stamp)}
        entries.append(_write_directory(parent, dirs, dict(parent.directory.files), blobs, nonce))

    limiter = trio.CapacityLimiter(PARALLEL_UPLOADS)

    async def upload(data: bytes) -> None:
        async with limiter:
            await portal.upload(data)

    async with trio.open_nursery() as nursery:
        for data in blobs.values():
            nursery.start_soon(upload, data)
    for entry in entries:  # bottom-up: children before the parents that link them
        await portal.set_entry(entry)
    return chain[-1]
