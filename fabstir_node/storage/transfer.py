"""HTTP transfers shared by the storage clients (the S5 bridge, S5 portals).

* :func:`make_http_client` -- the daemon's one ``httpx.AsyncClient``: explicit
  pool limits, finite timeouts, no redirects followed, no proxy variables.
* :class:`RetryPolicy` -- how one operation is retried: up to ``max_retries``
  more attempts after a :class:`Transient` failure or a missed per-attempt
  deadline (``trio.fail_after(timeout_seconds)``), each after a full-jitter
  exponential backoff; then :class:`~fabstir_node.errors.StorageUnavailable`.
* :func:`read_body` -- a response body read as it streams, refused with
  :class:`~fabstir_node.errors.StorageTooLarge` as soon as its declared or
  actual length passes the cap (the connection is dropped, the rest is never
  downloaded); :func:`read_prefix` reads just enough of an error body.
* :func:`is_transient_status` -- 5xx, 408 and 429 are worth another attempt.

Nothing here knows what a bridge or a portal is.
"""

from __future__ import annotations

import contextlib
import math
import random
from collections.abc import AsyncGenerator, Awaitable, Callable
from typing import TypeVar, cast

import attrs
import httpx
import trio

from ..errors import StorageTooLarge, StorageUnavailable
from .plain_http import USER_AGENT

__all__ = [
    "RetryPolicy",
    "Transient",
    "attempt_timeout",
    "declared_length",
    "is_transient_status",
    "make_http_client",
    "read_body",
    "read_prefix",
]

T = TypeVar("T")

#: Statuses worth another attempt besides 5xx.
RETRY_STATUSES = frozenset({408, 429})
#: How much of an error body we read (for the message) before dropping the connection.
ERROR_BODY_BYTES = 4096


#: Bytes httpcore asks the socket for per read (its default is 64 KiB).  Measured on 362 MB of chunks
#: through a loopback bridge (2 vCPU, 2026-12-06): the client's user CPU 0.40 -> 0.17 s and the wall
#: time 1.1 -> 0.9 s at 1 MiB; the CPU is the event loop's, which the decoding threads wait for.
READ_SIZE = 1024 * 1024


def _read_larger_pieces() -> None:
    """Make httpcore's HTTP/1.1 connections read :data:`READ_SIZE` at a time.

    httpcore has no setting for it, only the class attribute ``READ_NUM_BYTES`` that every read
    uses; it is left alone if a release no longer has it.
    """
    from httpcore._async import http11

    connection = getattr(http11, "AsyncHTTP11Connection", None)
    if connection is not None and isinstance(getattr(connection, "READ_NUM_BYTES", None), int):
        connection.READ_NUM_BYTES = max(connection.READ_NUM_BYTES, READ_SIZE)


def make_http_client(
    *,
    max_connections: int = 20,
    max_keepalive_connections: int | None = None,
    keepalive_expiry: float = 5.0,
    timeout: float = 30.0,
    connect_timeout: float = 10.0,
    pool_timeout: float = 10.0,
) -> httpx.AsyncClient:
    """The daemon's shared HTTP client, with explicit limits and finite timeouts.

    ``timeout`` bounds each read and write, ``connect_timeout`` each connect,
    ``pool_timeout`` the wait for a free connection.  Redirects are not
    followed (a caller that follows them decides what to send where) and
    proxy environment variables are ignored (``trust_env=False``).
    """
    limits = httpx.Limits(
        max_connections=max_connections,
        max_keepalive_connections=(
            max_connections if max_keepalive_connections is None else max_keepalive_connections
        ),
        keepalive_expiry=keepalive_expiry,
    )
    timeouts = httpx.Timeout(timeout, connect=min(connect_timeout, timeout), pool=pool_timeout)
    _read_larger_pieces()
    return httpx.AsyncClient(
        limits=limits,
        timeout=timeouts,
        follow_redirects=False,
        trust_env=False,
        headers={"user-agent": USER_AGENT},
    )


def attempt_timeout(client: httpx.AsyncClient, timeout_seconds: float) -> httpx.Timeout:
    """The client's timeouts, none longer than one attempt's deadline."""
    configured = client.timeout
    return httpx.Timeout(
        timeout_seconds,
        connect=min(configured.connect or math.inf, timeout_seconds),
        pool=min(configured.pool or math.inf, timeout_seconds),
    )


class Transient(Exception):
    """An attempt failed in a way another attempt might not."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@attrs.frozen
class RetryPolicy:
    """Attempts, per-attempt deadline and full-jitter backoff of one operation."""

    max_retries: int = 3
    timeout_seconds: float = 30.0
    backoff_base: float = 0.25
    backoff_max: float = 5.0

    def __attrs_post_init__(self) -> None:
        if self.max_retries < 0 or self.timeout_seconds <= 0 or self.backoff_base < 0 or self.backoff_max < 0:
            raise ValueError("max_retries, backoff must be >= 0 and timeout_seconds > 0")

    def backoff(self, retry: int) -> float:
        """Full jitter: uniform in [0, min(max, base * 2**(retry-1))]."""
        return random.uniform(0.0, min(self.backoff_max, self.backoff_base * 2 ** (retry - 1)))

    async def run(
        self,
        path: str,
        attempt: Callable[[], Awaitable[T]],
        *,
        on_retry: Callable[[int, str], None],
        what: str,
    ) -> T:
        """``await attempt()`` until it succeeds, at most ``max_retries + 1`` times.

        :class:`Transient` and a missed deadline are retried (``on_retry(number,
        reason)`` is called before each retry); any other exception ends the
        operation at once.  When the attempts run out, ``StorageUnavailable(path,
        "{what} failed N times; last: reason")``.
        """
        reason = ""
        for number in range(self.max_retries + 1):
            if number:
                on_retry(number, reason)
                await trio.sleep(self.backoff(number))
            try:
                with trio.fail_after(self.timeout_seconds):
                    return await attempt()
            except Transient as exc:
                reason = exc.reason
            except trio.TooSlowError:
                reason = f"no complete answer within {self.timeout_seconds} s"
        raise StorageUnavailable(path, f"{what} failed {self.max_retries + 1} times; last: {reason}")


def is_transient_status(status: int) -> bool:
    return status >= 500 or status in RETRY_STATUSES


def declared_length(response: httpx.Response) -> int | None:
    """The ``content-length`` of an unencoded body, if it has a usable one."""
    value = response.headers.get("content-length")
    if value is None or "content-encoding" in response.headers:
        return None
    try:
        return int(value)
    except ValueError:
        return None


async def read_body(
    response: httpx.Response,
    path: str,
    limit: int | None,
    on_bytes: Callable[[int], None] | None = None,
) -> bytes:
    """The whole body, or ``StorageTooLarge`` as soon as it is known to exceed ``limit``."""
    declared = declared_length(response)
    if limit is not None and declared is not None and declared > limit:
        raise StorageTooLarge(path, f"object is {declared} bytes, cap is {limit}")
    encoded = response.headers.get("content-encoding", "identity").strip().lower() not in ("", "identity")
    if declared is not None and not encoded:
        return await _read_declared(response, path, declared, on_bytes)
    # length unknown: pieces joined once at the end (growing one bytearray re-copies it again and
    # again, a third of the receiving CPU for a 36 MB chunk)
    pieces: list[bytes] = []
    size = 0
    async with contextlib.aclosing(_body_chunks(response)) as chunks:
        async for chunk in chunks:
            pieces.append(chunk)
            size += len(chunk)
            if on_bytes is not None:
                on_bytes(len(chunk))
            if limit is not None and size > limit:
                raise StorageTooLarge(path, f"object exceeds the cap of {limit} bytes")
    return b"".join(pieces)


async def _read_declared(
    response: httpx.Response, path: str, declared: int, on_bytes: Callable[[int], None] | None
) -> bytes:
    """A body of a known length, copied piece by piece into one buffer of that size.

    Each 64 KB piece is freed as soon as it is copied, so a 36 MB chunk costs
    one 36 MB buffer (its own mapping, returned to the system when freed)
    instead of 36 MB of small pieces scattered over the heap plus the joined
    copy.  The buffer is returned as it is, a ``bytearray`` (every reader of
    stored bytes takes any bytes-like object).
    """
    body = bytearray(declared)
    view = memoryview(body)
    size = 0
    async with contextlib.aclosing(_body_chunks(response)) as chunks:
        async for chunk in chunks:
            end = size + len(chunk)
            if end > declared:  # more than Content-Length promised (h11 refuses this first)
                raise StorageTooLarge(path, f"object sent more than its declared {declared} bytes")
            view[size:end] = chunk
            size = end
            if on_bytes is not None:
                on_bytes(len(chunk))
    if size != declared:  # h11 raises on a short body first; this is a second guard
        raise httpx.RemoteProtocolError(f"{path}: {size} of {declared} bytes")
    view.release()
    return body  # type: ignore[return-value]  # a bytearray: copying it to bytes would double the peak


def _body_chunks(response: httpx.Response) -> AsyncGenerator[bytes, None]:
    """The body's chunks as the async generator httpx makes (typed as a mere AsyncIterator)."""
    return cast("AsyncGenerator[bytes, None]", response.aiter_bytes())


async def read_prefix(response: httpx.Response, limit: int = ERROR_BODY_BYTES) -> bytes:
    """Up to about ``limit`` bytes of the body; a longer body is abandoned (closing the connection)."""
    data = bytearray()
    async with contextlib.aclosing(_body_chunks(response)) as chunks:
        async for chunk in chunks:
            data += chunk
            if len(data) >= limit:
                break
    return bytes(data[:limit])
