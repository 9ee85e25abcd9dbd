"""CBOR the way s5.js writes it (cbor-x 1.6 with s5.js's options), and a safe reader.

This is the package's only CBOR writer: S5 directories and HAMT nodes, files
stored like ``fs.put`` (:func:`encode_s5`) and the vector databases that
:mod:`fabstir_node.formats.writer` builds all go through :func:`encode`.
Its output is checked byte for byte against s5-vectors.json ("CBOR written
by fs.put(path, object)"):

* a JS ``Map`` gets a minimal map header; a *plain object* nested anywhere gets
  the non-minimal 16-bit header ``b9 00 NN`` and keeps insertion order;
* ``encodeS5`` (s5.js ``cbor-config.ts``, ``preprocessValue``) turns the
  top-level object -- or the objects reached from a top-level array through
  arrays only -- into Maps with keys sorted by JavaScript ``localeCompare``;
  a number it reaches that way above ``Number.MAX_SAFE_INTEGER`` becomes a
  ``BigInt`` (CBOR ``1b`` + 8 bytes, or a tag 2 bignum beyond 64 bits);
* numbers follow JS: integers in [-2**31, 2**32-1] are CBOR integers, every
  other number (including integral floats outside that range) is a float64;
  ``-0`` is the integer 0; never float16/float32;
* ``undefined`` is ``f7``; ``Uint8Array`` is an untagged byte string and
  ``Float32Array`` is tag 85 (RFC 8746, little-endian).

In Python: ``dict`` (any ``Mapping``) is a plain object, :class:`JsMap` is a
``Map``, :data:`UNDEFINED` is ``undefined``, ``array.array('f'/'d')`` are
typed arrays, ``bytes`` is a ``Uint8Array``, and :class:`Encoded` is an item
the caller already encoded (the database writer builds vectors with numpy).

:func:`decode` is the only CBOR reader the package uses: it requires the
input to be exactly one item, limits nesting, refuses shared references and
exotic semantic tags, and raises only ``FabstirError`` (code chosen by the
caller).
"""

from __future__ import annotations

import array
import io
import math
import struct
import sys
from collections.abc import Mapping
from typing import Any

import attrs
import cbor2

from fabstir_node.errors import ErrorCode, FabstirError
from fabstir_node.s5.collation import locale_sort_key

__all__ = ["UNDEFINED", "Encoded", "JsMap", "decode", "encode", "encode_head", "encode_s5"]

UNDEFINED = cbor2.undefined
MAX_DEPTH = 200
_INT_MIN = -(1 << 31)
_UINT_MAX = (1 << 32) - 1
_MAX_SAFE_INTEGER = (1 << 53) - 1
_FLOAT64 = struct.Struct(">d")
_TYPED_ARRAY_TAGS = {85: "f", 86: "d"}
_TYPED_ARRAY_CODES = {"f": 85, "d": 86}
_LEAF_TYPES = (str, bytes, int, float, bool, type(None), array.array)


class JsMap(dict[Any, Any]):
    """A dict written like a JS ``Map`` (minimal header, keys of any type)."""


@attrs.frozen(slots=True)
class Encoded:
    """One CBOR item, already encoded: :func:`encode` copies ``data`` as it is.

    The caller vouches that ``data`` is exactly one well-formed item.
    """

    data: bytes | memoryview = attrs.field(repr=lambda data: f"<{len(data)} bytes>")


_TINY_HEADS = [[bytes((major << 5 | n,)) for n in range(24)] for major in range(8)]


def encode_head(major: int, n: int) -> bytes:
    """The shortest head of an item of major type ``major`` with argument ``n``."""
    if n < 24:
        return _TINY_HEADS[major][n]
    if n < 0x100:
        return bytes((major << 5 | 24, n))
    if n < 0x10000:
        return bytes((major << 5 | 25,)) + n.to_bytes(2, "big")
    if n < 0x100000000:
        return bytes((major << 5 | 26,)) + n.to_bytes(4, "big")
    return bytes((major << 5 | 27,)) + n.to_bytes(8, "big")


_head = encode_head


def _int(n: int) -> bytes:
    return _head(0, n) if n >= 0 else _head(1, -1 - n)


def _number(value: int | float, js_numbers: bool) -> bytes:
    if isinstance(value, int):
        if not js_numbers or _INT_MIN <= value <= _UINT_MAX:
            return _int(value)
        return b"\xfb" + _FLOAT64.pack(float(value))
    if js_numbers and value.is_integer() and _INT_MIN <= value <= _UINT_MAX:
        return _int(int(value))
    return b"\xfb" + _FLOAT64.pack(value)


def _text(value: str) -> bytes:
    raw = value.encode("utf-8")
    return _head(3, len(raw)) + raw


# The encodings of recent object keys: a chunk repeats the same few keys 10,000 times.
_KEYS: dict[str, bytes] = {}
_KEY_CACHE_LIMIT = 4096


def _plain_object(value: Mapping[Any, Any], out: list[Any], js_numbers: bool, depth: int) -> None:
    # A plain JS object: cbor-x reserves a 16-bit length header.
    count = len(value)
    append = out.append
    append(b"\xb9" + count.to_bytes(2, "big") if count < 0x10000 else _head(5, count))
    leaf_ok = depth < MAX_DEPTH
    for key, item in value.items():
        encoded = _KEYS.get(key) if type(key) is str else None
        if encoded is None:
            if not isinstance(key, str):
                raise TypeError("plain-object keys must be strings")
            encoded = _text(key)
            if len(_KEYS) < _KEY_CACHE_LIMIT:
                _KEYS[key] = encoded
        append(encoded)
        kind = type(item)
        if kind is str and leaf_ok:
            append(_text(item))
        elif kind is Encoded and leaf_ok:
            append(item.data)
        else:
            _encode(item, out, js_numbers, depth)


def _encode(value: Any, out: list[Any], js_numbers: bool, depth: int) -> None:
    depth += 1
    if depth > MAX_DEPTH:
        raise ValueError("value nested too deeply to encode")
    kind = type(value)
    if kind is str:
        out.append(_text(value))
    elif kind is float or kind is int:
        out.append(_number(value, js_numbers))
    elif kind is dict:
        _plain_object(value, out, js_numbers, depth)
    elif kind is list or kind is tuple:
        out.append(_head(4, len(value)))
        for item in value:
            _encode(item, out, js_numbers, depth)
    elif kind is Encoded:
        out.append(value.data)
    elif value is None:
        out.append(b"\xf6")
    elif value is UNDEFINED:
        out.append(b"\xf7")
    elif value is True:
        out.append(b"\xf5")
    elif value is False:
        out.append(b"\xf4")
    elif isinstance(value, JsMap):
        out.append(_head(5, len(value)))
        for key, item in value.items():
            _encode(key, out, js_numbers, depth)
            _encode(item, out, js_numbers, depth)
    elif isinstance(value, Mapping):
        _plain_object(value, out, js_numbers, depth)
    elif isinstance(value, (int, float)):  # subclasses (IntEnum, numpy.float64)
        out.append(_number(int(value) if isinstance(value, int) else float(value), js_numbers))
    elif isinstance(value, str):
        out.append(_text(value))
    elif isinstance(value, (bytes, bytearray, memoryview)):
        raw = bytes(value)
        out.append(_head(2, len(raw)) + raw)
    elif isinstance(value, array.array) and value.typecode in _TYPED_ARRAY_CODES:
        raw = value.tobytes() if sys.byteorder == "little" else _swapped(value)
        out.append(_head(6, _TYPED_ARRAY_CODES[value.typecode]) + _head(2, len(raw)) + raw)
    elif isinstance(value, (list, tuple)):
        _encode(list(value), out, js_numbers, depth - 1)
    elif callable(getattr(value, "tolist", None)) and not isinstance(value, array.array):
        # numpy scalars and arrays: their Python equivalent.
        _encode(value.tolist(), out, js_numbers, depth - 1)
    else:
        raise TypeError(f"cannot encode {kind.__name__} as S5 CBOR")


def _swapped(value: array.array[Any]) -> bytes:
    copy = array.array(value.typecode, value)
    copy.byteswap()
    return copy.tobytes()


def encode(value: Any, *, js_numbers: bool = True) -> bytes:
    """cbor-x bytes of ``value``; ``js_numbers=False`` writes every int as an int (DirV1 sizes)."""
    out: list[Any] = []
    _encode(value, out, js_numbers, 0)
    return b"".join(out)


def _big_int(value: int | float) -> Encoded:
    """A JS number above 2**53 turned into a ``BigInt``, as cbor-x writes it."""
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError("s5.js cannot store Infinity here (BigInt(Infinity) throws)")
    n = int(float(value))  # the JS number's value
    if n < 1 << 64:
        return Encoded(b"\x1b" + n.to_bytes(8, "big"))
    raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return Encoded(b"\xc2" + _head(2, len(raw)) + raw)


def _preprocess(value: Any, depth: int = 0) -> Any:
    """s5.js ``preprocessValue``: what ``encodeS5`` does before cbor-x sees the value."""
    if isinstance(value, (list, tuple)):
        if depth >= MAX_DEPTH:
            raise ValueError("value nested too deeply to encode")
        return [_preprocess(item, depth + 1) for item in value]
    if isinstance(value, Mapping) and not isinstance(value, JsMap):
        return JsMap(sorted(value.items(), key=lambda item: locale_sort_key(str(item[0]))))
    if (
        isinstance(value, (int, float))
        and not isinstance(value, bool)
        and value > _MAX_SAFE_INTEGER
    ):
        return _big_int(value)
    return value


def encode_s5(value: Any) -> bytes:
    """s5.js ``encodeS5``: what ``fs.put(path, object)`` stores."""
    return encode(_preprocess(value))


# --- decoding -------------------------------------------------------------------


def _tag_hook(*args: Any) -> Any:
    # cbor2 5 calls hook(decoder, tag); cbor2 6 calls hook(tag, immutable).
    tag = next(arg for arg in args if isinstance(arg, cbor2.CBORTag))
    typecode = _TYPED_ARRAY_TAGS.get(tag.tag)
    if typecode is not None and isinstance(tag.value, bytes):
        if len(tag.value) % array.array(typecode).itemsize:
            raise ValueError("typed array length is not a multiple of its item size")
        result = array.array(typecode, tag.value)
        if sys.byteorder != "little":
            result.byteswap()
        return result
    if tag.tag == 64 and isinstance(tag.value, bytes):
        return tag.value
    raise ValueError(f"unsupported CBOR tag {tag.tag}")


def _refuse(decoder: Any) -> Any:
    raise ValueError("unsupported CBOR semantic tag")


# Tags cbor2 would otherwise decode into Python objects s5.js never writes
# (dates, bignums, decimals, shared references, sets, regexes, MIME, UUIDs, ...).
_REFUSED_TAGS = {
    tag: _refuse for tag in (0, 1, 2, 3, 4, 5, 25, 28, 29, 30, 35, 36, 37, 256, 258, 260, 261, 55799)
}


def _check(value: Any, depth: int, undefined: Any) -> Any:
    if depth > MAX_DEPTH:
        raise ValueError("nesting too deep")
    if value is UNDEFINED:
        return undefined
    if isinstance(value, _LEAF_TYPES):
        return value
    if isinstance(value, list):
        return [_check(item, depth + 1, undefined) for item in value]
    if isinstance(value, dict):
        result = {}
        for key, item in value.items():
            if not isinstance(key, (str, int, bytes)):
                raise ValueError("unsupported map key type")
            result[key] = _check(item, depth + 1, undefined)
        return result
    raise ValueError(f"unsupported decoded type {type(value).__name__}")


def decode(data: bytes, *, code: ErrorCode, what: str = "CBOR data", undefined: Any = None) -> Any:
    """The single CBOR item in ``data``, as plain Python values.

    Maps become ``dict``, arrays ``list``, tags 85/86 ``array.array``;
    ``undefined`` becomes the ``undefined`` argument (None by default).
    Anything malformed, trailing bytes, deep nesting or an unsupported tag
    raises ``FabstirError(code)``.
    """
    data = bytes(data)
    stream = io.BytesIO(data)
    try:
        decoder = cbor2.CBORDecoder(
            stream, tag_hook=_tag_hook, semantic_decoders=_REFUSED_TAGS, max_depth=MAX_DEPTH
        )
        value = decoder.decode()
        if stream.tell() != len(data):
            raise ValueError("data read, but end of buffer not reached")
        return _check(value, 0, undefined)
    except FabstirError:
        raise
    except Exception as exc:  # noqa: BLE001 - cbor2 raises many types; all mean "not valid here"
        raise FabstirError(code, f"{what} is not valid CBOR", detail=f"{type(exc).__name__}: {exc}") from None
