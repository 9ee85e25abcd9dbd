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


def _filled_packed(rows: np.ndarray, starts: list[int], sizes: list[int], sink=None) -> Int8Rows:
    coarse = Int8Rows(len(rows), rows.shape[1], packed=True, sink=sink)
    threads = [threading.Thread(target=coarse.fill, args=(s, rows[s : s + n])) for s, n in zip(starts, sizes)]
    for thread in threads:  # blocks arrive in any order, from several threads at once
        thread.start()
    for thread in threads:
        thread.join()
    return coarse


@pytest.mark.parametrize("split", [True, False])
def test_packed_blocks_pick_the_same_candidates_as_the_plain_codes(small_split, monkeypatch, split):
    if not split:
        monkeypatch.setattr(quantized, "SPLIT_ROWS", 10**9)
    rows = unit_rows(5003, 24, seed=4)
    sizes = [1000, 1000, 1000, 1000, 1003]
    packed = _filled_packed(rows, [4000, 0, 2000, 1000, 3000][::-1], [1003, 1000, 1000, 1000, 1000][::-1])
    assert packed.packed and sum(sizes) == len(packed)
    plain = Int8Rows.from_rows(rows)
    assert np.array_equal(packed.codes, plain.codes) and np.array_equal(packed.scales, plain.scales)
    for q in unit_rows(20, 24, seed=5):
        whole = plain.scores(q)
        got = packed.candidates(q, 40)
        assert len(got) == 40 and len(set(got.tolist())) == 40
        assert np.all(whole[got] >= np.sort(whole)[-40] - 1e-6)  # the best 40 by code score (ties at the cut)
        assert set(got.tolist()) == set(code_candidates(plain.codes, plain.scales, q, 40).tolist()) or split


def test_a_packed_copy_scans_nothing_until_every_row_has_a_block():
    rows = unit_rows(300, 8)
    partial = _filled_packed(rows, [0], [200])
    assert not partial.packed  # rows 200..299 are not in yet: scans take the plain codes
    assert len(partial.candidates(rows[0], 10)) == 10
    partial.fill(200, rows[200:300])
    partial.fill(200, rows[200:300])  # a block filled twice counts once
    assert partial.packed and len(partial._blocks) == 2
    copy = Int8Rows.from_rows(rows).packed_copy(block=64)
    assert copy.packed and set(copy.candidates(rows[5], 10).tolist()) == set(
        Int8Rows.from_rows(rows).candidates(rows[5], 10).tolist())


def test_the_plain_codes_go_to_the_sink_and_come_back_sealed():
    class Sink:
        def __init__(self) -> None:
            self.array = np.zeros((400, 8), np.int8)

        def write(self, start: int, codes: np.ndarray) -> None:
            self.array[start : start + len(codes)] = codes

        def rows(self) -> np.ndarray:
            return self.array

    rows = unit_rows(400, 8, seed=6)
    sink = Sink()
    coarse = _filled_packed(rows, [0, 200], [200, 200], sink=sink)
    with pytest.raises(ValueError):
        coarse.codes  # noqa: B018 - still being written
    held = coarse.nbytes
    coarse.seal()
    assert coarse.codes is sink.array and np.array_equal(coarse.codes, Int8Rows.from_rows(rows).codes)
    assert held == coarse.nbytes - coarse.codes.nbytes  # while written, the plain codes were not held
    with pytest.raises(ValueError):
        Int8Rows(10, 8, sink=Sink())  # a sink only beside packed blocks


def test_a_thread_that_starts_late_leaves_its_blocks_to_the_other(small_split):
    """The two threads of a split scan take blocks as they come, not a fixed half each: a thread held up
    (a busy core) does less of the scan, and the answer is the same."""
    rows = unit_rows(6000, 16)
    coarse = Int8Rows.from_rows(rows)
    packed = coarse.packed_copy(block=500)
    assert packed.packed
    q = unit_rows(1, 16, seed=4)[0]
    alone = set(coarse.candidates(q, 30).tolist())
    parts: list[list[object]] = []

    def runner(jobs):
        results: list[object] = [None, None]

        def run(i: int) -> None:
            results[i] = jobs[i]()

        for i in (1, 0):  # the first piece's thread starts only once the second's has finished
            thread = threading.Thread(target=run, args=(i,))
            thread.start()
            thread.join()
        parts.append(results)
        return results

    with parallel.lent(runner):
        assert set(coarse.candidates(q, 30).tolist()) == alone
        assert set(packed.candidates(q, 30).tolist()) == alone
    assert len(parts) == 2
    assert all(first is None and second is not None for first, second in parts)  # the late one found none left


@pytest.mark.parametrize("duplicates", [False, True])
def test_a_long_single_query_scan_keeps_the_best_rows_of_every_block(monkeypatch, duplicates):
    """Once a query holds its candidates, a block's rows enter only above the worst kept (``_with_block``):
    the result is still the best ``count`` of the whole, also with many equal rows."""
    monkeypatch.setattr(quantized, "SCAN_ROWS", 256)
    monkeypatch.setattr(quantized, "SPLIT_ROWS", 10**9)
    rows = unit_rows(6000, 16, seed=7)
    if duplicates:
        rows[::7] = rows[3]  # 858 copies of one row, spread over every block
    coarse = Int8Rows.from_rows(rows)
    packed = coarse.packed_copy(block=300)
    for q in [*unit_rows(10, 16, seed=8), rows[3]]:
        whole = coarse.scores(q)
        kth = np.sort(whole)[-40]
        for source in (coarse, packed):
            got = source.candidates(q, 40)
            assert len(got) == 40 and len(set(got.tolist())) == 40
            assert np.all(whole[got] >= kth - 1e-6)  # the best 40 by code score (ties at the cut)
