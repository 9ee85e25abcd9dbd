"""A load holds at most S5_MAX_PARALLEL_CHUNKS stored chunk bodies at a time."""

from __future__ import annotations

import weakref

import pytest
import trio

from fabstir_node.config import Settings
from fabstir_node.formats.paths import manifest_path
from fabstir_node.formats.synthetic import synthetic_records
from fabstir_node.formats.writer import build_database
from fabstir_node.service.loader import LoadStats, fetch_chunks, fetch_manifest
from fabstir_node.service.node import Node
from fabstir_node.storage.local import LocalStore
from fabstir_node.testing import write_files

OWNER = "0xAbCdEf0000000000000000000000000000000001"


class Body(bytearray):
    """A stored body whose lifetime the store below can see (bytearray subclasses take weakrefs)."""


class WatchedStore(LocalStore):
    """The real local store, counting chunk bodies alive at once (the manifest does not count)."""

    def __init__(self, root, slots: int) -> None:
        super().__init__(root)
        self.slots = slots
        self.alive = self.most = 0

    def _gone(self) -> None:
        self.alive -= 1

    async def get(self, path: str, *, max_bytes: int | None = None) -> bytes:
        body = Body(await super().get(path, max_bytes=max_bytes))
        if not path.endswith("manifest.json"):
            self.alive += 1
            self.most = max(self.most, self.alive)
            weakref.finalize(body, self._gone)
            # hold the body back until the other slots have theirs too (or half a second passed), so
            # whether every slot fills does not depend on how fast this machine decodes a chunk
            with trio.move_on_after(0.5):
                while self.alive < self.slots:
                    await trio.sleep(0.005)
        return body  # type: ignore[return-value]


@pytest.mark.parametrize("parallel", [1, 3])
async def test_a_load_keeps_no_more_bodies_than_its_parallel_slots(tmp_path, parallel):
    records = synthetic_records(1200, 16, seed=3)
    write_files(tmp_path, build_database(records, owner=OWNER, name="docs", chunk_size=100))
    store = WatchedStore(tmp_path, parallel)
    node = Node(Settings(store_dir=tmp_path, s5_max_parallel_chunks=parallel), storage=store)
    path = manifest_path(OWNER, "docs")
    stats = LoadStats()
    manifest = await fetch_manifest(node, path, OWNER.lower(), None, stats)
    events = []

    async def emit(event, message, **fields):
        events.append(event)

    ids, builder, metadata = await fetch_chunks(node, path, manifest, None, emit, stats)
    matrix = builder.finish(ids, metadata)
    assert len(matrix) == 1200 and list(matrix.ids) == records[0]
    assert events.count("chunk_downloaded") == 12
    assert store.most == parallel  # every slot was used, and never more bodies than slots
    assert store.alive == 0
