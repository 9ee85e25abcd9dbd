"""End-to-end benchmark: databases behind a loopback bridge, the daemon as a subprocess, a real client.

    scripts/bench [--sizes 1000,10000,100000] [--queries 500] [--repeat N] [--out bench-results.json] [--keep DIR]
                  [--format cbor|json]

Publishes clustered 384-d databases (CBOR, the SDK's layout) into a stand-in
S5 bridge (a subprocess on 127.0.0.1), starts ``fabstir-node serve`` as a
subprocess with a fresh disk cache, and measures through a WebSocket client:

* cold load: session_init → loading_complete, → first search answered,
  → HNSW ready (the daemon's ``hnsw_ready`` log line);
* search round trips (k=10) while exact search answers and once HNSW is
  ready, p50/p99, and recall@10 against float32 brute force;
* a second session on the same database (memory cache hit);
* a restart on the same cache directory, then a session (disk cache);
* daemon RSS growth per database (VmRSS, and its anonymous/file-backed parts)
  and the growth of its peak while loading (VmHWM),
  also for 100K records with 500-character texts.

Prints a table beside the targets and writes ``bench-results.json``.  Only
loopback addresses are used; every wait has a deadline.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import trio

from fabstir_node.client import NodeClient
from fabstir_node.formats.paths import manifest_path
from fabstir_node.formats.synthetic import synthetic_records
from fabstir_node.formats.writer import build_database
from fabstir_node.testing import write_files

OWNER = "0x00000000000000000000000000000000000b3c40"
DIM = 384


# --- data ----------------------------------------------------------------------------


def publish(root: Path, n: int, name: str, text_chars: int | None = None,
            format: str = "cbor") -> tuple[str, np.ndarray, list[str]]:
    ids, vectors, metadata = synthetic_records(n, DIM, seed=n + (text_chars or 0), text_chars=text_chars)
    done = root / f".published-{name}-{format}"  # with --keep, a database already written is not written again
    if not done.exists():
        write_files(root, build_database((ids, vectors, metadata), owner=OWNER, name=name,
                                         format=format))  # type: ignore[arg-type]
        done.write_text("ok\n")
    return manifest_path(OWNER, name), vectors, ids


#: The fields of the daemon's ``load_finished`` line a result keeps as ``load_breakdown_ms``.
LOAD_BREAKDOWN = ("download_ms", "decode_ms", "index_ms", "stages_ms", "decode_cpu_ms", "process_cpu_ms")


def near_queries(vectors: np.ndarray, count: int, seed: int = 99) -> np.ndarray:
    """Queries with cosine ~0.9 to a stored vector (like a user's question about a document)."""
    rng = np.random.default_rng(seed)
    picks = vectors[rng.integers(0, len(vectors), count)]
    noise = rng.standard_normal(picks.shape).astype(np.float32)
    noise /= np.linalg.norm(noise, axis=1, keepdims=True)
    out = picks + 0.5 * noise
    return out / np.linalg.norm(out, axis=1, keepdims=True)


def exact_top10(vectors: np.ndarray, queries: np.ndarray) -> list[set[int]]:
    out = []
    for start in range(0, len(queries), 50):
        scores = queries[start : start + 50] @ vectors.T
        out.extend(set(np.argpartition(-row, 10)[:10].tolist()) for row in scores)
    return out


# --- processes -----------------------------------------------------------------------


class Daemon:
    """``fabstir-node serve`` as a subprocess; its JSON log lines are collected with arrival times."""

    def __init__(self, process: trio.Process) -> None:
        self.process = process
        self.lines: list[tuple[float, dict[str, Any]]] = []
        self.port: int | None = None
        self.metrics_port: int | None = None
        self.started = trio.Event()
        self._new_line = trio.Event()

    async def read(self) -> None:
        buffer = b""
        assert self.process.stdout is not None
        async for data in self.process.stdout:
            buffer += data
            *complete, buffer = buffer.split(b"\n")
            for raw in complete:
                try:
                    line = json.loads(raw)
                except ValueError:
                    continue
                self.lines.append((time.perf_counter(), line))
                if line.get("event") == "server_started":
                    self.port = line["port"]
                    self.metrics_port = line.get("metrics_port")
                    self.started.set()
            self._new_line.set()
            self._new_line = trio.Event()

    async def wait_for(self, event: str, after: float, seconds: float) -> float | None:
        """Arrival time of the first ``event`` line logged after ``after``, or None at the deadline."""
        with trio.move_on_after(seconds):
            while True:
                for at, line in self.lines:
                    if at >= after and line.get("event") == event:
                        return at
                await self._new_line.wait()
        return None

    async def next_line(self) -> None:
        await self._new_line.wait()

    async def answered_by(self) -> dict[str, float]:
        """The daemon's ``vector_search_answers_total`` by path (graph, declined, exact) so far."""
        if self.metrics_port is None:
            return {}
        async with httpx.AsyncClient(timeout=10) as http:
            text = (await http.get(f"http://127.0.0.1:{self.metrics_port}/metrics")).text
        counts: dict[str, float] = {}
        for row in text.splitlines():
            if row.startswith('vector_search_answers_total{path="'):
                label, _, value = row.partition("} ")
                counts[label.split('"')[1]] = float(value)
        return counts

    def workers_rss_mb(self) -> float:
        """VmRSS of the daemon's child processes (decode workers; a graph builder while it runs)."""
        total = 0
        for entry in Path("/proc").iterdir():
            fields = _status(entry)
            if fields.get("PPid", "").strip() == str(self.process.pid) and "VmRSS" in fields:
                total += int(fields["VmRSS"].split()[0])
        return round(total / 1024, 1)

    def reset_peak(self) -> None:
        """Restart the daemon's VmHWM from its current RSS (Linux: write 5 to clear_refs)."""
        try:
            Path(f"/proc/{self.process.pid}/clear_refs").write_text("5")
        except OSError:
            pass

    def rss_mb(self) -> dict[str, float]:
        status = _status(Path(f"/proc/{self.process.pid}"))
        return {name: int(status[name].split()[0]) / 1024
                for name in ("VmRSS", "RssAnon", "RssFile", "VmHWM") if name in status}


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def answers_between(before: dict[str, float], after: dict[str, float]) -> dict[str, int]:
    """How many searches each path answered between two :meth:`Daemon.answered_by` readings."""
    return {path: int(after.get(path, 0) - before.get(path, 0)) for path in sorted(set(after) | set(before))}


def _status(proc: Path) -> dict[str, str]:
    """The fields of ``/proc/<pid>/status`` (empty when the process is gone or it is no process)."""
    try:
        text = (proc / "status").read_text()
    except OSError:
        return {}
    return {name: value for name, _, value in (row.partition(":") for row in text.splitlines())}


@asynccontextmanager
async def running_daemon(nursery: trio.Nursery, env: dict[str, str]) -> AsyncIterator[Daemon]:
    # metrics on, as a running daemon has them (their port is free when asked for: the bench's own race)
    command = [sys.executable, "-m", "fabstir_node", "serve", "--port", "0", "--metrics-host", "127.0.0.1",
               "--metrics-port", str(_free_port())]
    process = await trio.lowlevel.open_process(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    daemon = Daemon(process)
    nursery.start_soon(daemon.read)
    try:
        with trio.fail_after(60):
            await daemon.started.wait()
            # a running daemon has its decode workers (started a second after it listens): measure that
            while not any(line.get("event") == "decode_worker_started" and line.get("workers") == line.get("size")
                          for _, line in daemon.lines) and env.get("FABSTIR_DECODE_WORKERS") != "0":
                await daemon.next_line()
        yield daemon
    finally:
        process.send_signal(signal.SIGTERM)
        with trio.move_on_after(20):
            await process.wait()
        if process.returncode is None:
            process.kill()
            await process.wait()


async def start_bridge(nursery: trio.Nursery, root: Path) -> tuple[trio.Process, str]:
    command = [sys.executable, "-m", "fabstir_node.storage.bridge_server", str(root), "--port", "0"]
    process = await trio.lowlevel.open_process(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    assert process.stdout is not None
    text = b""
    with trio.fail_after(30):
        while b"\n" not in text:
            text += await process.stdout.receive_some(4096)
    return process, text.decode().split(" at ")[-1].strip()


# --- measurements ----------------------------------------------------------------------


def percentiles(times: list[float]) -> dict[str, float | int | None]:
    if not times:
        return {"p50_ms": None, "p99_ms": None, "count": 0}
    ms = np.array(times) * 1000
    return {"p50_ms": round(float(np.percentile(ms, 50)), 2), "p99_ms": round(float(np.percentile(ms, 99)), 2),
            "count": len(times)}


async def timed_search(client: NodeClient, query: np.ndarray, server_ms: list[float] | None = None
                       ) -> tuple[float, list[str]]:
    """The round trip of one k=10 search and the ids found; ``server_ms`` collects the reply's
    ``searchTimeMs`` (the daemon's own time for the search)."""
    started = time.perf_counter()
    reply = await client.search(query.tolist(), 10)
    elapsed = time.perf_counter() - started
    assert reply.get("type") == "searchVectorsResponse", reply
    if server_ms is not None:
        server_ms.append(float(reply["searchTimeMs"]))
    return elapsed, [r["id"] for r in reply["results"]]


async def open_session(client: NodeClient, path: str, session_id: str) -> tuple[float, float, dict]:
    started = time.perf_counter()
    ack = await client.session_init(session_id, manifest_path=path, user_address=OWNER)
    assert ack["type"] == "session_init_ack", ack
    final = await client.wait_loaded(300)
    assert final["event"] == "loading_complete", final
    return started, time.perf_counter() - started, final


async def cold(daemon: Daemon, path: str, vectors: np.ndarray, ids_of: list[str], queries: int,
               expect_hnsw: bool) -> dict[str, Any]:
    url = f"ws://127.0.0.1:{daemon.port}/v1/ws"
    qs = near_queries(vectors, queries)
    truth = exact_top10(vectors, qs)
    daemon.reset_peak()
    rss_before = daemon.rss_mb()
    result: dict[str, Any] = {"vectors": len(vectors)}
    async with NodeClient.connect(url, timeout=300) as client:
        started, loaded, _ = await open_session(client, path, "bench")
        first, _ = await timed_search(client, qs[0])
        result["load_s"] = round(loaded, 3)
        result["searchable_s"] = round(loaded + first, 3)
        exact_times: list[float] = []
        i = 0
        if expect_hnsw:  # search while the graph is built in the background, at a steady 20 per second
            ready = None
            while i < min(queries, 200) and ready is None:
                elapsed, _ = await timed_search(client, qs[i])
                exact_times.append(elapsed)
                i += 1
                await trio.sleep(max(0.0, 0.05 - elapsed))
                ready = await daemon.wait_for("hnsw_ready", started, 0)
            ready = ready or await daemon.wait_for("hnsw_ready", started, 240)
            result["hnsw_ready_s"] = round(ready - started, 3) if ready is not None else None
            result["search_before_hnsw"] = percentiles(exact_times)
        times, hits = [], 0
        paths_before = await daemon.answered_by()
        for j, q in enumerate(qs):
            elapsed, found = await timed_search(client, q)
            times.append(elapsed)
            hits += len({ids_of[r] for r in truth[j]} & set(found))
        result["search"] = percentiles(times)
        result["answered_by"] = answers_between(paths_before, await daemon.answered_by())
        result["search_path"] = "hnsw" if expect_hnsw else "exact"
        result["recall_at_10"] = round(hits / (10 * len(qs)), 4)
    async with NodeClient.connect(url, timeout=60) as client:
        _, again, _ = await open_session(client, path, "bench-2")
        result["second_session_s"] = round(again, 4)
    for at, line in daemon.lines:
        if at < started:  # an earlier database's lines
            continue
        if line.get("event") == "load_finished" and line.get("vector_count") == len(vectors) \
                and "load_breakdown_ms" not in result:  # the cold load, not the second session's
            result["load_breakdown_ms"] = {k: line.get(k) for k in LOAD_BREAKDOWN}
        if line.get("event") == "hnsw_built" and line.get("vectors") == len(vectors):
            result["hnsw_build_s"] = line.get("seconds")
    after = daemon.rss_mb()
    result["rss_mb"] = {name: round(after[name] - rss_before[name], 1) for name in after}
    result["rss_mb"]["VmHWM"] = round(after["VmHWM"] - rss_before["VmRSS"], 1)  # the peak over the RSS before
    result["rss_mb"]["workers"] = daemon.workers_rss_mb()  # not growth: the decode processes' whole RSS
    return result


async def new_version(daemon: Daemon, root: Path, name: str, n: int, queries: int,
                      edits: tuple[float, float, float] = (1.0, 1.0, 1.0)) -> dict[str, Any]:
    """A new version of the loaded database ``name`` (``edits``: percent removed from the middle, changed,
    appended; every chunk and the manifest rewritten as the SDK does): → searchable, → on a graph, recall."""
    from fabstir_node.formats.edits import apply_edits

    ids, vectors, metadata = synthetic_records(n, DIM, seed=n)
    rng = np.random.default_rng(13)
    removed, step, added = (round(n * share / 100) for share in edits)

    def fresh(count: int) -> np.ndarray:
        out = vectors[rng.integers(0, n, count)] + 0.3 * rng.standard_normal((count, DIM)).astype(np.float32)
        return out / np.linalg.norm(out, axis=1, keepdims=True)

    changed = [ids[i] for i in rng.choice(n // 2, step, replace=False)]
    records = apply_edits((ids, vectors, metadata), delete=ids[n // 2 : n // 2 + removed],
                          update=(changed, fresh(step), [{"v": 2}] * step),
                          add=([f"v2-{i}" for i in range(added)], fresh(added), [{"v": 2}] * added))
    # version 1 moves aside and comes back afterwards: a --keep directory always holds version 1
    folder = root / manifest_path(OWNER, name).rsplit("/", 1)[0]
    aside = folder.with_name(f".{folder.name}.v1")
    if not aside.exists():
        folder.rename(aside)
    try:
        write_files(root, build_database(records, owner=OWNER, name=name, now_ms=int(time.time() * 1000) + 1))
        what = f"{edits[0]:g} % removed, {edits[1]:g} % changed, {edits[2]:g} % added"
        return await _measure_new_version(daemon, name, records, queries, what)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
        aside.rename(folder)


async def _measure_new_version(daemon: Daemon, name: str, records: Any, queries: int,
                               what: str) -> dict[str, Any]:
    new_ids, new_vectors, _ = records
    qs = near_queries(new_vectors, queries, seed=21)
    truth = exact_top10(new_vectors, qs)
    url = f"ws://127.0.0.1:{daemon.port}/v1/ws"
    result: dict[str, Any] = {"vectors": len(new_ids), "changed": what}
    async with NodeClient.connect(url, timeout=300) as client:
        started, loaded, _ = await open_session(client, manifest_path(OWNER, name), "bench-v2")
        first, _ = await timed_search(client, qs[0])
        result["load_s"] = round(loaded, 3)
        result["searchable_s"] = round(loaded + first, 3)
        overlay = next((line for at, line in daemon.lines
                        if at >= started and line.get("event") == "lineage_overlay"), None)
        result["on_graph_from_first_search"] = overlay is not None
        result["on_graph_s"] = result["searchable_s"] if overlay is not None else None
        if overlay is None:
            ready = await daemon.wait_for("hnsw_ready", started, 240)
            result["on_graph_s"] = round(ready - started, 3) if ready is not None else None
        else:
            result["reused_rows"] = overlay.get("reused")
            result["overlay_ms"] = overlay.get("ms")
        finished = next((line for at, line in daemon.lines
                         if at >= started and line.get("event") == "load_finished"), None)
        if finished is not None:
            result["load_breakdown_ms"] = {k: finished.get(k) for k in LOAD_BREAKDOWN}
        result.update(await _search_series(daemon, client, qs, truth, new_ids))
        # the new version's own graph, made from the previous one in the background and swapped in
        own = await daemon.wait_for("lineage_index_updated", started, 120)
        updated = next((line for at, line in daemon.lines
                        if at >= started and line.get("event") == "lineage_index_updated"), None)
        if own is not None and updated is not None:
            result["own_graph_s"] = round(own - started, 3)
            result["update_ms"] = updated.get("ms")
            result["update_stages_ms"] = {k: v for k, v in updated.items() if k.endswith("_ms")}
            result["update_process"] = updated.get("process")
            # the same searches on the new version's own graph (its update adds rows with less effort than
            # a build: engine work the recall target must survive)
            result["own_graph"] = await _search_series(daemon, client, qs, truth, new_ids)
    return result


async def _search_series(daemon: Daemon, client: NodeClient, qs: np.ndarray, truth: list[set[int]],
                         ids_of: list[str]) -> dict[str, Any]:
    """One k=10 search per query: round trips, the daemon's own times (the targets' measure), which path
    answered them, and recall@10 against ``truth``."""
    times, hits, server_ms = [], 0, []
    paths_before = await daemon.answered_by()
    first_line = len(daemon.lines)
    for j, q in enumerate(qs):
        elapsed, found = await timed_search(client, q, server_ms)
        times.append(elapsed)
        hits += len({ids_of[r] for r in truth[j]} & set(found))
    return {
        "search": percentiles(times),
        "answered_by": answers_between(paths_before, await daemon.answered_by()),
        "server_search": percentiles([ms / 1000 for ms in server_ms]),
        "server_by_path": await _server_by_path(daemon, first_line, server_ms),
        "recall_at_10": round(hits / (10 * len(qs)), 4),
    }


async def _server_by_path(daemon: Daemon, first_line: int, server_ms: list[float]) -> dict[str, Any]:
    """The series' server times split by the path that answered each search (the ``path`` of the daemon's
    ``request`` log lines, in the order the one client sent them); {} if the lines do not pair up."""
    with trio.move_on_after(5):
        while True:  # the last search's line may still be on its way
            searches = [line for _, line in daemon.lines[first_line:]
                        if line.get("event") == "request" and line.get("type") == "SearchVectors"]
            if len(searches) >= len(server_ms):
                break
            await trio.sleep(0.05)
    if len(searches) != len(server_ms):
        return {}
    by_path: dict[str, list[float]] = {}
    for line, ms in zip(searches, server_ms):
        by_path.setdefault(str(line.get("path", "?")), []).append(ms / 1000)
    return {path: {**percentiles(times), "max_ms": round(max(times) * 1000, 2)}
            for path, times in sorted(by_path.items())}


def by_path_text(by_path: dict[str, Any]) -> str:
    """"graph p50/p99 … ms (n), declined p50/max … ms (n)" for a series' ``server_by_path``."""
    parts = []
    for path, stats in by_path.items():
        tail = f"p99 {stats['p99_ms']}" if path == "graph" else f"max {stats.get('max_ms')}"
        parts.append(f"{path} p50 {stats['p50_ms']} / {tail} ms ({int(stats['count'])})")
    return ", ".join(parts) or "—"


async def concurrent_clients(url: str, path: str, vectors: np.ndarray, *, clients: int = 16,
                             seconds: float = 10.0, warmup: float = 1.0,
                             queries: np.ndarray | None = None) -> dict[str, Any]:
    """``clients`` connections on ``path`` (loaded, graph ready) searching in a closed loop (``queries``:
    2,000 near the data unless given)."""
    qs = near_queries(vectors, 2000, seed=77) if queries is None else queries
    times: list[float] = []
    server: list[float] = []  # the daemon's own time for each (searchTimeMs: from the request to its answer)
    errors: list[Any] = []
    window: dict[str, float] = {}
    ready = trio.Event()
    opened = 0

    async def one(c: int, client: NodeClient) -> None:
        nonlocal opened
        await open_session(client, path, f"conc-{c}")
        opened += 1
        if opened == clients:
            ready.set()
        await ready.wait()
        i = c * 97
        while time.perf_counter() < window["end"]:
            started = time.perf_counter()
            reply = await client.search(qs[i % len(qs)].tolist(), 10)
            done = time.perf_counter()
            i += 1
            if reply.get("type") != "searchVectorsResponse":
                errors.append(reply)
            elif window["start"] <= started:
                times.append(done - started)
                server.append(float(reply["searchTimeMs"]) / 1000)

    async with trio.open_nursery() as nursery:
        async def connect_and_run(c: int) -> None:
            async with NodeClient.connect(url, timeout=120) as client:
                await one(c, client)

        async def timer() -> None:
            await ready.wait()
            now = time.perf_counter()
            window["start"], window["end"] = now + warmup, now + warmup + seconds

        window["start"] = window["end"] = float("inf")
        nursery.start_soon(timer)
        for c in range(clients):
            nursery.start_soon(connect_and_run, c)
    result = {"clients": clients, "seconds": seconds, "searches": len(times),
              "searches_per_s": round(len(times) / seconds, 1), "errors": len(errors)}
    result.update(percentiles(times))
    result["server"] = percentiles(server)
    return result


async def concurrent_row(daemon: Daemon, path: str, vectors: np.ndarray, clients: int = 16,
                         seconds: float = 8.0) -> dict[str, Any]:
    """16 connections on the loaded 100K database once its graph answers (issue 12, item 4)."""
    url = f"ws://127.0.0.1:{daemon.port}/v1/ws"
    return await concurrent_clients(url, path, vectors, clients=clients, seconds=seconds)


def publish_records(root: Path, name: str, records: tuple) -> str:
    write_files(root, build_database(records, owner=OWNER, name=name))
    return manifest_path(OWNER, name)


def diffuse_records(n: int, seed: int = 7) -> tuple[list[str], np.ndarray, list[dict[str, Any]]]:
    """A few dozen centres with wide Gaussian noise, normalised (engine-notes §2.8's "diffuse" set)."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((36, DIM)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    rows = centres[rng.integers(0, 36, n)] + 0.09 * rng.standard_normal((n, DIM)).astype(np.float32)
    rows /= np.linalg.norm(rows, axis=1, keepdims=True)
    return [f"d-{i}" for i in range(n)], rows, [{"i": i} for i in range(n)]


def far_queries(count: int, seed: int = 31) -> np.ndarray:
    """Uniformly random unit directions (a question the knowledge base has no good answer for)."""
    q = np.random.default_rng(seed).standard_normal((count, DIM)).astype(np.float32)
    return q / np.linalg.norm(q, axis=1, keepdims=True)


async def _recall(client: NodeClient, qs: np.ndarray, truth: list[set[int]], ids_of: list[str]) -> float:
    hits = 0
    for q, want in zip(qs, truth):
        _, found = await timed_search(client, q)
        hits += len({ids_of[r] for r in want} & set(found))
    return round(hits / (10 * len(qs)), 4)


async def recall_by_kind(daemon: Daemon, root: Path, queries: int, size: int = 100_000) -> dict[str, Any]:
    """recall@10 against float32 exact search, near and far queries, tight and diffuse sets of ``size``
    (100K by default; 1M gets the inverted file), before the index (right after the load) and on it.
    The sets have size + 3 and size + 4 vectors, so each one's ``hnsw_ready`` line is told apart by its
    vector count; each row also counts how the searches on the index were answered."""
    url = f"ws://127.0.0.1:{daemon.port}/v1/ws"
    out: dict[str, Any] = {"size": size}
    sets = {"tight": synthetic_records(size + 3, DIM, seed=4242), "diffuse": diffuse_records(size + 4)}
    for kind, records in sets.items():
        ids, vectors, _ = records
        path = publish_records(root, f"bench-recall-{kind}", records)
        qs = {"near": near_queries(vectors, queries, seed=8), "far": far_queries(queries)}
        truth = {name: exact_top10(vectors, q) for name, q in qs.items()}
        row: dict[str, Any] = {}
        async with NodeClient.connect(url, timeout=300) as client:
            started, _, _ = await open_session(client, path, f"recall-{kind}")
            for name in qs:
                row[f"{name}_before_graph"] = await _recall(client, qs[name], truth[name], ids)
            ready = await _ready_for(daemon, started, len(ids))
            row["graph_ready_s"] = None if ready is None else round(ready - started, 1)
            for name in qs:
                before = await daemon.answered_by()
                row[f"{name}_on_graph"] = await _recall(client, qs[name], truth[name], ids)
                row[f"{name}_answered_by"] = answers_between(before, await daemon.answered_by())
        out[kind] = row
    return out


async def _ready_for(daemon: Daemon, after: float, vectors: int, seconds: float = 300) -> float | None:
    """Arrival of the ``hnsw_ready`` line of the database with ``vectors`` rows, logged after ``after``."""
    with trio.move_on_after(seconds):
        while True:
            for at, line in daemon.lines:
                if at >= after and line.get("event") == "hnsw_ready" and line.get("vectors") == vectors:
                    return at
            await trio.sleep(0.1)
    return None


async def three_at_once(daemon: Daemon, root: Path) -> dict[str, Any]:
    """Three distinct 100K databases (100,000 + 10, + 11, + 12 vectors, told apart in the log by
    their counts), sessions opened at the same moment: each graph ready, in s after its load."""
    url = f"ws://127.0.0.1:{daemon.port}/v1/ws"
    sizes = [100_010, 100_011, 100_012]
    paths = [publish_records(root, f"bench-three-{n}", synthetic_records(n, DIM, seed=n)) for n in sizes]
    out: dict[str, Any] = {}

    async def one(n: int, path: str) -> None:
        async with NodeClient.connect(url, timeout=300) as client:
            started, loaded, _ = await open_session(client, path, f"three-{n}")
            ready = await _ready_for(daemon, started, n, seconds=600)
            after = None if ready is None else round(ready - started - loaded, 1)
            out[str(n)] = {"load_s": round(loaded, 2), "graph_ready_after_load_s": after}

    async with trio.open_nursery() as nursery:
        for n, path in zip(sizes, paths):
            nursery.start_soon(one, n, path)
    return out


# --- report ------------------------------------------------------------------------------


def paths_text(counts: dict[str, float], separator: str) -> str:
    """Searches answered by the graph, declined to the exact path, and exact, as whole numbers."""
    return separator.join(str(int(counts.get(path, 0))) for path in ("graph", "declined", "exact"))


def fmt(value: Any, unit: str = "") -> str:
    return "—" if value is None else f"{value}{unit}"


def table(results: dict[str, Any]) -> str:
    keys = sorted((k for k in results["databases"] if k.isdigit()), key=int) or ["1000", "10000", "100000"]
    rows = [("measure", *[size_label(int(k)) for k in keys], "target (original / issue)")]
    sizes = [results["databases"].get(k, {}) for k in keys]

    def row(label: str, get, target: str) -> None:
        rows.append((label, *[fmt(get(s)) if s else "—" for s in sizes], target))

    row("cold: session_init → loading_complete (s)", lambda s: s.get("load_s"), "1K < 2, 10K < 5, 100K < 30 / —")
    row("cold: → first search answered (s)", lambda s: s.get("searchable_s"), "— / 100K ≤ 3")
    row("cold: → HNSW ready (s)", lambda s: s.get("hnsw_ready_s"), "— / 100K ≤ 15")
    row("search p50 / p99 before HNSW (ms)",
        lambda s: s.get("search_before_hnsw")
        and f"{s['search_before_hnsw']['p50_ms']} / {s['search_before_hnsw']['p99_ms']}",
        "< 100 / p99 ≤ 25")
    row("search p50 / p99 (ms, final path)",
        lambda s: f"{s['search']['p50_ms']} / {s['search']['p99_ms']} ({s['search_path']})", "< 100 / p99 ≤ 5 on HNSW")
    row("  answered by graph / declined → exact / exact",
        lambda s: s.get("answered_by") and paths_text(s["answered_by"], " / "), "")
    row("recall@10 vs float32 exact", lambda s: s.get("recall_at_10"), "— / ≥ 0.99")
    row("second session (cache hit, s)", lambda s: s.get("second_session_s"), "< 0.1 / ≤ 0.02")
    row("RSS growth VmRSS (MB)", lambda s: s["rss_mb"].get("VmRSS"), "< 100 per 100K / ≤ 80")
    row("  of which anonymous / file-backed (MB)",
        lambda s: f"{s['rss_mb'].get('RssAnon')} / {s['rss_mb'].get('RssFile')}", "")
    row("peak RSS growth while loading (VmHWM, MB)", lambda s: s["rss_mb"].get("VmHWM"), "")
    row("decode worker processes, RSS after the load (MB)", lambda s: s["rss_mb"].get("workers"), "")
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]))]
    lines = [" | ".join(str(c).ljust(w) for c, w in zip(r, widths)) for r in rows]
    lines.insert(1, "-+-".join("-" * w for w in widths))
    extra = []
    texts = results["databases"].get("100000-texts")
    if texts:
        extra.append(f"100K with 500-char texts: RSS growth {texts['rss_mb']}, load {texts['load_s']} s, "
                     f"HNSW ready {texts.get('hnsw_ready_s')} s")
    living = results.get("new_version")
    if living:
        extra.append(f"new version of {living['vectors']} vectors ({living['changed']}): searchable "
                     f"{living['searchable_s']} s, on a graph {fmt(living.get('on_graph_s'))} s (from the first "
                     f"search: {living['on_graph_from_first_search']}), search p50/p99 {living['search']['p50_ms']} / "
                     f"{living['search']['p99_ms']} ms (server time "
                     f"{(living.get('server_search') or {}).get('p50_ms')} / "
                     f"{(living.get('server_search') or {}).get('p99_ms')} ms; graph / declined → exact / exact: "
                     f"{paths_text(living.get('answered_by') or {}, ' / ')}; by path: "
                     f"{by_path_text(living.get('server_by_path') or {})}), recall@10 {living['recall_at_10']} "
                     "(targets 100K: ≤ 1.5 s, from the first search, ≥ 0.99); its own graph "
                     f"{fmt(living.get('own_graph_s'))} s, graph update CPU "
                     f"{fmt((living.get('update_process') or {}).get('update_cpu_s'))} s (target ≤ 1 s; "
                     f"the update process in all {fmt((living.get('update_process') or {}).get('cpu_s'))} s)")
        own = living.get("own_graph")
        if own:
            extra.append(f"  the same searches on its own graph: recall@10 {own['recall_at_10']}, server time p50/p99 "
                         f"{own['server_search']['p50_ms']} / {own['server_search']['p99_ms']} ms (graph / declined → "
                         f"exact / exact: {paths_text(own.get('answered_by') or {}, ' / ')}; by path: "
                         f"{by_path_text(own.get('server_by_path') or {})}; target ≥ 0.99)")
    restart = results.get("restart")
    if restart:
        extra.append(f"after a restart (disk cache): session_init → loading_complete {restart['load_s']} s, "
                     f"→ first search {restart['searchable_s']} s, search p50/p99 {restart['search']['p50_ms']} / "
                     f"{restart['search']['p99_ms']} ms (target ≤ 0.5 s)")
    extra.extend(extra_rows(results))
    return "\n".join(lines + [""] + extra)


def size_label(n: int) -> str:
    """1000 → 1K, 100000 → 100K, 1000000 → 1M (other sizes as they are)."""
    for unit, name in ((1_000_000, "M"), (1_000, "K")):
        if n >= unit and n % unit == 0:
            return f"{n // unit}{name}"
    return str(n)


def extra_rows(results: dict[str, Any]) -> list[str]:
    """The rows of the optional measurements (16 clients, three databases at once, recall by kind)."""
    out = []
    conc = results.get("concurrent_clients")
    if conc:
        out.append(f"16 concurrent clients (searches/s, p99) on 100K once its graph answers: "
                   f"{conc['searches_per_s']}/s, p50 {conc['p50_ms']} ms, p99 {conc['p99_ms']} ms "
                   f"({int(conc['clients'])} connections, {conc['seconds']} s; target ≥ 800/s, p99 ≤ 40 ms)")
    three = results.get("three_at_once")
    if three:
        each = ", ".join(f"{v['graph_ready_after_load_s']}" for v in three.values())
        out.append(f"three 100K databases loaded at once → each graph ready (s after its load): {each} "
                   "(target: the first ≤ 25)")
    kinds = results.get("recall_by_kind")
    if kinds:
        size = int(kinds.get("size", 100_000))
        label = f"{size // 1_000_000}M" if size % 1_000_000 == 0 else f"{size // 1000}K"
        for kind, row in kinds.items():
            if not isinstance(row, dict):
                continue
            out.append(f"recall@10 on a {kind} {label} set, near / far queries: before the index "
                       f"{row['near_before_graph']} / {row['far_before_graph']}, on the index "
                       f"{row['near_on_graph']} / {row['far_on_graph']} "
                       f"(index ready {row['graph_ready_s']} s; answered by the index / declined → exact / "
                       f"exact: near {paths_text(row.get('near_answered_by') or {}, ' / ')}, far "
                       f"{paths_text(row.get('far_answered_by') or {}, ' / ')}; target ≥ 0.99)")
    return out


async def main(args: argparse.Namespace) -> dict[str, Any]:
    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="fabstir-bench-"))
    bridge_root = work / "bridge"
    sizes = [int(s) for s in args.sizes.split(",")]
    print(f"publishing {sizes} x {DIM} (+ 100K with 500-char texts) as {args.format} in {work}", flush=True)
    started = time.perf_counter()
    published = {str(n): publish(bridge_root, n, f"bench-{n}", format=args.format) for n in sizes}
    if args.texts and 100_000 in sizes:
        published["100000-texts"] = publish(bridge_root, 100_000, "bench-100000-texts", text_chars=500,
                                            format=args.format)
    print(f"published in {time.perf_counter() - started:.1f} s", flush=True)
    results: dict[str, Any] = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.processor() or _cpu_name()}, "
                   f"Python {platform.python_version()}",
        "queries": args.queries,
        "format": args.format,
        "databases": {},
    }
    async with trio.open_nursery() as nursery:
        bridge, url = await start_bridge(nursery, bridge_root)
        results["hnsw_min_vectors"] = int(os.environ.get("HNSW_MIN_VECTORS", "20000"))
        results["repeats"] = args.repeat
        try:
            runs = []
            for run in range(args.repeat):
                if args.repeat > 1:
                    print(f"== run {run + 1} of {args.repeat}", flush=True)
                runs.append(await one_run(nursery, url, published, work / f"cache-{run}", work, args.queries,
                                          results["hnsw_min_vectors"], args.versions, args.edits, extras=args))
            results.update(median_of(runs))
        finally:
            bridge.kill()
            with trio.move_on_after(5):
                await bridge.wait()
            nursery.cancel_scope.cancel()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    return results


async def one_run(nursery: trio.Nursery, url: str, published: dict[str, Any], cache_dir: Path, work: Path,
                  queries: int, hnsw_min: int, versions: bool = True,
                  edits: tuple[float, float, float] = (1.0, 1.0, 1.0),
                  extras: argparse.Namespace | None = None) -> dict[str, Any]:
    """Every measurement once, with a fresh daemon and an empty disk cache."""
    shutil.rmtree(cache_dir, ignore_errors=True)  # a --keep directory keeps the databases, not the cache
    env = {
        **os.environ, "ENHANCED_S5_URL": url, "FABSTIR_CACHE_DIR": str(cache_dir), "LOG_FORMAT": "json",
        "FABSTIR_STORE_DIR": str(work / "store"), "FABSTIR_RATE_LIMIT_PER_SECOND": "100000",
        "FABSTIR_RATE_LIMIT_BURST": "100000", "S5_RATE_LIMIT_REQUESTS": "100000",
        "VECTOR_CACHE_MAX_MEMORY_MB": "4000",
    }
    result: dict[str, Any] = {"databases": {}}
    largest = max((k for k in published if k.isdigit()), key=int)
    versions = versions and int(largest) >= hnsw_min
    # the new version follows the restart when there is one: the version loaded from the disk cache is
    # the one it is loaded against (the lineage remembers disk-cache hits too)
    after_restart = "100000" in published and largest == "100000"

    async def measure_new_version(daemon: Daemon) -> None:
        print(f"-- {largest}: a new version ({edits})", flush=True)
        result["new_version"] = await new_version(daemon, work / "bridge", f"bench-{largest}", int(largest),
                                                  queries, edits)

    async with running_daemon(nursery, env) as daemon:
        for name, (path, vectors, ids_of) in published.items():
            hnsw = len(vectors) >= hnsw_min
            print(f"-- {name}: cold load, searches, second session", flush=True)
            result["databases"][name] = await cold(daemon, path, vectors, ids_of, queries, hnsw)
            print(f"   {name}: {json.dumps(result['databases'][name])}", flush=True)  # kept if a later step fails
        await optional_rows(daemon, published, work, queries, extras, result)
        if versions and not after_restart:
            await measure_new_version(daemon)
    if "100000" in published:
        print("-- restart, then a session on 100K (disk cache)", flush=True)
        async with running_daemon(nursery, env) as daemon:
            path, vectors, _ = published["100000"]
            qs = near_queries(vectors, queries, seed=5)
            async with NodeClient.connect(f"ws://127.0.0.1:{daemon.port}/v1/ws", timeout=60) as client:
                _, loaded, _ = await open_session(client, path, "restart")
                first, _ = await timed_search(client, qs[0])
                times = [(await timed_search(client, q))[0] for q in qs]
            result["restart"] = {"load_s": round(loaded, 3), "searchable_s": round(loaded + first, 3),
                                 "search": percentiles(times)}
            if versions and after_restart:
                await measure_new_version(daemon)
    return result


async def optional_rows(daemon: Daemon, published: dict[str, Any], work: Path, queries: int,
                        extras: argparse.Namespace | None, result: dict[str, Any]) -> None:
    """16 clients (default on), three databases at once (--three), recall by query kind (--recall-kinds)."""
    if extras is None:
        return
    if extras.concurrent and "100000" in published:
        print("-- 100K: 16 concurrent clients on the graph", flush=True)
        path, vectors, _ = published["100000"]
        seconds = extras.concurrent_seconds
        result["concurrent_clients"] = await concurrent_row(daemon, path, vectors, seconds=seconds)
    if extras.three:
        print("-- three 100K databases loaded at once", flush=True)
        result["three_at_once"] = await three_at_once(daemon, work / "bridge")
    if extras.recall_kinds:
        size = extras.recall_kinds_size
        print(f"-- recall@10 by query kind, tight and diffuse sets of {size}", flush=True)
        result["recall_by_kind"] = await recall_by_kind(daemon, work / "bridge", min(queries, 200), size)


def median_of(runs: list[Any]) -> Any:
    """The runs merged leaf by leaf: the median of numbers, the first of anything else."""
    first = runs[0]
    if isinstance(first, dict):
        return {key: median_of([r[key] for r in runs if isinstance(r, dict) and key in r]) for key in first}
    numbers = [r for r in runs if isinstance(r, (int, float)) and not isinstance(r, bool)]
    if len(numbers) == len(runs) and numbers:
        return round(float(np.median(numbers)), 4)
    return first


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown CPU"


def _edits(text: str) -> tuple[float, float, float]:
    removed, changed, added = (float(part) for part in text.split(","))
    return removed, changed, added


def cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="1000,10000,100000")
    parser.add_argument("--queries", type=int, default=500)
    parser.add_argument("--no-texts", dest="texts", action="store_false", help="skip the 500-char-text database")
    parser.add_argument("--no-versions", dest="versions", action="store_false",
                        help="skip the new-version rows (1 %% changed, after the largest database)")
    parser.add_argument("--edits", type=_edits, default=(1.0, 1.0, 1.0), metavar="R,C,A",
                        help="the new version: percent removed, changed, added (default 1,1,1; the README's 1M "
                             "row uses 0,0.1,0)")
    parser.add_argument("--format", choices=["cbor", "json"], default="cbor",
                        help="chunk encoding: cbor (what the SDK writes) or json (what the S5 bridge returns)")
    parser.add_argument("--out", default="bench-results.json")
    parser.add_argument("--keep", help="work directory to use and keep (default: a temporary one)")
    parser.add_argument("--repeat", type=int, default=1,
                        help="measure N times (fresh daemon and cache each time) and report medians")
    parser.add_argument("--no-concurrent", dest="concurrent", action="store_false",
                        help="skip the 16-concurrent-clients row (on 100K once its graph answers)")
    parser.add_argument("--concurrent-seconds", type=float, default=8.0)
    parser.add_argument("--three", action="store_true",
                        help="add the row: three 100K databases loaded at once → each graph ready (~2-4 min)")
    parser.add_argument("--recall-kinds", action="store_true",
                        help="add recall@10 rows by query kind (near/far) on tight and diffuse 100K sets (~2 min)")
    parser.add_argument("--recall-kinds-size", type=int, default=100_000,
                        help="size of the --recall-kinds sets (1000000: the inverted file; ~6 min)")
    args = parser.parse_args()
    started = time.perf_counter()
    results = trio.run(main, args)
    results["total_s"] = round(time.perf_counter() - started, 1)
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    print()
    print(f"fabstir-node bench, {results['date']}, {results['machine']}")
    print(table(results))
    print(f"\nwrote {args.out} ({results['total_s']} s in all)")


if __name__ == "__main__":
    cli()
