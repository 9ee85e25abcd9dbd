"""E2EE v1 primitives shared by the host (opener) and the client (builder).

The Fabstir SDK's ephemeral-static scheme (protocol §2.2), step by step:

1. ``x = ECDH(ephemeral, host)`` -- the raw x-coordinate (:func:`.keys.ecdh_x`);
2. ``key = HKDF-SHA256(ikm=x, salt, info, 32)`` -- :func:`derive_key`;
3. ``ciphertext ‖ tag = XChaCha20-Poly1305(key, 24-byte nonce, aad)`` --
   :func:`seal` / :func:`open_sealed`;
4. the client signs :func:`signature_digest` with its *static* key, so the
   host can recover the client's address.

The SDK always sends salt = 32 zero bytes and empty info and aad; the
functions take them as parameters because all three are signed and must be
reproduced exactly as the client sent them.

pycryptodome's ``ChaCha20_Poly1305`` with a 24-byte nonce *is*
XChaCha20-Poly1305 (HChaCha20 subkey, then the IETF construction).
"""

from __future__ import annotations

import hashlib

from Crypto.Cipher import ChaCha20_Poly1305
from Crypto.Hash import SHA256
from Crypto.Protocol.KDF import HKDF

__all__ = [
    "ALG",
    "KEY_SIZE",
    "NONCE_SIZE",
    "TAG_SIZE",
    "ZERO_SALT",
    "derive_key",
    "open_sealed",
    "seal",
    "signature_digest",
]

#: The ``alg`` label the SDK puts in its payload (informational only).
ALG = "secp256k1-ecdh(ephemeral\u2192static)+hkdf(sha256)+xchacha20-poly1305"
KEY_SIZE = 32
NONCE_SIZE = 24
TAG_SIZE = 16
#: The SDK's default HKDF salt (the original node's ``salt=None``).
ZERO_SALT = bytes(32)

_SEP = b"|"
_DOMAIN = b"E2EEv1|"


def signature_digest(
    eph_pub: bytes,
    recipient_pub: bytes,
    salt: bytes,
    nonce: bytes,
    info: bytes = b"",
    aad: bytes = b"",
) -> bytes:
    """SHA-256 of the message the client signs (the SDK's ``makeSigMessage``).

    ``E2EEv1| ‖ eph_pub ‖ | ‖ recipient_pub ‖ | ‖ salt ‖ | ‖ nonce ‖ | ‖ info``
    and, only when ``aad`` is non-empty, ``‖ | ‖ aad``.  Both public keys are
    the 33-byte compressed points.  The digest is signed as-is.
    """
    parts = [_DOMAIN, eph_pub, _SEP, recipient_pub, _SEP, salt, _SEP, nonce, _SEP, info]
    if aad:
        parts += [_SEP, aad]
    return hashlib.sha256(b"".join(parts)).digest()


def derive_key(shared_x: bytes, salt: bytes = ZERO_SALT, info: bytes = b"") -> bytes:
    """HKDF-SHA256 of the ECDH x-coordinate: the 32-byte XChaCha20 key."""
    return HKDF(shared_x, KEY_SIZE, salt, SHA256, 1, context=info)


def seal(key: bytes, nonce: bytes, plaintext: bytes, aad: bytes = b"") -> bytes:
    """XChaCha20-Poly1305 encrypt: ``ciphertext ‖ 16-byte tag``."""
    cipher = ChaCha20_Poly1305.new(key=key, nonce=nonce)
    cipher.update(aad)
    ciphertext, tag = cipher.encrypt_and_digest(plaintext)
    return ciphertext + tag


def open_sealed(key: bytes, nonce: bytes, sealed: bytes, aad: bytes = b"") -> bytes:
    """XChaCha20-Poly1305 decrypt ``ciphertext ‖ tag``.

    Raises :class:`ValueError` when the input is shorter than a tag or the
    tag does not verify (wrong key, nonce, aad, or tampered data).
    """
    if len(sealed) < TAG_SIZE:
        raise ValueError("sealed data is shorter than the authentication tag")
    cipher = ChaCha20_Poly1305.new(key=key, nonce=nonce)
    cipher.update(aad)
    try:
        return cipher.decrypt_and_verify(sealed[:-TAG_SIZE], sealed[-TAG_SIZE:])
    except ValueError:
        raise ValueError("authentication tag does not verify") from None
