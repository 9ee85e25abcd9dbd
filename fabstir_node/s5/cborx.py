"""CBOR the way s5.js writes it (cbor-x 1.6 with s5.js's options), and a safe reader.

s5-vectors notes, "CBOR written by fs.put(path, object)":

* a JS ``Map`` gets a minimal map header; a *plain object* nested anywhere gets
  the non-minimal 16-bit header ``b9 00 NN`` and keeps insertion order;
* ``encodeS5`` turns only the top-level object (or the objects directly inside
  a top-level array) into Maps, keys sorted by JavaScript ``localeCompare``;
* numbers follow JS: integers in [-2**31, 2**32-1] are CBOR integers, every
  other number (including integral floats outside that range) is a float64;
  ``-0`` is the integer 0; never float16/float32;
* ``undefined`` is ``f7``; ``Uint8Array`` is an untagged byte string and
  ``Float32Array`` is tag 85 (RFC 8746, little-endian).

In Python: ``dict`` is a plain object, :class:`JsMap` is a ``Map``,
:data:`UNDEFINED` is ``undefined``, ``array.array('f'/'d')`` are typed arrays.

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
from typing import Any

import cbor2

from fabstir_node.errors import ErrorCode, FabstirError
from fabstir_node.s5.collation import locale_sort_key

__all__ = ["UNDEFINED", "JsMap", "decode", "encode", "encode_s5"]

UNDEFINED = cbor2.undefined
MAX_DEPTH = 200
_INT_MIN = -(1 << 31)
_UINT_MAX = (1 << 32) - 1
_TYPED_ARRAY_TAGS = {85: "f", 86: "d"}
_TYPED_ARRAY_CODES = {"f": 85, "d": 86}
_LEAF_TYPES = (str, bytes, int, float, bool, type(None), array.array)


class JsMap(dict):
    """A dict written like a JS ``Map`` (minimal header, keys of any type)."""


def _head(major: int, n: int) -> bytes:
    if n < 24:
        return bytes([major << 5 | n])
    if n < 0x100:
        return bytes([major << 5 | 24, n])
    if n < 0x10000:
        return bytes([major << 5 | 25]) + n.to_bytes(2, "big")
    if n < 0x100000000:
        return bytes([major << 5 | 26]) + n.to_bytes(4, "big")
    return bytes([major << 5 | 27]) + n.to_bytes(8, "big")


def _int(n: int) -> bytes:
    return _head(0, n) if n >= 0 else _head(1, -1 - n)


def _float64(x: float) -> bytes:
    return b"\xfb" + struct.pack(">d", x)


def _number(value: int | float, js_numbers: bool) -> bytes:
    if not js_numbers:
        if isinstance(value, int):
            return _int(value)
        return _float64(value)
    if isinstance(value, float) and math.isfinite(value) and value == int(value):
        as_int = int(value)
        if _INT_MIN <= as_int <= _UINT_MAX:
            return _int(as_int)
    if isinstance(value, int):
        if _INT_MIN <= value <= _UINT_MAX:
            return _int(value)
        return _float64(float(value))
    return _float64(value)


def _encode(value: Any, out: list[bytes], js_numbers: bool, depth: int) -> None:
    if depth > MAX_DEPTH:
        raise ValueError("value nested too deeply to encode")
    if value is None:
        out.append(b"\xf6")
    elif value is UNDEFINED:
        out.append(b"\xf7")
    elif value is True:
        out.append(b"\xf5")
    elif value is False:
        out.append(b"\xf4")
    elif isinstance(value, (int, float)):
        out.append(_number(value, js_numbers))
    elif isinstance(value, str):
        raw = value.encode("utf-8")
        out.append(_head(3, len(raw)) + raw)
    elif isinstance(value, (bytes, bytearray, memoryview)):
        raw = bytes(value)
        out.append(_head(2, len(raw)) + raw)
    elif isinstance(value, array.array) and value.typecode in _TYPED_ARRAY_CODES:
        raw = value.tobytes() if sys.byteorder == "little" else _swapped(value)
        out.append(_head(6, _TYPED_ARRAY_CODES[value.typecode]) + _head(2, len(raw)) + raw)
    elif isinstance(value, (list, tuple)):
        out.append(_head(4, len(value)))
        for item in value:
            _encode(item, out, js_numbers, depth + 1)
    elif isinstance(value, JsMap):
        out.append(_head(5, len(value)))
        for key, item in value.items():
            _encode(key, out, js_numbers, depth + 1)
            _encode(item, out, js_numbers, depth + 1)
    elif isinstance(value, dict):
        # A plain JS object: cbor-x reserves a 16-bit length header.
        count = len(value)
        out.append(b"\xb9" + count.to_bytes(2, "big") if count < 0x10000 else _head(5, count))
        for key, item in value.items():
            if not isinstance(key, str):
                raise TypeError("plain-object keys must be strings")
            _encode(key, out, js_numbers, depth + 1)
            _encode(item, out, js_numbers, depth + 1)
    else:
        raise TypeError(f"cannot encode {type(value).__name__} as S5 CBOR")


def _swapped(value: array.array) -> bytes:
    copy = array.array(value.typecode, value)
    copy.byteswap()
    return copy.tobytes()


def encode(value: Any, *, js_numbers: bool = True) -> bytes:
    """cbor-x bytes of ``value``; ``js_numbers=False`` writes every int as an int (DirV1 sizes)."""
    out: list[bytes] = []
    _encode(value, out, js_numbers, 0)
    return b"".join(out)


def _sorted_map(obj: dict) -> JsMap:
    return JsMap(sorted(obj.items(), key=lambda item: locale_sort_key(str(item[0]))))


def encode_s5(value: Any) -> bytes:
    """s5.js ``encodeS5``: what ``fs.put(path, object)`` stores."""
    if isinstance(value, dict) and not isinstance(value, JsMap):
        value = _sorted_map(value)
    elif isinstance(value, (list, tuple)):
        value = [
            _sorted_map(item) if isinstance(item, dict) and not isinstance(item, JsMap) else item
            for item in value
        ]
    return encode(value)


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
    except Exception as exc:  # cbor2 raises many types; all mean "not valid here"
        raise FabstirError(code, f"{what} is not valid CBOR", detail=f"{type(exc).__name__}: {exc}") from None
