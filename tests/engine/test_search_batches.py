"""Searches answered together (matrix.search_many, HnswIndex.search_batch, service/batcher.py)
give each request what it gets alone: the same hits, the same errors, the same exact fallback."""

from __future__ import annotations

import numpy as np
import pytest
import trio
import trio.testing

from fabstir_node.engine import calibration as cal
from fabstir_node.engine.hnsw import HnswIndex
from fabstir_node.engine.matrix import VectorMatrix
from fabstir_node.errors import FabstirError
from fabstir_node.service.batcher import SearchBatcher
from fabstir_node.storage.index_builder import build_index


def unit(rows: np.ndarray) -> np.ndarray:
    return (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)


def clustered_database(
    seed: int, n: int, d: int, *, centres: int, noise: float, queries: int, spread: float
) -> tuple[VectorMatrix, np.ndarray, np.ndarray]:
    """A f16 matrix of ``n`` unit rows around ``centres`` random centres (Gaussian ``noise``), its float32
    rows, and ``queries`` near them (a row plus ``spread`` of noise) followed by as many random directions."""
    rng = np.random.default_rng(seed)
    middle = rng.standard_normal((centres, d)).astype(np.float32)
    rows = unit(middle[rng.integers(0, centres, n)] + noise * rng.standard_normal((n, d)).astype(np.float32))
    matrix = VectorMatrix.from_arrays([f"v{i}" for i in range(n)], rows.copy(), [b'{"i":1}'] * n, dtype="f16")
    near = unit(rows[rng.integers(0, n, queries)] + spread * rng.standard_normal((queries, d)).astype(np.float32))
    far = unit(rng.standard_normal((queries, d)).astype(np.float32))
    return matrix, rows, np.concatenate([near, far])


@pytest.fixture(scope="module")
def graph_matrix():
    matrix, _, queries = clustered_database(3, 3000, 24, centres=10, noise=0.9, queries=30, spread=0.3)
    graph = build_index(matrix.vectors, connectivity=8, expansion_add=32, threads=1)
    # a trust floor at the median 10th score: about half the answers go to the exact path
    plain = HnswIndex(graph, matrix.vectors, expansion_search=32)
    tops = [plain.search(q, 10)[1][-1] for q in queries]
    floor = float(np.median(tops))
    index = HnswIndex(graph, matrix.vectors, calibration=cal.Calibration(32, min_kth_score=floor))
    return matrix.with_index(index), index, queries


def _same(a, b) -> None:
    assert [h.id for h in a.hits] == [h.id for h in b.hits]
    assert [h.score for h in a.hits] == [h.score for h in b.hits]
    assert [h.metadata for h in a.hits] == [h.metadata for h in b.hits]
    assert a.total == b.total


def test_a_graph_batch_answers_each_query_as_alone_including_untrusted(graph_matrix):
    _, index, queries = graph_matrix
    alone = [index.search(q, 10) for q in queries]
    together = index.search_batch(queries, 10)
    assert sum(a is None for a in alone) > 5 and sum(a is not None for a in alone) > 5
    for a, t in zip(alone, together):
        if a is None:
            assert t is None
        else:
            assert t is not None
            assert a[0].tolist() == t[0].tolist() and a[1].tolist() == t[1].tolist()


def test_search_many_gives_each_request_its_own_answer_or_error(graph_matrix):
    matrix, _, queries = graph_matrix
    requests = [(q.tolist(), 10 if i % 3 else 4, None if i % 4 else 0.2) for i, q in enumerate(queries)]
    bad = [([1.0] * 5, 10, None), ([0.0] * 24, 10, None), (queries[0].tolist(), 0, None),
           (queries[0].tolist(), 10, float("nan")), ("nope", 10, None)]
    mixed = requests[:7] + bad + requests[7:]
    answers = matrix.search_many(mixed)
    assert len(answers) == len(mixed)
    for (query, k, threshold), answer in zip(mixed, answers):
        try:
            want = matrix.search(query, k, threshold=threshold)
        except FabstirError as error:
            assert isinstance(answer, FabstirError)
            assert (answer.code, str(answer)) == (error.code, str(error))
        else:
            _same(answer, want)


def test_search_many_without_a_graph_is_the_exact_search(graph_matrix):
    matrix, _, queries = graph_matrix
    exact = matrix.with_index(None)
    for q, answer in zip(queries, exact.search_many([(q, 10, None) for q in queries])):
        _same(answer, exact.search(q, 10))


class _Source:
    """A search source that records its batches; queries are ints, -1 raises."""

    def __init__(self) -> None:
        self.batches: list[int] = []

    def __len__(self) -> int:
        return 100_000

    def _one(self, query, k):
        if query == -1:
            raise FabstirError("INVALID_MESSAGE", "bad query")  # type: ignore[arg-type]
        return ("answer", query, k)

    def search(self, query, k, threshold=None):
        self.batches.append(1)
        return self._one(query, k)

    def search_many(self, requests):
        self.batches.append(len(requests))
        out = []
        for query, k, _ in requests:
            try:
                out.append(self._one(query, k))
            except FabstirError as error:
                out.append(error)
        return out


async def test_concurrent_searches_join_batches_and_keep_their_own_answers_and_errors():
    source = _Source()
    batcher = SearchBatcher(trio.CapacityLimiter(1))
    got: dict[int, object] = {}

    async def one(i: int) -> None:
        try:
            got[i] = await batcher.search(source, -1 if i % 7 == 3 else i, 10)
        except FabstirError as error:
            got[i] = error

    async with trio.open_nursery() as nursery:
        for i in range(40):
            nursery.start_soon(one, i)
    for i in range(40):
        if i % 7 == 3:
            assert isinstance(got[i], FabstirError)
        else:
            assert got[i] == ("answer", i, 10)
    assert sum(source.batches) == 40
    assert len(source.batches) < 40  # they did not run one at a time
    assert batcher.searches == 40


async def test_a_cancelled_leader_hands_its_batch_on():
    source = _Source()
    limiter = trio.CapacityLimiter(1)
    batcher = SearchBatcher(limiter)
    got: dict[int, object] = {}
    await limiter.acquire()  # every batch waits for the token
    async with trio.open_nursery() as nursery:
        leader = trio.CancelScope()

        async def lead() -> None:
            with leader:
                got[0] = await batcher.search(source, 0, 10)

        async def follow(i: int) -> None:
            got[i] = await batcher.search(source, i, 10)

        nursery.start_soon(lead)
        await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(follow, 1)
        nursery.start_soon(follow, 2)
        await trio.testing.wait_all_tasks_blocked()
        leader.cancel()
        await trio.testing.wait_all_tasks_blocked()
        limiter.release()
    assert 0 not in got
    assert got[1] == ("answer", 1, 10) and got[2] == ("answer", 2, 10)
    assert source.batches == [2]


async def test_a_cancelled_follower_leaves_the_batch():
    source = _Source()
    limiter = trio.CapacityLimiter(1)
    batcher = SearchBatcher(limiter)
    got: dict[int, object] = {}
    await limiter.acquire()
    async with trio.open_nursery() as nursery:
        scope = trio.CancelScope()

        async def one(i: int, cancel_scope=None) -> None:
            if cancel_scope is None:
                got[i] = await batcher.search(source, i, 10)
            else:
                with cancel_scope:
                    got[i] = await batcher.search(source, i, 10)

        nursery.start_soon(one, 0)
        await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(one, 1, scope)
        nursery.start_soon(one, 2)
        await trio.testing.wait_all_tasks_blocked()
        scope.cancel()
        await trio.testing.wait_all_tasks_blocked()
        limiter.release()
    assert got == {0: ("answer", 0, 10), 2: ("answer", 2, 10)}
    assert source.batches == [2]


@pytest.fixture(scope="module")
def coarse_matrix():
    """60,000 rows: exact searches take their candidates from the 8-bit copy (COARSE_MIN_ROWS)."""
    from fabstir_node.engine.quantized import Int8Rows

    matrix, rows, queries = clustered_database(5, 60_000, 32, centres=40, noise=0.7, queries=12, spread=0.2)
    return matrix, Int8Rows.from_rows(rows), rows, queries


@pytest.mark.parametrize("layout", ["plain", "packed"])
@pytest.mark.parametrize("split", [False, True])
def test_candidates_of_many_queries_in_one_pass_are_each_querys_best_by_code_score(
    coarse_matrix, layout, split, monkeypatch
):
    from fabstir_node.engine import quantized

    if split:  # the scan in two halves, as large databases have it
        monkeypatch.setattr(quantized, "SPLIT_ROWS", 1000)
    _, coarse, _, queries = coarse_matrix
    copy = coarse.packed_copy(block=7000) if layout == "packed" else coarse
    assert copy.packed == (layout == "packed")
    query_codes, _ = quantized.quantize_rows(queries)
    reference = (coarse.codes.astype(np.int64) @ query_codes.astype(np.int64).T) * coarse.scales[:, None]
    many = copy.candidates_many(queries, 96)
    assert len(many) == len(queries)
    for i, (q, found) in enumerate(zip(queries, many)):
        assert len(found) == 96 and found.dtype == np.int64 and len(set(found.tolist())) == 96
        chosen = np.zeros(len(reference), bool)
        chosen[found] = True
        # a best 96 by code score (ties at the cut may go either way), and what the query gets alone
        assert reference[chosen, i].min() >= reference[~chosen, i].max() - 1e-6
        assert set(found.tolist()) == set(copy.candidates(q, 96).tolist())
    everything = copy.candidates_many(queries[:2], 10**6)  # more than there are rows: every row
    assert [len(rows) for rows in everything] == [60_000, 60_000]


@pytest.mark.parametrize("with_graph", [False, True])
def test_exact_answers_of_a_batch_come_from_one_pass_and_equal_each_alone(coarse_matrix, with_graph, monkeypatch):
    from fabstir_node.engine.quantized import Int8Rows

    matrix, coarse, rows, queries = coarse_matrix
    matrix = matrix.with_index(None, coarse=coarse.packed_copy())
    if with_graph:  # a graph that trusts no answer: every one is declined to the exact path
        graph = build_index(matrix.vectors, connectivity=8, expansion_add=32, threads=1)
        matrix = matrix.with_index(HnswIndex(graph, matrix.vectors, calibration=cal.Calibration(32, min_kth_score=2.0)),
                                   coarse=matrix.coarse)
    passes: list[int] = []
    real = Int8Rows.candidates_many

    def counted(self, qs, count):
        passes.append(len(qs))
        return real(self, qs, count)

    monkeypatch.setattr(Int8Rows, "candidates_many", counted)
    answers = matrix.search_many([(q, 10, None) for q in queries] + [([1.0], 10, None)])
    assert passes == [len(queries)]  # one pass for the whole batch (the bad query failed on its own)
    assert isinstance(answers[-1], FabstirError)
    for q, answer in zip(queries, answers):
        alone = matrix.search(q, 10)
        _same(answer, alone)
        assert answer.path == alone.path == ("declined" if with_graph else "exact")
    truth = np.argsort(-(rows @ queries[0]))[:10]  # and it is the exact answer
    assert {int(h.id[1:]) for h in answers[0].hits} == set(truth.tolist())
