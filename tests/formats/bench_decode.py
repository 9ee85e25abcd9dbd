"""Decode and write timings for the database formats (a measurement, not a test).

Run: ``python tests/formats/bench_decode.py``.  Prints best and median of 7
runs for one 10,000 × 384 chunk in each encoding, and the time to write a
100K-vector database.  pytest does not collect this file.
"""

from __future__ import annotations

import statistics
import time

import numpy as np

from fabstir_node.formats.blob import open_blob
from fabstir_node.formats.chunk import decode_chunk
from fabstir_node.formats.synthetic import synthetic_records
from fabstir_node.formats.writer import build_database

CASES = [
    ("CBOR (SDK, float64 items)", "cbor", "float64", False),
    ("CBOR + AES-GCM", "cbor", "float64", True),
    ("CBOR typed arrays", "cbor", "typed", False),
    ("JSON", "json", "float64", False),
    ("JSON + AES-GCM", "json", "float64", True),
]


def main() -> None:
    ids, vectors, metadata = synthetic_records(10_000, 384, seed=1)
    key = bytes(32)
    for label, fmt, encoding, encrypted in CASES:
        k = key if encrypted else None
        files = build_database(
            (ids, vectors, metadata), owner="0xabc", name="db", format=fmt, cbor_vectors=encoding, key=k
        )
        blob = files["home/vector-databases/0xabc/db/chunk-0.json"]
        out = np.empty((10_000, 384), np.float32)
        times = []
        for _ in range(7):
            start = time.perf_counter()
            chunk = decode_chunk(open_blob(blob, k), chunk_id=0, expected_count=10_000, dimensions=384, out=out)
            times.append(time.perf_counter() - start)
        assert np.array_equal(chunk.vectors, vectors)
        print(
            f"{label:28s} {len(blob) / 1e6:6.1f} MB   best {min(times) * 1e3:6.1f} ms"
            f"   median {statistics.median(times) * 1e3:6.1f} ms"
        )
    records = synthetic_records(100_000, 384, seed=2)
    for fmt in ("cbor", "json"):
        start = time.perf_counter()
        build_database(records, owner="0xabc", name="db", format=fmt)
        print(f"write 100K x 384 {fmt}: {time.perf_counter() - start:.2f} s")


if __name__ == "__main__":
    main()
