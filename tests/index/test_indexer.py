"""The daemon's disk cache and background HNSW, through real sessions on loopback."""

from __future__ import annotations

import numpy as np
import pytest
import trio

from fabstir_node.storage import disk_cache as persist

OWNER = "0xAbCdEf0000000000000000000000000000000001"
DIM = 16


def brute_force(vectors: np.ndarray, ids: list[str], query: np.ndarray, k: int, passes=None) -> list[str]:
    scores = vectors.astype(np.float64) @ query.astype(np.float64)
    order = sorted((i for i in range(len(ids)) if passes is None or passes(i)), key=lambda i: (-scores[i], i))
    return [ids[i] for i in order[:k]]


def near_queries(vectors: np.ndarray, count: int, seed: int = 4) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    out = []
    for row in rng.integers(0, len(vectors), count):
        q = vectors[row] + 0.1 * rng.standard_normal(vectors.shape[1]).astype(np.float32)
        out.append(q / np.linalg.norm(q))
    return out


async def load(client, path: str, session_id: str = "s") -> dict:
    ack = await client.session_init(session_id, manifest_path=path, user_address=OWNER.lower())
    assert ack["type"] == "session_init_ack", ack
    return await client.wait_loaded(60)


def only_entry(running):
    (entry,) = running.node.cache.entries()
    return entry


async def until_mode(entry, mode: str, seconds: float = 60) -> None:
    with trio.fail_after(seconds):
        while entry.mode != mode:
            await trio.sleep(0.02)


def chunk_events(client) -> int:
    return sum(p["event"] == "chunk_downloaded" for p in client.progress())


@pytest.fixture
def settings(tmp_path):
    return {"metrics_port": 0, "request_rate_per_second": 10_000.0, "request_rate_burst": 10_000.0,
            "cache_dir": tmp_path / "cache", "hnsw_min_vectors": 500, "hnsw_expansion_add": 64,
            "vector_dtype": "f16"}


async def test_exact_answers_at_once_then_the_graph_is_swapped_in(start_node, publish_local, settings):
    path, (ids, vectors, metas) = publish_local(1500, DIM, owner=OWNER, chunk_size=300)
    async with start_node(**settings) as running, running.client() as client:
        assert (await load(client, path))["event"] == "loading_complete"
        entry = only_entry(running)
        modes, answered = set(), 0
        with trio.fail_after(60):
            while entry.mode != "hnsw":  # exact search keeps answering while the builder process runs
                modes.add(entry.mode)
                reply = await client.search(near_queries(vectors, 1, seed=answered)[0].tolist(), 5)
                assert reply["type"] == "searchVectorsResponse" and len(reply["results"]) == 5
                answered += 1
                await trio.sleep(0.01)
        assert "exact" in modes and answered > 0
        assert entry.engine.index is not None
        overlap = []
        for q in near_queries(vectors, 20):
            reply = await client.search(q.tolist(), 10)
            overlap.append(len({r["id"] for r in reply["results"]} & set(brute_force(vectors, ids, q, 10))) / 10)
        assert np.mean(overlap) >= 0.95
        # a selective filter on the HNSW path gives exactly the brute-force answer
        folder = metas[0]["folderPath"]
        chunk = {"folderPath": folder, "chunkIndex": 2}
        passes = lambda i: metas[i]["folderPath"] == folder and metas[i]["chunkIndex"] == 2  # noqa: E731
        for q in near_queries(vectors, 5, seed=8):
            reply = await client.search(q.tolist(), 10, metadata_filter=chunk)
            assert [r["id"] for r in reply["results"]] == brute_force(vectors, ids, q, 10, passes)
            assert all(r["metadata"]["chunkIndex"] == 2 for r in reply["results"])
    directory = settings["cache_dir"] / entry.key
    assert persist.has_index(directory) and persist.open_matrix(directory, key=entry.key).index is not None


async def test_a_bf16_database_loads_builds_its_graph_and_comes_back_after_a_restart(
    start_node, publish_local, settings
):
    settings = {**settings, "vector_dtype": "bf16"}
    path, (ids, vectors, metas) = publish_local(1200, DIM, owner=OWNER, chunk_size=400)

    async def answers(client) -> float:
        overlap = []
        for q in near_queries(vectors, 20):
            reply = await client.search(q.tolist(), 10)
            for r in reply["results"]:  # scores of the stored bf16 rows: close to float32 truth
                assert r["score"] == pytest.approx(float(vectors[ids.index(r["id"])] @ q), abs=1e-2)
            overlap.append(len({r["id"] for r in reply["results"]} & set(brute_force(vectors, ids, q, 10))) / 10)
        return float(np.mean(overlap))

    async with start_node(**settings) as running, running.client() as client:
        assert (await load(client, path))["event"] == "loading_complete"
        entry = only_entry(running)
        await until_mode(entry, "hnsw")
        assert entry.engine.dtype == "bf16" and entry.engine.vectors.dtype == np.uint16
        assert await answers(client) >= 0.9
    async with start_node(**settings) as running, running.client() as client:
        assert (await load(client, path))["event"] == "loading_complete"
        entry = only_entry(running)
        assert entry.mode == "hnsw" and entry.engine.dtype == "bf16"  # from the disk cache, graph and all
        assert await answers(client) >= 0.9


async def test_a_restart_opens_the_saved_database_and_graph(start_node, publish_local, settings):
    path, (ids, vectors, _) = publish_local(1000, DIM, owner=OWNER, chunk_size=250)
    async with start_node(**settings) as running, running.client() as client:
        await load(client, path)
        await until_mode(only_entry(running), "hnsw")
        before = [await client.search(q.tolist(), 10, threshold=0.5) for q in near_queries(vectors, 5)]
        assert chunk_events(client) == 4
    async with start_node(**settings) as running, running.client() as client:
        final = await load(client, path)
        assert final["event"] == "loading_complete" and final["vector_count"] == 1000
        assert chunk_events(client) == 0  # nothing downloaded
        entry = only_entry(running)
        await until_mode(entry, "hnsw", seconds=5)
        after = [await client.search(q.tolist(), 10, threshold=0.5) for q in near_queries(vectors, 5)]
        assert [r["results"] for r in after] == [r["results"] for r in before]


async def test_a_corrupt_saved_database_is_discarded_downloaded_and_saved_again(start_node, publish_local, settings):
    path, (ids, vectors, _) = publish_local(800, DIM, owner=OWNER, chunk_size=200)
    async with start_node(**settings) as running, running.client() as client:
        await load(client, path)
        entry = only_entry(running)
        await until_mode(entry, "hnsw")
    directory = settings["cache_dir"] / entry.key
    with open(directory / "vectors.npy", "rb+") as f:
        f.seek(200)
        f.write(b"\xff" * 64)
    async with start_node(**settings) as running, running.client() as client:
        assert (await load(client, path))["event"] == "loading_complete"
        assert chunk_events(client) == 4  # downloaded again
        await until_mode(only_entry(running), "hnsw")
        for q in near_queries(vectors, 5):
            reply = await client.search(q.tolist(), 3)
            assert reply["results"][0]["id"] == brute_force(vectors, ids, q, 1)[0]
    assert persist.open_matrix(directory, key=entry.key).index is not None


async def test_small_databases_are_saved_but_stay_exact(start_node, publish_local, settings):
    path, (ids, vectors, _) = publish_local(300, DIM, owner=OWNER, chunk_size=100)
    async with start_node(**settings) as running, running.client() as client:
        await load(client, path)
        entry = only_entry(running)
        with trio.fail_after(30):
            while not (settings["cache_dir"] / entry.key).exists():
                await trio.sleep(0.02)
        q = near_queries(vectors, 1)[0]
        reply = await client.search(q.tolist(), 10)
        assert [r["id"] for r in reply["results"]] == brute_force(vectors, ids, q, 10)
    assert entry.mode == "exact" and not persist.has_index(settings["cache_dir"] / entry.key)


async def test_sessions_loading_together_share_one_load_and_one_build(start_node, publish_local, settings):
    path, (ids, vectors, _) = publish_local(1200, DIM, owner=OWNER, chunk_size=300)
    async with start_node(**settings) as running:
        indexer = running.node.indexer
        builds = []
        real_build = indexer._build

        async def counted(*args):
            builds.append(args[0])
            return await real_build(*args)

        indexer._build = counted
        finals = []

        async def session(n: int) -> None:
            async with running.client() as client:
                finals.append(await load(client, path, session_id=f"s{n}"))
                finals.append(chunk_events(client))

        async with trio.open_nursery() as nursery:
            for n in range(3):
                nursery.start_soon(session, n)
        entry = only_entry(running)
        await until_mode(entry, "hnsw")
        assert builds == [entry.key]
        assert [f["event"] for f in finals if isinstance(f, dict)] == ["loading_complete"] * 3
        assert [f for f in finals if isinstance(f, int)] == [4, 4, 4]  # every session saw the shared progress


async def test_an_evicted_database_comes_back_from_disk(start_node, publish_local, settings):
    path_a, (ids, vectors, _) = publish_local(600, DIM, owner=OWNER, name="a", chunk_size=200, seed=1)
    path_b, _ = publish_local(600, DIM, owner=OWNER, name="b", chunk_size=200, seed=2)
    async with start_node(cache_entries=1, **settings) as running:
        async with running.client() as client:
            await load(client, path_a)
            key_a = only_entry(running).key
            await until_mode(only_entry(running), "hnsw")
        async with running.client() as client:
            await load(client, path_b)
            with trio.fail_after(10):  # a's session is gone, so b's arrival evicts it
                while key_a in [e.key for e in running.node.cache.entries()]:
                    await trio.sleep(0.02)
            assert len(running.node.cache) == 1
        async with running.client() as client:
            await load(client, path_a)
            assert chunk_events(client) == 0
            q = near_queries(vectors, 1)[0]
            reply = await client.search(q.tolist(), 1)
            assert reply["results"][0]["id"] == brute_force(vectors, ids, q, 1)[0]



def _children() -> list[int]:
    """Live (not zombie) child processes of this test process."""
    import os
    from pathlib import Path

    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == os.getpid() and fields[0] != "Z":
            found.append(int(stat.parent.name))
    return found


@pytest.mark.skipif(not __import__("os").path.exists("/proc/self/stat"), reason="needs /proc")
async def test_cancelling_the_cache_kills_the_builder_and_leaves_no_graph(tmp_path):
    from _index_data import make_matrix

    from fabstir_node.service.cache import CachedDatabase
    from fabstir_node.service.indexer import Indexer

    matrix, _ = make_matrix(20_000, 32)
    indexer = Indexer(tmp_path, min_vectors=1000, expansion_add=256)
    entry = CachedDatabase(key="cd" * 32, engine=matrix)
    assert _children() == []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(indexer.on_loaded, entry)
        with trio.fail_after(30):
            while not _children():
                await trio.sleep(0.01)
        nursery.cancel_scope.cancel()
    assert _children() == []
    assert entry.mode == "exact" and not persist.has_index(tmp_path / entry.key)
    assert persist.open_matrix(tmp_path / entry.key, key=entry.key).index is None  # the matrix was saved


async def test_a_late_subscriber_misses_no_event_emitted_during_its_replay():
    """Regression: events emitted while a joining session replays the history used to be lost."""
    from fabstir_node.service.cache import DatabaseCache

    cache = DatabaseCache()
    release = trio.Event()

    async def loader(flight):
        for i in range(3):
            await flight.emit("chunk_downloaded", f"chunk {i}", chunk_id=i)
            await trio.sleep(0.01)
        await release.wait()
        return object()

    seen: dict[str, list[int]] = {"first": [], "second": []}

    def recorder(name):
        async def emit(event, message, **extra):
            seen[name].append(extra["chunk_id"])
            if name == "second" and len(seen[name]) == 1:
                await trio.sleep(0.05)  # a slow replay: the flight emits meanwhile
        return emit

    async with trio.open_nursery() as nursery:
        await nursery.start(cache.run)

        async def join(name, delay):
            await trio.sleep(delay)
            entry = await cache.acquire("k", loader, recorder(name))
            cache.release(entry)

        nursery.start_soon(join, "first", 0)
        nursery.start_soon(join, "second", 0.005)
        await trio.sleep(0.2)
        release.set()
        await trio.sleep(0.05)
        nursery.cancel_scope.cancel()
    assert seen == {"first": [0, 1, 2], "second": [0, 1, 2]}


async def test_the_graph_builder_is_registered_for_pauses_while_it_runs(start_node, publish_local, settings):
    import os

    path, _ = publish_local(1500, DIM, owner=OWNER, chunk_size=300)
    async with start_node(**settings) as running, running.client() as client:
        background = running.node.background
        seen: set[int] = set()
        groups: set[tuple[int, int]] = set()

        async def watch() -> None:
            while True:
                for pid in background._pids:
                    seen.add(pid)
                    try:
                        groups.add((pid, os.getpgid(pid)))
                    except ProcessLookupError:
                        pass
                await trio.sleep(0.005)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(watch)
            assert (await load(client, path))["event"] == "loading_complete"
            await until_mode(only_entry(running), "hnsw")
            nursery.cancel_scope.cancel()
        assert len(seen) == 1  # the builder, while it ran
        (pid,) = seen
        assert groups == {(pid, pid)}  # in a process group of its own (ended if the daemon dies mid-pause)
        assert len(background) == 0  # and forgotten once it ended
        with pytest.raises(ProcessLookupError):
            os.getpgid(pid)  # reaped
