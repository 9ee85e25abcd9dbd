"""Issue 2 end to end: a real daemon, real WebSocket connections on loopback."""

from __future__ import annotations

import json

import numpy as np
import pytest
import trio
from trio_websocket import ConnectionClosed, HandshakeError, open_websocket_url

DIM = 384
FOLDERS = ["/docs", "/notes", "/mail"]
TAGS = ["a", "b", "c", "d"]


def make_vectors(n: int = 1000, dim: int = DIM, seed: int = 7):
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(20, dim)).astype(np.float32)
    data = centers[rng.integers(0, 20, size=n)] + 0.3 * rng.normal(size=(n, dim)).astype(np.float32)
    metas = [
        {"folderPath": FOLDERS[i % 3], "tag": TAGS[i % 4], "n": i, "tags": [TAGS[i % 4], "all"]}
        | ({"opt": True} if i % 5 == 0 else {})
        for i in range(n)
    ]
    vectors = [{"id": f"v{i}", "vector": data[i].tolist(), "metadata": metas[i]} for i in range(n)]
    return data, metas, vectors


def brute_force(data, metas, query, k, threshold=None, predicate=lambda m: True):
    norm = data / np.linalg.norm(data, axis=1, keepdims=True)
    q = np.asarray(query, dtype=np.float64)
    scores = norm.astype(np.float64) @ (q / np.linalg.norm(q))
    rows = [i for i in range(len(data)) if predicate(metas[i]) and (threshold is None or scores[i] >= threshold)]
    rows.sort(key=lambda i: (-scores[i], i))
    return [(f"v{i}", scores[i]) for i in rows[:k]]


FILTERS = [
    ({"folderPath": "/docs"}, lambda m: m["folderPath"] == "/docs"),
    ({"folderPath": {"$eq": "/notes"}}, lambda m: m["folderPath"] == "/notes"),
    ({"tag": {"$ne": "a"}}, lambda m: m["tag"] != "a"),
    ({"tag": {"$in": ["b", "c"]}}, lambda m: m["tag"] in ("b", "c")),
    ({"tag": {"$nin": ["b", "c"]}}, lambda m: m["tag"] not in ("b", "c")),
    ({"n": {"$gt": 500}}, lambda m: m["n"] > 500),
    ({"n": {"$gte": 500}}, lambda m: m["n"] >= 500),
    ({"n": {"$lt": 100}}, lambda m: m["n"] < 100),
    ({"n": {"$lte": 100}}, lambda m: m["n"] <= 100),
    ({"opt": {"$exists": True}}, lambda m: "opt" in m),
    ({"opt": {"$exists": False}}, lambda m: "opt" not in m),
    ({"$and": [{"tag": "a"}, {"n": {"$gt": 300}}]}, lambda m: m["tag"] == "a" and m["n"] > 300),
    ({"$or": [{"tag": "a"}, {"folderPath": "/mail"}]}, lambda m: m["tag"] == "a" or m["folderPath"] == "/mail"),
    ({"folderPath": "/docs", "n": {"$lt": 600}}, lambda m: m["folderPath"] == "/docs" and m["n"] < 600),
]


async def upload_all(client, vectors):
    reply = await client.upload(vectors)
    assert reply["type"] == "uploadVectorsResponse", reply
    assert reply["status"] == "success" and reply["uploaded"] == len(vectors) and reply["rejected"] == 0
    return reply


def assert_same(results, expected):
    assert [r["id"] for r in results] == [e[0] for e in expected]
    for got, (_, score) in zip(results, expected):
        assert got["score"] == pytest.approx(score, abs=1e-5)


async def test_upload_and_search_equal_brute_force(start_node):
    data, metas, vectors = make_vectors()
    rng = np.random.default_rng(1)
    async with start_node() as running, running.client() as client:
        ack = await client.session_init("s1", job_id=42)
        assert ack["type"] == "session_init_ack" and ack["status"] == "success" and ack["session_id"] == "s1"
        await upload_all(client, vectors)
        for k in (1, 5, 100):
            query = data[rng.integers(0, len(data))] + rng.normal(size=DIM).astype(np.float32)
            reply = await client.search(query.tolist(), k)
            assert reply["type"] == "searchVectorsResponse" and reply["totalVectors"] == 1000
            assert reply["searchTimeMs"] >= 0
            assert_same(reply["results"], brute_force(data, metas, query, k))
            assert reply["results"][0]["metadata"] == metas[int(reply["results"][0]["id"][1:])]
        query = data[3]
        for threshold in (0.5, 0.0, -1.0):
            reply = await client.search(query.tolist(), 50, threshold=threshold)
            assert_same(reply["results"], brute_force(data, metas, query, 50, threshold))
            assert all(r["score"] >= threshold for r in reply["results"])
        for spec, predicate in FILTERS:
            for threshold in (None, 0.3):
                reply = await client.search(query.tolist(), 10, threshold=threshold, metadata_filter=spec)
                assert reply["type"] == "searchVectorsResponse", (spec, reply)
                assert_same(reply["results"], brute_force(data, metas, query, 10, threshold, predicate))


async def test_partial_upload_replace_and_reinit(start_node):
    async with start_node() as running, running.client() as client:
        await client.session_init("s1")
        reply = await client.upload([
            {"id": "ok1", "vector": [1.0, 0.0, 0.0]},
            {"id": "bad-dim", "vector": [1.0, 0.0]},
            {"id": "", "vector": [0.0, 1.0, 0.0]},
            {"id": "ok2", "vector": [0.0, 1.0, 0.0], "metadata": {"x": 1}},
        ])
        assert reply["status"] == "partial" and reply["uploaded"] == 2 and reply["rejected"] == 2
        assert any(e.startswith("bad-dim") for e in reply["errors"])
        # a re-init of the same session keeps its vectors (protocol §2.2)
        await client.session_init("s1")
        reply = await client.search([1.0, 0.1, 0.0], 5)
        assert [r["id"] for r in reply["results"]] == ["ok1", "ok2"] and reply["totalVectors"] == 2
        reply = await client.upload([{"id": "new", "vector": [0.0, 0.0, 1.0]}], replace=True)
        assert reply["uploaded"] == 1
        reply = await client.search([0.0, 0.0, 1.0], 5)
        assert [r["id"] for r in reply["results"]] == ["new"] and reply["totalVectors"] == 1
        # a different session on the same connection starts empty
        await client.session_init("s2")
        reply = await client.search([0.0, 0.0, 1.0], 5)
        assert reply["type"] == "error" and reply["code"] == "NO_VECTORS"
        assert reply["requestId"].startswith("req-")


BAD_FRAMES = [
    ("not json at all", "INVALID_JSON"),
    ("[1, 2]", "INVALID_MESSAGE"),
    ('{"no": "type"}', "INVALID_MESSAGE"),
    ('{"type": "nope", "requestId": "x1"}', "UNKNOWN_MESSAGE_TYPE"),
    ('{"type": "searchVectors", "requestId": "x2", "queryVector": [1, 0, 0], "k": "5"}', "INVALID_MESSAGE"),
    ('{"type": "searchVectors", "requestId": "x3", "queryVector": [1, 0, 0], "k": 0}', "INVALID_MESSAGE"),
    ('{"type": "searchVectors", "requestId": "x4", "queryVector": [1, 0, 0], "k": 101}', "LIMIT_EXCEEDED"),
    ('{"type": "searchVectors", "requestId": "x5", "queryVector": [1, 0], "k": 1}', "DIMENSION_MISMATCH"),
    ('{"type": "searchVectors", "requestId": "x6", "queryVector": [1, 0, 0], "k": 1, '
     '"metadataFilter": {"a": {"$regex": "x"}}}', "INVALID_MESSAGE"),
    ('{"type": "uploadVectors", "requestId": "x7", "vectors": "nope"}', "INVALID_MESSAGE"),
    (b"\x00\x01binary", "INVALID_JSON"),
]


async def test_bad_frames_get_errors_and_connection_lives(start_node):
    async with start_node() as running, running.client() as client:
        reply = await client.search([1.0, 0.0, 0.0], 1)
        assert reply["code"] == "NO_SESSION"
        await client.session_init("s")
        await client.upload([{"id": "a", "vector": [1.0, 0.0, 0.0]}])
        for frame, code in BAD_FRAMES:
            reply = await client.request(frame)
            assert reply["type"] == "error" and reply["code"] == code, (frame, reply)
            assert reply["message"] and reply["error"] == reply["message"]
            request_id = json.loads(frame).get("requestId") if frame[:1] == "{" else None
            if request_id:
                assert reply["requestId"] == request_id
        reply = await client.search([1.0, 0.0, 0.0], 1)
        assert reply["results"][0]["id"] == "a"


async def test_garbage_flood_leaves_daemon_serving(start_node):
    rng = np.random.default_rng(3)
    async with start_node() as running:
        async with running.client() as client:
            for _ in range(300):
                blob = rng.bytes(int(rng.integers(0, 200)))
                await client.send(blob if rng.random() < 0.5 else blob.decode("latin-1"))
            replies = [await client.reply() for _ in range(300)]
            assert all(r["type"] == "error" for r in replies)
        async with running.client() as client:
            await client.session_init("after")
            await client.upload([{"id": "z", "vector": [0.5, 0.5]}])
            assert (await client.search([0.5, 0.5], 1))["results"][0]["id"] == "z"


async def test_oversized_message_closes_only_that_connection(start_node):
    async with start_node(max_message_bytes=4096) as running:
        async with running.client() as victim, running.client() as other:
            await other.session_init("o")
            await victim.send("x" * 10_000)
            with pytest.raises(ConnectionClosed) as info:
                await victim.receive(timeout=5)
            assert info.value.reason.code == 1009
            await other.upload([{"id": "k", "vector": [1.0, 2.0]}])
            assert (await other.search([1.0, 2.0], 1))["results"][0]["id"] == "k"


@pytest.mark.parametrize("path", ["/v1/ws", "/ws", "/"])
async def test_websocket_paths(start_node, path):
    async with start_node() as running, running.client(path) as client:
        assert (await client.request({"type": "ping", "id": 1}))["type"] == "pong"


async def test_other_paths_are_404(start_node):
    async with start_node() as running:
        with pytest.raises(HandshakeError) as info:
            async with open_websocket_url(f"ws://127.0.0.1:{running.handle.port}/elsewhere"):
                pass
        assert getattr(info.value, "status_code", 404) == 404


async def test_fifty_concurrent_connections(start_node):
    # fifty clients, all on loopback here: the per-address cap (32 by default) is not what this tests
    async with start_node(max_connections_per_ip=0) as running:
        failures: list[str] = []

        async def one(i: int) -> None:
            rng = np.random.default_rng(i)
            data = rng.normal(size=(50, 16)).astype(np.float32)
            async with running.client() as client:
                await client.session_init(f"s{i}")
                reply = await client.upload([{"id": f"c{i}-{j}", "vector": data[j].tolist()} for j in range(50)])
                if reply.get("uploaded") != 50:
                    failures.append(f"{i}: upload {reply}")
                reply = await client.search(data[7].tolist(), 3)
                ids = [r["id"] for r in reply.get("results", [])]
                if not ids or ids[0] != f"c{i}-7" or any(not x.startswith(f"c{i}-") for x in ids):
                    failures.append(f"{i}: search {reply}")

        with trio.fail_after(60):
            async with trio.open_nursery() as nursery:
                for i in range(50):
                    nursery.start_soon(one, i)
        assert failures == []
        assert running.node.registry.sessions() == []  # every session ended with its connection


async def test_sdk_sized_upload_batch(start_node):
    """1000 x 384 vectors in one message (~8 MB of JSON) is accepted by default."""
    data, metas, vectors = make_vectors(1000)
    async with start_node() as running, running.client() as client:
        await client.session_init("big")
        await upload_all(client, vectors)
        reply = await client.upload(vectors + [{"id": "extra", "vector": data[0].tolist()}])
        assert reply["code"] == "LIMIT_EXCEEDED"


async def test_query_values_beyond_float32_keep_their_direction(start_node):
    """A huge component must not overflow to inf on the way in: the query is normalised in float64."""
    async with start_node() as running, running.client() as client:
        await client.session_init("s")
        await client.upload([{"id": "a", "vector": [1.0, 0.0]}, {"id": "b", "vector": [0.0, 1.0]}])
        reply = await client.search([1e300, 1.0], 2)
        assert [r["id"] for r in reply["results"]] == ["a", "b"]
        assert reply["results"][0]["score"] == pytest.approx(1.0) and reply["results"][1]["score"] == pytest.approx(0.0)
        reply = await client.search([0.0, 0.0], 1)
        assert reply["code"] == "INVALID_MESSAGE" and "zero" in reply["message"]


async def test_loads_never_take_the_threads_that_requests_need(start_node):
    """Every load thread token is busy (as during big decodes); a search that runs in a thread still answers."""
    rng = np.random.default_rng(9)
    data = rng.normal(size=(25_000, 8)).astype(np.float32)
    async with start_node(max_uploaded_vectors=30_000) as running, running.client() as client:
        await client.session_init("s")
        for start in range(0, 25_000, 1000):
            await client.upload([{"id": f"r{i}", "vector": data[i].tolist()} for i in range(start, start + 1000)])
        limiter = running.node.load_limiter
        holders = [object() for _ in range(int(limiter.total_tokens))]
        for holder in holders:
            await limiter.acquire_on_behalf_of(holder)
        try:
            with trio.fail_after(10):
                reply = await client.search(data[123].tolist(), 1)
            assert reply["results"][0]["id"] == "r123"
        finally:
            for holder in holders:
                limiter.release_on_behalf_of(holder)
