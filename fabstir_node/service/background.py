"""Background processes that stand still while searches run.

The index builder and the update process (``storage/index_builder.py``, ``storage/index_update.py``)
run under ``SCHED_IDLE``, which gives them only CPU time no search wants.  On this kernel and
machine that did not keep them from slowing the searches that scan a whole database: the caches
and the memory bus they share are not the scheduler's to give (2026-12-06, 2 vCPU Xeon, Linux 6.18):

* a 100K x 384 8-bit scan in two threads, p50 / p99: 2.24 / 3.39 ms alone, 3.87 / 7.34 ms beside an
  idle-priority process adding to a usearch graph;
* a 1M x 384 one: 30.3 / 43.7 ms beside an idle-priority process multiplying float32 matrices,
  25.3 / 31.0 ms with that process stopped (``SIGSTOP``) for the length of each scan (alone: 30.8 /
  40.0 ms just before, 25.1 / 31.1 ms just after — the machine's speed moves as much; in the daemon
  while a 1M index builds, p99 56 → 42 ms, medians of three).

Nor graph walks: a new 100K version's first searches, on the previous graph beside the update process
making the new one, had their graph answers at server-time p99 1.6-4.8 ms (over 3.7 in seven runs of
nine), 1.6-2.7 ms with the process stopped for each batch (``batcher.py`` has the runs).

So :class:`Background` stops the processes registered with it (``SIGSTOP``) while a scan of a whole
database runs on both cores, and the short ones (graph updates) also while a light load's batch of
searches on a large database runs (``batcher.py``), and continues them (``SIGCONT``) right after.  An
index build is long, and under a steady stream of searches the idle class already gives it little: one
client searching a 100K database in a closed loop put its graph 52 s after the load instead of 8 s,
and stopping the builder for every light batch too made that 61 s (76 s against 46 s with four clients;
22:12 UTC), so builds stand still for scans only.  A process never stays stopped longer than the batch:
the stop and the continue are one context, on the event loop's thread.  So that background work
still gets on when searches never stop, a pause is skipped once the processes have stood still for
:data:`MAX_SHARE` of the last :data:`WINDOW` seconds.  A process stopped when the daemon dies is
ended by the kernel (each runs in a process group of its own: ``priority.background_spawn``).

Every background process is started here (:meth:`Background.spawn`).  Only the event loop's thread
uses an instance: no locks.
"""

from __future__ import annotations

import collections
import contextlib
import os
import signal
import time
from collections.abc import Callable, Iterator
from typing import Any

import trio

from ..priority import background_spawn, idle_process

__all__ = ["MAX_SHARE", "WINDOW", "Background"]

#: Whether this platform can stop and continue a process (POSIX); elsewhere pauses do nothing.
_CAN_STOP = hasattr(signal, "SIGSTOP") and hasattr(signal, "SIGCONT")
#: At most this share of the last :data:`WINDOW` seconds may the processes stand still.
MAX_SHARE = 0.5
WINDOW = 2.0


class Background:
    """The daemon's background processes, and pauses of them for whole-database scans."""

    def __init__(
        self, *, max_share: float = MAX_SHARE, window: float = WINDOW,
        clock: Callable[[], float] = time.monotonic, kill: Callable[[int, int], None] = os.kill,
    ) -> None:
        self._pids: set[int] = set()
        self._max_share, self._window = max_share, window
        self._clock, self._kill = clock, kill
        self._short: set[int] = set()
        self._stopped: list[int] = []
        self._since = 0.0
        #: ``(start, end)`` of recent pauses, oldest first.
        self._pauses: collections.deque[tuple[float, float]] = collections.deque()
        self._still = 0.0  # their total length
        #: Pauses made and skipped (for tests and logs).
        self.paused_count = 0
        self.skipped_count = 0

    async def spawn(self, command: list[str], *, short: bool = False, **options: Any) -> trio.Process:
        """Start a background process: in a process group of its own with numpy's BLAS on one thread
        (``priority.background_spawn``), under ``SCHED_IDLE`` before it has imported anything, and
        registered here (``short``: see :meth:`add`).  ``options`` go to ``trio.lowlevel.open_process``
        (its pipes).  The caller forgets it (:meth:`discard`) once it has ended, or before killing it."""
        process = await trio.lowlevel.open_process(command, **options, **background_spawn())
        idle_process(process.pid)
        self.add(process.pid, short=short)
        return process

    def add(self, pid: int, *, short: bool = False) -> None:
        """Register a running background process.  A *short* one (a graph update: a second or two of
        CPU) also stands still for a light load's searches (``paused(short_only=True)``); a long one (an
        index build) only for scans of a whole database, so searches never stop keep it from its graph."""
        self._pids.add(pid)
        if short:
            self._short.add(pid)

    def discard(self, pid: int) -> None:
        """Forget a process (it ended, or is about to be killed); continued first if a pause stopped it."""
        self._pids.discard(pid)
        self._short.discard(pid)
        if pid in self._stopped:
            self._stopped.remove(pid)
            self._signal(pid, signal.SIGCONT)

    def __len__(self) -> int:
        return len(self._pids)

    def _share(self, now: float) -> float:
        """The share of the last window the processes stood still (pauses do not overlap, so only the
        oldest one kept can reach back past the window's start; the running total keeps this O(1))."""
        start = now - self._window
        while self._pauses and self._pauses[0][1] <= start:
            begin, end = self._pauses.popleft()
            self._still -= end - begin
        before = max(0.0, start - self._pauses[0][0]) if self._pauses else 0.0
        return max(0.0, self._still - before) / self._window

    @contextlib.contextmanager
    def paused(self, *, short_only: bool = False) -> Iterator[bool]:
        """Stop the registered processes (only the short ones if ``short_only``) for the body; yields
        whether any stand still (False: none registered, or they stood still long enough lately).  A
        nested pause stops what the one around it left running, and continues just that at its end; the
        time counted against :data:`MAX_SHARE` runs from the first stop to the last continue."""
        wanted = [pid for pid in sorted(self._pids)
                  if pid not in self._stopped and (not short_only or pid in self._short)]
        newly: list[int] = []
        if wanted and _CAN_STOP:
            now = self._clock()
            if self._stopped or self._share(now) < self._max_share:  # already in a pause: extend it
                if not self._stopped:
                    self._since = now
                    self.paused_count += 1
                newly = [pid for pid in wanted if self._signal(pid, signal.SIGSTOP)]
                self._stopped.extend(newly)
            else:
                self.skipped_count += 1
        try:
            yield bool(self._stopped)
        finally:
            if newly:
                for pid in newly:
                    if pid in self._stopped:  # (not forgotten meanwhile)
                        self._stopped.remove(pid)
                        self._signal(pid, signal.SIGCONT)
                if not self._stopped:
                    end = self._clock()
                    self._pauses.append((self._since, end))
                    self._still += end - self._since

    def _signal(self, pid: int, signo: int) -> bool:
        try:
            self._kill(pid, signo)
        except (ProcessLookupError, PermissionError):
            return False
        return True
