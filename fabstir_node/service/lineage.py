"""Version lineage: a new version of a database is loaded against the one the node last loaded.

The node remembers, per storage backend, manifest path and vector dtype, the
cache key of the version it last loaded (in memory, and in
``{cache_dir}/lineage/{digest}.json`` so a restart keeps it).  When a load of
that path produces a *new* version, :meth:`Lineage.follow` — called by the
loader with the freshly decoded matrix — makes its graph from the old one's
instead of building it from scratch:

1. rows whose id, stored unit vector and metadata bytes are all equal to a row
   of the old version are matched (``engine/reuse.py``; compared byte for
   byte, nothing taken on trust);
2. the new matrix is saved to the disk cache (``persist.save``, atomic);
3. ``storage/index_update.py`` runs in a process at ``SCHED_IDLE``: it loads the
   old graph, removes the nodes of gone and changed rows, renames the kept
   ones to their new row numbers, adds the new rows, and saves the graph beside
   the new matrix (graph, then ``index.json``);
4. the new directory is opened with its graph, so the sessions on the new
   version search on a graph from their first search.

Then the lineage record moves to the new key (atomic), and the old version's
directory is removed if no session holds it (its files stay readable by any
mapping still open).  A crash at any point leaves either the old record and a
new directory with or without a whole graph (the next load opens or rebuilds
it), or the new record: the disk cache always reopens to a consistent version.

The old graph keeps removed nodes as tombstones; recall falls as they pile up
(measured: i8 graph, 30K rows, 2 % removed per version: 0.99 after six
versions).  When the tombstones pass :data:`REBUILD_SHARE` of the rows, the
graph is rebuilt from scratch in the background (the session already searches
on the updated one) and swapped in.  Anything that fails leaves the ordinary
path: the matrix is returned as loaded, and the indexer saves it and builds a
graph from scratch.
"""

from __future__ import annotations

import hashlib
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import trio

from ..engine.reuse import matching_rows
from ..logging import get_logger
from ..storage import disk_cache as persist
from .indexer import _in_background, _run_idle

log = get_logger(__name__)

__all__ = ["REBUILD_SHARE", "Lineage"]

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

    async def follow(self, ident: str, key: str, engine: Any, emit: Any) -> Any:
        """The engine of version ``key`` with a graph made from the previous version's, or ``engine``."""
        previous = self.previous(ident)
        indexer = self.indexer
        if (
            previous is None or previous == key or indexer.cache_dir is None
            or len(engine) < indexer.min_vectors or not persist.has_index(indexer.directory(previous))
        ):
            await self.remember(ident, key)
            return engine
        try:
            updated = await self._update(previous, key, engine, emit)
        except Exception:
            log.exception("lineage_update_failed", cache_key=key[:16], previous=previous[:16])
            updated = None
        if updated is None:
            return engine
        await self.remember(ident, key)
        _crash_point("after_record")
        self._drop_unused(previous)
        return updated

    async def _update(self, previous: str, key: str, engine: Any, emit: Any) -> Any | None:
        indexer = self.indexer
        started = time.monotonic()
        old_dir, new_dir = indexer.directory(previous), indexer.directory(key)
        await emit("index_building", "updating the search index of the previous version")
        old = await trio.to_thread.run_sync(
            lambda: persist.open_matrix(old_dir, key=previous, with_index=False, verify=False)
        )
        mapping = await _in_background(matching_rows, old, engine)
        del old
        reused = int((mapping >= 0).sum())
        await _in_background(lambda: persist.save(new_dir, engine, key=key))
        _crash_point("after_save")
        mapping_file = indexer.cache_dir / f".mapping-{key}.npy"
        await trio.to_thread.run_sync(lambda: np.save(mapping_file, mapping, allow_pickle=False))
        command = [
            sys.executable, "-m", "fabstir_node.storage.index_update", str(new_dir), "--key", key,
            "--base", str(old_dir), "--base-key", previous, "--mapping", str(mapping_file),
            "--threads", str(indexer.build_threads),
        ]
        try:
            with trio.move_on_after(UPDATE_DEADLINE_BASE + UPDATE_DEADLINE_PER_1000 * len(engine) / 1000):
                returncode, output = await _run_idle(command)
        finally:
            mapping_file.unlink(missing_ok=True)
        if returncode != 0:
            log.warning("lineage_update_refused", cache_key=key[:16], returncode=returncode,
                        output=output[-2000:].decode(errors="replace"))
            return None
        _crash_point("after_update")
        opened = await _in_background(lambda: persist.open_matrix(
            new_dir, key=key, expansion_search=indexer.expansion_search, verify=False))
        if opened.index is None:
            return None
        info = orjson.loads((new_dir / "index.json").read_bytes())
        log.info("lineage_index_updated", cache_key=key[:16], previous=previous[:16], vectors=len(opened),
                 reused=reused, tombstones=info.get("tombstones"), ms=round((time.monotonic() - started) * 1000))
        if info.get("tombstones", 0) > REBUILD_SHARE * len(opened):
            self.cache.spawn(self._rebuild, key, len(opened))
        return opened

    def _drop_unused(self, previous: str) -> None:
        """Remove the old version's directory unless a cached entry of it is in use."""
        entry = next((e for e in self.cache.entries() if e.key == previous), None)
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
            entry = next((e for e in self.cache.entries() if e.key == key), None)
            if fresh is not None and fresh.index is not None and entry is not None:
                entry.swap(fresh, "hnsw")
                log.info("lineage_index_rebuilt", cache_key=key[:16], vectors=count)
        except Exception:
            log.exception("lineage_rebuild_failed", cache_key=key[:16])
