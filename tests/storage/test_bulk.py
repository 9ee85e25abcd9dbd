"""Bulk downloads (storage/bulk.py) against the real stand-in bridge over loopback."""

from __future__ import annotations

import os

import pytest
from _storage_helpers import wait_for

from fabstir_node.errors import StorageTooLarge
from fabstir_node.storage.bulk import Refused, bulk_get
from fabstir_node.storage.transfer import Transient

PATH = "home/vector-databases/0xabc/docs/chunk-0.json"


def stored(bridge, data: bytes) -> bytes:
    target = bridge.store.root / PATH
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(data)
    return data


def url(bridge) -> str:
    return f"{bridge.url}/s5/fs/{PATH}"


async def test_a_body_of_declared_length_arrives_whole_in_one_request(bridge):
    data = stored(bridge, os.urandom(5 * 1024 * 1024 + 7))
    counted = []
    body = await bulk_get(url(bridge), PATH, None, counted.append)
    assert isinstance(body, bytearray) and body == data
    assert sum(counted) == len(data)
    (record,) = bridge.requests("GET", PATH)
    await wait_for(lambda: record.outcome != "pending")  # the server notes it after the last send
    assert record.outcome == "complete"


async def test_chunked_bodies_are_read_and_capped(bridge):
    data = stored(bridge, os.urandom(300_000))
    bridge.faults.chunked = True
    assert await bulk_get(url(bridge), PATH, None) == data
    with pytest.raises(StorageTooLarge):
        await bulk_get(url(bridge), PATH, 100_000)


async def test_refusals_carry_their_status_and_message(bridge):
    missing = await bulk_get(url(bridge), PATH, None)
    assert isinstance(missing, Refused) and missing.status == 404 and b"not" in missing.body.lower()
    stored(bridge, b"x" * 10)
    bridge.faults.fail(1, path=PATH)
    busy = await bulk_get(url(bridge), PATH, None)
    assert isinstance(busy, Refused) and busy.status == 503
    assert await bulk_get(url(bridge), PATH, None) == b"x" * 10


async def test_declared_length_over_the_cap_is_refused_before_the_body(bridge):
    stored(bridge, b"y" * 5000)
    with pytest.raises(StorageTooLarge):
        await bulk_get(url(bridge), PATH, 4999)
    assert await bulk_get(url(bridge), PATH, 5000) == b"y" * 5000


async def test_other_schemes_and_unreachable_hosts(bridge):
    assert await bulk_get("https://127.0.0.1:1/x", PATH, None) is None  # left to httpx (TLS)
    assert await bulk_get("http://user:pw@127.0.0.1:1/x", PATH, None) is None  # credentials: not here
    with pytest.raises(Transient):
        await bulk_get("http://127.0.0.1:1/x", PATH, None)  # nothing listens on port 1
