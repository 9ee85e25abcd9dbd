"""Loading a session's vector database from storage, in Trio.

The loader task runs in the session's nursery (so a disconnect cancels it and
every download it started).  It fetches and verifies the manifest, then a
child nursery fetches the chunks in parallel under a
``CapacityLimiter(S5_MAX_PARALLEL_CHUNKS)``; each chunk is read, decrypted,
decoded and normalised by a decode worker process (``decoders.py``; read by
the worker itself where the storage says where, ``storage/direct.py``), or in
a thread without workers, and copied into its rows of one preallocated
matrix.  The whole load runs under ``fail_after`` (the loading
timeout).  Progress events go to the client as they happen, with exactly one
terminal event.

The pure parts (paths, blobs, manifests, chunks) live in ``formats/``; this
module only sequences I/O and concurrency and maps storage failures to the
protocol's loading codes.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import attrs
import numpy as np
import structlog
import trio

from .. import collector
from ..engine.builder import MatrixBuilder
from ..engine.matrix import COARSE_MIN_ROWS, RECORD_DIGEST_SIZE
from ..engine.packed import PackedBlobs, PackedStrings, has_repeats
from ..engine.rows import NormalisedBlock, numpy_dtype
from ..errors import ErrorCode, FabstirError, StorageError, StorageNotFound, StorageTooLarge
from ..formats.blob import decode_object, open_blob
from ..formats.manifest import Manifest, check_access, parse_manifest
from ..formats.paths import chunk_path, validate_path
from ..logging import get_logger
from ..memory import release_free_memory
from ..protocol.messages import VectorDatabaseRef, loading_progress
from ..storage.base import Storage
from ..storage.direct import Direct, DirectFailed
from ..storage.disk_cache import RowFile
from ..storage.row_writer import RowFileWriter, loading_dir
from ..workers.decode import ChunkJob, DecodedChunk, decode_job
from .access import decide, denial
from .cache import Flight, cache_key
from .content_key import version_digest
from .decoders import Known, WorkersUnavailable
from .hooks import Send
from .lineage import PreviousRows, lineage_id
from .sessions import DatabaseState, LoadStatus, Session

if TYPE_CHECKING:  # node.py imports this module
    from .node import Node

log = get_logger(__name__)

Emit = Callable[..., Awaitable[None]]


@attrs.define
class LoadStats:
    """What a load did, for the ``load_finished`` event and metrics."""

    bytes: int = 0
    chunks: int = 0
    download_s: float = 0.0
    decode_s: float = 0.0
    index_s: float = 0.0
    #: The access policy's decision (service/access.py) and the manifest's content digest, for the audit.
    decision: str | None = None
    manifest_digest: str | None = None
    #: Milliseconds from the load's start to each stage's end ("manifest", "chunks", "matrix", "ready").
    marks: dict[str, float] = attrs.field(factory=dict)
    started: float = attrs.field(factory=time.monotonic)
    #: CPU seconds of decoding (the decode workers' or threads' own time, not waits for the GIL or a slot).
    decode_cpu_s: float = 0.0
    #: Records recognised as the previous version's and copied, not decoded (service/lineage.py).
    reused_records: int = 0
    #: CPU seconds of the whole daemon process while the load ran (every thread: network, decoding,
    #: searches of other sessions).
    cpu_started: float = attrs.field(factory=time.process_time)

    def mark(self, stage: str) -> None:
        self.marks[stage] = round((time.monotonic() - self.started) * 1000, 1)


def _storage_error(exc: StorageError, what: str, code: ErrorCode) -> FabstirError:
    if isinstance(exc, StorageNotFound):
        found_code = ErrorCode.MANIFEST_NOT_FOUND if code is ErrorCode.MANIFEST_DOWNLOAD_FAILED else code
        return FabstirError(found_code, f"{what} not found", detail=str(exc))
    if isinstance(exc, StorageTooLarge):
        return FabstirError(ErrorCode.LIMIT_EXCEEDED, f"{what} is larger than this host accepts", detail=str(exc))
    return FabstirError(code, f"{what} could not be downloaded", detail=str(exc))


async def run_load(node: Node, session: Session, state: DatabaseState, send: Send) -> None:
    """Load ``state.ref`` for ``session``; always ends ``state`` with a terminal status unless cancelled."""
    settings = node.settings
    session_key = session.session_key  # a re-init may change it; this load keeps the one it started with
    started = time.monotonic()
    stats = LoadStats()

    async def emit(event: str, message: str, **extra: Any) -> None:
        if event == "chunk_downloaded":
            state.chunks_done += 1
        await send(loading_progress(session.session_id, event, message, **extra))

    with structlog.contextvars.bound_contextvars(
        session_id=session.session_id, manifest_path=state.ref.manifest_path
    ), trio.CancelScope() as scope:
        state.cancel_scope = scope
        state.status = LoadStatus.LOADING
        if node.metrics is not None:
            node.metrics.load_started()
        log.info("load_started")
        error: FabstirError | None = None
        engine = None
        try:
            with trio.fail_after(settings.s5_loading_timeout_minutes * 60):
                engine = await _load(
                    node, state, session_key, emit, stats, _throttle(node, session), chain_id=session.chain_id
                )
        except trio.TooSlowError:
            minutes = settings.s5_loading_timeout_minutes
            error = FabstirError(ErrorCode.TIMEOUT, f"loading did not finish within {minutes:g} minutes")
        except FabstirError as exc:
            error = exc
        except Exception:  # a bug must not kill the session; the client gets a code
            log.exception("load_crashed")
            error = FabstirError(ErrorCode.INTERNAL_ERROR, "internal error while loading the vector database")
        duration = time.monotonic() - started
        outcome = "success" if error is None else error.code.value
        if error is None and stats.chunks:  # a load that decoded chunks: what it keeps, out of later passes
            collector.settle()
        log.info(
            "load_finished",
            outcome=outcome,
            vector_count=state.vector_count if error is None else 0,
            chunk_count=stats.chunks,
            bytes=stats.bytes,
            download_ms=round(stats.download_s * 1000, 1),
            decode_ms=round(stats.decode_s * 1000, 1),
            index_ms=round(stats.index_s * 1000, 1),
            duration_ms=round(duration * 1000, 1),
            stages_ms=stats.marks,
            decode_cpu_ms=round(stats.decode_cpu_s * 1000, 1),
            reused_records=stats.reused_records,
            process_cpu_ms=round((time.process_time() - stats.cpu_started) * 1000, 1),
            error_detail=error.detail if error is not None else None,
        )
        _audit(node, session, state, stats, outcome)
        if node.metrics is not None:
            node.metrics.load_finished(outcome, duration, state.vector_count if error is None else 0)
        if error is None:
            state.finish(engine=engine)
            await emit(
                "loading_complete", f"loaded {state.vector_count} vectors",
                vector_count=state.vector_count, duration_ms=round(duration * 1000, 1),
            )
        else:
            state.finish(error=error)
            await emit("loading_error", error.message, error_code=error.code.value, error=error.message)
    if scope.cancelled_caught and not state.done.is_set():
        if node.metrics is not None:
            node.metrics.load_finished("cancelled", time.monotonic() - started)
        if state.release is not None:
            state.drop()  # cancelled between getting the database and finishing: give it back
        log.info("load_cancelled", session_id=session.session_id)
        with structlog.contextvars.bound_contextvars(
            session_id=session.session_id, manifest_path=state.ref.manifest_path
        ):
            _audit(node, session, state, stats, "cancelled")


def _audit(node: Any, session: Session, state: DatabaseState, stats: LoadStats, outcome: str) -> None:
    """One ``load_audit`` line per load: who, which database, the policy's decision, the outcome.

    Addresses and the manifest's content digest only: never keys, session keys or vectors.
    """
    log.info(
        "load_audit",
        policy=node.settings.access_policy,
        decision=stats.decision,
        outcome=outcome,
        signed=state.signer is not None,
        client_address=state.signer,
        claimed_address=state.ref.user_address,
        peer=session.peer,
        with_directory_key=state.ref.directory_key is not None,
        manifest_digest=stats.manifest_digest,
    )


Throttle = Callable[[], Awaitable[None]]


def _throttle(node: Node, session: Session) -> Throttle:
    """Wait for the session's next download slot, or refuse when that is too far off."""
    max_delay = node.settings.s5_rate_limit_max_delay_seconds

    async def throttle() -> None:
        window = session.downloads
        if window is None:
            return
        now = trio.current_time()
        delay = window.reserve(now)
        if delay > max_delay:
            window.cancel(delay, now)
            raise FabstirError(
                ErrorCode.RATE_LIMIT_EXCEEDED, "this session has started too many downloads; retry later"
            )
        if delay > 0:
            await trio.sleep(delay)

    return throttle


def database_storage(node: Node, ref: VectorDatabaseRef | None, chain_id: int | None) -> Storage:
    """The storage that reads ``ref``'s database.

    A backend that resolves paths in per-user trees (native S5) offers
    ``for_database(ref, chain_id)``, a view that knows whose tree to read and
    whose ``name`` says so (the cache key uses it); other backends serve every
    database themselves.
    """
    storage = node.require_storage()
    for_database = getattr(storage, "for_database", None)
    return storage if for_database is None else for_database(ref, chain_id)


async def _load(
    node: Node, state: DatabaseState, key: bytes | None, emit: Emit, stats: LoadStats, throttle: Throttle,
    *, chain_id: int | None = None,
) -> Any:
    """Verify this session's manifest, then get the database from the shared cache (loading it once)."""
    settings = node.settings
    path = validate_path(state.ref.manifest_path)
    storage = database_storage(node, state.ref, chain_id)
    # The access policy, before anything is read (a plaintext init under `signed` reads nothing) and,
    # if it needs the owner, again on the manifest: always before a chunk or a cached copy is touched.
    capability = bool(getattr(storage, "capability", False))
    decision = decide(settings.access_policy, signer=state.signer, capability=capability)

    def authorize(manifest: Manifest) -> None:
        nonlocal decision
        stats.manifest_digest = manifest.digest
        if decision is None:
            decision = decide(
                settings.access_policy, signer=state.signer, capability=capability, owner=manifest.owner
            )
            _enforce(decision, stats)

    if decision is not None:
        _enforce(decision, stats)
    await throttle()
    node.decoders.warm()  # the decode workers start while the manifest downloads
    manifest = await fetch_manifest(
        node, path, state.ref.user_address, key, stats, storage=storage, authorize=authorize
    )
    await emit("manifest_downloaded", "manifest downloaded and verified", total=manifest.chunk_count)
    stats.mark("manifest")
    if manifest.dimensions is not None:
        _check_memory(node, held_bytes(manifest.vector_count, manifest.dimensions, settings.vector_dtype))
    state.chunks_total = manifest.chunk_count
    backend = getattr(storage, "name", type(storage).__name__)
    dkey = cache_key(backend, path, await version_digest(storage, path, manifest), settings.vector_dtype)

    lineage = getattr(node, "lineage", None)  # a new version's graph from the previous one's
    ident = lineage_id(backend, path, settings.vector_dtype)

    async def load_once(flight: Flight) -> Any:
        saved = await node.indexer.lookup(dkey)  # the disk cache (a restart, or an evicted entry)
        if saved is not None:
            if lineage is not None:
                await lineage.remember(ident, dkey)  # the next version is loaded against this one
            await flight.emit("index_building", "opening the saved search index")
            return saved
        # started now, the update process loads the previous version's graph while the chunks arrive
        updater = None if lineage is None else await lineage.prepare(ident, dkey, manifest.vector_count)
        try:
            previous = None
            # the records the previous version holds are recognised by their bytes, not decoded again
            # (also when its graph is not built yet: then the new version gets one from scratch)
            source = updater.previous if updater is not None else (
                None if lineage is None else lineage.reusable(ident, dkey))
            if lineage is not None and source is not None and manifest.dimensions is not None:
                previous = await lineage.previous_rows(source, manifest.dimensions)
                stats.mark("previous")
            return await download_and_follow(flight, updater, previous)
        finally:
            if updater is not None and not updater.handed_over:
                await updater.aclose()

    async def download_and_follow(flight: Flight, updater: Any, previous: PreviousRows | None) -> Any:
        ids, builder, metadata = await fetch_chunks(
            node, path, manifest, key, flight.emit, stats, storage=storage, previous=previous
        )
        digests = builder.digests
        stats.mark("chunks")
        await flight.emit("index_building", "building the search index")
        started = time.monotonic()
        try:
            engine = await trio.to_thread.run_sync(
                lambda: builder.finish(ids, metadata, digests), limiter=node.load_limiter
            )
        finally:
            builder.release_sink()
        if isinstance(engine.vectors, np.memmap):  # rows in a file: re-score candidates with pread
            engine = engine.with_row_reader(RowFile(engine.vectors))
        await trio.to_thread.run_sync(release_free_memory)  # the load's freed buffers, back to the system now
        stats.index_s = time.monotonic() - started
        stats.mark("matrix")
        if node.metrics is not None:
            node.metrics.index_build(stats.index_s)
        if lineage is not None:
            # with the previous version's digests, the rows it recognised are the mapping (the rest changed)
            mapping = None
            if previous is not None:
                mapping = builder.reused if builder.reused is not None else np.full(len(engine), -1, np.int64)
                stats.reused_records = int((mapping >= 0).sum())
            engine = await lineage.follow(ident, dkey, engine, flight.emit, updater, mapping=mapping,
                                          old=None if previous is None else previous.matrix)
            stats.mark("graph")
        return engine

    entry = await node.cache.acquire(dkey, load_once, emit)
    state.release = lambda: node.cache.release(entry)
    state.vector_count = len(entry)
    return entry


def _enforce(decision: Any, stats: LoadStats) -> None:
    """Record the access decision; raise its ``ACCESS_DENIED`` if it refuses."""
    stats.decision = decision.value
    error = denial(decision)
    if error is not None:
        raise error


async def fetch_manifest(
    node: Node, path: str, user_address: str, key: bytes | None, stats: LoadStats, *,
    storage: Storage | None = None, authorize: Callable[[Manifest], None] | None = None,
) -> Manifest:
    """Download, decrypt, parse and check one manifest (every session does this itself).

    ``storage`` is the database's view (:func:`database_storage`); default ``node.storage``.
    ``authorize`` (the access policy) sees the parsed manifest before the owner check.
    """
    storage = node.require_storage() if storage is None else storage
    raw = await _download(
        node, storage, path, stats, "manifest", ErrorCode.MANIFEST_DOWNLOAD_FAILED,
        max_bytes=node.settings.max_manifest_bytes,
    )
    settings = node.settings

    def decode() -> Manifest:
        obj = decode_object(open_blob(raw, key))
        return parse_manifest(obj, max_chunks=settings.max_chunks, max_dimensions=settings.max_dimensions)

    manifest = await trio.to_thread.run_sync(decode, limiter=node.load_limiter)
    if authorize is not None:
        authorize(manifest)
    check_access(manifest, user_address)
    return manifest


async def fetch_chunks(
    node: Node, manifest_path: str, manifest: Manifest, key: bytes | None, emit: Emit, stats: LoadStats,
    *, storage: Storage | None = None, previous: PreviousRows | None = None,
) -> tuple[PackedStrings, MatrixBuilder, PackedBlobs]:
    """Download and decode every chunk in parallel into one matrix; ids and metadata beside it.

    The chunks are not throttled: the session asked for one database (its manifest was counted by
    the session's download window), and what a load may fetch for it is bounded by
    FABSTIR_MAX_CHUNKS and the memory limit; counting every chunk made a 1M-vector database (100
    chunks) trip the abuse limit.

    Each chunk is decoded and normalised into rows of the final matrix's dtype (``VECTOR_DTYPE``)
    where it is decoded (a decode worker, or a thread), so there is never a float32 copy of the whole
    database and the decoding overlaps the downloads.

    ``previous`` (a new version of a database the node holds, ``service/lineage.py``): records whose
    bytes it knows are not decoded; their rows and metadata are copied from it where the chunk is
    decoded (``builder.reused`` says which).  Every record's digest ends up in ``builder.digests`` when
    every chunk had them.
    """
    storage = node.require_storage() if storage is None else storage
    settings = node.settings
    counts = [ref.vector_count for ref in manifest.chunks]
    offsets = np.concatenate([[0], np.cumsum(counts, dtype=np.int64)]).tolist()
    ids: list[PackedStrings | None] = [None] * len(counts)
    metadata: list[PackedBlobs | None] = [None] * len(counts)
    digests: list[bytes | None] = [None] * len(counts)
    hashes: list[np.ndarray | None] = [None] * len(counts)
    dims_lock = trio.Lock()
    dtype = settings.vector_dtype
    holder: dict[str, Any] = {"dims": manifest.dimensions, "matrix": None}
    if manifest.dimensions is not None:
        holder["matrix"] = await _new_builder(node, manifest.vector_count, manifest.dimensions, dtype)
    limiter = trio.CapacityLimiter(settings.s5_max_parallel_chunks)
    done = 0
    pool = node.decoders
    coarse = manifest.vector_count >= COARSE_MIN_ROWS  # the builder's rule (engine/builder.py)

    async def one(index: int) -> None:
        # A slot covers the download *and* the decode: at most S5_MAX_PARALLEL_CHUNKS stored bodies
        # are in memory at once (with the slot released after the download, bodies that arrived
        # faster than they were decoded piled up: a 100K load peaked at ~690 MB instead of ~400).
        async with limiter:
            await one_in_slot(index)

    async def one_in_slot(index: int) -> None:
        nonlocal done
        ref = manifest.chunks[index]
        started = time.monotonic()
        decoded = None
        async with dims_lock:
            if holder["matrix"] is None:  # dimensions missing from the manifest: the first chunk fixes them
                decoded = await obtain(index)
                holder["dims"] = decoded.dimensions
                _check_memory(node, held_bytes(manifest.vector_count, decoded.dimensions, dtype))
                holder["matrix"] = await _new_builder(node, manifest.vector_count, decoded.dimensions, dtype)
        if decoded is None:
            decoded = await obtain(index)
        stats.decode_cpu_s += decoded.cpu_s
        chunk_ids, chunk_meta = await trio.to_thread.run_sync(put, index, decoded, limiter=node.load_limiter)
        stats.decode_s += time.monotonic() - started
        ids[index], metadata[index] = chunk_ids, chunk_meta
        # the manifest can lie about what the vectors cost: count ids and metadata as they arrive
        holder["extra"] = holder.get("extra", 0) + chunk_ids.nbytes + chunk_meta.nbytes
        _check_memory(node, held_bytes(manifest.vector_count, holder["dims"], dtype) + holder["extra"])
        done += 1
        stats.chunks = done
        await emit(
            "chunk_downloaded", f"chunk {ref.chunk_id} downloaded ({done}/{len(counts)})",
            chunk_id=ref.chunk_id, total=len(counts), percent=round(100.0 * done / len(counts), 1),
        )

    async def obtain(index: int) -> DecodedChunk:
        """Chunk ``index`` decoded: read by a decode worker itself where the storage says where
        (``storage/direct.py``), else downloaded here and handed over."""
        ref = manifest.chunks[index]
        path = chunk_path(manifest_path, ref.chunk_id)
        direct = None
        if pool.running and hasattr(storage, "direct"):
            try:
                direct = await storage.direct(path)
            except StorageError:
                direct = None  # the ordinary read below words the error
        if direct is not None:
            try:
                decoded = await decode(index, direct)
                if decoded.fetched is not None:
                    size, seconds = decoded.fetched
                    _count_download(node, stats, seconds, size)
                return decoded
            except (DirectFailed, WorkersUnavailable) as exc:
                log.info("direct_read_failed", chunk_id=ref.chunk_id, reason=str(exc)[:200])
                if isinstance(exc, DirectFailed) and direct.failed is not None:
                    direct.failed(str(exc)[:200])
            finally:
                if direct.close is not None:
                    direct.close()
        raw = await _download(node, storage, path, stats, f"chunk {ref.chunk_id}", ErrorCode.CHUNK_DOWNLOAD_FAILED)
        return await decode(index, raw)

    async def decode(index: int, raw: bytes | bytearray | Direct) -> DecodedChunk:
        """Decrypt, decode and normalise one chunk: in a decode worker process, else in a thread
        (``raw`` a :class:`Direct`: the worker reads it; ``WorkersUnavailable`` if there is none)."""
        ref = manifest.chunks[index]
        job = ChunkJob(chunk_id=ref.chunk_id, expected_count=ref.vector_count, dimensions=holder["dims"],
                       dtype=dtype, coarse=coarse, max_metadata_bytes=settings.max_metadata_bytes)
        if pool.running:
            shared = None if previous is None else Known(previous.token, str(previous.directory or ""))
            try:
                return await pool.decode(job, raw, key, shared, timeout=settings.s5_download_timeout_seconds)
            except WorkersUnavailable:
                if isinstance(raw, Direct):
                    raise
                # logged by the pool: this chunk in a thread
        elif isinstance(raw, Direct):
            raise WorkersUnavailable("the decode workers are not running")

        def in_thread() -> DecodedChunk:  # the previous version's lookup is built here, off the event loop
            return decode_job(job, raw, key, None if previous is None else previous.version)

        return await trio.to_thread.run_sync(in_thread, limiter=node.load_limiter)

    def put(index: int, decoded: DecodedChunk) -> tuple[PackedStrings, PackedBlobs]:
        """Copy a decoded chunk's rows into the matrix (a thread's work); its ids and metadata."""
        digests[index] = decoded.digests
        hashes[index] = decoded.id_hashes
        block = NormalisedBlock(decoded.rows, decoded.degenerate, decoded.codes, decoded.scales)
        # recognised records arrive whole (their rows and metadata copied where they were decoded);
        # ``reused`` is the mapping the graph update follows
        holder["matrix"].put(offsets[index], block, reused=decoded.reused)
        return decoded.ids, decoded.metadata

    def join() -> tuple[PackedStrings, PackedBlobs]:
        all_ids = PackedStrings.concat(ids)  # type: ignore[arg-type]
        if has_repeats(all_ids, hashes):
            raise FabstirError(ErrorCode.INVALID_DATABASE, "the database holds the same vector id more than once")
        return all_ids, PackedBlobs.concat(metadata)  # type: ignore[arg-type]

    try:
        if previous is not None:
            pool.share(previous.token)
        try:
            async with trio.open_nursery() as nursery:
                for index in range(len(counts)):
                    nursery.start_soon(one, index)
        except* FabstirError as group:
            raise _first_leaf(group) from None
        finally:
            if previous is not None:
                with trio.CancelScope(shield=True), trio.move_on_after(5):
                    await pool.unshare(previous.token)
        all_ids, all_meta = await trio.to_thread.run_sync(join, limiter=node.load_limiter)
        if all(d is not None for d in digests):
            joined = b"".join(digests)  # type: ignore[arg-type]
            holder["matrix"].digests = np.frombuffer(joined, np.uint8).reshape(-1, RECORD_DIGEST_SIZE)
    except BaseException:
        if holder["matrix"] is not None:
            holder["matrix"].discard_sink()  # a failed or cancelled load leaves no row file behind
        raise
    return all_ids, holder["matrix"], all_meta


async def _new_builder(node: Node, rows: int, dimensions: int, dtype: str) -> MatrixBuilder:
    """A builder for a load; with a disk cache its rows go to a file (``storage/row_writer.py``), not memory."""
    cache_dir = getattr(node.indexer, "cache_dir", None)
    if cache_dir is None:
        return MatrixBuilder(rows, dimensions, dtype)  # type: ignore[arg-type]
    writer = await trio.to_thread.run_sync(
        RowFileWriter, loading_dir(cache_dir), rows, dimensions, numpy_dtype(dtype)
    )
    codes = None
    if rows >= COARSE_MIN_ROWS:  # the 8-bit copy's plain codes too: it scans packed blocks in memory
        try:
            codes = await trio.to_thread.run_sync(
                RowFileWriter, loading_dir(cache_dir), rows, dimensions, np.dtype(np.int8)
            )
        except BaseException:
            writer.discard()
            raise
    return MatrixBuilder(rows, dimensions, dtype, sink=writer, codes_sink=codes)  # type: ignore[arg-type]


def held_bytes(vectors: int, dimensions: int, dtype: str) -> int:
    """Bytes of the rows a database is held as (``VECTOR_DTYPE``: f16/bf16 2 per number, f32 4).

    What admission counts: the rows as the node really keeps them, not ``count x dim x 4``.  Ids and
    metadata are added as they arrive; the HNSW graph is a memory-mapped file beside the rows (an
    8-bit graph takes about two thirds of the f16 rows' size, see docs/operations.md).
    """
    return vectors * dimensions * numpy_dtype(dtype).itemsize


def _check_memory(node: Node, nbytes: int) -> None:
    limit_mb = node.settings.vector_memory_limit_mb
    if nbytes > limit_mb * 2**20:
        raise FabstirError(
            ErrorCode.MEMORY_LIMIT_EXCEEDED,
            f"database needs {nbytes / 2**20:,.0f} MB as this host holds it (VECTOR_DTYPE rows, ids and "
            f"metadata), more than its limit of {limit_mb:g} MB per database",
        )


async def _download(
    node: Node, storage: Storage, path: str, stats: LoadStats, what: str, code: ErrorCode, *,
    max_bytes: int | None = None,
) -> bytes:
    """One object from storage, timed for the stats and metrics; failures become ``code`` (or not-found)."""
    started = time.monotonic()
    error: StorageError | None = None
    try:
        raw = await storage.get(path, max_bytes=max_bytes)
    except StorageError as exc:
        error = exc
    seconds = time.monotonic() - started
    if error is not None:
        if node.metrics is not None:
            node.metrics.download(seconds, error)
        raise _storage_error(error, what, code) from None
    _count_download(node, stats, seconds, len(raw))
    return raw


def _count_download(node: Node, stats: LoadStats, seconds: float, size: int) -> None:
    """A completed download in the load's stats and the metrics (here or by a decode worker)."""
    if node.metrics is not None:
        node.metrics.download(seconds, None)
    stats.download_s += seconds
    stats.bytes += size


def _first_leaf(group: BaseExceptionGroup) -> BaseException:
    """The first concrete exception in a (possibly nested) exception group."""
    first: BaseException = group
    while isinstance(first, BaseExceptionGroup):
        first = first.exceptions[0]
    return first
