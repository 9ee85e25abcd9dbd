"""A new version's unchanged records are recognised by their bytes and not decoded again (issue 13)."""

from __future__ import annotations

import cbor2
import numpy as np
import pytest

from fabstir_node.config import Settings
from fabstir_node.engine.matrix import VectorMatrix
from fabstir_node.formats.blob import open_blob
from fabstir_node.formats.chunk import decode_chunk
from fabstir_node.formats.edits import apply_edits
from fabstir_node.formats.paths import manifest_path
from fabstir_node.formats.records import RECORD_HEAD
from fabstir_node.formats.synthetic import synthetic_records
from fabstir_node.formats.writer import build_database
from fabstir_node.service.lineage import PreviousRows
from fabstir_node.service.loader import LoadStats, fetch_chunks, fetch_manifest
from fabstir_node.service.node import Node
from fabstir_node.storage import disk_cache as persist
from fabstir_node.storage.local import LocalStore
from fabstir_node.testing import write_files

OWNER = "0xAbCdEf0000000000000000000000000000000001"
DIM = 8


def chunks(files):
    out = []
    for path, body in files.items():
        if "/chunk-" in path:
            out.append((int(path.rsplit("-", 1)[1].split(".")[0]), body))
    return sorted(out)


def decode_all(files, known=None):
    """Every chunk decoded by the node (``known``: the previous version's digests), in chunk order."""
    return [decode_chunk(open_blob(body, None), chunk_id=cid, expected_count=len(cbor2.loads(body)["vectors"]),
                         dimensions=DIM, known=known) for cid, body in chunks(files)]


def version_two(records):
    ids, vectors, metadata = records
    return apply_edits(records, delete=ids[100:110], update=(ids[:5], vectors[200:205], [{"v": 2}] * 5),
                       add=(["new-1", "new-2"], vectors[:2], [None, None]))


def known_of(decoded):
    digests = b"".join(c.digests for c in decoded)
    return {digests[i : i + 16]: i // 16 for i in range(0, len(digests), 16)}


def test_unchanged_records_are_recognised_and_the_rest_decoded():
    records = synthetic_records(600, DIM, seed=2)
    first = decode_all(build_database(records, owner=OWNER, name="kb", chunk_size=250))
    known = known_of(first)
    assert len(known) == 600  # one digest per record, all distinct
    v2 = version_two(records)
    files = build_database(v2, owner=OWNER, name="kb", chunk_size=250, now_ms=5)
    plain, fast = decode_all(files), decode_all(files, known)
    old_ids = records[0]
    reused_total = 0
    for p, f in zip(plain, fast):
        assert f.ids == p.ids and f.digests == p.digests  # the same ids and digests as a full decode
        fresh = f.reused < 0
        assert np.array_equal(f.vectors[fresh], p.vectors[fresh])
        for position, old in enumerate(f.reused.tolist()):
            if old >= 0:  # a recognised record is the same record: same id, same vector, same metadata
                assert old_ids[old] == f.ids[position]
                assert np.array_equal(records[1][old], v2[1][v2[0].index(f.ids[position])])
                assert f.metadata[position] == b"" and not f.vectors[position].any()
        reused_total += int((~fresh).sum())
    assert reused_total == 600 - 10 - 5  # removed and changed records are not; the added are new


def test_metadata_that_looks_like_a_record_head_is_still_read_correctly():
    # metadata maps of three entries whose first key is "id" hold the record head's bytes
    ids = [f"doc-{i}" for i in range(40)]
    vectors = np.random.default_rng(4).standard_normal((40, DIM)).astype(np.float32)
    metadata = [{"id": f"inner-{i}", "a": i, "b": [1, 2]} for i in range(40)]
    files = build_database((ids, vectors, metadata), owner=OWNER, name="kb", chunk_size=40)
    (_, body), = chunks(files)
    assert body.count(RECORD_HEAD) == 80
    first = decode_all(files)
    changed = [dict(m) for m in metadata]
    changed[7]["a"] = -1
    files2 = build_database((ids, vectors, changed), owner=OWNER, name="kb", chunk_size=40, now_ms=9)
    plain, fast = decode_all(files2)[0], decode_all(files2, known_of(first))[0]
    assert fast.ids == plain.ids and fast.digests == plain.digests
    assert fast.reused.tolist() == [i if i != 7 else -1 for i in range(40)]
    assert fast.metadata[7] == plain.metadata[7]


@pytest.mark.parametrize("where", ["threads", "workers"])
async def test_a_load_copies_recognised_rows_from_the_previous_version(tmp_path, nursery, where):
    records = synthetic_records(900, DIM, seed=5)
    store = tmp_path / "store"
    write_files(store, build_database(records, owner=OWNER, name="kb", chunk_size=200))
    node = Node(Settings(store_dir=store, vector_dtype="f16"), storage=LocalStore(store))
    if where == "workers":  # decode worker processes read the chunks and the previous version's files
        await nursery.start(node.decoders.run)
    path = manifest_path(OWNER, "kb")

    async def emit(event, message, **fields):
        pass

    async def load(previous=None):
        stats = LoadStats()
        manifest = await fetch_manifest(node, path, OWNER.lower(), None, stats)
        ids, builder, metadata = await fetch_chunks(node, path, manifest, None, emit, stats, previous=previous)
        return builder.finish(ids, metadata, builder.digests), builder

    v1, _ = await load()
    assert v1.record_digests is not None and v1.record_digests.shape == (900, 16)
    persist.save(tmp_path / "v1", v1, key="k1")
    saved = persist.open_matrix(tmp_path / "v1", key="k1")
    assert np.array_equal(saved.record_digests, v1.record_digests)

    v2_records = version_two(records)
    write_files(store, build_database(v2_records, owner=OWNER, name="kb", chunk_size=200, now_ms=7))
    reused, builder = await load(PreviousRows(saved, "k1", tmp_path / "v1"))
    clean, _ = await load()
    mapping = builder.reused
    assert int((mapping >= 0).sum()) == 900 - 15
    assert list(reused.ids) == list(clean.ids)
    assert np.array_equal(np.asarray(reused.vectors), np.asarray(clean.vectors))  # bit for bit
    assert list(reused.metadata) == list(clean.metadata)
    assert np.array_equal(reused.record_digests, clean.record_digests)
    assert isinstance(reused, VectorMatrix) and reused.degenerate_rows == clean.degenerate_rows
