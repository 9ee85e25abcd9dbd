"""Sessions: what a client set up with ``session_init`` and what it holds.

A :class:`Session` belongs to exactly one WebSocket connection and ends when
that connection closes; its uploaded vectors, its loaded database and its
session key are dropped then.  Sessions are looked up by ``session_id``
*within* a connection: the same id on another connection is another session,
so no client can reach a session it did not open.

:class:`SessionRegistry` is the daemon-wide view (counts for limits and
metrics); it owns no data of its own.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import attrs
import trio

from ..errors import ErrorCode, FabstirError
from ..protocol.messages import VectorDatabaseRef
from .ratelimit import SlidingWindow

if TYPE_CHECKING:
    from ..engine.matrix import VectorMatrix
    from ..engine.uploads import UploadStore


class LoadStatus(enum.StrEnum):
    NOT_STARTED = "not_started"
    LOADING = "loading"
    LOADED = "loaded"
    ERROR = "error"


@attrs.define(eq=False)
class DatabaseState:
    """The database a session named, and how far its load got."""

    ref: VectorDatabaseRef
    #: ``client_address`` recovered from the encrypted init that named this database (None: plaintext).
    signer: str | None = None
    status: LoadStatus = LoadStatus.NOT_STARTED
    error: FabstirError | None = None
    engine: VectorMatrix | None = None
    vector_count: int = 0
    chunks_total: int = 0
    chunks_done: int = 0
    started_at: float = attrs.field(factory=time.monotonic)
    finished_at: float | None = None
    #: Cancels this load (set by the loader task when it starts).
    cancel_scope: trio.CancelScope | None = attrs.field(default=None, repr=False)
    #: Set once the load reached a terminal status.
    done: trio.Event = attrs.field(factory=trio.Event, repr=False)
    #: Gives the loaded database back to the shared cache (set by the loader).
    release: Callable[[], None] | None = attrs.field(default=None, repr=False)

    def same_database(self, ref: VectorDatabaseRef) -> bool:
        return (
            self.ref.manifest_path == ref.manifest_path
            and self.ref.user_address.lower() == ref.user_address.lower()
            and self.ref.directory_key == ref.directory_key
        )

    def finish(self, *, engine: VectorMatrix | None = None, error: FabstirError | None = None) -> None:
        self.finished_at = time.monotonic()
        if error is not None:
            self.status, self.error, self.engine = LoadStatus.ERROR, error, None
        else:
            self.status, self.engine = LoadStatus.LOADED, engine
        self.done.set()

    def cancel(self) -> None:
        if self.cancel_scope is not None:
            self.cancel_scope.cancel()

    def drop(self) -> None:
        """The session no longer uses this database: cancel its load, give back its engine."""
        self.cancel()
        release, self.release, self.engine = self.release, None, None
        if release is not None:
            release()

    def summary(self) -> dict[str, Any]:
        end = self.finished_at if self.finished_at is not None else time.monotonic()
        return {
            "status": self.status.value,
            "vector_count": self.vector_count,
            "chunks_done": self.chunks_done,
            "chunks_total": self.chunks_total,
            "duration_ms": round((end - self.started_at) * 1000, 1),
            "error_code": self.error.code.value if self.error else None,
        }


@attrs.define(eq=False)
class Session:
    """One client session on one connection."""

    session_id: str
    conn_id: str
    uploads: UploadStore
    job_id: str | None = None
    chain_id: int | None = None
    user_address: str | None = None
    client_address: str | None = None
    #: The address the connection counts for (its peer, or whom a trusted proxy forwards); for audits.
    peer: str | None = None
    #: The 32-byte session key of an encrypted session; lives only here.
    session_key: bytes | None = attrs.field(default=None, repr=False)
    database: DatabaseState | None = None
    #: The session's own nursery (loader tasks run here); set by its runner.
    nursery: trio.Nursery | None = attrs.field(default=None, repr=False)
    scope: trio.CancelScope | None = attrs.field(default=None, repr=False)
    created_at: float = attrs.field(factory=time.monotonic)
    #: Storage downloads this session started (S5_RATE_LIMIT_*); set by the connection.
    downloads: SlidingWindow | None = attrs.field(default=None, repr=False)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Own a nursery for the session's background work until :meth:`close`."""
        with trio.CancelScope() as scope:
            self.scope = scope
            async with trio.open_nursery() as nursery:
                self.nursery = nursery
                task_status.started()
                await trio.sleep_forever()

    def close(self) -> None:
        """End the session: cancel its loads and drop its data."""
        if self.database is not None:
            self.database.drop()
        if self.scope is not None:
            self.scope.cancel()
        self.session_key = None
        self.database = None
        self.uploads.clear()


class SessionRegistry:
    """Daemon-wide session count, enforcing ``max_sessions``."""

    def __init__(self, max_sessions: int) -> None:
        self.max_sessions = max_sessions
        self._sessions: dict[tuple[str, str], Session] = {}

    def __len__(self) -> int:
        return len(self._sessions)

    def add(self, session: Session) -> None:
        key = (session.conn_id, session.session_id)
        if key not in self._sessions and len(self._sessions) >= self.max_sessions:
            raise FabstirError(ErrorCode.LIMIT_EXCEEDED, "this host has reached its session limit; try again later")
        self._sessions[key] = session

    def remove(self, session: Session) -> None:
        self._sessions.pop((session.conn_id, session.session_id), None)

    def sessions(self) -> list[Session]:
        return list(self._sessions.values())

    def loading_count(self) -> int:
        return sum(
            1 for s in self._sessions.values() if s.database is not None and s.database.status is LoadStatus.LOADING
        )
