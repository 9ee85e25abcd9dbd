"""Open an ``encrypted_session_init`` payload (protocol §2.2), free of I/O.

:func:`open_encrypted_init` takes the ``payload`` object of the message and
the host's key and returns a :class:`DecryptedInit`, or raises
:class:`~fabstir_node.errors.FabstirError` -- and nothing else, whatever the
input.  The steps, and the code each failure maps to:

=====================================================  =======================
payload absent / ``null``                              ``MISSING_PAYLOAD``
payload not an object, key missing or not a string     ``INVALID_PAYLOAD``
hex field malformed (``0x`` prefix allowed)            ``INVALID_HEX_ENCODING``
nonce not 24 bytes                                     ``INVALID_NONCE_SIZE``
signature not 65 bytes (or 64 + ``recid``), bad ``v``  ``INVALID_SIGNATURE``
ephemeral key not a secp256k1 point                    ``INVALID_PAYLOAD``
tag does not verify                                    ``DECRYPTION_FAILED``
no key recoverable from the signature                  ``INVALID_SIGNATURE``
plaintext not a JSON object, field missing or wrong    ``INVALID_PAYLOAD``
``sessionKey`` not 64 hex characters                   ``INVALID_SESSION_KEY``
=====================================================  =======================

Decryption comes before signature recovery, so tampering with the
ciphertext reads as ``DECRYPTION_FAILED``.  Note what the signature can and
cannot do: it names the client (its static key signed the handshake), but
a corrupted signature that still parses recovers *some* other address --
recovery has nothing to compare against.  Callers that gate on the address
(allow-lists, job ownership) get that check; this module cannot.

Wire details settled against the SDK's ``encryptForEphemeral``:

* the digest's ``ephPub`` is the 33-byte compressed point (the SDK sends it
  compressed and its own decryptor compresses before hashing, so an
  uncompressed ``ephPubHex`` is compressed here too);
* ``info`` travels as **hex** (``bytesToHex(info)``); its bytes enter both
  HKDF and the digest.  The SDK always sends ``""``, i.e. empty info;
* ``saltHex`` absent or empty means the SDK default, 32 zero bytes.
"""

from __future__ import annotations

import math
import re
from typing import Any

import attrs
import orjson

from ..errors import ErrorCode, FabstirError
from ..protocol.keys import lookup
from ..protocol.messages import VectorDatabaseRef, parse_vector_database
from . import e2ee
from .keys import HostKey, address_from_public_key, compress_public_key, recover_public_key

__all__ = ["MAX_FIELD_BYTES", "DecryptedInit", "open_encrypted_init"]

#: Largest decoded hex field accepted (the plaintext is a few hundred bytes).
MAX_FIELD_BYTES = 64 * 1024

_HEX = re.compile(r"[0-9a-fA-F]*")
_DECIMAL_INT = re.compile(r"[0-9]{1,40}")
_BIGINT = re.compile(r"([0-9]{1,40})n")
_DECIMAL_FLOAT = re.compile(r"[0-9]{1,40}(\.[0-9]{1,40})?([eE][+-]?[0-9]{1,3})?")


@attrs.frozen
class DecryptedInit:
    """What an encrypted session init carried, plus who signed it.

    ``session_key`` (32 bytes) decrypts the session's vector database and
    messages; it is kept out of ``repr()``.  ``client_address`` is recovered
    from the signature (``0x`` + 40 lowercase hex).
    """

    session_key: bytes = attrs.field(repr=False)
    job_id: str
    model_name: str
    price_per_token: int | float
    vector_database: VectorDatabaseRef | None
    recovery_public_key: str | None
    client_address: str


def _fail(code: ErrorCode, message: str) -> FabstirError:
    return FabstirError(code, message)


def _hex_field(payload: dict[str, Any], snake: str, wire: str) -> bytes | None:
    """Decode one hex field of the payload; ``None`` when absent or ``null``."""
    value = lookup(payload, snake)
    if value is None:
        return None
    if not isinstance(value, str):
        raise _fail(ErrorCode.INVALID_PAYLOAD, f"payload.{wire} must be a hex string")
    body = value[2:] if value[:2] in ("0x", "0X") else value
    if len(body) > 2 * MAX_FIELD_BYTES:
        raise _fail(ErrorCode.INVALID_PAYLOAD, f"payload.{wire} is larger than {MAX_FIELD_BYTES} bytes")
    if len(body) % 2 or not _HEX.fullmatch(body):
        raise _fail(ErrorCode.INVALID_HEX_ENCODING, f"payload.{wire} is not valid hex")
    return bytes.fromhex(body)


def _required_hex(payload: dict[str, Any], snake: str, wire: str) -> bytes:
    value = _hex_field(payload, snake, wire)
    if value is None:
        raise _fail(ErrorCode.INVALID_PAYLOAD, f"payload.{wire} is required")
    return value


def _signature(payload: dict[str, Any], raw: bytes) -> bytes:
    """65-byte ``r ‖ s ‖ v``; a 64-byte ``r ‖ s`` takes ``v`` from ``recid``."""
    if len(raw) == 64:
        recid = payload.get("recid")
        if not isinstance(recid, int) or isinstance(recid, bool) or not 0 <= recid <= 255:
            raise _fail(ErrorCode.INVALID_SIGNATURE, "a 64-byte signature needs an integer recid")
        raw += bytes([recid])
    if len(raw) != 65:
        raise _fail(ErrorCode.INVALID_SIGNATURE, f"signature must be 65 bytes (r || s || v), got {len(raw)}")
    if raw[64] not in (0, 1, 2, 3, 27, 28):
        raise _fail(ErrorCode.INVALID_SIGNATURE, "signature recovery id must be 0..3 or 27/28")
    return raw


def open_encrypted_init(payload: object, host_key: HostKey) -> DecryptedInit:
    """Decrypt and authenticate the ``payload`` of ``encrypted_session_init``.

    ``payload`` is the message's ``payload`` value exactly as parsed from
    JSON (``None`` when absent).  Keys may be camelCase (as the SDK sends
    them) or snake_case.  Raises :class:`FabstirError` only.
    """
    if payload is None:
        raise _fail(ErrorCode.MISSING_PAYLOAD, "encrypted_session_init needs a payload")
    if not isinstance(payload, dict):
        raise _fail(ErrorCode.INVALID_PAYLOAD, "payload must be an object")

    eph_pub = _required_hex(payload, "eph_pub_hex", "ephPubHex")
    nonce = _required_hex(payload, "nonce_hex", "nonceHex")
    sealed = _required_hex(payload, "ciphertext_hex", "ciphertextHex")
    sig_raw = _required_hex(payload, "signature_hex", "signatureHex")
    salt = _hex_field(payload, "salt_hex", "saltHex") or e2ee.ZERO_SALT
    aad = _hex_field(payload, "aad_hex", "aadHex") or b""
    info = _hex_field(payload, "info", "info") or b""

    if len(nonce) != e2ee.NONCE_SIZE:
        raise _fail(
            ErrorCode.INVALID_NONCE_SIZE,
            f"payload.nonceHex must be {e2ee.NONCE_SIZE} bytes, got {len(nonce)}",
        )
    signature = _signature(payload, sig_raw)

    try:
        eph_compressed = compress_public_key(eph_pub)
        shared_x = host_key.shared_x(eph_pub)
    except ValueError:
        raise _fail(
            ErrorCode.INVALID_PAYLOAD, "payload.ephPubHex is not a valid secp256k1 public key"
        ) from None

    key = e2ee.derive_key(shared_x, salt, info)
    try:
        plaintext = e2ee.open_sealed(key, nonce, sealed, aad)
    except ValueError:
        raise _fail(
            ErrorCode.DECRYPTION_FAILED,
            "session init could not be decrypted (wrong host key, or corrupted payload)",
        ) from None

    digest = e2ee.signature_digest(eph_compressed, host_key.public_key_compressed, salt, nonce, info, aad)
    try:
        client_address = address_from_public_key(recover_public_key(signature, digest))
    except ValueError:
        raise _fail(ErrorCode.INVALID_SIGNATURE, "no signer can be recovered from the signature") from None

    return _parse_plaintext(plaintext, client_address)


# --- The decrypted JSON -------------------------------------------------------


def _parse_plaintext(plaintext: bytes, client_address: str) -> DecryptedInit:
    try:
        data = orjson.loads(plaintext)
    except orjson.JSONDecodeError:
        raise _fail(ErrorCode.INVALID_PAYLOAD, "decrypted session init is not valid JSON") from None
    if not isinstance(data, dict):
        raise _fail(ErrorCode.INVALID_PAYLOAD, "decrypted session init must be a JSON object")

    recovery = lookup(data, "recovery_public_key")
    if recovery is not None and not isinstance(recovery, str):
        raise _fail(ErrorCode.INVALID_PAYLOAD, "recoveryPublicKey must be a string")
    model_name = lookup(data, "model_name")
    if not isinstance(model_name, str):
        raise _fail(ErrorCode.INVALID_PAYLOAD, "modelName must be a string")

    return DecryptedInit(
        session_key=_session_key(lookup(data, "session_key")),
        job_id=_job_id(lookup(data, "job_id")),
        model_name=model_name,
        price_per_token=_price(lookup(data, "price_per_token")),
        vector_database=parse_vector_database(
            lookup(data, "vector_database"), code=ErrorCode.INVALID_PAYLOAD
        ),
        recovery_public_key=recovery,
        client_address=client_address,
    )


def _session_key(value: object) -> bytes:
    if value is None:
        raise _fail(ErrorCode.INVALID_PAYLOAD, "sessionKey is required")
    if not isinstance(value, str):
        raise _fail(ErrorCode.INVALID_SESSION_KEY, "sessionKey must be a hex string")
    body = value[2:] if value[:2] in ("0x", "0X") else value
    if len(body) != 64 or not _HEX.fullmatch(body):
        # Length in characters only: never echo any part of the key.
        raise _fail(ErrorCode.INVALID_SESSION_KEY, "sessionKey must be 64 hex characters (32 bytes)")
    return bytes.fromhex(body)


def _job_id(value: object) -> str:
    if isinstance(value, str) and value:
        return value
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return str(value)
    if isinstance(value, float) and value.is_integer() and 0 <= value < 2**63:
        return str(int(value))
    raise _fail(ErrorCode.INVALID_PAYLOAD, "jobId must be a non-empty string or a non-negative integer")


def _price(value: object) -> int | float:
    """``pricePerToken``: a number, a numeric string, or the SDK's ``"2000n"``."""
    if isinstance(value, bool):
        pass
    elif isinstance(value, int):
        if value >= 0:
            return value
    elif isinstance(value, float):
        if math.isfinite(value) and value >= 0:
            return value
    elif isinstance(value, str):
        text = value.strip()
        if m := _BIGINT.fullmatch(text):
            return int(m.group(1))
        if _DECIMAL_INT.fullmatch(text):
            return int(text)
        if _DECIMAL_FLOAT.fullmatch(text):
            number = float(text)
            if math.isfinite(number):
                return number
    raise _fail(ErrorCode.INVALID_PAYLOAD, "pricePerToken must be a non-negative number")
