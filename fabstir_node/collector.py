"""Python's cyclic garbage collector, kept off the searches.

A pass over CPython's oldest generation traverses every container object the collector tracks,
holding the GIL throughout: no connection's search moves meanwhile.  In the daemon after a 100K load
that is ~56,000 objects — the functions, types and dicts of the imported modules, nearly all of them —
and a full pass took 21–25 ms; two passes that fell inside searches in a benchmark run took 32 and
72 ms (2026-12-06, gc callbacks in the daemon).  None of it is garbage: a full pass right after a load
collected nothing.

:func:`settle` moves every object tracked now into the collector's permanent generation
(``gc.freeze``), so later passes traverse only what was created since: with it, the passes that fell
inside searches in the same benchmark took 0.4 and 0.9 ms.  The ``serve`` command turns it on
(:func:`enable`); the daemon then settles once when it starts listening and after each load that
decoded chunks and succeeded, each time after a full pass, so no garbage is frozen (after the first
freeze a full pass only traverses what came since: about a millisecond).  A failed load is not
followed by a freeze: its exception's traceback is a reference cycle the next pass frees.  Objects
frozen are freed as usual when their last reference goes; only a reference cycle among them would
outlive its use.  Off — the default, and in tests that run daemons in their own process —
:func:`settle` does nothing.
"""

from __future__ import annotations

import gc

__all__ = ["enable", "enabled", "settle"]

_enabled = False


def enable() -> None:
    """Let :func:`settle` freeze (the daemon process's ``serve`` command calls this once)."""
    global _enabled
    _enabled = True


def enabled() -> bool:
    return _enabled


def settle() -> int:
    """Collect every generation, then move every tracked object into the permanent generation; returns
    how many objects are frozen now (0 when not enabled)."""
    if not _enabled:
        return 0
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()
