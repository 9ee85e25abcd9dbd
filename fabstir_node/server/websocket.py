"""The WebSocket server: trio-websocket in, :class:`ConnectionService` out.

Each connection runs in its own nursery; nothing a client sends can escape
its handler (trio-websocket lets an exception from one handler kill the whole
server, engine-notes §3.1), so every error is contained here, logged, and the
connection is closed with 1011 if it cannot go on.

A handshake beyond ``FABSTIR_MAX_CONNECTIONS_PER_IP`` connections from one
client address is refused with HTTP 429 (service/peers.py); the slot a
connection holds is given back when its handler ends, however it ends.

Shutdown is two-phase (:meth:`WebSocketService.shutdown`): stop accepting,
then let each connection finish the request it is handling (within a grace
period) and close it with a 1001 "going away" close frame.
"""

from __future__ import annotations

import secrets
import time
from typing import Any

import attrs
import structlog
import trio
from trio_websocket import ConnectionClosed, WebSocketConnection, WebSocketRequest, WebSocketServer

from ..errors import ErrorCode, FabstirError
from ..logging import get_logger
from ..protocol import codec
from ..protocol import messages as m
from ..service.connection import ConnectionService
from ..service.node import Node
from ..service.peers import PeerCounter, client_address, parse_networks
from ..service.ratelimit import TokenBucket

log = get_logger(__name__)

#: The SDK connects to ``/v1/ws``; ``/ws`` and ``/`` are accepted too (protocol §1).
WEBSOCKET_PATHS = frozenset({"/v1/ws", "/ws", "/"})
#: Frames larger than this are parsed off the event loop.
_THREAD_PARSE_MIN = 256 * 1024


@attrs.define(eq=False)
class _Connection:
    conn_id: str
    ws: WebSocketConnection
    bucket: TokenBucket
    busy: bool = False
    idle: trio.Event = attrs.field(factory=trio.Event)
    send_lock: trio.Lock = attrs.field(factory=trio.Lock)


class WebSocketService:
    """Serve the protocol on ``listeners`` until cancelled or shut down."""

    def __init__(self, node: Node) -> None:
        self.node = node
        self._connections: dict[str, _Connection] = {}
        self._accept_scope: trio.CancelScope | None = None
        self._handlers: trio.Nursery | None = None
        self.port: int | None = None
        self.closing = False
        settings = node.settings
        #: Open connections per client address (FABSTIR_MAX_CONNECTIONS_PER_IP).
        self.peers = PeerCounter(settings.max_connections_per_ip)
        self._trusted_proxies = parse_networks(settings.trusted_proxies)

    @property
    def connection_count(self) -> int:
        return len(self._connections)

    async def run(
        self, host: str, port: int, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Bind, report the bound port through ``task_status``, serve until cancelled."""
        settings = self.node.settings
        listeners = await trio.open_tcp_listeners(port, host=host)
        self.port = listeners[0].socket.getsockname()[1]
        async with trio.open_nursery() as handlers:
            self._handlers = handlers
            server = WebSocketServer(
                self._handle,
                listeners,
                handler_nursery=handlers,
                max_message_size=settings.max_message_bytes,
                message_queue_size=4,
                connect_timeout=10,
                disconnect_timeout=5,
            )
            async with trio.open_nursery() as acceptor:
                self._accept_scope = acceptor.cancel_scope
                await acceptor.start(server.run)
                task_status.started(self.port)
            # Accepting has stopped; handlers keep running until shutdown() closes them.
            await trio.sleep_forever()

    async def shutdown(self, grace: float) -> None:
        """Stop accepting, let in-flight requests finish within ``grace`` seconds, close with 1001."""
        self.closing = True
        if self._accept_scope is not None:
            self._accept_scope.cancel()
        deadline = trio.current_time() + grace
        async with trio.open_nursery() as nursery:
            for conn in list(self._connections.values()):
                nursery.start_soon(self._close_when_idle, conn, deadline)
        if self._handlers is not None:
            self._handlers.cancel_scope.cancel()

    async def _close_when_idle(self, conn: _Connection, deadline: float) -> None:
        with trio.move_on_at(deadline):
            while conn.busy:
                await conn.idle.wait()
        with trio.move_on_after(2):
            await conn.ws.aclose(1001, "server shutting down")

    # --- one connection ------------------------------------------------------------

    async def _handle(self, request: WebSocketRequest) -> None:
        path = request.path.split("?", 1)[0]
        if path not in WEBSOCKET_PATHS:
            try:
                await request.reject(404, body=b"not found: WebSocket paths are /v1/ws, /ws and /\n")
            except Exception:  # noqa: BLE001 - the peer may already be gone
                pass
            return
        if self.closing:
            await request.reject(503, body=b"server shutting down\n")
            return
        peer = self._client_address(request)
        if not self.peers.acquire(peer):
            log.warning("connection_refused", remote=peer, reason="per_ip_limit", limit=self.peers.limit)
            self.node.on_connection_refused("per_ip_limit")
            try:
                await request.reject(
                    429, body=b"too many connections from your address (FABSTIR_MAX_CONNECTIONS_PER_IP)\n"
                )
            except Exception:  # noqa: BLE001 - the peer may already be gone
                pass
            return
        try:
            await self._accept(request, path, peer)
        finally:
            self.peers.release(peer)

    def _client_address(self, request: WebSocketRequest) -> str:
        """The address this connection counts for: the peer, or whom a trusted proxy forwards."""
        remote = getattr(request.remote, "address", None)
        forwarded: list[str] = []
        if self._trusted_proxies:
            forwarded = [
                value.decode("latin-1")
                for name, value in request.headers
                if name.lower() == b"x-forwarded-for"
            ]
        return client_address(str(remote) if remote else None, forwarded, self._trusted_proxies)

    async def _accept(self, request: WebSocketRequest, path: str, peer: str) -> None:
        conn_id = secrets.token_hex(4)
        try:
            ws = await request.accept()
        except Exception:  # noqa: BLE001 - failed handshake: nothing to serve
            return
        settings = self.node.settings
        bucket = TokenBucket(rate=settings.request_rate_per_second, burst=settings.request_rate_burst)
        conn = _Connection(conn_id=conn_id, ws=ws, bucket=bucket)
        self._connections[conn_id] = conn
        remote = getattr(request.remote, "address", None)
        with structlog.contextvars.bound_contextvars(conn_id=conn_id):
            log.info("connection_open", remote=str(remote) if remote else None, client=peer, path=path)
            self.node.on_connection(+1)
            started = time.monotonic()
            try:
                await self._serve_connection(conn, peer)
            except* ConnectionClosed:
                pass  # the peer went away: a normal end
            except* Exception:  # contain everything: one client never stops the server
                log.exception("connection_failed")
                with trio.move_on_after(2) as cleanup:
                    cleanup.shield = True
                    await ws.aclose(1011, "internal error")
            finally:
                self._connections.pop(conn_id, None)
                self.node.on_connection(-1)
                reason = ws.closed
                log.info(
                    "connection_closed",
                    code=getattr(reason, "code", None),
                    duration_ms=round((time.monotonic() - started) * 1000, 1),
                )

    async def _serve_connection(self, conn: _Connection, peer: str | None = None) -> None:
        ws = conn.ws

        async def send(reply: dict[str, Any]) -> None:
            text = codec.encode(reply)
            async with conn.send_lock:
                await ws.send_message(text)

        async def send_event(reply: dict[str, Any]) -> None:
            try:
                await send(reply)
            except ConnectionClosed:
                pass  # the session is being torn down with its connection

        async with trio.open_nursery() as nursery:
            service = ConnectionService(self.node, conn.conn_id, nursery, send_event, peer=peer)
            try:
                while True:
                    try:
                        frame = await ws.get_message()
                    except ConnectionClosed:
                        return
                    conn.busy, conn.idle = True, trio.Event()
                    try:
                        allowed = conn.bucket.take(trio.current_time())
                        reply = await self._process(service, frame, allowed)
                        await send(reply)
                    finally:
                        conn.busy = False
                        conn.idle.set()
                    if self.closing:
                        await ws.aclose(1001, "server shutting down")
                        return
            finally:
                service.close()
                nursery.cancel_scope.cancel()

    async def _process(self, service: ConnectionService, frame: str | bytes, allowed: bool = True) -> dict[str, Any]:
        started = time.perf_counter()
        if len(frame) >= _THREAD_PARSE_MIN:
            decoded = await trio.to_thread.run_sync(codec.decode_frame, frame, limiter=self.node.cpu_limiter)
        else:
            decoded = codec.decode_frame(frame)
        if isinstance(decoded, codec.Rejected):
            reply = m.error_reply(decoded.error, decoded.echo)
            kind = "invalid"
        elif not allowed:
            error = FabstirError(ErrorCode.RATE_LIMIT_EXCEEDED, "too many requests on this connection; slow down")
            reply = m.error_reply(error, decoded.echo)
            kind = type(decoded).__name__
        else:
            service.search_path = None
            reply = await service.handle(decoded)
            kind = type(decoded).__name__
        outcome = reply.get("code", "ok") if reply.get("type") == "error" else "ok"
        echo = decoded.echo
        duration = time.perf_counter() - started
        self.node.on_request(kind, outcome, duration)
        path = {"path": service.search_path} if kind == "SearchVectors" and service.search_path else {}
        log.info(
            "request",
            type=kind,
            session_id=service.current.session_id if service.current else None,
            request_id=echo.request_id if echo.request_id is not None else echo.id,
            outcome=outcome,
            duration_ms=round(duration * 1000, 3),
            **path,  # which path answered a search: graph, declined (to the exact path), exact, ...
        )
        return reply
