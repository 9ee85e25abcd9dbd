"""Background processes stand still while a search scans a whole database, and never for long."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import trio

from fabstir_node.engine import quantized
from fabstir_node.engine.quantized import Int8Rows
from fabstir_node.service.background import Background
from fabstir_node.service.batcher import SearchBatcher

linux_only = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc")


def state(pid: int) -> str:
    """The process's state letter: T when stopped."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_pause_stops_every_process_once_and_continues_them_after():
    sent: list[tuple[int, int]] = []
    clock = Clock()
    background = Background(clock=clock, kill=lambda pid, signo: sent.append((pid, signo)))
    with background.paused() as stopped:
        assert not stopped and not sent  # nothing registered: nothing to do
    background.add(7)
    background.add(3)
    with background.paused() as stopped:
        assert stopped
        with background.paused():  # a nested scan shares the pause
            clock.now += 0.1
        assert sent == [(3, signal.SIGSTOP), (7, signal.SIGSTOP)]
    assert sent[2:] == [(3, signal.SIGCONT), (7, signal.SIGCONT)]
    assert background.paused_count == 1


def test_pauses_stop_once_the_processes_stood_still_half_the_window():
    clock = Clock()
    sent: list[tuple[int, int]] = []
    background = Background(max_share=0.5, window=2.0, clock=clock, kill=lambda pid, signo: sent.append((pid, signo)))
    background.add(5)
    for _ in range(2):  # 2 x 0.5 s still in 1.2 s: half the 2 s window
        with background.paused():
            clock.now += 0.5
        clock.now += 0.1
    with background.paused() as stopped:
        assert not stopped  # the background work gets its turn
    assert background.skipped_count == 1
    clock.now += 1.5  # the first pause left the window
    with background.paused() as stopped:
        assert stopped


def test_a_process_forgotten_during_a_pause_is_continued_and_a_gone_one_is_skipped():
    sent: list[tuple[int, int]] = []

    def kill(pid: int, signo: int) -> None:
        if pid == 9:
            raise ProcessLookupError
        sent.append((pid, signo))

    background = Background(kill=kill)
    background.add(4)
    background.add(9)  # already gone
    with background.paused() as stopped:
        assert stopped
        background.discard(4)  # it ended (or is about to be killed) mid-pause
        assert sent == [(4, signal.SIGSTOP), (4, signal.SIGCONT)]
    assert sent == [(4, signal.SIGSTOP), (4, signal.SIGCONT)]  # not continued twice


def wait_for_stop(pid: int) -> str:
    """The process's state once it shows "T", or after 2 s.  SIGSTOP is delivered asynchronously: a
    child running on the other core shows "R" for a moment after the signal (seen once in CI under load)."""
    deadline = time.monotonic() + 2.0
    while state(pid) != "T" and time.monotonic() < deadline:
        time.sleep(0.001)
    return state(pid)


@linux_only
@pytest.mark.parametrize("cores", [2, 1])
async def test_the_batcher_stops_a_short_process_for_a_light_batch_and_a_build_for_scans_only(monkeypatch, cores):
    """A graph update (short) stands still for the whole of a light load's batch; an index build only
    while the scan's halves run at once (with one core they run one after the other: no stop)."""
    monkeypatch.setattr(quantized, "SPLIT_ROWS", 1000)
    rows = np.random.default_rng(0).standard_normal((4000, 16)).astype(np.float32)
    rows /= np.linalg.norm(rows, axis=1, keepdims=True)
    coarse = Int8Rows.from_rows(rows)
    sleeper = [sys.executable, "-c", "import time; time.sleep(60)"]
    update = await trio.lowlevel.open_process(sleeper)
    build = await trio.lowlevel.open_process(sleeper)
    try:
        background = Background()
        background.add(update.pid, short=True)
        background.add(build.pid)
        seen: list[tuple[str, str]] = []

        class Source:
            def __len__(self) -> int:
                return 4000

            def search(self, query, k, threshold=None):
                seen.append((wait_for_stop(update.pid), state(build.pid)))  # before the scan
                found = coarse.candidates(np.asarray(query, np.float32), k)
                seen.append((state(update.pid), state(build.pid)))  # after it
                return found

        real = quantized.run_parallel

        def pieces_note_the_state(jobs):  # the first piece notes the states while it runs
            def first():
                seen.append((state(update.pid), wait_for_stop(build.pid)))
                return jobs[0]()

            return real([first, *jobs[1:]])

        monkeypatch.setattr(quantized, "run_parallel", pieces_note_the_state)
        batcher = SearchBatcher(trio.CapacityLimiter(cores), background=background)
        await batcher.search(Source(), rows[0].tolist(), 10)
        running = "RS"
        assert seen[0][0] == "T" and seen[0][1] in running  # the batch stopped the update only
        if cores == 2:  # the halves ran at once: the build stood still for them, and went on after
            assert seen[1] == ("T", "T") and seen[2][0] == "T"
        else:  # one core: the halves ran in the batch's thread, the build was left alone
            assert seen[1][0] == "T" and seen[1][1] in running and len(seen) == 3
        for process in (update, build):
            with trio.move_on_after(5):
                while state(process.pid) == "T":
                    await trio.sleep(0.01)
            assert state(process.pid) in running  # continued once the batch was done
        assert background.paused_count == 1  # one pause for the batch, extended by the scan's halves
    finally:
        for process in (update, build):
            process.kill()
            await process.wait()


def test_a_nested_pause_stops_what_the_outer_one_left_and_continues_only_that():
    sent: list[tuple[int, int]] = []
    clock = Clock()
    background = Background(clock=clock, kill=lambda pid, signo: sent.append((pid, signo)))
    background.add(1, short=True)
    background.add(2)
    with background.paused(short_only=True) as stopped:
        assert stopped and sent == [(1, signal.SIGSTOP)]
        with background.paused():
            assert sent[1:] == [(2, signal.SIGSTOP)]
            clock.now += 0.2
        assert sent[2:] == [(2, signal.SIGCONT)]  # the inner pause continues what it stopped
        clock.now += 0.1
    assert sent[3:] == [(1, signal.SIGCONT)]
    assert background.paused_count == 1 and background._share(clock.now) == pytest.approx(0.3 / 2.0)
    with background.paused(short_only=True):  # a second light batch: a second pause
        pass
    background.discard(1)  # the update ended: only the build is left, which a light batch leaves alone
    with background.paused(short_only=True) as stopped:
        assert not stopped
    assert background.paused_count == 2 and len(sent) == 6


def test_a_pause_reaching_back_past_the_window_counts_only_its_part():
    clock = Clock()
    background = Background(max_share=0.5, window=2.0, clock=clock, kill=lambda pid, signo: None)
    background.add(5)
    with background.paused():
        clock.now += 1.5  # 100.0 - 101.5
    clock.now += 1.2  # 102.7: the window starts at 100.7, so 0.8 s of that pause is in it (40 %)
    with background.paused() as stopped:
        assert stopped
        clock.now += 0.1
    assert background.skipped_count == 0
    for _ in range(400):  # many short pauses, to 103.2: the share stays exact (a running total, not a re-sum)
        with background.paused():
            clock.now += 0.0005
        clock.now += 0.0005
    # the window (101.2 - 103.2) holds 0.3 s of the first pause, 0.1 s and 0.2 s of short ones: 30 %
    assert background._share(clock.now) == pytest.approx(0.3, abs=1e-6)
    assert background.skipped_count == 0


@linux_only
def test_a_stopped_background_process_ends_when_the_daemon_dies():
    script = (
        "import os, signal, subprocess, sys, time\n"
        "from fabstir_node.priority import background_spawn\n"
        "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'], **background_spawn())\n"
        "time.sleep(0.5)\n"
        "os.kill(child.pid, signal.SIGSTOP)\n"  # a search's pause ...
        "stat = f'/proc/{child.pid}/stat'\n"
        "while open(stat).read().rsplit(')', 1)[1].split()[0] != 'T':\n"  # ... once it has taken effect
        "    time.sleep(0.01)\n"
        "print(child.pid, flush=True)\n"
        "os._exit(0)\n"  # the daemon dies mid-pause: its stopped child must not outlive it
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=30)
    pid = int(out.stdout.split()[0])
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            if state(pid) == "Z":
                break
        except FileNotFoundError:
            break
        time.sleep(0.05)
    else:
        os.kill(pid, signal.SIGKILL)
        pytest.fail(f"the stopped child outlived its parent (state {state(pid)})")


@linux_only
async def test_spawn_starts_a_registered_idle_process_in_a_group_of_its_own():
    background = Background()
    child = await background.spawn([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        assert len(background) == 1 and os.getpgid(child.pid) == child.pid
        if hasattr(os, "SCHED_IDLE"):
            assert os.sched_getscheduler(child.pid) == os.SCHED_IDLE
    finally:
        background.discard(child.pid)
        child.kill()
        await child.wait()
    assert len(background) == 0


async def test_a_busy_nodes_larger_batch_leaves_the_background_its_time():
    """A batch of more than PAUSE_BATCH walks (no whole-database scan) stops nothing; one of one does."""
    from trio.testing import wait_all_tasks_blocked

    from fabstir_node.service.batcher import PAUSE_BATCH

    sent: list[tuple[int, int]] = []
    background = Background(kill=lambda pid, signo: sent.append((pid, signo)))
    background.add(11, short=True)

    class Source:
        def __len__(self) -> int:
            return 50_000

        def search(self, query, k, threshold=None):
            return [0]

    limiter = trio.CapacityLimiter(1)
    batcher = SearchBatcher(limiter, background=background)
    await batcher.search(Source(), [1.0, 0.0], 1)  # alone: a batch of one
    assert background.paused_count == 1 and [signo for _, signo in sent] == [signal.SIGSTOP, signal.SIGCONT]
    source = Source()
    async with trio.open_nursery() as nursery:
        await limiter.acquire()  # the searches queue behind this token and join one batch
        for _ in range(PAUSE_BATCH + 1):
            nursery.start_soon(batcher.search, source, [1.0, 0.0], 1)
        await wait_all_tasks_blocked()
        limiter.release()
    assert batcher.batches == 2 and batcher.searches == PAUSE_BATCH + 2
    assert background.paused_count == 1  # the larger batch did not stop the process
