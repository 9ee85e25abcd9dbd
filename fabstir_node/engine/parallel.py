"""Pieces of one search run at once on a core the service lends, or one after the other.

A scan of a large database's 8-bit codes (384 MB at 1M x 384) is bound by one core's memory
bandwidth: ~45-65 ms.  Shared by two threads on two cores it takes about half (they take its blocks
as they come, so a core slowed for a while does less of it: ``quantized._Blocks``).  The engine has no
threads of its own: the service lends a *runner* for the duration of a search (``lent``; the
batcher does, from the worker thread that runs a batch: ``service/batcher.py``), which runs the
pieces in threads of its own nursery when a core is spare right now and returns None otherwise.
:func:`run_parallel` then runs them here, one after the other.  Either way the results are the same.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

__all__ = ["Runner", "lent", "run_parallel"]

#: ``runner(jobs)``: every job's result, in order, having run them at once; None: no spare core.
Runner = Callable[[Sequence[Callable[[], Any]]], "list[Any] | None"]

_RUNNER: ContextVar[Runner | None] = ContextVar("fabstir_node_parallel_runner", default=None)


@contextmanager
def lent(runner: Runner | None) -> Iterator[None]:
    """Searches in this context (this thread's) may run their pieces with ``runner``."""
    token = _RUNNER.set(runner)
    try:
        yield
    finally:
        _RUNNER.reset(token)


def run_parallel(jobs: Sequence[Callable[[], Any]]) -> list[Any]:
    """Every job's result, in order: at once through the lent runner if it has cores to spare."""
    runner = _RUNNER.get()
    if runner is not None and len(jobs) > 1:
        results = runner(jobs)
        if results is not None:
            return results
    return [job() for job in jobs]
