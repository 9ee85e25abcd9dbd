"""Graph builds take turns: one at a time, most-used first, cancellation-safe."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from fabstir_node.service.build_queue import BuildQueue


async def test_one_at_a_time_in_priority_then_arrival_order():
    queue = BuildQueue()
    users = {"a": 0, "b": 1, "c": 3, "d": 1}
    order: list[str] = []
    release = trio.Event()

    async def build(key: str) -> None:
        async with queue.slot(key, lambda: users[key]) as turn:
            order.append(key)
            assert queue.running == 1
            turn.progress = 0.5
            if key == "a":
                await release.wait()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(build, "a")
        await trio.testing.wait_all_tasks_blocked()
        for key in ("b", "c", "d"):
            nursery.start_soon(build, key)
            await trio.testing.wait_all_tasks_blocked()
        assert (queue.waiting, queue.running, queue.progress()) == (3, 1, 0.5)
        assert queue.waiting_keys() == ["c", "b", "d"]  # most sessions first, then the oldest
        users["d"] = 5  # priority is read when the slot frees
        release.set()
    assert order == ["a", "d", "c", "b"]
    assert (queue.waiting, queue.running, queue.progress()) == (0, 0, 0.0)


async def test_a_cancelled_waiter_leaves_and_a_failed_build_hands_its_turn_on():
    queue = BuildQueue()
    done: list[str] = []
    hold = trio.Event()

    async def first() -> None:
        async with queue.slot("first"):
            await hold.wait()
            raise RuntimeError("the build crashed")

    async def later(key: str) -> None:
        async with queue.slot(key):
            done.append(key)

    with pytest.raises(BaseExceptionGroup):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(first)
            await trio.testing.wait_all_tasks_blocked()
            with trio.CancelScope() as scope:
                scope.cancel()
                await later("cancelled")  # cancelled while it waits in the queue
            assert queue.waiting == 0
            nursery.start_soon(later, "next")
            await trio.testing.wait_all_tasks_blocked()
            hold.set()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(later, "after")
    assert done == ["next", "after"]  # the crashed build handed its turn on as it left
    assert queue.running == 0


def test_a_queue_needs_a_slot():
    with pytest.raises(ValueError):
        BuildQueue(0)

