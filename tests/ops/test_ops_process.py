"""The real process: ``python -m fabstir_node serve``, SIGHUP keeps sessions, SIGTERM closes with 1001, exit 0."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys

import httpx
import pytest
import trio
from _ops_helpers import request, session_init, upload_frame
from trio_websocket import ConnectionClosed, open_websocket_url


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class _Lines:
    """JSON log lines from the child's stdout, read as they come."""

    def __init__(self, stream: trio.abc.ReceiveStream) -> None:
        self.stream = stream
        self.buffer = b""
        self.seen: list[dict] = []

    async def until(self, event: str, seconds: float = 10.0) -> dict:
        with trio.fail_after(seconds):
            while True:
                while b"\n" in self.buffer:
                    raw, self.buffer = self.buffer.split(b"\n", 1)
                    line = json.loads(raw)
                    self.seen.append(line)
                    if line.get("event") == event:
                        return line
                data = await self.stream.receive_some(65536)
                if not data:
                    seen = [item["event"] for item in self.seen]
                    raise AssertionError(f"stdout ended before {event!r}; saw {seen}")
                self.buffer += data


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
async def test_sighup_keeps_sessions_and_sigterm_closes_with_1001(tmp_path):
    metrics_port = _free_port()
    env = {
        **os.environ, "LOG_FORMAT": "json", "LOG_LEVEL": "info", "FABSTIR_SHUTDOWN_GRACE_SECONDS": "2",
        "FABSTIR_STORE_DIR": str(tmp_path / "store"), "FABSTIR_HOST": "127.0.0.1",
        "FABSTIR_METRICS_HOST": "127.0.0.1",
    }
    env.pop("ENHANCED_S5_URL", None)
    command = [sys.executable, "-m", "fabstir_node", "serve", "--port", "0", "--metrics-port", str(metrics_port)]
    process = await trio.lowlevel.open_process(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        lines = _Lines(process.stdout)
        started = await lines.until("server_started", seconds=30)
        assert started["metrics_port"] == metrics_port
        assert started["frozen_objects"] > 1000  # start-up's objects, out of later collector passes
        url = f"ws://127.0.0.1:{started['port']}/v1/ws"
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{metrics_port}", timeout=5) as http:
            assert (await http.get("/health")).json()["status"] == "ok"
            async with open_websocket_url(url) as ws:
                await request(ws, session_init("s1"), "session_init_ack")
                await request(ws, upload_frame(3, dims=4), "uploadVectorsResponse")

                process.send_signal(signal.SIGHUP)
                await lines.until("logging_reconfigured")
                again = await request(ws, upload_frame(2, dims=4, request_id="u2"), "uploadVectorsResponse")
                assert again["uploaded"] == 2  # same connection, same session: the first 3 are still there
                assert (await http.get("/ready")).status_code == 200

                process.send_signal(signal.SIGTERM)
                with trio.fail_after(5):
                    with pytest.raises(ConnectionClosed) as closed:
                        await ws.get_message()
                assert closed.value.reason.code == 1001
        with trio.fail_after(5):
            status = await process.wait()
        assert status == 0
        await lines.until("server_stopped", seconds=2)
        events = [line["event"] for line in lines.seen]
        assert events.index("signal_received") < events.index("shutdown_started") < events.index("server_stopped")
    finally:
        if process.returncode is None:
            process.kill()
            with trio.move_on_after(5):
                await process.wait()
