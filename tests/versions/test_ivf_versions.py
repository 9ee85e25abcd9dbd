"""A database large enough for an inverted-file index: loaded, searched, and followed by its new versions."""

from __future__ import annotations

from test_lineage import (
    check_version,
    entry_of,
    load,
    next_version,
    publish,
    settings,
    unit_records,
    until_graph,
    until_own_graph,
)

from fabstir_node.engine.ivf import IvfIndex
from fabstir_node.engine.overlay import OverlayIndex
from fabstir_node.storage import disk_cache as persist


def ivf_settings(tmp_path):
    return {**settings(tmp_path), "ivf_min_vectors": 1000}


async def test_a_large_database_gets_lists_and_its_new_version_follows_them(start_node, tmp_path):
    records = unit_records(3000, 4)
    path = publish(tmp_path, records, 1)
    async with start_node(**ivf_settings(tmp_path)) as running, running.client() as old, running.client() as new:
        assert (await load(old, path, "old"))["event"] == "loading_complete"
        first = entry_of(running)
        await until_graph(first)
        assert isinstance(first.engine.index, IvfIndex)
        info = persist._read_json(running.settings.cache_dir / first.key / "index.json")
        assert info["kind"] == "ivf" and (running.settings.cache_dir / first.key / "index.ivf").exists()

        v2, deleted, changed, added = next_version(records, 2)
        publish(tmp_path, v2, 2)
        assert (await load(new, path, "new"))["event"] == "loading_complete"
        second = entry_of(running, exclude=[first.key])
        # from the first search: the previous version's lists (translated, the new rows exact), then its own
        assert isinstance(second.engine.index, (OverlayIndex, IvfIndex))
        await check_version(old, new, records, v2, deleted, changed, added)
        await until_own_graph(second, IvfIndex)
        info = persist._read_json(running.settings.cache_dir / second.key / "index.json")
        assert info["kind"] == "ivf" and info["updates"] == 1 and info["tombstones"] == 60
        await check_version(old, new, records, v2, deleted, changed, added)
