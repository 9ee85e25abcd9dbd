"""A tiny HTTP/1.1 server on Trio and h11, for probes, metrics and test stand-ins.

One task per connection (spawned by :func:`trio.serve_listeners`), keep-alive,
and one handler call per request::

    async def handler(request: HttpRequest) -> HttpResponse:
        return HttpResponse(200, [("content-type", "text/plain")], b"ok")

    port = await nursery.start(serve_http, handler, "127.0.0.1", 0)

Guarantees:

* Nothing a handler raises can stop the server: before the response has
  started it becomes a ``500``; after that the connection is closed.  A handler
  may raise :class:`AbortConnection` to close the connection with no response.
* Every wait has a deadline: receiving a request (including the keep-alive idle
  wait) is bounded by ``request_timeout``; calling the handler and sending the
  response by ``response_timeout``.
* While a response is being produced, the connection is watched: if the client
  goes away, the handler (or its streaming body) is cancelled.
* Cancelling the task that runs :func:`serve_http` closes every connection.

Request bodies are read into memory (bounded by ``max_request_body``); response
bodies are ``bytes``, an async iterable of ``bytes``, or a :class:`FileBody` (an
open file sent with ``sendfile``: no copy through Python, which is how the
stand-in bridge serves a load's chunks without taking the CPU the daemon under
test needs).  A streamed body without a ``content-length`` header is sent
chunked.  A streamed body (or a file) that ends before its declared
``content-length`` makes the server close the connection, which is how a client
sees a truncated response.
"""

from __future__ import annotations

import contextlib
import email.utils
import os
from collections.abc import AsyncGenerator, AsyncIterable, Awaitable, Callable, Iterable
from typing import cast
from urllib.parse import parse_qsl, unquote_to_bytes

import attrs
import h11
import orjson
import trio

from ..logging import get_logger

__all__ = ["AbortConnection", "FileBody", "Handler", "HttpRequest", "HttpResponse", "serve_http"]

log = get_logger(__name__)

_RECEIVE_SIZE = 64 * 1024
#: How many bytes of a pipelined next request we buffer while answering.
_MAX_PIPELINED = 64 * 1024


@attrs.frozen
class HttpRequest:
    """One complete request.  Header names are lower-case; values are latin-1 text."""

    method: str
    target: str  #: the raw request target, e.g. ``/s5/fs/a%20b?x=1``
    path: str  #: the percent-decoded path part of ``target``
    query: dict[str, str]  #: the query string (the last of repeated keys wins)
    headers: list[tuple[str, str]]
    body: bytes = attrs.field(repr=lambda b: f"<{len(b)} bytes>")
    client: tuple[str, int] | None = None  #: the peer address, when known

    def header(self, name: str) -> str | None:
        """The first value of header ``name`` (case-insensitive), or ``None``."""
        name = name.lower()
        return next((value for key, value in self.headers if key == name), None)


@attrs.define(eq=False)
class FileBody:
    """``size`` bytes of the open file ``fd`` from its start, sent with ``sendfile``; the server closes
    ``fd`` once the response is over (sent or not) and calls ``sent`` with the bytes it sent."""

    fd: int
    size: int
    sent: Callable[[int], None] | None = None

    def __len__(self) -> int:  # h11 counts it against the content-length
        return self.size


@attrs.frozen
class HttpResponse:
    """A response: a status, headers, and ``bytes``, an async iterable of ``bytes`` or a :class:`FileBody`."""

    status: int
    headers: list[tuple[str, str]] = attrs.field(factory=list)
    body: bytes | AsyncIterable[bytes] | FileBody = attrs.field(default=b"", repr=False)

    @classmethod
    def json(cls, status: int, obj: object, headers: list[tuple[str, str]] | None = None) -> HttpResponse:
        return cls(status, [("content-type", "application/json"), *(headers or [])], orjson.dumps(obj))

    @classmethod
    def text(cls, status: int, text: str, headers: list[tuple[str, str]] | None = None) -> HttpResponse:
        return cls(status, [("content-type", "text/plain; charset=utf-8"), *(headers or [])], text.encode())


Handler = Callable[[HttpRequest], Awaitable[HttpResponse]]


class AbortConnection(Exception):
    """Raised by a handler to close the connection without sending a response."""


@attrs.frozen
class _Config:
    handler: Handler
    max_request_body: int
    request_timeout: float
    response_timeout: float


async def serve_http(
    handler: Handler,
    host: str | None,
    port: int,
    *,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
    max_request_body: int = 1024 * 1024,
    request_timeout: float = 30.0,
    response_timeout: float = 60.0,
) -> None:
    """Serve ``handler`` on ``host:port`` until cancelled; ``nursery.start`` returns the bound port.

    With ``port=0`` the kernel picks a free port; give a concrete ``host`` then,
    since each address of a wildcard host would get its own port (the first is
    reported).
    """
    listeners = await trio.open_tcp_listeners(port, host=host)
    config = _Config(handler, max_request_body, request_timeout, response_timeout)
    task_status.started(listeners[0].socket.getsockname()[1])

    async def serve(stream: trio.SocketStream) -> None:
        await _serve_connection(stream, config)

    await trio.serve_listeners(serve, listeners)


async def _serve_connection(stream: trio.SocketStream, config: _Config) -> None:
    conn = h11.Connection(h11.SERVER)
    try:
        peer = stream.socket.getpeername()
        client = (str(peer[0]), int(peer[1]))
    except (OSError, IndexError):
        client = None
    try:
        while True:
            request = await _receive_request(stream, conn, config, client)
            if request is None:
                return
            await _respond(stream, conn, request, config)
            if conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
                return
            conn.start_next_cycle()
    except (trio.BrokenResourceError, trio.ClosedResourceError, h11.ProtocolError):
        return
    except Exception:  # a bug here must not take the whole server down
        log.exception("http.connection_failed", client=client)
    finally:
        await trio.aclose_forcefully(stream)


async def _next_event(stream: trio.SocketStream, conn: h11.Connection) -> object:
    while (event := conn.next_event()) is h11.NEED_DATA:
        conn.receive_data(await stream.receive_some(_RECEIVE_SIZE))
    return event


async def _receive_request(
    stream: trio.SocketStream, conn: h11.Connection, config: _Config, client: tuple[str, int] | None
) -> HttpRequest | None:
    """The next request, or ``None`` when the connection should close (answered if need be)."""
    with trio.move_on_after(config.request_timeout):
        try:
            event = await _next_event(stream, conn)
            if not isinstance(event, h11.Request):
                return None  # ConnectionClosed (or PAUSED, which cannot happen here)
            declared = _content_length(event.headers)
            if declared is not None and declared > config.max_request_body:
                await _send_simple(stream, conn, 413, "request body too large")
                return None
            body = bytearray()
            while not isinstance(chunk := await _next_event(stream, conn), h11.EndOfMessage):
                if isinstance(chunk, h11.Data):
                    body += chunk.data
                    if len(body) > config.max_request_body:
                        await _send_simple(stream, conn, 413, "request body too large")
                        return None
        except h11.RemoteProtocolError as exc:
            await _send_simple(stream, conn, exc.error_status_hint, "bad request")
            return None
        target = event.target.decode("latin-1")
        raw_path, _, raw_query = target.partition("?")
        return HttpRequest(
            method=event.method.decode("ascii", "replace"),
            target=target,
            path=unquote_to_bytes(raw_path.encode("latin-1")).decode("utf-8", "replace"),
            query=dict(parse_qsl(raw_query, keep_blank_values=True)),
            headers=[(k.decode("latin-1"), v.decode("latin-1")) for k, v in event.headers],
            body=bytes(body),
            client=client,
        )
    return None  # timed out: just close


async def _respond(
    stream: trio.SocketStream, conn: h11.Connection, request: HttpRequest, config: _Config
) -> None:
    """Call the handler and send its response, cancelling both if the client goes away.

    Failures end here: afterwards ``conn`` tells whether the exchange completed.
    """
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_watch_peer, stream, conn, nursery.cancel_scope)
        try:
            with trio.move_on_after(config.response_timeout):
                response = await _call_handler(config.handler, request)
                await _send_response(stream, conn, request.method, response)
            if conn.our_state is h11.SEND_RESPONSE:  # the handler itself ran out of time
                with trio.move_on_after(config.request_timeout):
                    await _send_simple(stream, conn, 503, "timed out")
        except (AbortConnection, trio.BrokenResourceError, trio.ClosedResourceError, h11.ProtocolError):
            pass  # our_state is not DONE, so the caller closes the connection
        nursery.cancel_scope.cancel()


async def _watch_peer(stream: trio.SocketStream, conn: h11.Connection, scope: trio.CancelScope) -> None:
    """Buffer pipelined bytes; on end-of-stream, cancel the response in progress."""
    received = 0
    while received < _MAX_PIPELINED:
        try:
            data = await stream.receive_some(_RECEIVE_SIZE)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            data = b""
        conn.receive_data(data)
        if not data:
            scope.cancel()
            return
        received += len(data)
    await trio.sleep_forever()


async def _call_handler(handler: Handler, request: HttpRequest) -> HttpResponse:
    try:
        response = await handler(request)
        if not isinstance(response, HttpResponse):
            raise TypeError(f"handler returned {type(response).__name__}, not HttpResponse")
        return response
    except AbortConnection:
        raise
    except Exception:
        log.exception("http.handler_failed", method=request.method, path=request.path)
        return HttpResponse.text(500, "internal server error")


async def _send_response(
    stream: trio.SocketStream, conn: h11.Connection, method: str, response: HttpResponse
) -> None:
    headers = [(k.lower(), v) for k, v in response.headers]
    names = {k for k, _ in headers}
    if "date" not in names:
        headers.append(("date", email.utils.formatdate(usegmt=True)))
    if isinstance(response.body, bytes | bytearray | FileBody) and "content-length" not in names:
        headers.append(("content-length", str(len(response.body))))
    file = response.body if isinstance(response.body, FileBody) else None
    try:
        await _send(stream, conn, h11.Response(status_code=response.status, headers=headers))
        if method == "HEAD":
            pass
        elif isinstance(response.body, FileBody):
            if response.body.size:
                await _send_file(stream, conn, response.body)
        elif isinstance(response.body, bytes | bytearray):
            if response.body:
                await _send(stream, conn, h11.Data(data=response.body))
        else:
            iterator = aiter(response.body)
            closing: contextlib.AbstractAsyncContextManager[object] = (  # an async generator: close it when done
                contextlib.aclosing(cast("AsyncGenerator[bytes, None]", iterator))
                if hasattr(iterator, "aclose") else contextlib.nullcontext()
            )
            async with closing:
                async for chunk in iterator:
                    if chunk:
                        await _send(stream, conn, h11.Data(data=chunk))
    finally:
        if file is not None:
            os.close(file.fd)  # sent or not
    try:
        await _send(stream, conn, h11.EndOfMessage())
    except h11.LocalProtocolError:
        pass  # the body fell short of its content-length: our state is ERROR, the caller closes


async def _send_file(stream: trio.SocketStream, conn: h11.Connection, body: FileBody) -> None:
    """A file body: h11 hands the object back untouched (its length counted against the
    content-length) and the kernel sends it."""
    passed = conn.send_with_data_passthrough(h11.Data(data=body))  # type: ignore[arg-type]
    for piece in passed or ():
        if isinstance(piece, FileBody):
            await _sendfile(stream, piece)
        else:
            await stream.send_all(piece)


async def _sendfile(stream: trio.SocketStream, body: FileBody) -> None:
    """All of ``body`` through the socket with ``sendfile`` (the kernel copies; the loop waits while
    the socket is full).  A file that ended early closes the connection, as a short stream does."""
    sock = stream.socket
    sent = 0
    try:
        while sent < body.size:
            await trio.lowlevel.wait_writable(sock)
            try:
                count = os.sendfile(sock.fileno(), body.fd, sent, body.size - sent)
            except BlockingIOError:
                continue
            except OSError as exc:
                raise trio.BrokenResourceError(str(exc)) from exc
            if count == 0:
                raise trio.BrokenResourceError("the file ended before its declared size")
            sent += count
    finally:
        if body.sent is not None:
            body.sent(sent)


async def _send_simple(stream: trio.SocketStream, conn: h11.Connection, status: int, text: str) -> None:
    """Send a small error response and mark the connection for closing, if a response is still possible."""
    if conn.our_state not in (h11.IDLE, h11.SEND_RESPONSE):
        return
    response = HttpResponse.text(status, text, [("connection", "close")])
    with contextlib.suppress(h11.LocalProtocolError, trio.BrokenResourceError, trio.ClosedResourceError):
        await _send_response(stream, conn, "GET", response)


async def _send(stream: trio.SocketStream, conn: h11.Connection, event: h11.Event) -> None:
    data = conn.send(event)
    if data:
        await stream.send_all(data)


def _content_length(headers: Iterable[tuple[bytes, bytes]]) -> int | None:
    for name, value in headers:
        if name == b"content-length":
            return int(value)  # h11 has validated it
    return None

