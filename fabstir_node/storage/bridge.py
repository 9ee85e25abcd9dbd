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

from collections.abc import Awaitable, Callable
from typing import TypeVar
from urllib.parse import quote

import httpx
import orjson
import trio

from ..errors import StorageError, StorageNotFound, StorageUnavailable
from .base import DEFAULT_MAX_BODY_BYTES, HealthStatus, StorageStats, checked_path, effective_limit
from .bulk import Refused, bulk_get, target_of
from .direct import Direct
from .transfer import (
    RetryPolicy,
    Transient,
    attempt_timeout,
    is_transient_status,
    make_http_client,
    read_body,
    read_prefix,
)

__all__ = ["BridgeStore", "make_http_client"]

T = TypeVar("T")


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
        max_bulk_connections: int = 20,
    ) -> None:
        self.policy = RetryPolicy(max_retries, timeout_seconds, backoff_base, backoff_max)
        self.name = name
        self.base_url = base_url.rstrip("/")
        self.max_retries = max_retries
        self.timeout_seconds = timeout_seconds
        self.max_body_bytes = max_body_bytes
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self.stats = stats if stats is not None else StorageStats()
        self._client = client
        #: Bulk downloads (storage/bulk.py) open their own connections: at most this many at once.
        self._bulk = trio.CapacityLimiter(max_bulk_connections)
        self._timeout = attempt_timeout(client, timeout_seconds)

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

    async def direct(self, path: str, *, max_bytes: int | None = None) -> Direct | None:
        """Where a decode worker GETs ``path`` itself (``direct.py``): a plain ``http://`` bridge only.

        The worker's connection counts against this store's bulk connections: hold ``limiter``.
        """
        path = checked_path(path)
        where = target_of(self.object_url(path))
        if where is None:
            return None
        host, port, target = where
        self.stats.requests += 1
        return Direct("http", effective_limit(self.max_body_bytes, max_bytes), host=host, port=port,
                      target=target, limiter=self._bulk, record=lambda n: self.stats.record_bytes(self.name, n),
                      failed=lambda reason: self.stats.record_retry(self.name, path, 1, reason))

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
                    await read_prefix(response)
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
        def on_retry(number: int, reason: str) -> None:
            self.stats.record_retry(self.name, path, number, reason)

        return await self.policy.run(path, attempt, on_retry=on_retry, what="bridge")

    async def _get_once(self, path: str, url: str, limit: int | None) -> bytes:
        def record(count: int) -> None:
            self.stats.record_bytes(self.name, count)

        # a 200 with a declared length is received straight into its buffer (storage/bulk.py); any
        # other answer, or an https:// bridge, goes through httpx, which words the error
        async with self._bulk:
            body = await bulk_get(url, path, limit, record)
        if isinstance(body, Refused):
            raise _status_error(path, body.status, body.body)
        if body is not None:
            return body  # type: ignore[return-value]  # a bytearray, as read_body returns
        try:
            async with self._client.stream("GET", url, timeout=self._timeout) as response:
                if response.status_code != 200:
                    await _fail_for_status(path, response)
                return await read_body(response, path, limit, record)
        except httpx.UnsupportedProtocol as exc:
            raise StorageUnavailable(path, f"bad bridge URL: {exc}") from None
        except (httpx.TransportError, httpx.DecodingError) as exc:
            raise Transient(f"{type(exc).__name__}: {exc}") from None

    async def _put_once(self, path: str, url: str, data: bytes) -> None:
        headers = {"content-type": "application/octet-stream"}
        try:
            request = self._client.stream("PUT", url, content=data, headers=headers, timeout=self._timeout)
            async with request as response:
                if response.status_code not in (200, 201):
                    await _fail_for_status(path, response, not_found_is_final=False)
                await read_prefix(response)
        except httpx.UnsupportedProtocol as exc:
            raise StorageUnavailable(path, f"bad bridge URL: {exc}") from None
        except (httpx.TransportError, httpx.DecodingError) as exc:
            raise Transient(f"{type(exc).__name__}: {exc}") from None
        self.stats.record_bytes(self.name, len(data))


async def _fail_for_status(path: str, response: httpx.Response, *, not_found_is_final: bool = True) -> None:
    """Raise the error a non-success status means (reads at most a few KiB of the body)."""
    raise _status_error(path, response.status_code, await read_prefix(response),
                        not_found_is_final=not_found_is_final)


def _status_error(path: str, status: int, body: bytes, *, not_found_is_final: bool = True) -> Exception:
    """The error a non-success status means, given the start of its body."""
    if status == 404 and not_found_is_final:
        return StorageNotFound(path, f"bridge: {_bridge_message(body) or 'not found'}")
    if is_transient_status(status):
        return Transient(f"HTTP {status}" + (f" ({message})" if (message := _bridge_message(body)) else ""))
    return StorageUnavailable(path, f"bridge answered HTTP {status}")


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
