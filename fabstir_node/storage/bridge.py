"""A storage backend that talks to the Fabstir S5 bridge over HTTP (protocol §4.5).

``GET {base}/s5/fs/{path}`` answers 200 with the raw bytes, 404 with a JSON
body ``{error, path, message}``, and 503 while the bridge is starting.
``PUT`` stores a body (201), ``GET /health`` reports readiness.

Failure policy of :class:`BridgeStore`, per operation:

* 404 → :class:`StorageNotFound` at once.
* 5xx, 408, 429, connection failures, timeouts, and truncated bodies are
  transient: the attempt is repeated up to ``max_retries`` more times after a
  full-jitter exponential backoff, then :class:`StorageUnavailable`.
* Any other status → :class:`StorageUnavailable` at once.
* A ``content-length`` over the cap, or a body that grows past it while
  streaming → :class:`StorageTooLarge` at once (the connection is dropped,
  so the rest is never downloaded).

Each attempt runs under ``trio.fail_after(timeout_seconds)`` as well as httpx's
own connect/read/write/pool timeouts, so a body that trickles in forever fails
its attempt.  Cancelling an operation (a client went away) cancels the HTTP
request; httpcore shields its own clean-up, so no pool slot is lost.

The ``httpx.AsyncClient`` is shared by the daemon and owned by it: build it with
:func:`make_http_client` and close it yourself; :meth:`BridgeStore.aclose` does
not close it.
"""

from __future__ import annotations

import contextlib
import math
import random
from collections.abc import Awaitable, Callable
from typing import TypeVar
from urllib.parse import quote

import httpx
import orjson
import trio

from .. import __version__
from ..errors import StorageError, StorageNotFound, StorageTooLarge, StorageUnavailable
from .base import DEFAULT_MAX_BODY_BYTES, HealthStatus, StorageStats, checked_path, effective_limit

__all__ = ["BridgeStore", "make_http_client"]

T = TypeVar("T")

#: Statuses worth another attempt besides 5xx.
_RETRY_STATUSES = frozenset({408, 429})
#: How much of an error body we read (for the message) before dropping the connection.
_ERROR_BODY_BYTES = 4096


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
    followed and proxy environment variables are ignored (``trust_env=False``):
    the bridge runs beside the node.
    """
    limits = httpx.Limits(
        max_connections=max_connections,
        max_keepalive_connections=(
            max_connections if max_keepalive_connections is None else max_keepalive_connections
        ),
        keepalive_expiry=keepalive_expiry,
    )
    timeouts = httpx.Timeout(timeout, connect=min(connect_timeout, timeout), pool=pool_timeout)
    return httpx.AsyncClient(
        limits=limits,
        timeout=timeouts,
        follow_redirects=False,
        trust_env=False,
        headers={"user-agent": f"fabstir-node/{__version__}"},
    )


class _Transient(Exception):
    """An attempt failed in a way another attempt might not."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class BridgeStore:
    """Objects read and written through an S5 bridge (see the module docstring)."""

    def __init__(
        self,
        base_url: str,
        *,
        client: httpx.AsyncClient,
        name: str = "s5-bridge",
        max_retries: int = 3,
        timeout_seconds: float = 30.0,
        max_body_bytes: int | None = DEFAULT_MAX_BODY_BYTES,
        backoff_base: float = 0.25,
        backoff_max: float = 5.0,
        stats: StorageStats | None = None,
    ) -> None:
        if max_retries < 0 or timeout_seconds <= 0 or backoff_base < 0 or backoff_max < 0:
            raise ValueError("max_retries, backoff must be >= 0 and timeout_seconds > 0")
        self.name = name
        self.base_url = base_url.rstrip("/")
        self.max_retries = max_retries
        self.timeout_seconds = timeout_seconds
        self.max_body_bytes = max_body_bytes
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self.stats = stats if stats is not None else StorageStats()
        self._client = client
        configured = client.timeout
        self._timeout = httpx.Timeout(
            timeout_seconds,
            connect=min(configured.connect or math.inf, timeout_seconds),
            pool=min(configured.pool or math.inf, timeout_seconds),
        )

    def __repr__(self) -> str:
        return f"BridgeStore({self.base_url!r}, name={self.name!r})"

    def object_url(self, path: str) -> str:
        """``{base}/s5/fs/{path}`` with each segment percent-encoded."""
        return f"{self.base_url}/s5/fs/" + "/".join(quote(segment, safe="") for segment in path.split("/"))

    async def get(self, path: str, *, max_bytes: int | None = None) -> bytes:
        path = checked_path(path)
        limit = effective_limit(self.max_body_bytes, max_bytes)
        url = self.object_url(path)
        return await self._operation(path, lambda: self._get_once(path, url, limit))

    async def put(self, path: str, data: bytes) -> None:
        path = checked_path(path)
        url = self.object_url(path)
        data = bytes(data)
        await self._operation(path, lambda: self._put_once(path, url, data))

    async def health(self) -> HealthStatus:
        """``GET /health`` answered 200 within ``timeout_seconds`` (one attempt)."""
        try:
            with trio.fail_after(self.timeout_seconds):
                url = f"{self.base_url}/health"
                async with self._client.stream("GET", url, timeout=self._timeout) as response:
                    await _read_prefix(response)
        except trio.TooSlowError:
            return HealthStatus(False, f"bridge did not answer /health within {self.timeout_seconds} s")
        except httpx.HTTPError as exc:
            return HealthStatus(False, f"bridge unreachable: {type(exc).__name__}")
        status = response.status_code
        return HealthStatus(status == 200, f"bridge /health answered HTTP {status}")

    async def aclose(self) -> None:
        """Nothing to release: the HTTP client belongs to the caller."""

    # --- attempts -------------------------------------------------------------

    async def _operation(self, path: str, attempt: Callable[[], Awaitable[T]]) -> T:
        self.stats.requests += 1
        try:
            return await self._with_retries(path, attempt)
        except StorageError:
            self.stats.errors += 1
            raise

    async def _with_retries(self, path: str, attempt: Callable[[], Awaitable[T]]) -> T:
        reason = ""
        for number in range(self.max_retries + 1):
            if number:
                self.stats.record_retry(self.name, path, number, reason)
                await trio.sleep(self._backoff(number))
            try:
                with trio.fail_after(self.timeout_seconds):
                    return await attempt()
            except _Transient as exc:
                reason = exc.reason
            except trio.TooSlowError:
                reason = f"no complete answer within {self.timeout_seconds} s"
        raise StorageUnavailable(path, f"bridge failed {self.max_retries + 1} times; last: {reason}")

    def _backoff(self, retry: int) -> float:
        """Full jitter: uniform in [0, min(max, base * 2**(retry-1))]."""
        return random.uniform(0.0, min(self.backoff_max, self.backoff_base * 2 ** (retry - 1)))

    async def _get_once(self, path: str, url: str, limit: int | None) -> bytes:
        try:
            async with self._client.stream("GET", url, timeout=self._timeout) as response:
                if response.status_code != 200:
                    await _fail_for_status(path, response)
                declared = _declared_length(response)
                if limit is not None and declared is not None and declared > limit:
                    raise StorageTooLarge(path, f"object is {declared} bytes, cap is {limit}")
                body = bytearray()
                async with contextlib.aclosing(response.aiter_bytes()) as chunks:
                    async for chunk in chunks:
                        body += chunk
                        self.stats.record_bytes(self.name, len(chunk))
                        if limit is not None and len(body) > limit:
                            raise StorageTooLarge(path, f"object exceeds the cap of {limit} bytes")
                return bytes(body)
        except httpx.UnsupportedProtocol as exc:
            raise StorageUnavailable(path, f"bad bridge URL: {exc}") from None
        except (httpx.TransportError, httpx.DecodingError) as exc:
            raise _Transient(f"{type(exc).__name__}: {exc}") from None

    async def _put_once(self, path: str, url: str, data: bytes) -> None:
        headers = {"content-type": "application/octet-stream"}
        try:
            request = self._client.stream("PUT", url, content=data, headers=headers, timeout=self._timeout)
            async with request as response:
                if response.status_code not in (200, 201):
                    await _fail_for_status(path, response, not_found_is_final=False)
                await _read_prefix(response)
        except httpx.UnsupportedProtocol as exc:
            raise StorageUnavailable(path, f"bad bridge URL: {exc}") from None
        except (httpx.TransportError, httpx.DecodingError) as exc:
            raise _Transient(f"{type(exc).__name__}: {exc}") from None
        self.stats.record_bytes(self.name, len(data))


async def _fail_for_status(path: str, response: httpx.Response, *, not_found_is_final: bool = True) -> None:
    """Raise the error a non-success status means (reads at most a few KiB of the body)."""
    status = response.status_code
    body = await _read_prefix(response)
    if status == 404 and not_found_is_final:
        raise StorageNotFound(path, f"bridge: {_bridge_message(body) or 'not found'}")
    if status >= 500 or status in _RETRY_STATUSES:
        raise _Transient(f"HTTP {status}" + (f" ({message})" if (message := _bridge_message(body)) else ""))
    raise StorageUnavailable(path, f"bridge answered HTTP {status}")


async def _read_prefix(response: httpx.Response, limit: int = _ERROR_BODY_BYTES) -> bytes:
    """Up to about ``limit`` bytes of the body; a longer body is abandoned (closing the connection)."""
    data = bytearray()
    async with contextlib.aclosing(response.aiter_bytes()) as chunks:
        async for chunk in chunks:
            data += chunk
            if len(data) >= limit:
                break
    return bytes(data[:limit])


def _bridge_message(body: bytes) -> str:
    """The ``message`` (or ``error``) of a bridge JSON error body, shortened; '' if none."""
    try:
        obj = orjson.loads(body)
    except orjson.JSONDecodeError:
        return ""
    if not isinstance(obj, dict):
        return ""
    text = obj.get("message") or obj.get("error")
    return text[:200] if isinstance(text, str) else ""


def _declared_length(response: httpx.Response) -> int | None:
    value = response.headers.get("content-length")
    if value is None or "content-encoding" in response.headers:
        return None
    try:
        return int(value)
    except ValueError:
        return None
