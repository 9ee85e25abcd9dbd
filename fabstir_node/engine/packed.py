"""Many small strings or byte strings in one buffer plus an offsets array (no object per item).

Ids and metadata of a database are held this way (100,000 ids of ~15 characters: ~2.3 MB, against
~8 MB as a list of str), and cross a decode worker's pipe as their two parts (``workers/``).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import xxhash

__all__ = ["PackedBlobs", "PackedStrings", "has_repeats", "id_hashes"]


class PackedBlobs(Sequence[bytes]):
    """Many small byte strings in one buffer plus an offsets array (no per-item objects)."""

    __slots__ = ("_buffer", "_offsets")

    def __init__(self, blobs: Sequence[bytes]) -> None:
        offsets = np.zeros(len(blobs) + 1, np.int64)
        np.cumsum(np.fromiter(map(len, blobs), np.int64, len(blobs)), out=offsets[1:])
        self._offsets = offsets
        # bytes, an mmap or a disk_cache.FileBuffer: anything whose slices are bytes
        self._buffer: Any = b"".join(blobs)

    @classmethod
    def concat(cls, parts: Sequence[PackedBlobs]) -> PackedBlobs:
        """One sequence holding the items of ``parts`` in order (one join, one offsets array)."""
        offsets = np.zeros(sum(len(p) for p in parts) + 1, np.int64)
        at, base = 1, 0
        for part in parts:
            offsets[at : at + len(part)] = part._offsets[1:] + base
            at += len(part)
            base += int(part._offsets[-1])
        return cls.from_parts(b"".join(p.joined() for p in parts), offsets)

    @classmethod
    def from_parts(cls, buffer: bytes | memoryview | Any, offsets: np.ndarray) -> PackedBlobs:
        """Wrap a joined buffer (bytes, mmap, ...) and its ``len + 1`` int64 offsets, sharing both."""
        self = cls.__new__(cls)
        self._buffer, self._offsets = buffer, offsets
        return self

    @property
    def buffer(self) -> Any:
        return self._buffer

    def joined(self) -> Any:
        """Every item's bytes, joined, in memory (read once when the buffer lives on disk)."""
        buf = self._buffer
        return buf.read_all() if hasattr(buf, "read_all") else buf  # storage/disk_cache.FileBuffer

    @property
    def offsets(self) -> np.ndarray:
        return self._offsets

    def __len__(self) -> int:
        return len(self._offsets) - 1

    def __getitem__(self, i: int) -> bytes:  # type: ignore[override]
        if not -len(self) <= i < len(self):
            raise IndexError(i)
        i %= len(self)
        return bytes(self._buffer[int(self._offsets[i]) : int(self._offsets[i + 1])])

    def take(self, rows: Sequence[int] | np.ndarray) -> list[bytes]:
        """The items at ``rows`` (non-negative, in range), in that order: one offsets lookup for all of
        them, so a search's hits cost a slice each (a ``pread`` when the buffer is on disk)."""
        at = np.asarray(rows, np.int64)
        if len(at) and (int(at.min()) < 0 or int(at.max()) >= len(self)):
            raise IndexError("row out of range")
        buf, starts, ends = self._buffer, self._offsets[at].tolist(), self._offsets[at + 1].tolist()
        read_at = getattr(buf, "read_at", None)  # a file (storage/disk_cache.FileBuffer): a pread each
        if read_at is not None:
            return [read_at(a, b - a) for a, b in zip(starts, ends)]
        return [bytes(buf[a:b]) for a, b in zip(starts, ends)]

    def __iter__(self) -> Iterator[bytes]:
        buf, bounds = self.joined(), self._offsets.tolist()  # on disk: one read, not one per item
        return (buf[a:b] for a, b in zip(bounds, bounds[1:]))

    @property
    def nbytes(self) -> int:
        return sys.getsizeof(self._buffer) + self._offsets.nbytes

    def __repr__(self) -> str:
        return f"PackedBlobs({len(self)} items)"


class PackedStrings(Sequence[str]):
    """Many strings stored as UTF-8 in one :class:`PackedBlobs` (a str object only per lookup).

    100,000 ids of ~15 characters take ~2.3 MB this way, against ~8 MB as a
    list of str.
    """

    __slots__ = ("_blobs",)

    def __init__(self, strings: Sequence[str]) -> None:
        self._blobs = PackedBlobs([s.encode() for s in strings])

    @classmethod
    def from_blobs(cls, blobs: PackedBlobs) -> PackedStrings:
        """Wrap UTF-8 items (e.g. :attr:`blobs` of another, sent between processes), sharing them."""
        self = cls.__new__(cls)
        self._blobs = blobs
        return self

    @property
    def blobs(self) -> PackedBlobs:
        """The strings' UTF-8 bytes, packed."""
        return self._blobs

    @classmethod
    def concat(cls, parts: Sequence[PackedStrings]) -> PackedStrings:
        """One sequence holding the strings of ``parts`` in order."""
        self = cls.__new__(cls)
        self._blobs = PackedBlobs.concat([p._blobs for p in parts])
        return self

    def __len__(self) -> int:
        return len(self._blobs)

    def __getitem__(self, i: int) -> str:  # type: ignore[override]
        return bytes(self._blobs[i]).decode()

    def take(self, rows: Sequence[int] | np.ndarray) -> list[str]:
        """The strings at ``rows``, in that order (:meth:`PackedBlobs.take`)."""
        return [b.decode() for b in self._blobs.take(rows)]

    def __iter__(self) -> Iterator[str]:
        return (bytes(b).decode() for b in self._blobs)

    def encoded(self) -> Iterator[bytes]:
        """The strings as their UTF-8 bytes, without decoding them (equal bytes: equal strings)."""
        return (bytes(b) for b in self._blobs)

    @property
    def nbytes(self) -> int:
        return self._blobs.nbytes

    def __repr__(self) -> str:
        return f"PackedStrings({len(self)} items)"


def id_hashes(ids: Sequence[str]) -> np.ndarray:
    """XXH3-64 of each id's UTF-8 bytes, as uint64 (equal ids: equal hashes)."""
    digest = xxhash.xxh3_64_intdigest
    return np.fromiter((digest(ident.encode()) for ident in ids), np.uint64, len(ids))


def has_repeats(ids: PackedStrings, hashes: Sequence[np.ndarray | None] = ()) -> bool:
    """Whether any id occurs twice.  ``hashes``: :func:`id_hashes` of consecutive parts of ``ids``
    (made where they were decoded); then one sort of the hashes finds the candidates, and only ids
    whose hash repeats are compared (a collision is not a repeat).  Without them: a set of the ids."""
    if not hashes or any(part is None for part in hashes):
        return len(set(ids.encoded())) != len(ids)
    joined = np.concatenate([np.asarray(part, np.uint64) for part in hashes])
    if len(joined) != len(ids):
        raise ValueError("one hash per id")
    ranked = np.sort(joined)
    if not (ranked[1:] == ranked[:-1]).any():
        return False
    order = np.argsort(joined, kind="stable")
    ranked = joined[order]
    same = ranked[1:] == ranked[:-1]
    candidates = np.union1d(order[1:][same], order[:-1][same])
    seen: set[bytes] = set()
    for row in candidates.tolist():
        encoded = ids.blobs[row]
        if encoded in seen:
            return True
        seen.add(encoded)
    return False
