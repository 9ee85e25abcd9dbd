"""Shared by the hardening tests: hand-made hostile databases in a local store, leak probes."""

from __future__ import annotations

import gc
import os
from pathlib import Path
from typing import Any

import cbor2
import orjson
import trio

from fabstir_node.testing import write_files

OWNER = "0x00000000000000000000000000000000000000aa"


def put(root: Path, rel: str, body: bytes) -> None:
    write_files(root, {rel: body})


def hostile_db(root: Path, name: str, manifest: dict[str, Any], chunks: dict[int, Any], *, fmt: str = "json",
               owner: str = OWNER) -> str:
    """Write a manifest and chunks exactly as given (no validation); returns the manifest path."""
    base = f"home/vector-databases/{owner}/{name}"
    encode = orjson.dumps if fmt == "json" else cbor2.dumps
    put(root, f"{base}/manifest.json", encode(manifest))
    for chunk_id, chunk in chunks.items():
        put(root, f"{base}/chunk-{chunk_id}.json", chunk if isinstance(chunk, bytes) else encode(chunk))
    return f"{base}/manifest.json"


def good_manifest(counts: list[int], dims: int = 3, **overrides: Any) -> dict[str, Any]:
    manifest = {
        "name": "x", "owner": OWNER, "dimensions": dims, "vectorCount": sum(counts), "chunkCount": len(counts),
        "chunks": [{"chunkId": i, "cid": f"c{i}", "vectorCount": n, "sizeBytes": 0, "updatedAt": 0}
                   for i, n in enumerate(counts)],
        "created": 0, "updated": 0, "deleted": False,
    }
    manifest.update(overrides)
    return manifest


def good_chunk(chunk_id: int, n: int, dims: int = 3, start: int = 0) -> dict[str, Any]:
    return {"chunkId": chunk_id, "vectors": [
        {"id": f"v{start + i}", "vector": [float(start + i + 1)] + [0.5] * (dims - 1), "metadata": {"i": start + i}}
        for i in range(n)]}


def task_count() -> int:
    """Every live Trio task under the root task."""
    def walk(task: trio.lowlevel.Task) -> int:
        return 1 + sum(walk(child) for nursery in task.child_nurseries for child in nursery.child_tasks)

    return walk(trio.lowlevel.current_root_task())


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def rss_kb() -> int:
    gc.collect()
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0
