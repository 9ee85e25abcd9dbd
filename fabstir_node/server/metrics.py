"""Prometheus metrics of one daemon, in a registry of their own.

:class:`Metrics` owns a :class:`prometheus_client.CollectorRegistry` (never
the global one, so two daemons in one process, as in tests, never share
series) and offers one small method per thing that happens.  The code that
does the thing calls the method; nothing is sampled or guessed::

    node.metrics = Metrics(node)         # the daemon does this when metrics are on
    node.metrics.load_finished("success", 1.8, vectors=10_000)

Gauges of things the node already counts (open connections, sessions, loads
in progress) are not tracked by increments: they are read from the node at
scrape time by a custom collector, so they cannot drift from the truth.

Who calls what:

* :class:`~fabstir_node.service.node.Node` forwards ``on_connection``,
  ``on_request`` and ``observe_search`` (the WebSocket server and the
  connection service call the node).
* The storage backend's :class:`~fabstir_node.storage.base.StorageStats`
  hooks are attached here (:meth:`Metrics.watch_storage`): payload bytes and
  retries are counted where they happen, inside the backend.
* The loader calls ``load_started``, ``download``, ``index_build`` and
  ``load_finished``; the database cache (``node.cache``, whose ``metrics``
  is set here) calls ``cache_hit``, ``cache_miss`` and ``cache_state``.  Code that may run without metrics uses
  :func:`metrics_of` and gets :data:`NULL_METRICS` (every method a no-op).

All methods are cheap, synchronous and never raise on valid input; call them
from the Trio thread (prometheus_client guards each update with a plain lock,
engine-notes §3.6, so worker threads would be safe too, signal handlers would
not).  Label values are bounded: request kinds are message class names,
outcomes are ``"ok"``, ``"success"``, ``"cancelled"`` or an
:class:`~fabstir_node.errors.ErrorCode` value, anything else becomes
``"other"``.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info, ProcessCollector
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import choose_encoder

from .. import __version__
from ..engine.matrix import SEARCH_PATHS
from ..errors import ErrorCode, StorageNotFound, StorageTooLarge, StorageUnavailable
from ..service.hooks import MetricsSink
from ..service.node import Node
from ..storage.base import StorageStats

__all__ = ["NULL_METRICS", "Metrics", "NullMetrics", "metrics_of"]

# Buckets, in seconds, chosen around the plan's targets (protocol §5): search on
# 100K vectors < 100 ms; load 1K < 2 s, 10K < 5 s, 100K < 30 s, deadline 5 min.
SEARCH_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
REQUEST_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
LOAD_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0)
DOWNLOAD_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
BUILD_BUCKETS = (0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)

_CODES = frozenset(code.value for code in ErrorCode)
_LOAD_OUTCOMES = _CODES | {"success", "cancelled"}
_REQUEST_OUTCOMES = _CODES | {"ok"}
_REFUSED_REASONS = frozenset({"per_ip_limit"})
_SEARCH_PATHS = frozenset(SEARCH_PATHS)


def _bounded(value: str, allowed: frozenset[str]) -> str:
    value = str(value)
    return value if value in allowed else "other"


def _download_error_kind(error: BaseException) -> str:
    if isinstance(error, StorageNotFound):
        return "not_found"
    if isinstance(error, StorageTooLarge):
        return "too_large"
    if isinstance(error, StorageUnavailable):
        return "unavailable"
    return "other"


class Metrics:
    """Every metric of the daemon (see ``docs/operations.md`` for the list and alerts).

    ``node`` (optional) is read at scrape time for the connection, session and
    load gauges; its storage backend's counters are hooked up, and its
    database cache (``node.cache``) reports to these metrics.
    ``process=False`` leaves out the ``process_*`` series (CPU, memory, file
    descriptors), e.g. where ``/proc`` is not available.
    """

    def __init__(self, node: Node | None = None, *, process: bool = True) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self._backend = str(getattr(getattr(node, "storage", None), "name", "none"))

        Info("fabstir_build", "Version of the running fabstir-node.", registry=r).info({"version": __version__})

        # --- WebSocket server
        self.connections_opened = Counter(
            "fabstir_websocket_connections_opened", "WebSocket connections accepted.", registry=r
        )
        self.connections_refused = Counter(
            "fabstir_websocket_connections_refused", "WebSocket handshakes refused, by reason "
            "(per_ip_limit: FABSTIR_MAX_CONNECTIONS_PER_IP).", ["reason"], registry=r,
        )
        self.messages = Counter(
            "fabstir_websocket_messages", "Client messages handled, by message type and outcome "
            "(ok, or the error code of the reply).", ["type", "outcome"], registry=r,
        )
        self.request_duration = Histogram(
            "fabstir_websocket_request_duration_seconds", "Time from receiving a message to having its reply, "
            "by message type.", ["type"], buckets=REQUEST_BUCKETS, registry=r,
        )
        self.search_duration = Histogram(
            "vector_search_duration_seconds", "Time of the search itself (index or uploads), without parsing.",
            buckets=SEARCH_BUCKETS, registry=r,
        )
        self.search_answers = Counter(
            "vector_search_answers", "Searches answered, by path: graph (the HNSW graph's answer), declined "
            "(the graph did not trust its answer: the exact-quality path), exact (no graph: small databases, "
            "uploads, before the graph is ready, selective filters).", ["path"], registry=r,
        )

        # --- loading (names from the original plan, protocol §5)
        self.loads_started = Counter("vector_loading_started", "Database loads started.", registry=r)
        self.load_success = Counter("vector_loading_success", "Database loads that succeeded.", registry=r)
        self.load_failure = Counter(
            "vector_loading_failure", "Database loads that failed, timeouts included (cancelled loads are not "
            "failures).", registry=r,
        )
        self.load_timeout = Counter("vector_loading_timeout", "Database loads that hit their deadline.", registry=r)
        self.load_duration = Histogram(
            "vector_loading_duration_seconds", "Duration of a database load, by outcome (success, cancelled, "
            "or the error code).", ["outcome"], buckets=LOAD_BUCKETS, registry=r,
        )
        self.vectors_loaded = Counter("s5_vectors_loaded", "Vectors in successfully loaded databases.", registry=r)
        self.index_build_duration = Histogram(
            "vector_index_build_duration_seconds", "Time to build a search index from loaded vectors.",
            buckets=BUILD_BUCKETS, registry=r,
        )

        # --- storage
        self.download_duration = Histogram(
            "s5_download_duration_seconds", "Time to fetch one object (manifest or chunk) from storage, "
            "retries included, by backend.", ["backend"], buckets=DOWNLOAD_BUCKETS, registry=r,
        )
        self.download_errors = Counter(
            "s5_download_errors", "Fetches that failed after their retries, by backend and kind "
            "(not_found, unavailable, too_large, other).", ["backend", "kind"], registry=r,
        )
        self.download_bytes = Counter(
            "s5_download_bytes", "Payload bytes transferred by the storage backend.", ["backend"], registry=r
        )
        self.download_retries = Counter(
            "s5_download_retries", "Extra attempts after a transient storage failure.", ["backend"], registry=r
        )

        # --- index cache
        self.cache_hits = Counter("vector_index_cache_hits", "Loads answered from the index cache.", registry=r)
        self.cache_misses = Counter("vector_index_cache_misses", "Loads the index cache could not answer.", registry=r)
        self.cache_entries = Gauge("vector_index_cache_entries", "Indexes held by the index cache.", registry=r)
        self.cache_bytes = Gauge("vector_index_cache_bytes", "Bytes held by the index cache.", registry=r)

        if node is not None:
            r.register(_NodeCollector(node))
            stats = getattr(getattr(node, "storage", None), "stats", None)
            if stats is not None:
                self.watch_storage(stats)
            cache = getattr(node, "cache", None)
            if cache is not None and getattr(cache, "metrics", None) is None:
                cache.metrics = self  # the cache calls cache_hit / cache_miss / cache_state
        if process:
            ProcessCollector(registry=r)

    # --- exposition ---------------------------------------------------------------

    def exposition(self, accept: str | None = None) -> tuple[bytes, str]:
        """The scrape body and its content type (OpenMetrics if ``accept`` asks for it)."""
        encoder, content_type = choose_encoder(accept or "")
        return encoder(self.registry), content_type

    # --- called by the node ----------------------------------------------------------

    def on_connection(self, delta: int) -> None:
        """A WebSocket connection opened (+1) or closed (-1); the gauge is read from the node."""
        if delta > 0:
            self.connections_opened.inc(delta)

    def on_connection_refused(self, reason: str) -> None:
        """A handshake was refused (``per_ip_limit``)."""
        self.connections_refused.labels(_bounded(reason, _REFUSED_REASONS)).inc()

    def on_request(self, kind: str, outcome: str, seconds: float) -> None:
        """One client message handled: its type, ``"ok"`` or the reply's error code, its duration."""
        self.messages.labels(str(kind), _bounded(outcome, _REQUEST_OUTCOMES)).inc()
        self.request_duration.labels(str(kind)).observe(seconds)

    def observe_search(self, seconds: float, path: str = "exact") -> None:
        self.search_duration.observe(seconds)
        self.search_answers.labels(_bounded(path, _SEARCH_PATHS)).inc()

    # --- called by the loader -------------------------------------------------------

    def load_started(self) -> None:
        self.loads_started.inc()

    def load_finished(self, outcome: str, seconds: float, vectors: int = 0) -> None:
        """A load ended: ``outcome`` is ``"success"``, ``"cancelled"`` or the error code.

        Success adds ``vectors`` to ``s5_vectors_loaded_total``; every error
        counts as a failure, ``TIMEOUT`` also as a timeout.
        """
        outcome = _bounded(outcome, _LOAD_OUTCOMES)
        self.load_duration.labels(outcome).observe(seconds)
        if outcome == "success":
            self.load_success.inc()
            self.vectors_loaded.inc(max(0, vectors))
        elif outcome != "cancelled":
            self.load_failure.inc()
            if outcome == ErrorCode.TIMEOUT:
                self.load_timeout.inc()

    def download(self, seconds: float, error: BaseException | None = None) -> None:
        """One object fetched from storage (``error`` is None) or not (the exception raised)."""
        self.download_duration.labels(self._backend).observe(seconds)
        if error is not None:
            self.download_errors.labels(self._backend, _download_error_kind(error)).inc()

    def index_build(self, seconds: float) -> None:
        self.index_build_duration.observe(seconds)

    # --- called by the storage backend (through StorageStats hooks) -----------------

    def watch_storage(self, stats: StorageStats) -> None:
        """Count a backend's payload bytes and retries, keeping any hooks already set."""
        previous_bytes, previous_retry = stats.on_bytes, stats.on_retry

        def on_bytes(backend: str, count: int) -> None:
            self.transferred(backend, count)
            if previous_bytes is not None:
                previous_bytes(backend, count)

        def on_retry(backend: str, path: str, attempt: int, reason: str) -> None:
            self.retry(backend)
            if previous_retry is not None:
                previous_retry(backend, path, attempt, reason)

        stats.on_bytes, stats.on_retry = on_bytes, on_retry

    def transferred(self, backend: str, nbytes: int) -> None:
        if nbytes > 0:
            self.download_bytes.labels(backend).inc(nbytes)

    def retry(self, backend: str | None = None) -> None:
        self.download_retries.labels(backend or self._backend).inc()

    # --- called by the index cache ----------------------------------------------------

    def cache_hit(self) -> None:
        self.cache_hits.inc()

    def cache_miss(self) -> None:
        self.cache_misses.inc()

    def cache_state(self, entries: int, nbytes: int) -> None:
        """What the cache holds now (call after every insert and eviction)."""
        self.cache_entries.set(entries)
        self.cache_bytes.set(nbytes)


class _NodeCollector:
    """Gauges read from the node at scrape time, so they always match it."""

    def __init__(self, node: Node) -> None:
        self._node = node

    def collect(self) -> Iterator[Metric]:
        node = self._node
        yield GaugeMetricFamily(
            "fabstir_websocket_connections", "Open WebSocket connections.", value=node.connections
        )
        registry = node.registry
        yield GaugeMetricFamily("fabstir_sessions", "Open sessions (all connections).", value=len(registry))
        yield GaugeMetricFamily(
            "vector_loading_in_progress", "Database loads in progress.", value=registry.loading_count()
        )
        queue = getattr(getattr(node, "indexer", None), "queue", None)
        if queue is not None:
            yield GaugeMetricFamily(
                "fabstir_hnsw_build_queue_length", "HNSW graph builds waiting for their turn.", value=queue.waiting
            )
            yield GaugeMetricFamily(
                "fabstir_hnsw_builds_running", "HNSW graph builds running now.", value=queue.running
            )
            yield GaugeMetricFamily(
                "fabstir_hnsw_build_progress",
                "Fraction of the running HNSW graph build's vectors added (0 when none runs).",
                value=queue.progress(),
            )

    def describe(self) -> Iterator[Metric]:
        # Describing by collecting is cheap here and keeps the names checked for clashes.
        return self.collect()


class NullMetrics:
    """The :class:`Metrics` interface with every method a no-op (metrics disabled)."""

    def on_connection(self, delta: int) -> None: ...
    def on_connection_refused(self, reason: str) -> None: ...
    def on_request(self, kind: str, outcome: str, seconds: float) -> None: ...
    def observe_search(self, seconds: float, path: str = "exact") -> None: ...
    def load_started(self) -> None: ...
    def load_finished(self, outcome: str, seconds: float, vectors: int = 0) -> None: ...
    def download(self, seconds: float, error: BaseException | None = None) -> None: ...
    def index_build(self, seconds: float) -> None: ...
    def watch_storage(self, stats: StorageStats) -> None: ...
    def transferred(self, backend: str, nbytes: int) -> None: ...
    def retry(self, backend: str | None = None) -> None: ...
    def cache_hit(self) -> None: ...
    def cache_miss(self) -> None: ...
    def cache_state(self, entries: int, nbytes: int) -> None: ...


NULL_METRICS = NullMetrics()


def metrics_of(node: Node) -> MetricsSink:
    """``node.metrics``, or :data:`NULL_METRICS` when metrics are off (so callers need no ``if``)."""
    metrics = getattr(node, "metrics", None)
    return metrics if metrics is not None else NULL_METRICS
