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
threads of ``trio.to_thread`` are reused for searches.  Leaving ``SCHED_IDLE``
needs ``CAP_SYS_NICE`` or an ``RLIMIT_NICE`` that allows the thread's nice
value — which an unprivileged daemon (our systemd unit, our container) does
not have — so :func:`idle_thread` only lowers a thread it can restore, and
otherwise leaves it alone.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

__all__ = [
    "GIL_SWITCH_SECONDS",
    "background_env",
    "background_spawn",
    "can_leave_idle",
    "idle_process",
    "idle_thread",
    "lower_priority",
    "prefer_searches",
]

#: Thread counts of the BLAS and OpenMP pools numpy may use, for a background process.
_ONE_THREAD = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "BLIS_NUM_THREADS")


def background_env() -> dict[str, str]:
    """The environment of a background process (the index builder, the update process): this one's,
    with numpy's BLAS on one thread.

    A BLAS pool's threads spin between products, and ``SCHED_IDLE`` does not keep a spinning
    thread from slowing a search on the other core: a 1M x 384 scan in two threads took 43 ms (p50)
    beside an idle-priority process multiplying float32 matrices on two BLAS threads, 27 ms beside
    one on one thread, 23 ms alone (2026-12-06, Xeon).  Their heavy work is numkong's or usearch's,
    which keep their own thread counts.
    """
    env = dict(os.environ)
    env.update({name: "1" for name in _ONE_THREAD})
    return env


def background_spawn() -> dict[str, Any]:
    """Keyword arguments for starting a background process: :func:`background_env`, and a process group
    of its own (POSIX).

    A background process may be stopped for the length of a search (``service/background.py``).  Were
    the daemon killed meanwhile, the process would stay stopped for ever — but a process group whose
    last member outside it in the session dies is *orphaned*, and the kernel sends each process of a
    newly orphaned group that has a stopped member ``SIGHUP`` (which ends ours) and ``SIGCONT``.  (A stop
    sent but not yet taken when the daemon dies, a window of a scheduler tick, escapes this.)  (Not
    ``PR_SET_PDEATHSIG``: it fires when the parent *thread* ends, and trio starts processes from its
    worker threads, which end when idle for a while: it killed a 1M build mid-way.)
    """
    options: dict[str, Any] = {"env": background_env()}
    if os.name == "posix":
        options["process_group"] = 0
    return options

#: How long a thread may keep the GIL while another waits for it (CPython's default: 5 ms).
GIL_SWITCH_SECONDS = 0.0005

_IDLE = getattr(os, "SCHED_IDLE", None)
_CAP_SYS_NICE = 23


def may_leave_idle(rlimit_nice: int, nice: int, capabilities: int) -> bool:
    """Linux's rule for switching a thread from ``SCHED_IDLE`` back to normal scheduling.

    ``rlimit_nice`` is the soft ``RLIMIT_NICE`` (``resource.RLIM_INFINITY`` for
    none), ``nice`` the thread's nice value, ``capabilities`` the effective set.
    """
    import resource

    if capabilities >> _CAP_SYS_NICE & 1:
        return True
    return rlimit_nice == resource.RLIM_INFINITY or rlimit_nice >= 20 - nice


def can_leave_idle() -> bool:
    """Whether a thread of this process put under ``SCHED_IDLE`` could be switched back."""
    if _IDLE is None:
        return False
    import resource

    try:
        status = Path("/proc/self/status").read_text()
        capabilities = int(status.split("CapEff:", 1)[1].split()[0], 16)
        nice = os.getpriority(os.PRIO_PROCESS, 0)
    except (OSError, IndexError, ValueError):
        return False
    return may_leave_idle(resource.getrlimit(resource.RLIMIT_NICE)[0], nice, capabilities)


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
    """Run the body with the calling thread under ``SCHED_IDLE``; yields whether it took.

    Nothing changes when the thread could not be switched back afterwards
    (see the module docstring): the body then runs at normal priority.
    """
    if _IDLE is None or not can_leave_idle():
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


def prefer_searches() -> None:
    """Hand the GIL to a waiting thread after :data:`GIL_SWITCH_SECONDS` instead of 5 ms.

    A search crosses the GIL a few times (the event loop, its thread, numpy calls that release it);
    while a background thread runs Python — saving a new version, following a graph update — each
    crossing could wait the full interval, and an idle-priority holder makes that a priority
    inversion.  Seen on a new version's first searches at 100K: a graph answer taking ~1 ms of its own
    came back after 5-12 ms (49 of 500 over 4 ms; 17 with the shorter interval, bench of 2026-12-06).
    The cost is more frequent hand-overs between busy Python threads, which the daemon rarely has.
    """
    sys.setswitchinterval(GIL_SWITCH_SECONDS)
