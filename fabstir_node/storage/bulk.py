"""A GET whose body is received straight into its own buffer: the load path's downloads.

A database's chunks are tens of megabytes each (36 MB of CBOR for the SDK's 10,000 × 384), and a
million vectors is 3.6 GB.  Through httpx, every byte is copied four times in Python-held code —
into h11's receive buffer, out of it, into httpx's piece, into the body — on the event loop, whose
thread the decoding threads then wait for.  Measured here (2 vCPU, 2026-12-06, 362 MB from a
loopback bridge, four at a time): httpx 0.77-0.89 s and 0.53-0.62 s of CPU; this path 0.70-0.74 s
and 0.36 s of CPU, nearly all of it the kernel's copy, with the GIL released.

So for plain ``http://`` URLs (a bridge beside the node) :func:`bulk_get` sends the request itself
and parses the response head with h11 (the same sans-io parser httpx uses), then, for a ``200``
with a ``Content-Length`` and no transfer or content coding, receives the body with
``recv_into`` into a buffer of that size.  Another status comes back as :class:`Refused` (the
status and the first few KiB of its body, for the caller to word the error); a body of unknown
length (chunked) is taken piece by piece from h11, up to the cap; encoded bodies and ``https://``
are left to the caller's httpx path (None), which decodes them as before.  One connection per
object (``Connection: close``): a chunk is large enough that a connection's set-up is noise, and
no pooled connection is left in an unknown state.
Network failures raise :class:`~.transfer.Transient` (retried by the caller's policy, which also
holds the deadline); a declared size over the cap raises ``StorageTooLarge``.
"""

from __future__ import annotations

from collections.abc import Callable

import attrs
import h11
import trio

from ..errors import StorageTooLarge
from .plain_http import MAX_HEAD, declared_size, request_bytes, target_of
from .transfer import Transient

__all__ = ["Refused", "bulk_get"]

#: Bytes asked of the socket per receive.
RECEIVE = 4 * 1024 * 1024
#: What a failed exchange raises (then retried by the caller's policy as Transient).
_NETWORK_ERRORS = (OSError, trio.BrokenResourceError, h11.RemoteProtocolError)
#: Bytes of a refusal's body kept for its message.
REFUSAL_BODY = 4096


@attrs.frozen
class Refused:
    """A status other than 200, with the start of its body."""

    status: int
    body: bytes


async def bulk_get(
    url: str, path: str, limit: int | None, on_bytes: Callable[[int], None] | None = None
) -> bytearray | Refused | None:
    """The body of ``GET url`` (a ``bytearray``), its refusal, or None: the caller's httpx path answers."""
    where = target_of(url)
    if where is None:
        return None
    host, port, target = where
    try:
        stream = await trio.open_tcp_stream(host, port)
    except OSError as exc:
        raise Transient(f"connect: {exc}") from None
    async with stream:
        return await _exchange(stream, host, port, target, path, limit, on_bytes)


async def _exchange(
    stream: trio.SocketStream, host: str, port: int, target: str, path: str, limit: int | None,
    on_bytes: Callable[[int], None] | None,
) -> bytearray | Refused | None:
    connection = h11.Connection(h11.CLIENT, max_incomplete_event_size=MAX_HEAD)
    try:
        await stream.send_all(request_bytes(connection, host, port, target))
        response = await _head(stream, connection)
    except _NETWORK_ERRORS as exc:
        raise Transient(f"{type(exc).__name__}: {exc}") from None
    if response is None:
        return None
    if response.status_code != 200:
        try:
            return Refused(response.status_code, await _prefix(stream, connection))
        except _NETWORK_ERRORS:
            return Refused(response.status_code, b"")
    size = declared_size(response)
    if size is None:
        return None
    if size < 0:
        return await _pieces(stream, connection, path, limit, on_bytes)
    if limit is not None and size > limit:
        raise StorageTooLarge(path, f"object is {size} bytes, cap is {limit}")
    body = bytearray(size)
    view = memoryview(body)
    early, _ = connection.trailing_data  # body bytes that came with the head
    got = min(len(early), size)
    view[:got] = early[:got]
    if on_bytes is not None and got:
        on_bytes(got)
    sock = stream.socket
    try:
        while got < size:
            count = await sock.recv_into(view[got:], min(size - got, RECEIVE))
            if not count:
                raise Transient(f"{path}: the connection closed after {got} of {size} bytes")
            got += count
            if on_bytes is not None:
                on_bytes(count)
    except OSError as exc:
        raise Transient(f"{type(exc).__name__}: {exc}") from None
    finally:
        view.release()
    return body


async def _head(stream: trio.SocketStream, connection: h11.Connection) -> h11.Response | None:
    """The response head (None for an informational-only or unexpected event stream)."""
    while True:
        event = connection.next_event()
        if event is h11.NEED_DATA:
            data = await stream.receive_some(65536)
            if not data:
                raise trio.BrokenResourceError("the connection closed before the response head")
            connection.receive_data(data)
            continue
        if isinstance(event, h11.InformationalResponse):
            continue
        return event if isinstance(event, h11.Response) else None


async def _prefix(stream: trio.SocketStream, connection: h11.Connection) -> bytes:
    """Up to :data:`REFUSAL_BODY` bytes of a response's body."""
    body = bytearray()
    while len(body) < REFUSAL_BODY:
        event = connection.next_event()
        if event is h11.NEED_DATA:
            data = await stream.receive_some(65536)
            if not data:
                break
            connection.receive_data(data)
        elif isinstance(event, h11.Data):
            body += event.data
        else:
            break
    return bytes(body[:REFUSAL_BODY])


async def _pieces(
    stream: trio.SocketStream, connection: h11.Connection, path: str, limit: int | None,
    on_bytes: Callable[[int], None] | None,
) -> bytearray:
    """A body of unknown length, decoded by h11, refused as soon as it passes ``limit``."""
    pieces: list[bytes] = []
    size = 0
    try:
        while True:
            event = connection.next_event()
            if event is h11.NEED_DATA:
                data = await stream.receive_some(RECEIVE)
                if not data:
                    raise Transient(f"{path}: the connection closed after {size} bytes of the body")
                connection.receive_data(data)
            elif isinstance(event, h11.Data):
                pieces.append(bytes(event.data))
                size += len(event.data)
                if on_bytes is not None:
                    on_bytes(len(event.data))
                if limit is not None and size > limit:
                    raise StorageTooLarge(path, f"object exceeds the cap of {limit} bytes")
            elif isinstance(event, h11.EndOfMessage):
                return bytearray(b"".join(pieces))
            else:
                raise Transient(f"{path}: unexpected {type(event).__name__} in the body")
    except _NETWORK_ERRORS as exc:
        raise Transient(f"{type(exc).__name__}: {exc}") from None
