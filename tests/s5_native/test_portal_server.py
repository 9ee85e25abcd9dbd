"""The local portal (fabstir-node portal): the API subset, over loopback, with real semantics."""

from __future__ import annotations

import base64
import os

import httpx
import orjson
import pytest

from fabstir_node.s5 import multibase
from fabstir_node.s5.cid import BlobId, blake3_hash
from fabstir_node.s5.registry import RegistryEntry, sign_entry


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


async def upload(http: httpx.AsyncClient, url: str, data: bytes, token: str | None = None) -> httpx.Response:
    headers = {"authorization": f"Bearer {token}"} if token else {}
    return await http.post(f"{url}/s5/upload", content=data, headers=headers)


async def test_upload_returns_the_blob_id_and_download_serves_the_bytes(start_portal, http):
    portal = await start_portal()
    data = os.urandom(5000)
    reply = await upload(http, portal.url, data)
    assert reply.status_code == 200
    blob_id = BlobId.parse(reply.json()["cid"])
    assert blob_id == BlobId.for_data(data)
    for text in (blob_id.to_string("z"), blob_id.to_string("b"), blob_id.to_string("u"),
                 multibase.encode(blob_id.hash33, "u"), blob_id.to_string("z") + ".bin"):
        got = await http.get(f"{portal.url}/s5/download/{text}")
        assert got.status_code == 200 and got.content == data
        assert got.headers["accept-ranges"] == "bytes" and blob_id.hash.hex() in got.headers["etag"]
    head = await http.head(f"{portal.url}/s5/download/{blob_id.to_string('z')}")
    assert head.status_code == 200 and head.headers["content-length"] == "5000" and head.content == b""


@pytest.mark.parametrize(
    ("header", "start", "end"),
    [("bytes=0-99", 0, 99), ("bytes=100-", 100, 4999), ("bytes=-10", 4990, 4999), ("bytes=4990-9999", 4990, 4999)],
)
async def test_range_requests_get_206_with_the_right_slice(start_portal, http, header, start, end):
    portal = await start_portal()
    data = os.urandom(5000)
    cid = (await upload(http, portal.url, data)).json()["cid"]
    got = await http.get(f"{portal.url}/s5/download/{cid}", headers={"range": header})
    assert got.status_code == 206
    assert got.content == data[start : end + 1]
    assert got.headers["content-range"] == f"bytes {start}-{end}/5000"


async def test_unsatisfiable_and_ignored_ranges(start_portal, http):
    portal = await start_portal()
    data = os.urandom(100)
    cid = (await upload(http, portal.url, data)).json()["cid"]
    url = f"{portal.url}/s5/download/{cid}"
    past_end = await http.get(url, headers={"range": "bytes=100-"})
    assert past_end.status_code == 416 and past_end.headers["content-range"] == "bytes */100"
    several = await http.get(url, headers={"range": "bytes=0-1,5-6"})  # not supported: the whole body
    assert several.status_code == 200 and several.content == data


async def test_blob_redirects_to_download_and_missing_blobs_are_404(start_portal, http):
    portal = await start_portal()
    data = b"hello, portal"
    cid = (await upload(http, portal.url, data)).json()["cid"]
    reply = await http.get(f"{portal.url}/s5/blob/{cid}")
    assert reply.status_code == 307 and reply.headers["location"] == f"/s5/download/{cid}"
    absent = BlobId.for_data(b"never uploaded").to_string("z")
    assert (await http.get(f"{portal.url}/s5/blob/{absent}")).status_code == 404
    assert (await http.get(f"{portal.url}/s5/download/{absent}")).status_code == 404
    assert (await http.get(f"{portal.url}/s5/download/not-a-cid")).status_code == 400


async def test_redirect_base_sends_clients_to_another_host(start_portal, http):
    portal = await start_portal(redirect_base="http://cdn.invalid:9")
    cid = (await upload(http, portal.url, b"x")).json()["cid"]
    reply = await http.get(f"{portal.url}/s5/blob/{cid}")
    assert reply.headers["location"] == f"http://cdn.invalid:9/s5/download/{cid}"


async def test_registry_set_and_get_with_signature_and_revision_checks(start_portal, http):
    portal = await start_portal()
    write_key = os.urandom(32)
    first = sign_entry(write_key, 1, b"\x1e" + blake3_hash(b"one"))
    url = f"{portal.url}/s5/registry"
    assert (await http.get(url, params={"pk": b64(first.pk)})).status_code == 404
    assert (await http.post(url, content=orjson.dumps(first.to_json()))).status_code == 204
    got = await http.get(url, params={"pk": b64(first.pk)})
    assert got.status_code == 200 and got.json() == first.to_json()
    # the same entry again is harmless; an older or equal revision with other data is refused
    assert (await http.post(url, content=orjson.dumps(first.to_json()))).status_code == 204
    rival = sign_entry(write_key, 1, b"\x1e" + blake3_hash(b"other"))
    refused = await http.post(url, content=orjson.dumps(rival.to_json()))
    assert refused.status_code == 400 and "revision" in refused.json()["error"]
    second = sign_entry(write_key, 2, b"\x1e" + blake3_hash(b"two"))
    assert (await http.post(url, content=orjson.dumps(second.to_json()))).status_code == 204
    assert (await http.get(url, params={"pk": b64(first.pk)})).json()["revision"] == 2


async def test_registry_refuses_a_bad_signature_and_bad_keys(start_portal, http):
    portal = await start_portal()
    entry = sign_entry(os.urandom(32), 5, b"\x1e" + bytes(32))
    forged = RegistryEntry(entry.pk, entry.revision, b"\x1e" + bytes([1]) * 32, entry.signature)
    url = f"{portal.url}/s5/registry"
    reply = await http.post(url, content=orjson.dumps(forged.to_json()))
    assert reply.status_code == 400 and "signature" in reply.json()["error"]
    assert (await http.get(url, params={"pk": b64(entry.pk)})).status_code == 404
    assert (await http.post(url, content=b"{not json")).status_code == 400
    assert (await http.get(url, params={"pk": b64(bytes(33))})).status_code == 400
    assert (await http.get(url, params={"pk": "%%%"})).status_code == 400


async def test_a_token_guards_writes_but_not_reads(start_portal, http):
    portal = await start_portal(token="s3cret")
    assert (await upload(http, portal.url, b"data")).status_code == 401
    assert (await upload(http, portal.url, b"data", token="wrong")).status_code == 401
    reply = await upload(http, portal.url, b"data", token="s3cret")
    assert reply.status_code == 200
    assert (await http.get(f"{portal.url}/s5/download/{reply.json()['cid']}")).content == b"data"
    entry = sign_entry(os.urandom(32), 1, b"\x1e" + bytes(32))
    body = orjson.dumps(entry.to_json())
    assert (await http.post(f"{portal.url}/s5/registry", content=body)).status_code == 401
    query = await http.post(f"{portal.url}/s5/registry", params={"auth_token": "s3cret"}, content=body)
    assert query.status_code == 204
    assert (await http.get(f"{portal.url}/s5/registry", params={"pk": b64(entry.pk)})).status_code == 200
