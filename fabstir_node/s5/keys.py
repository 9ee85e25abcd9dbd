"""Key derivation and Ed25519, as S5 uses them (s5.md §3.1, §3.2).

* ``derive_hash_int(base, n)``    = BLAKE3(base || n as 32-byte little-endian)
* ``derive_hash_string(base, b)`` = BLAKE3(base || BLAKE3(b))

Ed25519 keys are RFC 8032 keys built from a 32-byte seed; S5 writes public
keys with the multikey prefix ``0xed`` (33 bytes).  Signatures are
deterministic, so signing is reproducible byte for byte.
"""

from __future__ import annotations

from Crypto.PublicKey import ECC
from Crypto.Signature import eddsa

from fabstir_node.s5.cid import MKEY_ED25519, blake3_hash

__all__ = [
    "derive_hash_int",
    "derive_hash_string",
    "ed25519_public_key",
    "ed25519_sign",
    "ed25519_verify",
    "multikey",
]


def derive_hash_int(base: bytes, tweak: int) -> bytes:
    """BLAKE3 of ``base`` followed by ``tweak`` as a 32-byte little-endian number."""
    return blake3_hash(bytes(base) + int(tweak).to_bytes(32, "little"))


def derive_hash_string(base: bytes, tweak: bytes) -> bytes:
    """BLAKE3 of ``base`` followed by BLAKE3(``tweak``)."""
    return blake3_hash(bytes(base) + blake3_hash(bytes(tweak)))


def _signing_key(seed: bytes) -> ECC.EccKey:
    if len(seed) != 32:
        raise ValueError("an Ed25519 seed is 32 bytes")
    return eddsa.import_private_key(bytes(seed))


def ed25519_public_key(seed: bytes) -> bytes:
    """The 32-byte public key of the Ed25519 key with private ``seed``."""
    return _signing_key(seed).public_key().export_key(format="raw")


def multikey(public_key32: bytes) -> bytes:
    """``0xed || public_key`` (the 33-byte form S5 registry keys use)."""
    return bytes([MKEY_ED25519]) + bytes(public_key32)


def ed25519_sign(seed: bytes, message: bytes) -> bytes:
    """64-byte RFC 8032 signature of ``message`` (deterministic)."""
    return eddsa.new(_signing_key(seed), "rfc8032").sign(bytes(message))


def ed25519_verify(public_key32: bytes, message: bytes, signature: bytes) -> bool:
    """True if ``signature`` is valid; False for a bad signature or a bad key."""
    if len(public_key32) != 32 or len(signature) != 64:
        return False
    try:
        key = eddsa.import_public_key(bytes(public_key32))
        eddsa.new(key, "rfc8032").verify(bytes(message), bytes(signature))
    except (ValueError, TypeError):
        return False
    return True
