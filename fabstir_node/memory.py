"""The process's C allocator: hand freed memory back to the system.

A load's transient buffers (chunk bodies, decoded arrays, the parsed id list)
are freed from worker threads, whose glibc malloc arenas keep freed pages
mapped; with numpy's large arrays on top, a 100K load could leave 30–60 MB of
free-but-resident memory behind.  Two remedies, both no-ops off glibc:

* :func:`tune_allocator` (at daemon start) pins glibc's mmap threshold at
  1 MiB.  glibc otherwise raises the threshold after the first large free,
  up to 32 MiB, so later multi-MiB buffers land in the arenas, where one small
  live allocation can pin the pages around it.  Pinned, every buffer of 1 MiB
  or more is its own mapping and returns to the system when freed.
* :func:`release_free_memory` (after a load or a swap) runs ``malloc_trim``,
  which returns the free pages inside every arena.

A decode worker (``workers/decode.py``) wants the opposite: it decodes one chunk
at a time and allocates the same large buffers for each (a 36 MB body, a 15 MB
float32 matrix, its 16-bit and 8-bit copies, ...).  As mappings of their own,
every page of each is faulted in and zeroed again for every chunk — a third of
a job's time (an SDK chunk of 10,000 × 384: 259 → 175 ms, its read from the
page cache 31 → 12 ms).  :func:`tune_worker_allocator` keeps them in the heap,
where the next chunk reuses them; the worker trims after a second idle.
"""

from __future__ import annotations

import ctypes
import sys

__all__ = ["MMAP_THRESHOLD", "WORKER_MMAP_THRESHOLD", "release_free_memory", "tune_allocator", "tune_worker_allocator"]

#: Allocations of at least this many bytes get a mapping of their own.
MMAP_THRESHOLD = 1 << 20
#: A decode worker's: its per-chunk buffers stay in the heap.
WORKER_MMAP_THRESHOLD = 512 << 20
_M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter numbers
_M_TRIM_THRESHOLD = -1


def _libc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.malloc_trim, libc.mallopt  # noqa: B018 - glibc only (musl has neither)
    except (OSError, AttributeError):
        return None
    return libc


def tune_allocator() -> bool:
    """Pin glibc's mmap threshold (see the module docstring); True when applied."""
    libc = _libc()
    return bool(libc is not None and libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD))


def tune_worker_allocator() -> bool:
    """Keep a decode worker's large buffers in the heap between chunks (see the module docstring);
    free() no longer trims the heap either (the worker calls :func:`release_free_memory` when idle)."""
    libc = _libc()
    return bool(
        libc is not None
        and libc.mallopt(_M_MMAP_THRESHOLD, WORKER_MMAP_THRESHOLD)
        and libc.mallopt(_M_TRIM_THRESHOLD, 2 * WORKER_MMAP_THRESHOLD)
    )


def release_free_memory() -> None:
    """Hand the allocator's free pages back to the system (``malloc_trim``; a no-op off glibc)."""
    libc = _libc()
    if libc is not None:
        libc.malloc_trim(0)
