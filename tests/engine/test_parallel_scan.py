"""A large scan split in halves: the same candidates, at once when the service lends a spare core."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import trio

from fabstir_node.engine import parallel, quantized
from fabstir_node.engine.quantized import Int8Rows, code_candidates
from fabstir_node.service.batcher import SearchBatcher


def unit_rows(n: int, d: int, seed: int = 0) -> np.ndarray:
    rows = np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


@pytest.fixture
def small_split(monkeypatch):
    monkeypatch.setattr(quantized, "SPLIT_ROWS", 1000)


def test_halves_give_the_best_rows_of_the_whole(small_split):
    rows = unit_rows(5001, 24)
    coarse = Int8Rows.from_rows(rows)
    for q in unit_rows(20, 24, seed=1):
        whole = coarse.scores(q)
        want = set(np.argsort(-whole, kind="stable")[:50].tolist())
        got = code_candidates(coarse._codes, coarse._scales, q, 50)
        assert len(got) == 50 and len(set(got.tolist())) == 50
        kth = np.sort(whole)[-50]
        assert set(got.tolist()) == want or np.all(whole[got] >= kth - 1e-6)  # ties at the cut


def test_a_lent_runner_runs_the_halves_and_one_that_declines_leaves_them_here(small_split):
    rows = unit_rows(4000, 16)
    coarse = Int8Rows.from_rows(rows)
    q = unit_rows(1, 16, seed=3)[0]
    alone = set(coarse.candidates(q, 30).tolist())
    calls: list[int] = []

    def runner(jobs):
        calls.append(len(jobs))
        return [job() for job in reversed(jobs)][::-1]  # run, in another order

    with parallel.lent(runner):
        assert set(coarse.candidates(q, 30).tolist()) == alone
    assert calls == [2]
    with parallel.lent(lambda jobs: None):  # no spare core: the search runs them itself
        assert set(coarse.candidates(q, 30).tolist()) == alone
    assert set(coarse.candidates(q, 30).tolist()) == alone  # nothing lent outside the block


class _Splitting:
    """A source whose search runs two pieces through ``run_parallel`` and reports their threads."""

    def __init__(self, hold: float = 0.05) -> None:
        self.hold = hold

    def search(self, query, k, threshold=None):
        def piece() -> int:
            trio_sleep_in_thread(self.hold)
            return threading.get_ident()

        return parallel.run_parallel([piece, piece])


def trio_sleep_in_thread(seconds: float) -> None:
    threading.Event().wait(seconds)


async def test_the_batcher_runs_the_pieces_on_a_spare_core_at_once():
    limiter = trio.CapacityLimiter(2)
    batcher = SearchBatcher(limiter)
    with trio.fail_after(10):
        started = trio.current_time()
        first, second = await batcher.search(_Splitting(0.2), [0.0], 10)
        elapsed = trio.current_time() - started
    assert first != second  # two threads
    assert elapsed < 0.39  # at once, not one after the other
    assert limiter.borrowed_tokens == 0  # the spare token went back


async def test_without_a_spare_core_the_search_runs_its_pieces_itself():
    limiter = trio.CapacityLimiter(1)
    batcher = SearchBatcher(limiter)
    with trio.fail_after(10):
        first, second = await batcher.search(_Splitting(0.01), [0.0], 10)
    assert first == second  # the batch's own thread ran both
    assert limiter.borrowed_tokens == 0


class _Failing:
    def search(self, query, k, threshold=None):
        def bad() -> None:
            raise ValueError("a piece failed")

        return parallel.run_parallel([lambda: 1, bad])


async def test_a_piece_that_fails_fails_its_search_with_its_own_error():
    limiter = trio.CapacityLimiter(2)
    batcher = SearchBatcher(limiter)
    with trio.fail_after(10), pytest.raises(ValueError, match="a piece failed"):
        await batcher.search(_Failing(), [0.0], 10)
    assert limiter.borrowed_tokens == 0
