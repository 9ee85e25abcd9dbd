"""Hostile databases: each gets its code, nothing crashes, nothing partial stays searchable."""

from __future__ import annotations

import math

import cbor2
import pytest
from _hardening import OWNER, good_chunk, good_manifest, hostile_db


def deep(levels: int) -> dict:
    value: dict = {}
    for _ in range(levels):
        value = {"a": value}
    return value


def _case(name):
    """(manifest, chunks, fmt, expected code) for each hostile case."""
    m, c = good_manifest, good_chunk
    nan_chunk = {"chunkId": 0, "vectors": [{"id": "a", "vector": [math.nan, 0.0, 0.0]}]}
    inf_chunk = {"chunkId": 0, "vectors": [{"id": "a", "vector": [math.inf, 0.0, 0.0]}]}
    cases = {
        "lying vectorCount": (m([2], vectorCount=5), {0: c(0, 2)}, "json", "INVALID_DATABASE"),
        "chunk holds fewer than its entry": (m([3]), {0: c(0, 2)}, "json", "INVALID_DATABASE"),
        "chunk holds more than its entry": (m([1]), {0: c(0, 2)}, "json", "INVALID_DATABASE"),
        "chunkCount disagrees": (m([1, 1], chunkCount=3), {0: c(0, 1), 1: c(1, 1, start=1)}, "json",
                                 "INVALID_DATABASE"),
        "huge chunkCount": (m([1], chunkCount=10**12), {0: c(0, 1)}, "json", "LIMIT_EXCEEDED"),
        "gap in chunk ids": (dict(m([1, 1]), chunks=[
            {"chunkId": 0, "cid": "a", "vectorCount": 1, "sizeBytes": 0, "updatedAt": 0},
            {"chunkId": 2, "cid": "b", "vectorCount": 1, "sizeBytes": 0, "updatedAt": 0}]),
            {0: c(0, 1), 2: c(2, 1, start=1)}, "json", "INVALID_DATABASE"),
        "duplicate chunk ids": (dict(m([1, 1]), chunks=[
            {"chunkId": 0, "cid": "a", "vectorCount": 1, "sizeBytes": 0, "updatedAt": 0},
            {"chunkId": 0, "cid": "b", "vectorCount": 1, "sizeBytes": 0, "updatedAt": 0}]),
            {0: c(0, 1)}, "json", "INVALID_DATABASE"),
        "chunk file claims another id": (m([1]), {0: c(1, 1)}, "json", "INVALID_DATABASE"),
        "duplicate vector ids": (m([2, 1]), {0: c(0, 2), 1: c(1, 1)}, "json", "INVALID_DATABASE"),
        "NaN in a vector (CBOR)": (m([1]), {0: nan_chunk}, "cbor", "INVALID_DATABASE"),
        "Inf in a vector (CBOR)": (m([1]), {0: inf_chunk}, "cbor", "INVALID_DATABASE"),
        "string in a vector": (m([1]), {0: {"chunkId": 0, "vectors": [{"id": "a", "vector": [1, "2", 3]}]}},
                               "json", "INVALID_DATABASE"),
        "bool in a vector": (m([1]), {0: {"chunkId": 0, "vectors": [{"id": "a", "vector": [1, True, 3]}]}},
                             "json", "INVALID_DATABASE"),
        "vector not a list": (m([1]), {0: {"chunkId": 0, "vectors": [{"id": "a", "vector": "1,2,3"}]}},
                              "json", "INVALID_DATABASE"),
        "empty id": (m([1]), {0: {"chunkId": 0, "vectors": [{"id": "", "vector": [1, 2, 3]}]}}, "json",
                     "INVALID_DATABASE"),
        "id not a string": (m([1]), {0: {"chunkId": 0, "vectors": [{"id": 5, "vector": [1, 2, 3]}]}}, "json",
                            "INVALID_DATABASE"),
        "wrong dimension": (m([1]), {0: {"chunkId": 0, "vectors": [{"id": "a", "vector": [1, 2]}]}}, "json",
                            "DIMENSION_MISMATCH"),
        "metadata not an object": (m([1]), {0: {"chunkId": 0, "vectors": [
            {"id": "a", "vector": [1, 2, 3], "metadata": [1, 2]}]}}, "json", "INVALID_DATABASE"),
        "deeply nested metadata": (m([1]), {0: {"chunkId": 0, "vectors": [
            {"id": "a", "vector": [1, 2, 3], "metadata": deep(5000)}]}}, "cbor", "INVALID_DATABASE"),
        "giant metadata": (m([1]), {0: {"chunkId": 0, "vectors": [
            {"id": "a", "vector": [1, 2, 3], "metadata": {"t": "x" * 200_000}}]}}, "json", "LIMIT_EXCEEDED"),
        "manifest not an object": ([1, 2, 3], {}, "json", "INVALID_DATABASE"),
        "vectorCount a string": (m([1], vectorCount="1"), {0: c(0, 1)}, "json", "INVALID_DATABASE"),
        "negative counts": (m([1], vectorCount=-1), {0: c(0, 1)}, "json", "INVALID_DATABASE"),
        "chunk is garbage": (m([1]), {0: b"\x00\x01\x02 not a chunk"}, "json", "INVALID_DATABASE"),
        "chunk is truncated CBOR": (m([1]), {0: cbor2.dumps(c(0, 1))[:-5]}, "cbor", "INVALID_DATABASE"),
        "deleted database": (m([1], deleted=True), {0: c(0, 1)}, "json", "MANIFEST_NOT_FOUND"),
        "empty database": (m([], vectorCount=0), {}, "json", "EMPTY_DATABASE"),
    }
    return cases[name]


CASES = [
    "lying vectorCount", "chunk holds fewer than its entry", "chunk holds more than its entry",
    "chunkCount disagrees", "huge chunkCount", "gap in chunk ids", "duplicate chunk ids",
    "chunk file claims another id", "duplicate vector ids", "NaN in a vector (CBOR)", "Inf in a vector (CBOR)",
    "string in a vector", "bool in a vector", "vector not a list", "empty id", "id not a string",
    "wrong dimension", "metadata not an object", "deeply nested metadata", "giant metadata",
    "manifest not an object", "vectorCount a string", "negative counts", "chunk is garbage",
    "chunk is truncated CBOR", "deleted database", "empty database",
]


@pytest.mark.parametrize("name", CASES)
async def test_hostile_database_gets_its_code(start_node, store, name):
    manifest, chunks, fmt, code = _case(name)
    path = hostile_db(store, "h", manifest, chunks, fmt=fmt)
    async with start_node() as running:
        async with running.client() as client:
            await client.session_init("s", manifest_path=path, user_address=OWNER)
            final = await client.wait_loaded(20)
            assert final["event"] == "loading_error" and final["error_code"] == code, final
            reply = await client.search([1.0, 0.5, 0.5], 5)
            assert reply["type"] == "error" and reply["code"] == code  # nothing partial is searchable
        assert len(running.node.cache) == 0  # nor cached for anyone else
        async with running.client() as client:  # and the daemon serves on
            assert (await client.request({"type": "ping"}))["type"] == "pong"


@pytest.mark.parametrize("path", [
    "home/../../etc/passwd", "home/%2e%2e/%2e%2e/etc/passwd", "/home/x/manifest.json", "home\\x\\manifest.json",
    "home/x/../../y/manifest.json", "C:/home/manifest.json", "home/x%2fy/manifest.json", "home/./x/manifest.json",
    "home//manifest.json", "archive/../home/x", "file:///etc/passwd", "home/x\x00/manifest.json",
])
async def test_escaping_paths_are_invalid(start_node, path):
    async with start_node() as running, running.client() as client:
        await client.session_init("s", manifest_path=path, user_address=OWNER)
        assert (await client.wait_loaded(5))["error_code"] == "INVALID_PATH"


@pytest.mark.parametrize("owner", [
    OWNER.replace("a", "\u0430"),  # Cyrillic a
    OWNER.upper().replace("0X", "0x").replace("AA", "\uff21\uff21"),  # fullwidth A
    OWNER[:-1] + "\u212a",  # Kelvin sign
    OWNER + " ",
])
async def test_look_alike_owners_do_not_match(start_node, store, owner):
    path = hostile_db(store, "look", good_manifest([1]), {0: good_chunk(0, 1)})
    async with start_node() as running, running.client() as client:
        await client.session_init("s", manifest_path=path, user_address=owner)
        assert (await client.wait_loaded(5))["error_code"] == "OWNER_MISMATCH"
        client.events.clear()
        await client.session_init("t", manifest_path=path, user_address=OWNER.upper().replace("0X", "0x"))
        assert (await client.wait_loaded(5))["event"] == "loading_complete"
