"""S5 registry entries: signed, revisioned pointers (s5.md §3.2, §2.2).

Wire bytes::

    07 | pk33 (ed || pk32) | revision u64 LE | len u8 | data | signature(64)

The signature covers the same bytes *without* ``pk33``.  A directory's entry
holds ``0x1e || blake3(stored directory blob)`` as its data.  Nodes keep the
highest revision; so do we (:func:`latest`).

Portals speak JSON ``{pk, revision, data, signature}`` with base64url values
(no padding); :meth:`RegistryEntry.to_json` / :func:`entry_from_json` convert.

Decoding never trusts input: :func:`decode_entry` checks the layout and
:meth:`RegistryEntry.verify` the signature; failures raise ``S5_INVALID_ENTRY``.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterable, Mapping
from typing import Any

import attrs

from fabstir_node.errors import ErrorCode, FabstirError
from fabstir_node.s5.cid import MHASH_BLAKE3, MHASH_BLAKE3_DEFAULT, MKEY_ED25519
from fabstir_node.s5.keys import ed25519_public_key, ed25519_sign, ed25519_verify, multikey

__all__ = [
    "MAX_DATA_SIZE",
    "RECORD_TYPE_REGISTRY_ENTRY",
    "RegistryEntry",
    "decode_entry",
    "entry_from_json",
    "entry_hash33",
    "latest",
    "sign_entry",
]

RECORD_TYPE_REGISTRY_ENTRY = 0x07
#: lib5 and the s5.js validator allow 64 bytes of data (the spec says 48).
MAX_DATA_SIZE = 64
_MAX_U64 = (1 << 64) - 1


def _invalid(message: str, detail: str | None = None) -> FabstirError:
    return FabstirError(ErrorCode.S5_INVALID_ENTRY, message, detail=detail)


def _revision_bytes(revision: int, s5js_quirk: bool) -> bytes:
    if s5js_quirk:
        # s5.js encodeLittleEndian: 32-bit signed shifts (s5-vectors notes).
        x = revision & 0xFFFFFFFF
        if x & 0x80000000:
            x -= 1 << 32
        return (x & _MAX_U64).to_bytes(8, "little")
    return revision.to_bytes(8, "little")


def _check_pk(pk: bytes) -> None:
    if len(pk) != 33 or pk[0] != MKEY_ED25519:
        raise _invalid("registry key must be 0xed followed by 32 bytes")


@attrs.frozen
class RegistryEntry:
    """One registry entry as stored and exchanged (not yet verified)."""

    pk: bytes = attrs.field(converter=bytes)
    revision: int
    data: bytes = attrs.field(converter=bytes)
    signature: bytes = attrs.field(converter=bytes)

    def __attrs_post_init__(self) -> None:
        _check_pk(self.pk)
        if not isinstance(self.revision, int) or not 0 <= self.revision <= _MAX_U64:
            raise _invalid("registry revision out of range")
        if len(self.data) > MAX_DATA_SIZE:
            raise _invalid("registry data too long")
        if len(self.signature) != 64:
            raise _invalid("registry signature must be 64 bytes")

    def signed_message(self) -> bytes:
        """``07 | revision u64 LE | len | data`` -- what the signature covers."""
        return _signed_message(self.revision, self.data, s5js_quirk=False)

    def is_valid(self) -> bool:
        """True if the Ed25519 signature matches ``pk``."""
        return ed25519_verify(self.pk[1:], self.signed_message(), self.signature)

    def verify(self) -> RegistryEntry:
        """Return ``self`` if the signature is valid, else raise ``S5_INVALID_ENTRY``."""
        if not self.is_valid():
            raise _invalid("registry entry signature is invalid", detail=self.pk.hex())
        return self

    def to_bytes(self) -> bytes:
        """The ``0x07`` wire record."""
        return (
            bytes([RECORD_TYPE_REGISTRY_ENTRY])
            + self.pk
            + self.revision.to_bytes(8, "little")
            + bytes([len(self.data)])
            + self.data
            + self.signature
        )

    def to_json(self) -> dict[str, Any]:
        """Portal JSON ``{pk, revision, data, signature}`` (base64url, no padding)."""
        return {
            "pk": _b64(self.pk),
            "revision": self.revision,
            "data": _b64(self.data),
            "signature": _b64(self.signature),
        }


def _signed_message(revision: int, data: bytes, *, s5js_quirk: bool) -> bytes:
    return (
        bytes([RECORD_TYPE_REGISTRY_ENTRY])
        + _revision_bytes(revision, s5js_quirk)
        + bytes([len(data)])
        + data
    )


def sign_entry(write_key: bytes, revision: int, data: bytes, *, s5js_quirk: bool = False) -> RegistryEntry:
    """A signed entry for the Ed25519 key with seed ``write_key``.

    ``s5js_quirk`` signs (and stores) the revision the way s5.js does, which
    wraps at 2**32 (registry_entry vector 3).  Leave it off for real use.
    """
    if len(data) > MAX_DATA_SIZE:
        raise _invalid("registry data too long")
    if not 0 <= revision <= _MAX_U64:
        raise _invalid("registry revision out of range")
    stored_revision = int.from_bytes(_revision_bytes(revision, s5js_quirk), "little")
    message = _signed_message(stored_revision, bytes(data), s5js_quirk=False)
    return RegistryEntry(
        pk=multikey(ed25519_public_key(write_key)),
        revision=stored_revision,
        data=data,
        signature=ed25519_sign(write_key, message),
    )


def decode_entry(record: bytes) -> RegistryEntry:
    """Parse a ``0x07`` wire record.  Does not check the signature (see :meth:`RegistryEntry.verify`)."""
    record = bytes(record)
    if len(record) < 1 + 33 + 8 + 1 + 64 or record[0] != RECORD_TYPE_REGISTRY_ENTRY:
        raise _invalid("not a registry entry record")
    pk = record[1:34]
    revision = int.from_bytes(record[34:42], "little")
    length = record[42]
    if len(record) != 43 + length + 64:
        raise _invalid("registry entry record has a bad length")
    data = record[43 : 43 + length]
    return RegistryEntry(pk=pk, revision=revision, data=data, signature=record[43 + length :])


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode("ascii").rstrip("=")


def _unb64(value: Any, field: str) -> bytes:
    if not isinstance(value, str) or len(value) > 256 or not value.isascii():
        raise _invalid(f"registry entry field {field!r} is not base64url text")
    text = value.rstrip("=")
    try:
        return base64.b64decode(text + "=" * (-len(text) % 4), altchars=b"-_", validate=True)
    except (binascii.Error, ValueError):
        raise _invalid(f"registry entry field {field!r} is not base64url text") from None


def entry_from_json(obj: Mapping[str, Any]) -> RegistryEntry:
    """Parse the portal JSON shape.  Does not check the signature."""
    if not isinstance(obj, Mapping):
        raise _invalid("registry entry JSON must be an object")
    revision = obj.get("revision")
    if isinstance(revision, bool) or not isinstance(revision, int):
        raise _invalid("registry entry revision must be an integer")
    return RegistryEntry(
        pk=_unb64(obj.get("pk"), "pk"),
        revision=revision,
        data=_unb64(obj.get("data"), "data"),
        signature=_unb64(obj.get("signature"), "signature"),
    )


def latest(entries: Iterable[RegistryEntry], pk: bytes | None = None) -> RegistryEntry | None:
    """The valid entry with the highest revision (for ``pk`` if given), or None.

    Entries with a bad signature or for another key are ignored, so a stale
    or forged answer from one source cannot hide a newer one from another.
    """
    best: RegistryEntry | None = None
    for entry in entries:
        if pk is not None and entry.pk != pk:
            continue
        if not entry.is_valid():
            continue
        if best is None or entry.revision > best.revision:
            best = entry
    return best


def entry_hash33(entry: RegistryEntry) -> bytes:
    """The ``0x1e || hash`` a directory entry points at (s5.js ``_getDirectoryMetadata``).

    Data starting with ``1e``/``1f`` is the hash itself; anything else is the
    legacy ``5a || CID`` form with the hash at bytes 2..35.  The multihash byte
    is normalised to ``0x1e``.
    """
    data = entry.data
    if data[:1] and data[0] in (MHASH_BLAKE3, MHASH_BLAKE3_DEFAULT):
        hash33 = data[:33]
    else:
        hash33 = data[2:35]
    if len(hash33) != 33:
        raise _invalid("registry entry data does not hold a blob hash")
    return bytes([MHASH_BLAKE3]) + hash33[1:]
