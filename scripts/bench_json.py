"""JSON chunk decoding: every candidate on one SDK-sized chunk, medians of N runs.

    scripts/bench_json [--records 10000] [--dim 384] [--repeat 5] [--text-chars N]

Builds one chunk as the Fabstir S5 bridge returns it (JSON text, full-precision
doubles of float32 values, the synthetic metadata) and times, in this process:

* ``orjson + np.array``: the generic path (``orjson.loads`` with the GC paused,
  one ``np.array`` over the vectors, the checks);
* ``decode_chunk``: what the node runs (the simdjson fast path);
* ``simdjson vectors only``: pysimdjson ``parse`` + ``as_buffer`` per vector, no
  ids, metadata or checks (the floor of that library);
* ``msgspec typed`` (``list[float]`` in a Struct) and ``msgspec untyped``, each
  with one ``np.array``, ids and metadata;
* ``msgspec Raw + np.fromstring``: structure by msgspec, the vectors' text kept
  raw and parsed in bulk by numpy (a vectorised own path).

Every candidate's float32 matrix is compared bit for bit with the generic
path's.  msgspec is not a dependency: its rows are skipped unless it is
installed.  Numbers come from this script, never from a timed test.
"""

from __future__ import annotations

import argparse
import gc
import platform
import statistics
import subprocess
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import simdjson

from fabstir_node.formats import chunk as chunk_module
from fabstir_node.formats.blob import OpenedBlob, gc_paused, parse_json, to_json_bytes
from fabstir_node.formats.chunk import decode_chunk
from fabstir_node.formats.synthetic import synthetic_records
from fabstir_node.formats.writer import build_database

try:
    import msgspec
except ImportError:  # pragma: no cover - optional
    msgspec = None


def make_chunk(records: int, dim: int, text_chars: int | None) -> bytes:
    ids, vectors, metadata = synthetic_records(records, dim, seed=7, text_chars=text_chars)
    files = build_database((ids, vectors, metadata), owner="0xbench", name="db", format="json",
                           chunk_size=records)
    return next(body for path, body in files.items() if path.endswith("chunk-0.json"))


def generic(data: bytes, n: int) -> np.ndarray:
    builder = chunk_module._Builder(0, n, None, None, 65536, 512, len(data))
    obj = parse_json(OpenedBlob("json", data))
    with gc_paused():
        return chunk_module._from_object(obj, builder).vectors


def node(data: bytes, n: int) -> np.ndarray:
    return decode_chunk(OpenedBlob("json", data), chunk_id=0, expected_count=n, dimensions=None).vectors


def simdjson_vectors(data: bytes, n: int) -> np.ndarray:
    doc = simdjson.Parser().parse(data)
    records = doc["vectors"]
    first = records[0]["vector"]
    out = np.empty((n, len(first)), dtype=np.float32)
    for index, record in enumerate(records):
        out[index] = np.frombuffer(record["vector"].as_buffer(of_type="d"), dtype=np.float64)
    return out


def _finish(vectors: list[Any], ids: list[Any], metas: list[Any]) -> np.ndarray:
    for meta in metas:
        to_json_bytes(meta if meta is not None else {})
    return np.array(vectors, dtype=np.float64).astype(np.float32)


if msgspec is not None:

    class TypedRecord(msgspec.Struct):
        id: str
        vector: list[float]
        metadata: dict[str, Any] | None = None

    class TypedChunk(msgspec.Struct):
        chunkId: int
        vectors: list[TypedRecord]

    class RawRecord(msgspec.Struct):
        id: str
        vector: msgspec.Raw
        metadata: dict[str, Any] | None = None

    class RawChunk(msgspec.Struct):
        chunkId: int
        vectors: list[RawRecord]

    typed_decoder = msgspec.json.Decoder(TypedChunk)
    raw_decoder = msgspec.json.Decoder(RawChunk)


def msgspec_typed(data: bytes, n: int) -> np.ndarray:
    with gc_paused():
        chunk = typed_decoder.decode(data)
        recs = chunk.vectors
        return _finish([r.vector for r in recs], [r.id for r in recs], [r.metadata for r in recs])


def msgspec_untyped(data: bytes, n: int) -> np.ndarray:
    with gc_paused():
        obj = msgspec.json.decode(data)
        recs = obj["vectors"]
        metas = [r.get("metadata") for r in recs]
        return _finish([r["vector"] for r in recs], [r["id"] for r in recs], metas)


def msgspec_raw_fromstring(data: bytes, n: int) -> np.ndarray:
    with gc_paused():
        chunk = raw_decoder.decode(data)
        recs = chunk.vectors
        for r in recs:
            to_json_bytes(r.metadata if r.metadata is not None else {})
        text = b",".join(bytes(r.vector)[1:-1] for r in recs)
        values = np.fromstring(text, dtype=np.float64, sep=",")
        return values.reshape(n, -1).astype(np.float32)


CANDIDATES: list[tuple[str, Callable[[bytes, int], np.ndarray], bool]] = [
    ("orjson + np.array (before)", generic, True),
    ("decode_chunk (simdjson path)", node, True),
    ("simdjson vectors only", simdjson_vectors, True),
    ("msgspec typed list[float]", msgspec_typed, msgspec is not None),
    ("msgspec untyped", msgspec_untyped, msgspec is not None),
    ("msgspec Raw + np.fromstring", msgspec_raw_fromstring, msgspec is not None),
]


def cpu_name() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        lines = out.splitlines()
        return next(line.split(":", 1)[1].strip() for line in lines if line.startswith("Model name"))
    except (OSError, subprocess.CalledProcessError, StopIteration):
        return platform.processor() or "unknown"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--records", type=int, default=10_000)
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--text-chars", type=int, default=None,
                        help="add a text of this length to each record")
    args = parser.parse_args()

    data = make_chunk(args.records, args.dim, args.text_chars)
    print(f"chunk: {args.records} x {args.dim}, {len(data) / 1e6:.1f} MB of JSON; CPU {cpu_name()}; "
          f"simdjson {simdjson.Parser().implementation[0]}; median of {args.repeat}")
    reference = generic(data, args.records)
    chosen = [(name, fn) for name, fn, available in CANDIDATES if available]
    for name, _, available in CANDIDATES:
        if not available:
            print(f"  {name:32s} skipped (msgspec not installed)")
    identical = {}
    for name, fn in chosen:
        result = fn(data, args.records)
        identical[name] = result.shape == reference.shape and result.tobytes() == reference.tobytes()
        del result
    # Round robin: a load spike on the (shared) machine hits every candidate alike.
    times: dict[str, list[float]] = {name: [] for name, _ in chosen}
    for _ in range(args.repeat):
        for name, fn in chosen:
            gc.collect()
            start = time.perf_counter()
            fn(data, args.records)
            times[name].append(time.perf_counter() - start)
    for name, _ in chosen:
        print(f"  {name:32s} {statistics.median(times[name]) * 1000:7.0f} ms   "
              f"(min {min(times[name]) * 1000:.0f})   identical: {'yes' if identical[name] else 'NO'}")


if __name__ == "__main__":
    main()
