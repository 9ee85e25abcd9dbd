"""Version lineage: a new version of a database is loaded against the one the node last loaded.

The node remembers, per storage backend, manifest path and vector dtype, the
cache key of the version it last loaded — by a download or from the disk cache —
(in memory, and in ``{cache_dir}/lineage/{digest}.json`` so a restart keeps it).
When a load of that path is for a *new* version whose predecessor is saved on disk,
the load takes what it can from it:

0. when the load starts and the predecessor has a graph (:meth:`Lineage.prepare`),
   ``storage/index_update.py`` starts in a process at idle priority and loads
   the old graph (checked against its digest) while the chunks download;
1. the predecessor's record digests (:meth:`Lineage.previous_rows`, graph or
   not) let the chunk walker recognise unchanged records by their bytes: their
   rows, ids and metadata are copied, not decoded (``formats/records.py``); a
   predecessor without digests is compared row by row once the new matrix is
   decoded (``engine/reuse.py``; byte for byte, nothing taken on trust);
2. with a graph to start from, the new version answers at once through an
   :class:`~fabstir_node.engine.overlay.OverlayIndex` over the old graph
   (:meth:`Lineage.follow`): its sessions search on a graph from their first
   search;
3. in the background (:meth:`Lineage._complete`, owning the update process):
   the daemon saves the new matrix (atomic) while the process removes the
   nodes of gone and changed rows, renames the kept ones and adds the new
   rows; the graph is moved beside the saved matrix (``persist.adopt_index``:
   graph, then ``index.json``), the directory opened without hashing again
   what was just written and hashed, and swapped into the cache entry.

Then the lineage record moves to the new key (atomic), and the old version's
directory is removed if no session holds it (its files stay readable by any
mapping still open).  A crash at any point leaves either the old record and a
new directory with or without a whole graph (the next load opens or rebuilds
it), or the new record: the disk cache always reopens to a consistent version.
The update process's files live in the daemon's ``.loading/{pid}/`` directory,
cleared at start when it died.

The old graph keeps removed nodes as tombstones; recall falls as they pile up
(measured: i8 graph, 30K rows, 2 % removed per version: 0.99 after six
versions).  When the tombstones pass :data:`REBUILD_SHARE` of the rows, the
graph is rebuilt from scratch in the background (the session already searches
on the updated one) and swapped in.  Anything that fails leaves the ordinary
path: the indexer saves the matrix and builds a graph from scratch (the overlay,
if the session already has it, answers until then).
"""

from __future__ import annotations

import functools
import hashlib
import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import trio

from ..engine.overlay import OverlayIndex
from ..engine.reuse import PreviousVersion, matching_rows
from ..engine.rows import as_float32
from ..formats.records import digest_lookup
from ..logging import get_logger
from ..storage import disk_cache as persist
from ..storage.row_writer import loading_dir
from .background import Background
from .indexer import _in_background

log = get_logger(__name__)

__all__ = ["REBUILD_SHARE", "Lineage", "PreviousRows", "Updater"]

#: Rebuild the graph from scratch once removed rows reach this share of the live rows.
REBUILD_SHARE = 0.10
#: An update may take this long, plus this much per 1,000 rows, before it is killed.
UPDATE_DEADLINE_BASE = 30.0
UPDATE_DEADLINE_PER_1000 = 0.2
#: Test hook: ``FABSTIR_TEST_CRASH_AT=<point>`` kills the daemon with SIGKILL at that point of an update.
CRASH_ENV = "FABSTIR_TEST_CRASH_AT"


def _crash_point(name: str) -> None:
    if os.environ.get(CRASH_ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)


def lineage_id(backend: str, manifest_path: str, dtype: str) -> str:
    return hashlib.sha256("\x00".join((backend, manifest_path, dtype)).encode()).hexdigest()


class Lineage:
    """The last version loaded per path, and the graph update of the next one."""

    def __init__(self, indexer: Any, cache: Any) -> None:
        self.indexer = indexer
        self.cache = cache
        self._last: dict[str, str] = {}

    def _record(self, ident: str) -> Path:
        return self.indexer.cache_dir / "lineage" / f"{ident}.json"

    def previous(self, ident: str) -> str | None:
        """The key last loaded for ``ident`` (memory, else the record on disk)."""
        if ident in self._last:
            return self._last[ident]
        if self.indexer.cache_dir is None:
            return None
        try:
            key = orjson.loads(self._record(ident).read_bytes()).get("key")
        except (OSError, orjson.JSONDecodeError, AttributeError):
            return None
        return key if isinstance(key, str) else None

    async def remember(self, ident: str, key: str) -> None:
        self._last[ident] = key
        if self.indexer.cache_dir is None:
            return
        path = self._record(ident)

        def write() -> None:
            path.parent.mkdir(parents=True, exist_ok=True)
            persist._write_json(path, {"key": key, "at": time.time()})

        await trio.to_thread.run_sync(write)

    def reusable(self, ident: str, key: str) -> str | None:
        """The previous version ``key``'s records may be taken from (saved on disk, graph or not)."""
        previous = self.previous(ident)
        indexer = self.indexer
        if previous is None or previous == key or indexer.cache_dir is None:
            return None
        return previous if persist.has_matrix(indexer.directory(previous)) else None

    def eligible(self, ident: str, key: str, rows: int) -> str | None:
        """The previous version ``key``'s graph is updated from (saved, with its graph), else None."""
        previous = self.reusable(ident, key)
        if (
            previous is None or rows < self.indexer.min_vectors
            or not persist.has_index(self.indexer.directory(previous))
        ):
            return None
        return previous

    async def prepare(self, ident: str, key: str, rows: int) -> Updater | None:
        """Start the update process for version ``key`` when there is a previous one to update from.

        Called when the load starts: the process starts and loads the old graph while the chunks
        download.  The caller closes what it gets back (:meth:`Updater.aclose`) when the load ends.
        """
        previous = self.eligible(ident, key, rows)
        if previous is None:
            return None
        try:
            return await Updater.start(self.indexer, previous)
        except OSError:
            log.exception("lineage_update_not_started", cache_key=key[:16], previous=previous[:16])
            return None

    async def previous_rows(self, previous: str, dimensions: int) -> PreviousRows | None:
        """The previous version's rows, metadata and record digests, for a load to reuse; None without
        digests (saved by an older version, or decoded from JSON) or when it cannot be opened."""
        directory = self.indexer.directory(previous)

        def open_previous() -> PreviousRows | None:
            old = persist.open_matrix(directory, key=previous, with_index=False, verify=False)
            if old.record_digests is None or old.dimensions != dimensions:
                return None
            return PreviousRows(old, previous, directory)

        try:
            return await trio.to_thread.run_sync(open_previous)
        except (persist.CorruptCache, OSError):
            log.warning("lineage_previous_unreadable", previous=previous[:16])
            return None

    async def follow(
        self, ident: str, key: str, engine: Any, emit: Any, updater: Updater | None = None, *,
        mapping: np.ndarray | None = None, old: Any = None,
    ) -> Any:
        """The engine of version ``key``, searching on the previous version's graph, or ``engine``.

        ``updater`` is what :meth:`prepare` started (None: nothing to update from).  ``mapping``
        (new row -> previous row, -1 new or changed) when the load already knows it (records
        recognised by their digests); else the rows are compared here (``engine/reuse.py``).
        ``old``: the previous version's matrix when the load already opened it.  The engine
        returned answers through an :class:`~fabstir_node.engine.overlay.OverlayIndex` at once;
        the update process then makes the new version's own graph in the background
        (:meth:`_complete`, which takes the updater over) and it is swapped into the cache entry.
        """
        if updater is None or len(engine) < self.indexer.min_vectors:
            await self.remember(ident, key)
            return engine
        previous = updater.previous
        try:
            with trio.move_on_after(UPDATE_DEADLINE_BASE + UPDATE_DEADLINE_PER_1000 * len(engine) / 1000):
                return await self._overlay(ident, updater, key, engine, emit, mapping, old)
        except Exception:
            log.exception("lineage_update_failed", cache_key=key[:16], previous=previous[:16])
        return engine  # the indexer saves it and builds a graph from scratch

    async def _overlay(
        self, ident: str, updater: Updater, key: str, engine: Any, emit: Any, known: np.ndarray | None,
        opened: Any = None,
    ) -> Any:
        indexer = self.indexer
        previous = updater.previous
        started = time.monotonic()
        old_dir = indexer.directory(previous)
        await emit("index_building", "updating the search index of the previous version")

        def match() -> tuple[np.ndarray, np.ndarray, Any]:
            old = opened if opened is not None else persist.open_matrix(
                old_dir, key=previous, with_index=False, verify=False)
            mapping = known if known is not None else matching_rows(old, engine)
            added = as_float32(np.asarray(engine.vectors[np.flatnonzero(mapping < 0)]))
            # the previous graph, viewed and checked against its digest (its rows were checked when this
            # node wrote or opened them; only their bytes that match the new records are used)
            graph = persist.open_index(old_dir, old, key=previous, expansion_search=indexer.expansion_search)
            return mapping, added, graph

        # on the load's path (a session waits): normal priority, like the decoding
        mapping, added, graph = await trio.to_thread.run_sync(match)
        rows_of_label = np.full(len(graph), -1, np.int64)
        kept = np.flatnonzero(mapping >= 0)
        rows_of_label[mapping[kept]] = kept
        read_rows = engine.read_rows if engine.read_rows is not None else engine.vectors.__getitem__
        overlay = OverlayIndex(graph, rows_of_label, np.flatnonzero(mapping < 0), added, read_rows, len(engine))
        served = engine.with_index(overlay)
        updater.handed_over = True  # closed by _complete from now on
        self.cache.spawn(self._complete, ident, updater, key, engine, mapping, added)
        log.info("lineage_overlay", cache_key=key[:16], previous=previous[:16], vectors=len(engine),
                 reused=len(kept), new=len(engine) - len(kept), ms=round((time.monotonic() - started) * 1000))
        return served

    async def _complete(
        self, ident: str, updater: Updater, key: str, engine: Any, mapping: np.ndarray, added: np.ndarray
    ) -> None:
        """Save the new version, make its graph from the previous one, adopt it and swap it in.

        Background work of the cache's nursery, owning ``updater``.  Anything that fails leaves the
        ordinary path: the entry's graph is built from scratch (the overlay answers until then).
        """
        indexer = self.indexer
        previous = updater.previous
        started = time.monotonic()
        stages: dict[str, Any] = {}
        opened = None
        try:
            with trio.move_on_after(UPDATE_DEADLINE_BASE + UPDATE_DEADLINE_PER_1000 * len(engine) / 1000):
                opened = await self._update(updater, key, engine, mapping, added, stages)
        except Exception:
            log.exception("lineage_update_failed", cache_key=key[:16], previous=previous[:16])
        finally:
            await updater.aclose()
        entry = self.cache.entry(key)
        try:
            if opened is None:
                if entry is not None:  # a graph from scratch; the overlay answers until it is swapped in
                    await indexer._persist_and_index(entry)
                return
            if entry is not None:
                entry.swap(opened, "hnsw")
            await self.remember(ident, key)
            _crash_point("after_record")
            self._drop_unused(previous)
        except Exception:  # background work: logged; the entry keeps what it has
            log.exception("lineage_update_failed", cache_key=key[:16], previous=previous[:16])
            return
        tombstones = stages.pop("tombstones", 0)
        log.info("lineage_index_updated", cache_key=key[:16], previous=previous[:16], vectors=len(opened),
                 reused=int((mapping >= 0).sum()), tombstones=tombstones,
                 ms=round((time.monotonic() - started) * 1000), **stages)
        if tombstones > REBUILD_SHARE * len(opened):
            self.cache.spawn(self._rebuild, key, len(opened))

    async def _update(
        self, updater: Updater, key: str, engine: Any, mapping: np.ndarray, added: np.ndarray,
        stages: dict[str, Any],
    ) -> Any | None:
        indexer = self.indexer
        new_dir = indexer.directory(key)
        mark = time.monotonic()
        outcome: dict[str, Any] = {}

        async def save() -> None:
            # background work at idle priority (sessions search on the previous graph meanwhile)
            outcome["saved"] = await _in_background(lambda: persist.save(new_dir, engine, key=key))
            stages["save_ms"] = round((time.monotonic() - mark) * 1000, 1)
            _crash_point("after_save")

        async def update() -> None:
            outcome["report"] = await updater.run(mapping, added)
            stages["update_ms"] = round((time.monotonic() - mark) * 1000, 1)

        async with trio.open_nursery() as nursery:  # the graph update overlaps the save
            nursery.start_soon(save)
            nursery.start_soon(update)
        mark = time.monotonic()
        report = outcome["report"]
        if report is None:
            return None
        await _in_background(lambda: persist.adopt_index(
            new_dir, updater.graph, key=key, count=len(engine), parameters=report["parameters"],
            file=report["file"]))
        _crash_point("after_update")
        # files this process (and its update process) just wrote and hashed are not hashed again
        fresh = bool(outcome["saved"])
        opened = await _in_background(lambda: persist.open_matrix(
            new_dir, key=key, expansion_search=indexer.expansion_search, verify=not fresh,
            verify_index=not fresh))
        if opened.index is None:
            return None
        stages["adopt_open_ms"] = round((time.monotonic() - mark) * 1000, 1)
        stages["tombstones"] = report["parameters"].get("tombstones", 0)
        stages["process"] = {k: report.get(k) for k in ("load_s", "wait_s", "update_s", "save_s", "cpu_s",
                                                        "update_cpu_s", "priority")}
        return opened

    def _drop_unused(self, previous: str) -> None:
        """Remove the old version's directory unless a cached entry of it is in use."""
        entry = self.cache.entry(previous)
        if entry is not None and entry.users > 0:
            return
        persist.discard(self.indexer.directory(previous))
        log.info("disk_cache_version_dropped", cache_key=previous[:16])

    async def _rebuild(self, key: str, count: int) -> None:
        """A graph from scratch for ``key`` (too many tombstones), swapped into its cache entry."""
        directory = self.indexer.directory(key)
        try:
            async with self.indexer.queue.slot(key) as turn:  # builds take turns (build_queue.py)
                if not await self.indexer._build(key, directory, count, turn):
                    return
            fresh = await _in_background(self.indexer._open, directory, key, False)
            entry = self.cache.entry(key)
            if fresh is not None and fresh.index is not None and entry is not None:
                entry.swap(fresh, "hnsw")
                log.info("lineage_index_rebuilt", cache_key=key[:16], vectors=count)
        except Exception:
            log.exception("lineage_rebuild_failed", cache_key=key[:16])


class PreviousRows:
    """What a load of a new version reuses of the previous one: rows, metadata, by record digest."""

    def __init__(self, matrix: Any, token: str = "", directory: Path | None = None) -> None:
        self.matrix = matrix
        #: Names the previous version (its cache key) to the decode workers (``decoders.Known``).
        self.token = token
        #: Its disk-cache directory, where a decode worker opens the same files.
        self.directory = directory

    @functools.cached_property
    def version(self) -> PreviousVersion:
        """The previous version for decoding in this process (its digest lookup built on first use)."""
        return PreviousVersion.of(self.matrix, digest_lookup(self.matrix.record_digests))


class Updater:
    """The update process of one load (``storage/index_update.py``), started before the chunks arrive."""

    def __init__(self, process: Any, previous: str, graph: Path, job: Path, background: Background) -> None:
        self.process = process
        self.previous = previous
        self.graph = graph
        self._job = job
        self._buffer = b""
        self.output = bytearray()
        #: Set when the lineage's background completion owns it (the load must not close it).
        self.handed_over = False
        #: Where the process is registered while it runs (``background.py``).
        self.background = background

    @classmethod
    async def start(cls, indexer: Any, previous: str) -> Updater:
        folder = loading_dir(indexer.cache_dir)  # cleared at start if this process dies (row_writer.py)
        await trio.to_thread.run_sync(lambda: folder.mkdir(parents=True, exist_ok=True))
        name = secrets.token_hex(8)
        graph, job = folder / f"{name}.usearch", folder / f"{name}.npz"
        command = [
            sys.executable, "-m", "fabstir_node.storage.index_update",
            "--base", str(indexer.directory(previous)),
            "--base-key", previous, "--out", str(graph), "--threads", str(indexer.build_threads),
            "--nice", "10", "--idle",  # background work: sessions search on the previous graph meanwhile
        ]
        # at idle priority from its start (its start-up yields to the load too); short work, so it stands
        # still for a light load's searches as well as for whole scans (background.py)
        process = await indexer.background.spawn(
            command, short=True, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )
        return cls(process, previous, graph, job, indexer.background)

    async def _line(self) -> bytes | None:
        """The next line the process prints (None at its end)."""
        stdout = self.process.stdout
        while b"\n" not in self._buffer:
            data = await stdout.receive_some(65536)
            if not data:
                return None
            self._buffer += data
            self.output += data
            del self.output[:-65536]
        line, self._buffer = self._buffer.split(b"\n", 1)
        return line

    async def run(self, mapping: np.ndarray, added: np.ndarray) -> dict[str, Any] | None:
        """Send the job; the process's ``index_updated`` report, or None (logged) when it failed."""
        job = self._job
        await trio.to_thread.run_sync(lambda: _write_job(job, mapping, added))
        try:
            await self.process.stdin.send_all(orjson.dumps({"job": str(job)}) + b"\n")
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass  # it has exited; its output says why
        report = None
        while (line := await self._line()) is not None:
            try:
                event = orjson.loads(line)
            except orjson.JSONDecodeError:
                continue
            if isinstance(event, dict) and event.get("event") == "index_updated":
                report = event
        returncode = await self.process.wait()
        self._unregister()
        if returncode != 0 or not _valid_report(report):
            log.warning("lineage_update_refused", previous=self.previous[:16], returncode=returncode,
                        output=bytes(self.output[-2000:]).decode(errors="replace"))
            return None
        return report

    async def aclose(self) -> None:
        """End the process (killed if still running) and remove its files (again: nothing)."""
        with trio.CancelScope(shield=True):
            self._unregister()
            if self.process.returncode is None:
                self.process.kill()
                with trio.move_on_after(10):
                    await self.process.wait()
            for stream in (self.process.stdin, self.process.stdout):
                await stream.aclose()
            self._job.unlink(missing_ok=True)
            self.graph.unlink(missing_ok=True)

    def _unregister(self) -> None:
        self.background.discard(self.process.pid)  # continued first if a scan has it stopped


def _write_job(path: Path, mapping: np.ndarray, added: np.ndarray) -> None:
    with open(path, "wb") as f:
        np.savez(f, mapping=mapping, added=added)


def _valid_report(report: Any) -> bool:
    return (
        isinstance(report, dict) and isinstance(report.get("parameters"), dict)
        and isinstance(report.get("file"), dict)
    )
