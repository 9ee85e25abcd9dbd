"""Filling a database's matrix block by block as a load's chunks arrive (no I/O of its own).

Rows arrive normalised (:func:`~.rows.normalise_block`, done where the chunk was decoded: a decode
worker process or a thread) and are copied to their place: the builder's own array, or a
:class:`RowSink` (the loader's row file, ``storage/row_writer.py``).  A matrix of
:data:`~.matrix.COARSE_MIN_ROWS` or more also gets its 8-bit copy filled block by block, packed
for numkong's scans (``quantized.py``), its plain codes in a second sink when there is one.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Protocol

import numpy as np

from .matrix import COARSE_MIN_ROWS, RECORD_DIGEST_SIZE, VectorMatrix
from .packed import PackedBlobs, PackedStrings
from .quantized import Int8Rows, quantize_rows
from .rows import DType, NormalisedBlock, as_float32, normalise_block, numpy_dtype

__all__ = ["MatrixBuilder", "RowSink"]


class RowSink(Protocol):
    """Where a :class:`MatrixBuilder` puts finished rows instead of its own array (e.g. a file).

    ``close`` ends writing (the rows stay readable); ``discard`` also throws them away.
    """

    def write(self, start: int, rows: np.ndarray) -> None: ...

    def rows(self) -> np.ndarray: ...

    def close(self) -> None: ...

    def discard(self) -> None: ...


class MatrixBuilder:
    """Fill a matrix block by block as chunks arrive, then :meth:`finish` it.

    Each block arrives normalised into the final storage dtype (float16 by
    default in the daemon) by whoever decoded it (:meth:`put`), or is
    normalised here (:meth:`fill`), so a load never holds a second, float32
    copy of the whole database.  Threads may fill disjoint row ranges at the
    same time.  A matrix of :data:`COARSE_MIN_ROWS` or more also gets
    its 8-bit copy (:class:`~.quantized.Int8Rows`) filled in the same pass.
    """

    def __init__(
        self, rows: int, dimensions: int, dtype: DType = "f32", *, coarse: bool | None = None,
        sink: RowSink | None = None, codes_sink: RowSink | None = None,
    ) -> None:
        self._shape, self._dtype, self._sink = (rows, dimensions), numpy_dtype(dtype), sink
        self._dtype_name = dtype
        self._out = np.empty((rows, dimensions) if sink is None else (0, dimensions), self._dtype)
        self._degenerate: list[int] = []  # one count per fill; list.append is atomic
        self._finished = False
        #: ``reused[row]``: the previous version's row a load copied into ``row`` (:meth:`put`), else -1.
        self.reused: np.ndarray | None = None
        self._reused_lock = threading.Lock()
        #: Each row's record digest (n x 16 uint8), set by a load whose every chunk had them.
        self.digests: np.ndarray | None = None
        want_coarse = rows >= COARSE_MIN_ROWS if coarse is None else coarse
        self._coarse = Int8Rows(rows, dimensions, packed=True, sink=codes_sink) if want_coarse else None
        self._codes_sink = codes_sink if want_coarse else None
        if codes_sink is not None and not want_coarse:
            codes_sink.discard()

    @property
    def nbytes(self) -> int:
        """Bytes this builder holds in memory (rows given to a sink are not counted)."""
        return int(self._out.nbytes) + (self._coarse.nbytes if self._coarse is not None else 0)

    def release_sink(self) -> None:
        """Stop writing to the sink; discard its rows unless :meth:`finish` made a matrix of them."""
        for sink in (self._sink, self._codes_sink):
            if sink is not None:
                if self._finished:
                    sink.close()
                else:
                    sink.discard()

    def discard_sink(self) -> None:
        """Throw the sinks' rows away (the load failed)."""
        for sink in (self._sink, self._codes_sink):
            if sink is not None:
                sink.discard()

    @property
    def coarse(self) -> bool:
        """Whether this matrix gets an 8-bit copy (blocks for :meth:`put` should carry their codes)."""
        return self._coarse is not None

    def fill(self, start: int, block: np.ndarray) -> None:
        """Normalise ``block`` (float32, n × d) into rows ``start .. start + n``."""
        self.put(start, normalise_block(block, self._dtype_name, coarse=self.coarse))

    def put(self, start: int, block: NormalisedBlock, *, reused: np.ndarray | None = None) -> None:
        """Copy a normalised block into rows ``start .. start + n``.

        ``reused``: the rows with ``reused[i] >= 0`` are the previous version's row ``reused[i]``
        (``block`` already holds them), noted as the mapping (:attr:`reused`).  Threads may put
        disjoint row ranges at the same time.
        """
        rows = block.rows
        n = len(rows)
        if rows.ndim != 2 or rows.shape[1] != self._shape[1] or start + n > self._shape[0]:
            raise ValueError("block does not fit the matrix")
        if rows.dtype != self._dtype:
            raise ValueError("block is not of the matrix's dtype")
        if reused is not None:
            if len(reused) != n:
                raise ValueError("block does not fit the matrix")
            with self._reused_lock:  # threads fill chunks at once: one of them makes the array
                if self.reused is None:
                    self.reused = np.full(self._shape[0], -1, np.int64)
            self.reused[start : start + n] = reused
        self._degenerate.append(block.degenerate)
        if self._coarse is not None:
            codes, scales = block.codes, block.scales
            if codes is None or scales is None:
                codes, scales = quantize_rows(as_float32(rows))
            self._coarse.put(start, codes, scales)
        if self._sink is not None:
            self._sink.write(start, rows)
        else:
            self._out[start : start + n] = rows

    def finish(
        self, ids: Sequence[str], metadata: Sequence[bytes], digests: np.ndarray | None = None
    ) -> VectorMatrix:
        """The matrix, once every row was filled; ``ids`` must be unique (a loader checks that first).

        ``digests`` (n x 16 uint8): each row's record digest (``formats/records.py``), kept with the
        matrix so the next version of the database can recognise its unchanged records.
        """
        n = self._shape[0]
        if len(ids) != n or len(metadata) != n:
            raise ValueError(f"{n} rows but {len(ids)} ids and {len(metadata)} metadata entries")
        ids = ids if isinstance(ids, PackedStrings) else PackedStrings(ids)
        metadata = metadata if isinstance(metadata, PackedBlobs) else PackedBlobs(metadata)
        vectors = self._out if self._sink is None else self._sink.rows()
        if self._coarse is not None:
            self._coarse.seal()
        self._finished = True
        if digests is not None and digests.shape != (n, RECORD_DIGEST_SIZE):
            raise ValueError("one record digest per row")
        return VectorMatrix(vectors, ids, metadata, degenerate_rows=sum(self._degenerate), coarse=self._coarse,
                            record_digests=digests)
