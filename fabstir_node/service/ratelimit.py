"""Rate limits as plain objects with an explicit clock (no I/O, no Trio).

* :class:`TokenBucket` limits requests per connection: ``rate`` tokens per
  second up to ``burst``; a request without a token is refused at once.
* :class:`SlidingWindow` limits storage downloads per session: at most
  ``limit`` in any ``window`` seconds.  :meth:`SlidingWindow.reserve` says
  how long to wait for the next slot; the caller waits when that fits its
  budget and refuses otherwise.

Both take ``now`` from the caller (``trio.current_time()`` in the daemon), so
tests drive them with plain numbers.
"""

from __future__ import annotations

import collections

import attrs


@attrs.define
class TokenBucket:
    rate: float
    burst: float
    tokens: float = attrs.field(default=None)
    updated: float | None = None

    def __attrs_post_init__(self) -> None:
        if self.tokens is None:
            self.tokens = self.burst

    def take(self, now: float, cost: float = 1.0) -> bool:
        """Spend ``cost`` tokens if there are enough; returns whether the request may go ahead."""
        if self.updated is not None:
            self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        if self.tokens >= cost:
            self.tokens -= cost
            return True
        return False


class SlidingWindow:
    """At most ``limit`` events in any ``window`` seconds."""

    def __init__(self, limit: int, window: float) -> None:
        if limit < 1 or window <= 0:
            raise ValueError("limit must be >= 1 and window > 0")
        self.limit = limit
        self.window = window
        self._times: collections.deque[float] = collections.deque()

    def reserve(self, now: float) -> float:
        """Book the next free slot; returns how many seconds from ``now`` it starts (0 = now).

        Booked slots count even if the caller then gives up, so callers
        should :meth:`cancel` a reservation they will not use.
        """
        while self._times and self._times[0] <= now - self.window:
            self._times.popleft()
        if len(self._times) < self.limit:
            self._times.append(now)
            return 0.0
        start = self._times[-self.limit] + self.window
        self._times.append(start)
        return start - now

    def cancel(self, delay: float, now: float) -> None:
        """Give back a reservation made at ``now`` that started ``delay`` later."""
        try:
            self._times.remove(now + delay)
        except ValueError:
            pass
