"""Loads write their rows to a file (not the daemon's memory) that the disk cache adopts."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import trio
from _index_data import resident_kb

from fabstir_node.engine import matrix as matrix_module
from fabstir_node.engine.builder import MatrixBuilder
from fabstir_node.engine.calibration import Calibration
from fabstir_node.engine.hnsw import HnswIndex
from fabstir_node.engine.quantized import Int8Rows
from fabstir_node.storage import disk_cache as persist
from fabstir_node.storage.index_builder import build_index
from fabstir_node.storage.row_writer import LOADING_DIR, RowFileWriter, clear_stale, loading_dir

OWNER = "0xAbCdEf0000000000000000000000000000000001"


def test_a_builder_with_a_row_file_makes_the_same_matrix(tmp_path):
    rng = np.random.default_rng(0)
    rows = rng.standard_normal((700, 12)).astype(np.float32)
    ids, meta = [f"v{i}" for i in range(700)], [b""] * 700
    plain = MatrixBuilder(700, 12, "f16")
    filed = MatrixBuilder(700, 12, "f16", sink=RowFileWriter(tmp_path, 700, 12, np.float16))
    for start in (300, 0, 600):  # any order, as chunks arrive
        block = rows[start : start + {0: 300, 300: 300, 600: 100}[start]]
        plain.fill(start, block)
        filed.fill(start, block)
    a, b = plain.finish(ids, meta), filed.finish(ids, meta)
    filed.release_sink()
    assert isinstance(b.vectors, np.memmap) and np.array_equal(a.vectors, b.vectors)
    assert filed.nbytes == 0  # nothing of the rows held in memory
    assert persist.save(tmp_path / "db", b, key="k")
    assert os.stat(tmp_path / "db" / "vectors.npy").st_nlink == 2  # adopted by a hard link, not rewritten
    assert np.array_equal(persist.open_matrix(tmp_path / "db", key="k").vectors, a.vectors)


def test_a_builder_writes_the_8bit_codes_to_their_own_file_for_the_cache_to_adopt(tmp_path, monkeypatch):
    from fabstir_node.engine import builder as builder_module

    monkeypatch.setattr(builder_module, "COARSE_MIN_ROWS", 100)
    rows = np.random.default_rng(1).standard_normal((500, 16)).astype(np.float32)
    ids, meta = [f"v{i}" for i in range(500)], [b""] * 500
    codes_file = RowFileWriter(tmp_path / ".loading" / "1", 500, 16, np.int8)
    filed = MatrixBuilder(500, 16, "f16", sink=RowFileWriter(tmp_path, 500, 16, np.float16), codes_sink=codes_file)
    for start in (250, 0):
        filed.fill(start, rows[start : start + 250])
    matrix = filed.finish(ids, meta)
    filed.release_sink()
    assert matrix.coarse is not None and matrix.coarse.packed and isinstance(matrix.coarse.codes, np.memmap)
    assert np.array_equal(matrix.coarse.codes, Int8Rows.from_rows(np.asarray(matrix.vectors, np.float32)).codes)
    assert persist.save(tmp_path / "db", matrix, key="k")
    assert not codes_file.path.exists()  # adopted by a hard link, its loading name gone
    opened = persist.open_matrix(tmp_path / "db", key="k")
    assert opened.coarse is not None and np.array_equal(opened.coarse.codes, matrix.coarse.codes)


def test_a_discarded_row_file_is_gone(tmp_path):
    writer = RowFileWriter(tmp_path, 10, 4, np.float16)
    builder = MatrixBuilder(10, 4, "f16", sink=writer)
    builder.fill(0, np.ones((5, 4), np.float32))
    builder.release_sink()  # never finished: the rows are thrown away
    assert not writer.path.exists()


def test_stale_row_files_of_dead_processes_are_cleared(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    for pid in (int(dead.stdout), os.getppid(), os.getpid()):
        (tmp_path / LOADING_DIR / str(pid)).mkdir(parents=True)
        (tmp_path / LOADING_DIR / str(pid) / "x.npy").write_bytes(b"x")
    clear_stale(tmp_path)
    left = sorted(int(p.name) for p in (tmp_path / LOADING_DIR).iterdir())
    assert left == sorted([os.getppid(), os.getpid()])  # live processes keep theirs


async def test_a_load_leaves_its_rows_in_the_cache_and_nothing_in_loading(start_node, publish_local, tmp_path):
    path, _ = publish_local(1200, 16, owner=OWNER, chunk_size=300)
    cache = tmp_path / "cache"
    async with start_node(cache_dir=cache, hnsw_min_vectors=10**6) as running, running.client() as client:
        await client.session_init("s", manifest_path=path, user_address=OWNER.lower())
        assert (await client.wait_loaded(30))["event"] == "loading_complete"
        with trio.fail_after(30):
            while not any(cache.glob("*/vectors.npy")):
                await trio.sleep(0.02)
            while any(loading_dir(cache).glob("*.npy")):
                await trio.sleep(0.02)
        (saved,) = cache.glob("*/vectors.npy")
        assert os.stat(saved).st_nlink == 1
        reply = await client.search([1.0] + [0.0] * 15, 3)
        assert len(reply["results"]) == 3


def saved(tmp_path, dimensions: int, seed: int):
    """1,000 random f16 rows: (the rows given, the built matrix, the same saved and opened again)."""
    rows = np.random.default_rng(seed).standard_normal((1000, dimensions)).astype(np.float32)
    builder = MatrixBuilder(1000, dimensions, "f16")
    builder.fill(0, rows)
    matrix = builder.finish([f"v{i}" for i in range(1000)], [b""] * 1000)
    assert persist.save(tmp_path / "db", matrix, key="k")
    return rows, matrix, persist.open_matrix(tmp_path / "db", key="k")


def test_the_8bit_copy_of_a_saved_matrix_is_read_by_blocks(tmp_path):
    rows, matrix, opened = saved(tmp_path, 20, seed=3)
    from_file = persist.coarse_rows(opened, block=300)
    in_memory = Int8Rows.from_rows(matrix.vectors.astype(np.float32))
    q = rows[7] / np.linalg.norm(rows[7])
    assert np.array_equal(from_file.scores(q), in_memory.scores(q))
    assert np.array_equal(opened.read_rows(np.array([3, 999])), matrix.vectors[[3, 999]])


def _declining_matrix(tmp_path, monkeypatch, spy_calls):
    monkeypatch.setattr(matrix_module, "_READ_BLOCK_ROWS", 300)
    rows, reference, opened = saved(tmp_path, 16, seed=5)

    class Spy:
        def __init__(self, reader):
            self.reader = reader

        def __call__(self, wanted):
            return self.reader(wanted)

        def range(self, start, stop):
            spy_calls.append((start, stop))
            return self.reader.range(start, stop)

    graph = build_index(opened.vectors, connectivity=8, expansion_add=32, threads=1)
    untrusting = HnswIndex(graph, opened.vectors, calibration=Calibration(32, min_kth_score=2.0))
    return rows, reference, opened.with_index(untrusting).with_row_reader(Spy(opened.read_rows))


@pytest.mark.skipif(not Path("/proc/self/smaps").exists(), reason="reads /proc/self/smaps")
def test_once_a_graph_answers_exact_path_scans_the_mapping_and_leaves_nothing_resident(tmp_path, monkeypatch):
    calls: list[tuple[int, int]] = []
    rows, reference, searched = _declining_matrix(tmp_path, monkeypatch, calls)
    for q in rows[:5]:  # every answer declined: the exact path
        assert [h.id for h in searched.search(q, 5).hits] == [h.id for h in reference.search(q, 5).hits]
    assert calls == []  # through the mapping, not pread
    assert resident_kb(tmp_path / "db" / "vectors.npy") == 0
    searched.vectors[:].sum()  # the mapping itself is intact: touched, it is resident again
    assert resident_kb(tmp_path / "db" / "vectors.npy") > 0


def test_without_a_mapping_the_exact_path_reads_blocks(tmp_path, monkeypatch):
    monkeypatch.setattr(matrix_module, "_scan_mapped", lambda score, vectors: None)
    calls: list[tuple[int, int]] = []
    rows, reference, searched = _declining_matrix(tmp_path, monkeypatch, calls)
    for q in rows[:5]:
        assert [h.id for h in searched.search(q, 5).hits] == [h.id for h in reference.search(q, 5).hits]
    assert calls[:4] == [(0, 300), (300, 600), (600, 900), (900, 1000)]  # every answer declined: blocks
