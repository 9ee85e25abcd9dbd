"""New versions of a database written as the SDK writes them.

The pure edits, and `publish --add/--delete-ids/--update`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from fabstir_node.formats.blob import decode_object, open_blob
from fabstir_node.formats.chunk import decode_chunk
from fabstir_node.formats.edits import EditError, apply_edits, read_records
from fabstir_node.formats.manifest import parse_manifest

OWNER = "0x00000000000000000000000000000000000c11ce"


def records(n, dim=8, start=0, seed=0):
    rng = np.random.default_rng(seed)
    ids = [f"r{i}" for i in range(start, start + n)]
    return ids, rng.normal(size=(n, dim)).astype(np.float32), [{"i": i} for i in range(start, start + n)]


def test_apply_edits_deletes_updates_in_place_and_appends():
    ids, vectors, meta = records(6)
    new_vec = np.full((1, 8), 0.5, np.float32)
    out_ids, out_vec, out_meta = apply_edits(
        (ids, vectors, meta), delete=["r1", "r4"], update=(["r3"], new_vec, [{"x": 1}]),
        add=(["n0"], np.ones((1, 8), np.float32), [None]),
    )
    assert out_ids == ["r0", "r2", "r3", "r5", "n0"]
    assert np.array_equal(out_vec[2], new_vec[0]) and out_meta[2] == {"x": 1}
    assert np.array_equal(out_vec[1], vectors[2]) and np.array_equal(out_vec[4], np.ones(8))
    assert np.array_equal(vectors[3], records(6)[1][3])  # the input is not changed


@pytest.mark.parametrize("kwargs", [
    {"delete": ["nope"]},
    {"update": (["nope"], np.ones((1, 8), np.float32), [None])},
    {"add": (["r0"], np.ones((1, 8), np.float32), [None])},
    {"add": (["z", "z"], np.ones((2, 8), np.float32), [None, None])},
    {"add": (["z"], np.ones((1, 3), np.float32), [None])},
    {"delete": ["r0"], "update": (["r0"], np.ones((1, 8), np.float32), [None])},
])
def test_apply_edits_refuses_what_does_not_fit(kwargs):
    with pytest.raises(EditError):
        apply_edits(records(3), **kwargs)


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "fabstir_node", *args], capture_output=True, text=True,
                          env=dict(os.environ), timeout=60)


def write_jsonl(path, ids, vectors, meta):
    path.write_text("\n".join(json.dumps({"id": i, "vector": v.tolist(), "metadata": m})
                              for i, v, m in zip(ids, vectors, meta)))
    return path


def read_store(store, name, key=None):
    base = store / f"home/vector-databases/{OWNER}/{name}"
    raw_manifest = (base / "manifest.json").read_bytes()
    manifest = parse_manifest(decode_object(open_blob(raw_manifest, key)))
    chunks = [decode_chunk(open_blob((base / f"chunk-{ref.chunk_id}.json").read_bytes(), key),
                           chunk_id=ref.chunk_id, expected_count=ref.vector_count, dimensions=manifest.dimensions)
              for ref in manifest.chunks]
    return manifest, read_records(manifest, chunks), base


@pytest.mark.parametrize("fmt, key", [("cbor", None), ("json", "22" * 32)])
def test_publish_writes_a_new_version_as_the_sdk_does(tmp_path, fmt, key):
    store = tmp_path / "store"
    common = ["--owner", OWNER, "--name", "kb", "--chunk-size", "10", "--store-dir", str(store)]
    if key:
        common += ["--encrypt-key", key]
    ids, vectors, meta = records(35)
    result = run_cli("publish", "--input", str(write_jsonl(tmp_path / "v1.jsonl", ids, vectors, meta)),
                     "--format", fmt, *common)
    assert result.returncode == 0, result.stderr
    key_bytes = bytes.fromhex(key) if key else None
    before, _, base = read_store(store, "kb", key_bytes)
    chunk0 = (base / "chunk-0.json").read_bytes()

    (tmp_path / "delete.txt").write_text("r15\nr16\n")
    add = write_jsonl(tmp_path / "add.jsonl", *records(3, start=100, seed=1))
    upd_vec = np.full((1, 8), 0.25, np.float32)
    update = write_jsonl(tmp_path / "update.jsonl", ["r30"], upd_vec, [{"changed": True}])
    result = run_cli("publish", "--delete-ids", str(tmp_path / "delete.txt"), "--add", str(add),
                     "--update", str(update), *common)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"home/vector-databases/{OWNER}/kb/manifest.json"

    after, (new_ids, new_vectors, new_meta), _ = read_store(store, "kb", key_bytes)
    assert after.vector_count == 36 and after.chunk_count == 4
    assert after.created == before.created and after.updated > before.updated
    assert after.digest != before.digest
    assert new_ids == [i for i in ids if i not in ("r15", "r16")] + ["r100", "r101", "r102"]
    row = new_ids.index("r30")
    assert np.array_equal(new_vectors[row], upd_vec[0]) and new_meta[row] == {"changed": True}
    keep = [ids.index(i) for i in new_ids[:33] if i != "r30"]
    assert np.array_equal(new_vectors[[new_ids.index(ids[k]) for k in keep]], vectors[keep])
    if key is None:  # an untouched chunk is byte for byte what it was (the SDK's writer is deterministic)
        assert (base / "chunk-0.json").read_bytes() == chunk0

    result = run_cli("publish", "--delete-ids", str(tmp_path / "delete.txt"), *common)
    assert result.returncode == 1 and "no such id" in result.stderr
    result = run_cli("publish", "--synthetic", "5", "--add", str(add), *common)
    assert result.returncode == 2
