"""A chunk read by the process that decodes it, not by the daemon: where to read it, and the read.

Through the daemon, every byte of a load is received by its event loop and then written down a
decode worker's pipe (``service/decoders.py``): at 1M × 384 that is 3.6 GB through the daemon
twice, ~8 s of its CPU while other sessions wait for their searches.  A storage that can say where
an object's bytes are — a plain ``http://`` URL (the bridge, :meth:`BridgeStore.direct`) or a file
the store has opened and checked (the local store, :meth:`LocalStore.direct`) — hands the worker a
:class:`Direct` instead, and the worker reads the bytes itself with :func:`fetch` (one copy, by the
kernel, into the buffer the decoder reads).

Policy stays with the storage and the daemon: the worker makes **one attempt** and reports any
failure (a status other than 200, a body it does not take, a network error, a size over the cap) as
:class:`DirectFailed`; the daemon then reads the object the ordinary way (``storage.get``), whose
retries, limits and error words answer.  A ``Direct`` names nothing the daemon did not choose: the
bridge's own URL for a checked path, or ``/proc/<daemon>/fd/<n>`` of a file the local store opened
after its own path checks (the worker opens that descriptor's file, not a path it could be tricked
into following).
"""

from __future__ import annotations

import os
import socket
import time
from typing import Any

import attrs
import h11

from .plain_http import MAX_HEAD, declared_size, request_bytes

__all__ = ["Direct", "DirectFailed", "fetch"]

#: Bytes asked of the socket or file per read.
_READ = 4 * 1024 * 1024


class DirectFailed(Exception):
    """The worker's one attempt did not get the whole object; the daemon reads it the ordinary way."""


@attrs.frozen
class Direct:
    """Where a worker reads an object: ``kind`` "http" (``host``, ``port``, ``target``) or "file"
    (``file``, a ``/proc/<pid>/fd/<n>`` path); at most ``limit`` bytes."""

    kind: str
    limit: int | None
    host: str = ""
    port: int = 0
    target: str = ""
    file: str = ""
    # the daemon's side, not sent: closes the store's descriptor once the job is over; the connection
    # limit the worker's GET counts against; counts the bytes read in the store's stats; counts a
    # failed read (the ordinary read that follows is a retry)
    close: Any = attrs.field(default=None, eq=False, repr=False)
    limiter: Any = attrs.field(default=None, eq=False, repr=False)
    record: Any = attrs.field(default=None, eq=False, repr=False)
    failed: Any = attrs.field(default=None, eq=False, repr=False)

    def spec(self) -> dict[str, Any]:
        """What the worker is told (a frame header's ``direct``)."""
        return {"kind": self.kind, "limit": self.limit, "host": self.host, "port": self.port,
                "target": self.target, "file": self.file}


def fetch(spec: dict[str, Any], timeout: float) -> bytearray:
    """The object a :meth:`Direct.spec` names, in one attempt; :class:`DirectFailed` otherwise."""
    limit = spec.get("limit")
    try:
        if spec["kind"] == "file":
            return _read_file(spec["file"], limit)
        if spec["kind"] == "http":
            return _get(spec["host"], int(spec["port"]), spec["target"], limit, timeout)
    except (OSError, h11.ProtocolError, ValueError) as exc:
        raise DirectFailed(f"{type(exc).__name__}: {exc}") from None
    raise DirectFailed(f"unknown kind {spec.get('kind')!r}")


def _fill(read_into: Any, size: int, prefix: bytes = b"") -> bytearray:
    """``size`` bytes: ``prefix``, then what ``read_into`` gives (straight into the buffer)."""
    body = bytearray(size)
    view, got = memoryview(body), len(prefix)
    view[:got] = prefix
    while got < size:
        count = read_into(view[got : got + _READ])
        if not count:
            raise DirectFailed(f"ended after {got} of {size} bytes")
        got += count
    view.release()
    return body


def _read_file(name: str, limit: int | None) -> bytearray:
    with open(name, "rb", buffering=0) as file:
        size = os.fstat(file.fileno()).st_size
        if limit is not None and size > limit:
            raise DirectFailed("larger than the cap")
        body = _fill(file.readinto, size)
        if file.read(1):
            raise DirectFailed("the file grew while it was read")
        return body


def _get(host: str, port: int, target: str, limit: int | None, timeout: float) -> bytearray:
    """One GET, all of it (head and body) within ``timeout`` seconds, as the store's attempts are."""
    deadline = time.monotonic() + timeout

    def remaining() -> float:
        left = deadline - time.monotonic()
        if left <= 0:
            raise DirectFailed(f"not complete within {timeout:g} s")
        return left

    def recv_into(view: memoryview) -> int:
        sock.settimeout(remaining())
        return sock.recv_into(view)

    with socket.create_connection((host, port), timeout=timeout) as sock:
        connection = h11.Connection(h11.CLIENT, max_incomplete_event_size=MAX_HEAD)
        sock.sendall(request_bytes(connection, host, port, target))
        while True:
            event = connection.next_event()
            if event is h11.NEED_DATA:
                sock.settimeout(remaining())
                data = sock.recv(65536)
                if not data:
                    raise DirectFailed("closed before the response head")
                connection.receive_data(data)
            elif isinstance(event, h11.InformationalResponse):
                continue
            elif isinstance(event, h11.Response) and event.status_code == 200:
                break
            else:
                raise DirectFailed(f"answered {getattr(event, 'status_code', type(event).__name__)}")
        size = declared_size(event)
        if size is None or size < 0 or (limit is not None and size > limit):
            raise DirectFailed("a body this path does not take (coded, chunked or over the cap)")
        early, _ = connection.trailing_data  # body bytes that came with the head
        return _fill(recv_into, size, bytes(early[:size]))
