"""Fixtures for the operations tests: a daemon with its operations server on free loopback ports."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import attrs
import httpx
import pytest
import structlog
import trio

from fabstir_node.config import Settings
from fabstir_node.server.daemon import DaemonHandle, run_daemon


@attrs.define
class OpsNode:
    handle: DaemonHandle
    settings: Settings
    http: httpx.AsyncClient

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.handle.port}/v1/ws"


@pytest.fixture
def ops_node(tmp_path: Path, nursery: trio.Nursery):
    """``async with ops_node(**settings) as running:`` a daemon with metrics on any free port."""

    @asynccontextmanager
    async def start(**overrides: Any) -> AsyncIterator[OpsNode]:
        values: dict[str, Any] = {
            "host": "127.0.0.1", "port": 0, "store_dir": tmp_path / "store", "log_format": "json",
            "metrics_host": "127.0.0.1", "metrics_port": 0, "metrics_enabled": True,
            "shutdown_grace_seconds": 2.0,
        }
        values.update(overrides)
        settings = Settings(**values)
        handle = await nursery.start(
            lambda task_status: run_daemon(settings, handle_signals=False, task_status=task_status)
        )
        base = f"http://127.0.0.1:{handle.metrics_port}" if handle.metrics_port else "http://127.0.0.1:1"
        try:
            async with httpx.AsyncClient(base_url=base, timeout=10.0) as http:
                yield OpsNode(handle=handle, settings=settings, http=http)
        finally:
            handle.stop.set()

    return start


@pytest.fixture
def restore_logging():
    """Put the logging configuration back as it was after a test that reconfigures it."""
    saved_structlog = structlog.get_config()
    root = logging.getLogger()
    saved_handlers, saved_level = list(root.handlers), root.level
    try:
        yield
    finally:
        structlog.configure(**saved_structlog)
        for handler in list(root.handlers):
            root.removeHandler(handler)
        for handler in saved_handlers:
            root.addHandler(handler)
        root.setLevel(saved_level)
