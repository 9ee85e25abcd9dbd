"""S5 blob identifiers and the check every downloaded blob must pass (s5.md §1).

A *BlobId* names immutable bytes by their BLAKE3-256 hash and their size::

    5b 82 | 1e | hash(32) | size (u64 little-endian, trailing zero bytes cut)

The older *raw CID* the Dart node returns is ``26 1f | hash | size``; the
Advanced API's *raw hash CID* is the bare 32-byte hash (no size).  All three
are accepted by :func:`parse_blob_id`, which always yields a :class:`BlobId`
(size 0 when unknown -- s5.js itself fetches with size 0).

:func:`verify_blob` is the single gate between the network and everything
else: hash the whole body, compare with the id, compare the size when the id
carries one.  It raises ``S5_HASH_MISMATCH`` and is pure.
"""

from __future__ import annotations

import attrs
import blake3

from fabstir_node.errors import ErrorCode, FabstirError
from fabstir_node.s5 import multibase

__all__ = [
    "BLOB_MAGIC",
    "BLOB_TYPE_DEFAULT",
    "LEGACY_RAW_CID",
    "MHASH_BLAKE3",
    "MHASH_BLAKE3_DEFAULT",
    "MKEY_ED25519",
    "BlobId",
    "blake3_hash",
    "cid_kind",
    "decode_size",
    "encode_size",
    "parse_blob_id",
    "verify_blob",
]

BLOB_MAGIC = 0x5B
BLOB_TYPE_DEFAULT = 0x82
MHASH_BLAKE3 = 0x1E
#: Legacy spelling of BLAKE3 ("blake3 default"); readers treat it as 0x1e.
MHASH_BLAKE3_DEFAULT = 0x1F
LEGACY_RAW_CID = 0x26
MKEY_ED25519 = 0xED

_BLAKE3_CODES = (MHASH_BLAKE3, MHASH_BLAKE3_DEFAULT)
_MAX_U64 = (1 << 64) - 1


def _invalid(message: str, detail: str | None = None) -> FabstirError:
    return FabstirError(ErrorCode.S5_INVALID_CID, message, detail=detail)


def blake3_hash(data: bytes) -> bytes:
    """BLAKE3-256 of ``data`` (the plain hash; no chunk DAG, same as ``b3sum``)."""
    return blake3.blake3(bytes(data)).digest()


def _js_int32_le(n: int) -> bytes:
    """What s5.js ``encodeLittleEndian`` emits: 32-bit signed shifts, sign-extended."""
    x = n & 0xFFFFFFFF
    if x & 0x80000000:
        x -= 1 << 32
    return (x & _MAX_U64).to_bytes(8, "little")


def encode_size(size: int, *, s5js_quirk: bool = False) -> bytes:
    """Size field of a BlobId: u64 LE with trailing zero bytes removed.

    Size 0 keeps one ``00`` byte.  With ``s5js_quirk`` the bytes are the ones
    s5.js emits, which are wrong for sizes >= 2**31 (s5-vectors notes); only
    use it to reproduce s5.js output.
    """
    if not 0 <= size <= _MAX_U64:
        raise _invalid("blob size out of range")
    raw = _js_int32_le(size) if s5js_quirk else size.to_bytes(8, "little")
    trimmed = raw.rstrip(b"\0")
    return trimmed or b"\0"


def decode_size(data: bytes) -> int:
    """Inverse of :func:`encode_size` (1..8 little-endian bytes)."""
    if not 1 <= len(data) <= 8:
        raise _invalid("blob size field must be 1 to 8 bytes")
    return int.from_bytes(data, "little")


@attrs.frozen
class BlobId:
    """A blob's BLAKE3 hash (32 bytes, no multihash byte) and size in bytes.

    ``size == 0`` means "empty or unknown": :func:`verify_blob` then checks the
    hash only (s5.js asks portals for ``BlobId(hash, 0)`` as well).
    """

    hash: bytes = attrs.field(converter=bytes)
    size: int = 0

    def __attrs_post_init__(self) -> None:
        if len(self.hash) != 32:
            raise _invalid("blob hash must be 32 bytes")
        if not isinstance(self.size, int) or not 0 <= self.size <= _MAX_U64:
            raise _invalid("blob size out of range")

    @classmethod
    def for_data(cls, data: bytes) -> BlobId:
        """The id of ``data``."""
        return cls(blake3_hash(data), len(data))

    @property
    def hash33(self) -> bytes:
        """``0x1e || hash``: the multihash form used in registry data and P2P."""
        return bytes([MHASH_BLAKE3]) + self.hash

    def to_bytes(self, *, s5js_quirk: bool = False) -> bytes:
        """``5b 82 1e hash size`` (36..43 bytes)."""
        head = bytes([BLOB_MAGIC, BLOB_TYPE_DEFAULT, MHASH_BLAKE3])
        return head + self.hash + encode_size(self.size, s5js_quirk=s5js_quirk)

    def to_legacy_bytes(self) -> bytes:
        """The Dart node's raw CID: ``26 1f hash size``."""
        head = bytes([LEGACY_RAW_CID, MHASH_BLAKE3_DEFAULT])
        return head + self.hash + encode_size(self.size)

    def to_string(self, base: str = "b") -> str:
        """Multibase text; ``b`` (base32) is s5.js's ``toString()``."""
        return multibase.encode(self.to_bytes(), base)

    def __str__(self) -> str:
        return self.to_string("b")

    @classmethod
    def from_bytes(cls, data: bytes) -> BlobId:
        """Decode a BlobId, a legacy raw CID, or a bare 32-byte hash."""
        data = bytes(data)
        kind = cid_kind(data)
        if kind == "raw":
            return cls(data, 0)
        if kind == "blob":
            body = data[3:]
        elif kind == "legacy":
            body = data[2:]
        else:
            raise _invalid("not an S5 blob identifier", detail=data[:3].hex())
        if not 33 <= len(body) <= 40:
            raise _invalid("blob identifier has a bad length")
        return cls(body[:32], decode_size(body[32:]))

    @classmethod
    def parse(cls, text: str) -> BlobId:
        """Decode multibase text (``b``/``z``/``u``/``f``/``m``)."""
        return cls.from_bytes(multibase.decode(text))


def cid_kind(data: bytes) -> str:
    """``"blob"`` (5b 82), ``"legacy"`` (26 1e/1f), ``"raw"`` (bare hash) or ``"unknown"``."""
    if len(data) == 32:
        return "raw"
    if len(data) >= 3 and data[0] == BLOB_MAGIC and data[1] == BLOB_TYPE_DEFAULT:
        return "blob" if data[2] in _BLAKE3_CODES else "unknown"
    if len(data) >= 2 and data[0] == LEGACY_RAW_CID and data[1] in _BLAKE3_CODES:
        return "legacy"
    return "unknown"


def parse_blob_id(value: BlobId | bytes | str) -> BlobId:
    """A :class:`BlobId` from an id, its bytes, its text, or a 33-byte multihash."""
    if isinstance(value, BlobId):
        return value
    if isinstance(value, str):
        return BlobId.parse(value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        data = bytes(value)
        if len(data) == 33 and data[0] in _BLAKE3_CODES:
            return BlobId(data[1:], 0)
        return BlobId.from_bytes(data)
    raise _invalid("unsupported blob identifier type", detail=type(value).__name__)


def verify_blob(cid: BlobId | bytes | str, data: bytes) -> None:
    """Refuse ``data`` unless it is exactly the blob ``cid`` names.

    The whole body is hashed with BLAKE3 and compared with the id's hash; if
    the id carries a non-zero size, the length must match too.  Raises
    ``FabstirError(S5_HASH_MISMATCH)``; the message never includes the data.
    """
    blob_id = parse_blob_id(cid)
    if blob_id.size and len(data) != blob_id.size:
        raise FabstirError(
            ErrorCode.S5_HASH_MISMATCH,
            "downloaded blob has the wrong size",
            detail=f"expected {blob_id.size} bytes, got {len(data)}",
        )
    actual = blake3_hash(data)
    if actual != blob_id.hash:
        raise FabstirError(
            ErrorCode.S5_HASH_MISMATCH,
            "downloaded blob does not match its BLAKE3 hash",
            detail=f"expected {blob_id.hash.hex()}, got {actual.hex()}",
        )
