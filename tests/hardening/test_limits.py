"""Every limit has a safe default, is configurable, and answers with a clear code when hit."""

from __future__ import annotations

import pytest
import trio
from _hardening import OWNER, good_chunk, good_manifest, hostile_db


async def test_upload_limits(start_node):
    async with start_node(max_upload_batch=10, max_uploaded_vectors=15, max_dimensions=8,
                          max_metadata_bytes=100) as running, running.client() as client:
        await client.session_init("s")
        reply = await client.upload([{"id": f"a{i}", "vector": [1.0, float(i)]} for i in range(11)])
        assert reply["code"] == "LIMIT_EXCEEDED" and "10" in reply["message"]
        reply = await client.upload([{"id": f"a{i}", "vector": [1.0, float(i)]} for i in range(10)])
        assert reply["uploaded"] == 10
        reply = await client.upload([{"id": f"b{i}", "vector": [1.0, float(i)]} for i in range(10)])
        assert reply["status"] == "partial" and reply["uploaded"] == 5 and reply["rejected"] == 5
        reply = await client.upload([{"id": "m", "vector": [1.0, 2.0], "metadata": {"t": "x" * 200}}], replace=True)
        assert reply["rejected"] == 1 and "metadata" in reply["errors"][0]
        reply = await client.upload([{"id": "d", "vector": [1.0] * 9}])
        assert reply["rejected"] == 1
        reply = await client.search([1.0] * 9, 1)
        assert reply["code"] == "LIMIT_EXCEEDED"


async def test_k_limit_default_and_configured(start_node):
    async with start_node(max_k=7) as running, running.client() as client:
        await client.session_init("s")
        await client.upload([{"id": "a", "vector": [1.0, 0.0]}])
        assert (await client.search([1.0, 0.0], 8))["code"] == "LIMIT_EXCEEDED"
        assert (await client.search([1.0, 0.0], 7))["type"] == "searchVectorsResponse"


async def test_session_limits_per_connection_and_daemon(start_node):
    async with start_node(max_sessions_per_connection=2, max_sessions=3) as running:
        async with running.client() as one, running.client() as two:
            assert (await one.session_init("a"))["type"] == "session_init_ack"
            assert (await one.session_init("b"))["type"] == "session_init_ack"
            assert (await one.session_init("c"))["code"] == "LIMIT_EXCEEDED"
            assert (await one.session_init("a"))["type"] == "session_init_ack"  # a re-init is not a new session
            assert (await two.session_init("x"))["type"] == "session_init_ack"
            assert (await two.session_init("y"))["code"] == "LIMIT_EXCEEDED"  # the daemon is full
        async with running.client() as three:  # sessions ended with their connections
            with trio.fail_after(5):
                while len(running.node.registry):
                    await trio.sleep(0.02)
            assert (await three.session_init("z"))["type"] == "session_init_ack"


async def test_manifest_size_and_chunk_count_limits(start_node, store):
    big = hostile_db(store, "big", good_manifest([1], description="x" * 5000), {0: good_chunk(0, 1)})
    many = hostile_db(store, "many", good_manifest([1] * 50), {i: good_chunk(i, 1, start=i) for i in range(50)})
    async with start_node(max_manifest_bytes=2048, max_chunks=20) as running, running.client() as client:
        await client.session_init("a", manifest_path=big, user_address=OWNER)
        assert (await client.wait_loaded(10))["error_code"] == "LIMIT_EXCEEDED"
        client.events.clear()
        await client.session_init("b", manifest_path=many, user_address=OWNER)
        assert (await client.wait_loaded(10))["error_code"] == "LIMIT_EXCEEDED"


async def test_memory_limit_up_front_and_for_a_lying_manifest(start_node, store):
    huge = hostile_db(store, "huge", good_manifest([10_000_000], dims=4096), {})
    # dimensions missing from the manifest: only the chunk says how big the vectors are
    liar_manifest = good_manifest([2000], dims=3)
    del liar_manifest["dimensions"]
    liar = hostile_db(store, "liar", liar_manifest, {0: good_chunk(0, 2000, dims=300)})
    async with start_node(vector_memory_limit_mb=1) as running, running.client() as client:
        await client.session_init("a", manifest_path=huge, user_address=OWNER)
        final = await client.wait_loaded(10)
        assert final["error_code"] == "MEMORY_LIMIT_EXCEEDED"
        client.events.clear()
        await client.session_init("b", manifest_path=liar, user_address=OWNER)
        assert (await client.wait_loaded(10))["error_code"] == "MEMORY_LIMIT_EXCEEDED"
        assert (await client.search([1.0, 0.0, 0.0], 1))["code"] == "MEMORY_LIMIT_EXCEEDED"


async def test_metadata_memory_counts_against_the_limit(start_node, store):
    fat = {"chunkId": 0, "vectors": [{"id": f"v{i}", "vector": [1.0, 0.0, 0.0], "metadata": {"t": "y" * 60_000}}
                                     for i in range(40)]}
    path = hostile_db(store, "fat", good_manifest([40]), {0: fat})
    async with start_node(vector_memory_limit_mb=1) as running, running.client() as client:
        await client.session_init("a", manifest_path=path, user_address=OWNER)
        assert (await client.wait_loaded(10))["error_code"] == "MEMORY_LIMIT_EXCEEDED"


@pytest.mark.parametrize("setting", ["FABSTIR_MAX_K=0", "S5_RATE_LIMIT_REQUESTS=x", "VECTOR_DTYPE=f8"])
def test_bad_limit_values_exit_2(setting):
    from fabstir_node.cli import main

    name, value = setting.split("=")
    import os

    old = os.environ.get(name)
    os.environ[name] = value
    try:
        assert main(["config"]) == 2
    finally:
        if old is None:
            del os.environ[name]
        else:
            os.environ[name] = old


@pytest.mark.parametrize(("dtype", "outcome"), [("f16", "loading_complete"), ("f32", "loading_error")])
async def test_admission_counts_rows_as_the_node_holds_them(start_node, store, dtype, outcome):
    # 2,000 x 300: 1.2 MB as f16 rows, 2.4 MB as f32; the limit of 2 MB admits only the first
    path = hostile_db(store, "held", good_manifest([2000], dims=300), {0: good_chunk(0, 2000, dims=300)})
    async with start_node(vector_memory_limit_mb=2, vector_dtype=dtype) as running, running.client() as client:
        await client.session_init("a", manifest_path=path, user_address=OWNER)
        final = await client.wait_loaded(10)
        assert final["event"] == outcome
        if outcome == "loading_error":
            assert final["error_code"] == "MEMORY_LIMIT_EXCEEDED" and "limit of 2 MB" in final["error"]


async def test_a_failed_load_leaves_no_row_file(start_node, store, tmp_path):
    # the first chunk is good, the second has a vector of the wrong width: the load fails midway
    path = hostile_db(store, "midway", good_manifest([50, 50], dims=3),
                      {0: good_chunk(0, 50), 1: good_chunk(1, 50, dims=4, start=50)})
    cache = tmp_path / "cache"
    async with start_node(cache_dir=cache, s5_max_parallel_chunks=1) as running, running.client() as client:
        await client.session_init("a", manifest_path=path, user_address=OWNER)
        final = await client.wait_loaded(10)
        assert final["event"] == "loading_error"
        assert not list((cache / ".loading").rglob("*.npy"))
