"""/metrics of a real daemon: each series moves when, and only when, its code path runs.

A daemon on loopback, a real WebSocket client (trio-websocket), a database in
a real local store (or behind the stand-in bridge), and httpx scraping the
operations port.
"""

from __future__ import annotations

import trio
from _ops_helpers import (
    publish,
    receive_until,
    request,
    scrape,
    search_frame,
    session_init,
    upload_frame,
)
from trio_websocket import open_websocket_url

from fabstir_node.storage.bridge_server import serve_bridge

LOCAL = {"backend": "local"}


def _loaded(message: dict) -> bool:
    return message.get("type") == "vector_loading_progress" and message["payload"]["event"] in (
        "loading_complete", "loading_error",
    )


async def test_a_session_moves_the_right_series(ops_node, tmp_path):
    db = publish(tmp_path / "store", "docs", count=25, chunk_size=10)
    async with ops_node() as running:
        before = await scrape(running.http)
        assert before["fabstir_websocket_connections"] == 0
        assert before["vector_loading_started_total"] == 0
        assert before[("fabstir_build_info", {"version": __import__("fabstir_node").__version__})] == 1

        async with open_websocket_url(running.ws_url) as ws:
            ack = await request(ws, session_init("s1", db["manifest_path"]), "session_init_ack")
            assert ack["status"] == "success"
            events = await receive_until(ws, _loaded)
            assert events[-1]["payload"]["event"] == "loading_complete", events[-1]

            upload = await request(ws, upload_frame(10, dims=4), "uploadVectorsResponse")
            assert upload["uploaded"] == 10
            found = await request(ws, search_frame(db["vectors"][3].tolist()), "searchVectorsResponse")
            assert found["results"][0]["id"] == "docs-3"
            bad = await request(ws, "this is not json", "error")
            assert bad["code"] == "INVALID_JSON"

            during = await scrape(running.http)
            assert during["fabstir_websocket_connections"] == 1
            assert during["fabstir_sessions"] == 1
            assert during["vector_loading_in_progress"] == 0

        with trio.fail_after(5):
            while (after := await scrape(running.http))["fabstir_websocket_connections"] != 0:
                await trio.sleep(0.01)

    messages = "fabstir_websocket_messages_total"
    assert after[(messages, {"type": "SessionInit", "outcome": "ok"})] == 1
    assert after[(messages, {"type": "UploadVectors", "outcome": "ok"})] == 1
    assert after[(messages, {"type": "SearchVectors", "outcome": "ok"})] == 1
    assert after[(messages, {"type": "invalid", "outcome": "INVALID_JSON"})] == 1
    assert after[("fabstir_websocket_request_duration_seconds_count", {"type": "SearchVectors"})] == 1
    assert after["fabstir_websocket_connections_opened_total"] == 1
    assert after["fabstir_sessions"] == 0

    assert after["vector_search_duration_seconds_count"] == 1
    assert after[("vector_search_answers_total", {"path": "exact"})] == 1  # 25 vectors: no graph
    assert after["vector_loading_started_total"] == 1
    assert after["vector_loading_success_total"] == 1
    assert after["vector_loading_failure_total"] == 0
    assert after["s5_vectors_loaded_total"] == db["count"]
    assert after[("vector_loading_duration_seconds_count", {"outcome": "success"})] == 1
    # every manifest and chunk byte the loader read, counted inside the storage backend
    assert after[("s5_download_bytes_total", LOCAL)] == db["bytes"]
    assert after["process_resident_memory_bytes"] > 0


async def test_a_load_times_its_downloads_and_index_build(ops_node, tmp_path):
    db = publish(tmp_path / "store", "docs", count=25, chunk_size=10)
    async with ops_node() as running:
        async with open_websocket_url(running.ws_url) as ws:
            await request(ws, session_init("s1", db["manifest_path"]), "session_init_ack")
            await receive_until(ws, _loaded)
            samples = await scrape(running.http)
    assert samples[("s5_download_duration_seconds_count", LOCAL)] == 1 + db["chunks"]
    assert samples["vector_index_build_duration_seconds_count"] == 1


async def test_a_failed_load_counts_as_a_failure_with_its_code(ops_node):
    async with ops_node() as running:
        async with open_websocket_url(running.ws_url) as ws:
            await request(ws, session_init("s1", "home/vector-databases/0xabc/missing/manifest.json"),
                          "session_init_ack")
            events = await receive_until(ws, _loaded)
            assert events[-1]["payload"]["error_code"] == "MANIFEST_NOT_FOUND"
            samples = await scrape(running.http)
    assert samples["vector_loading_failure_total"] == 1
    assert samples["vector_loading_success_total"] == 0
    assert samples["vector_loading_timeout_total"] == 0
    assert samples["s5_vectors_loaded_total"] == 0
    assert samples[("vector_loading_duration_seconds_count", {"outcome": "MANIFEST_NOT_FOUND"})] == 1


async def test_bridge_retries_and_bytes_are_counted(ops_node, tmp_path, nursery):
    root = tmp_path / "bridge-root"
    db = publish(root, "docs", count=12, chunk_size=6)
    bridge = await nursery.start(serve_bridge, root)
    chunk = db["manifest_path"].rsplit("/", 1)[0] + "/chunk-1.json"
    bridge.faults.fail(1, path=chunk)
    async with ops_node(s5_bridge_url=bridge.url) as running:
        async with open_websocket_url(running.ws_url) as ws:
            await request(ws, session_init("s1", db["manifest_path"]), "session_init_ack")
            events = await receive_until(ws, _loaded)
            assert events[-1]["payload"]["event"] == "loading_complete", events[-1]
            samples = await scrape(running.http)
    backend = {"backend": "s5-bridge"}
    assert samples[("s5_download_retries_total", backend)] == 1
    assert samples[("s5_download_bytes_total", backend)] == db["bytes"]
    assert samples["s5_vectors_loaded_total"] == 12


async def test_metrics_port_zero_in_the_environment_disables_the_server(ops_node):
    from fabstir_node.config import Settings

    assert Settings.from_sources({"FABSTIR_METRICS_PORT": "0"}).metrics_enabled is False
    async with ops_node(metrics_port=0, metrics_enabled=False) as running:
        assert running.handle.metrics_port is None
        assert running.handle.node.metrics is None


async def test_the_shared_cache_reports_hits_misses_and_size(ops_node, tmp_path):
    db = publish(tmp_path / "store", "docs", count=25, chunk_size=10)
    async with ops_node() as running:
        for session in ("first", "second"):
            async with open_websocket_url(running.ws_url) as ws:
                await request(ws, session_init(session, db["manifest_path"]), "session_init_ack")
                events = await receive_until(ws, _loaded)
                assert events[-1]["payload"]["event"] == "loading_complete", events[-1]
        samples = await scrape(running.http)
    assert samples["vector_index_cache_misses_total"] == 1
    assert samples["vector_index_cache_hits_total"] == 1
    assert samples["vector_index_cache_entries"] == 1
    assert samples["vector_index_cache_bytes"] > 0
    # the hit read only the manifest again (each session checks its own access), no chunk
    assert samples[("s5_download_bytes_total", LOCAL)] == db["bytes"] + db["manifest_bytes"]
