"""Fixtures: real local S5 portals on loopback, a portal client, identities."""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio

from fabstir_node.s5.identity import S5Identity
from fabstir_node.server.http import HttpRequest, HttpResponse, serve_http
from fabstir_node.server.portal import LocalPortal, PortalDirectory
from fabstir_node.storage.s5_portal import Portal, PortalClient
from fabstir_node.storage.transfer import RetryPolicy, make_http_client

Fault = Callable[[HttpRequest], Awaitable[HttpResponse | None]]


@attrs.define
class RunningPortal:
    """A local portal on loopback; ``requests`` records (method, path, Authorization header)."""

    url: str
    root: Path
    portal: LocalPortal
    requests: list[tuple[str, str, str | None]] = attrs.field(factory=list)
    #: Called before the portal answers; a response it returns is sent instead.
    fault: Fault | None = None

    def saw(self, prefix: str) -> list[tuple[str, str, str | None]]:
        return [r for r in self.requests if r[1].startswith(prefix)]

    def blob_file(self, blob_hash: bytes) -> Path:
        return self.root / "blobs" / blob_hash.hex()


@pytest.fixture
def start_portal(nursery: trio.Nursery, tmp_path: Path):
    """``await start_portal(name, token=None, redirect_base=None, root=None)`` -> RunningPortal."""

    async def start(name: str = "portal", *, token: str | None = None, redirect_base: str | None = None,
                    root: Path | None = None) -> RunningPortal:
        root = root or tmp_path / name
        portal = LocalPortal(PortalDirectory(root), token=token, redirect_base=redirect_base)
        running = RunningPortal(url="", root=root, portal=portal)

        async def handler(request: HttpRequest) -> HttpResponse:
            running.requests.append((request.method, request.path, request.header("authorization")))
            if running.fault is not None and (answer := await running.fault(request)) is not None:
                return answer
            return await portal.handle(request)

        port = await nursery.start(
            lambda task_status: serve_http(handler, "127.0.0.1", 0, task_status=task_status,
                                           max_request_body=64 * 1024 * 1024)
        )
        running.url = f"http://127.0.0.1:{port}"
        return running

    return start


@pytest.fixture
async def http():
    async with make_http_client(max_connections=8, timeout=5.0, pool_timeout=2.0) as client:
        yield client


@pytest.fixture
def make_client(http):
    """``make_client(*portals_or_urls, **policy)`` -> PortalClient with fast retries."""

    def make(*portals: Any, max_body_bytes: int | None = 64 * 1024 * 1024, **policy: Any) -> PortalClient:
        values = {"max_retries": 2, "timeout_seconds": 3.0, "backoff_base": 0.001, "backoff_max": 0.01}
        values.update(policy)
        listed = [p if isinstance(p, Portal) else Portal(getattr(p, "url", p)) for p in portals]
        return PortalClient(listed, client=http, policy=RetryPolicy(**values), max_body_bytes=max_body_bytes)

    return make


@pytest.fixture
def identity() -> S5Identity:
    return S5Identity(os.urandom(16))
