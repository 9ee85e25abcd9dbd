"""The stand-in bridge's own routes, and its CBOR-as-JSON rendering."""

from __future__ import annotations

import math
import struct

import cbor2
import orjson
from hypothesis import given
from hypothesis import strategies as st

from fabstir_node.storage.bridge_server import Action, Faults, cbor_as_json_text

PATH = "home/vector-databases/0xabc/docs/manifest.json"


async def test_put_get_delete_routes(bridge, client):
    url = f"{bridge.url}/s5/fs/{PATH}"
    created = await client.put(url, content=b"manifest bytes")
    assert created.status_code == 201
    body = created.json()
    assert (body["success"], body["path"], body["size"]) == (True, PATH, len(b"manifest bytes"))
    got = await client.get(url)
    assert (got.status_code, got.content) == (200, b"manifest bytes")
    assert got.headers["content-type"] == "application/octet-stream"
    assert (await client.delete(url)).status_code == 204
    missing = await client.get(url)
    assert missing.status_code == 404
    assert missing.json() == {"error": "Not found", "path": PATH, "message": "no such object"}
    assert [(r.method, r.status) for r in bridge.requests(path=PATH)] == [
        ("PUT", 201), ("GET", 200), ("DELETE", 204), ("GET", 404)
    ]


async def test_bad_paths_and_routes(bridge, client):
    assert (await client.put(f"{bridge.url}/s5/fs/etc/passwd", content=b"x")).status_code == 400
    assert (await client.get(f"{bridge.url}/s5/fs/home/%2E%2E/x")).status_code == 404
    assert (await client.get(f"{bridge.url}/elsewhere")).status_code == 404
    assert not (bridge.store.root / "etc").exists()


async def test_health_follows_initialisation(bridge, client):
    assert (await client.get(f"{bridge.url}/health")).json() == {"status": "healthy", "initialized": True}
    bridge.faults.initialised = False
    assert (await client.get(f"{bridge.url}/health")).status_code == 503
    assert (await client.get(f"{bridge.url}/s5/fs/{PATH}")).status_code == 503


def test_rules_for_a_path_win_and_run_out():
    faults = Faults()
    everywhere = faults.inject(Action.DROP)
    here = faults.fail(2, path=PATH)
    assert [faults.take("GET", PATH) for _ in range(3)] == [here, here, everywhere]
    assert faults.take("PUT", PATH) is None  # rules default to GET
    assert faults.take("GET", "home/other") is everywhere


def test_cbor_rendering_matches_json_stringify():
    floats = struct.pack("<3f", 0.5, -2.0, 1.25)
    document = {
        1: "int key",
        "gone": cbor2.undefined,
        "list": [cbor2.undefined, 1, None],
        "f32": cbor2.CBORTag(85, floats),
        "u16be": cbor2.CBORTag(65, struct.pack(">2H", 1, 513)),
        "raw": b"\x01\x02",
        "nan": math.nan,
    }
    assert orjson.loads(cbor_as_json_text(cbor2.dumps(document))) == {
        "1": "int key",
        "list": [None, 1, None],
        "f32": {"0": 0.5, "1": -2.0, "2": 1.25},
        "u16be": {"0": 1, "1": 513},
        "raw": {"type": "Buffer", "data": [1, 2]},
        "nan": None,
    }


def test_non_cbor_is_left_alone():
    assert cbor_as_json_text(b'{"chunkId": 0}') is None
    assert cbor_as_json_text(b"[1, 2]") is None
    assert cbor_as_json_text(cbor2.dumps("just a string")) is None
    assert cbor_as_json_text(cbor2.dumps({"a": 1}) + b"trailing") is None


@given(st.binary(max_size=200))
def test_any_bytes_give_json_or_none(data):
    result = cbor_as_json_text(data)
    assert result is None or isinstance(orjson.loads(result), dict | list)


_cbor_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5) | st.binary(max_size=5),
    lambda inner: st.lists(inner, max_size=4)
    | st.dictionaries(st.text(max_size=3) | st.integers(), inner, max_size=4),
    max_leaves=20,
)


@given(st.dictionaries(st.text(max_size=3), _cbor_values, max_size=4))
def test_any_cbor_map_renders(document):
    assert isinstance(orjson.loads(cbor_as_json_text(cbor2.dumps(document))), dict)
