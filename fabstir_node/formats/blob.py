"""Stored files: AES-GCM envelope, JSON text or CBOR (protocol §4.4).

A manifest or chunk file arrives in one of three shapes:

1. **CBOR** — what the SDK writes today: a plain JS object given to s5.js
   ``fs.put``, encoded by cbor-x (JS ``undefined`` becomes simple value 23, a
   typed array carries an RFC 8746 tag).
2. **AES-256-GCM** — what the original node expected: ``nonce (12) ‖
   ciphertext ‖ tag (16)``, empty AAD, key = the 32-byte session key as is.
   The plaintext is JSON text (CBOR is accepted too).
3. **JSON text** — what the S5 bridge returns for a file s5.js decoded as
   CBOR, or what a client stored as a string.

:func:`open_blob` tells them apart: with a session key it first tries
AES-GCM (the tag makes a false positive impossible in practice), then looks
at the content.  :func:`decode_object` turns the plaintext into plain Python
values (dict/list/str/int/float/bool/None) whatever the encoding.  Both raise
only :class:`FabstirError`, whatever the bytes.
"""

from __future__ import annotations

import gc
import io
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Literal

import attrs
import cbor2
import numpy as np
import orjson
from Crypto.Cipher import AES

from ..errors import ErrorCode, FabstirError

__all__ = [
    "KEY_SIZE",
    "MAX_NESTING",
    "NONCE_SIZE",
    "TAG_SIZE",
    "OpenedBlob",
    "decode_object",
    "detect_format",
    "encrypt_blob",
    "gc_paused",
    "open_blob",
    "parse_json",
    "to_json_bytes",
    "typed_array_values",
]

KEY_SIZE = 32
NONCE_SIZE = 12
TAG_SIZE = 16
#: An AES-GCM envelope is at least its nonce and tag.
ENVELOPE_OVERHEAD = NONCE_SIZE + TAG_SIZE

#: Deepest container nesting accepted in a stored file.  The formats need 4
#: levels (chunk → vectors → record → metadata); the rest is for metadata.
MAX_NESTING = 64

#: RFC 8746 typed-array tags for floats: tag → numpy dtype.
TYPED_FLOAT_TAGS: dict[int, str] = {81: ">f4", 82: ">f8", 85: "<f4", 86: "<f8"}

# "{" then a key or "}": what a JSON object starts with.
_JSON_START = re.compile(rb'[ \t\r\n]*\{[ \t\r\n]*["}]')

Format = Literal["json", "cbor"]


@attrs.frozen
class OpenedBlob:
    """A stored file after decryption: its encoding and plaintext bytes.

    ``encrypted`` says whether it came out of an AES-GCM envelope.
    ``key_rejected`` says a session key was given but did not authenticate
    the file, which was then taken for plaintext by its content; if it then
    fails to parse, the answer is ``DECRYPTION_FAILED``, not a parse error.
    The plaintext never appears in the repr.
    """

    format: Format
    plaintext: bytes | bytearray = attrs.field(repr=False)
    encrypted: bool = False
    key_rejected: bool = False


# --- detection ----------------------------------------------------------------


def _head(data: bytes | bytearray, pos: int) -> tuple[int, int | None, int]:
    """(major type, argument or None if indefinite, next position); raises
    IndexError if truncated and ValueError for a reserved head."""
    byte = data[pos]
    major, info = byte >> 5, byte & 0x1F
    if info < 24:
        return major, info, pos + 1
    if info < 28:
        size = 1 << (info - 24)
        if pos + 1 + size > len(data):
            raise IndexError
        return major, int.from_bytes(data[pos + 1 : pos + 1 + size], "big"), pos + 1 + size
    if info == 31 and major in (2, 3, 4, 5, 7):
        return major, None, pos + 1
    raise ValueError


def _looks_like_cbor_map(data: bytes | bytearray) -> bool:
    """A CBOR map (after any tags) whose first key is a short printable text.

    Every object the SDK stores is a map with camelCase keys.  Requiring a
    plausible first key, not just a map head, keeps AES-GCM envelopes
    (random-looking bytes) from passing for plaintext: a random first byte
    is a map head one time in nine, this whole test passes about one in
    several thousand.
    """
    try:
        major, arg, pos = _head(data, 0)
        for _ in range(16):  # tags, e.g. self-describe 55799
            if major != 6:
                break
            major, arg, pos = _head(data, pos)
        if major != 5:
            return False
        if pos == len(data) or (arg is None and data[pos] == 0xFF):
            return arg in (0, None) and pos + (arg is None) == len(data)
        if arg == 0 or (arg is not None and 2 * arg > len(data) - pos):
            return False
        major, length, pos = _head(data, pos)
        if major != 3 or length is None or not 0 < length <= 255 or pos + length > len(data):
            return False
        key = data[pos : pos + length].decode("utf-8")
        return key.isprintable()
    except (IndexError, ValueError):  # truncated, reserved, or not UTF-8
        return False


def detect_format(data: bytes | bytearray) -> Format | None:
    """``"json"`` if the bytes start like a JSON object (``{`` then ``"`` or
    ``}``, whitespace allowed); ``"cbor"`` if they start like a CBOR map with
    a text key (see :func:`_looks_like_cbor_map`); else ``None``."""
    if _JSON_START.match(data):
        return "json"
    if _looks_like_cbor_map(data):
        return "cbor"
    return None


# --- AES-GCM --------------------------------------------------------------------


def _check_key(key: bytes) -> bytes:
    if not isinstance(key, (bytes, bytearray, memoryview)) or len(key) != KEY_SIZE:
        raise FabstirError(ErrorCode.INVALID_SESSION_KEY, "session key must be 32 bytes")
    return bytes(key)


def encrypt_blob(plaintext: bytes, key: bytes, nonce: bytes | None = None) -> bytes:
    """AES-256-GCM in the Web Crypto layout: ``nonce ‖ ciphertext ‖ tag``.

    A random 12-byte nonce is used unless one is given (tests only: a nonce
    must never repeat under one key).
    """
    key = _check_key(key)
    if nonce is None:
        nonce = os.urandom(NONCE_SIZE)
    if len(nonce) != NONCE_SIZE:
        raise ValueError("nonce must be 12 bytes")
    cipher = AES.new(key, AES.MODE_GCM, nonce=nonce, mac_len=TAG_SIZE)
    ciphertext, tag = cipher.encrypt_and_digest(plaintext)
    return bytes(nonce) + ciphertext + tag


def _try_decrypt(data: bytes | bytearray, key: bytes) -> bytes | None:
    if len(data) < NONCE_SIZE + TAG_SIZE:
        return None
    view = memoryview(data)
    cipher = AES.new(key, AES.MODE_GCM, nonce=view[:NONCE_SIZE], mac_len=TAG_SIZE)
    try:
        return cipher.decrypt_and_verify(view[NONCE_SIZE:-TAG_SIZE], view[-TAG_SIZE:])
    except ValueError:  # MAC check failed
        return None


def open_blob(data: bytes | bytearray | memoryview, key: bytes | None) -> OpenedBlob:
    """Decrypt (if it is an AES-GCM envelope under ``key``) and classify a file.

    * With a key and an authentic envelope: the plaintext, ``encrypted=True``.
      A plaintext that is neither JSON nor CBOR is ``INVALID_DATABASE``.
    * Otherwise the bytes themselves, if they are JSON or CBOR.
    * Neither, with a key: ``DECRYPTION_FAILED`` (wrong key or damaged file).
    * Neither, without a key: ``INVALID_SESSION_KEY`` — the database looks
      encrypted and this session has no key to open it.

    A plaintext file read with a key that did not open it is marked
    ``key_rejected``, so that a parse failure later reads as
    ``DECRYPTION_FAILED`` (see :class:`OpenedBlob`).
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError("data must be bytes")
    if isinstance(data, memoryview):
        data = bytes(data)
    # bytes or a bytearray (what storage hands over for a body of known length) is used as it is:
    # copying a 36 MB chunk cost ~50 ms, and nothing below writes to it
    if key is not None:
        key = _check_key(key)
        plaintext = _try_decrypt(data, key)
        if plaintext is not None:
            fmt = detect_format(plaintext)
            if fmt is None:
                raise FabstirError(
                    ErrorCode.INVALID_DATABASE, "decrypted file is neither JSON nor CBOR"
                )
            return OpenedBlob(format=fmt, plaintext=plaintext, encrypted=True)
    fmt = detect_format(data)
    if fmt is not None:
        return OpenedBlob(format=fmt, plaintext=data, encrypted=False, key_rejected=key is not None)
    if key is not None:
        raise FabstirError(
            ErrorCode.DECRYPTION_FAILED,
            "could not decrypt the database with the session key",
        )
    if len(data) < ENVELOPE_OVERHEAD or _is_text(data):
        # too short to be an envelope, or text: a damaged or foreign file, not an encrypted one
        raise FabstirError(ErrorCode.INVALID_DATABASE, "file is neither JSON nor CBOR")
    raise FabstirError(
        ErrorCode.INVALID_SESSION_KEY,
        "database appears to be encrypted; this session has no session key",
    )


def _is_text(data: bytes | bytearray) -> bool:
    """UTF-8 text (random ciphertext of envelope length practically never is)."""
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


# --- decoding -------------------------------------------------------------------


@contextmanager
def gc_paused() -> Iterator[None]:
    """Pause the cyclic GC while a parser allocates millions of objects.

    Parsed JSON/CBOR holds no cycles; the GC would only rescan it repeatedly
    (about 25 % of parse time, engine-notes §2.4).
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def typed_array_values(tag: int, payload: Any) -> np.ndarray:
    """The float values of an RFC 8746 typed array (tags 81, 82, 85, 86)."""
    if not isinstance(payload, bytes):
        raise FabstirError(ErrorCode.INVALID_DATABASE, "typed array payload must be a byte string")
    dtype = np.dtype(TYPED_FLOAT_TAGS[tag])
    if len(payload) % dtype.itemsize:
        raise FabstirError(
            ErrorCode.INVALID_DATABASE, "typed array length is not a multiple of its item size"
        )
    return np.frombuffer(payload, dtype=dtype)


def _json_default(value: Any) -> Any:
    """orjson ``default`` hook: map CBOR-only values onto JSON ones."""
    if value is cbor2.undefined:
        return None
    if isinstance(value, cbor2.frozendict):
        return dict(value)
    if isinstance(value, cbor2.CBORTag) and value.tag in TYPED_FLOAT_TAGS:
        return typed_array_values(value.tag, value.value).astype(np.float64).tolist()
    raise TypeError(f"unsupported CBOR value of type {type(value).__name__}")


#: orjson options for re-encoding decoded CBOR: datetimes go to the hook (and
#: are refused) instead of becoming ISO strings.
_DUMP_OPTIONS = orjson.OPT_PASSTHROUGH_DATETIME


def to_json_bytes(value: Any, *, sort_keys: bool = False) -> bytes:
    """Compact JSON for a decoded value; ``INVALID_DATABASE`` if it has none.

    Handles the CBOR-only values :func:`decode_object` may meet (``undefined``,
    typed arrays, immutable maps); refuses non-string map keys, byte strings,
    tags, integers beyond 64 bits and nesting deeper than orjson allows.
    """
    option = _DUMP_OPTIONS | (orjson.OPT_SORT_KEYS if sort_keys else 0)
    try:
        return orjson.dumps(value, default=_json_default, option=option)
    except (orjson.JSONEncodeError, TypeError, ValueError, RecursionError) as exc:
        raise FabstirError(
            ErrorCode.INVALID_DATABASE, "file holds a value JSON cannot represent", detail=str(exc)
        ) from None


def _parse_failure(opened: OpenedBlob, message: str, detail: str | None = None) -> FabstirError:
    if opened.key_rejected:
        # The key did not open the file and its bytes are no plaintext either.
        return FabstirError(
            ErrorCode.DECRYPTION_FAILED, "could not decrypt the database with the session key"
        )
    return FabstirError(ErrorCode.INVALID_DATABASE, message, detail=detail)


def _loads_cbor(opened: OpenedBlob) -> Any:
    data = opened.plaintext
    stream = io.BytesIO(data)
    try:
        decoder = cbor2.CBORDecoder(stream, max_depth=MAX_NESTING)
        with gc_paused():
            value = decoder.decode()
    except (cbor2.CBORDecodeError, ValueError, TypeError, OverflowError, RecursionError, MemoryError) as exc:
        raise _parse_failure(opened, "file is not valid CBOR", str(exc)) from None
    if stream.tell() != len(data):
        raise _parse_failure(opened, "file has trailing bytes after its CBOR value")
    return value


def parse_json(opened: OpenedBlob) -> Any:
    """orjson with the GC paused; ``INVALID_DATABASE`` (or
    ``DECRYPTION_FAILED``, see :class:`OpenedBlob`) on any parse error."""
    try:
        with gc_paused():
            return orjson.loads(opened.plaintext)
    except (orjson.JSONDecodeError, RecursionError, MemoryError) as exc:
        raise _parse_failure(opened, "file is not valid JSON", str(exc)) from None


def _loads_json(data: bytes) -> Any:
    return parse_json(OpenedBlob(format="json", plaintext=data))


def decode_object(opened: OpenedBlob) -> Any:
    """Plain Python values (JSON types only) for an opened file.

    JSON is parsed with orjson.  CBOR is parsed with cbor2 (nesting limited to
    :data:`MAX_NESTING`, trailing bytes refused), then normalised through
    orjson so the result is exactly what the same content as JSON would give:
    ``undefined`` → ``None``, float typed arrays → lists of floats, other tags,
    byte strings and non-string keys refused.  Errors: ``INVALID_DATABASE``,
    or ``DECRYPTION_FAILED`` if the file did not parse after the session key
    failed to open it.
    """
    if opened.format == "json":
        return parse_json(opened)
    value = _loads_cbor(opened)
    return _loads_json(to_json_bytes(value))

