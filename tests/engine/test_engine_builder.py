"""MatrixBuilder: filling chunk by chunk gives the same matrix as building it at once."""

import numpy as np
import orjson
import pytest

from fabstir_node.engine.builder import MatrixBuilder
from fabstir_node.engine.matrix import VectorMatrix


@pytest.mark.parametrize("dtype", ["f32", "f16", "bf16"])
def test_filling_in_any_order_equals_from_arrays(dtype):
    rng = np.random.default_rng(4)
    vectors = rng.normal(size=(1000, 24)).astype(np.float32) * rng.uniform(0.1, 50, size=(1000, 1)).astype(np.float32)
    vectors[17] = 0.0  # a degenerate row
    ids = [f"v{i}" for i in range(1000)]
    metadata = [orjson.dumps({"i": i}) for i in range(1000)]
    builder = MatrixBuilder(1000, 24, dtype)
    for start in (700, 0, 300, 900):  # chunks arrive out of order
        stop = {700: 900, 0: 300, 300: 700, 900: 1000}[start]
        builder.fill(start, vectors[start:stop].copy())
    built = builder.finish(ids, metadata)
    reference = VectorMatrix.from_arrays(ids, vectors.copy(), metadata, dtype=dtype)
    assert np.array_equal(np.asarray(built.vectors), np.asarray(reference.vectors))
    assert built.degenerate_rows == reference.degenerate_rows == 1
    query = vectors[5]
    a = built.search(query, 5)
    b = reference.search(query, 5)
    assert [h.id for h in a.hits] == [h.id for h in b.hits] and a.hits[0].metadata == {"i": 5}


def test_blocks_that_do_not_fit_are_refused():
    builder = MatrixBuilder(10, 4)
    with pytest.raises(ValueError):
        builder.fill(8, np.ones((3, 4), np.float32))
    with pytest.raises(ValueError):
        builder.fill(0, np.ones((2, 5), np.float32))
    with pytest.raises(ValueError):
        builder.finish(["a"], [b"{}"])
