"""The inverted-file index of large databases: lists, file, measurement, builder and update processes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import orjson
import pytest
from _index_data import make_matrix, queries

from fabstir_node.engine import ivf
from fabstir_node.engine.matrix import VectorMatrix
from fabstir_node.engine.quantized import quantize_rows
from fabstir_node.engine.rows import as_float32
from fabstir_node.storage import disk_cache as persist
from fabstir_node.storage import ivf_file
from fabstir_node.storage.index_builder import calibrate_lists

KEY = "cd" * 32


def lists_of(vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rows = as_float32(vectors)
    return ivf.build_lists(len(rows), lambda r: rows[r], lambda a, b: rows[a:b])


def written(path: Path, vectors: np.ndarray) -> ivf.IvfLists:
    rows = as_float32(vectors)
    centroids, order, bounds = lists_of(rows)
    ivf_file.write(path, centroids, order, bounds, ivf.encoded_blocks(order, lambda r: rows[r], block=700))
    return ivf_file.open_lists(path, len(rows), rows.shape[1])[1]


def far_queries(count: int, dim: int, seed: int = 3) -> np.ndarray:
    q = np.random.default_rng(seed).standard_normal((count, dim)).astype(np.float32)
    return q / np.linalg.norm(q, axis=1, keepdims=True)


def top_ids(matrix: VectorMatrix, q: np.ndarray) -> list[str]:
    return [h.id for h in matrix.search(q, 10).hits]


def test_every_row_sits_once_in_the_list_of_its_nearest_centroid():
    matrix, _ = make_matrix(3000, 32)
    rows = as_float32(matrix.vectors)
    centroids, order, bounds = lists_of(rows)
    assert len(centroids) == ivf.list_count(3000) and np.allclose(np.linalg.norm(centroids, axis=1), 1, atol=1e-5)
    assert sorted(order.tolist()) == list(range(3000))
    exact = ivf.assign(rows, centroids)  # float32: the nearest centroid
    scores = rows @ centroids.T
    same = 0
    for i in range(len(centroids)):
        members = order[bounds[i] : bounds[i + 1]]
        assert np.all(np.diff(members) > 0)  # ascending within a list
        # assigned by 8-bit codes: the nearest, or one as near to within the codes' error
        best = scores[members, exact[members]]
        assert np.all(scores[members, i] >= best - 0.02)
        same += int((exact[members] == i).sum())
    assert same >= 0.97 * 3000


def test_the_file_round_trips_block_by_block(tmp_path):
    matrix, _ = make_matrix(2500, 24)
    lists = written(tmp_path / "index.ivf", matrix.vectors)
    rows = as_float32(matrix.vectors)
    codes, scales = quantize_rows(rows[lists.order])
    assert np.array_equal(lists.codes, codes) and np.array_equal(lists.scales, scales)
    assert lists.bounds[-1] == 2500 and lists.codes.flags.writeable is False


@pytest.mark.parametrize("damage", ["magic", "truncated", "rows", "order"])
def test_a_damaged_or_foreign_file_is_refused(tmp_path, damage):
    matrix, _ = make_matrix(1000, 16)
    path = tmp_path / "index.ivf"
    lists = written(path, matrix.vectors)
    rows = 1000
    if damage == "magic":
        data = bytearray(path.read_bytes())
        data[0] ^= 0xFF
        path.write_bytes(bytes(data))
    elif damage == "truncated":
        path.write_bytes(path.read_bytes()[:-100])
    elif damage == "rows":
        rows = 999
    else:  # a row named twice (and one never): the file is well formed but does not describe the matrix
        order = np.array(lists.order)
        order[1] = order[0]
        ivf_file.write(path, np.array(lists.centroids), order, np.array(lists.bounds),
                       [(0, np.array(lists.codes), np.array(lists.scales))])
    del lists
    with pytest.raises(ValueError):
        ivf_file.open_lists(path, rows, 16)


def measured(tmp_path: Path, matrix: VectorMatrix) -> ivf.IvfIndex:
    lists = written(tmp_path / "index.ivf", matrix.vectors)
    calibration = calibrate_lists(lists, matrix.vectors)
    return ivf.IvfIndex(lists, matrix.vectors, calibration=calibration)


def test_measured_lists_answer_like_exact_search_near_and_far(tmp_path):
    matrix, vectors = make_matrix(6000, 32)
    index = measured(tmp_path, matrix)
    assert index.calibration is not None and index.calibration.recall["all"] >= 0.99
    indexed = matrix.with_index(index)
    near, far = queries(vectors, 60), far_queries(40, 32)
    paths: list[str] = []
    for kind, qs in (("near", near), ("far", far)):
        hits = 0
        for q in qs:
            result = indexed.search(q, 10)
            paths.append(result.path)
            hits += len(set(top_ids(matrix, q)) & {h.id for h in result.hits})
        assert hits / (10 * len(qs)) >= 0.99, kind
    assert paths[: len(near)].count("graph") >= 0.9 * len(near)  # near queries answered by the lists


def test_a_batch_probes_its_lists_together_and_answers_as_one_by_one(tmp_path):
    matrix, vectors = make_matrix(3000, 32)
    index = ivf.IvfIndex(written(tmp_path / "index.ivf", matrix.vectors), matrix.vectors, nprobe=3)
    qs = np.concatenate([queries(vectors, 12), far_queries(4, 32)])
    probed = index.probe_many(qs, 3)
    assert probed.shape == (16, 3)
    for q, lists in zip(qs, probed):
        assert np.array_equal(lists, index.probe(q, 3)) and np.all(np.diff(lists) > 0)
        scores = as_float32(index.lists.centroids) @ q
        assert set(lists.tolist()) == set(np.argsort(-scores)[:3].tolist())
    for one, batched in zip((index.candidates(q, 20) for q in qs), index.candidates_batch(qs, 20)):
        assert np.array_equal(np.sort(one), np.sort(batched))
    assert index.probe_many(qs[:2], 10_000).shape == (2, index.lists.lists)  # more than there are: all


def test_scan_finds_the_exact_top_rows_among_its_candidates(tmp_path):
    matrix, vectors = make_matrix(3000, 32)
    index = ivf.IvfIndex(written(tmp_path / "index.ivf", matrix.vectors), matrix.vectors)
    rows = as_float32(matrix.vectors)
    for q in np.concatenate([queries(vectors, 10), far_queries(10, 32)]):
        exact = set(np.argsort(-(rows @ q))[:10].tolist())
        assert exact <= set(index.scan(q, 256).tolist())


def test_filtered_searches_keep_only_passing_rows_or_decline(tmp_path):
    matrix, vectors = make_matrix(3000, 32)
    index = ivf.IvfIndex(written(tmp_path / "index.ivf", matrix.vectors), matrix.vectors, nprobe=8)
    q = queries(vectors, 1)[0]
    passing = np.arange(0, 3000, 2)  # half the rows
    answer = index.search_subset(q, 5, passing, 3000)
    assert answer is not None and set(answer[0].tolist()) <= set(passing.tolist())
    assert index.search_subset(q, 5, np.arange(10), 3000) is None  # selective: searched exactly


def test_a_new_version_keeps_rows_and_codes_and_adds_rows_to_their_nearest_list(tmp_path):
    matrix, vectors = make_matrix(3000, 32)
    old = written(tmp_path / "old.ivf", matrix.vectors)
    rng = np.random.default_rng(5)
    added = rng.standard_normal((40, 32)).astype(np.float32)
    added /= np.linalg.norm(added, axis=1, keepdims=True)
    kept_old = np.concatenate([np.arange(0, 100), np.arange(150, 3000)])  # rows 100..149 removed
    mapping = np.concatenate([kept_old, np.full(40, -1)]).astype(np.int64)
    new_rows = np.concatenate([as_float32(matrix.vectors)[kept_old], added])
    order, bounds, blocks = ivf.updated_lists(old, mapping, added)
    ivf_file.write(tmp_path / "new.ivf", old.centroids, order, bounds, blocks)
    new = ivf_file.open_lists(tmp_path / "new.ivf", len(mapping), 32)[1]
    assert sorted(new.order.tolist()) == list(range(len(mapping)))
    position = np.empty(len(mapping), np.int64)
    position[new.order] = np.arange(len(mapping))
    old_position = np.empty(3000, np.int64)
    old_position[old.order] = np.arange(3000)
    kept = np.flatnonzero(mapping >= 0)
    assert np.array_equal(new.codes[position[kept]], old.codes[old_position[mapping[kept]]])
    list_of = np.searchsorted(new.bounds, position, side="right") - 1
    assert np.array_equal(list_of[3000 - 50 :], ivf.assign(added, old.centroids))
    codes, _ = quantize_rows(added)
    assert np.array_equal(new.codes[position[len(kept_old) :]], codes)
    index = ivf.IvfIndex(new, new_rows, nprobe=new.lists)
    for i, vector in enumerate(added):
        assert index.search(vector, 1)[0][0] == len(kept_old) + i


def run(module: str, *args: str, stdin: bytes = b"") -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", module, *args], input=stdin, capture_output=True, timeout=120)


def saved_with_lists(
    tmp_path: Path, n: int, dim: int
) -> tuple[VectorMatrix, np.ndarray, Path, subprocess.CompletedProcess]:
    """A saved matrix of ``n`` rows and the builder process run on it with the inverted file from 2,000 rows."""
    matrix, vectors = make_matrix(n, dim)
    directory = tmp_path / KEY
    assert persist.save(directory, matrix, key=KEY)
    done = run("fabstir_node.storage.index_builder", str(directory), "--key", KEY, "--ivf-min-rows", "2000")
    assert done.returncode == 0, done.stderr[-2000:]
    return matrix, vectors, directory, done


def run_update(directory: Path, tmp_path: Path, mapping: np.ndarray, added: np.ndarray,
               out: Path) -> subprocess.CompletedProcess:
    """The update process on ``directory`` with one job (``mapping``, ``added``), writing ``out``."""
    np.savez(tmp_path / "job.npz", mapping=mapping, added=added)
    return run("fabstir_node.storage.index_update", "--base", str(directory), "--base-key", KEY, "--out", str(out),
               stdin=orjson.dumps({"job": str(tmp_path / "job.npz")}) + b"\n")


def test_the_builder_gives_a_large_matrix_an_inverted_file_the_daemon_opens(tmp_path):
    matrix, vectors, directory, done = saved_with_lists(tmp_path, 3000, 32)
    report = orjson.loads(done.stdout.splitlines()[-1])
    assert report["kind"] == "ivf" and report["vectors"] == 3000
    info = orjson.loads((directory / "index.json").read_bytes())
    assert info["kind"] == "ivf" and info["lists"] == ivf.list_count(3000) and "calibration" in info
    assert not (directory / "index.usearch").exists()
    opened = persist.open_matrix(directory, key=KEY)
    assert isinstance(opened.index, ivf.IvfIndex)
    for q in queries(vectors, 10):
        assert len(set(top_ids(matrix, q)) & set(top_ids(opened, q))) >= 9
    # a damaged file is discarded and the matrix opens without it
    data = bytearray((directory / "index.ivf").read_bytes())
    data[-1] ^= 0xFF
    (directory / "index.ivf").write_bytes(bytes(data))
    del opened
    assert persist.open_matrix(directory, key=KEY).index is None
    assert not (directory / "index.ivf").exists() and not (directory / "index.json").exists()


def test_a_smaller_matrix_still_gets_a_graph(tmp_path):
    matrix, _ = make_matrix(1200, 16)
    directory = tmp_path / KEY
    assert persist.save(directory, matrix, key=KEY)
    done = run("fabstir_node.storage.index_builder", str(directory), "--key", KEY, "--ivf-min-rows", "2000",
               "--expansion-add", "32")
    assert done.returncode == 0, done.stderr[-2000:]
    assert orjson.loads((directory / "index.json").read_bytes())["kind"] == "hnsw"


def test_the_update_process_turns_the_old_inverted_file_into_the_new_versions(tmp_path):
    _, vectors, directory, _ = saved_with_lists(tmp_path, 3000, 32)
    mapping = np.concatenate([np.arange(10, 3000), [-1, -1]]).astype(np.int64)  # rows 0..9 gone, two new
    added = np.array(vectors[:2][::-1]) * np.float32(-1)
    out = tmp_path / "new.ivf"
    done = run_update(directory, tmp_path, mapping, added.astype(np.float32), out)
    assert done.returncode == 0, done.stderr[-2000:]
    events = [orjson.loads(line) for line in done.stdout.splitlines()]
    assert events[0]["event"] == "ready"
    report = events[-1]
    assert report["event"] == "index_updated"
    assert (report["removed"], report["added"], report["kept"], report["count"]) == (10, 2, 2990, 2992)
    assert report["parameters"]["kind"] == "ivf" and report["parameters"]["tombstones"] == 10
    assert report["file"] == persist.describe(out)
    lists = ivf_file.open_lists(out, 2992, 32)[1]
    assert sorted(lists.order.tolist()) == list(range(2992))


def test_the_update_process_refuses_a_job_that_does_not_fit_the_old_lists(tmp_path):
    _, _, directory, _ = saved_with_lists(tmp_path, 2500, 16)
    done = run_update(directory, tmp_path, np.array([5000, -1], np.int64), np.ones((1, 16), np.float32),
                      tmp_path / "new.ivf")
    assert done.returncode == 3 and b"update_failed" in done.stdout
    assert not (tmp_path / "new.ivf").exists()
