"""FS5 directory blobs, "DirV1" (s5.md §3.3; s5.js ``src/fs/dirv1``).

Layout: ``5f 5d`` then the CBOR array ``["S5.pro", header, dirs, files]``::

    DirRef  {2: link(33), 7: ts_seconds, 8: ts_nanos}
    FileRef {3: hash(32), 4: size, 6: media_type, 7: timestamp, 8: nanos,
             9: [[tag, value], ...], 22: hash_type | extra map, 23: prev FileRef}

A link is ``0xed || pk32`` (a mutable directory, the normal case) or
``0x1e || blake3`` (a fixed directory).  A sharded directory has empty maps
and ``header["sharding"]`` pointing at a HAMT (:mod:`.hamt`).

:func:`decode_dirv1` accepts what s5.js ``DirV1Serialiser.deserialise``
accepts and raises ``S5_INVALID_DIRECTORY`` for anything else;
:func:`encode_dirv1` writes what ``serialise`` writes (entry names in
``localeCompare`` order, FileRef keys in the order 3,4,6,7,8,9,22,23).
"""

from __future__ import annotations

from typing import Any

import attrs

from fabstir_node.errors import ErrorCode, FabstirError
from fabstir_node.s5 import cborx
from fabstir_node.s5.cborx import JsMap
from fabstir_node.s5.cid import MHASH_BLAKE3, MHASH_BLAKE3_DEFAULT, MKEY_ED25519
from fabstir_node.s5.collation import locale_sort_key

__all__ = [
    "DIRV1_MAGIC",
    "ENCRYPTION_ALGORITHM",
    "DirRef",
    "DirV1",
    "FileEncryption",
    "FileRef",
    "Sharding",
    "decode_dirv1",
    "encode_dirv1",
    "file_encryption_extra",
]

DIRV1_MAGIC = b"\x5f\x5d"
MAGIC_STRING = "S5.pro"
ENCRYPTION_ALGORITHM = "xchacha20-poly1305"

# FileRef / DirRef CBOR keys
_HASH, _SIZE, _MEDIA_TYPE, _TIMESTAMP, _NANOS, _LOCATIONS, _HASH_TYPE, _PREV = 3, 4, 6, 7, 8, 9, 22, 23
_LINK, _TS_SECONDS, _TS_NANOS = 2, 7, 8
# BlobLocation tags and the Python type of their value
_LOCATION_TYPES = {0x00: bytes, 0x01: str, 0x11: bytes, 0x12: bytes, 0x1E: bytes, 0xD5: bytes}


def _invalid(message: str, detail: str | None = None) -> FabstirError:
    return FabstirError(ErrorCode.S5_INVALID_DIRECTORY, message, detail=detail)


def _opt_int(value: Any, what: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise _invalid(f"directory {what} must be a non-negative integer")
    return value


@attrs.frozen
class FileEncryption:
    """Per-file encryption metadata (FileRef key 22, ``{"encryption": {...}}``)."""

    algorithm: str
    key: bytes = attrs.field(repr=False)
    plaintext_hash: bytes | None = None


@attrs.frozen
class FileRef:
    """A file entry.  ``hash`` is of the stored bytes (the ciphertext if encrypted)."""

    hash: bytes = attrs.field(converter=bytes)
    size: int
    media_type: str | None = None
    timestamp: int | None = None
    timestamp_subsec_nanos: int | None = None
    locations: tuple[tuple[int, Any], ...] | None = None
    extra: dict[Any, Any] | None = attrs.field(default=None, repr=False)
    hash_type: int | None = None
    prev: FileRef | None = None

    @property
    def encryption(self) -> FileEncryption | None:
        """The ``extra["encryption"]`` metadata, validated, or None if the file is plain."""
        if not self.extra or "encryption" not in self.extra:
            return None
        meta = self.extra["encryption"]
        if not isinstance(meta, dict) or not isinstance(meta.get("algorithm"), str):
            raise _invalid("file encryption metadata is malformed")
        plaintext_hash = meta.get("plaintextHash")
        return FileEncryption(
            algorithm=meta["algorithm"],
            key=_byte_list(meta.get("key"), "key"),
            plaintext_hash=None if plaintext_hash is None else _byte_list(plaintext_hash, "plaintextHash"),
        )


def _byte_list(value: Any, what: str) -> bytes:
    if isinstance(value, bytes) and len(value) == 32:
        return value
    if (
        isinstance(value, list)
        and len(value) == 32
        and all(isinstance(b, int) and not isinstance(b, bool) and 0 <= b <= 255 for b in value)
    ):
        return bytes(value)
    raise _invalid(f"file encryption {what} must be 32 bytes")


def file_encryption_extra(key: bytes, plaintext_hash: bytes) -> dict[str, Any]:
    """The FileRef ``extra`` map ``fs.put(..., {encryption})`` writes (plain-object inner map)."""
    return JsMap(
        encryption={
            "algorithm": ENCRYPTION_ALGORITHM,
            "key": list(bytes(key)),
            "plaintextHash": list(bytes(plaintext_hash)),
        }
    )


@attrs.frozen
class DirRef:
    """A sub-directory entry: ``link`` is ``0xed || pk32`` or ``0x1e || hash``."""

    link: bytes = attrs.field(converter=bytes)
    ts_seconds: int | None = None
    ts_nanos: int | None = None

    def __attrs_post_init__(self) -> None:
        if len(self.link) != 33 or self.link[0] not in (MHASH_BLAKE3, MKEY_ED25519):
            raise _invalid("directory link must be 33 bytes starting with 0x1e or 0xed")

    @property
    def is_mutable(self) -> bool:
        return self.link[0] == MKEY_ED25519


@attrs.frozen
class Sharding:
    """``header["sharding"]``: where the HAMT of a large directory lives."""

    root_hash33: bytes
    total_entries: int | None = None
    depth: int | None = None


@attrs.frozen
class DirV1:
    """A decoded directory.  ``header`` is kept as decoded (maps as dicts)."""

    header: dict[Any, Any] = attrs.field(factory=dict)
    dirs: dict[str, DirRef] = attrs.field(factory=dict)
    files: dict[str, FileRef] = attrs.field(factory=dict)

    @property
    def sharding(self) -> Sharding | None:
        """The HAMT reference if this directory is sharded (s5.js tests ``sharding.root.cid``)."""
        sharding = self.header.get("sharding")
        if sharding is None:
            return None
        root = sharding.get("root") if isinstance(sharding, dict) else None
        if not isinstance(root, dict):
            return None
        cid = root.get("cid")
        if not cid:
            return None
        if not isinstance(cid, bytes):
            raise _invalid("sharded directory has a malformed HAMT root")
        if len(cid) == 32:
            cid = bytes([MHASH_BLAKE3]) + cid
        if len(cid) != 33 or cid[0] not in (MHASH_BLAKE3, MHASH_BLAKE3_DEFAULT):
            raise _invalid("sharded directory has a malformed HAMT root")
        total = root.get("totalEntries")
        depth = root.get("depth")
        return Sharding(
            root_hash33=bytes([MHASH_BLAKE3]) + cid[1:],
            total_entries=total if isinstance(total, int) else None,
            depth=depth if isinstance(depth, int) else None,
        )


# --- decoding ---------------------------------------------------------------------


def _decode_dir_ref(raw: dict[Any, Any]) -> DirRef:
    link = raw.get(_LINK)
    if not isinstance(link, bytes) or len(link) != 33:
        raise _invalid("invalid DirRef link")
    if link[0] not in (MHASH_BLAKE3, MKEY_ED25519):
        raise _invalid("unknown DirLink type", detail=hex(link[0]))
    seconds = _opt_int(raw.get(_TS_SECONDS), "ts_seconds")
    return DirRef(link, seconds, _opt_int(raw.get(_TS_NANOS), "ts_nanos"))


def _decode_locations(raw: Any) -> tuple[tuple[int, Any], ...] | None:
    if raw is None:
        return None
    if not isinstance(raw, list):
        raise _invalid("FileRef locations must be an array")
    locations: list[tuple[int, Any]] = []
    for item in raw:
        if not isinstance(item, list) or len(item) != 2:
            raise _invalid("a blob location must be a [tag, value] pair")
        tag, value = item
        expected = _LOCATION_TYPES.get(tag) if isinstance(tag, int) and not isinstance(tag, bool) else None
        if expected is None or not isinstance(value, expected):
            raise _invalid("unknown or malformed blob location")
        locations.append((tag, value))
    return tuple(locations)


def _decode_file_ref(raw: dict[Any, Any]) -> FileRef:
    file_hash = raw.get(_HASH)
    if not isinstance(file_hash, bytes) or len(file_hash) != 32:
        raise _invalid("invalid FileRef hash")
    raw_size = raw.get(_SIZE)
    size = _opt_int(raw_size, "file size")
    if size is None:
        raise _invalid("invalid FileRef size")
    media_type = raw.get(_MEDIA_TYPE)
    if media_type is not None and not isinstance(media_type, str):
        raise _invalid("FileRef media type must be text")
    key22 = raw.get(_HASH_TYPE)
    extra = key22 if isinstance(key22, dict) else None
    hash_type = None
    if key22 is not None and extra is None:
        hash_type = _opt_int(key22, "hash type")
    prev = raw.get(_PREV)
    return FileRef(
        hash=file_hash,
        size=size,
        media_type=media_type,
        timestamp=_opt_int(raw.get(_TIMESTAMP), "timestamp"),
        timestamp_subsec_nanos=_opt_int(raw.get(_NANOS), "timestamp nanos"),
        locations=_decode_locations(raw.get(_LOCATIONS)),
        extra=extra,
        hash_type=hash_type,
        prev=_decode_file_ref(prev) if isinstance(prev, dict) else None,
    )


def decode_dirv1(blob: bytes) -> DirV1:
    """Parse a (decrypted) directory blob; the ``5f 5d`` magic is optional, as in s5.js."""
    blob = bytes(blob)
    if len(blob) < 2:
        raise _invalid("data too short to be a DirV1 directory")
    body = blob[2:] if blob[:2] == DIRV1_MAGIC else blob
    decoded = cborx.decode(body, code=ErrorCode.S5_INVALID_DIRECTORY, what="directory")
    if not isinstance(decoded, list) or len(decoded) != 4:
        raise _invalid("invalid DirV1 CBOR structure")
    magic, header, dirs_raw, files_raw = decoded
    if magic != MAGIC_STRING:
        raise _invalid("invalid DirV1 magic string")
    if not isinstance(header, dict):
        raise _invalid("DirV1 header must be a map")
    dirs: dict[str, DirRef] = {}
    if isinstance(dirs_raw, dict):
        for name, raw in dirs_raw.items():
            if isinstance(name, str) and isinstance(raw, dict):
                dirs[name] = _decode_dir_ref(raw)
    files: dict[str, FileRef] = {}
    if isinstance(files_raw, dict):
        for name, raw in files_raw.items():
            if isinstance(name, str) and isinstance(raw, dict):
                files[name] = _decode_file_ref(raw)
    return DirV1(header=header, dirs=dirs, files=files)


# --- encoding ---------------------------------------------------------------------


def _file_ref_map(ref: FileRef) -> JsMap:
    out = JsMap()
    out[_HASH] = ref.hash
    out[_SIZE] = ref.size
    if ref.media_type is not None:
        out[_MEDIA_TYPE] = ref.media_type
    if ref.timestamp is not None:
        out[_TIMESTAMP] = ref.timestamp
    if ref.timestamp_subsec_nanos is not None:
        out[_NANOS] = ref.timestamp_subsec_nanos
    if ref.locations is not None:
        out[_LOCATIONS] = [[tag, value] for tag, value in ref.locations]
    if ref.extra:
        out[_HASH_TYPE] = ref.extra if isinstance(ref.extra, JsMap) else JsMap(ref.extra)
    elif ref.hash_type is not None:
        out[_HASH_TYPE] = ref.hash_type
    if ref.prev is not None:
        out[_PREV] = _file_ref_map(ref.prev)
    return out


def _dir_ref_map(ref: DirRef) -> JsMap:
    out = JsMap({_LINK: ref.link})
    if ref.ts_seconds is not None:
        out[_TS_SECONDS] = ref.ts_seconds
    if ref.ts_nanos is not None:
        out[_TS_NANOS] = ref.ts_nanos
    return out


def _sorted(entries: dict[str, Any]) -> list[tuple[str, Any]]:
    return sorted(entries.items(), key=lambda item: locale_sort_key(item[0]))


def encode_dirv1(directory: DirV1) -> bytes:
    """``5f 5d`` + CBOR, byte-compatible with s5.js ``DirV1Serialiser.serialise``."""
    header = directory.header if isinstance(directory.header, JsMap) else JsMap(directory.header)
    structure = [
        MAGIC_STRING,
        header,
        JsMap((name, _dir_ref_map(ref)) for name, ref in _sorted(directory.dirs)),
        JsMap((name, _file_ref_map(ref)) for name, ref in _sorted(directory.files)),
    ]
    return DIRV1_MAGIC + cborx.encode(structure, js_numbers=False)
