"""Helpers for the operations tests: scraping, publishing a database, talking WebSocket."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import trio
from prometheus_client.parser import text_string_to_metric_families

from fabstir_node.formats.writer import build_database
from fabstir_node.testing import write_files

OWNER = "0x" + "ab" * 20
SampleKey = tuple[str, frozenset[tuple[str, str]]]


class Samples:
    """One scrape of ``/metrics``: ``samples["name", {"label": "value"}]`` (0.0 when absent)."""

    def __init__(self, text: str) -> None:
        self.values: dict[SampleKey, float] = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                self.values[(sample.name, frozenset(sample.labels.items()))] = sample.value

    def __getitem__(self, key: str | tuple[str, dict[str, str]]) -> float:
        name, labels = (key, {}) if isinstance(key, str) else key
        return self.values.get((name, frozenset(labels.items())), 0.0)

    def names(self) -> set[str]:
        return {name for name, _ in self.values}


async def scrape(http: httpx.AsyncClient) -> Samples:
    response = await http.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return Samples(response.text)


def publish(store_dir: Path, name: str, *, count: int = 25, dims: int = 8, chunk_size: int = 10) -> dict[str, Any]:
    """Write a JSON-format database into a local store directory; returns its facts."""
    rng = np.random.default_rng(7)
    vectors = rng.standard_normal((count, dims)).astype(np.float32)
    ids = [f"{name}-{i}" for i in range(count)]
    metadata = [{"n": i} for i in range(count)]
    files = build_database((ids, vectors, metadata), owner=OWNER, name=name, format="json", chunk_size=chunk_size)
    write_files(store_dir, files)
    manifest = next(path for path in files if path.endswith("manifest.json"))
    return {
        "manifest_path": manifest, "count": count, "dims": dims, "vectors": vectors,
        "bytes": sum(len(data) for data in files.values()), "chunks": len(files) - 1,
        "manifest_bytes": len(files[manifest]),
    }


async def receive_until(ws: Any, done: Callable[[dict[str, Any]], bool], seconds: float = 10.0) -> list[dict]:
    """Messages from ``ws`` up to and including the first for which ``done`` is true."""
    seen: list[dict[str, Any]] = []
    with trio.fail_after(seconds):
        while True:
            message = json.loads(await ws.get_message())
            seen.append(message)
            if done(message):
                return seen


async def request(ws: Any, frame: dict[str, Any] | str, reply_type: str | tuple[str, ...]) -> dict[str, Any]:
    """Send ``frame`` and return the first reply of ``reply_type`` (progress events are skipped)."""
    types = (reply_type,) if isinstance(reply_type, str) else reply_type
    await ws.send_message(frame if isinstance(frame, str) else json.dumps(frame))
    return (await receive_until(ws, lambda m: m.get("type") in types))[-1]


def session_init(session_id: str, manifest_path: str | None = None) -> dict[str, Any]:
    frame: dict[str, Any] = {"type": "session_init", "session_id": session_id, "job_id": 1, "chain_id": 84532}
    if manifest_path is not None:
        frame["vector_database"] = {"manifest_path": manifest_path, "user_address": OWNER}
    return frame


def upload_frame(count: int, dims: int, request_id: str = "u1") -> dict[str, Any]:
    rng = np.random.default_rng(11)
    return {
        "type": "uploadVectors", "requestId": request_id,
        "vectors": [
            {"id": f"up-{i}", "vector": rng.standard_normal(dims).tolist(), "metadata": {"i": i}} for i in range(count)
        ],
    }


def search_frame(query: list[float], k: int = 3, request_id: str = "q1") -> dict[str, Any]:
    return {"type": "searchVectors", "requestId": request_id, "queryVector": query, "k": k}
