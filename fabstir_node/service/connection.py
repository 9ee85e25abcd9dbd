"""One WebSocket connection's requests, turned into replies.

:class:`ConnectionService` is the glue between the protocol (typed requests
in, reply dicts out) and the node (sessions, storage, engines).  It knows
nothing about WebSockets: the server gives it requests and a ``send``
coroutine for events that happen later (loading progress), which makes it
testable without a socket.

Errors are raised as :class:`FabstirError` anywhere below and turned into
error replies in exactly one place, :meth:`ConnectionService.handle`.
"""

from __future__ import annotations

import time
from typing import Any

import trio

from ..crypto.session_init import open_encrypted_init
from ..engine.filters import compile_filter
from ..errors import ErrorCode, FabstirError
from ..logging import get_logger
from ..protocol import messages as m
from .hooks import Send
from .node import Node
from .ratelimit import SlidingWindow
from .sessions import DatabaseState, LoadStatus, Session

log = get_logger(__name__)

__all__ = ["ConnectionService", "Send"]

#: Uploads larger than this many vectors are validated off the event loop.
_THREAD_UPLOAD_MIN = 64
#: Searches over more vectors than this run off the event loop.
_THREAD_SEARCH_MIN = 20_000


class ConnectionService:
    """The sessions of one connection and the handling of its requests."""

    def __init__(
        self, node: Node, conn_id: str, nursery: trio.Nursery, send: Send, *, peer: str | None = None
    ) -> None:
        self.node = node
        self.conn_id = conn_id
        #: The client's address (for the load audit).
        self.peer = peer
        self._nursery = nursery
        self._send = send
        self._sessions: dict[str, Session] = {}
        self.current: Session | None = None
        #: Which path answered this connection's last search ("graph", "declined", "exact", ...), for
        #: its ``request`` log line; the server clears it before each request.
        self.search_path: str | None = None

    # --- the one place errors become replies -----------------------------------

    async def handle(self, request: m.Request) -> dict[str, Any]:
        """Handle one request; always returns the reply to send."""
        try:
            return await self._dispatch(request)
        except FabstirError as error:
            return m.error_reply(error, request.echo)

    async def _dispatch(self, request: m.Request) -> dict[str, Any]:
        if isinstance(request, m.SearchVectors):
            return await self._search(request)
        if isinstance(request, m.UploadVectors):
            return await self._upload(request)
        if isinstance(request, m.SessionInit):
            return await self._session_init(request)
        if isinstance(request, m.EncryptedSessionInit):
            return await self._encrypted_session_init(request)
        if isinstance(request, m.Ping):
            return m.pong(request.echo)
        raise FabstirError(ErrorCode.UNKNOWN_MESSAGE_TYPE, "unsupported message")  # pragma: no cover

    # --- sessions ----------------------------------------------------------------

    async def _session_init(self, request: m.SessionInit) -> dict[str, Any]:
        session = await self._open_session(request.session_id)
        session.job_id = request.job_id
        session.chain_id = request.chain_id
        ref = request.vector_database
        user = ref.user_address if ref is not None else request.user_address
        if user is not None:
            session.user_address = user
        self._maybe_load(session, ref, signer=None)
        log.info(
            "session_init", session_id=session.session_id, encrypted=False,
            database=ref.manifest_path if ref else None,
        )
        return m.session_init_ack(
            session_id=session.session_id, job_id=session.job_id, chain_id=request.chain_id, echo=request.echo
        )

    async def _encrypted_session_init(self, request: m.EncryptedSessionInit) -> dict[str, Any]:
        host_key = self.node.host_key
        if host_key is None:
            raise FabstirError(
                ErrorCode.ENCRYPTION_NOT_SUPPORTED, "this host has no encryption key; use session_init"
            )

        opened = open_encrypted_init(request.payload, host_key)
        session = await self._open_session(request.session_id)
        session.job_id = request.job_id if request.job_id is not None else opened.job_id
        session.chain_id = request.chain_id
        session.session_key = opened.session_key
        session.client_address = opened.client_address
        ref = opened.vector_database
        if ref is not None:
            session.user_address = ref.user_address
        self._maybe_load(session, ref, signer=opened.client_address)
        log.info(
            "session_init", session_id=session.session_id, encrypted=True,
            client_address=opened.client_address, database=ref.manifest_path if ref else None,
        )
        return m.session_init_ack(
            session_id=session.session_id, job_id=session.job_id, chain_id=request.chain_id,
            echo=request.echo, client_address=opened.client_address,
        )

    async def _open_session(self, session_id: str) -> Session:
        """The existing session with this id (a re-init keeps its data), or a new one."""
        session = self._sessions.get(session_id)
        if session is None:
            if len(self._sessions) >= self.node.settings.max_sessions_per_connection:
                raise FabstirError(ErrorCode.LIMIT_EXCEEDED, "too many sessions on this connection")
            settings = self.node.settings
            session = Session(
                session_id=session_id, conn_id=self.conn_id, peer=self.peer,
                uploads=self.node.new_upload_store(),
                downloads=SlidingWindow(settings.s5_rate_limit_requests, settings.s5_rate_limit_window_seconds),
            )
            self.node.registry.add(session)
            try:
                await self._nursery.start(session.run)
            except BaseException:
                self.node.registry.remove(session)
                raise
            self._sessions[session_id] = session
        self.current = session
        return session

    def _maybe_load(self, session: Session, ref: m.VectorDatabaseRef | None, *, signer: str | None) -> None:
        """Start loading ``ref`` unless the session already has (or is loading) it.

        ``signer`` is the client address the init that names ``ref`` proved (None: a plaintext
        init); the loader's access check (service/access.py) decides with it.
        """
        if ref is None:
            return  # a re-init without a database keeps whatever the session has
        current = session.database
        if current is not None and current.same_database(ref):
            if current.status is not LoadStatus.ERROR and self._same_signer(current, signer):
                return
        if session.database is not None:
            session.database.drop()
        state = DatabaseState(ref=ref, signer=signer)
        session.database = state
        assert session.nursery is not None
        session.nursery.start_soon(self.node.load_database, session, state, self._send)

    def _same_signer(self, state: DatabaseState, signer: str | None) -> bool:
        """Under the ``signed`` policy a load is the signer's: another signer's re-init loads again."""
        if self.node.settings.access_policy != "signed":
            return True
        return (state.signer or "").lower() == (signer or "").lower()

    def close(self) -> None:
        """The connection ended: end every session it held."""
        for session in self._sessions.values():
            session.close()
            self.node.registry.remove(session)
        self._sessions.clear()
        self.current = None

    def _require_session(self) -> Session:
        if self.current is None:
            raise FabstirError(ErrorCode.NO_SESSION, "no session: send session_init first")
        return self.current

    # --- RAG requests --------------------------------------------------------------

    async def _upload(self, request: m.UploadVectors) -> dict[str, Any]:
        session = self._require_session()
        if len(request.vectors) > self.node.settings.max_upload_batch:
            raise FabstirError(
                ErrorCode.LIMIT_EXCEEDED,
                f"at most {self.node.settings.max_upload_batch} vectors per uploadVectors message",
            )
        store = session.uploads
        started = time.perf_counter()

        def work() -> Any:
            if request.replace:
                store.clear()
            return store.add(request.vectors)

        if len(request.vectors) >= _THREAD_UPLOAD_MIN:
            outcome = await trio.to_thread.run_sync(work, limiter=self.node.cpu_limiter)
        else:
            outcome = work()
        log.info(
            "vectors_uploaded", session_id=session.session_id, uploaded=outcome.uploaded,
            rejected=outcome.rejected, total=len(store), duration_ms=round((time.perf_counter() - started) * 1000, 2),
        )
        return m.upload_reply(
            status=outcome.status, uploaded=outcome.uploaded, rejected=outcome.rejected,
            errors=outcome.errors, echo=request.echo,
        )

    def _search_source(self, session: Session) -> Any:
        """The engine a search reads: the named database, else the uploads (§3.2)."""
        state = session.database
        if state is not None:
            if state.status is LoadStatus.LOADED and state.engine is not None:
                return state.engine
            if state.status is LoadStatus.ERROR and state.error is not None:
                raise FabstirError(state.error.code, f"vector database failed to load: {state.error.message}")
            status = state.summary()
            raise FabstirError(
                ErrorCode.VECTORS_LOADING,
                f"vector database is still loading ({status['chunks_done']}/{status['chunks_total']} chunks, "
                f"{status['duration_ms'] / 1000:.1f} s so far); retry shortly",
            )
        if len(session.uploads) == 0:
            raise FabstirError(ErrorCode.NO_VECTORS, "no vectors: upload vectors or name a vector database")
        return session.uploads

    async def _search(self, request: m.SearchVectors) -> dict[str, Any]:
        session = self._require_session()
        settings = self.node.settings
        if request.k < 1:
            raise FabstirError(ErrorCode.INVALID_MESSAGE, "k must be at least 1")
        if request.k > settings.max_k:
            raise FabstirError(ErrorCode.LIMIT_EXCEEDED, f"k must be at most {settings.max_k}")
        if len(request.query_vector) > settings.max_dimensions:
            raise FabstirError(
                ErrorCode.LIMIT_EXCEEDED, f"queryVector has more than {settings.max_dimensions} dimensions"
            )
        source = self._search_source(session)
        flt = None
        if request.metadata_filter:
            flt = compile_filter(request.metadata_filter)
        query = request.query_vector  # the engine validates and normalises it
        started = time.perf_counter()

        def work() -> Any:
            return source.search(query, request.k, threshold=request.threshold, flt=flt)

        if len(source) >= _THREAD_SEARCH_MIN and flt is None:
            # concurrent searches on this database join one batch: one thread hop, one graph call
            result = await self.node.search_batcher.search(source, query, request.k, request.threshold)
        elif len(source) >= _THREAD_SEARCH_MIN:
            result = await trio.to_thread.run_sync(work, limiter=self.node.cpu_limiter)
        else:
            result = work()
        elapsed_ms = (time.perf_counter() - started) * 1000
        self.search_path = getattr(result, "path", "exact")
        self.node.observe_search(elapsed_ms / 1000, self.search_path)
        return m.search_reply(
            results=[{"id": hit.id, "score": hit.score, "metadata": hit.metadata} for hit in result.hits],
            total_vectors=result.total, search_time_ms=elapsed_ms, echo=request.echo,
        )
