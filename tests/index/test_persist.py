"""Saving and reopening databases: same answers, memory-mapped, corruption detected."""

from __future__ import annotations

import gc
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import orjson
import pytest
from _index_data import make_matrix, queries, resident_kb

from fabstir_node.engine.filters import compile_filter
from fabstir_node.engine.hnsw import HnswIndex
from fabstir_node.engine.matrix import VectorMatrix
from fabstir_node.storage import disk_cache as persist
from fabstir_node.storage.index_builder import build_index, calibrate

KEY = "ab" * 32


def same_answers(a: VectorMatrix, b: VectorMatrix, qs: np.ndarray, **kwargs) -> None:
    for q in qs:
        left, right = a.search(q, 10, **kwargs), b.search(q, 10, **kwargs)
        assert [(h.id, h.score, h.metadata) for h in left.hits] == [(h.id, h.score, h.metadata) for h in right.hits]
        assert left.total == right.total


def run_builder(directory: Path, *args: str) -> subprocess.CompletedProcess:
    """The builder process on ``directory`` (key ``KEY``), as the daemon starts it, plus ``args``."""
    return subprocess.run(
        [sys.executable, "-m", "fabstir_node.storage.index_builder", str(directory), "--key", KEY, *args],
        capture_output=True, timeout=120,
    )


def save_with_index(directory: Path, matrix: VectorMatrix) -> None:
    assert persist.save(directory, matrix, key=KEY)
    graph = build_index(matrix.vectors, connectivity=16, expansion_add=64, threads=1)
    calibration = calibrate(graph, matrix.vectors)
    persist.save_index(directory, graph, key=KEY, parameters={"connectivity": 16, "calibration": calibration.to_json()})


@pytest.mark.parametrize("dtype", ["f16", "f32", "bf16"])
def test_round_trip_gives_the_same_answers_from_mapped_files(tmp_path, dtype):
    matrix, vectors = make_matrix(1500, 24, dtype=dtype)
    directory = tmp_path / KEY
    assert persist.save(directory, matrix, key=KEY)
    opened = persist.open_matrix(directory, key=KEY)
    assert isinstance(opened.vectors.base, np.memmap) or isinstance(opened.vectors, np.memmap)
    assert (len(opened), opened.dimensions, opened.dtype) == (len(matrix), matrix.dimensions, dtype)
    assert list(opened.ids) == list(matrix.ids) and list(opened.metadata) == list(matrix.metadata)
    assert opened.index is None
    qs = queries(vectors, 10)
    same_answers(matrix, opened, qs)
    same_answers(matrix, opened, qs, threshold=0.7)
    same_answers(matrix, opened, qs, flt=compile_filter({"folderPath": "/legal/contracts"}))


def test_build_counters_and_odd_rows_survive(tmp_path):
    vectors = np.ones((4, 3), np.float32)
    vectors[1] = 0  # a degenerate row
    ids = ["a", "b", "a", "c"]  # "a" repeats: one row dropped
    matrix = VectorMatrix.from_arrays(ids, vectors, [b"", b'{"x":1}', b'{"t":"\\u00e9"}', b""], dtype="f16")
    assert persist.save(tmp_path / KEY, matrix, key=KEY)
    opened = persist.open_matrix(tmp_path / KEY, key=KEY)
    assert (opened.degenerate_rows, opened.dropped_duplicates) == (matrix.degenerate_rows, matrix.dropped_duplicates)
    assert list(opened.ids) == ["b", "a", "c"]
    assert [opened.search([1, 1, 1], 3).hits[i].metadata for i in range(3)] == [
        h.metadata for h in matrix.search([1, 1, 1], 3).hits
    ]


def test_save_never_overwrites_and_leaves_no_temporary_directory(tmp_path):
    matrix, _ = make_matrix(200, 8)
    assert persist.save(tmp_path / KEY, matrix, key=KEY)
    assert not persist.save(tmp_path / KEY, make_matrix(300, 8)[0], key=KEY)
    assert sorted(p.name for p in tmp_path.iterdir()) == [KEY]
    assert len(persist.open_matrix(tmp_path / KEY, key=KEY)) == 200


def test_an_empty_database_round_trips(tmp_path):
    matrix = VectorMatrix.from_arrays([], np.empty((0, 5), np.float32), [], dtype="f16")
    assert persist.save(tmp_path / KEY, matrix, key=KEY)
    opened = persist.open_matrix(tmp_path / KEY, key=KEY)
    assert len(opened) == 0 and opened.search([1, 0, 0, 0, 0], 3).hits == []


def _truncate(path: Path) -> None:
    with open(path, "rb+") as f:
        f.truncate(path.stat().st_size - 7)


def _flip(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x40
    path.write_bytes(bytes(data))


def _rewrite_manifest(field: str, value: object):
    def change(directory: Path) -> None:
        manifest = orjson.loads((directory / "manifest.json").read_bytes())
        manifest[field] = value
        (directory / "manifest.json").write_bytes(orjson.dumps(manifest))

    return change


DAMAGE = {
    "vectors truncated": lambda d: _truncate(d / "vectors.npy"),
    "vectors flipped": lambda d: _flip(d / "vectors.npy"),
    "metadata flipped": lambda d: _flip(d / "metadata.bin"),
    "offsets flipped": lambda d: _flip(d / "metadata.idx.npy"),
    "ids removed": lambda d: (d / "ids.bin").unlink(),
    "manifest garbage": lambda d: (d / "manifest.json").write_bytes(b"\x00not json"),
    "manifest missing": lambda d: (d / "manifest.json").unlink(),
    "other format": _rewrite_manifest("format", 999),
    "other key": _rewrite_manifest("key", "cd" * 32),
    "other shape": _rewrite_manifest("count", 5),
}


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_damaged_matrix_files_are_detected(tmp_path, damage):
    matrix, _ = make_matrix(400, 16)
    directory = tmp_path / KEY
    assert persist.save(directory, matrix, key=KEY)
    DAMAGE[damage](directory)
    with pytest.raises(persist.CorruptCache):
        persist.open_matrix(directory, key=KEY)
    persist.discard(directory)
    assert not directory.exists()


def test_a_valid_index_is_attached_and_viewed(tmp_path):
    matrix, vectors = make_matrix(2000, 24)
    directory = tmp_path / KEY
    save_with_index(directory, matrix)
    opened = persist.open_matrix(directory, key=KEY, expansion_search=128)
    # the graph's own measurement chose its effort (the setting is for graphs without one)
    assert isinstance(opened.index, HnswIndex) and opened.index.calibration is not None
    assert opened.index.expansion_search == opened.index.calibration.expansion_search
    hits = opened.search(vectors[17], 1).hits
    assert hits[0].id == matrix.ids[17] and hits[0].score == pytest.approx(1.0, abs=1e-3)


@pytest.mark.parametrize(
    "damage",
    ["graph truncated", "graph flipped", "graph missing", "info garbage", "info of another key", "graph of another db",
     "no calibration (an older version's graph)"],
)
def test_a_damaged_index_is_discarded_and_the_matrix_still_opens(tmp_path, damage):
    matrix, vectors = make_matrix(1000, 16)
    directory = tmp_path / KEY
    save_with_index(directory, matrix)
    graph, info = directory / "index.usearch", directory / "index.json"
    if damage == "graph truncated":
        _truncate(graph)
    elif damage == "graph flipped":
        _flip(graph)
    elif damage == "graph missing":
        graph.unlink()
    elif damage == "info garbage":
        info.write_bytes(b"[]")
    elif damage == "info of another key":
        info.write_bytes(orjson.dumps({**orjson.loads(info.read_bytes()), "key": "x"}))
    elif damage.startswith("no calibration"):
        kept = {k: v for k, v in orjson.loads(info.read_bytes()).items() if k != "calibration"}
        info.write_bytes(orjson.dumps(kept))
    else:  # a well-formed graph with fewer rows, its digest recorded: only the row count gives it away
        other = build_index(matrix.vectors[:900], connectivity=8, expansion_add=32, threads=1)
        calibration = calibrate(other, matrix.vectors[:900]).to_json()
        persist.save_index(directory, other, key=KEY, parameters={"calibration": calibration})
        info.write_bytes(orjson.dumps({**orjson.loads(info.read_bytes()), "count": len(matrix)}))
    opened = persist.open_matrix(directory, key=KEY)
    assert opened.index is None and not persist.has_index(directory) and not graph.exists()
    same_answers(matrix, opened, queries(vectors, 5))


def test_the_builder_process_writes_an_index_the_daemon_can_view(tmp_path):
    matrix, vectors = make_matrix(1200, 16)
    directory = tmp_path / KEY
    assert persist.save(directory, matrix, key=KEY)
    done = run_builder(directory, "--connectivity", "8", "--expansion-add", "32", "--threads", "1")
    assert done.returncode == 0, done.stderr[-2000:]
    assert orjson.loads(done.stdout.splitlines()[-1])["vectors"] == 1200
    info = orjson.loads((directory / "index.json").read_bytes())
    assert (info["connectivity"], info["expansion_add"], info["count"], info["dtype"]) == (8, 32, 1200, "i8")
    assert persist.open_matrix(directory, key=KEY).index is not None


@pytest.mark.parametrize("dtype", ["i8", "f16", "bf16"])
def test_the_builder_stores_the_graph_in_the_asked_number_type(tmp_path, dtype):
    matrix, vectors = make_matrix(800, 16)
    directory = tmp_path / KEY
    assert persist.save(directory, matrix, key=KEY)
    done = run_builder(
        directory, "--dtype", dtype, "--connectivity", "8", "--expansion-add", "32", "--threads", "1", "--nice", "0"
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert orjson.loads((directory / "index.json").read_bytes())["dtype"] == dtype
    from usearch.index import Index

    assert Index.metadata(str(directory / "index.usearch"))["kind_scalar"].name == dtype.upper()
    opened = persist.open_matrix(directory, key=KEY)
    hit = opened.search(vectors[5], 1).hits[0]
    assert hit.id == matrix.ids[5] and hit.score == pytest.approx(1.0, abs=1e-3)


def test_the_builder_refuses_a_corrupt_matrix_with_status_3(tmp_path):
    matrix, _ = make_matrix(300, 8)
    directory = tmp_path / KEY
    assert persist.save(directory, matrix, key=KEY)
    _flip(directory / "vectors.npy")
    done = run_builder(directory, "--nice", "0")
    assert done.returncode == 3 and not (directory / "index.usearch").exists()
    assert b"build_failed" in done.stdout and os.listdir(directory).count("index.json") == 0


# --- what stays on disk ---------------------------------------------------------------


def test_file_buffer_reads_ranges_and_the_whole_file(tmp_path):
    path = tmp_path / "blob"
    data = bytes(range(256)) * 40
    path.write_bytes(data)
    buffer = persist.FileBuffer(path)
    assert len(buffer) == len(data)
    assert buffer[10:20] == data[10:20] and buffer[5:5] == b"" and buffer[-3:] == data[-3:]
    assert buffer[len(data) - 2 : len(data) + 50] == data[-2:]
    assert buffer.read_all() == data
    with pytest.raises(TypeError):
        buffer[3]
    with pytest.raises(ValueError):
        buffer[0:10:2]


def test_row_file_reads_the_saved_rows(tmp_path):
    matrix, _ = make_matrix(500, 12, dtype="f16")
    directory = tmp_path / KEY
    assert persist.save(directory, matrix, key=KEY)
    opened = persist.open_matrix(directory, key=KEY)
    rows = persist.RowFile(opened.vectors)
    pick = np.array([499, 0, 17, 17, 250], np.int64)
    got = rows(pick)
    assert got.dtype == np.float16 and np.array_equal(got, np.asarray(opened.vectors)[pick])
    assert got.shape == (5, 12) and got.flags.writeable  # a new array the caller may change
    assert rows(np.empty(0, np.int64)).shape == (0, 12)
    for bad in (500, -1):
        with pytest.raises(IndexError):
            rows(np.array([bad]))


def _opened_with_graph(tmp_path: Path) -> tuple[VectorMatrix, np.ndarray, Path, VectorMatrix]:
    """A 3,000 x 64 f16 matrix saved with its graph, and the same opened from the disk cache."""
    matrix, vectors = make_matrix(3000, 64, dtype="f16")
    directory = tmp_path / KEY
    save_with_index(directory, matrix)
    opened = persist.open_matrix(directory, key=KEY, expansion_search=64)
    assert isinstance(opened.index, HnswIndex)
    return matrix, vectors, directory, opened


@pytest.mark.skipif(not Path("/proc/self/smaps").exists(), reason="needs Linux /proc/self/smaps")
def test_graph_searches_read_rows_and_metadata_without_mapping_them(tmp_path):
    matrix, vectors, directory, opened = _opened_with_graph(tmp_path)
    assert isinstance(opened.metadata.buffer, persist.FileBuffer)
    stored = np.asarray(matrix.vectors, np.float32)
    for q in queries(vectors, 40):
        got, unit = opened.search(q, 5), opened.query_vector(q)
        assert len(got.hits) == 5 and all(h.metadata for h in got.hits)
        for hit in got.hits:  # re-scored on the stored rows, read from the file
            assert hit.score == pytest.approx(float(stored[matrix.row_of(hit.id)] @ unit), abs=1e-6)
            assert hit.metadata == orjson.loads(matrix.metadata[matrix.row_of(hit.id)])
    # neither the vectors nor the metadata were paged into the process: only the graph was
    assert resident_kb(directory / "vectors.npy") == 0
    assert resident_kb(directory / "metadata.bin") == 0
    assert resident_kb(directory / "index.usearch") > 0
    # a selective filter is searched exactly, from rows read with pread too (the graph answers)
    selective = opened.search(vectors[0], 5, flt=compile_filter({"chunkIndex": 3}))
    expected = matrix.search(vectors[0], 5, flt=compile_filter({"chunkIndex": 3}))
    assert [h.id for h in selective.hits] == [h.id for h in expected.hits]
    assert resident_kb(directory / "vectors.npy") == 0
    # and reading the mapping itself shows (the probe works)
    assert float(np.asarray(opened.vectors, np.float32).sum()) != 0.0
    assert resident_kb(directory / "vectors.npy") > 0


@pytest.mark.skipif(not Path("/proc/self/smaps").exists(), reason="needs Linux /proc/self/smaps")
def test_a_scan_of_the_graph_leaves_its_pages_to_the_page_cache(tmp_path):
    _, vectors, directory, opened = _opened_with_graph(tmp_path)
    assert isinstance(opened.index, HnswIndex)
    q = opened.query_vector(vectors[5])
    walked = opened.index.search(q, 10)
    assert walked is not None and resident_kb(directory / "index.usearch") > 0
    scanned = opened.index.scan(q, 10)  # every vector of the graph read
    assert resident_kb(directory / "index.usearch") == 0
    assert len(scanned) == 10 and 5 in scanned.tolist() and 5 in walked[0].tolist()  # the query is row 5
    assert opened.index.search(q, 10) is not None  # the walk maps what it needs again


@pytest.mark.skipif(not hasattr(os, "SCHED_IDLE"), reason="SCHED_IDLE is Linux only")
def test_the_builder_runs_at_idle_priority(tmp_path):
    matrix, _ = make_matrix(300, 8)
    directory = tmp_path / KEY
    assert persist.save(directory, matrix, key=KEY)
    base = ["--connectivity", "8", "--expansion-add", "16"]
    done = run_builder(directory, *base)
    assert done.returncode == 0, done.stderr[-2000:]
    assert orjson.loads(done.stdout.splitlines()[-1])["priority"] == "idle"
    persist.discard_index(directory)
    done = run_builder(directory, *base, "--no-idle", "--nice", "3")
    assert done.returncode == 0, done.stderr[-2000:]
    assert orjson.loads(done.stdout.splitlines()[-1])["priority"] == "nice 3"


def test_verify_false_skips_only_the_digests(tmp_path):
    matrix, vectors = make_matrix(400, 16)
    directory = tmp_path / KEY
    assert persist.save(directory, matrix, key=KEY)
    _flip(directory / "metadata.bin")  # same size, other bytes: only a digest sees it
    with pytest.raises(persist.CorruptCache):
        persist.open_matrix(directory, key=KEY)
    assert len(persist.open_matrix(directory, key=KEY, verify=False)) == 400
    _truncate(directory / "metadata.bin")  # sizes are still checked
    with pytest.raises(persist.CorruptCache):
        persist.open_matrix(directory, key=KEY, verify=False)


def test_a_graph_and_its_wide_view_share_one_mapping_closed_after_them(tmp_path):
    matrix, vectors = make_matrix(2000, 24)
    directory = tmp_path / KEY
    save_with_index(directory, matrix)
    for _ in range(3):  # opened, searched and dropped again and again: the views go before the mapping
        opened = persist.open_matrix(directory, key=KEY)
        index = opened.index
        assert isinstance(index, HnswIndex) and index._wide is not None
        mapping = index._mapping
        assert opened.search(vectors[5], 3).hits[0].id == matrix.ids[5]
        del opened, index
        gc.collect()
        assert mapping.closed  # unmapped once the views were gone
