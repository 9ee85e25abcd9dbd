"""Issue 14: FABSTIR_MAX_CONNECTIONS_PER_IP and FABSTIR_TRUSTED_PROXIES through real WebSockets."""

from __future__ import annotations

from contextlib import AsyncExitStack

import pytest
import trio
from trio_websocket import ConnectionClosed, ConnectionRejected, open_websocket_url

from fabstir_node.client import NodeClient


async def released(running, address: str = "127.0.0.1", count: int = 0) -> None:
    """Wait (bounded) until the server counts ``count`` connections for ``address``.

    A client's close returns once the close handshake is done; the server gives the slot back a
    moment later, when its handler ends.
    """
    with trio.fail_after(10):
        while running.handle.websocket.peers.count(address) != count:
            await trio.sleep(0.01)


def connect(running, forwarded_for: str | None = None):
    headers = [(b"X-Forwarded-For", forwarded_for.encode())] if forwarded_for else None
    return open_websocket_url(running.url, extra_headers=headers, connect_timeout=10)


async def test_one_connection_beyond_the_cap_is_refused_with_429_and_slots_come_back(start_node):
    async with start_node(max_connections_per_ip=2, metrics_enabled=True, metrics_port=0) as running:
        async with AsyncExitStack() as stack:
            clients = [await stack.enter_async_context(running.client()) for _ in range(2)]
            with pytest.raises(ConnectionRejected) as refused:
                async with running.client():
                    pass
            assert refused.value.status_code == 429
            assert b"too many connections" in (refused.value.body or b"")
            # the connections already open are untouched
            for client in clients:
                assert (await client.request({"type": "ping"}))["type"] == "pong"
        await released(running)
        # released when they closed: two fit again
        async with running.client() as a, running.client() as b:
            assert (await a.request({"type": "ping"}))["type"] == "pong"
            assert (await b.request({"type": "ping"}))["type"] == "pong"
        metrics, _ = running.node.metrics.exposition()
        assert b'fabstir_websocket_connections_refused_total{reason="per_ip_limit"} 1.0' in metrics
    await released(running)


async def test_a_connection_the_server_closes_gives_its_slot_back(start_node):
    async with start_node(max_connections_per_ip=1, max_message_bytes=4096) as running:
        async with running.client() as client:
            await client.send("x" * 10_000)  # too big: the server closes with 1009
            with pytest.raises(ConnectionClosed) as closed:
                await client.receive(10)
            assert closed.value.reason.code == 1009
        await released(running)
        async with running.client() as again:
            assert (await again.request({"type": "ping"}))["type"] == "pong"


async def test_no_cap_when_zero(start_node):
    async with start_node(max_connections_per_ip=0) as running:
        async with AsyncExitStack() as stack:
            clients = [await stack.enter_async_context(running.client()) for _ in range(40)]
            assert running.handle.websocket.peers.count("127.0.0.1") == 40
            assert (await clients[-1].request({"type": "ping"}))["type"] == "pong"


async def test_x_forwarded_for_counts_only_behind_a_trusted_proxy(start_node):
    async with start_node(max_connections_per_ip=1, trusted_proxies="127.0.0.0/8") as running:
        async with connect(running, "10.0.0.1") as first, connect(running, "192.0.2.7, 10.0.0.2") as second:
            for ws in (first, second):
                await ws.send_message('{"type":"ping"}')
                assert "pong" in await ws.get_message()
            assert running.handle.websocket.peers.count("10.0.0.1") == 1
            assert running.handle.websocket.peers.count("10.0.0.2") == 1  # the right-most untrusted hop
            with pytest.raises(ConnectionRejected) as refused:
                async with connect(running, "10.0.0.1"):
                    pass
            assert refused.value.status_code == 429
        await released(running, "10.0.0.1")
        await released(running, "10.0.0.2")


async def test_x_forwarded_for_is_ignored_from_an_untrusted_peer(start_node):
    async with start_node(max_connections_per_ip=1) as running:
        async with connect(running, "10.0.0.1"):
            assert running.handle.websocket.peers.count("127.0.0.1") == 1
            with pytest.raises(ConnectionRejected):  # a forged header does not buy a new slot
                async with connect(running, "10.0.0.9"):
                    pass
        await released(running)


async def test_the_per_connection_rate_limit_still_applies(start_node):
    settings = {"max_connections_per_ip": 4, "request_rate_per_second": 0.001, "request_rate_burst": 2.0}
    async with start_node(**settings) as running:
        async with running.client() as client:
            codes = [(await client.request({"type": "ping", "id": str(i)})).get("code") for i in range(4)]
            assert "RATE_LIMIT_EXCEEDED" in codes


async def test_refused_handshakes_do_not_disturb_open_sessions(start_node, publish_local):
    path, (ids, vectors, _) = publish_local(120, 8)
    async with start_node(max_connections_per_ip=1) as running:
        async with NodeClient.connect(running.url, timeout=30) as client:
            await client.session_init("s", manifest_path=path, user_address=path.split("/")[2])
            assert (await client.wait_loaded(30))["event"] == "loading_complete"
            for _ in range(3):
                with pytest.raises(ConnectionRejected):
                    async with running.client():
                        pass
            assert (await client.search(vectors[3].tolist(), 1))["results"][0]["id"] == ids[3]
