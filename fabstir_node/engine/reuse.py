"""Which rows of a new version of a database are the same as rows of the version before.

Pure.  A row is reused only when its id, its stored vector (the exact
bytes of the unit row in the matrix's dtype) and its metadata (the exact
stored bytes) are all equal: nothing is taken on trust from the new
manifest or from a hash alone.  The answer, ``mapping[new_row] = old_row``
(``-1`` for a row that is new or changed), is what the graph of the new
version is made from (``storage/index_update.py``): the old graph's
nodes of unchanged rows are kept, the others are removed and added.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from itertools import repeat
from typing import Any

import attrs
import numpy as np

__all__ = ["PreviousVersion", "matching_rows"]

#: Rows compared at once (bounds the temporary arrays of the comparison).
_BLOCK = 8192


def _encoded(ids: Any) -> Iterator[Any]:
    encoded = getattr(ids, "encoded", None)  # PackedStrings: UTF-8 bytes without a decode each
    return encoded() if encoded is not None else iter(ids)


def _old_rows(old_ids: Any, new_ids: Any) -> np.ndarray:
    row_of = dict(zip(_encoded(old_ids), range(len(old_ids))))
    return np.fromiter(map(row_of.get, _encoded(new_ids), repeat(-1)), np.int64, len(new_ids))


def _same_blobs(old_buf: np.ndarray, old_off: np.ndarray, old_rows: np.ndarray,
                new_buf: np.ndarray, new_off: np.ndarray, new_rows: np.ndarray) -> np.ndarray:
    """Whether old blob ``old_rows[i]`` equals new blob ``new_rows[i]``, byte for byte."""
    lengths = new_off[new_rows + 1] - new_off[new_rows]
    equal: np.ndarray = lengths == old_off[old_rows + 1] - old_off[old_rows]
    total = int(lengths[equal].sum())
    if total == 0:
        return equal
    counts = np.where(equal, lengths, 0)
    owner = np.repeat(np.arange(len(new_rows)), counts)  # which pair each compared byte belongs to
    within = np.arange(total) - np.repeat(np.cumsum(counts) - counts, counts)
    differs = old_buf[old_off[old_rows][owner] + within] != new_buf[new_off[new_rows][owner] + within]
    equal[np.unique(owner[differs])] = False
    return equal


def matching_rows(old: Any, new: Any) -> np.ndarray:
    """``mapping[new_row]``: the row of ``old`` holding the same id, vector and metadata, else -1.

    ``old`` and ``new`` are :class:`~.matrix.VectorMatrix` (or anything with
    ``ids``, ``vectors`` and ``metadata`` (a :class:`~.matrix.PackedBlobs`)).
    Matrices of different dimensions or dtypes share nothing.
    """
    n = len(new.ids)
    if old.vectors.shape[1:] != new.vectors.shape[1:] or old.vectors.dtype != new.vectors.dtype:
        return np.full(n, -1, np.int64)
    mapping = _old_rows(old.ids, new.ids)
    candidates = np.flatnonzero(mapping >= 0)
    same = np.zeros(n, bool)
    for start in range(0, len(candidates), _BLOCK):
        rows = candidates[start : start + _BLOCK]
        old_rows = mapping[rows]
        order = np.argsort(old_rows, kind="stable")  # read the old file in order
        a = np.asarray(old.vectors[old_rows[order]])
        b = np.asarray(new.vectors[rows[order]])
        same[rows[order]] = (a.view(np.uint8).reshape(len(rows), -1) == b.view(np.uint8).reshape(len(rows), -1)).all(1)
    old_meta, new_meta = old.metadata, new.metadata
    old_buf = np.frombuffer(old_meta.joined(), np.uint8)
    new_buf = np.frombuffer(new_meta.joined(), np.uint8)
    old_off, new_off = np.asarray(old_meta.offsets, np.int64), np.asarray(new_meta.offsets, np.int64)
    kept = np.flatnonzero(same)
    for start in range(0, len(kept), _BLOCK):
        rows = kept[start : start + _BLOCK]
        same[rows] = _same_blobs(old_buf, old_off, mapping[rows], new_buf, new_off, rows)
    mapping[~same] = -1
    return mapping


@attrs.frozen(eq=False)
class PreviousVersion:
    """What a new version's load takes from the version before, by record digest (``formats/records.py``).

    ``rows_of`` maps a record digest to its row; ``vectors`` are that version's stored rows (n x d, its
    dtype, usually memory-mapped), ``offsets`` (n + 1 int64) cut ``metadata`` (any buffer whose slices
    are bytes: an mmap, ``disk_cache.FileBuffer``) into each row's stored metadata.
    """

    rows_of: Mapping[bytes, int]
    vectors: np.ndarray
    offsets: np.ndarray
    metadata: Any

    @classmethod
    def of(cls, matrix: Any, rows_of: Mapping[bytes, int]) -> PreviousVersion:
        """The version a :class:`~.matrix.VectorMatrix` holds (rows, packed metadata), shared, not copied."""
        return cls(rows_of, matrix.vectors, matrix.metadata.offsets, matrix.metadata.buffer)

    def take(self, reused: np.ndarray) -> tuple[np.ndarray, list[bytes | None]]:
        """The stored rows of ``reused >= 0`` (in order) and, per position, the metadata of those rows."""
        positions = np.flatnonzero(reused >= 0)
        old = reused[positions]
        order = np.argsort(old, kind="stable")  # read the previous file in order
        stored = np.empty((len(old), self.vectors.shape[1]), self.vectors.dtype)
        stored[order] = self.vectors[old[order]]
        blobs: list[bytes | None] = [None] * len(reused)
        if len(old):
            # the rows of one chunk are near each other in the previous version: one read of their span
            low, high = int(old.min()), int(old.max())
            base = int(self.offsets[low])
            span = bytes(self.metadata[base : int(self.offsets[high + 1])])
            starts = (self.offsets[old] - base).tolist()
            ends = (self.offsets[old + 1] - base).tolist()
            for position, start, end in zip(positions.tolist(), starts, ends):
                blobs[position] = span[start:end]
        return stored, blobs
