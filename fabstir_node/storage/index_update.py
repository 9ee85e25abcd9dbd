"""The builder's update mode: the index of a new version, made from the index of the old one.

(A graph, as below; an inverted file by ``_ListsUpdate``: kept rows keep their lists and codes, new
and changed rows join their nearest list, ``engine/ivf.updated_lists``.)

    python -m fabstir_node.storage.index_update --base OLD_DIR --base-key OLD_KEY --out GRAPH
        [--threads 0] [--expansion-add N] [--nice 0] [--idle]

Started by the daemon as soon as a load of a new version begins (``service/lineage.py``), so its
start-up and the loading of the old graph overlap the download of the new version's chunks:

1. it validates the old graph (``index.json``, size, BLAKE3) and loads it into its memory
   (``persist.load_index``), then prints ``{"event": "ready"}``;
2. it reads one job line from stdin, ``{"job": "PATH.npz"}``, naming ``mapping``
   (``mapping[new_row] = old_row``, -1 for a new or changed row, ``engine/reuse.py``) and
   ``added`` (the unit vectors of the rows mapped to -1, in row order); end of input without a
   job: it exits 0 having written nothing (the load failed or found nothing to update);
3. the nodes of old rows that are gone or changed are removed (usearch keeps them as tombstones
   the walk may still pass through, never as answers), the kept ones renamed to their new row
   numbers, and the new and changed rows added;
4. the graph is written to ``GRAPH`` (flushed to disk) and described — size and BLAKE3 —
   in the last line, ``{"event": "index_updated", ..., "file": {...}, "parameters": {...}}``.

The daemon saves the new matrix meanwhile, then moves ``GRAPH`` beside it with
``persist.adopt_index`` (graph, then ``index.json``): a crash leaves either no graph for the new
version or a whole one.  ``parameters`` carry the old graph's calibration and count the rows
removed since the graph was last built from scratch (``tombstones``) and the updates
(``updates``); the daemon rebuilds from scratch in the background when the tombstones pass a
share of the rows.  A process, for the same reason as the full builder (usearch's GIL convoy,
engine-notes §1.4).  The daemon runs it with ``--nice 10 --idle``: sessions on the new version
search on the previous graph meanwhile (``engine/overlay.py``), so searches come first.

Exit status: 0 written (or no job), 2 bad arguments, 3 the old graph or the job is invalid,
1 anything else.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from ..engine.ivf import updated_lists
from ..engine.rows import as_float32
from ..priority import lower_priority
from . import disk_cache as persist
from . import ivf_file

#: Renamed keys pass through this offset so old and new row numbers never collide.
_PARKED = 1 << 40
#: The search effort of each added row's neighbour search: :data:`UPDATE_SHARE` of the old graph's own
#: build effort (160 by default: 96), never under :data:`MIN_UPDATE_EFFORT` (nor over the build's).
#: The rows an update adds are a few percent of the graph.  Five versions of a 100K x 384 graph, each
#: adding 2,000 rows near the data (2026-12-06, 2 vCPU Xeon; ``update_effort``): at 96 the adds took
#: 0.38-0.45 s of CPU where 160 took 0.53-0.57 s, and recall@10 of queries near the added rows (20
#: candidates re-scored at search effort 64 and 128) stayed within 0.005 of it in every version; with
#: 2,000 rows far from the data, 0.50-0.76 s for 0.73-0.81 s.  64 halved the CPU but let recall@10 fall
#: below 0.99 after a few versions of a small graph (tests/versions).
UPDATE_SHARE = 0.6
MIN_UPDATE_EFFORT = 96
#: Rows added per ``Index.add`` call.
_SLICE = 20_000


def update_effort(build_effort: int) -> int:
    """The ``expansion_add`` an update adds rows with, for a graph built with ``build_effort``."""
    build_effort = max(1, int(build_effort))
    return min(build_effort, max(MIN_UPDATE_EFFORT, round(UPDATE_SHARE * build_effort)))


def update_index(
    index: Any, mapping: np.ndarray, added: np.ndarray, old_count: int, *, threads: int = 0
) -> dict[str, Any]:  # index: a usearch.index.Index (usearch has no type information)
    """Turn ``index`` (keys = old rows) into the graph of the new rows; returns what it did.

    ``added`` holds the vectors of the rows ``mapping`` sends to -1, in row order.
    """
    kept_new = np.flatnonzero(mapping >= 0).astype(np.uint64)
    kept_old = mapping[mapping >= 0].astype(np.uint64)
    gone = np.ones(old_count, bool)
    gone[kept_old.astype(np.int64)] = False
    removed = np.flatnonzero(gone).astype(np.uint64)
    if len(removed):
        index.remove(removed)
    moved = kept_old != kept_new  # rows before the first deletion keep their numbers
    if moved.any():
        index.rename(kept_old[moved], kept_old[moved] + np.uint64(_PARKED))
        index.rename(kept_old[moved] + np.uint64(_PARKED), kept_new[moved])
    rows = np.flatnonzero(mapping < 0)
    if len(rows) != len(added):
        raise ValueError("the added vectors do not fit the mapping")
    for start in range(0, len(rows), _SLICE):
        block = as_float32(np.asarray(added[start : start + _SLICE]))
        index.add(rows[start : start + _SLICE].astype(np.uint64), block, threads=threads)
    return {"removed": len(removed), "added": len(rows), "kept": len(kept_new)}


def read_job(path: Path, old_count: int, dimensions: int) -> tuple[np.ndarray, np.ndarray]:
    """The mapping and the added vectors of a job file, checked against the old graph."""
    with np.load(path, allow_pickle=False) as job:
        mapping, added = job["mapping"], job["added"]
    if mapping.ndim != 1 or mapping.dtype != np.int64 or (mapping >= old_count).any() or (mapping < -1).any():
        raise ValueError("the mapping does not fit the old graph")
    kept = mapping[mapping >= 0]
    if len(np.unique(kept)) != len(kept):
        raise ValueError("the mapping names an old row twice")
    if added.ndim != 2 or added.shape != (int((mapping < 0).sum()), dimensions) or added.dtype.kind != "f":
        raise ValueError("the added vectors do not fit the mapping")
    return mapping, added


def _cpu_seconds() -> float:
    """CPU time of this process so far (user + system, every thread, start-up included)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _say(event: dict[str, Any]) -> None:
    print(orjson.dumps(event).decode(), flush=True)


#: What carries over from the old ``index.json`` to the new one: the kind and shape of the index and its
#: own measurement (effort, trust floor), which holds for an index a few percent different; a rebuild
#: (past the tombstone share) measures afresh.
_CARRIED = ("kind", "lists", "connectivity", "expansion_add", "dtype", "calibration")


class _Update:
    """One kind of index being updated: how many rows and dimensions the old one has, the update itself
    (:meth:`apply`, returning removed / added / kept) and the writing of the result (:meth:`save`)."""

    count: int
    dimensions: int

    def apply(self, mapping: np.ndarray, added: np.ndarray, out: Path) -> dict[str, int]:
        raise NotImplementedError

    def save(self, out: Path) -> None:
        raise NotImplementedError


class _GraphUpdate(_Update):
    def __init__(self, index: Any, threads: int) -> None:
        self._index, self._threads = index, threads
        self.count, self.dimensions = len(index), index.ndim

    def apply(self, mapping: np.ndarray, added: np.ndarray, out: Path) -> dict[str, int]:
        return update_index(self._index, mapping, added, self.count, threads=self._threads)

    def save(self, out: Path) -> None:
        self._index.save(str(out))
        with open(out, "rb+") as f:
            os.fsync(f.fileno())


class _ListsUpdate(_Update):
    """Kept rows keep their lists and codes, added rows join their nearest list (``engine/ivf.updated_lists``);
    the new file is written (and flushed) as the update itself, which streams its codes into it."""

    def __init__(self, lists: Any) -> None:
        self._lists = lists
        self.count, self.dimensions = len(lists), lists.codes.shape[1]

    def apply(self, mapping: np.ndarray, added: np.ndarray, out: Path) -> dict[str, int]:
        order, bounds, blocks = updated_lists(self._lists, mapping, added)
        ivf_file.write(out, self._lists.centroids, order, bounds, blocks)
        kept = int((mapping >= 0).sum())
        return {"removed": self.count - kept, "added": len(mapping) - kept, "kept": kept}

    def save(self, out: Path) -> None:
        pass  # written by apply


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fabstir_node.storage.index_update",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--base", type=Path, required=True)
    parser.add_argument("--base-key", required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--expansion-add", type=int, default=None,
                        help="effort of the added rows' neighbour search (default: update_effort of the graph's own)")
    parser.add_argument("--nice", type=int, default=0)
    parser.add_argument("--idle", action=argparse.BooleanOptionalAction, default=False)
    args = parser.parse_args(argv)
    priority = lower_priority(args.nice, idle=args.idle)
    started = time.monotonic()
    update: _Update
    try:
        if persist.index_info(args.base, key=args.base_key).get("kind", "hnsw") == "ivf":
            _, lists, info = persist.open_lists(args.base, key=args.base_key)
            update = _ListsUpdate(lists)
        else:
            index, info = persist.load_index(args.base, key=args.base_key)
            build_effort = int(info.get("expansion_add") or index.expansion_add)
            index.expansion_add = args.expansion_add or update_effort(build_effort)
            update = _GraphUpdate(index, args.threads)
    except (persist.CorruptCache, OSError) as exc:
        _say({"event": "update_failed", "reason": str(exc)})
        return 3
    loaded = time.monotonic()
    _say({"event": "ready", "load_s": round(loaded - started, 3)})
    line = sys.stdin.readline()
    if not line.strip():
        _say({"event": "no_job"})
        return 0
    job_at = time.monotonic()
    try:
        mapping, added = read_job(Path(orjson.loads(line)["job"]), update.count, update.dimensions)
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, OSError) as exc:
        _say({"event": "update_failed", "reason": f"bad job ({exc})"})
        return 3
    try:
        cpu_before = _cpu_seconds()
        done = update.apply(mapping, added, args.out)
        update_cpu = _cpu_seconds() - cpu_before  # the index work itself (for a graph: removes, renames, adds)
        updated = time.monotonic()
        update.save(args.out)
        described = persist.describe(args.out)
    except BaseException:
        args.out.unlink(missing_ok=True)
        raise
    parameters: dict[str, Any] = {k: info[k] for k in _CARRIED if k in info}
    parameters["tombstones"] = int(info.get("tombstones", 0)) + done["removed"]
    parameters["updates"] = int(info.get("updates", 0)) + 1
    _say({
        "event": "index_updated", **done, "count": len(mapping), "tombstones": parameters["tombstones"],
        "parameters": parameters, "file": described,
        "load_s": round(loaded - started, 3), "wait_s": round(job_at - loaded, 3),
        "update_s": round(updated - job_at, 3), "save_s": round(time.monotonic() - updated, 3),
        "priority": priority, "cpu_s": round(_cpu_seconds(), 3), "update_cpu_s": round(update_cpu, 3),
    })
    return 0


if __name__ == "__main__":
    sys.exit(main())
