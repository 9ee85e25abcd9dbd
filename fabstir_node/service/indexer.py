"""Persisting loaded databases and building their HNSW graphs in the background.

The :class:`Indexer` is the cache's ``on_loaded`` hook and the loader's disk
lookup.  For every database the cache loads it:

1. **persists** it under ``{cache_dir}/{key}/`` (``storage/disk_cache.py``, in a
   thread: it is file I/O and hashing, which release the GIL), unless it came
   from there, and swaps in the memory-mapped copy, freeing the in-memory one;
2. when it has at least ``hnsw_min_vectors`` rows and no graph yet, waits for
   its turn in the :class:`~.build_queue.BuildQueue` (one build at a time,
   the database with the most sessions first), then runs
   ``python -m fabstir_node.storage.index_builder`` at ``SCHED_IDLE`` — a
   separate process, so usearch's GIL convoy (engine-notes §1.4) cannot touch
   the daemon — under a deadline, in the cache's nursery (so shutdown or
   cancellation kills it), while exact search keeps answering;
3. reopens the directory with the graph (``view()``: memory-mapped, no copy)
   and swaps that engine into the cache entry in one assignment; the next
   search of every session uses it.

:meth:`Indexer.lookup` serves the loader on a memory miss: it opens the
saved directory (validated, memory-mapped, graph attached when there is a
valid one), or discards a corrupt directory and returns None so the loader
downloads the chunks again.

Without a ``cache_dir`` nothing is persisted and no graph is built: every
search is exact.  A build that fails, crashes or overruns its deadline is
logged; the database stays on exact search.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import trio

from ..config import Settings
from ..engine.matrix import COARSE_MIN_ROWS
from ..logging import get_logger
from ..memory import release_free_memory
from ..priority import idle_thread
from ..storage import disk_cache as persist
from ..storage.row_writer import clear_stale
from .background import Background
from .build_queue import BuildQueue
from .cache import CachedDatabase

log = get_logger(__name__)


#: A build may take this long, plus this much per 1,000 vectors, before it is killed.
BUILD_DEADLINE_BASE = 60.0
BUILD_DEADLINE_PER_1000 = 1.0


async def _in_background(fn: Any, *args: Any) -> Any:
    """``fn(*args)`` in a worker thread at idle CPU priority (searches preempt it)."""

    def run() -> Any:
        with idle_thread():
            return fn(*args)

    return await trio.to_thread.run_sync(run)


async def _run_idle(
    command: list[str], background: Background, on_line: Callable[[bytes], None] | None = None
) -> tuple[int, bytes]:
    """Run ``command`` as a background process (``background.spawn``: under ``SCHED_IDLE`` from its start,
    paused by whole-database scans); (exit status, the tail of its stdout + stderr).

    ``on_line`` sees each complete output line as it arrives.  Cancelled, the process is killed and
    reaped before this returns.
    """
    process = await background.spawn(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        output = bytearray()
        pending = b""
        assert process.stdout is not None
        async with process.stdout:
            async for data in process.stdout:
                output += data
                del output[:-65536]
                if on_line is not None:
                    *lines, pending = (pending + data).split(b"\n")
                    for line in lines:
                        on_line(line)
        return await process.wait(), bytes(output)
    finally:
        background.discard(process.pid)  # continued first if a scan has it stopped
        if process.returncode is None:
            process.kill()
            with trio.CancelScope(shield=True):
                await process.wait()


class Indexer:
    """The ``on_loaded`` hook and disk lookup of one daemon's cache."""

    def __init__(
        self,
        cache_dir: Path | None,
        *,
        min_vectors: int = 20_000,
        dtype: str = "i8",
        connectivity: int = 16,
        expansion_add: int = 160,
        expansion_search: int = 64,
        build_threads: int = 0,
        build_slots: int = 1,
        ivf_min_vectors: int = 500_000,
    ) -> None:
        self.cache_dir = cache_dir
        self.min_vectors = min_vectors
        self.dtype = dtype
        self.connectivity = connectivity
        self.expansion_add = expansion_add
        self.expansion_search = expansion_search
        self.build_threads = build_threads
        #: Where builder and update processes are started and registered while they run (the node
        #: gives its own, which its searches pause).
        self.background = Background()
        #: Databases this large get an inverted-file index (``engine/ivf.py``), not a graph.
        self.ivf_min_vectors = ivf_min_vectors
        #: Keys whose graph is being built (one build per key at a time).
        self._building: set[str] = set()
        #: Builds take turns (``build_queue.py``); metrics read its length and progress.
        self.queue = BuildQueue(build_slots)
        if cache_dir is not None:
            clear_stale(cache_dir)  # row files of loads a crashed process left behind

    @classmethod
    def from_settings(cls, settings: Settings) -> Indexer:
        return cls(
            getattr(settings, "cache_dir", None),
            min_vectors=getattr(settings, "hnsw_min_vectors", 20_000),
            dtype=getattr(settings, "hnsw_dtype", "i8"),
            connectivity=getattr(settings, "hnsw_connectivity", 16),
            expansion_add=getattr(settings, "hnsw_expansion_add", 160),
            expansion_search=getattr(settings, "hnsw_expansion_search", 64),
            ivf_min_vectors=getattr(settings, "ivf_min_vectors", 500_000),
        )

    def directory(self, key: str) -> Path:
        assert self.cache_dir is not None
        return self.cache_dir / key

    # --- the loader's disk lookup ------------------------------------------------

    async def lookup(self, key: str) -> Any | None:
        """The saved engine for ``key`` (memory-mapped), or None when there is none or it is corrupt."""
        if self.cache_dir is None:
            return None
        directory = self.directory(key)
        if not directory.exists():
            return None

        started = time.monotonic()
        engine = await trio.to_thread.run_sync(self._open, directory, key)
        if engine is not None and engine.index is None and len(engine) >= COARSE_MIN_ROWS:
            # no graph yet (the build was interrupted): searches until it is ready take the 8-bit scan
            opened = engine
            coarse = await trio.to_thread.run_sync(lambda: persist.coarse_rows(opened).packed_copy())
            engine = engine.with_index(None, coarse=coarse)
        if engine is not None:
            log.info(
                "disk_cache_hit", cache_key=key[:16], vectors=len(engine),
                hnsw=engine.index is not None, open_ms=round((time.monotonic() - started) * 1000, 1),
            )
        return engine

    # --- the cache's on_loaded hook ------------------------------------------------

    async def on_loaded(self, entry: CachedDatabase) -> None:
        """Persist ``entry``, then build, view and swap in its graph when it is large enough."""
        if entry.engine.index is not None:
            entry.swap(entry.engine, "hnsw")  # opened from disk with its graph
            return
        if self.cache_dir is None or entry.key in self._building:
            return
        self._building.add(entry.key)
        try:
            await self._persist_and_index(entry)
        except Exception:  # background work: log it, the entry stays on exact search
            log.exception("indexing_failed", cache_key=entry.key[:16])
        finally:
            self._building.discard(entry.key)

    async def _persist_and_index(self, entry: CachedDatabase) -> None:
        key, engine = entry.key, entry.engine
        directory = self.directory(key)
        started = time.monotonic()
        saved = await _in_background(lambda: persist.save(directory, engine, key=key))
        if saved:
            log.info("disk_cache_saved", cache_key=key[:16], ms=round((time.monotonic() - started) * 1000, 1))
        # Serve from the saved files from now on: metadata is then read only for the hits, and the
        # in-memory copies are freed (the cache's byte budget counts what stays resident).  Files
        # this process just wrote (and hashed) are not hashed again; any others are.
        mapped = await _in_background(self._open, directory, key, not saved)
        if mapped is None:
            return
        if mapped.index is None and len(mapped) >= COARSE_MIN_ROWS:
            # the load's 8-bit copy serves until the graph; one opened from disk gets one made now
            coarse = getattr(engine, "coarse", None)
            if coarse is None:
                coarse = await _in_background(lambda: persist.coarse_rows(mapped).packed_copy())
            mapped = mapped.with_index(None, coarse=coarse)
        entry.swap(mapped, "hnsw" if mapped.index is not None else "exact")
        engine = None  # the in-memory copy can go (the closure above shares this name)
        await trio.to_thread.run_sync(release_free_memory)
        if mapped.index is not None or len(mapped) < self.min_vectors:
            return
        async with self.queue.slot(key, lambda: float(entry.users)) as turn:
            if not await self._build(key, directory, len(entry), turn):
                return
        # A fresh mapping: pages the exact scans touched are not carried over to the graph's era.
        # The matrix files were checked above; the new graph is.
        fresh = await _in_background(self._open, directory, key, False)
        if fresh is None or fresh.index is None:
            return
        entry.swap(fresh, "hnsw")
        await trio.to_thread.run_sync(release_free_memory)  # what the reopening parsed and dropped
        log.info("hnsw_ready", cache_key=key[:16], vectors=len(fresh), ms=round((time.monotonic() - started) * 1000))

    def _open(self, directory: Path, key: str, verify: bool = True) -> Any | None:
        try:
            return persist.open_matrix(directory, key=key, expansion_search=self.expansion_search, verify=verify)
        except (persist.CorruptCache, OSError) as exc:
            log.warning("disk_cache_discarded", cache_key=key[:16], reason=str(exc))
            persist.discard(directory)
            return None

    async def _build(self, key: str, directory: Path, count: int, turn: Any = None) -> bool:
        """Run the builder process; True when it wrote a graph.  Its progress lines update ``turn``."""
        command = [
            sys.executable, "-m", "fabstir_node.storage.index_builder", str(directory), "--key", key,
            "--dtype", self.dtype, "--connectivity", str(self.connectivity),
            "--expansion-add", str(self.expansion_add),
            "--min-expansion-search", str(self.expansion_search),
            "--threads", str(self.build_threads), "--ivf-min-rows", str(self.ivf_min_vectors),
        ]
        deadline = BUILD_DEADLINE_BASE + BUILD_DEADLINE_PER_1000 * count / 1000
        started = time.monotonic()
        log.info("hnsw_build_started", cache_key=key[:16], vectors=count)
        report: dict[str, Any] = {}

        def on_line(line: bytes) -> None:
            try:
                event = orjson.loads(line)
            except orjson.JSONDecodeError:
                return
            if not isinstance(event, dict):
                return
            if event.get("event") == "progress" and turn is not None:
                added, total = event.get("added"), event.get("total")
                if isinstance(added, int) and isinstance(total, int) and total > 0:
                    turn.progress = min(1.0, added / total)
            elif event.get("event") == "index_built":
                report.update(event)

        with trio.move_on_after(deadline) as scope:
            returncode, output = await _run_idle(command, self.background, on_line)
        seconds = time.monotonic() - started
        if scope.cancelled_caught:
            log.warning("hnsw_build_timed_out", cache_key=key[:16], seconds=round(seconds, 1))
            return False
        if returncode != 0:
            log.warning(
                "hnsw_build_failed", cache_key=key[:16], returncode=returncode,
                output=output[-2000:].decode(errors="replace"),
            )
            if returncode == 3:
                persist.discard(directory)
            return False
        calibration = report.get("calibration") or {}
        log.info(
            "hnsw_built", cache_key=key[:16], vectors=count, seconds=round(seconds, 2),
            build_s=report.get("build_s"), calibrate_s=report.get("calibrate_s"),
            kind=report.get("kind", "hnsw"), expansion_search=calibration.get("expansion_search"),
            min_kth_score=calibration.get("min_kth_score"),
            sample_recall=calibration.get("recall"), sample_fallback=calibration.get("fallback"),
        )
        return True
