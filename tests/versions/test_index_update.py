"""The update process's job is checked against the old graph before anything changes (issue 13)."""

from __future__ import annotations

import numpy as np
import pytest

from fabstir_node.storage.index_update import read_job, update_effort, update_index


def job(tmp_path, mapping, added):
    path = tmp_path / "job.npz"
    np.savez(path, mapping=np.asarray(mapping, np.int64), added=np.asarray(added, np.float32))
    return path


def test_a_job_that_fits_is_read(tmp_path):
    mapping, added = read_job(job(tmp_path, [2, -1, 0], np.ones((1, 4))), old_count=3, dimensions=4)
    assert mapping.tolist() == [2, -1, 0] and added.shape == (1, 4)


@pytest.mark.parametrize("mapping, added", [
    ([0, 0, -1], np.ones((1, 4))),  # an old row twice
    ([3, -1], np.ones((1, 4))),  # past the old graph
    ([-2, 1], np.ones((1, 4))),  # below -1
    ([0, -1, -1], np.ones((1, 4))),  # fewer added vectors than new rows
    ([0, -1], np.ones((1, 5))),  # another dimension
])
def test_a_job_that_does_not_fit_is_refused(tmp_path, mapping, added):
    with pytest.raises(ValueError):
        read_job(job(tmp_path, mapping, added), old_count=3, dimensions=4)


def test_the_update_removes_renames_and_adds():
    from usearch.index import Index

    rng = np.random.default_rng(0)
    old = rng.standard_normal((50, 8)).astype(np.float32)
    index = Index(ndim=8, metric="cos")
    index.add(np.arange(50, dtype=np.uint64), old)
    mapping = np.array(list(range(10, 50)) + [-1, -1], np.int64)  # rows 0..9 gone, two new rows at the end
    added = rng.standard_normal((2, 8)).astype(np.float32)
    done = update_index(index, mapping, added, 50)
    assert done == {"removed": 10, "added": 2, "kept": 40}
    assert len(index) == 42
    assert int(index.search(old[10], 1).keys[0]) == 0  # old row 10 is new row 0
    assert int(index.search(added[1], 1).keys[0]) == 41


def test_an_update_adds_with_part_of_the_graphs_build_effort():
    # the default build (160) adds at 96; never under 96 unless the build itself was, never over it
    assert update_effort(160) == 96
    assert update_effort(128) == 96
    assert update_effort(400) == 240
    assert update_effort(64) == 64
    assert update_effort(0) == 1
