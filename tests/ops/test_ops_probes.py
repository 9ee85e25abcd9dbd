"""/health and /ready over real HTTP: liveness, storage readiness, shutdown, and the usual HTTP edges."""

from __future__ import annotations

import os
import shutil

import httpx
import pytest
import trio

from fabstir_node import __version__
from fabstir_node.config import Settings
from fabstir_node.server.http import serve_http
from fabstir_node.server.probes import Probes
from fabstir_node.service.node import Node
from fabstir_node.storage.bridge_server import serve_bridge
from fabstir_node.storage.local import LocalStore


async def test_health_and_ready_with_a_writable_store(ops_node):
    async with ops_node() as running:
        health = await running.http.get("/health")
        assert health.status_code == 200
        body = health.json()
        assert body["status"] == "ok" and body["version"] == __version__
        assert body["uptime_seconds"] >= 0
        ready = await running.http.get("/ready")
        assert ready.status_code == 200, ready.text
        assert ready.json()["status"] == "ready"
        assert ready.json()["storage"]["backend"] == "local"
        assert ready.headers["cache-control"] == "no-store"
        head = await running.http.head("/health")
        assert head.status_code == 200 and head.content == b""


async def test_unknown_paths_and_methods(ops_node):
    async with ops_node() as running:
        assert (await running.http.get("/nope")).status_code == 404
        post = await running.http.post("/health", content=b"x")
        assert post.status_code == 405 and post.headers["allow"] == "GET, HEAD"


async def test_ready_is_503_with_the_reason_when_the_store_is_gone(ops_node, tmp_path):
    async with ops_node() as running:
        assert (await running.http.get("/ready")).status_code == 200
        shutil.rmtree(tmp_path / "store")
        ready = await running.http.get("/ready")
        assert ready.status_code == 503
        body = ready.json()
        assert body["status"] == "not_ready" and body["version"] == __version__
        assert "not writable" in body["reason"] and str(tmp_path / "store") in body["reason"]
        assert (await running.http.get("/health")).status_code == 200  # alive, just not ready


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write to a read-only directory")
async def test_ready_is_503_when_the_store_is_read_only(ops_node, tmp_path):
    async with ops_node() as running:
        (tmp_path / "store").chmod(0o500)
        try:
            ready = await running.http.get("/ready")
        finally:
            (tmp_path / "store").chmod(0o700)
        assert ready.status_code == 503
        assert "not writable" in ready.json()["reason"]


async def test_ready_follows_the_bridge(ops_node, tmp_path):
    root = tmp_path / "bridge-root"
    root.mkdir()
    async with trio.open_nursery() as bridge_nursery:
        bridge = await bridge_nursery.start(serve_bridge, root)
        async with ops_node(s5_bridge_url=bridge.url, s5_download_timeout_seconds=2.0) as running:
            assert (await running.http.get("/ready")).status_code == 200
            bridge.faults.initialised = False  # the real bridge answers 503 while s5.js starts
            starting = await running.http.get("/ready")
            assert starting.status_code == 503
            assert starting.json()["reason"] == "bridge /health answered HTTP 503"
            bridge_nursery.cancel_scope.cancel()  # the bridge goes away entirely
            with trio.fail_after(5):  # (its listener closes once its task has run)
                while (down := await running.http.get("/ready")).json()["reason"] == starting.json()["reason"]:
                    await trio.sleep(0.01)
            assert down.status_code == 503
            assert down.json()["reason"].startswith("bridge unreachable")
            assert down.json()["storage"] == {"backend": "s5-bridge", "ok": False, "detail": down.json()["reason"]}


async def _serve(nursery, probes: Probes) -> httpx.AsyncClient:
    port = await nursery.start(lambda task_status: serve_http(probes, "127.0.0.1", 0, task_status=task_status))
    return httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10.0)


async def test_ready_is_503_while_shutting_down(nursery, tmp_path):
    node = Node(Settings(store_dir=tmp_path), storage=LocalStore(tmp_path))
    closing = False
    async with await _serve(nursery, Probes(node, None, closing=lambda: closing)) as http:
        assert (await http.get("/ready")).status_code == 200
        assert (await http.get("/metrics")).status_code == 404  # no metrics given
        closing = True
        ready = await http.get("/ready")
        assert ready.status_code == 503 and ready.json()["reason"] == "shutting down"
        assert "storage" not in ready.json()


class _StuckStorage:
    """A backend whose health check never answers (below the unit under test)."""

    name = "stuck"

    async def health(self):
        await trio.sleep_forever()


async def test_a_health_check_that_hangs_is_not_ready(nursery, tmp_path):
    node = Node(Settings(store_dir=tmp_path), storage=_StuckStorage())
    async with await _serve(nursery, Probes(node, None, ready_timeout=0.2)) as http:
        ready = await http.get("/ready")
    assert ready.status_code == 503
    assert ready.json()["reason"] == "storage health check took longer than 0.2 s"
