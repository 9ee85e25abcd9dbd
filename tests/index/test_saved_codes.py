"""The 8-bit copy of a large matrix is saved beside its rows and searched mapped, pages dropped after."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import orjson
import pytest
from _index_data import resident_kb

from fabstir_node.engine import builder as builder_module
from fabstir_node.engine import matrix as matrix_module
from fabstir_node.engine.builder import MatrixBuilder
from fabstir_node.formats.synthetic import synthetic_records
from fabstir_node.storage import disk_cache as persist

KEY = "ef" * 32


@pytest.fixture
def coarse_from_1000(monkeypatch):
    monkeypatch.setattr(matrix_module, "COARSE_MIN_ROWS", 1000)
    monkeypatch.setattr(builder_module, "COARSE_MIN_ROWS", 1000)


def built(n: int = 4000, dim: int = 32):
    ids, vectors, metadata = synthetic_records(n, dim, 11)
    builder = MatrixBuilder(n, dim, "f16")
    for start in range(0, n, 1000):
        builder.fill(start, vectors[start : start + 1000])
    return builder.finish(ids, [orjson.dumps(m) for m in metadata]), vectors


def test_the_8bit_copy_is_saved_and_reopened_mapped(tmp_path, coarse_from_1000):
    matrix, _ = built()
    directory = tmp_path / KEY
    assert persist.save(directory, matrix, key=KEY)
    manifest = orjson.loads((directory / "manifest.json").read_bytes())
    assert {"codes.npy", "scales.npy"} <= set(manifest["files"])
    opened = persist.open_matrix(directory, key=KEY)
    assert opened.coarse is not None and isinstance(opened.coarse.codes, np.memmap)
    assert np.array_equal(opened.coarse.codes, matrix.coarse.codes)
    assert np.array_equal(opened.coarse.scales, matrix.coarse.scales)


def test_a_small_matrix_saves_no_8bit_copy(tmp_path):
    matrix, _ = built(1500)
    assert matrix.coarse is None
    directory = tmp_path / KEY
    assert persist.save(directory, matrix, key=KEY)
    assert not (directory / "codes.npy").exists()
    assert persist.open_matrix(directory, key=KEY).coarse is None


def test_searches_through_the_mapped_copy_answer_as_the_loaded_one(tmp_path, coarse_from_1000):
    matrix, vectors = built()
    directory = tmp_path / KEY
    assert persist.save(directory, matrix, key=KEY)
    opened = persist.open_matrix(directory, key=KEY)
    rng = np.random.default_rng(3)
    far = rng.standard_normal((10, 32)).astype(np.float32)
    for q in np.concatenate([vectors[:10], far]):
        want, got = matrix.search(q, 10).hits, opened.search(q, 10).hits
        assert [h.id for h in got] == [h.id for h in want]


@pytest.mark.skipif(not Path("/proc/self/smaps").exists(), reason="needs Linux /proc/self/smaps")
def test_a_scan_of_the_mapped_copy_leaves_its_pages_to_the_page_cache(tmp_path, coarse_from_1000):
    matrix, vectors = built()
    directory = tmp_path / KEY
    assert persist.save(directory, matrix, key=KEY)
    opened = persist.open_matrix(directory, key=KEY)
    assert opened.search(vectors[3], 10).hits[0].id == matrix.ids[3]
    assert resident_kb(directory / "codes.npy") == 0
    assert float(np.asarray(opened.coarse.codes, np.float32).sum()) != 0  # reading it maps pages (the probe works)
    assert resident_kb(directory / "codes.npy") > 0


@pytest.mark.parametrize("name", ["codes.npy", "scales.npy"])
def test_a_damaged_8bit_copy_fails_validation(tmp_path, coarse_from_1000, name):
    matrix, _ = built()
    directory = tmp_path / KEY
    assert persist.save(directory, matrix, key=KEY)
    data = bytearray((directory / name).read_bytes())
    data[-1] ^= 0xFF
    (directory / name).write_bytes(bytes(data))
    with pytest.raises(persist.CorruptCache):
        persist.open_matrix(directory, key=KEY)
