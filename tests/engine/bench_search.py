"""Measure exact search on 100,000 × 384 clustered vectors (a script, not a test).

    /tmp/venv/bin/python tests/engine/bench_search.py [n] [d]

Prints build time, memory and per-query latency (p50/p99 over single queries)
for f32 and f16 storage, unfiltered, with a threshold, and with filters of
different selectivity (first filter call, which builds the column, reported apart).
"""

from __future__ import annotations

import sys
import time

import numpy as np
import orjson
from _engine_data import make_clustered, make_queries

from fabstir_node.engine.filters import compile_filter
from fabstir_node.engine.matrix import VectorMatrix


def _latency(fn, queries) -> str:  # type: ignore[no-untyped-def]
    fn(queries[0])
    times = []
    for q in queries:
        started = time.perf_counter()
        fn(q)
        times.append((time.perf_counter() - started) * 1000)
    return f"p50 {np.percentile(times, 50):6.2f} ms  p99 {np.percentile(times, 99):6.2f} ms"


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
    d = int(sys.argv[2]) if len(sys.argv) > 2 else 384
    vectors, topic = make_clustered(n, d, topics=200)
    queries = list(make_queries(vectors, 200).astype(np.float32))
    ids = [f"doc-{i}" for i in range(n)]
    metadata = [
        orjson.dumps({"topic": int(t), "folder": f"/docs/{i % 10}", "text": "x" * 100})
        for i, t in enumerate(topic)
    ]
    reference = VectorMatrix.from_arrays(ids, vectors.copy(), metadata)
    filters = {
        "filter 10% (folder)": compile_filter({"folder": "/docs/3"}),
        "filter 90% ($ne)": compile_filter({"folder": {"$ne": "/docs/3"}}),
        "filter 0.5% ($in)": compile_filter({"topic": {"$in": [1]}}),
    }
    for dtype in ("f32", "f16"):
        started = time.perf_counter()
        matrix = VectorMatrix.from_arrays(ids, vectors.copy(), metadata, dtype=dtype)
        build = time.perf_counter() - started
        print(
            f"--- {dtype}: {n} x {d}, build {build * 1000:.0f} ms, nbytes {matrix.nbytes / 2**20:.1f} MiB "
            f"(vectors {matrix.vectors.nbytes / 2**20:.1f} MiB)"
        )
        print(f"  k=10 no filter        {_latency(lambda q: matrix.search(q, 10), queries)}")
        print(f"  k=100 threshold 0.5   {_latency(lambda q: matrix.search(q, 100, threshold=0.5), queries)}")
        for name, flt in filters.items():
            started = time.perf_counter()
            matrix.search(queries[0], 10, flt=flt)
            first = (time.perf_counter() - started) * 1000
            print(
                f"  k=10 {name:20s}{_latency(lambda q: matrix.search(q, 10, flt=flt), queries)}"
                f"  (first {first:.0f} ms)"
            )
        if dtype == "f16":
            hits = sum(
                len({h.id for h in matrix.search(q, 10).hits} & {h.id for h in reference.search(q, 10).hits})
                for q in queries
            )
            print(f"  recall@10 vs f32: {hits / (10 * len(queries)):.4f}")
        print(f"  filter column cache {matrix.cache_nbytes / 2**20:.1f} MiB")


if __name__ == "__main__":
    main()
