"""Graph builds take turns: one at a time (each already uses every core), most-used first.

Three databases loaded together used to build their graphs at once: each build took three times
as long, and none answered at graph speed until all were nearly done.  A :class:`BuildQueue`
grants its ``slots`` (default 1) to waiting builds in order of a priority read when a slot frees
(default: the most sessions using the database, then the oldest request), so the first database
is fast as soon as it would be alone and the others follow.

The queue holds no task of its own: a build waits in :meth:`BuildQueue.slot` in its owner's task
(the indexer's, in the cache's nursery), and a cancelled waiter leaves the queue, or hands its
slot on when it was granted one as it was cancelled.
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import attrs
import trio

__all__ = ["BuildQueue"]


@attrs.define(eq=False)
class _Waiter:
    key: str
    seq: int
    priority: Callable[[], float]
    granted: trio.Event = attrs.field(factory=trio.Event)


@attrs.define(eq=False)
class _Running:
    key: str
    #: Fraction of the build done (0..1), from the builder's progress lines.
    progress: float = 0.0


class BuildQueue:
    """At most ``slots`` builds at once; the rest wait in priority order."""

    def __init__(self, slots: int = 1) -> None:
        if slots < 1:
            raise ValueError("a build queue needs at least one slot")
        self.slots = slots
        self._waiting: list[_Waiter] = []
        self._running: dict[int, _Running] = {}
        self._seq = itertools.count()

    # --- what metrics read

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    @property
    def running(self) -> int:
        return len(self._running)

    def progress(self) -> float:
        """Progress of the running builds (mean of their fractions; 0 when none runs)."""
        if not self._running:
            return 0.0
        return sum(r.progress for r in self._running.values()) / len(self._running)

    def waiting_keys(self) -> list[str]:
        """The waiting builds' keys in the order they would be granted now."""
        return [w.key for w in sorted(self._waiting, key=self._order)]

    # --- taking turns

    @staticmethod
    def _order(waiter: _Waiter) -> tuple[float, int]:
        return (-waiter.priority(), waiter.seq)

    @asynccontextmanager
    async def slot(self, key: str, priority: Callable[[], float] = lambda: 0.0) -> AsyncIterator[_Running]:
        """Wait for a turn, hold it for the ``async with`` body; higher ``priority()`` goes first."""
        waiter = _Waiter(key, next(self._seq), priority)
        self._waiting.append(waiter)
        self._grant()
        try:
            await waiter.granted.wait()
        except BaseException:
            if waiter in self._waiting:
                self._waiting.remove(waiter)
            elif waiter.seq in self._running:  # granted as it was cancelled: hand the slot on
                del self._running[waiter.seq]
                self._grant()
            raise
        try:
            yield self._running[waiter.seq]
        finally:
            self._running.pop(waiter.seq, None)
            self._grant()

    def _grant(self) -> None:
        while self._waiting and len(self._running) < self.slots:
            nxt = min(self._waiting, key=self._order)
            self._waiting.remove(nxt)
            self._running[nxt.seq] = _Running(nxt.key)
            nxt.granted.set()
