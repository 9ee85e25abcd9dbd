"""Multibase text for S5 identifiers (s5.md §1.4).

The first character names the alphabet:

* ``b`` -- RFC 4648 base32, lower case, no ``=`` padding (s5.js's default);
* ``z`` -- base58btc (the Dart node's default, and what portals like best);
* ``u`` -- RFC 4648 base64url, no padding;
* ``f`` -- lower-case hex;
* ``m`` -- RFC 4648 standard base64, no padding (only s5.js's Advanced API
  ``formatCID`` writes it; accepted, and written on request).

Decoding is lenient where s5.js is: base32 in any case, base32 and base64url
with or without padding.  Anything else raises ``FabstirError`` with
``S5_INVALID_CID``; no ``ValueError`` or ``binascii.Error`` escapes.
"""

from __future__ import annotations

import base64
import binascii

from fabstir_node.errors import ErrorCode, FabstirError

__all__ = ["BASES", "decode", "encode"]

#: The prefixes this module understands, in s5.js order of preference.
BASES = ("b", "z", "u", "f", "m")

_B58_ALPHABET = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
_B58_INDEX = {c: i for i, c in enumerate(_B58_ALPHABET)}

#: Refuse absurd inputs before doing quadratic base58 work on them.
MAX_TEXT_LENGTH = 4096


def _invalid(message: str, detail: str | None = None) -> FabstirError:
    return FabstirError(ErrorCode.S5_INVALID_CID, message, detail=detail)


def b58encode(data: bytes) -> str:
    """base58btc without a prefix (leading zero bytes become ``1``)."""
    zeros = len(data) - len(data.lstrip(b"\0"))
    n = int.from_bytes(data, "big")
    out = []
    while n:
        n, rem = divmod(n, 58)
        out.append(_B58_ALPHABET[rem])
    return "1" * zeros + "".join(reversed(out))


def b58decode(text: str) -> bytes:
    """Inverse of :func:`b58encode`; raises on characters outside the alphabet."""
    n = 0
    for ch in text:
        digit = _B58_INDEX.get(ch)
        if digit is None:
            raise _invalid("invalid base58 text")
        n = n * 58 + digit
    zeros = len(text) - len(text.lstrip("1"))
    body = n.to_bytes((n.bit_length() + 7) // 8, "big") if n else b""
    return b"\0" * zeros + body


def encode(data: bytes, base: str = "b") -> str:
    """``data`` as multibase text with the prefix ``base`` (``b``/``z``/``u``/``f``)."""
    data = bytes(data)
    if base == "b":
        return "b" + base64.b32encode(data).decode("ascii").rstrip("=").lower()
    if base == "z":
        return "z" + b58encode(data)
    if base == "u":
        return "u" + base64.urlsafe_b64encode(data).decode("ascii").rstrip("=")
    if base == "f":
        return "f" + data.hex()
    if base == "m":
        return "m" + base64.b64encode(data).decode("ascii").rstrip("=")
    raise _invalid("unsupported multibase prefix", detail=repr(base))


def decode(text: str) -> bytes:
    """Bytes of multibase ``text``; the first character picks the alphabet."""
    if not isinstance(text, str) or not text:
        raise _invalid("empty or non-text multibase value")
    if len(text) > MAX_TEXT_LENGTH:
        raise _invalid("multibase value too long")
    prefix, body = text[0], text[1:]
    if not body.isascii():
        raise _invalid("multibase value is not ASCII")
    try:
        if prefix == "b" or prefix == "B":
            body = body.upper().rstrip("=")
            return base64.b32decode(body + "=" * (-len(body) % 8))
        if prefix == "z":
            return b58decode(body)
        if prefix == "u":
            body = body.rstrip("=")
            if any(c in body for c in "+/"):
                raise _invalid("invalid base64url text")
            padded = body + "=" * (-len(body) % 4)
            return base64.b64decode(padded, altchars=b"-_", validate=True)
        if prefix == "m":
            body = body.rstrip("=")
            if any(c in body for c in "-_"):
                raise _invalid("invalid base64 text")
            return base64.b64decode(body + "=" * (-len(body) % 4), validate=True)
        if prefix == "f" or prefix == "F":
            if any(c not in "0123456789abcdefABCDEF" for c in body):
                raise _invalid("invalid hex text")
            return bytes.fromhex(body)
    except (binascii.Error, ValueError) as exc:
        raise _invalid("invalid multibase text", detail=str(exc)) from None
    raise _invalid("unsupported multibase prefix", detail=repr(prefix))
