"""The builder's update mode: the graph of a new version, made from the graph of the old one.

    python -m fabstir_node.storage.index_update NEW_DIR --key KEY --base OLD_DIR --base-key OLD_KEY
        --mapping MAPPING.npy [--threads 0] [--nice 10] [--no-idle]

``MAPPING.npy`` holds ``mapping[new_row] = old_row`` (-1: new or changed,
``engine/reuse.py``).  The old graph (keys = old row numbers) is validated and
loaded into this process's memory; the nodes of old rows that are gone or
changed are removed (usearch keeps them as tombstones the walk may still pass
through, never as answers), the kept ones renamed to their new row numbers,
and the new and changed rows added.  The result is saved beside the new matrix
with ``persist.save_index`` (graph first, then ``index.json``): a crash leaves
either no graph for the new version or a whole one.

``index.json`` counts the rows removed since the graph was last built from
scratch (``tombstones``) and the updates (``updates``); the daemon rebuilds
from scratch in the background when the tombstones pass a share of the rows
(``service/lineage.py``).  Runs at ``SCHED_IDLE`` like the full builder, and
for the same reason (usearch's GIL convoy, engine-notes §1.4) in a process.

Exit status: 0 written, 2 bad arguments, 3 a matrix or the old graph is
invalid or does not fit the mapping, 1 anything else.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from ..engine.matrix import as_float32
from ..priority import lower_priority
from . import disk_cache as persist

#: Renamed keys pass through this offset so old and new row numbers never collide.
_PARKED = 1 << 40


def update_index(
    index: Any, mapping: np.ndarray, vectors: np.ndarray, old_count: int, *, threads: int = 0
) -> dict[str, Any]:  # index: a usearch.index.Index (usearch has no type information)
    """Turn ``index`` (keys = old rows) into the graph of the new rows; returns what it did."""
    kept_new = np.flatnonzero(mapping >= 0).astype(np.uint64)
    kept_old = mapping[mapping >= 0].astype(np.uint64)
    gone = np.ones(old_count, bool)
    gone[kept_old.astype(np.int64)] = False
    removed = np.flatnonzero(gone).astype(np.uint64)
    if len(removed):
        index.remove(removed)
    if len(kept_old):
        index.rename(kept_old, kept_old + np.uint64(_PARKED))
        index.rename(kept_old + np.uint64(_PARKED), kept_new)
    added = np.flatnonzero(mapping < 0)
    for start in range(0, len(added), 20_000):
        rows = added[start : start + 20_000]
        index.add(rows.astype(np.uint64), as_float32(np.asarray(vectors[rows])), threads=threads)
    return {"removed": len(removed), "added": len(added), "kept": len(kept_new)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fabstir_node.storage.index_update",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("directory", type=Path)
    parser.add_argument("--key", required=True)
    parser.add_argument("--base", type=Path, required=True)
    parser.add_argument("--base-key", required=True)
    parser.add_argument("--mapping", type=Path, required=True)
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--nice", type=int, default=10)
    parser.add_argument("--idle", action=argparse.BooleanOptionalAction, default=True)
    args = parser.parse_args(argv)
    priority = lower_priority(args.nice, idle=args.idle)
    started = time.monotonic()
    from usearch.index import Index

    try:
        matrix = persist.open_matrix(args.directory, key=args.key, with_index=False)
        base = persist.open_matrix(args.base, key=args.base_key)
        if base.index is None:
            raise persist.CorruptCache("the old version has no valid graph")
        info = orjson.loads((args.base / "index.json").read_bytes())
        mapping = np.load(args.mapping, allow_pickle=False)
        if mapping.shape != (len(matrix),) or mapping.dtype != np.int64 or (mapping >= len(base)).any():
            raise persist.CorruptCache("the mapping does not fit the matrices")
        kept = mapping[mapping >= 0]
        if len(np.unique(kept)) != len(kept):
            raise persist.CorruptCache("the mapping names an old row twice")
        index = Index.restore(str(args.base / "index.usearch"), view=False)
    except (persist.CorruptCache, OSError, ValueError) as exc:
        print(orjson.dumps({"event": "update_failed", "reason": str(exc)}).decode(), flush=True)
        return 3
    loaded = time.monotonic()
    done = update_index(index, mapping, matrix.vectors, len(base), threads=args.threads)
    updated = time.monotonic()
    # the old graph's own measurement (effort, trust floor) carries over to a graph a few percent
    # different; a rebuild (past the tombstone share) measures afresh
    parameters = {k: info[k] for k in ("connectivity", "expansion_add", "dtype", "calibration") if k in info}
    parameters["tombstones"] = int(info.get("tombstones", 0)) + done["removed"]
    parameters["updates"] = int(info.get("updates", 0)) + 1
    persist.save_index(args.directory, index, key=args.key, parameters=parameters)
    report = {
        "event": "index_updated", **done, "tombstones": parameters["tombstones"],
        "load_s": round(loaded - started, 3), "update_s": round(updated - loaded, 3),
        "save_s": round(time.monotonic() - updated, 3), "priority": priority,
    }
    print(orjson.dumps(report).decode(), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
