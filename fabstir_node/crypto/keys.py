"""secp256k1 keys: the host's identity, raw ECDH and Ethereum addresses.

Everything here is a pure function of its arguments (coincurve wraps
libsecp256k1; keccak comes from pycryptodome).  Two pitfalls shape the API:

* The E2EE handshake (protocol §2.2) uses the **raw 32-byte x-coordinate** of
  the ECDH product point.  ``coincurve.PrivateKey.ecdh()`` returns SHA-256 of
  the compressed point instead, so it is never used; :func:`ecdh_x` multiplies
  the point itself.
* Recovery takes a 32-byte digest that is used as-is (``hasher=None``); the
  client already hashed its message once, and hashing again would recover a
  meaningless but well-formed key.

Failures raise :class:`ValueError` with a message that never contains key
material; the protocol layer (``session_init``) turns them into
:class:`~fabstir_node.errors.FabstirError` values.
"""

from __future__ import annotations

import re

import attrs
from coincurve import PrivateKey, PublicKey
from Crypto.Hash import keccak

__all__ = [
    "HostKey",
    "address_from_public_key",
    "compress_public_key",
    "ecdh_x",
    "recover_public_key",
    "sign_recoverable",
]

#: Size of a secp256k1 secret, of an ECDH x-coordinate and of a digest.
SECRET_SIZE = 32
#: Size of a recoverable signature r ‖ s ‖ v.
SIGNATURE_SIZE = 65

_HEX64 = re.compile(r"[0-9a-fA-F]{64}")


def _public_key(data: bytes) -> PublicKey:
    """Parse a 33-byte compressed or 65-byte uncompressed SEC1 point."""
    if not isinstance(data, (bytes, bytearray)) or len(data) not in (33, 65):
        raise ValueError("public key must be 33 (compressed) or 65 (uncompressed) bytes")
    try:
        return PublicKey(bytes(data))
    except ValueError:
        raise ValueError("public key is not a valid secp256k1 point") from None


def _private_key(secret: bytes) -> PrivateKey:
    # coincurve left-pads short secrets silently, so the length is checked here.
    if not isinstance(secret, (bytes, bytearray)) or len(secret) != SECRET_SIZE:
        raise ValueError(f"private key must be {SECRET_SIZE} bytes")
    try:
        return PrivateKey(bytes(secret))
    except ValueError:
        raise ValueError(
            "private key is not a valid secp256k1 secret (zero or not below the curve order)"
        ) from None


def compress_public_key(public_key: bytes) -> bytes:
    """The 33-byte compressed form of a valid point given in either form."""
    return _public_key(public_key).format(compressed=True)


def address_from_public_key(public_key: bytes) -> str:
    """Ethereum address of a public key: ``0x`` + last 20 bytes of keccak256.

    The hash is taken over the uncompressed point without its ``0x04`` byte.
    The result is lowercase (no EIP-55 checksum).
    """
    raw = _public_key(public_key).format(compressed=False)[1:]
    digest = keccak.new(digest_bits=256, data=raw).digest()
    return "0x" + digest[-20:].hex()


def ecdh_x(private_key: bytes, public_key: bytes) -> bytes:
    """Raw x-coordinate (32 bytes) of ``private_key · public_key``.

    This is what the SDK calls the shared secret (noble's ``getSharedSecret``
    minus its prefix byte) -- *not* libsecp256k1's hashed ECDH.
    """
    secret = _private_key(private_key).secret
    point = _public_key(public_key).multiply(secret)
    return point.format(compressed=False)[1 : 1 + SECRET_SIZE]


def _normalize_recovery_id(v: int) -> int:
    if v in (27, 28):
        return v - 27
    if 0 <= v <= 3:
        return v
    raise ValueError("signature recovery id must be 0..3 or 27/28")


def recover_public_key(signature: bytes, digest: bytes) -> bytes:
    """Compressed public key that produced ``signature`` over ``digest``.

    ``signature`` is 65 bytes ``r ‖ s ‖ v`` with ``v`` in 0..3 or 27/28;
    ``digest`` is the 32-byte message hash, used without further hashing.
    """
    if not isinstance(signature, (bytes, bytearray)) or len(signature) != SIGNATURE_SIZE:
        raise ValueError(f"signature must be {SIGNATURE_SIZE} bytes (r || s || v)")
    if not isinstance(digest, (bytes, bytearray)) or len(digest) != SECRET_SIZE:
        raise ValueError(f"digest must be {SECRET_SIZE} bytes")
    v = _normalize_recovery_id(signature[64])
    compact = bytes(signature[:64]) + bytes([v])
    try:
        key = PublicKey.from_signature_and_message(compact, bytes(digest), hasher=None)
    except ValueError:
        raise ValueError("no public key can be recovered from this signature") from None
    return key.format(compressed=True)


def sign_recoverable(private_key: bytes, digest: bytes) -> bytes:
    """Sign a 32-byte digest as-is: 65 bytes ``r ‖ s ‖ recid`` (recid 0..3).

    Deterministic (RFC 6979) and low-S, as noble-secp256k1 produces it.
    """
    if not isinstance(digest, (bytes, bytearray)) or len(digest) != SECRET_SIZE:
        raise ValueError(f"digest must be {SECRET_SIZE} bytes")
    return _private_key(private_key).sign_recoverable(bytes(digest), hasher=None)


@attrs.frozen
class HostKey:
    """The host's static secp256k1 key (``HOST_PRIVATE_KEY``).

    Build it with :meth:`from_hex` (configuration) or :meth:`generate`
    (tests); the constructor takes the 32 raw secret bytes and validates
    them.  The secret never appears in ``repr()``.
    """

    private_key: bytes = attrs.field(repr=False)
    public_key_compressed: bytes = attrs.field(init=False, repr=lambda pub: pub.hex())

    @private_key.validator
    def _check_private_key(self, _attribute: attrs.Attribute[bytes], value: bytes) -> None:
        if not isinstance(value, bytes):
            raise ValueError("host private key must be bytes")
        _private_key(value)

    @public_key_compressed.default
    def _derive_public_key(self) -> bytes:
        return _private_key(self.private_key).public_key.format(compressed=True)

    @classmethod
    def from_hex(cls, text: str) -> HostKey:
        """Parse 64 hex characters, with or without a ``0x`` prefix.

        Surrounding whitespace (a trailing newline from a file or an
        environment variable) is ignored.  Errors name the problem, never
        the key.
        """
        if not isinstance(text, str):
            raise ValueError("host private key must be a hex string")
        body = text.strip()
        if body[:2] in ("0x", "0X"):
            body = body[2:]
        if len(body) != 2 * SECRET_SIZE:
            raise ValueError(
                f"host private key must be {2 * SECRET_SIZE} hex characters "
                f"(optionally 0x-prefixed), got {len(body)}"
            )
        if not _HEX64.fullmatch(body):
            raise ValueError("host private key contains non-hex characters")
        return cls(bytes.fromhex(body))

    @classmethod
    def generate(cls) -> HostKey:
        """A fresh random key (for tests and throwaway hosts)."""
        return cls(PrivateKey().secret)

    @property
    def public_key_hex(self) -> str:
        """Compressed public key, lowercase hex without ``0x`` (what clients encrypt to)."""
        return self.public_key_compressed.hex()

    @property
    def address(self) -> str:
        """The host's Ethereum address, ``0x``-prefixed lowercase."""
        return address_from_public_key(self.public_key_compressed)

    def shared_x(self, peer_public_key: bytes) -> bytes:
        """Raw ECDH x-coordinate with a peer's point (see :func:`ecdh_x`)."""
        return ecdh_x(self.private_key, peer_public_key)
