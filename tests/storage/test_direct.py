"""A decode worker's own read of a chunk (storage/direct.py): one attempt, every failure reported."""

from __future__ import annotations

import os

import pytest
import trio

from fabstir_node.errors import StorageNotFound
from fabstir_node.storage.bridge_server import Action
from fabstir_node.storage.direct import DirectFailed, fetch
from fabstir_node.storage.local import LocalStore

PATH = "home/vector-databases/0xab/kb/chunk-0.json"


def put(bridge, data: bytes) -> None:
    target = bridge.store.root / PATH
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(data)


async def read(direct, timeout=2.0):
    return await trio.to_thread.run_sync(fetch, direct.spec(), timeout)


async def test_a_worker_gets_the_bridges_bytes_and_counts_them(bridge, make_store):
    data = os.urandom(3 * 1024 * 1024 + 17)
    put(bridge, data)
    store = make_store()
    direct = await store.direct(PATH)
    assert direct is not None and direct.kind == "http" and direct.limiter is not None
    assert await read(direct) == data
    direct.record(len(data))
    assert store.stats.bytes == len(data)


@pytest.mark.parametrize("fault", ["missing", "503", "over the cap", "chunked", "truncated", "trickle"])
async def test_every_failure_of_the_one_attempt_is_reported(bridge, make_store, fault):
    put(bridge, b"x" * 100_000)
    path = PATH
    store = make_store()
    if fault == "missing":
        direct = await store.direct(PATH.replace("chunk-0", "chunk-9"))
    elif fault == "over the cap":
        direct = await store.direct(PATH, max_bytes=1000)
    else:
        if fault == "503":
            bridge.faults.fail(1, path=path)
        elif fault == "chunked":
            bridge.faults.chunked = True
        elif fault == "truncated":
            bridge.faults.inject(Action.TRUNCATE, path=path, times=1)
        else:
            bridge.faults.inject(Action.TRICKLE, path=path, interval=0.05)
        direct = await store.direct(PATH)
    with trio.fail_after(10), pytest.raises(DirectFailed):
        await read(direct, timeout=0.5)
    if fault in ("503", "chunked", "truncated"):  # the ordinary read that follows gets it
        assert await store.get(PATH) == b"x" * 100_000


async def test_an_https_bridge_is_read_by_the_daemon(client):
    from fabstir_node.storage.bridge import BridgeStore

    assert await BridgeStore("https://bridge.example", client=client).direct(PATH) is None


async def test_a_local_file_is_read_through_the_descriptor_the_store_checked(tmp_path):
    store = LocalStore(tmp_path / "store")
    data = os.urandom(100_000)
    (tmp_path / "store" / PATH).parent.mkdir(parents=True)
    (tmp_path / "store" / PATH).write_bytes(data)
    direct = await store.direct(PATH)
    assert direct is not None and direct.kind == "file"
    try:
        (tmp_path / "store" / PATH).unlink()  # what the path names later does not matter: the descriptor does
        assert await read(direct) == data
    finally:
        direct.close()
    with pytest.raises(StorageNotFound):
        await store.direct(PATH)
    outside = tmp_path / "secret"
    outside.write_bytes(b"no")
    (tmp_path / "store" / PATH).symlink_to(outside)
    with pytest.raises(StorageNotFound):  # the store's own checks still decide what may be read
        await store.direct(PATH)


async def test_a_file_over_the_cap_is_refused_by_the_store(tmp_path):
    from fabstir_node.errors import StorageTooLarge

    store = LocalStore(tmp_path / "store")
    (tmp_path / "store" / PATH).parent.mkdir(parents=True)
    (tmp_path / "store" / PATH).write_bytes(b"x" * 5000)
    with pytest.raises(StorageTooLarge):
        await store.direct(PATH, max_bytes=100)
