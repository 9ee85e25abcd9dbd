"""Rows are reused only when id, stored row and metadata are all the same (issue 13)."""

from __future__ import annotations

import numpy as np

from fabstir_node.engine.packed import PackedBlobs, PackedStrings
from fabstir_node.engine.reuse import matching_rows


class Rows:
    def __init__(self, ids, vectors, metadata):
        self.ids, self.vectors, self.metadata = PackedStrings(ids), vectors, PackedBlobs(metadata)


def test_only_rows_equal_in_id_vector_and_metadata_are_matched():
    rng = np.random.default_rng(0)
    n = 20_000  # more than one comparison block
    ids = [f"id-{i}" for i in range(n)]
    vectors = rng.standard_normal((n, 8)).astype(np.float16)
    metadata = [b'{"t":"doc %d"}' % i for i in range(n)]
    new_meta = list(metadata)
    new_meta[5] = b'{"t":"doc 6"}'  # same length, other bytes
    new_meta[7] = b"{}"  # another length
    new_vectors = vectors.copy()
    new_vectors[9, 3] += 1
    # the SDK shifts every later row after a deletion: row 0 goes, one row is appended
    new_ids, new_vectors = ids[1:] + ["new"], np.concatenate([new_vectors[1:], vectors[:1]])
    new_meta = new_meta[1:] + [b"{}"]
    mapping = matching_rows(Rows(ids, vectors, metadata), Rows(new_ids, new_vectors, new_meta))
    assert np.flatnonzero(mapping < 0).tolist() == [4, 6, 8, n - 1]
    kept = np.flatnonzero(mapping >= 0)
    assert (mapping[kept] == kept + 1).all()
