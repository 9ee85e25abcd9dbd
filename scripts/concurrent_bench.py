"""Many clients searching one database at once: searches/s and round-trip percentiles.

    scripts/concurrent [--clients 16] [--seconds 10] [--size 100000] [--far] [--keep DIR]

Publishes one clustered database behind the loopback bridge stand-in (as
``scripts/bench`` does), starts the daemon, loads the database, waits for its
graph (``hnsw_ready``), then opens ``--clients`` connections with a session on
it and lets each search (k=10, queries near the data; ``--far``: random directions,
which the index declines to the exact path) in a closed loop for ``--seconds``.
Prints searches/s and p50/p99 of the round trips, and the daemon's pid while the
load runs (for ``py-spy dump --pid``).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

import trio

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench

from fabstir_node.client import NodeClient


async def _graph_ready(daemon: bench.Daemon, started: float) -> float:
    """When the database's graph answers: its ``hnsw_ready`` line, or a disk cache hit with a graph."""
    with trio.fail_after(300):
        while True:
            for at, line in daemon.lines:
                if at >= started and (line.get("event") in ("hnsw_ready", "lineage_index_updated")
                                      or (line.get("event") == "disk_cache_hit" and line.get("hnsw"))):
                    return at
            await trio.sleep(0.1)


async def main(args: argparse.Namespace) -> dict[str, Any]:
    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="fabstir-conc-"))
    root = work / "bridge"
    name = f"bench-{args.size}"
    if (work / f".published-{args.size}").exists():  # a kept work directory: the same database again
        vectors = bench.synthetic_records(args.size, bench.DIM, seed=args.size)[1]
        path = bench.manifest_path(bench.OWNER, name)
    else:
        path, vectors, _ = bench.publish(root, args.size, name)
        (work / f".published-{args.size}").touch()
    env = {
        **os.environ, "FABSTIR_CACHE_DIR": str(work / "cache"), "LOG_FORMAT": "json",
        "FABSTIR_STORE_DIR": str(work / "store"), "FABSTIR_RATE_LIMIT_PER_SECOND": "100000",
        "FABSTIR_RATE_LIMIT_BURST": "100000", "S5_RATE_LIMIT_REQUESTS": "100000",
    }
    out: dict[str, Any] = {}
    async with trio.open_nursery() as nursery:
        bridge, bridge_url = await bench.start_bridge(nursery, root)
        env["ENHANCED_S5_URL"] = bridge_url
        try:
            async with bench.running_daemon(nursery, env) as daemon:
                print(f"daemon pid {daemon.process.pid}", flush=True)
                url = f"ws://127.0.0.1:{daemon.port}/v1/ws"
                async with NodeClient.connect(url, timeout=300) as client:
                    started, _, _ = await bench.open_session(client, path, "first")
                    ready = await _graph_ready(daemon, started)
                    print(f"graph ready after {ready - started:.1f} s", flush=True)
                profiler = None
                if args.profile:
                    spy = str(Path(sys.executable).parent / "py-spy")
                    seconds = str(int(args.seconds * args.runs + 10))
                    profiler = await trio.lowlevel.open_process(
                        [spy, "record", "--native", "--format", "raw", "--rate", "200",
                         "-p", str(daemon.process.pid), "-d", seconds, "-o", args.profile])
                for _ in range(args.runs):
                    before = await daemon.answered_by()
                    queries = bench.far_queries(2000) if args.far else None
                    out = await bench.concurrent_clients(url, path, vectors, clients=args.clients,
                                                        seconds=args.seconds, queries=queries)
                    # every search the daemon answered meanwhile (warm-up included): by the index or not
                    out["answered_by"] = bench.answers_between(before, await daemon.answered_by())
                    print(out, flush=True)
                if profiler is not None:
                    await profiler.wait()
        finally:
            bridge.kill()
            nursery.cancel_scope.cancel()
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    return out


def cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--size", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--far", action="store_true",
                        help="queries far from the data (random directions), which the index declines to the "
                             "exact path, instead of queries near it")
    parser.add_argument("--keep", help="work directory to keep (a second run reuses its disk cache)")
    parser.add_argument("--profile", help="py-spy record --native the daemon into this file (raw format)")
    trio.run(main, parser.parse_args())


if __name__ == "__main__":
    cli()
