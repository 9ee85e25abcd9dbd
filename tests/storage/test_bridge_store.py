"""BridgeStore against the real stand-in bridge over loopback, with injected faults."""

from __future__ import annotations

import os

import httpx
import orjson
import pytest
import trio
import trio.testing
from _storage_helpers import wait_for

from fabstir_node.errors import ErrorCode, FabstirError, StorageNotFound, StorageTooLarge, StorageUnavailable
from fabstir_node.storage.base import Storage, StorageStats
from fabstir_node.storage.bridge import BridgeStore
from fabstir_node.storage.bridge_server import Action

PATH = "home/vector-databases/0xabc/docs/chunk-0.json"


def stored(bridge, path: str, data: bytes) -> bytes:
    target = bridge.store.root / path
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(data)
    return data


async def test_get_returns_the_bytes(bridge, make_store):
    data = stored(bridge, PATH, os.urandom(200_000))
    store = make_store()
    assert isinstance(store, Storage)
    assert await store.get(PATH) == data
    await trio.testing.wait_all_tasks_blocked()  # the stand-in records "complete" after the last send
    assert [r.outcome for r in bridge.requests("GET", PATH)] == ["complete"]
    assert (store.stats.requests, store.stats.retries, store.stats.errors) == (1, 0, 0)
    assert store.stats.bytes == len(data)


async def test_segments_are_percent_encoded(bridge, make_store):
    path = "home/vector-databases/0xabc/my docs?#/é%41.json"
    data = stored(bridge, path, b"odd name")
    store = make_store()
    expected = "/s5/fs/home/vector-databases/0xabc/my%20docs%3F%23/%C3%A9%2541.json"
    assert store.object_url(path).endswith(expected)
    assert await store.get(path) == data


async def test_invalid_path_never_reaches_the_bridge(bridge, make_store):
    with pytest.raises(FabstirError) as info:
        await make_store().get("home/../../etc/passwd")
    assert info.value.code is ErrorCode.INVALID_PATH
    assert bridge.records == []


async def test_missing_object_is_not_found_without_retry(bridge, make_store):
    store = make_store()
    with pytest.raises(StorageNotFound):
        await store.get(PATH)
    assert len(bridge.requests("GET", PATH)) == 1
    assert (store.stats.retries, store.stats.errors) == (0, 1)


async def test_injected_404_is_not_found(bridge, make_store):
    stored(bridge, PATH, b"there")
    bridge.faults.inject(Action.NOT_FOUND, path=PATH, times=1)
    with pytest.raises(StorageNotFound, match="injected fault"):
        await make_store().get(PATH)
    assert len(bridge.requests("GET", PATH)) == 1


async def test_short_503_burst_is_retried_to_success(bridge, make_store):
    data = stored(bridge, PATH, b"eventually")
    bridge.faults.fail(3, path=PATH)
    retries = []
    store = make_store(stats=StorageStats(on_retry=lambda *args: retries.append(args)))
    assert await store.get(PATH) == data
    assert [r.status for r in bridge.requests("GET", PATH)] == [503, 503, 503, 200]
    seen = [(name, path, attempt) for name, path, attempt, _ in retries]
    assert seen == [(store.name, PATH, n) for n in (1, 2, 3)]
    assert "HTTP 503" in retries[0][3]


async def test_long_503_burst_gives_up_after_max_retries_plus_one(bridge, make_store):
    stored(bridge, PATH, b"never")
    bridge.faults.fail(100)
    store = make_store(max_retries=2)
    with pytest.raises(StorageUnavailable, match="HTTP 503"):
        await store.get(PATH)
    assert len(bridge.requests("GET", PATH)) == 3
    assert (store.stats.retries, store.stats.errors) == (2, 1)


async def test_not_initialised_bridge_is_unavailable_then_recovers(bridge, make_store):
    data = stored(bridge, PATH, b"later")
    store = make_store(max_retries=1)
    bridge.faults.initialised = False
    with pytest.raises(StorageUnavailable):
        await store.get(PATH)
    assert not (await store.health()).ok
    bridge.faults.initialised = True
    assert (await store.health()).ok
    assert await store.get(PATH) == data


@pytest.mark.parametrize(("status", "attempts"), [(403, 1), (400, 1), (500, 3), (502, 3), (429, 3)])
async def test_status_codes_retried_or_not(bridge, make_store, status, attempts):
    stored(bridge, PATH, b"x")
    bridge.faults.inject(Action.STATUS, path=PATH, status=status)
    with pytest.raises(StorageUnavailable, match=f"HTTP {status}"):
        await make_store(max_retries=2).get(PATH)
    assert [r.status for r in bridge.requests("GET", PATH)] == [status] * attempts


@pytest.mark.parametrize("action", [Action.DROP, Action.TRUNCATE])
async def test_dropped_and_truncated_responses_are_retried(bridge, make_store, action):
    data = stored(bridge, PATH, os.urandom(300_000))
    bridge.faults.inject(action, path=PATH, times=2)
    store = make_store()
    assert await store.get(PATH) == data
    # the stand-in marks a response complete when its generator resumes after the last piece, which
    # may be just after the client has read it: give the server task its turn (bounded)
    with trio.fail_after(5):
        while bridge.requests("GET", PATH)[-1].outcome == "pending":
            await trio.sleep(0.01)
    outcomes = [r.outcome for r in bridge.requests("GET", PATH)]
    assert outcomes == [{Action.DROP: "dropped", Action.TRUNCATE: "truncated"}[action]] * 2 + ["complete"]
    assert store.stats.retries == 2


async def test_stalled_body_fails_each_attempt_at_the_deadline(bridge, make_store):
    stored(bridge, PATH, b"x" * 1000)
    bridge.faults.inject(Action.TRICKLE, path=PATH)
    store = make_store(max_retries=1, timeout_seconds=0.2)
    with pytest.raises(StorageUnavailable), trio.fail_after(5):
        await store.get(PATH)
    assert len(bridge.requests("GET", PATH)) == 2


async def test_dripping_body_is_caught_by_the_overall_deadline(bridge, make_store):
    # A byte every 20 ms never trips httpx's read timeout; only the per-attempt deadline ends it.
    stored(bridge, PATH, b"x" * 1000)
    bridge.faults.inject(Action.TRICKLE, path=PATH, interval=0.02)
    store = make_store(max_retries=1, timeout_seconds=0.3)
    with pytest.raises(StorageUnavailable, match="no complete answer within"), trio.fail_after(5):
        await store.get(PATH)
    assert len(bridge.requests("GET", PATH)) == 2
    await wait_for(lambda: all(r.outcome == "aborted" for r in bridge.requests("GET", PATH)))


async def test_latency_beyond_the_deadline_is_unavailable(bridge, make_store):
    stored(bridge, PATH, b"slow")
    bridge.faults.delay(30.0, path=PATH)
    with pytest.raises(StorageUnavailable):
        await make_store(max_retries=0, timeout_seconds=0.2).get(PATH)


async def test_declared_length_over_the_cap_is_refused_without_retry(bridge, make_store):
    stored(bridge, PATH, b"x" * 5000)
    store = make_store(max_body_bytes=4096)
    with pytest.raises(StorageTooLarge):
        await store.get(PATH)
    assert store.stats.bytes == 0
    assert len(bridge.requests("GET", PATH)) == 1
    with pytest.raises(StorageTooLarge):
        await make_store().get(PATH, max_bytes=4999)
    assert await make_store().get(PATH, max_bytes=5000) == b"x" * 5000


async def test_streamed_body_over_the_cap_is_cut_off(bridge, make_store):
    size = 32 * 1024 * 1024
    stored(bridge, PATH, b"\1" * size)
    bridge.faults.chunked = True  # no content-length: the size shows only while streaming
    store = make_store(max_body_bytes=64 * 1024)
    with pytest.raises(StorageTooLarge):
        await store.get(PATH)
    assert store.stats.bytes < 1024 * 1024  # the client did not buffer the rest
    (record,) = bridge.requests("GET", PATH)
    await wait_for(lambda: record.outcome != "pending")
    assert record.outcome == "aborted" and record.bytes_sent < size


async def test_cancelled_downloads_free_their_connections(bridge, make_store, client):
    # The client (and the bulk path) have 2 connections; 4 downloads stall mid-body (2 hold
    # connections, 2 wait for one), then all are cancelled.  A normal get must still work.
    data = stored(bridge, PATH, b"y" * 10_000)
    stall = bridge.faults.inject(Action.TRICKLE, path=PATH)
    store = make_store(timeout_seconds=30.0, max_bulk_connections=2)  # as many as the client's pool
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            for _ in range(4):
                nursery.start_soon(store.get, PATH)
            await wait_for(lambda: [r.outcome for r in bridge.requests("GET", PATH)] == ["trickled"] * 2)
            await trio.sleep(0.05)  # let the other two settle into the pool queue
            nursery.cancel_scope.cancel()
        await wait_for(lambda: all(r.outcome == "aborted" for r in bridge.requests("GET", PATH)))
        bridge.faults.rules.remove(stall)
        for _ in range(3):  # more than max_connections sequential gets
            assert await make_store(max_retries=0).get(PATH) == data
    assert len(bridge.requests("GET", PATH)) == 5


async def test_put_writes_the_file(bridge, make_store):
    bridge.faults.fail(1, path=PATH)
    bridge.faults.rules[-1].method = "PUT"
    store = make_store()
    await store.put(PATH, b"new content")
    assert (bridge.store.root / PATH).read_bytes() == b"new content"
    assert [r.status for r in bridge.requests("PUT", PATH)] == [503, 201]
    assert store.stats.bytes == len(b"new content")
    assert await store.get(PATH) == b"new content"


async def test_health(bridge, make_store, client):
    assert (await make_store().health()).ok
    listener = (await trio.open_tcp_listeners(0, host="127.0.0.1"))[0]
    port = listener.socket.getsockname()[1]
    await listener.aclose()  # nothing listens there now
    status = await BridgeStore(f"http://127.0.0.1:{port}", client=client, timeout_seconds=1.0).health()
    assert not status.ok and "unreachable" in status.detail


async def test_cbor_files_are_reserved_as_json(bridge, make_store):
    import cbor2

    vector = {"id": "a", "vector": [0.5, -1.25], "metadata": {"t": "x", "u": cbor2.undefined}}
    chunk = {"chunkId": 0, "vectors": [vector]}
    stored(bridge, PATH, cbor2.dumps(chunk))
    bridge.faults.cbor_as_json = True
    body = await make_store().get(PATH)
    vector = {"id": "a", "vector": [0.5, -1.25], "metadata": {"t": "x"}}
    assert orjson.loads(body) == {"chunkId": 0, "vectors": [vector]}
    json_text = stored(bridge, "home/plain.json", b'{"chunkId": 1}')
    assert await make_store().get("home/plain.json") == json_text


async def test_make_http_client_has_finite_limits(client):
    assert isinstance(client, httpx.AsyncClient)
    assert client.timeout.pool == 1.0 and client.timeout.read == 5.0
