"""The shared database cache: one loaded database serves every session naming it.

Keys come from :func:`cache_key`: a digest of the storage backend, the
manifest path and the *decoded manifest content*, so an updated database
never serves stale vectors, and a session reaches an entry only after it
fetched and verified that manifest itself (owner, key, deleted) — the cache
never skips those checks.

* **Single flight**: sessions that ask for a database while it loads share
  one load (a :class:`Flight`, run in the cache's own nursery) and all get
  its progress events, replayed from the start for late joiners.  When the
  last waiting session goes away, the flight is cancelled with its downloads.
* **Eviction**: LRU over ``max_entries``, a TTL, and a byte budget counted
  from the engines' real sizes; an entry in use by a live session is never
  evicted.
* **Swaps**: an entry's engine may be replaced (e.g. by one with an HNSW
  index) while sessions hold it; they see the new engine on their next search.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Awaitable, Callable
from typing import Any

import attrs
import trio

from ..errors import ErrorCode, FabstirError
from ..logging import get_logger
from .hooks import MetricsSink

log = get_logger(__name__)

#: ``emit(event, message, **extra)``: a progress callback of one session.
Emit = Callable[..., Awaitable[None]]
#: Sending one progress event to one session may take this long before it is skipped.
_EMIT_TIMEOUT = 10.0


def cache_key(backend: str, manifest_path: str, manifest_digest: str, dtype: str) -> str:
    """The key of a loaded database (hex)."""
    text = "\x00".join((backend, manifest_path, manifest_digest, dtype))
    return hashlib.sha256(text.encode()).hexdigest()


@attrs.define(eq=False)
class CachedDatabase:
    """A loaded database; sessions search it through this handle."""

    key: str
    engine: Any = attrs.field(repr=False)
    created: float = attrs.field(factory=time.monotonic)
    last_used: float = attrs.field(factory=time.monotonic)
    users: int = 0
    #: How the engine answers unfiltered searches ("exact" or "hnsw").
    mode: str = "exact"

    @property
    def nbytes(self) -> int:
        return int(getattr(self.engine, "nbytes", 0))

    def __len__(self) -> int:
        return len(self.engine)

    @property
    def dimensions(self) -> int:
        return self.engine.dimensions

    def search(self, *args: Any, **kwargs: Any) -> Any:
        self.last_used = time.monotonic()
        return self.engine.search(*args, **kwargs)

    def search_many(self, requests: Any) -> list[Any]:
        """Unfiltered ``(query, k, threshold)`` searches together: each one's answer or error (matrix.py)."""
        self.last_used = time.monotonic()
        engine = self.engine  # one engine for the whole batch, whatever a swap does meanwhile
        many = getattr(engine, "search_many", None)
        if many is not None:
            return many(requests)
        out: list[Any] = []
        for query, k, threshold in requests:
            try:
                out.append(engine.search(query, k, threshold=threshold))
            except Exception as error:  # noqa: BLE001 - it belongs to this request
                out.append(error)
        return out

    def swap(self, engine: Any, mode: str) -> None:
        """Replace the engine atomically (one reference assignment)."""
        self.engine, self.mode = engine, mode


@attrs.define(eq=False)
class Flight:
    """One load in progress, shared by every session waiting for it."""

    key: str
    subscribers: list[Emit] = attrs.field(factory=list)
    history: list[tuple[str, str, dict[str, Any]]] = attrs.field(factory=list)
    done: trio.Event = attrs.field(factory=trio.Event)
    result: CachedDatabase | None = None
    error: FabstirError | None = None
    scope: trio.CancelScope | None = None

    async def emit(self, event: str, message: str, **extra: Any) -> None:
        """Record an event and send it to every subscriber (a slow one is skipped)."""
        self.history.append((event, message, extra))
        for send in list(self.subscribers):
            with trio.move_on_after(_EMIT_TIMEOUT):
                await send(event, message, **extra)


Loader = Callable[[Flight], Awaitable[Any]]


class DatabaseCache:
    """Loaded databases, shared by sessions; run it with ``nursery.start(cache.run)``."""

    def __init__(
        self, *, max_entries: int = 10, ttl_seconds: float = 24 * 3600, max_bytes: int = 1000 * 2**20,
        load_timeout: float = 300.0, metrics: MetricsSink | None = None,
        on_loaded: Callable[[CachedDatabase], Awaitable[None]] | None = None,
    ) -> None:
        self.max_entries = max_entries
        self.ttl_seconds = ttl_seconds
        self.max_bytes = max_bytes
        self.load_timeout = load_timeout
        self.metrics = metrics
        self.on_loaded = on_loaded
        self._entries: dict[str, CachedDatabase] = {}
        self._flights: dict[str, Flight] = {}
        self._nursery: trio.Nursery | None = None

    # --- lifecycle ---------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[DatabaseCache] = trio.TASK_STATUS_IGNORED) -> None:
        """Own the nursery that flights and background work run in; evict expired entries."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            task_status.started(self)
            while True:
                await trio.sleep(min(60.0, max(1.0, self.ttl_seconds / 4)))
                self.evict()

    def spawn(self, fn: Callable[..., Awaitable[Any]], *args: Any) -> None:
        """Run background work (index builds, persistence) in the cache's nursery."""
        assert self._nursery is not None, "the cache is not running"
        self._nursery.start_soon(fn, *args)

    # --- introspection --------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def nbytes(self) -> int:
        return sum(entry.nbytes for entry in self._entries.values())

    def entries(self) -> list[CachedDatabase]:
        return list(self._entries.values())

    def entry(self, key: str) -> CachedDatabase | None:
        """The cached database for ``key``, if the cache holds it (not counted as a use)."""
        return self._entries.get(key)

    def flights(self) -> list[Flight]:
        return list(self._flights.values())

    # --- acquire / release -------------------------------------------------------------

    async def acquire(self, key: str, loader: Loader, emit: Emit) -> CachedDatabase:
        """The cached database for ``key``, loading it (once) if needed.

        ``emit`` receives the load's progress events (all of them, even for a
        session that joins late).  The caller must :meth:`release` the result.
        """
        entry = self._entries.get(key)
        if entry is not None and not self._expired(entry):
            entry.users += 1
            entry.last_used = time.monotonic()
            self._count("cache_hit")
            return entry
        self._count("cache_miss")
        flight = self._flights.get(key)
        if flight is None:
            flight = Flight(key=key)
            self._flights[key] = flight
            assert self._nursery is not None, "the cache is not running"
            self._nursery.start_soon(self._fly, flight, loader)
        # Replay what already happened, including events that arrive while replaying; there is no
        # checkpoint between the last check and subscribing, so no event is missed or sent twice.
        replayed = 0
        while replayed < len(flight.history):
            event, message, extra = flight.history[replayed]
            await emit(event, message, **extra)
            replayed += 1
        flight.subscribers.append(emit)
        try:
            await flight.done.wait()
        finally:
            flight.subscribers.remove(emit)
            if not flight.subscribers and not flight.done.is_set() and flight.scope is not None:
                log.info("load_abandoned", cache_key=key[:16])
                flight.scope.cancel()
        if flight.error is not None:
            raise flight.error
        assert flight.result is not None
        flight.result.users += 1
        flight.result.last_used = time.monotonic()
        return flight.result

    def release(self, entry: CachedDatabase) -> None:
        """A session stopped using ``entry``."""
        entry.users = max(0, entry.users - 1)
        self.evict()

    async def _fly(self, flight: Flight, loader: Loader) -> None:
        with trio.CancelScope() as scope:
            flight.scope = scope
            try:
                with trio.fail_after(self.load_timeout):
                    engine = await loader(flight)
                entry = CachedDatabase(key=flight.key, engine=engine)
                self._entries[flight.key] = entry
                flight.result = entry
            except trio.TooSlowError:
                flight.error = FabstirError(ErrorCode.TIMEOUT, "loading the vector database timed out")
            except FabstirError as exc:
                flight.error = exc
            except Exception:  # every waiter gets a code, the daemon lives on
                log.exception("load_crashed")
                flight.error = FabstirError(
                    ErrorCode.INTERNAL_ERROR, "internal error while loading the vector database"
                )
        if scope.cancelled_caught and flight.result is None and flight.error is None:
            flight.error = FabstirError(ErrorCode.INTERNAL_ERROR, "the load was cancelled")
        self._flights.pop(flight.key, None)
        flight.done.set()
        if flight.result is not None:
            self.evict(keep=flight.key)
            self._report()
            if self.on_loaded is not None:
                self.spawn(self.on_loaded, flight.result)

    # --- eviction -------------------------------------------------------------------

    def _expired(self, entry: CachedDatabase) -> bool:
        return time.monotonic() - entry.last_used > self.ttl_seconds

    def evict(self, keep: str | None = None) -> None:
        """Drop expired entries, then least recently used ones over the count or byte budget."""
        idle = [e for e in self._entries.values() if e.users == 0 and e.key != keep]
        for entry in idle:
            if self._expired(entry):
                self._drop(entry, "expired")
        idle = sorted((e for e in self._entries.values() if e.users == 0 and e.key != keep), key=lambda e: e.last_used)
        while idle and (len(self._entries) > self.max_entries or self.nbytes > self.max_bytes):
            self._drop(idle.pop(0), "evicted")
        self._report()

    def _drop(self, entry: CachedDatabase, reason: str) -> None:
        self._entries.pop(entry.key, None)
        log.info("cache_entry_dropped", cache_key=entry.key[:16], reason=reason, bytes=entry.nbytes)

    def _count(self, what: str) -> None:
        if self.metrics is not None and hasattr(self.metrics, what):
            getattr(self.metrics, what)()

    def _report(self) -> None:
        if self.metrics is not None and hasattr(self.metrics, "cache_state"):
            self.metrics.cache_state(len(self._entries), self.nbytes)
