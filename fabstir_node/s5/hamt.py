"""HAMT shards of large directories (s5.md §3.5; s5.js ``src/fs/hamt``).

A directory with 1000+ entries keeps empty inline maps and points at a HAMT
root blob (CBOR, *no* ``5f5d`` magic)::

    {"version": 1, "config": {...}, "root": NODE}
    NODE  = {"bitmap": u32, "children": [CHILD...], "count": n, "depth": d}
    CHILD = {"type": "node", "cid": 0x1e||hash}          -- another NODE blob
          | {"type": "leaf", "entries": [["f:name", {"hash", "size"}],
                                         ["d:name", {"link": {"type", "hash"}}]]}

s5.js navigates by xxhash64 of the key; a reader can instead walk every
child, which needs no hash function (:func:`find_in_node` reports which
child blobs it still needs).  Leaf entries are lossy in s5.js: FileRefs keep
only hash and size (so no encryption metadata), and mutable DirRefs lose
their public key.  Our writer stores the public key in ``link.hash`` so we
can read it back; s5.js cannot follow such links either way.
"""

from __future__ import annotations

from typing import Any

import attrs

from fabstir_node.errors import ErrorCode, FabstirError
from fabstir_node.s5 import cborx
from fabstir_node.s5.cborx import JsMap
from fabstir_node.s5.cid import MHASH_BLAKE3, MHASH_BLAKE3_DEFAULT, MKEY_ED25519
from fabstir_node.s5.dirv1 import DirRef, FileRef

__all__ = [
    "HAMT_CONFIG",
    "HamtLeaf",
    "HamtNode",
    "HamtNodeRef",
    "decode_hamt",
    "encode_hamt",
    "find_in_node",
    "sharded_header",
    "single_leaf_root",
]

HAMT_CONFIG = {"bitsPerLevel": 5, "hashFunction": 0, "maxInlineEntries": 1000}
_LINK_TYPES = {"fixed_hash_blake3": MHASH_BLAKE3, "mutable_registry_ed25519": MKEY_ED25519}
_LINK_NAMES = {v: k for k, v in _LINK_TYPES.items()}


def _invalid(message: str) -> FabstirError:
    return FabstirError(ErrorCode.S5_INVALID_DIRECTORY, message)


@attrs.frozen
class HamtNodeRef:
    """A child node stored as its own blob."""

    hash33: bytes


#: A leaf value: a FileRef, a DirRef, or None for a DirRef whose link s5.js dropped.
HamtValue = FileRef | DirRef | None


@attrs.frozen
class HamtLeaf:
    entries: tuple[tuple[str, HamtValue], ...]


@attrs.frozen
class HamtNode:
    children: tuple[HamtNodeRef | HamtLeaf, ...]
    bitmap: int = 0
    count: int = 0
    depth: int = 0


def _hash33(cid: Any) -> bytes:
    if isinstance(cid, bytes) and len(cid) == 32:
        return bytes([MHASH_BLAKE3]) + cid
    if isinstance(cid, bytes) and len(cid) == 33 and cid[0] in (MHASH_BLAKE3, MHASH_BLAKE3_DEFAULT):
        return bytes([MHASH_BLAKE3]) + cid[1:]
    raise _invalid("HAMT child node has a malformed cid")


def _leaf_value(key: str, raw: Any) -> HamtValue:
    if not isinstance(raw, dict):
        raise _invalid("HAMT leaf entry value must be a map")
    if key.startswith("f:"):
        file_hash, size, media_type = raw.get("hash"), raw.get("size"), raw.get("media_type")
        if not isinstance(file_hash, bytes) or len(file_hash) != 32:
            raise _invalid("HAMT file entry has a malformed hash")
        if isinstance(size, bool) or not isinstance(size, int) or size < 0:
            raise _invalid("HAMT file entry has a malformed size")
        return FileRef(file_hash, size, media_type if isinstance(media_type, str) else None)
    link = raw.get("link")
    if not isinstance(link, dict):
        raise _invalid("HAMT directory entry has no link")
    link_type = link.get("type")
    prefix = _LINK_TYPES.get(link_type) if isinstance(link_type, str) else None
    link_hash = link.get("hash")
    if prefix is None:
        raise _invalid("HAMT directory entry has an unknown link type")
    if not isinstance(link_hash, bytes) or len(link_hash) != 32:
        return None  # what s5.js writes for mutable links: the key is lost
    return DirRef(bytes([prefix]) + link_hash)


def _decode_node(raw: Any) -> HamtNode:
    if not isinstance(raw, dict) or not isinstance(raw.get("children"), list):
        raise _invalid("malformed HAMT node")
    children: list[HamtNodeRef | HamtLeaf] = []
    for child in raw["children"]:
        if not isinstance(child, dict):
            raise _invalid("malformed HAMT child")
        if child.get("type") == "node":
            children.append(HamtNodeRef(_hash33(child.get("cid"))))
            continue
        entries = child.get("entries")
        if child.get("type") != "leaf" or not isinstance(entries, list):
            raise _invalid("malformed HAMT leaf")
        leaf = []
        for entry in entries:
            if not isinstance(entry, list) or len(entry) != 2 or not isinstance(entry[0], str):
                raise _invalid("malformed HAMT leaf entry")
            leaf.append((entry[0], _leaf_value(entry[0], entry[1])))
        children.append(HamtLeaf(tuple(leaf)))
    ints = [raw.get(k) for k in ("bitmap", "count", "depth")]
    bitmap, count, depth = (v if isinstance(v, int) and not isinstance(v, bool) else 0 for v in ints)
    return HamtNode(tuple(children), bitmap, count, depth)


def decode_hamt(blob: bytes, *, root: bool) -> HamtNode:
    """Parse a HAMT root blob (``root=True``) or a child node blob."""
    decoded = cborx.decode(blob, code=ErrorCode.S5_INVALID_DIRECTORY, what="HAMT node")
    if root:
        if not isinstance(decoded, dict):
            raise _invalid("malformed HAMT root")
        decoded = decoded.get("root")
        if decoded is None or (isinstance(decoded, dict) and not decoded.get("children")):
            return HamtNode(())
    return _decode_node(decoded)


def find_in_node(node: HamtNode, key: str) -> tuple[bool, HamtValue, tuple[bytes, ...]]:
    """Look ``key`` (``"f:name"`` / ``"d:name"``) up in one node.

    Returns ``(found, value, pending)``: if not found here, ``pending`` lists
    the child node blobs (hash33) still to search.
    """
    pending = []
    for child in node.children:
        if isinstance(child, HamtLeaf):
            for entry_key, value in child.entries:
                if entry_key == key:
                    return True, value, ()
        else:
            pending.append(child.hash33)
    return False, None, tuple(pending)


def _encode_value(key: str, value: HamtValue) -> JsMap:
    if value is None:  # a mutable link without its key, exactly as s5.js writes it
        return JsMap(link=JsMap(type="mutable_registry_ed25519", hash=cborx.UNDEFINED))
    if isinstance(value, FileRef):
        return JsMap(hash=value.hash, size=value.size)
    return JsMap(link=JsMap(type=_LINK_NAMES[value.link[0]], hash=value.link[1:]))


def _encode_node(node: HamtNode) -> JsMap:
    children = []
    for child in node.children:
        if isinstance(child, HamtNodeRef):
            children.append(JsMap(type="node", cid=child.hash33))
        else:
            entries = [
                [k, _encode_value(k, v)] for k, v in child.entries if v is not None or k.startswith("d:")
            ]
            children.append(JsMap(type="leaf", entries=entries))
    return JsMap(bitmap=node.bitmap, children=children, count=node.count, depth=node.depth)


def encode_hamt(node: HamtNode, *, root: bool) -> bytes:
    """CBOR of a HAMT root blob (with version and config) or of a child node blob."""
    if not root:
        return cborx.encode(_encode_node(node), js_numbers=False)
    structure = JsMap(version=1, config=JsMap(HAMT_CONFIG), root=_encode_node(node))
    return cborx.encode(structure, js_numbers=False)


def single_leaf_root(files: dict[str, FileRef], dirs: dict[str, DirRef]) -> HamtNode:
    """A root holding every entry in one leaf (bitmap 1), which s5.js searches linearly."""
    entries: list[tuple[str, FileRef | DirRef | None]] = [(f"f:{name}", ref) for name, ref in files.items()]
    entries += [(f"d:{name}", ref) for name, ref in dirs.items()]
    return HamtNode((HamtLeaf(tuple(entries)),), bitmap=1, count=len(entries), depth=0)


def sharded_header(root_hash33: bytes, total_entries: int, depth: int = 0) -> dict[str, Any]:
    """``header`` of a sharded DirV1, as ``_checkAndConvertToSharded`` writes it."""
    return {
        "sharding": {
            "type": "hamt",
            "config": {"bitsPerLevel": 5, "maxInlineEntries": 1000, "hashFunction": 0},
            "root": {"cid": bytes(root_hash33), "totalEntries": total_entries, "depth": depth},
        }
    }
