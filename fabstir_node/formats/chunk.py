"""Chunk files (protocol §4.3): ids, a float32 matrix and metadata.

A chunk is ``{"chunkId": N, "vectors": [{"id", "vector", "metadata"}, ...]}``
— 10,000 records of 384 floats in the SDK's default, i.e. ~34 MB of CBOR or
~80 MB of JSON.  This module is the load path's hot spot, so it has two
decoders with one contract:

* a **CBOR fast path**: a small walker over the SDK's layout that reads each
  vector whose items are all float64 (``0xfb``), all float32 (``0xfa``) or an
  RFC 8746 typed array straight into the output matrix with numpy, without
  creating a Python float per component.  Ids and metadata are decoded
  normally.  Anything it does not expect (indefinite lengths, duplicate keys,
  truncation, ...) sends the whole chunk to the generic path, which decides.
* a **JSON fast path**: simdjson (pysimdjson) parses the text into its tape
  without a Python object per number; each vector is copied out as float64
  with ``as_buffer`` and cast straight into its float32 row.
  Ids and metadata become Python objects as before.  It takes only the plain
  layout (records of ``id``, ``vector`` and optionally ``metadata``, no
  duplicate or extra keys, vectors flat lists of numbers, no integer beyond
  2**53) and hands anything else, and every error, to the generic path,
  which decides.
  1.6-1.8x faster than orjson on an SDK-sized chunk (``scripts/bench_json``).
* a **generic path** over decoded objects (JSON via orjson with the GC
  paused, or CBOR via :func:`~fabstir_node.formats.blob.decode_object`),
  converting vectors with one ``np.array`` call and validating them with
  vectorised checks.

Both raise only :class:`FabstirError`: ``DIMENSION_MISMATCH`` for a vector of
the wrong length, ``LIMIT_EXCEEDED`` for oversized metadata, and
``INVALID_DATABASE`` for everything else (wrong ``chunkId``, count mismatch,
a missing or empty id, a non-number, NaN or infinity, ...).  Messages name
positions, never ids or other stored content.
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping
from typing import Any, cast

import attrs
import cbor2
import numpy as np
import simdjson

from ..errors import ErrorCode, FabstirError
from .blob import (
    MAX_NESTING,
    TYPED_FLOAT_TAGS,
    OpenedBlob,
    decode_object,
    gc_paused,
    parse_json,
    to_json_bytes,
    typed_array_values,
)
from .records import RECORD_HEAD, record_digest

__all__ = ["DEFAULT_MAX_ID_LENGTH", "DEFAULT_MAX_METADATA_BYTES", "Chunk", "decode_chunk"]

DEFAULT_MAX_METADATA_BYTES = 64 * 1024
DEFAULT_MAX_ID_LENGTH = 512

_EMPTY_METADATA = b"{}"
_SELF_DESCRIBE_TAG = 55799


@attrs.frozen(eq=False)
class Chunk:
    """A decoded chunk.  ``vectors`` is float32 ``(n, dimensions)`` (a view of
    the caller's ``out`` when one was given); ``metadata[i]`` is compact JSON
    of vector *i*'s metadata object (``b"{}"`` when it had none)."""

    chunk_id: int
    ids: list[str] = attrs.field(repr=False)
    vectors: np.ndarray = attrs.field(repr=False)
    metadata: list[bytes] = attrs.field(repr=False)
    dimensions: int
    #: Each record's digest (``formats/records.py``), joined, when the CBOR fast path read the chunk.
    digests: bytes | None = attrs.field(default=None, repr=False)
    #: With ``known`` digests: the previous version's row of each record that was recognised, else -1.
    #: A recognised record's id is read; its vector row is zero and its metadata ``b""`` (the caller
    #: takes both from the previous version).
    reused: np.ndarray | None = attrs.field(default=None, repr=False)


def _invalid(chunk_id: int, message: str) -> FabstirError:
    return FabstirError(ErrorCode.INVALID_DATABASE, f"invalid chunk {chunk_id}: {message}")


class _Builder:
    """The checks and the output matrix shared by both decoders."""

    def __init__(
        self,
        chunk_id: int,
        expected_count: int,
        dimensions: int | None,
        out: np.ndarray | None,
        max_metadata_bytes: int,
        max_id_length: int,
        data_size: int,
    ) -> None:
        if out is not None:
            if out.dtype != np.float32 or out.ndim != 2 or out.shape[0] != expected_count:
                raise ValueError("out must be a float32 array of shape (expected_count, d)")
            if dimensions is not None and out.shape[1] != dimensions:
                raise ValueError("out has the wrong number of columns")
            dimensions = out.shape[1]
        self.chunk_id = chunk_id
        self.expected_count = expected_count
        self.dimensions = dimensions
        self.matrix = out
        self.max_metadata_bytes = max_metadata_bytes
        self.max_id_length = max_id_length
        self.data_size = data_size
        self.ids: list[str] = []
        self.metadata: list[bytes] = []
        self.digests: bytes | None = None
        self.reused: np.ndarray | None = None
        #: Set when records may be recognised (not decoded): their rows stay zero and unchecked.
        self.sparse = False

    def invalid(self, message: str) -> FabstirError:
        return _invalid(self.chunk_id, message)

    def check_chunk_id(self, value: Any) -> None:
        if type(value) is float and math.isfinite(value) and value.is_integer():
            value = int(value)
        if type(value) is not int:
            raise self.invalid("'chunkId' must be an integer")
        if value != self.chunk_id:
            raise self.invalid(f"file says chunkId {value}")

    def check_count(self, count: int) -> None:
        if count != self.expected_count:
            raise self.invalid(f"holds {count} vectors; the manifest says {self.expected_count}")

    def check_length(self, length: int, index: int) -> None:
        """Fix the dimensions on the first vector; allocate the matrix."""
        if self.dimensions is None:
            if length == 0:
                raise self.invalid(f"vector {index} is empty")
            self.dimensions = length
        if length != self.dimensions:
            raise FabstirError(
                ErrorCode.DIMENSION_MISMATCH,
                f"chunk {self.chunk_id}: vector {index} has {length} dimensions, expected {self.dimensions}",
            )
        if self.matrix is None:
            # Every number takes at least one byte of the file: a count or a
            # length claimed beyond that is a lie, and must not size an array.
            if self.expected_count * length > self.data_size:
                raise self.invalid("claims more numbers than the file holds")
            # zeros when rows may be recognised: pages of rows never decoded are never touched
            alloc = np.zeros if self.sparse else np.empty
            self.matrix = alloc((self.expected_count, length), dtype=np.float32)

    def add_id(self, value: Any, index: int) -> None:
        if not isinstance(value, str) or not value:
            raise self.invalid(f"vector {index} has no id (a non-empty string)")
        if len(value) > self.max_id_length:
            raise self.invalid(f"vector {index} has an id longer than {self.max_id_length} characters")
        self.ids.append(value)

    def add_metadata(self, value: Any, index: int) -> None:
        if value is None or value is cbor2.undefined:
            self.metadata.append(_EMPTY_METADATA)
            return
        if not isinstance(value, (dict, cbor2.frozendict)):
            raise self.invalid(f"vector {index}: metadata must be an object")
        encoded = to_json_bytes(value)
        if len(encoded) > self.max_metadata_bytes:
            raise FabstirError(
                ErrorCode.LIMIT_EXCEEDED,
                f"chunk {self.chunk_id}: vector {index} has more than "
                f"{self.max_metadata_bytes} bytes of metadata",
            )
        self.metadata.append(encoded)

    def finish(self) -> Chunk:
        matrix = self.matrix
        if matrix is None:  # only for an empty chunk
            matrix = np.empty((0, self.dimensions or 0), dtype=np.float32)
        decoded = None if self.reused is None else np.flatnonzero(self.reused < 0)
        finite = np.isfinite(matrix if decoded is None else matrix[decoded]).all(axis=1)
        if not finite.all():
            row = int(np.argmin(finite)) if decoded is None else int(decoded[np.argmin(finite)])
            raise self.invalid(f"vector {row} has a value that is not a finite float32")
        return Chunk(
            chunk_id=self.chunk_id,
            ids=self.ids,
            vectors=matrix,
            metadata=self.metadata,
            dimensions=self.dimensions or 0,
            digests=self.digests,
            reused=self.reused,
        )


def _store_row(builder: _Builder, row: int | slice, values: np.ndarray) -> None:
    # Callers run under np.errstate(over="ignore"): a float64 beyond the
    # float32 range becomes inf here and is refused in finish().
    assert builder.matrix is not None
    builder.matrix[row] = values


# --- generic path ------------------------------------------------------------------


def _from_object(obj: Any, builder: _Builder) -> Chunk:
    """Validate a decoded chunk object and fill the builder."""
    if not isinstance(obj, dict):
        raise builder.invalid("must be an object")
    if "chunkId" not in obj:
        raise builder.invalid("'chunkId' is missing")
    builder.check_chunk_id(obj["chunkId"])
    records = obj.get("vectors")
    if not isinstance(records, list):
        raise builder.invalid("'vectors' must be a list")
    builder.check_count(len(records))
    vectors: list[list[Any]] = []
    for index, record in enumerate(records):
        if not isinstance(record, dict):
            raise builder.invalid(f"vector {index} must be an object")
        # The fast path's order: the vector, then the id, then the metadata.
        vector = record.get("vector")
        if not isinstance(vector, list):
            raise builder.invalid(f"vector {index} has no 'vector' list")
        builder.check_length(len(vector), index)
        builder.add_id(record.get("id"), index)
        builder.add_metadata(record.get("metadata"), index)
        vectors.append(vector)
    if not vectors:
        return builder.finish()
    # One conversion for the whole chunk.  Without a dtype numpy refuses
    # strings, None and nested lists instead of converting them.
    try:
        array = np.array(vectors)
    except (ValueError, TypeError, OverflowError) as exc:
        raise builder.invalid("a vector holds something other than numbers") from exc
    if array.dtype.kind not in "fiu" or array.ndim != 2:
        raise builder.invalid("a vector holds something other than numbers")
    with np.errstate(over="ignore", invalid="ignore"):
        _store_row(builder, slice(None), array)
    # numpy turned any boolean into 0.0 or 1.0; only rows holding one of those
    # values need a look at the Python objects.
    matrix = builder.matrix
    assert matrix is not None
    suspects = np.flatnonzero(((matrix == 0) | (matrix == 1)).any(axis=1))
    for index in suspects.tolist():
        if bool in set(map(type, vectors[index])):
            raise builder.invalid(f"vector {index} holds a boolean")
    return builder.finish()


# --- CBOR fast path ------------------------------------------------------------------


def _array_head(length: int) -> bytes:
    if length < 24:
        return bytes((0x80 | length,))
    if length < 0x100:
        return bytes((0x98, length))
    if length < 0x10000:
        return b"\x99" + length.to_bytes(2, "big")
    return b"\x9a" + length.to_bytes(4, "big")


class _Fallback(Exception):
    """The fast path met something it does not handle; use the generic path."""


_WALK_ERRORS = (
    _Fallback,
    IndexError,
    ValueError,  # includes UnicodeDecodeError
    TypeError,  # np.ndarray over too short a buffer
    OverflowError,
    RecursionError,
    cbor2.CBORDecodeError,
)


def _sdk_id(buf: bytes | bytearray, pos: int) -> tuple[int, int] | None:
    """Where the id text of an SDK-layout record at ``pos`` starts and ends (a short text head), or None."""
    if not buf.startswith(RECORD_HEAD, pos):
        return None
    byte = buf[pos + 6]  # the id's text head
    if 0x60 <= byte < 0x78:
        start, length = pos + 7, byte - 0x60
    elif byte == 0x78:
        start, length = pos + 8, buf[pos + 7]
    else:
        return None
    return start, start + length


#: Ends a record's span is tried at before the record is decoded (each a record head further on).
_SPAN_TRIES = 4


class _Walker:
    """Reads the SDK's chunk layout from CBOR bytes."""

    def __init__(self, data: bytes | bytearray, builder: _Builder, known: Mapping[bytes, int] | None = None) -> None:
        self.buf = data
        self.view = memoryview(data)
        self.builder = builder
        self.known = known
        self.digests: list[bytes] = []
        self.reused_rows: list[int] = []
        self.reused_old: list[int] = []
        # made on first use: a stream over a bytearray copies it, and a new version's load may
        # decode almost nothing (its records recognised, ``recognised``)
        self._stream: io.BytesIO | None = None
        self._decoder: cbor2.CBORDecoder | None = None
        self.rows64: list[int] = []
        self.offsets64: list[int] = []
        self.tags64 = b""
        self.tags32 = b""
        self._prefix = b""
        self._prefix_for = -1

    def head(self, pos: int) -> tuple[int, int, int]:
        """(major type, argument, position after the head); definite only."""
        buf = self.buf
        byte = buf[pos]
        major, info = byte >> 5, byte & 0x1F
        if info < 24:
            return major, info, pos + 1
        if info == 24:
            return major, buf[pos + 1], pos + 2
        if info == 25:
            return major, (buf[pos + 1] << 8) | buf[pos + 2], pos + 3
        if info == 26:
            return major, int.from_bytes(buf[pos + 1 : pos + 5], "big"), pos + 5
        if info == 27:
            return major, int.from_bytes(buf[pos + 1 : pos + 9], "big"), pos + 9
        raise _Fallback  # indefinite length, reserved

    def key(self, pos: int) -> tuple[bytes | bytearray, int]:
        major, length, pos = self.head(pos)
        if major != 3:
            raise _Fallback
        return self.buf[pos : pos + length], pos + length

    def value(self, pos: int) -> tuple[Any, int]:
        """Any item, decoded by cbor2."""
        if self._stream is None:
            self._stream = io.BytesIO(self.buf)
            # read_size=1: the decoder reads no further than the item it decodes,
            # so the stream position tells where that item ended.
            self._decoder = cbor2.CBORDecoder(self._stream, read_size=1, max_depth=MAX_NESTING)
        assert self._decoder is not None
        self._stream.seek(pos)
        value = self._decoder.decode()
        return value, self._stream.tell()

    def walk(self) -> None:
        builder = self.builder
        pos = 0
        major, arg, pos = self.head(pos)
        while major == 6:
            if arg != _SELF_DESCRIBE_TAG:
                raise _Fallback
            major, arg, pos = self.head(pos)
        if major != 5:
            raise _Fallback
        chunk_id: Any = _Fallback
        seen_vectors = False
        for _ in range(arg):
            name, pos = self.key(pos)
            if name == b"vectors":
                if seen_vectors:
                    raise _Fallback
                seen_vectors = True
                pos = self.records(pos)
            elif name == b"chunkId":
                if chunk_id is not _Fallback:
                    raise _Fallback
                chunk_id, pos = self.value(pos)
            else:
                _, pos = self.value(pos)
        if pos != len(self.buf) or chunk_id is _Fallback or not seen_vectors:
            raise _Fallback
        builder.check_chunk_id(chunk_id)

    def records(self, pos: int) -> int:
        major, count, pos = self.head(pos)
        if major != 4:
            raise _Fallback
        self.builder.check_count(count)
        if self.builder.dimensions is not None:
            _ = self.vector_prefix  # sets _prefix and _prefix_for for the known dimensions
        digests, view = self.digests, self.view
        for index in range(count):
            if self.known is not None:
                end = self.recognised(pos, index)
                if end >= 0:
                    pos = end
                    continue
            start = pos
            end = self.sdk_record(pos, index)
            pos = self.record(pos, index) if end < 0 else end
            digests.append(record_digest(view[start:pos]))
        return pos

    def recognised(self, pos: int, index: int) -> int:
        """A record whose bytes the previous version held: its id read, its row noted; end, or -1.

        The hot loop of a new version's load (one call per record): locals only, and the id is
        taken as it is (the record it equals was checked when the previous version was decoded).
        """
        buf = self.buf
        span = _sdk_id(buf, pos)
        if span is None:
            return -1
        start, after_id = span
        # the SDK's float64 vector has a known length: look for the next record after it
        skip = after_id
        prefix = self._prefix
        if self._prefix_for >= 0 and buf.startswith(prefix, after_id):
            items = after_id + len(prefix)
            if buf[items] == 0xFB:
                skip = items + 9 * self._prefix_for
        known, view, size = self.known, self.view, len(buf)
        assert known is not None
        for _ in range(_SPAN_TRIES):  # metadata may hold the head's bytes: then the next one is tried
            end = buf.find(RECORD_HEAD, skip, size)
            if end < 0:
                end = size
            digest = record_digest(view[pos:end])
            old = known.get(digest)
            if old is not None:
                break
            if end == size:
                return -1
            skip = end + 1
        else:
            return -1
        builder = self.builder
        builder.ids.append(buf[start:after_id].decode("utf-8"))
        builder.metadata.append(b"")
        self.reused_rows.append(index)
        self.reused_old.append(old)
        self.digests.append(digest)
        return end

    def sdk_record(self, pos: int, index: int) -> int:
        """The SDK's exact record layout, read without the generic key loop.

        s5.js writes each record as a plain object: a 16-bit map head, then
        ``{"id": text, "vector": [float64 × d], "metadata": ...}`` in the
        SDK's insertion order.  Returns the end position, or -1 (nothing
        consumed, nothing stored) if the record looks any different."""
        buf = self.buf
        span = _sdk_id(buf, pos)
        if span is None:
            return -1
        start, after_id = span
        builder = self.builder
        dimensions = builder.dimensions
        prefix = self.vector_prefix
        if dimensions is None or not buf.startswith(prefix, after_id):
            return -1
        start_items = after_id + len(prefix)
        end = start_items + 9 * dimensions
        if buf[start_items:end:9] != self.tags64 or not buf.startswith(b"\x68metadata", end):
            return -1
        metadata, after_meta = self.value(end + 9)
        builder.add_id(buf[start:after_id].decode("utf-8"), index)
        builder.add_metadata(metadata, index)
        if builder.matrix is None:
            builder.check_length(dimensions, index)
        self.rows64.append(index)
        self.offsets64.append(start_items + 1)
        return after_meta

    @property
    def vector_prefix(self) -> bytes:
        """``"vector"`` key and the array head for the known dimensions."""
        dimensions = self.builder.dimensions or 0
        if self._prefix_for != dimensions:
            self._prefix = b"\x66vector" + _array_head(dimensions)
            self._prefix_for = dimensions
            self.tags64 = b"\xfb" * dimensions
            self.tags32 = b"\xfa" * dimensions
        return self._prefix

    def record(self, pos: int, index: int) -> int:
        builder = self.builder
        major, entries, pos = self.head(pos)
        if major != 5:
            raise _Fallback
        ident: Any = _Fallback
        metadata: Any = None
        seen_metadata = seen_vector = False
        for _ in range(entries):
            name, pos = self.key(pos)
            if name == b"vector":
                if seen_vector:
                    raise _Fallback
                seen_vector = True
                pos = self.vector(pos, index)
            elif name == b"id":
                if ident is not _Fallback:
                    raise _Fallback
                major, length, start = self.head(pos)
                if major == 3:
                    pos = start + length
                    if pos > len(self.buf):
                        raise _Fallback
                    ident = self.buf[start:pos].decode("utf-8")
                else:
                    ident, pos = self.value(pos)
            elif name == b"metadata":
                if seen_metadata:
                    raise _Fallback
                seen_metadata = True
                metadata, pos = self.value(pos)
            else:
                _, pos = self.value(pos)
        if not seen_vector:
            raise builder.invalid(f"vector {index} has no 'vector' list")
        builder.add_id(None if ident is _Fallback else ident, index)
        builder.add_metadata(metadata, index)
        return pos

    def vector(self, pos: int, index: int) -> int:
        builder = self.builder
        buf = self.buf
        major, length, start = self.head(pos)
        if major == 4:
            builder.check_length(length, index)
            if len(self.tags64) != length:
                self.tags64 = b"\xfb" * length
                self.tags32 = b"\xfa" * length
            end = start + 9 * length
            if buf[start:end:9] == self.tags64:
                self.rows64.append(index)
                self.offsets64.append(start + 1)
                return end
            end = start + 5 * length
            if buf[start:end:5] == self.tags32:
                _store_row(builder, index, np.ndarray((length,), ">f4", buf, start + 1, (5,)))
                return end
            # Mixed items (cbor-x writes integral numbers as integers).
            items, end = self.value(pos)
            self.store_list(items, index)
            return end
        if major == 6 and length in TYPED_FLOAT_TAGS:
            payload, end = self.value(start)
            values = typed_array_values(length, payload)
            builder.check_length(len(values), index)
            _store_row(builder, index, values)
            return end
        raise _Fallback  # not a list: the generic path words the error

    def store_list(self, items: Any, index: int) -> None:
        """A vector of mixed items: numbers only; integers within 64 bits
        (what JSON, and so the generic path, can represent)."""
        if not all(
            type(item) is float or (type(item) is int and -(2**63) <= item < 2**64) for item in items
        ):
            raise self.builder.invalid(f"vector {index} holds something other than numbers")
        _store_row(self.builder, index, np.array(items, dtype=np.float64))

    def fill(self) -> None:
        """Copy every float64 vector found by the walk into the matrix; note digests and reused rows."""
        builder = self.builder
        builder.digests = b"".join(self.digests)
        if self.known is not None:
            reused = np.full(builder.expected_count, -1, np.int64)
            reused[self.reused_rows] = self.reused_old
            builder.reused = reused
            if self.reused_rows and builder.matrix is None:  # every record was recognised
                if builder.dimensions is None:
                    raise _Fallback
                builder.matrix = np.zeros((builder.expected_count, builder.dimensions), np.float32)
        matrix = self.builder.matrix
        if not self.rows64:
            return
        assert matrix is not None
        length = matrix.shape[1]
        buf = self.buf
        for row, offset in zip(self.rows64, self.offsets64):
            matrix[row] = np.ndarray((length,), ">f8", buf, offset, (9,))


def _decode_cbor(data: bytes | bytearray, builder: _Builder, known: Mapping[bytes, int] | None = None) -> Chunk:
    builder.sparse = known is not None
    walker = _Walker(data, builder, known)
    with gc_paused(), np.errstate(over="ignore", invalid="ignore"):
        walker.walk()
        walker.fill()
    return builder.finish()


# --- JSON fast path ------------------------------------------------------------------

#: Up to this magnitude every JSON integer is exact as a float64, so simdjson's
#: int → float64 → float32 gives what the generic path gives (which, for a chunk
#: of integers only, converts int64 → float32 directly).  Looked for in the
#: float32 rows: rounding is monotonic, so nothing above it can hide below it.
_EXACT_INTEGERS = np.float32(2.0**53)

_BACKSLASH = 0x5C


def _count_brackets(data: bytes | bytearray, most: int) -> int:
    """How many ``[`` the text holds, as written or escaped (``\\u005b``, in a
    string); stops counting past ``most``."""
    found, pos, find = 0, data.find(b"["), data.find
    while pos >= 0 and found <= most:
        found += 1
        pos = find(b"[", pos + 1)
    if found <= most and b"\\" in data:
        # An escape is the only other way to spell it (the text holds no
        # other brackets in strings than those the caller counted).  Numpy
        # over the backslashes: text with many escapes costs one pass.
        raw = np.frombuffer(data, dtype=np.uint8)
        at = np.flatnonzero(raw[:-5] == _BACKSLASH)
        hits = (
            (raw[at + 1] == ord("u")) & (raw[at + 2] == ord("0")) & (raw[at + 3] == ord("0"))
            & (raw[at + 4] == ord("5")) & ((raw[at + 5] | 0x20) == ord("b"))
        )
        found += int(np.count_nonzero(hits))
    return found


_JSON_ERRORS = (
    _Fallback,
    FabstirError,  # the generic path words every error (and sees the same input first)
    KeyError,
    IndexError,
    ValueError,  # simdjson's parse errors, UnicodeDecodeError
    TypeError,  # simdjson's INCORRECT_TYPE: a non-number in a vector
    RuntimeError,  # simdjson's BIGINT_ERROR, DEPTH_ERROR, ...
    OverflowError,
    RecursionError,
    MemoryError,
)


def _decode_json(data: bytes | bytearray, builder: _Builder) -> Chunk:
    """The SDK's chunk layout from JSON text via simdjson; :class:`_Fallback`
    (or any error) when the generic path has to decide.

    Differences between simdjson and orjson are all sent to the generic path:
    simdjson refuses integers beyond 64 bits (orjson makes them floats) and
    keeps duplicate keys (orjson keeps the last), accepts a byte order mark
    (orjson refuses it), and ``as_buffer`` flattens nested lists.  Nested lists
    are caught by counting ``[``: the text must hold exactly one for the
    records list, one per vector, and those the ids and re-encoded metadata
    account for (an escaped ``[`` counts on both sides)."""
    if data.startswith(b"\xef\xbb\xbf"):
        raise _Fallback
    doc = simdjson.Parser().parse(data)  # a new parser: proxies pin the old one's buffers
    if not isinstance(doc, simdjson.Object) or len(doc) != 2:
        raise _Fallback  # not an object, extra or duplicate keys
    records = doc["vectors"]
    if not isinstance(records, simdjson.Array):
        raise _Fallback
    builder.check_chunk_id(doc["chunkId"])
    count = len(records)
    builder.check_count(count)
    brackets = 1 + count
    add_id, add_metadata, metadata = builder.add_id, builder.add_metadata, builder.metadata
    matrix: np.ndarray | None = None
    meta: Any
    for index, record in enumerate(records):
        if not isinstance(record, simdjson.Object):
            raise _Fallback
        # Exactly {id, vector} or {id, vector, metadata}: no duplicate key can hide.
        entries = len(record)
        vector = record["vector"]
        ident = record["id"]
        if entries == 3:
            meta = record["metadata"]
            if isinstance(meta, simdjson.Object):
                meta = meta.as_dict()
            elif meta is not None:
                raise _Fallback
        elif entries == 2:
            meta = None
        else:
            raise _Fallback
        if not isinstance(vector, simdjson.Array):
            raise _Fallback
        if matrix is None:
            builder.check_length(len(vector), index)
            matrix = builder.matrix
            assert matrix is not None
        elif len(vector) != matrix.shape[1]:
            raise _Fallback
        values: Any = vector.as_buffer(of_type="d")  # a csimdjson.ArrayBuffer (its stub says bytes)
        if values.size != 8 * matrix.shape[1]:
            raise _Fallback  # a nested list
        matrix[index] = np.frombuffer(values, dtype=np.float64)
        add_id(ident, index)
        add_metadata(meta, index)
        brackets += cast(str, ident).count("[") + metadata[-1].count(b"[")  # add_id checked it
    if _count_brackets(data, brackets) != brackets:
        raise _Fallback
    if matrix is not None:
        # Rows with a value this large (never in a normalised embedding): their
        # numbers as Python objects, to see whether one is such an integer.
        for row in np.flatnonzero((np.abs(matrix) >= _EXACT_INTEGERS).any(axis=1)).tolist():
            row_record: Any = records[row]
            if any(type(item) is int and abs(item) > 2**53 for item in row_record["vector"].as_list()):
                raise _Fallback
    return builder.finish()


# --- entry point ---------------------------------------------------------------------


def decode_chunk(
    opened: OpenedBlob,
    *,
    chunk_id: int,
    expected_count: int,
    dimensions: int | None,
    out: np.ndarray | None = None,
    max_metadata_bytes: int = DEFAULT_MAX_METADATA_BYTES,
    max_id_length: int = DEFAULT_MAX_ID_LENGTH,
    known: Mapping[bytes, int] | None = None,
) -> Chunk:
    """Decode and validate chunk ``chunk_id`` of a database.

    ``expected_count`` is the chunk's ``vectorCount`` in the manifest and
    ``dimensions`` the manifest's (``None``: the first vector decides).
    ``out``, if given, is a preallocated float32 ``(expected_count, d)`` slice
    of the database matrix that receives the vectors (then ``Chunk.vectors``
    is ``out``); it may hold partial data after a failure.
    ``known`` maps record digests of the previous version of the database to its rows: a record of
    the SDK's CBOR layout whose bytes it knows is not decoded (see :class:`Chunk` ``reused``).
    """

    def builder() -> _Builder:
        return _Builder(
            chunk_id,
            expected_count,
            dimensions,
            out,
            max_metadata_bytes=max_metadata_bytes,
            max_id_length=max_id_length,
            data_size=len(opened.plaintext),
        )

    first = builder()  # checks ``out`` before any input is read
    if opened.format == "cbor":
        try:
            return _decode_cbor(opened.plaintext, first, known)
        except _WALK_ERRORS:
            pass  # the generic path below gives the definitive answer
        return _from_object(decode_object(opened), builder())
    try:
        with gc_paused(), np.errstate(over="ignore", invalid="ignore"):
            return _decode_json(opened.plaintext, first)
    except _JSON_ERRORS:
        pass  # the generic path below gives the definitive answer
    obj = parse_json(opened)
    with gc_paused():
        return _from_object(obj, builder())
