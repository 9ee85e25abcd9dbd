"""Decoding one chunk of a load: the job, its result, and the worker process that runs it.

:func:`decode_job` is everything a load does to a chunk before its rows are copied into the
database's matrix: decrypt (AES-GCM), decode (CBOR or JSON, ``formats/chunk.py``), normalise the
rows into the matrix dtype with their 8-bit copy (``engine/rows.py``) and pack ids and metadata
(``engine/packed.py``).  It is pure CPU, most of it Python holding the GIL — 0.1-0.2 s per SDK
chunk of 10,000 × 384 — so the daemon runs it in worker processes (one per core,
``service/decoders.py``); without them it runs in a thread, the same function either way.

Run as ``python -m fabstir_node.workers.decode``, a worker first writes ``{"ready": true}`` (its imports
are done), then serves frames (``frames.py``) on its stdin and stdout until stdin closes:

* ``{"op": "known", "token": T, "directory": D}``: the previous version saved under cache key ``T``
  in directory ``D`` (:func:`open_previous`), whose record digests the next jobs naming ``T``
  recognise unchanged records with (``formats/records.py``) and whose rows and metadata they copy; a
  worker keeps the :data:`LOOKUPS` most recent (two new versions loading at once do not make it
  rebuild one per chunk); no reply.
* ``{"op": "forget", "token": T}``: drop that lookup (the loads that needed it are over); no reply.
* ``{"op": "decode", "job": {...}, "known": T | null}`` + the chunk's bytes [+ the key]: one
  reply, the :class:`DecodedChunk` or the error (``{"error": {"code", "message", "detail"}}``).
  With ``"direct": {...}`` (and only the key as a buffer) the worker reads the chunk itself, in one
  attempt (``storage/direct.py``); if that fails the reply is ``{"direct_failed": reason}`` and the
  daemon reads the chunk the ordinary way.

A worker keeps no other state between jobs.  Its stderr is the daemon's; a frame out of step, a
closed pipe or any bug ends the process, and the daemon replaces it.
"""

from __future__ import annotations

import os
import select
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import attrs
import numpy as np

from ..engine.packed import PackedBlobs, PackedStrings, id_hashes
from ..engine.quantized import quantize_rows
from ..engine.reuse import PreviousVersion
from ..engine.rows import as_float32, normalise_block
from ..errors import ErrorCode, FabstirError
from ..formats.blob import open_blob
from ..formats.chunk import DEFAULT_MAX_METADATA_BYTES, decode_chunk
from ..formats.records import digest_lookup
from ..storage import disk_cache as persist
from ..storage.direct import DirectFailed, fetch
from . import frames

__all__ = ["ChunkJob", "DecodedChunk", "decode_job", "main", "read_result", "result_frame"]


@attrs.frozen
class ChunkJob:
    """What decoding one chunk needs besides its bytes and key."""

    chunk_id: int
    expected_count: int
    #: The manifest's dimensions (None: the chunk's first vector decides).
    dimensions: int | None
    #: The matrix dtype name rows are normalised into ("f16", "f32", "bf16").
    dtype: str
    #: Whether the rows' 8-bit codes are made too (large matrices, ``engine/quantized.py``).
    coarse: bool = False
    max_metadata_bytes: int = DEFAULT_MAX_METADATA_BYTES


@attrs.frozen(eq=False)
class DecodedChunk:
    """A chunk ready to be put into the matrix (``MatrixBuilder.put``) and the id/metadata lists.

    With ``reused`` (a new version's load): rows with ``reused[i] >= 0`` are the previous version's
    row ``reused[i]``, copied with their metadata from it (the mapping the graph update follows).
    """

    dimensions: int
    rows: np.ndarray
    degenerate: int
    codes: np.ndarray | None
    scales: np.ndarray | None
    ids: PackedStrings
    metadata: PackedBlobs
    #: Each record's digest, joined (CBOR chunks read by the fast path), else None.
    digests: bytes | None
    reused: np.ndarray | None
    #: CPU seconds the decoding took (of the worker process, or the thread).
    cpu_s: float
    #: Bytes and seconds of the worker's own read of the chunk (``storage/direct.py``), if it read it.
    fetched: tuple[int, float] | None = None
    #: Each id's 64-bit hash (``engine/packed.id_hashes``): the load finds repeated ids among a
    #: million with one sort, not a set of a million strings.
    id_hashes: np.ndarray | None = None


def decode_job(
    job: ChunkJob, raw: bytes | bytearray | memoryview, key: bytes | None,
    previous: PreviousVersion | None = None,
) -> DecodedChunk:
    """Decrypt, decode, normalise and pack one chunk; raises :class:`FabstirError` for bad input.

    With ``previous`` (a new version's load), records whose bytes that version holds are not decoded:
    their stored rows and metadata are copied from it (``reused`` says which), so the result is whole.
    """
    cpu = time.thread_time()
    chunk = decode_chunk(
        open_blob(raw, key), chunk_id=job.chunk_id, expected_count=job.expected_count,
        dimensions=job.dimensions, max_metadata_bytes=job.max_metadata_bytes,
        known=None if previous is None else previous.rows_of,
    )
    recognised = chunk.reused is not None and bool((chunk.reused >= 0).any())
    fresh = chunk.reused < 0 if recognised and chunk.reused is not None else None
    block = normalise_block(chunk.vectors, job.dtype, fresh=fresh)
    rows, degenerate, metadata = block.rows, block.degenerate, chunk.metadata
    if fresh is not None and previous is not None and chunk.reused is not None:
        stored, blobs = previous.take(chunk.reused)
        rows[~fresh] = stored
        degenerate += int((stored == 0).all(axis=1).sum())  # a zero row stays a zero row
        metadata = [m if b is None else b for b, m in zip(blobs, metadata)]
    codes, scales = quantize_rows(as_float32(rows)) if job.coarse else (None, None)
    return DecodedChunk(
        dimensions=chunk.dimensions, rows=rows, degenerate=degenerate, codes=codes, scales=scales,
        ids=PackedStrings(chunk.ids), metadata=PackedBlobs(metadata), digests=chunk.digests,
        reused=chunk.reused if fresh is not None else None, cpu_s=time.thread_time() - cpu,
        id_hashes=id_hashes(chunk.ids),
    )


def open_previous(token: str, directory: str) -> PreviousVersion | None:
    """The previous version in disk-cache ``directory`` (saved under key ``token``), opened as the daemon
    opens it; None if it cannot be (then its records are decoded like any other: slower, never wrong)."""
    try:
        matrix = persist.open_matrix(Path(directory), key=token, with_index=False, verify=False)
    except (persist.CorruptCache, OSError):
        return None
    if matrix.record_digests is None:
        return None
    return PreviousVersion.of(matrix, digest_lookup(matrix.record_digests))


# --- the result as a frame ---------------------------------------------------------------------


def _packed_parts(blobs: PackedBlobs) -> tuple[np.ndarray, np.ndarray]:
    joined = blobs.joined()
    return np.frombuffer(joined, np.uint8), np.ascontiguousarray(blobs.offsets, np.int64)


def result_frame(result: DecodedChunk) -> list[Any]:
    """The frame that carries ``result`` back to the daemon."""
    ids_buffer, ids_offsets = _packed_parts(result.ids.blobs)
    meta_buffer, meta_offsets = _packed_parts(result.metadata)
    arrays: dict[str, np.ndarray | None] = {
        "rows": result.rows, "codes": result.codes, "scales": result.scales, "reused": result.reused,
        "digests": None if result.digests is None else np.frombuffer(result.digests, np.uint8),
        "ids": ids_buffer, "ids_offsets": ids_offsets, "metadata": meta_buffer, "metadata_offsets": meta_offsets,
        "id_hashes": result.id_hashes,
    }
    present = {name: np.ascontiguousarray(a) for name, a in arrays.items() if a is not None}
    header = {
        "dimensions": result.dimensions, "degenerate": result.degenerate, "cpu_s": result.cpu_s,
        "arrays": {name: frames.describe(a) for name, a in present.items()},
        "fetched": result.fetched,
    }
    return frames.encode(header, list(present.values()))


def read_result(header: dict[str, Any], buffers: list[memoryview]) -> DecodedChunk:
    """The :class:`DecodedChunk` of a reply frame (raises the worker's :class:`FabstirError`)."""
    if "direct_failed" in header:
        raise DirectFailed(str(header["direct_failed"]))
    error = header.get("error")
    if error is not None:
        if error.get("code") is None:
            raise RuntimeError(f"decode worker failed: {error.get('detail')}")
        raise FabstirError(ErrorCode(error["code"]), str(error["message"]), detail=error.get("detail"))
    specs = header["arrays"]
    if len(specs) != len(buffers):
        raise frames.FrameError("a result whose arrays do not match its buffers")
    arrays = {name: frames.array(spec, buffer) for (name, spec), buffer in zip(specs.items(), buffers)}
    digests = arrays.get("digests")
    # ids and metadata outlive the frame (until the load joins them): copies, never views that would
    # pin the whole reply buffer (rows included) of every chunk until then
    return DecodedChunk(
        dimensions=int(header["dimensions"]), rows=arrays["rows"], degenerate=int(header["degenerate"]),
        codes=arrays.get("codes"), scales=arrays.get("scales"),
        ids=PackedStrings.from_blobs(PackedBlobs.from_parts(arrays["ids"].tobytes(), arrays["ids_offsets"].copy())),
        metadata=PackedBlobs.from_parts(arrays["metadata"].tobytes(), arrays["metadata_offsets"].copy()),
        digests=None if digests is None else digests.tobytes(), reused=arrays.get("reused"),
        cpu_s=float(header["cpu_s"]), fetched=None if header.get("fetched") is None else tuple(header["fetched"]),
        id_hashes=None if arrays.get("id_hashes") is None else arrays["id_hashes"].copy(),
    )


def error_frame(exc: BaseException) -> list[Any]:
    """The reply for a job that failed: its code and message, or (a bug) the traceback as detail."""
    if isinstance(exc, FabstirError):
        error = {"code": exc.code.value, "message": exc.message, "detail": exc.detail}
    else:
        error = {"code": None, "message": None, "detail": "".join(traceback.format_exception(exc))[-4000:]}
    return frames.encode({"error": error})


# --- the worker process ------------------------------------------------------------------------

#: After this long without a frame a worker hands its freed memory back to the system.
IDLE_SECONDS = 1.0
#: Record digest lookups a worker keeps (``known`` frames), the oldest dropped first.
LOOKUPS = 2


def _read_exactly(fd: int, size: int) -> bytearray | None:
    """``size`` bytes from ``fd`` (None at end of input before the first byte)."""
    buffer = bytearray(size)
    view, got = memoryview(buffer), 0
    while got < size:
        n = os.readv(fd, [view[got:]])
        if n == 0:
            if got == 0:
                return None
            raise frames.FrameError("input ended inside a frame")
        got += n
    return buffer


def _read_frame(fd: int) -> tuple[dict[str, Any], list[bytearray]] | None:
    """The next frame; each buffer read into a bytearray of its own (the chunk parsers take those)."""
    prefix = _read_exactly(fd, frames.PREFIX_SIZE)
    if prefix is None:
        return None
    parts = [_read_exactly(fd, frames.header_length(prefix))]
    header, sizes = frames.parse_header(parts[0] or b"")
    parts += [_read_exactly(fd, size) if size else bytearray() for size in sizes]
    if any(part is None for part in parts):
        raise frames.FrameError("input ended inside a frame")
    return header, parts[1:]  # type: ignore[return-value]


def _write_frame(fd: int, pieces: list[Any]) -> None:
    for piece in pieces:
        view = memoryview(piece).cast("B")
        while view:
            view = view[os.write(fd, view) :]


def serve(fd_in: int, fd_out: int) -> None:
    """Answer frames until the input ends."""
    from ..memory import release_free_memory, tune_worker_allocator

    tune_worker_allocator()
    _write_frame(fd_out, frames.encode({"ready": True}))  # imports done: the pool may send jobs
    lookups: dict[str, PreviousVersion | None] = {}  # oldest first
    trimmed = True
    while True:
        if not trimmed and not select.select([fd_in], [], [], IDLE_SECONDS)[0]:
            release_free_memory()
            trimmed = True
        frame = _read_frame(fd_in)
        if frame is None:
            return
        header, buffers = frame
        trimmed = False
        op = header.get("op")
        if op == "known":
            token = str(header["token"])
            lookups.pop(token, None)
            while len(lookups) >= LOOKUPS:
                del lookups[next(iter(lookups))]
            lookups[token] = open_previous(token, str(header["directory"]))
        elif op == "forget":
            lookups.pop(str(header["token"]), None)
        elif op == "decode":
            needed = header.get("known")
            if needed is not None and needed not in lookups:
                raise frames.FrameError("a job names record digests this worker was not given")
            try:
                job = ChunkJob(**header["job"])  # from the daemon: trusted
                direct = header.get("direct")
                if direct is not None:  # the worker reads the chunk itself (storage/direct.py)
                    started = time.monotonic()
                    raw: bytes | bytearray = fetch(direct, float(header.get("timeout", 30.0)))
                    fetched = (len(raw), time.monotonic() - started)
                    key = bytes(buffers[0]) if buffers else None
                else:
                    raw, fetched = buffers[0], None
                    key = bytes(buffers[1]) if len(buffers) > 1 else None
                result = decode_job(job, raw, key, None if needed is None else lookups[needed])
                reply = result_frame(attrs.evolve(result, fetched=fetched))
            except DirectFailed as exc:
                reply = frames.encode({"direct_failed": str(exc)[:500]})
            except Exception as exc:  # noqa: BLE001 - every failure is a reply; the worker lives on
                reply = error_frame(exc)
            del buffers, frame
            _write_frame(fd_out, reply)
        else:
            raise frames.FrameError(f"unknown op {op!r}")


def main() -> None:
    stdin, stdout = sys.stdin.fileno(), sys.stdout.fileno()
    sys.stdout = sys.stderr  # nothing printed by accident can break the frames
    try:
        serve(stdin, stdout)
    except (BrokenPipeError, KeyboardInterrupt):
        pass


if __name__ == "__main__":
    main()
