"""Packed ids: finding a repeated id among many by their hashes; items looked up many at once."""

from __future__ import annotations

import numpy as np
import pytest

from fabstir_node.engine.packed import PackedBlobs, PackedStrings, has_repeats, id_hashes


def _parts(ids: list[str], size: int) -> tuple[PackedStrings, list[np.ndarray]]:
    chunks = [ids[i : i + size] for i in range(0, len(ids), size)]
    return PackedStrings.concat([PackedStrings(c) for c in chunks]), [id_hashes(c) for c in chunks]


def test_hashes_are_of_the_utf8_bytes_and_equal_for_equal_ids():
    hashes = id_hashes(["a", "é", "a", ""])
    assert hashes.dtype == np.uint64 and hashes[0] == hashes[2] and len(set(hashes.tolist())) == 3


def test_no_repeats_with_and_without_hashes():
    ids, hashes = _parts([f"doc-{i}" for i in range(5000)], 700)
    assert not has_repeats(ids, hashes)
    assert not has_repeats(ids)


def test_a_repeat_in_another_part_is_found():
    names = [f"doc-{i}" for i in range(5000)]
    names[4321] = "doc-17"  # the same id, four parts later
    ids, hashes = _parts(names, 700)
    assert has_repeats(ids, hashes)
    assert has_repeats(ids)


def test_a_hash_collision_is_not_a_repeat():
    names = ["alpha", "beta", "gamma", "delta"]
    ids = PackedStrings(names)
    colliding = [np.array([7, 1, 7, 2], np.uint64)]  # alpha and gamma share a hash, not an id
    assert not has_repeats(ids, colliding)
    assert has_repeats(PackedStrings([*names, "gamma"]), [np.array([7, 1, 7, 2, 7], np.uint64)])


def test_a_part_without_hashes_falls_back_to_comparing_ids():
    ids, hashes = _parts(["x", "y", "x"], 2)
    assert has_repeats(ids, [hashes[0], None])


def test_take_returns_the_items_at_rows_in_memory_and_from_a_file(tmp_path):
    from fabstir_node.storage.disk_cache import FileBuffer

    words = ["alpha", "", "γάμμα", "delta-delta", "e"]
    strings = PackedStrings(words)
    rows = [4, 0, 2, 2, 1]
    assert strings.take(rows) == [words[r] for r in rows]
    assert strings.take(np.array(rows)) == [words[r] for r in rows] and strings.take([]) == []
    blobs = strings.blobs
    path = tmp_path / "items.bin"
    path.write_bytes(blobs.joined())
    on_disk = PackedBlobs.from_parts(FileBuffer(path), blobs.offsets)
    assert on_disk.take(rows) == [blobs[r] for r in rows] == [w.encode() for w in (words[r] for r in rows)]
    for bad in ([5], [-1]):
        with pytest.raises(IndexError):
            on_disk.take(bad)
