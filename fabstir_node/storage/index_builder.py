"""Build the HNSW graph of a saved database, in a process of its own.

    python -m fabstir_node.storage.index_builder DIRECTORY --key KEY [--dtype i8]
        [--connectivity 16] [--expansion-add 160] [--threads 0] [--nice 10] [--no-idle]

The daemon runs this (at ``SCHED_IDLE``, see ``priority.py``) after ``persist.save`` wrote
the matrix.  It validates and memory-maps the saved vectors, adds them in
slices to a cosine usearch index (keys = row numbers; 8-bit vectors by
default: the graph only picks candidates, which ``engine/hnsw.py`` re-scores
on the saved rows), and writes the graph beside them with
``persist.save_index``; the daemon then ``view()``\\ s it and swaps it in.

Why a process: usearch's worker threads take the GIL back after every
vector (engine-notes §1.4), so a build in a daemon thread would stall
behind — and stall — the event loop and every exact search.  A separate
process has its own GIL; it also runs at the lowest priority (``SCHED_IDLE``
where Linux has it, else ``--nice``) so the daemon's searches win the CPU
while it builds, and it can be killed.

Exit status: 0 built, 2 bad arguments, 3 the saved matrix is invalid (the
daemon discards it), 1 anything else.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import numpy as np
import orjson

from ..engine import calibration as cal
from ..engine import ivf
from ..engine.rows import as_float32
from ..priority import lower_priority
from . import disk_cache as persist
from . import ivf_file

#: Vectors added per ``Index.add`` call (progress and a chance to be killed between slices).
SLICE = 20_000
#: Number types the graph may store; candidates are re-scored on the matrix rows whatever it holds.
DTYPES = ("i8", "f16", "bf16")
#: Matrices of this many rows or more get an inverted-file index (``engine/ivf.py``), not a graph: on
#: the benchmark's clustered million a graph took 130-190 s on two cores and its walks found 0.62-0.94
#: of a near query's top 10 (effort 64-512); the inverted file took ~20 s and found all of them.
IVF_MIN_ROWS = 500_000


def build_index(
    vectors: np.ndarray, *, dtype: str = "i8", connectivity: int, expansion_add: int, threads: int = 0,
    report: bool = False,
) -> Any:  # a usearch.index.Index (usearch has no type information)
    """A cosine HNSW graph over ``vectors`` with key ``i`` for row ``i``."""
    from usearch.index import Index

    index = Index(
        ndim=vectors.shape[1],
        metric="cos",
        dtype=dtype,
        connectivity=connectivity,
        expansion_add=expansion_add,
    )
    for start in range(0, len(vectors), SLICE):
        block = np.asarray(vectors[start : start + SLICE])
        if block.dtype == np.uint16:  # bf16 bit patterns: usearch takes them as float32 values
            block = as_float32(block)
        index.add(np.arange(start, start + len(block), dtype=np.uint64), block, threads=threads)
        if report:  # one line per slice: the daemon turns them into the build-progress gauge
            done = start + len(block)
            print(orjson.dumps({"event": "progress", "added": done, "total": len(vectors)}).decode(), flush=True)
    return index


def exact_top(vectors: np.ndarray, queries: np.ndarray, k: int, block: int = 65_536) -> list[np.ndarray]:
    """The exact top-``k`` rows of each query (float32 arithmetic on the stored rows), best first."""
    best_rows = np.empty((len(queries), 0), np.int64)
    best_scores = np.empty((len(queries), 0), np.float32)
    for start in range(0, len(vectors), block):
        scores = (as_float32(vectors[start : start + block]) @ queries.T).T  # queries x block
        rows = np.broadcast_to(np.arange(start, start + scores.shape[1]), scores.shape)
        all_scores = np.concatenate([best_scores, scores], axis=1)
        all_rows = np.concatenate([best_rows, rows], axis=1)
        keep = min(k, all_scores.shape[1])
        part = np.argpartition(-all_scores, keep - 1, axis=1)[:, :keep]
        best_scores = np.take_along_axis(all_scores, part, 1)
        best_rows = np.take_along_axis(all_rows, part, 1)
    out = []
    for rows, scores in zip(best_rows, best_scores):
        order = np.lexsort((rows, -scores))
        out.append(rows[order])
    return out


def calibrate(
    index: Any, vectors: np.ndarray, *, seed: int = 0, min_effort: int = 1
) -> cal.Calibration:  # index: a usearch Index
    """Measure the graph on a held-out sample (``engine/calibration.py``) and choose its effort and floor."""

    def candidates(effort: int, queries: np.ndarray) -> list[np.ndarray]:
        index.expansion_search = effort
        matches = index.search(queries, 2 * cal.K, threads=0)
        keys = np.asarray(matches.keys, np.int64).reshape(len(queries), -1)
        counts = np.asarray(matches.counts, np.int64).reshape(-1)
        return [keys[i, : counts[i]] for i in range(len(queries))]

    efforts = sorted({max(min_effort, e) for e in cal.EFFORTS})
    return measure(candidates, efforts, vectors, seed=seed)


def calibrate_lists(lists: ivf.IvfLists, vectors: np.ndarray, *, seed: int = 0) -> cal.Calibration:
    """Measure the inverted file on a held-out sample; its effort is the number of lists probed."""
    index = ivf.IvfIndex(lists, vectors)

    def candidates(effort: int, queries: np.ndarray) -> list[np.ndarray]:
        index.expansion_search = effort
        return [index.candidates(q, index.candidate_count(cal.K)) for q in queries]

    efforts = sorted({min(lists.lists, e) for e in ivf.NPROBES})
    return measure(candidates, efforts, vectors, seed=seed)


def measure(
    candidates: Callable[[int, np.ndarray], list[np.ndarray]], efforts: list[int], vectors: np.ndarray,
    *, seed: int = 0,
) -> cal.Calibration:
    """Run the sample through ``candidates(effort, queries)`` at each effort (lowest first) and through an
    exact scan; stop at the first effort that keeps the targets (``calibration.choose``)."""
    queries, kinds = cal.sample_queries(cast(np.ndarray, _Widened(vectors)), seed=seed)
    truth = exact_top(vectors, queries, cal.K)
    kth_rows = np.array([rows[min(cal.K, len(rows)) - 1] if len(rows) else 0 for rows in truth], np.int64)
    kth = np.einsum("ij,ij->i", as_float32(vectors[kth_rows]), queries)  # each query's exact k-th score
    recall_by: dict[int, np.ndarray] = {}
    top_by: dict[int, np.ndarray] = {}
    for effort in efforts:
        found_rows = candidates(effort, queries)
        union = np.unique(np.concatenate(found_rows)) if found_rows else np.empty(0, np.int64)
        stored = as_float32(vectors[union]) if len(union) else np.empty((0, vectors.shape[1]), np.float32)
        found, found_scores, tops = [], [], np.full(len(queries), -1.0)
        for i, q in enumerate(queries):
            rows = np.unique(found_rows[i])
            scores = stored[np.searchsorted(union, rows)] @ q if len(rows) else np.empty(0, np.float32)
            order = np.lexsort((rows, -scores))
            found.append(rows[order])
            found_scores.append(scores[order])
            if len(order):
                tops[i] = scores[order[min(cal.K, len(order)) - 1]]  # the k-th score
        recall_by[effort] = cal.recall_per_query(found, truth, found_scores=found_scores, kth_scores=kth)
        top_by[effort] = tops
        chosen = cal.choose(recall_by, top_by, kinds)
        if cal.acceptable(chosen) or recall_by[effort].min() >= 1.0:
            return chosen  # the lowest effort that keeps the targets (more cannot help past all exact)
    return cal.choose(recall_by, top_by, kinds)


def _build_lists(
    directory: Path, key: str, vectors: np.ndarray, priority: str, started: float, codes: np.ndarray | None = None
) -> int:
    """The inverted-file index of a large matrix (``engine/ivf.py``), measured and saved; exit status 0.

    ``codes``: the matrix's saved 8-bit copy (``codes.npy``), which assigns rows to lists without
    quantising them again."""
    n = len(vectors)

    def read_rows(rows: np.ndarray) -> np.ndarray:
        return as_float32(vectors[rows])

    def read_range(start: int, stop: int) -> np.ndarray:
        return as_float32(vectors[start:stop])

    def progress(done: int) -> None:  # assigning rows to lists is most of the work
        print(orjson.dumps({"event": "progress", "added": done, "total": n}).decode(), flush=True)

    read_codes = None if codes is None else (lambda start, stop: codes[start:stop])
    centroids, order, bounds = ivf.build_lists(n, read_rows, read_range, progress=progress, read_codes=read_codes)
    built = time.monotonic()
    times: dict[str, float] = {}

    def write(path: Path) -> dict[str, Any]:
        ivf_file.write(path, centroids, order, bounds, ivf.encoded_blocks(order, read_rows))
        times["encoded"] = time.monotonic()
        print(orjson.dumps({"event": "progress", "stage": "calibrating"}).decode(), flush=True)
        _, lists = ivf_file.open_lists(path, n, vectors.shape[1])
        calibration = calibrate_lists(lists, vectors)
        times["calibrated"] = time.monotonic()
        return {"lists": len(centroids), "calibration": calibration.to_json()}

    parameters = persist.save_index_file(directory, key=key, count=n, parameters={"kind": "ivf"}, write=write)
    report = {
        "event": "index_built",
        "kind": "ivf",
        "vectors": n,
        "lists": len(centroids),
        "build_s": round(times["encoded"] - started, 3),
        "lists_s": round(built - started, 3),
        "calibrate_s": round(times["calibrated"] - times["encoded"], 3),
        "save_s": round(time.monotonic() - times["calibrated"], 3),
        "calibration": parameters["calibration"],
        "priority": priority,
    }
    print(orjson.dumps(report).decode(), flush=True)
    return 0


class _Widened:
    """Rows of a matrix read as float32 (bf16 bit patterns widened), for the sample."""

    def __init__(self, vectors: np.ndarray) -> None:
        self._vectors, self.shape = vectors, vectors.shape

    def __getitem__(self, rows: np.ndarray) -> np.ndarray:
        return as_float32(self._vectors[rows])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m fabstir_node.storage.index_builder", description=__doc__.split("\n")[0]
    )
    parser.add_argument("directory", type=Path)
    parser.add_argument("--key", required=True)
    parser.add_argument("--dtype", choices=DTYPES, default="i8")
    parser.add_argument("--connectivity", type=int, default=16)
    parser.add_argument("--expansion-add", type=int, default=160)
    parser.add_argument("--min-expansion-search", type=int, default=64,
                        help="lowest search effort the recall measurement may choose")
    parser.add_argument("--threads", type=int, default=0, help="0 = every core")
    parser.add_argument("--ivf-min-rows", type=int, default=IVF_MIN_ROWS,
                        help="a matrix of this many rows or more gets an inverted-file index, not a graph")
    parser.add_argument("--nice", type=int, default=10, help="lower this process's priority by this much")
    parser.add_argument("--idle", action=argparse.BooleanOptionalAction, default=True,
                        help="run under SCHED_IDLE where the OS has it (else only --nice applies)")
    args = parser.parse_args(argv)
    priority = lower_priority(args.nice, idle=args.idle)
    started = time.monotonic()
    try:
        matrix = persist.open_matrix(args.directory, key=args.key, with_index=False)
    except persist.CorruptCache as exc:
        print(orjson.dumps({"event": "build_failed", "reason": str(exc)}).decode(), flush=True)
        return 3
    if len(matrix) >= args.ivf_min_rows:
        codes = matrix.coarse.codes if matrix.coarse is not None else None
        return _build_lists(args.directory, args.key, matrix.vectors, priority, started, codes)
    index = build_index(
        matrix.vectors, dtype=args.dtype, connectivity=args.connectivity,
        expansion_add=args.expansion_add, threads=args.threads, report=True,
    )
    built = time.monotonic()
    print(orjson.dumps({"event": "progress", "stage": "calibrating"}).decode(), flush=True)
    calibration = calibrate(index, matrix.vectors, min_effort=args.min_expansion_search)
    calibrated = time.monotonic()
    persist.save_index(
        args.directory,
        index,
        key=args.key,
        parameters={"kind": "hnsw", "connectivity": args.connectivity, "expansion_add": args.expansion_add,
                    "dtype": args.dtype, "calibration": calibration.to_json()},
    )
    report = {
        "event": "index_built",
        "vectors": len(index),
        "build_s": round(built - started, 3),
        "calibrate_s": round(calibrated - built, 3),
        "save_s": round(time.monotonic() - calibrated, 3),
        "calibration": calibration.to_json(),
        "hardware": str(index.hardware_acceleration),
        "priority": priority,
    }
    print(orjson.dumps(report).decode(), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
