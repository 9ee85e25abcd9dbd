"""Logs for aggregators: one JSON object per line, with the fields and bound context operators query."""

from __future__ import annotations

import io
import json
import re

from _ops_helpers import publish, receive_until, request, search_frame, session_init, upload_frame
from trio_websocket import open_websocket_url

from fabstir_node.logging import configure, get_logger

ISO_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$")


def _lines(stream: io.StringIO) -> list[dict]:
    text = stream.getvalue()
    assert text.endswith("\n")
    return [json.loads(line) for line in text.splitlines()]


async def test_every_event_is_one_json_line_with_context(ops_node, tmp_path, restore_logging):
    stream = io.StringIO()
    configure("info", "json", stream=stream)
    db = publish(tmp_path / "store", "docs", count=25, chunk_size=10)
    async with ops_node() as running:
        async with open_websocket_url(running.ws_url) as ws:
            await request(ws, session_init("s1", db["manifest_path"]), "session_init_ack")
            await receive_until(ws, lambda m: m.get("payload", {}).get("event") == "loading_complete")
            await request(ws, upload_frame(10, dims=4), "uploadVectorsResponse")
            await request(ws, search_frame(db["vectors"][0].tolist(), request_id="q-42"), "searchVectorsResponse")
    try:
        raise ValueError("something broke")
    except ValueError:
        get_logger("tests.ops").exception("probe_failed", request_id="r-1")

    lines = _lines(stream)
    for line in lines:
        assert {"timestamp", "level", "event", "logger"} <= line.keys(), line
        assert ISO_UTC.match(line["timestamp"]), line["timestamp"]
    by_event = {}
    for line in lines:
        by_event.setdefault(line["event"], []).append(line)

    started = by_event["server_started"][0]
    assert started["level"] == "info" and started["logger"] == "fabstir_node.server.daemon"
    assert started["metrics_port"] == running.handle.metrics_port

    search = next(line for line in by_event["request"] if line["type"] == "SearchVectors")
    assert search["session_id"] == "s1" and search["request_id"] == "q-42" and search["outcome"] == "ok"
    assert isinstance(search["duration_ms"], float) and "conn_id" in search
    assert search["path"] in {"exact", "graph", "declined"}  # which path answered it
    assert all("path" not in line for line in by_event["request"] if line["type"] != "SearchVectors")

    (finished,) = by_event["load_finished"]
    assert finished["outcome"] == "success" and finished["session_id"] == "s1"
    assert finished["manifest_path"] == db["manifest_path"]
    assert finished["vector_count"] == db["count"] and finished["chunk_count"] == db["chunks"]
    assert finished["bytes"] == db["bytes"]
    for field in ("download_ms", "decode_ms", "index_ms", "duration_ms"):
        assert finished[field] >= 0

    (failed,) = by_event["probe_failed"]
    assert failed["level"] == "error" and failed["request_id"] == "r-1"
    (exc,) = failed["exception"]
    assert exc["exc_type"] == "ValueError" and exc["exc_value"] == "something broke"
    assert "locals" not in exc["frames"][0]


async def test_console_format_is_one_line_too(restore_logging):
    stream = io.StringIO()
    configure("warning", "console", stream=stream)
    log = get_logger("tests.ops")
    log.info("hidden")
    log.warning("shown", session_id="s9")
    assert stream.getvalue().count("\n") == 1
    assert "shown" in stream.getvalue() and "session_id=s9" in stream.getvalue()


def test_a_closed_log_stream_never_fails_the_code_that_logs(restore_logging):
    stream = io.StringIO()
    configure("info", "json", stream=stream)
    stream.close()
    get_logger("tests.ops").info("into_the_void", session_id="s1")  # no exception
