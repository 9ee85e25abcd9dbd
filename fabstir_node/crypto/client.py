"""Client side of the E2EE v1 handshake: build an ``encrypted_session_init`` payload.

The node never runs this; tests and the CLI client do, to speak to a host
exactly as the Fabstir SDK's ``encryptForEphemeral`` does.  Pure: the caller
may fix every random input (ephemeral key, nonce) to reproduce a
known-answer vector; otherwise fresh ones are drawn.
"""

from __future__ import annotations

import json
import secrets
from typing import Any

from coincurve import PrivateKey

from . import e2ee
from .keys import compress_public_key, ecdh_x, sign_recoverable

__all__ = ["build_encrypted_init"]


def _encode_plaintext(plaintext: object) -> bytes:
    # JSON.stringify's shape: compact separators, insertion order, raw UTF-8.
    if isinstance(plaintext, bytes):
        return plaintext
    if isinstance(plaintext, str):
        return plaintext.encode("utf-8")
    return json.dumps(plaintext, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def build_encrypted_init(
    host_public_key: bytes,
    plaintext: dict[str, Any] | str | bytes,
    client_private_key: bytes | None = None,
    *,
    ephemeral_private_key: bytes | None = None,
    nonce: bytes | None = None,
    salt: bytes = e2ee.ZERO_SALT,
    info: bytes = b"",
    aad: bytes = b"",
) -> dict[str, Any]:
    """The ``payload`` of an ``encrypted_session_init``, as the SDK builds it.

    ``host_public_key`` is the host's point (33 or 65 bytes).  ``plaintext``
    is the session data (``sessionKey``, ``jobId``, ``modelName``,
    ``pricePerToken``, ...), serialised like ``JSON.stringify``; ``str`` or
    ``bytes`` are sent verbatim (tests use that to send malformed data).
    ``client_private_key`` is the client's static key, whose address the
    host recovers; ``None`` draws a throwaway one.

    Returns ``{ephPubHex, saltHex, nonceHex, ciphertextHex, signatureHex,
    recid, alg, info, aadHex}`` with lowercase hex and no ``0x``; the
    signature is 65 bytes ``r ‖ s ‖ recid`` over
    :func:`~fabstir_node.crypto.e2ee.signature_digest`.
    Raises :class:`ValueError` for an invalid key or a nonce that is not
    24 bytes.
    """
    recipient = compress_public_key(host_public_key)
    eph_secret = ephemeral_private_key if ephemeral_private_key is not None else PrivateKey().secret
    static_secret = client_private_key if client_private_key is not None else PrivateKey().secret
    nonce = nonce if nonce is not None else secrets.token_bytes(e2ee.NONCE_SIZE)
    if len(nonce) != e2ee.NONCE_SIZE:
        raise ValueError(f"nonce must be {e2ee.NONCE_SIZE} bytes")

    shared_x = ecdh_x(eph_secret, recipient)  # validates the ephemeral secret
    eph_pub = PrivateKey(eph_secret).public_key.format(compressed=True)
    key = e2ee.derive_key(shared_x, salt, info)
    sealed = e2ee.seal(key, nonce, _encode_plaintext(plaintext), aad)

    digest = e2ee.signature_digest(eph_pub, recipient, salt, nonce, info, aad)
    signature = sign_recoverable(static_secret, digest)

    return {
        "ephPubHex": eph_pub.hex(),
        "saltHex": salt.hex(),
        "nonceHex": nonce.hex(),
        "ciphertextHex": sealed.hex(),
        "signatureHex": signature.hex(),
        "recid": signature[64],
        "alg": e2ee.ALG,
        "info": info.hex(),
        "aadHex": aad.hex(),
    }

