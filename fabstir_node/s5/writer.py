"""Build an FS5 tree the way s5.js writes it: blobs plus signed registry entries.

Pure: :class:`TreeWriter` collects files, then :meth:`TreeWriter.build`
returns a :class:`Publication` (every blob by hash, every registry entry by
key) for a portal or ``publish`` to store.  What it writes matches s5.js:

* a directory is a DirV1 blob; its registry entry holds ``0x1e || blake3(blob)``
  and is signed with the directory's write key;
* only the root directory is encrypted (``8d 01``, padded, random nonce);
* child directory keys derive from the parent write key and the name;
* ``put`` encodes values like ``fs.put`` (objects as CBOR, text as UTF-8),
  optionally with per-file XChaCha20-Poly1305 (key kept in the FileRef);
* a directory with 1000+ entries is sharded into a single-leaf HAMT.

Revisions are ``previous + 1``; pass the current revisions to :meth:`build`
when updating an existing tree.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import Any

import attrs

from fabstir_node.errors import ErrorCode, FabstirError
from fabstir_node.s5.cid import MHASH_BLAKE3, blake3_hash
from fabstir_node.s5.content import encode_content
from fabstir_node.s5.dirv1 import DirRef, DirV1, FileRef, encode_dirv1, file_encryption_extra
from fabstir_node.s5.encryption import encrypt_chunked, encrypt_mutable
from fabstir_node.s5.hamt import encode_hamt, sharded_header, single_leaf_root
from fabstir_node.s5.identity import DirectoryKeys, split_path
from fabstir_node.s5.registry import RegistryEntry, sign_entry

__all__ = ["SHARD_THRESHOLD", "Publication", "TreeWriter"]

#: s5.js ``_checkAndConvertToSharded`` threshold.
SHARD_THRESHOLD = 1000


@attrs.frozen
class Publication:
    """Everything to store: ``blobs`` by 32-byte hash, ``entries`` by 33-byte key."""

    blobs: dict[bytes, bytes] = attrs.field(repr=lambda b: f"<{len(b)} blobs>")
    entries: dict[bytes, RegistryEntry]


@attrs.define
class _Dir:
    keys: DirectoryKeys
    files: dict[str, FileRef] = attrs.field(factory=dict)
    dirs: dict[str, _Dir] = attrs.field(factory=dict)


@attrs.define
class TreeWriter:
    """Collects a tree below ``root`` (usually ``S5Identity.root()``); needs write keys.

    ``timestamp`` (seconds) is written into FileRefs and DirRefs; ``nonce``
    produces the root's 24-byte encryption nonce (random by default).
    """

    root: DirectoryKeys
    timestamp: int
    nonce: Callable[[int], bytes] = os.urandom
    _tree: _Dir = attrs.field(init=False)
    _blobs: dict[bytes, bytes] = attrs.field(init=False, factory=dict)

    def __attrs_post_init__(self) -> None:
        if self.root.write_key is None:
            raise FabstirError(ErrorCode.INVALID_PATH, "writing a tree needs its write key")
        self._tree = _Dir(self.root)

    def mkdir(self, path: str) -> None:
        """Create the directory at ``path`` (and its parents) if missing."""
        self._dir(split_path(path))

    def _dir(self, segments: list[str]) -> _Dir:
        node = self._tree
        for name in segments:
            if name not in node.dirs:
                node.dirs[name] = _Dir(node.keys.child(name))
            node = node.dirs[name]
        return node

    def put(
        self,
        path: str,
        value: Any,
        *,
        media_type: str | None = None,
        encryption_key: bytes | None = None,
    ) -> FileRef:
        """Store ``value`` at ``path`` like ``fs.put`` and return its FileRef."""
        segments = split_path(path)
        if not segments:
            raise FabstirError(ErrorCode.INVALID_PATH, "cannot put data at the root directory")
        data, media = encode_content(value, segments[-1], media_type)
        extra = None
        stored = data
        if encryption_key is not None:
            stored = encrypt_chunked(encryption_key, data)
            extra = file_encryption_extra(encryption_key, blake3_hash(data))
        file_hash = blake3_hash(stored)
        self._blobs[file_hash] = stored
        ref = FileRef(file_hash, len(data), media, self.timestamp, extra=extra)
        self._dir(segments[:-1]).files[segments[-1]] = ref
        return ref

    def build(self, previous_revisions: Mapping[bytes, int] | None = None) -> Publication:
        """Encode every directory bottom-up and sign its registry entry."""
        previous = previous_revisions or {}
        blobs = dict(self._blobs)
        entries: dict[bytes, RegistryEntry] = {}
        self._build_dir(self._tree, blobs, entries, previous)
        return Publication(blobs, entries)

    def _build_dir(
        self,
        node: _Dir,
        blobs: dict[bytes, bytes],
        entries: dict[bytes, RegistryEntry],
        previous: Mapping[bytes, int],
    ) -> None:
        for child in node.dirs.values():
            self._build_dir(child, blobs, entries, previous)
        dirs = {name: DirRef(child.keys.public_key, self.timestamp) for name, child in node.dirs.items()}
        directory = DirV1({}, dirs, dict(node.files))
        if len(dirs) + len(node.files) >= SHARD_THRESHOLD:
            hamt_blob = encode_hamt(single_leaf_root(node.files, dirs), root=True)
            hamt_hash = blake3_hash(hamt_blob)
            blobs[hamt_hash] = hamt_blob
            header = sharded_header(bytes([MHASH_BLAKE3]) + hamt_hash, len(dirs) + len(node.files))
            directory = DirV1(header, {}, {})
        blob = encode_dirv1(directory)
        if node.keys.encryption_key is not None:
            blob = encrypt_mutable(node.keys.encryption_key, blob, self.nonce(24))
        blob_hash = blake3_hash(blob)
        blobs[blob_hash] = blob
        assert node.keys.write_key is not None
        revision = previous.get(node.keys.public_key, 0) + 1
        entry = sign_entry(node.keys.write_key, revision, bytes([MHASH_BLAKE3]) + blob_hash)
        entries[entry.pk] = entry
