"""Send random and mutated frames to a live daemon, then check it still serves.

Usage: scripts/fuzz [--frames 100000] [--connections 8] [--url ws://...] [--seed 0]

Without --url it starts its own daemon as a subprocess (on a free port, with a
temporary store) and stops it at the end.  Each connection first opens a
session and uploads a few vectors, then sends its share of frames: random
bytes, random JSON values, valid messages with one field mutated, truncated
and bit-flipped valid frames, huge numbers, deep nesting.  Every frame must
get a reply (an error or a normal reply); a closed connection, a missing
reply, a crash of the daemon or a failed final search is a failure.

Prints frames per second and every failure; exit status 1 if any.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
from typing import Any

import trio

from fabstir_node.client import NodeClient
from fabstir_node.testing import spawn_daemon

VALID = [
    {"type": "session_init", "session_id": "fz", "job_id": 1, "chain_id": 84532},
    {"type": "session_init", "sessionId": "fz", "vectorDatabase": {"manifestPath": "home/x/manifest.json",
                                                                   "userAddress": "0xabc"}},
    {"type": "uploadVectors", "requestId": "u", "vectors": [{"id": "a", "vector": [0.1, 0.2, 0.3, 0.4]}]},
    {"type": "searchVectors", "requestId": "s", "queryVector": [0.1, 0.2, 0.3, 0.4], "k": 3, "threshold": 0.1,
     "metadataFilter": {"tag": {"$in": ["a", "b"]}}},
    {"type": "encrypted_session_init", "session_id": "e", "payload": {"ephPubHex": "02" + "11" * 32,
                                                                      "nonceHex": "00" * 24, "ciphertextHex": "00" * 40,
                                                                      "signatureHex": "00" * 65}},
    {"type": "ping", "id": 1},
]

ODD_VALUES: list[Any] = [None, True, False, 0, -1, 2**63, -(2**63), 1e308, -1e-308, "", "x" * 1000, [], {}, [None],
                         {"$gt": None}, [1] * 5000, "\u0000", "\ud7ff", {"$and": []}, {"$or": [{"a": {"$in": 5}}]}]


def random_json(rng: random.Random, depth: int = 0) -> Any:
    kind = rng.randrange(8 if depth < 6 else 5)
    if kind == 0:
        return None
    if kind == 1:
        return rng.random() < 0.5
    if kind == 2:
        return rng.randint(-(2**70), 2**70) if rng.random() < 0.2 else rng.randint(-10, 10)
    if kind == 3:
        return rng.uniform(-1e6, 1e6)
    if kind == 4:
        return "".join(chr(rng.randrange(32, 0x2FF)) for _ in range(rng.randrange(12)))
    if kind == 5:
        return [random_json(rng, depth + 1) for _ in range(rng.randrange(5))]
    return {random_key(rng): random_json(rng, depth + 1) for _ in range(rng.randrange(5))}


def random_key(rng: random.Random) -> str:
    keys = ["type", "session_id", "sessionId", "k", "queryVector", "vectors", "requestId", "id", "threshold",
            "metadataFilter", "replace", "payload", "vector_database", "job_id", "chain_id"]
    return rng.choice(keys) if rng.random() < 0.7 else "".join(rng.choice("abc_$") for _ in range(rng.randrange(1, 6)))


def mutate(rng: random.Random) -> str | bytes:
    base = json.loads(json.dumps(rng.choice(VALID)))
    choice = rng.randrange(9)
    if choice == 0:
        return rng.randbytes(rng.randrange(1, 300))
    if choice == 1:
        return json.dumps(random_json(rng))
    if choice == 2:  # one field replaced by an odd value
        key = rng.choice(list(base))
        base[key] = rng.choice(ODD_VALUES + [random_json(rng)])
        return json.dumps(base)
    if choice == 3:  # one field removed
        base.pop(rng.choice(list(base)), None)
        return json.dumps(base)
    if choice == 4:  # truncated
        text = json.dumps(base)
        return text[: rng.randrange(len(text))]
    if choice == 5:  # bit flip
        data = bytearray(json.dumps(base).encode())
        data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
        return bytes(data)
    if choice == 6:  # deep nesting
        depth = rng.randrange(10, 3000)
        return '{"type":"searchVectors","metadataFilter":' + '{"$and":[' * depth + "{}" + "]}" * depth + "}"
    if choice == 7:  # an extra random key
        base[random_key(rng)] = random_json(rng)
        return json.dumps(base)
    return json.dumps(base)  # a valid frame


async def fuzz_connection(url: str, frames: int, seed: int, failures: list[str]) -> int:
    rng = random.Random(seed)
    sent = 0
    async with NodeClient.connect(url, timeout=30) as client:
        await client.session_init(f"fz{seed}")
        await client.upload([{"id": f"v{i}", "vector": [rng.random() for _ in range(4)]} for i in range(20)])
        for _ in range(frames):
            frame = mutate(rng)
            try:
                await client.send(frame)
                reply = await client.reply(timeout=30)
            except Exception as exc:  # noqa: BLE001 - every failure is reported
                failures.append(f"connection {seed}: {exc.__class__.__name__}: {exc} after frame {frame[:200]!r}")
                return sent
            sent += 1
            if not isinstance(reply, dict) or "type" not in reply:
                failures.append(f"connection {seed}: reply without type: {reply!r}"[:300])
    return sent


async def final_check(url: str, failures: list[str]) -> None:
    async with NodeClient.connect(url, timeout=30) as client:
        await client.session_init("final")
        await client.upload([{"id": "x", "vector": [1.0, 0.0, 0.0]}, {"id": "y", "vector": [0.0, 1.0, 0.0]}])
        reply = await client.search([1.0, 0.1, 0.0], 2)
        if [r["id"] for r in reply.get("results", [])] != ["x", "y"]:
            failures.append(f"final search failed: {reply}")


async def run(url: str, frames: int, connections: int, seed: int) -> int:
    failures: list[str] = []
    counts = [0] * connections
    started = time.perf_counter()

    async def one(i: int) -> None:
        counts[i] = await fuzz_connection(url, frames // connections, seed * 1000 + i, failures)

    async with trio.open_nursery() as nursery:
        for i in range(connections):
            nursery.start_soon(one, i)
    elapsed = time.perf_counter() - started
    await final_check(url, failures)
    total = sum(counts)
    print(f"fuzz: {total} frames over {connections} connections in {elapsed:.1f} s = {total / elapsed:,.0f} frames/s")
    for failure in failures[:50]:
        print(f"FAILURE: {failure}")
    final = "FAILED" if any("final" in f for f in failures) else "ok"
    print(f"fuzz: {len(failures)} failures; final search {final}")
    return 1 if failures else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=100_000)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--url", help="fuzz a running daemon instead of starting one")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.url:
        return trio.run(run, args.url, args.frames, args.connections, args.seed)
    with tempfile.TemporaryDirectory() as store:
        # rate limits off: every frame should reach the handlers
        daemon = spawn_daemon(os.path.join(store, "daemon.log"), env={
            "FABSTIR_STORE_DIR": store, "FABSTIR_RATE_LIMIT_PER_SECOND": "1000000",
            "FABSTIR_RATE_LIMIT_BURST": "1000000"})
        try:
            code = trio.run(run, daemon.url, args.frames, args.connections, args.seed)
        finally:
            status = daemon.stop()
            print(f"fuzz: daemon exited with {status}")
        return code if status == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
