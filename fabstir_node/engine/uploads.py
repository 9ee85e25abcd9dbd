"""The vectors a session uploads itself (protocol §3.1 ``uploadVectors``).

An :class:`UploadStore` validates each uploaded item on its own: a bad item
is rejected alone with an ``"id: reason"`` string and the rest are stored.
The first accepted vector fixes the session's dimension (until :meth:`clear`).
Uploading an id again replaces its vector and metadata in place (upsert).

Rows live in one growable float32 matrix (capacity doubles as needed), ids in
a list, metadata as orjson bytes; searching goes through a
:class:`~.matrix.VectorMatrix` view of those arrays, so the search logic
exists once.

Limits (:class:`UploadLimits`): a request with more than ``max_batch`` items
fails whole with ``LIMIT_EXCEEDED``; once the session holds ``max_total``
vectors, further *new* ids are rejected one by one (upserts still work), so
the reply is ``partial`` or ``error`` rather than a failure of the request.

Not thread-safe: the caller serialises ``add``/``clear`` with searches of the
same store.  A view from :meth:`matrix` keeps its own id and metadata lists,
though a later upsert may rewrite one of its vector rows in place.
"""

from __future__ import annotations

import sys
from typing import Any, Literal

import attrs
import numpy as np
import orjson

from ..errors import ErrorCode, FabstirError
from .filters import Filter
from .matrix import SearchResult, VectorMatrix, unit_vector, vector_from_json

__all__ = ["UploadLimits", "UploadOutcome", "UploadStore"]

_MIN_CAPACITY = 64


@attrs.frozen
class UploadLimits:
    max_batch: int = 1000
    max_total: int = 100_000
    max_dimensions: int = 4096
    max_id_length: int = 512
    max_metadata_bytes: int = 64 * 1024
    #: Error strings listed per reply; one more line then counts the rest.
    max_errors: int = 100


@attrs.frozen
class UploadOutcome:
    """The body of an ``uploadVectorsResponse``."""

    status: Literal["success", "partial", "error"]
    uploaded: int
    rejected: int
    errors: list[str]


class _Rejected(Exception):
    def __init__(self, label: str, reason: str) -> None:
        self.label = label
        self.reason = reason


class UploadStore:
    """One session's uploaded vectors."""

    def __init__(self, limits: UploadLimits = UploadLimits()) -> None:
        self.limits = limits
        self.clear()

    def clear(self) -> None:
        """Drop every vector; the next accepted vector fixes the dimension again."""
        self._dimensions: int | None = None
        self._rows = np.empty((0, 0), np.float32)
        self._count = 0
        self._ids: list[str] = []
        self._metadata: list[bytes] = []
        self._row_of: dict[str, int] = {}
        self._id_bytes = 0
        self._metadata_bytes = 0
        self._view: VectorMatrix | None = None

    def __len__(self) -> int:
        return self._count

    def __repr__(self) -> str:
        return f"UploadStore(n={self._count}, dimensions={self._dimensions})"

    @property
    def dimensions(self) -> int | None:
        """The session's dimension, or None before the first accepted vector."""
        return self._dimensions

    @property
    def nbytes(self) -> int:
        """Memory held: the row buffer (whole capacity), ids, metadata and the id map."""
        return (
            self._rows.nbytes
            + sys.getsizeof(self._ids)
            + self._id_bytes
            + sys.getsizeof(self._metadata)
            + self._metadata_bytes
            + sys.getsizeof(self._row_of)
        )

    # --- uploading

    def add(self, vectors: object) -> UploadOutcome:
        """Store the items of an ``uploadVectors`` request (the raw ``vectors`` JSON list).

        Raises ``FabstirError`` only for the request as a whole: ``INVALID_MESSAGE``
        if ``vectors`` is not a list, ``LIMIT_EXCEEDED`` if it is longer than
        ``max_batch``.  Everything else is reported per item in the outcome.
        """
        if not isinstance(vectors, list):
            raise FabstirError(ErrorCode.INVALID_MESSAGE, "vectors must be a list")
        if len(vectors) > self.limits.max_batch:
            raise FabstirError(
                ErrorCode.LIMIT_EXCEEDED,
                f"at most {self.limits.max_batch} vectors per request, got {len(vectors)}",
            )
        uploaded = rejected = 0
        errors: list[str] = []
        for index, item in enumerate(vectors):
            try:
                self._put(*self._validate(index, item))
            except _Rejected as why:
                rejected += 1
                if len(errors) < self.limits.max_errors:
                    errors.append(f"{why.label}: {why.reason}")
            else:
                uploaded += 1
        if rejected > len(errors):
            errors.append(f"... and {rejected - len(errors)} more rejected")
        status: Literal["success", "partial", "error"]
        status = "success" if not rejected else ("partial" if uploaded else "error")
        return UploadOutcome(status, uploaded, rejected, errors)

    def _validate(self, index: int, item: object) -> tuple[str, np.ndarray, bytes]:
        """(id, unit float32 vector, metadata bytes) of one item, or raise _Rejected."""
        label = f"#{index}"
        if not isinstance(item, dict):
            raise _Rejected(label, "item must be an object")
        ident = item.get("id")
        if not isinstance(ident, str) or not ident:
            raise _Rejected(label, "id must be a non-empty string")
        if len(ident) > self.limits.max_id_length:
            raise _Rejected(label, f"id is longer than {self.limits.max_id_length} characters")
        if "vector" not in item:
            raise _Rejected(ident, "vector is missing")
        try:
            raw = vector_from_json(item["vector"], max_dimensions=self.limits.max_dimensions)
        except FabstirError as error:
            raise _Rejected(ident, error.message) from None
        if self._dimensions is not None and raw.shape[0] != self._dimensions:
            raise _Rejected(ident, f"dimension mismatch: expected {self._dimensions}, got {raw.shape[0]}")
        unit = unit_vector(raw)
        if unit is None:
            raise _Rejected(ident, "vector is all zeros")
        return ident, unit, self._encode_metadata(ident, item.get("metadata"))

    def _encode_metadata(self, ident: str, metadata: Any) -> bytes:
        if metadata is None or (isinstance(metadata, dict) and not metadata):
            return b""
        if not isinstance(metadata, dict):
            raise _Rejected(ident, "metadata must be an object or null")
        try:
            blob = orjson.dumps(metadata)
        except (orjson.JSONEncodeError, TypeError, ValueError, OverflowError):
            raise _Rejected(ident, "metadata cannot be encoded as JSON") from None
        if len(blob) > self.limits.max_metadata_bytes:
            raise _Rejected(
                ident, f"metadata is {len(blob)} bytes encoded, the limit is {self.limits.max_metadata_bytes}"
            )
        return blob

    def _put(self, ident: str, unit: np.ndarray, blob: bytes) -> None:
        row = self._row_of.get(ident)
        if row is not None:  # upsert in place
            self._metadata_bytes += sys.getsizeof(blob) - sys.getsizeof(self._metadata[row])
            self._rows[row] = unit
            self._metadata[row] = blob
            self._view = None
            return
        if self._count >= self.limits.max_total:
            raise _Rejected(
                ident, f"the session already holds the maximum of {self.limits.max_total} vectors"
            )
        if self._dimensions is None:
            self._dimensions = unit.shape[0]
            self._rows = np.empty((0, self._dimensions), np.float32)
        self._reserve(self._count + 1)
        row = self._count
        self._rows[row] = unit
        self._ids.append(ident)
        self._metadata.append(blob)
        self._row_of[ident] = row
        self._id_bytes += sys.getsizeof(ident)
        self._metadata_bytes += sys.getsizeof(blob)
        self._count += 1
        self._view = None

    def _reserve(self, rows: int) -> None:
        capacity = self._rows.shape[0]
        if rows <= capacity:
            return
        capacity = max(rows, _MIN_CAPACITY, min(2 * capacity, self.limits.max_total))
        grown = np.empty((capacity, self._rows.shape[1]), np.float32)
        grown[: self._count] = self._rows[: self._count]
        self._rows = grown

    # --- searching

    def matrix(self) -> VectorMatrix:
        """A searchable view of the current vectors (cached until the next change)."""
        if self._view is None:
            self._view = VectorMatrix.from_normalized(
                self._rows[: self._count], list(self._ids), list(self._metadata)
            )
        return self._view

    def search(
        self, query: object, k: int, *, threshold: float | None = None, flt: Filter | None = None
    ) -> SearchResult:
        """Like :meth:`VectorMatrix.search`; ``NO_VECTORS`` when nothing was uploaded."""
        if not self._count:
            raise FabstirError(ErrorCode.NO_VECTORS, "no vectors have been uploaded in this session")
        return self.matrix().search(query, k, threshold=threshold, flt=flt)
