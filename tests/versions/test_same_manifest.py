"""Chunks rewritten under a byte-identical manifest are never served from the old version (issue 13, item 6)."""

from __future__ import annotations

from fabstir_node.formats.synthetic import synthetic_records
from fabstir_node.formats.writer import build_database
from fabstir_node.testing import write_files

OWNER = "0xAbCdEf0000000000000000000000000000000001"


async def load(client, path, session_id):
    ack = await client.session_init(session_id, manifest_path=path, user_address=OWNER.lower())
    assert ack["type"] == "session_init_ack", ack
    return await client.wait_loaded(60)


async def test_rewritten_chunks_under_an_identical_manifest_are_loaded_again(start_node, tmp_path):
    ids, vectors, metadata = synthetic_records(300, 16, 0)
    first = build_database((ids, vectors, metadata), owner=OWNER, name="kb", chunk_size=100, now_ms=1000)
    path = next(p for p in first if p.endswith("manifest.json"))
    write_files(tmp_path / "store", first)
    async with start_node(cache_dir=tmp_path / "cache") as running:
        async with running.client() as old:
            assert (await load(old, path, "old"))["event"] == "loading_complete"
            reply = await old.search(vectors[5].tolist(), 1)
            assert reply["results"][0]["id"] == ids[5]

            changed = vectors.copy()
            changed[5] = -vectors[5]  # another writer rewrites chunk 0; the manifest stays byte for byte
            second = build_database((ids, changed, metadata), owner=OWNER, name="kb", chunk_size=100, now_ms=1000)
            assert second[path] == first[path] and second[path.replace("manifest", "chunk-0")] != first[
                path.replace("manifest", "chunk-0")]
            write_files(tmp_path / "store", {p: b for p, b in second.items() if p != path})

            async with running.client() as new:
                assert (await load(new, path, "new"))["event"] == "loading_complete"
                reply = await new.search((-vectors[5]).tolist(), 1)
                assert reply["results"][0]["id"] == ids[5] and reply["results"][0]["score"] > 0.999
            reply = await old.search(vectors[5].tolist(), 1)  # the old session keeps the old version
            assert reply["results"][0]["id"] == ids[5] and reply["results"][0]["score"] > 0.999
        assert len(running.node.cache.entries()) == 2
