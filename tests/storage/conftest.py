"""Fixtures: a stand-in S5 bridge on loopback and the daemon's HTTP client."""

from __future__ import annotations

import pytest

from fabstir_node.storage.bridge import BridgeStore, make_http_client
from fabstir_node.storage.bridge_server import BridgeStandIn, serve_bridge


@pytest.fixture
async def bridge(nursery, tmp_path) -> BridgeStandIn:
    root = tmp_path / "bridge-root"
    root.mkdir()
    return await nursery.start(serve_bridge, root)


@pytest.fixture
async def client():
    async with make_http_client(max_connections=2, timeout=5.0, pool_timeout=1.0) as http_client:
        yield http_client


@pytest.fixture
def make_store(bridge, client):
    """A BridgeStore on the stand-in with fast retries; keyword arguments override."""

    def make(**options) -> BridgeStore:
        settings = {"max_retries": 3, "timeout_seconds": 2.0, "backoff_base": 0.001, "backoff_max": 0.01}
        settings.update(options)
        return BridgeStore(bridge.url, client=client, **settings)

    return make

