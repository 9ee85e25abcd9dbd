"""Fixtures shared by the whole suite: a real daemon on loopback, and its client."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio

from fabstir_node.client import NodeClient
from fabstir_node.config import Settings
from fabstir_node.server.daemon import DaemonHandle, run_daemon
from fabstir_node.testing import write_files

DATA = Path(__file__).parent / "data"


@pytest.fixture
def test_vectors() -> dict[str, Any]:
    return json.loads((DATA / "test-vectors.json").read_text())


@attrs.define
class RunningNode:
    handle: DaemonHandle
    settings: Settings

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.handle.port}/v1/ws"

    @property
    def node(self) -> Any:
        return self.handle.node

    @asynccontextmanager
    async def client(self, path: str = "/v1/ws", **kwargs: Any) -> AsyncIterator[NodeClient]:
        async with NodeClient.connect(f"ws://127.0.0.1:{self.handle.port}{path}", timeout=30, **kwargs) as client:
            yield client


@pytest.fixture
def start_node(tmp_path: Path, nursery: trio.Nursery):
    """``async with start_node(**settings) as running:`` a daemon on a free loopback port."""

    @asynccontextmanager
    async def start(*, host_key: Any = None, **overrides: Any) -> AsyncIterator[RunningNode]:
        # no metrics server unless a test asks (port 9090 may be taken on the machine running the tests)
        values = {"host": "127.0.0.1", "port": 0, "store_dir": tmp_path / "store", "log_format": "json",
                  "metrics_enabled": False}
        values.update(overrides)
        settings = Settings(**values)
        handle = await nursery.start(
            lambda task_status: run_daemon(settings, host_key=host_key, handle_signals=False, task_status=task_status)
        )
        try:
            yield RunningNode(handle=handle, settings=settings)
        finally:
            handle.stop.set()

    return start


@pytest.fixture
def publish_local(tmp_path: Path):
    """``publish_local(n=..., dim=..., owner=..., name=..., **build_database kwargs) -> (manifest_path, records)``."""
    from fabstir_node.formats.paths import manifest_path
    from fabstir_node.formats.synthetic import synthetic_records
    from fabstir_node.formats.writer import build_database

    def publish(n: int = 300, dim: int = 32, *, owner: str = "0xAbCdEf0000000000000000000000000000000001",
                name: str = "docs", seed: int = 0, root: Path | None = None, **kwargs: Any):
        records = synthetic_records(n, dim, seed)
        files = build_database(records, owner=owner, name=name, **kwargs)
        write_files(root or tmp_path / "store", files)
        return manifest_path(owner, name), records

    return publish
