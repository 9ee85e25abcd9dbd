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
"""

from __future__ import annotations

import ctypes
import sys

__all__ = ["MMAP_THRESHOLD", "release_free_memory", "tune_allocator"]

#: Allocations of at least this many bytes get a mapping of their own.
MMAP_THRESHOLD = 1 << 20
_M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter number


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


def release_free_memory() -> None:
    """Hand the allocator's free pages back to the system (``malloc_trim``; a no-op off glibc)."""
    libc = _libc()
    if libc is not None:
        libc.malloc_trim(0)
