"""The node: everything one daemon shares between its connections.

Settings, the storage backend, the host key, the session registry, the CPU
limiter for work moved off the event loop, and the hooks metrics read.  The
CLI builds one :class:`Node` and hands it to the servers; tests build one per
test.
"""

from __future__ import annotations

import os
import time

import trio

from ..config import Settings
from ..crypto.keys import HostKey
from ..engine.uploads import UploadLimits, UploadStore
from ..logging import get_logger
from ..storage.base import Storage
from .background import Background
from .batcher import SearchBatcher
from .cache import DatabaseCache
from .decoders import DecoderPool, pool_size
from .hooks import MetricsSink, Send
from .indexer import Indexer
from .lineage import Lineage
from .loader import run_load
from .sessions import DatabaseState, Session, SessionRegistry

log = get_logger(__name__)


class Node:
    """Shared state of a running daemon."""

    def __init__(
        self, settings: Settings, *, storage: Storage | None = None, host_key: HostKey | None = None
    ) -> None:
        self.settings = settings
        #: None only until the daemon has started the embedded portal it reads through.
        self.storage = storage
        #: The key of ``encrypted_session_init``; None answers it with ENCRYPTION_NOT_SUPPORTED.
        self.host_key = host_key
        self.registry = SessionRegistry(settings.max_sessions)
        #: CPU-heavy request work (big frames, uploads, searches) runs in threads under this limiter.
        self.cpu_limiter = trio.CapacityLimiter(max(1, os.cpu_count() or 1))
        #: Decoding and index building of loads have their own tokens, so a load never makes a
        #: request wait for a thread (requests and loads then share the cores through the OS).
        self.load_limiter = trio.CapacityLimiter(max(1, os.cpu_count() or 1))
        #: Concurrent unfiltered searches on one large database run as one batch (service/batcher.py).
        #: Builder and update processes, paused while a search scans a whole database (background.py).
        self.background = Background()
        self.search_batcher = SearchBatcher(self.cpu_limiter, background=self.background)
        self.started_at = time.time()
        self.connections = 0
        #: What requests, loads and the cache report to (None: metrics off).
        self.metrics: MetricsSink | None = None
        #: Saves loaded databases to the disk cache and builds their HNSW indexes (service/indexer.py).
        self.indexer = Indexer.from_settings(settings)
        self.indexer.background = self.background
        self.cache = DatabaseCache(
            max_entries=settings.cache_entries,
            ttl_seconds=settings.cache_ttl_hours * 3600,
            max_bytes=int(settings.cache_max_memory_mb * 2**20),
            load_timeout=settings.s5_loading_timeout_minutes * 60,
            on_loaded=self.indexer.on_loaded,
        )
        #: Worker processes that decode chunks, once the daemon runs them (service/decoders.py).
        self.decoders = DecoderPool(pool_size(getattr(settings, "decode_workers", None)))
        #: Which version of each database path was loaded last; new versions reuse its graph.
        self.lineage = Lineage(self.indexer, self.cache)

    def require_storage(self) -> Storage:
        """The storage backend (only a daemon with an embedded portal lacks one, until the portal listens)."""
        if self.storage is None:
            raise RuntimeError("the node has no storage backend yet")
        return self.storage

    # --- factories ---------------------------------------------------------------

    def new_upload_store(self) -> UploadStore:
        s = self.settings
        return UploadStore(
            UploadLimits(
                max_batch=s.max_upload_batch,
                max_total=s.max_uploaded_vectors,
                max_dimensions=s.max_dimensions,
                max_metadata_bytes=s.max_metadata_bytes,
            )
        )

    async def load_database(self, session: Session, state: DatabaseState, send: Send) -> None:
        """Load the database a session named (runs in the session's nursery)."""
        await run_load(self, session, state, send)

    # --- hooks for metrics ---------------------------------------------------------

    def on_connection(self, delta: int) -> None:
        self.connections += delta
        if self.metrics is not None:
            self.metrics.on_connection(delta)

    def on_connection_refused(self, reason: str) -> None:
        if self.metrics is not None:
            self.metrics.on_connection_refused(reason)

    def on_request(self, kind: str, outcome: str, seconds: float) -> None:
        if self.metrics is not None:
            self.metrics.on_request(kind, outcome, seconds)

    def observe_search(self, seconds: float, path: str = "exact") -> None:
        if self.metrics is not None:
            self.metrics.observe_search(seconds, path)
