"""A new version of a database: the SDK's edits applied to the records of the current one.

Pure.  The Fabstir SDK changes a database by rewriting every chunk and then
the manifest: vectors are deleted (every later vector moves up, so chunk
boundaries shift), updated in place (same id, new vector and metadata) or
appended.  :func:`apply_edits` does the same to ``(ids, vectors, metadata)``;
:func:`read_records` turns a stored database (manifest and decoded chunks)
back into that form, and :func:`next_times` advances the manifest's times.
``fabstir-node publish --add/--delete-ids/--update`` is built on these, and so
are the tests and the benchmark of living databases.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import attrs
import numpy as np
import orjson

from .chunk import Chunk
from .manifest import Manifest

__all__ = ["EditError", "Records", "apply_edits", "next_times", "read_records"]

#: ``(ids, vectors float32 (n, d), metadata)``: what :func:`~.writer.build_database` takes.
Records = tuple[list[str], np.ndarray, list[Mapping[str, Any] | None]]


class EditError(ValueError):
    """An edit that does not fit the database (an unknown id, a duplicate, another dimension)."""


@attrs.frozen
class Times:
    created: int
    updated: int


def read_records(manifest: Manifest, chunks: Sequence[Chunk]) -> Records:
    """The records of a stored database, in storage order (chunks by id)."""
    ordered = sorted(chunks, key=lambda c: c.chunk_id)
    if [c.chunk_id for c in ordered] != [ref.chunk_id for ref in sorted(manifest.chunks, key=lambda r: r.chunk_id)]:
        raise EditError("the chunks do not match the manifest")
    ids = [ident for chunk in ordered for ident in chunk.ids]
    metadata: list[Mapping[str, Any] | None] = [orjson.loads(m) for c in ordered for m in c.metadata]
    dims = manifest.dimensions or (ordered[0].dimensions if ordered else 0)
    vectors = (
        np.concatenate([c.vectors for c in ordered]).astype(np.float32, copy=False)
        if ordered else np.empty((0, dims), np.float32)
    )
    return ids, vectors, metadata


def _check_dims(vectors: np.ndarray, dims: int, what: str) -> None:
    if len(vectors) and vectors.shape[1] != dims:
        raise EditError(f"{what}: vectors have {vectors.shape[1]} dimensions, the database {dims}")


def apply_edits(
    current: Records,
    *,
    delete: Iterable[str] = (),
    update: Records | None = None,
    add: Records | None = None,
) -> Records:
    """The records after deleting ``delete``, replacing ``update`` in place and appending ``add``.

    Raises :class:`EditError` for a deleted or updated id that is not there,
    an added id that already is, an id given twice, or vectors of another dimension.
    """
    ids, vectors, metadata = list(current[0]), np.asarray(current[1], np.float32), list(current[2])
    dims = vectors.shape[1] if vectors.ndim == 2 and len(ids) else None
    row_of = {ident: i for i, ident in enumerate(ids)}
    gone = set()
    for ident in delete:
        if ident not in row_of:
            raise EditError(f"cannot delete {ident!r}: no such id")
        gone.add(ident)
    if update is not None:
        up_ids, up_vectors, up_meta = update
        if dims is not None:
            _check_dims(up_vectors, dims, "--update")
        if len(set(up_ids)) != len(up_ids):
            raise EditError("--update names an id twice")
        vectors = vectors.copy()
        for i, ident in enumerate(up_ids):
            row = row_of.get(ident)
            if row is None or ident in gone:
                raise EditError(f"cannot update {ident!r}: no such id")
            vectors[row] = up_vectors[i]
            metadata[row] = up_meta[i]
    keep = np.array([ident not in gone for ident in ids], bool)
    ids = [ident for ident, k in zip(ids, keep) if k]
    metadata = [m for m, k in zip(metadata, keep) if k]
    vectors = vectors[keep] if len(keep) else vectors
    if add is not None:
        add_ids, add_vectors, add_meta = add
        if dims is not None:
            _check_dims(add_vectors, dims, "--add")
        present = set(ids)
        for ident in add_ids:
            if ident in present:
                raise EditError(f"cannot add {ident!r}: the id is already there")
            present.add(ident)
        ids += list(add_ids)
        metadata += list(add_meta)
        vectors = np.concatenate([vectors.reshape(-1, add_vectors.shape[1]), np.asarray(add_vectors, np.float32)])
    return ids, np.ascontiguousarray(vectors, np.float32), metadata


def next_times(manifest: Manifest, now_ms: int) -> Times:
    """``created`` kept, ``updated`` (and ``lastAccessed``) advanced: now, or past the old time if the clock lags."""
    created = manifest.created if manifest.created is not None else now_ms
    updated = max(now_ms, (manifest.updated or 0) + 1)
    return Times(created=created, updated=updated)
