"""Soak a daemon: many concurrent sessions loading one shared database, searching and uploading.

Usage: scripts/soak [--sessions 200] [--duration 60] [--searches 100] [--vectors 10000] [--dim 384]

Starts its own daemon (subprocess, temporary local store with a published
database), then runs ``--sessions`` concurrent workers until ``--duration``
seconds have passed.  Each worker loops: connect, init a session naming the
shared database, wait for ``loading_complete``, run ``--searches`` searches
(checking each reply), then open a second session on the same connection,
upload 100 vectors and search them; disconnect.  The daemon's RSS is sampled
every few seconds.

Prints errors (must be 0), search round-trip p50/p99, the RSS samples (they
must level off), and exits 1 on any error.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
import time

import numpy as np
import trio

from fabstir_node.client import NodeClient
from fabstir_node.testing import spawn_daemon, write_files

OWNER = "0x00000000000000000000000000000000000050a4"


def publish(store: str, n: int, dim: int) -> str:
    from fabstir_node.formats.paths import manifest_path
    from fabstir_node.formats.synthetic import synthetic_records
    from fabstir_node.formats.writer import build_database

    write_files(store, build_database(synthetic_records(n, dim, 11), owner=OWNER, name="soak"))
    return manifest_path(OWNER, "soak")


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as handle:
        for line in handle:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


class Stats:
    def __init__(self) -> None:
        self.latencies: list[float] = []
        self.errors: list[str] = []
        self.sessions = 0
        self.uploads = 0


async def worker(index: int, url: str, path: str, dim: int, searches: int, stop_at: float, stats: Stats) -> None:
    rng = np.random.default_rng(index)
    loop = 0
    while trio.current_time() < stop_at:
        loop += 1
        try:
            async with NodeClient.connect(url, timeout=120) as client:
                ack = await client.session_init(f"w{index}-{loop}", manifest_path=path, user_address=OWNER)
                if ack.get("type") != "session_init_ack":
                    stats.errors.append(f"worker {index}: init {ack}")
                    return
                final = await client.wait_loaded(300)
                if final.get("event") != "loading_complete":
                    stats.errors.append(f"worker {index}: load {final}")
                    return
                for _ in range(searches):
                    query = rng.normal(size=dim)
                    started = time.perf_counter()
                    reply = await client.search(query.tolist(), 10)
                    stats.latencies.append(time.perf_counter() - started)
                    if reply.get("type") != "searchVectorsResponse" or len(reply["results"]) != 10:
                        stats.errors.append(f"worker {index}: search {str(reply)[:200]}")
                await client.session_init(f"u{index}-{loop}")
                batch = [{"id": f"u{i}", "vector": rng.normal(size=dim).tolist(), "metadata": {"i": i}}
                         for i in range(100)]
                reply = await client.upload(batch)
                if reply.get("uploaded") != 100:
                    stats.errors.append(f"worker {index}: upload {str(reply)[:200]}")
                reply = await client.search(batch[5]["vector"], 1)
                if reply.get("results", [{}])[0].get("id") != "u5":
                    stats.errors.append(f"worker {index}: upload search {str(reply)[:200]}")
                stats.sessions += 1
                stats.uploads += 1
        except Exception as exc:  # noqa: BLE001 - every failure is counted and shown
            stats.errors.append(f"worker {index}: {exc.__class__.__name__}: {exc}")
            await trio.sleep(0.5 + random.random())


async def run(url: str, pid: int, path: str, args: argparse.Namespace) -> int:
    stats = Stats()
    samples: list[tuple[float, float]] = [(0.0, rss_mb(pid))]
    started = trio.current_time()
    stop_at = started + args.duration

    async def sample() -> None:
        while True:
            await trio.sleep(args.sample_every)
            samples.append((trio.current_time() - started, rss_mb(pid)))
            print(f"  t={samples[-1][0]:6.0f} s  rss={samples[-1][1]:7.1f} MB  sessions={stats.sessions}  "
                  f"searches={len(stats.latencies)}  errors={len(stats.errors)}", flush=True)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(sample)
        async with trio.open_nursery() as workers:
            for index in range(args.sessions):
                workers.start_soon(worker, index, url, path, args.dim, args.searches, stop_at, stats)
                await trio.sleep(0.01)  # a gentle ramp
        nursery.cancel_scope.cancel()
    samples.append((trio.current_time() - started, rss_mb(pid)))
    lat = np.array(stats.latencies) * 1000 if stats.latencies else np.array([0.0])
    elapsed = trio.current_time() - started
    print(f"soak: {args.sessions} concurrent workers for {elapsed:.0f} s: {stats.sessions} sessions, "
          f"{len(stats.latencies)} searches ({len(stats.latencies) / elapsed:,.0f}/s), {stats.uploads} uploads")
    print(f"soak: search round trip p50 {np.percentile(lat, 50):.1f} ms, p99 {np.percentile(lat, 99):.1f} ms")
    first, last = samples[0][1], samples[-1][1]
    mid = samples[len(samples) // 2][1]
    print(f"soak: daemon RSS start {first:.1f} MB, middle {mid:.1f} MB, end {last:.1f} MB")
    print(f"soak: errors {len(stats.errors)}")
    for error in stats.errors[:20]:
        print(f"ERROR: {error}")
    return 1 if stats.errors else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", type=int, default=200)
    parser.add_argument("--duration", type=float, default=60.0, help="seconds (a documented run used 600)")
    parser.add_argument("--searches", type=int, default=100)
    parser.add_argument("--vectors", type=int, default=10_000)
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--sample-every", type=float, default=10.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as store:
        path = publish(store, args.vectors, args.dim)
        daemon = spawn_daemon(os.path.join(store, "daemon.log"), env={
            "FABSTIR_STORE_DIR": store,
            "FABSTIR_MAX_SESSIONS": str(max(1000, args.sessions * 4)),
            "FABSTIR_MAX_CONNECTIONS_PER_IP": "0"})  # every worker connects from loopback
        try:
            code = trio.run(run, daemon.url, daemon.pid, path, args)
        finally:
            status = daemon.stop()
        print(f"soak: daemon exited with {status}")
        return code if status == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
