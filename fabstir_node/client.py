"""A small WebSocket client for fabstir-node, as the SDK speaks to it.

Used by ``fabstir-node search``, the benchmark, the fuzz and soak scripts and
the tests.  The server answers one connection's requests in order, and pushes
``vector_loading_progress`` events in between; :meth:`NodeClient.request`
returns the next reply and keeps events aside in :attr:`NodeClient.events`.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import orjson
import trio
from trio_websocket import WebSocketConnection, open_websocket_url

PROGRESS = "vector_loading_progress"
TERMINAL_EVENTS = frozenset({"loading_complete", "loading_error"})


class NodeClient:
    """One connection to a node."""

    def __init__(self, ws: WebSocketConnection, *, timeout: float = 60.0) -> None:
        self.ws = ws
        self.timeout = timeout
        self.events: list[dict[str, Any]] = []
        self._ids = itertools.count(1)

    @classmethod
    @asynccontextmanager
    async def connect(
        cls, url: str, *, timeout: float = 60.0, max_message_size: int = 64 * 1024 * 1024
    ) -> AsyncIterator[NodeClient]:
        async with open_websocket_url(url, max_message_size=max_message_size, connect_timeout=timeout) as ws:
            yield cls(ws, timeout=timeout)

    def next_id(self) -> str:
        return f"req-{next(self._ids)}"

    # --- raw frames ---------------------------------------------------------------

    async def send(self, message: dict[str, Any] | str | bytes) -> None:
        if isinstance(message, dict):
            message = orjson.dumps(message).decode()
        await self.ws.send_message(message)

    async def receive(self, timeout: float | None = None) -> dict[str, Any]:
        with trio.fail_after(timeout or self.timeout):
            return orjson.loads(await self.ws.get_message())

    async def reply(self, timeout: float | None = None) -> dict[str, Any]:
        """The next message that is not a progress event (events are kept aside)."""
        while True:
            message = await self.receive(timeout)
            if message.get("type") == PROGRESS:
                self.events.append(message)
                continue
            return message

    async def request(self, message: dict[str, Any] | str | bytes, timeout: float | None = None) -> dict[str, Any]:
        await self.send(message)
        return await self.reply(timeout)

    # --- protocol helpers -------------------------------------------------------------

    async def session_init(
        self, session_id: str = "1", *, manifest_path: str | None = None, user_address: str | None = None,
        job_id: str | int = 1, chain_id: int = 84532, **extra: Any,
    ) -> dict[str, Any]:
        message: dict[str, Any] = {"type": "session_init", "session_id": session_id, "job_id": job_id,
                                   "chain_id": chain_id, **extra}
        if manifest_path is not None:
            message["vector_database"] = {"manifest_path": manifest_path, "user_address": user_address or ""}
        return await self.request(message)

    async def upload(self, vectors: Sequence[dict[str, Any]], *, replace: bool = False) -> dict[str, Any]:
        return await self.request(
            {"type": "uploadVectors", "requestId": self.next_id(), "vectors": list(vectors), "replace": replace}
        )

    async def search(
        self, query: Sequence[float], k: int = 5, *, threshold: float | None = None,
        metadata_filter: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        message: dict[str, Any] = {"type": "searchVectors", "requestId": self.next_id(),
                                   "queryVector": [float(x) for x in query], "k": k}
        if threshold is not None:
            message["threshold"] = threshold
        if metadata_filter is not None:
            message["metadataFilter"] = metadata_filter
        return await self.request(message)

    async def wait_loaded(self, timeout: float | None = None) -> dict[str, Any]:
        """Wait for the terminal progress event; returns its payload."""
        with trio.fail_after(timeout or self.timeout):
            while True:
                for event in self.events:
                    if event["payload"].get("event") in TERMINAL_EVENTS:
                        return event["payload"]
                message = await self.receive(timeout=math.inf)
                if message.get("type") == PROGRESS:
                    self.events.append(message)
                else:
                    raise RuntimeError(f"unexpected message while waiting for loading: {message.get('type')}")

    def progress(self) -> list[dict[str, Any]]:
        """Payloads of the progress events received so far, in order."""
        return [event["payload"] for event in self.events]
