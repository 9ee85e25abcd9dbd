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

from typing import Any

import numpy as np

__all__ = ["matching_rows"]

#: Rows compared at once (bounds the temporary arrays of the comparison).
_BLOCK = 8192


def _old_rows(old_ids: Any, new_ids: Any) -> np.ndarray:
    row_of = {ident: row for row, ident in enumerate(old_ids)}
    return np.fromiter((row_of.get(ident, -1) for ident in new_ids), np.int64, len(new_ids))


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
    old_buf, old_off = old_meta.joined(), old_meta.offsets
    new_buf, new_off = new_meta.joined(), new_meta.offsets
    for row in np.flatnonzero(same).tolist():
        o = int(mapping[row])
        if old_buf[old_off[o] : old_off[o + 1]] != new_buf[new_off[row] : new_off[row + 1]]:
            same[row] = False
    mapping[~same] = -1
    return mapping
