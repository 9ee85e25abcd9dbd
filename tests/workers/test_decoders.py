"""Decode worker processes (service/decoders.py, workers/decode.py): real processes, real pipes."""

from __future__ import annotations

import os
import sys

import numpy as np
import pytest
import trio

from fabstir_node.engine.builder import MatrixBuilder
from fabstir_node.engine.rows import NormalisedBlock
from fabstir_node.errors import ErrorCode, FabstirError
from fabstir_node.formats.blob import encrypt_blob
from fabstir_node.formats.synthetic import synthetic_records
from fabstir_node.formats.writer import build_database
from fabstir_node.service.decoders import DecoderPool, Known, WorkersUnavailable
from fabstir_node.storage import disk_cache as persist
from fabstir_node.workers.decode import ChunkJob, decode_job

OWNER = "0xAbCdEf0000000000000000000000000000000001"
DIM = 16


def chunk_files(n=900, seed=1, fmt="cbor", chunk_size=300):
    files = build_database(synthetic_records(n, DIM, seed=seed), owner=OWNER, name="kb", chunk_size=chunk_size,
                           format=fmt)
    return [body for path, body in sorted(files.items()) if "/chunk-" in path]


def job(chunk_id, count=300, **extra):
    return ChunkJob(chunk_id=chunk_id, expected_count=count, dimensions=DIM, dtype="f16", **extra)


def same(a, b):
    assert a.dimensions == b.dimensions and a.degenerate == b.degenerate
    assert np.array_equal(a.rows, b.rows)
    assert list(a.ids) == list(b.ids) and list(a.metadata) == list(b.metadata)
    assert a.digests == b.digests
    for x, y in ((a.codes, b.codes), (a.scales, b.scales), (a.reused, b.reused)):
        assert (x is None) == (y is None) and (x is None or np.array_equal(x, y))


def alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return not open(f"/proc/{pid}/stat").read().split(")")[-1].split()[0] == "Z"


@pytest.fixture
async def pool(nursery):
    decoders = DecoderPool(2)
    await nursery.start(decoders.run)
    yield decoders
    nursery.cancel_scope.cancel()


@pytest.mark.parametrize("fmt", ["cbor", "json"])
async def test_a_worker_decodes_exactly_what_a_thread_decodes(pool, fmt):
    bodies = chunk_files(fmt=fmt)
    key = bytes(range(32))
    sealed = encrypt_blob(bodies[1], key)
    results = {}

    async def one(i, body, k):
        results[i] = await pool.decode(job(i, coarse=True), bytearray(body), k)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(one, 0, bodies[0], None)
        nursery.start_soon(one, 1, sealed, key)
        nursery.start_soon(one, 2, bodies[2], None)
    for i, body in enumerate([bodies[0], sealed, bodies[2]]):
        same(results[i], decode_job(job(i, coarse=True), body, key if i == 1 else None))
    assert results[0].codes is not None and pool.workers == 2  # three jobs, never more workers than asked


async def test_bad_input_is_the_jobs_error_and_the_worker_lives_on(pool):
    body = chunk_files()[0]
    with pytest.raises(FabstirError) as wrong_id:
        await pool.decode(job(5), body, None)
    assert wrong_id.value.code is ErrorCode.INVALID_DATABASE and "chunkId" in wrong_id.value.message
    with pytest.raises(FabstirError) as damaged:
        await pool.decode(job(0), body[: len(body) // 2], None)  # truncated
    assert damaged.value.code is ErrorCode.INVALID_DATABASE
    with pytest.raises(FabstirError) as wrong_key:
        await pool.decode(job(0), encrypt_blob(body, bytes(32)), bytes(range(32)))
    assert wrong_key.value.code is ErrorCode.DECRYPTION_FAILED
    pids = pool.pids()
    same(await pool.decode(job(0), body, None), decode_job(job(0), body, None))
    assert pool.pids() == pids and all(alive(p) for p in pids)


async def test_a_cancelled_job_kills_its_worker_and_the_next_job_gets_a_new_one(pool):
    body = bytearray(chunk_files(n=30_000, chunk_size=30_000)[0])  # long enough to be cut short
    with trio.move_on_after(0.05):
        await pool.decode(job(0, count=30_000), body, None)
    assert pool.workers == 0
    small = chunk_files()[0]
    same(await pool.decode(job(0), small, None), decode_job(job(0), small, None))


async def test_a_worker_that_dies_fails_its_job_and_is_replaced(pool):
    small = chunk_files()[0]
    await pool.decode(job(0), small, None)
    for pid in pool.pids():
        os.kill(pid, 9)
    with pytest.raises(RuntimeError, match="decode worker failed"):
        await pool.decode(job(0), small, None)
    same(await pool.decode(job(0), small, None), decode_job(job(0), small, None))


def saved_version(bodies, directory):
    """The decoded chunks saved as a disk-cache version (rows, metadata, record digests) under key
    ``directory.name``."""
    first = [decode_job(job(i), b, None) for i, b in enumerate(bodies)]
    builder = MatrixBuilder(sum(len(c.rows) for c in first), DIM, "f16")
    at = 0
    for c in first:
        builder.put(at, NormalisedBlock(c.rows, c.degenerate))
        at += len(c.rows)
    digests = np.frombuffer(b"".join(c.digests for c in first), np.uint8).reshape(-1, 16)
    ids = [i for c in first for i in c.ids]
    matrix = builder.finish(ids, [m for c in first for m in c.metadata], digests)
    persist.save(directory, matrix, key=directory.name)


async def test_a_previous_version_is_named_once_per_worker_and_dropped_after_the_load(pool, tmp_path):
    bodies = chunk_files()
    saved_version(bodies, tmp_path / "v1")
    known = Known("v1", str(tmp_path / "v1"))
    pool.share(known.token)
    for i, body in enumerate(bodies):
        got = await pool.decode(job(i), body, None, known)
        plain = decode_job(job(i), body, None)
        assert (got.reused >= 0).all()  # the same bytes: every record recognised, none decoded
        assert np.array_equal(got.rows, plain.rows) and list(got.metadata) == list(plain.metadata)
        assert list(got.ids) == list(plain.ids) and got.digests == plain.digests
    await pool.unshare(known.token)
    assert all(not w.known for w in pool._idle)


async def test_an_unreadable_previous_version_only_costs_the_recognition(pool, tmp_path):
    bodies = chunk_files()
    saved_version(bodies, tmp_path / "v1")
    known = Known("v1", str(tmp_path / "missing"))
    pool.share(known.token)
    got = await pool.decode(job(0), bodies[0], None, known)
    same(got, decode_job(job(0), bodies[0], None))  # decoded in full, nothing taken on trust
    await pool.unshare(known.token)


async def test_stopping_the_pool_kills_and_reaps_every_worker():
    decoders = DecoderPool(2)
    async with trio.open_nursery() as nursery:
        await nursery.start(decoders.run)
        decoders.warm()
        with trio.fail_after(10):
            while decoders.workers < 2 or decoders._starting:
                await trio.sleep(0.01)
        pids = decoders.pids()
        nursery.cancel_scope.cancel()
    assert not decoders.running and decoders.workers == 0
    assert not any(alive(p) for p in pids)


async def test_a_pool_that_is_not_running_sends_nothing_anywhere():
    decoders = DecoderPool(2)
    decoders.warm()
    assert not decoders.running and decoders.workers == 0


async def test_when_no_worker_can_start_jobs_are_refused_to_the_thread_path(nursery, monkeypatch):
    decoders = DecoderPool(2)
    await nursery.start(decoders.run)

    async def cannot(*args, **kwargs):
        raise OSError(11, "Resource temporarily unavailable")

    monkeypatch.setattr(trio.lowlevel, "open_process", cannot)
    with pytest.raises(WorkersUnavailable):
        await decoders.decode(job(0), chunk_files()[0], None)
    assert not decoders.running  # the loader decodes in threads for a while (tests/integration: a whole load)


async def test_a_worker_that_never_says_ready_is_killed_and_jobs_go_to_threads(nursery, monkeypatch):
    from fabstir_node.service import decoders as decoders_module

    monkeypatch.setattr(decoders_module, "READY_SECONDS", 0.5)
    real = trio.lowlevel.open_process
    started = []

    async def silent(command, **kwargs):  # a process that reads its input and never writes
        process = await real([sys.executable, "-c", "import sys; sys.stdin.read()"], **kwargs)
        started.append(process)
        return process

    monkeypatch.setattr(trio.lowlevel, "open_process", silent)
    decoders = DecoderPool(1)
    await nursery.start(decoders.run)
    with pytest.raises(WorkersUnavailable):
        await decoders.decode(job(0), chunk_files()[0], None)
    assert not decoders.running and decoders.workers == 0
    assert [p.returncode is not None for p in started] == [True]  # killed and reaped


async def test_two_previous_versions_at_once_each_get_their_own_lookup(pool, tmp_path):
    bodies = chunk_files()
    other = chunk_files(seed=2)
    known = {}
    for name, files in (("a", bodies), ("b", other)):
        saved_version(files, tmp_path / name)
        known[name] = Known(name, str(tmp_path / name))
        pool.share(name)
    for _ in range(2):  # alternating: each worker keeps both lookups
        for name, files in (("a", bodies), ("b", other), ("a", other)):
            got = await pool.decode(job(0), files[0], None, known[name])
            mine = files is (bodies if name == "a" else other)
            assert (got.reused >= 0).all() if mine else got.reused is None  # recognised only by its own version
            same_rows = decode_job(job(0), files[0], None)
            assert np.array_equal(got.rows, same_rows.rows)
    for name in known:
        await pool.unshare(name)
    assert all(not w.known for w in pool._idle)


async def test_the_workers_end_with_their_daemon_even_when_it_is_killed(tmp_path):
    """A daemon killed with -9 leaves no decode worker behind (each ends at the end of its input)."""
    import signal
    import time

    from fabstir_node.testing import spawn_daemon

    daemon = spawn_daemon(tmp_path / "d.log", env={"FABSTIR_STORE_DIR": str(tmp_path / "store")})
    try:
        deadline = time.monotonic() + 30
        events: list = []
        while not events or len(events) < events[0]["size"]:  # one per core, a second after it listens
            assert time.monotonic() < deadline, "the decode workers did not start"
            events = [e for e in daemon.log_events() if e.get("event") == "decode_worker_started"]
            await trio.sleep(0.05)
        started = [e["pid"] for e in events]
        assert all(alive(pid) for pid in started)
        daemon.process.send_signal(signal.SIGKILL)
        daemon.process.wait(timeout=10)
        with trio.fail_after(10):
            while any(alive(pid) for pid in started):
                await trio.sleep(0.05)
    finally:
        daemon.stop()
