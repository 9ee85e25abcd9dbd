"""What every storage backend offers: the :class:`Storage` protocol and its counters.

A backend reads and writes whole objects by database path (protocol §4.1),
e.g. ``home/vector-databases/0xabc/docs/manifest.json``.  It checks each path
with :func:`~fabstir_node.formats.paths.validate_path` before any I/O, so a bad
path raises ``FabstirError(INVALID_PATH)`` and never reaches a disk or socket.
Other failures are :class:`~fabstir_node.errors.StorageError` subclasses:

* :class:`~fabstir_node.errors.StorageNotFound`: the object does not exist;
* :class:`~fabstir_node.errors.StorageUnavailable`: the backend failed, after
  its retry budget if it retries;
* :class:`~fabstir_node.errors.StorageTooLarge`: the object is bigger than the
  cap.

Backends do not know whether an object is a manifest or a chunk; the loader
maps these to client-visible codes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol, runtime_checkable

import attrs

from ..formats.paths import validate_path

__all__ = [
    "DEFAULT_MAX_BODY_BYTES",
    "HealthStatus",
    "Storage",
    "StorageStats",
    "checked_path",
    "effective_limit",
]

#: Default object size cap.  A 10,000-vector chunk of 384-d JSON is about 80 MB.
DEFAULT_MAX_BODY_BYTES = 256 * 1024 * 1024

#: ``on_retry(backend_name, path, attempt, reason)``; ``attempt`` counts from 1.
RetryHook = Callable[[str, str, int, str], None]
#: ``on_bytes(backend_name, count)``, called as payload bytes arrive or leave.
BytesHook = Callable[[str, int], None]


@attrs.frozen
class HealthStatus:
    """Result of a backend's health check; ``detail`` is a short human-readable reason."""

    ok: bool
    detail: str


@attrs.define
class StorageStats:
    """Running counters of one backend, for metrics and tests.

    ``requests`` counts operations started (``get``/``put``), ``retries`` extra
    attempts after a transient failure, ``bytes`` payload bytes read or written,
    ``errors`` operations that ended in a :class:`StorageError` (not-found
    included).  The optional hooks are called synchronously on the Trio thread;
    they must be cheap and must not raise.
    """

    requests: int = 0
    retries: int = 0
    bytes: int = 0
    errors: int = 0
    on_retry: RetryHook | None = attrs.field(default=None, repr=False)
    on_bytes: BytesHook | None = attrs.field(default=None, repr=False)

    def record_retry(self, backend: str, path: str, attempt: int, reason: str) -> None:
        self.retries += 1
        if self.on_retry is not None:
            self.on_retry(backend, path, attempt, reason)

    def record_bytes(self, backend: str, count: int) -> None:
        self.bytes += count
        if self.on_bytes is not None:
            self.on_bytes(backend, count)


@runtime_checkable
class Storage(Protocol):
    """An object store addressed by database path."""

    name: str
    stats: StorageStats

    async def get(self, path: str, *, max_bytes: int | None = None) -> bytes:
        """The object's bytes; ``StorageTooLarge`` if it exceeds ``max_bytes`` or the backend cap."""
        ...

    async def put(self, path: str, data: bytes) -> None:
        """Store ``data`` at ``path``, replacing any previous object."""
        ...

    async def health(self) -> HealthStatus:
        """Whether the backend can serve requests now (never raises)."""
        ...

    async def aclose(self) -> None:
        """Release what the backend owns."""
        ...


def checked_path(path: str) -> str:
    """``path`` if valid (protocol §4.1), else ``FabstirError(INVALID_PATH)``."""
    return validate_path(path)


def effective_limit(backend_cap: int | None, call_cap: int | None) -> int | None:
    """The smaller of two optional byte caps (``None`` = no cap)."""
    caps = [cap for cap in (backend_cap, call_cap) if cap is not None]
    return min(caps) if caps else None
