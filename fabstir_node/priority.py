"""CPU priority for background work: searches first, indexing with what is left.

Linux's ``SCHED_IDLE`` policy gives a thread only CPU time that no normal
thread wants, and a waking normal thread preempts it at once.  The daemon
puts its background work under it — saving a loaded database, checking the
saved files, the HNSW builder process — so searches answered meanwhile are
not held up (exact-search p99 while a 100K graph builds, 2 cores: 24.6 →
20.5 ms for the builder alone, see scripts/bench).  Elsewhere these are
no-ops, or ``nice`` where that is all there is.

The policy is per thread on Linux (``sched_setscheduler`` with a thread id);
:func:`idle_thread` restores the thread's policy on exit, since the worker
threads of ``trio.to_thread`` are reused for searches.
"""

from __future__ import annotations

import contextlib
import os
import threading
from typing import Iterator

__all__ = ["idle_process", "idle_thread", "lower_priority"]

_IDLE = getattr(os, "SCHED_IDLE", None)


def idle_process(pid: int) -> bool:
    """Put process ``pid`` (and the threads it starts later) under ``SCHED_IDLE``; True when it took."""
    if _IDLE is None:
        return False
    try:
        os.sched_setscheduler(pid, _IDLE, os.sched_param(0))
    except OSError:  # gone already, or not allowed
        return False
    return True


@contextlib.contextmanager
def idle_thread() -> Iterator[bool]:
    """Run the body with the calling thread under ``SCHED_IDLE``; yields whether it took."""
    if _IDLE is None:
        yield False
        return
    tid = threading.get_native_id()
    try:
        policy, param = os.sched_getscheduler(tid), os.sched_getparam(tid)
        os.sched_setscheduler(tid, _IDLE, os.sched_param(0))
    except OSError:
        yield False
        return
    try:
        yield True
    finally:
        with contextlib.suppress(OSError):
            os.sched_setscheduler(tid, policy, param)


def lower_priority(nice: int, *, idle: bool) -> str:
    """Make this whole process yield the CPU (``nice``, then ``SCHED_IDLE`` if asked); returns the policy."""
    if nice > 0:
        os.nice(nice)
    if idle and idle_process(0):
        return "idle"
    return f"nice {nice}" if nice > 0 else "normal"
