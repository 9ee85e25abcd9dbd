"""Rate limits: per connection (token bucket) and per session storage downloads."""

from __future__ import annotations

from _hardening import OWNER, good_chunk, good_manifest, hostile_db

from fabstir_node.service.ratelimit import SlidingWindow, TokenBucket


def test_token_bucket():
    bucket = TokenBucket(rate=2.0, burst=3.0)
    assert [bucket.take(0.0) for _ in range(4)] == [True, True, True, False]
    assert bucket.take(0.4) is False  # 0.8 tokens
    assert bucket.take(0.5) is True
    assert bucket.take(100.0) and bucket.tokens == 2.0  # refilled to the burst, never beyond


def test_sliding_window():
    window = SlidingWindow(limit=2, window=10.0)
    assert window.reserve(0.0) == 0.0
    assert window.reserve(1.0) == 0.0
    assert window.reserve(2.0) == 8.0  # the first slot frees at t=10
    assert window.reserve(3.0) == 8.0  # the second at t=11
    window.cancel(8.0, 3.0)
    assert window.reserve(12.0) == 0.0


async def test_connection_request_rate(start_node):
    async with start_node(request_rate_per_second=1.0, request_rate_burst=5) as running:
        async with running.client() as client:
            replies = [await client.request({"type": "ping", "id": i}) for i in range(8)]
            assert [r["type"] for r in replies[:5]] == ["pong"] * 5
            limited = [r for r in replies[5:] if r.get("code") == "RATE_LIMIT_EXCEEDED"]
            assert len(limited) >= 2 and all(r["id"] >= 5 for r in limited)
        async with running.client() as other:  # another connection has its own bucket
            assert (await other.request({"type": "ping"}))["type"] == "pong"


async def test_chunks_of_a_load_do_not_count_but_databases_asked_for_do(start_node, store):
    path = hostile_db(store, "ten", good_manifest([1] * 10), {i: good_chunk(i, 1, start=i) for i in range(10)})
    # 11 downloads (manifest + 10 chunks) with 2 allowed per minute: the load is one database
    async with start_node(s5_rate_limit_requests=2, s5_rate_limit_window_seconds=60,
                          s5_rate_limit_max_delay_seconds=0.5) as running, running.client() as client:
        await client.session_init("a", manifest_path=path, user_address=OWNER)
        final = await client.wait_loaded(10)
        assert final["event"] == "loading_complete" and final["vector_count"] == 10
        # the session asks for other databases: the 2nd is within budget, the 3rd waits, then is refused
        other = hostile_db(store, "one", good_manifest([1]), {0: good_chunk(0, 1)})
        for _ in range(2):
            client.events.clear()
            await client.session_init("a", manifest_path=path if _ else other, user_address=OWNER)
            final = await client.wait_loaded(10)
        assert final["error_code"] == "RATE_LIMIT_EXCEEDED"
        assert (await client.search([1.0, 0.5, 0.5], 1))["code"] == "RATE_LIMIT_EXCEEDED"
    # a short window: the third database waits for a slot and loads
    async with start_node(s5_rate_limit_requests=1, s5_rate_limit_window_seconds=0.2,
                          s5_rate_limit_max_delay_seconds=1.0) as running, running.client() as client:
        for name in (path, other, path):
            client.events.clear()
            await client.session_init("a", manifest_path=name, user_address=OWNER)
            assert (await client.wait_loaded(10))["event"] == "loading_complete"
