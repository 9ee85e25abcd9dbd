"""Many connections searching one database at once get what each would get alone."""

from __future__ import annotations

import numpy as np
import trio

from fabstir_node.service import connection

OWNER = "0xAbCdEf0000000000000000000000000000000001"


async def test_concurrent_searches_from_many_connections_match_sequential_ones(start_node, publish_local,
                                                                                monkeypatch):
    monkeypatch.setattr(connection, "_THREAD_SEARCH_MIN", 100)  # this small database takes the batched path
    path, (_, vectors, _) = publish_local(n=400, dim=32)
    rng = np.random.default_rng(4)
    queries = [(vectors[i] + 0.3 * rng.standard_normal(32)).tolist() for i in rng.integers(0, 400, 24)]
    queries.append([0.0] * 32)  # an error for one request only
    async with start_node() as running:
        async with running.client() as client:
            await client.session_init("s0", manifest_path=path, user_address=OWNER)
            assert (await client.wait_loaded(30))["event"] == "loading_complete"
            sequential = [await client.search(q, 5, threshold=0.1 if i % 2 else None)
                          for i, q in enumerate(queries)]
        concurrent: dict[tuple[int, int], dict] = {}

        async def connection_searches(c: int) -> None:
            async with running.client() as client:
                await client.session_init(f"s{c}", manifest_path=path, user_address=OWNER)
                assert (await client.wait_loaded(30))["event"] == "loading_complete"
                for i in range(c % 5, len(queries), 2):
                    concurrent[c, i] = await client.search(queries[i], 5, threshold=0.1 if i % 2 else None)

        async with trio.open_nursery() as nursery:
            for c in range(8):
                nursery.start_soon(connection_searches, c)
        batcher = running.node.search_batcher
    assert batcher.searches >= len(concurrent)
    for (_, i), reply in concurrent.items():
        want = sequential[i]
        assert reply["type"] == want["type"]
        if want["type"] == "error":
            assert reply["code"] == want["code"]
        else:
            assert [(r["id"], r["score"], r["metadata"]) for r in reply["results"]] == \
                [(r["id"], r["score"], r["metadata"]) for r in want["results"]]
