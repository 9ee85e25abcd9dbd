"""Concurrent searches on one database answered together, in one thread hop.

Searches from many connections on one large database used to run one per
thread hop, each taking a CPU token and then queueing on the graph's own lock
(usearch serialises calls on one index, engine-notes §1.4): 16 clients on two
cores spent their time waiting and switching.  Here the first search to arrive
for a database becomes the *leader* of a batch; searches for that database
that arrive while it waits for a CPU token join its batch.  When the leader
gets its token it closes the batch and runs every search in it with one call
of the engine's ``search_many`` in one worker thread (one graph call for the
walks, one read of the candidate rows), then hands each member its own answer
or its own error.  Nothing runs in the background: every batch is run by a
request that is waiting for it.  If the leader is cancelled before its batch
runs (its client went away), the next member takes over.

With no contention a batch holds one search, and the path is what it was: a
token, a thread hop, one search.

The daemon's background processes (``background.py``) stand still while any search scans a whole
database, and the short ones (a new version's graph update) also while a batch of at most
:data:`PAUSE_BATCH` searches runs (a light load, where a client waits on each search), within that
module's share of time; a busy node's larger batches leave them their idle time, and an index build
is stopped for scans only (its graph is what every search on that database waits for).  A new 100K
version's first searches (on the previous graph, beside the update process making the new one), in
nine alternating pairs of ``scripts/bench`` runs without and with the light-load pause: the graph's
answers at server-time p99 1.6-4.8 ms -> 1.6-2.7 ms, all 500 searches' p99 4.4-6.0 -> 3.6-4.7 ms in
eight of the nine; the new version's own graph came 0.3-0.9 s later (2026-12-06 21:50-22:20 UTC,
2 vCPU Xeon).

A search may also split its own work (the 8-bit scan of a large database before its index is ready:
``engine/parallel.py``): the batch's thread is lent a runner that, when another CPU token is free
right now, runs the pieces in threads of a nursery here, each holding a token, and waits for them
(the background processes stopped meanwhile); when none is free the search runs them itself, one
after the other.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Sequence
from typing import Any

import attrs
import trio

from ..engine import parallel
from .background import Background

__all__ = ["SearchBatcher"]

#: At most this many searches run as one batch (the rest start the next one).
MAX_BATCH = 64
#: Batches of at most this many searches stop the short background processes while they run.
PAUSE_BATCH = 2


@attrs.define(eq=False)
class _Request:
    query: object
    k: int
    threshold: float | None
    result: Any = None
    error: BaseException | None = None


@attrs.define(eq=False)
class _Batch:
    requests: list[_Request] = attrs.field(factory=list)
    leader: _Request | None = None
    closed: bool = False
    done: bool = False
    #: Set (and replaced) when the batch is done or its leader changes.
    wake: trio.Event = attrs.field(factory=trio.Event)

    def notify(self) -> None:
        wake, self.wake = self.wake, trio.Event()
        wake.set()


class SearchBatcher:
    """Per-source batches of unfiltered searches, run under ``limiter`` (one token per batch)."""

    def __init__(
        self, limiter: trio.CapacityLimiter, *, max_batch: int = MAX_BATCH, background: Background | None = None
    ) -> None:
        self._limiter = limiter
        self._background = background
        self._max_batch = max_batch
        #: The open (still joinable) batch of each source, by identity.
        self._open: dict[int, tuple[Any, _Batch]] = {}
        #: Worker threads are bounded by ``limiter`` tokens, held by the leaders.
        self._threads = trio.CapacityLimiter(math.inf)
        #: Batches run and searches answered (for tests and metrics).
        self.batches = 0
        self.searches = 0

    async def search(self, source: Any, query: object, k: int, threshold: float | None = None) -> Any:
        """``source.search(query, k, threshold=threshold)``, maybe answered in a batch with others."""
        request = _Request(query, k, threshold)
        entry = self._open.get(id(source))
        if entry is None or entry[0] is not source or len(entry[1].requests) >= self._max_batch:
            batch = _Batch(leader=request)
            self._open[id(source)] = (source, batch)
        else:
            batch = entry[1]
        batch.requests.append(request)
        try:
            while not batch.done:
                if batch.leader is request:
                    await self._lead(source, batch)
                else:
                    await batch.wake.wait()
        except BaseException:
            self._leave(source, batch, request)
            raise
        if request.error is not None:
            raise request.error
        return request.result

    async def _lead(self, source: Any, batch: _Batch) -> None:
        async with self._limiter:
            self._close(source, batch)
            try:
                runner = _SpareCores(self._limiter, self._threads, self._background)
                # a light load's batch: short background work stands still while it runs (background.py)
                light = self._background if len(batch.requests) <= PAUSE_BATCH else None
                with light.paused(short_only=True) if light is not None else contextlib.nullcontext():
                    await trio.to_thread.run_sync(_run, source, batch.requests, runner, limiter=self._threads)
            finally:
                self.batches += 1
                self.searches += len(batch.requests)
                batch.done = True
                batch.notify()

    def _close(self, source: Any, batch: _Batch) -> None:
        batch.closed = True
        entry = self._open.get(id(source))
        if entry is not None and entry[1] is batch:
            del self._open[id(source)]

    def _leave(self, source: Any, batch: _Batch, request: _Request) -> None:
        """``request`` was cancelled: drop it from a batch that has not run; hand on the lead."""
        if batch.closed or batch.done:
            return  # it ran (or runs) with the batch; its answer is dropped
        batch.requests.remove(request)
        if batch.leader is request:
            if batch.requests:
                batch.leader = batch.requests[0]
                batch.notify()
            else:
                self._close(source, batch)


class _SpareCores:
    """The runner lent to a batch's thread (``engine/parallel.py``): pieces of one search at once, in
    threads of a nursery of its own, when the CPU tokens they need beyond the batch's are free now."""

    def __init__(
        self, limiter: trio.CapacityLimiter, threads: trio.CapacityLimiter, background: Background | None = None
    ) -> None:
        self._limiter, self._threads, self._background = limiter, threads, background

    def __call__(self, jobs: Sequence[Callable[[], Any]]) -> list[Any] | None:
        # called in the batch's worker thread, which waits (holding its token) while the pieces run
        try:
            result: list[Any] | None = trio.from_thread.run(self._run_all, jobs)
        except trio.RunFinishedError:
            return None
        return result

    async def _run_all(self, jobs: Sequence[Callable[[], Any]]) -> list[Any] | None:
        # this runs as the batch's own task (trio.from_thread.run), which holds its token already: the
        # spare tokens are borrowed on behalf of objects of their own
        borrowed: list[object] = []
        results: list[Any] = [None] * len(jobs)
        errors: list[BaseException] = []

        async def one(i: int, job: Callable[[], Any]) -> None:
            try:
                results[i] = await trio.to_thread.run_sync(job, limiter=self._threads)
            except Exception as error:  # noqa: BLE001 - raised below, as itself, not as a group
                errors.append(error)

        try:
            try:
                for _ in range(len(jobs) - 1):  # the batch's own token covers one piece
                    borrower = object()
                    self._limiter.acquire_on_behalf_of_nowait(borrower)
                    borrowed.append(borrower)
            except trio.WouldBlock:
                return None  # no core to spare: the search runs the pieces itself
            # the pieces scan a whole database: every background process stands still meanwhile
            # (background.py; within a light load's batch, this extends its pause)
            with self._background.paused() if self._background is not None else contextlib.nullcontext():
                async with trio.open_nursery() as nursery:
                    for i, job in enumerate(jobs):
                        nursery.start_soon(one, i, job)
        finally:
            for borrower in borrowed:
                self._limiter.release_on_behalf_of(borrower)
        if errors:
            raise errors[0]
        return results


def _run(source: Any, requests: list[_Request], runner: parallel.Runner | None = None) -> None:
    """In a worker thread: every request of a batch, each getting its answer or its error."""
    with parallel.lent(runner):
        _answer(source, requests)


def _answer(source: Any, requests: list[_Request]) -> None:
    many = getattr(source, "search_many", None)
    if many is not None and len(requests) > 1:
        try:
            answers = many([(r.query, r.k, r.threshold) for r in requests])
        except Exception as error:  # noqa: BLE001 - every request gets it
            answers = [error] * len(requests)
        for request, answer in zip(requests, answers):
            if isinstance(answer, BaseException):
                request.error = answer
            else:
                request.result = answer
        return
    for request in requests:
        try:
            request.result = source.search(request.query, request.k, threshold=request.threshold)
        except Exception as error:  # noqa: BLE001 - it belongs to this request
            request.error = error
