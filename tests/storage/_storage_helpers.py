"""Helpers shared by the storage tests."""

from __future__ import annotations

import trio


async def wait_for(predicate, timeout: float = 3.0) -> None:
    """Poll ``predicate`` until it holds (the stand-in updates its records as it goes)."""
    with trio.fail_after(timeout):
        while not predicate():
            await trio.sleep(0.005)
