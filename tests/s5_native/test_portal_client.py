"""PortalClient against real local portals on loopback: verification, redirects, fallback, registry."""

from __future__ import annotations

import os

import pytest
import trio
from _s5_native_helpers import closed_port_url

from fabstir_node.errors import ErrorCode, FabstirError, StorageTooLarge, StorageUnavailable
from fabstir_node.s5.cid import BlobId, blake3_hash
from fabstir_node.s5.registry import RegistryEntry, sign_entry
from fabstir_node.server.http import HttpResponse
from fabstir_node.storage.s5_portal import Portal, parse_portals


async def test_a_blob_comes_back_verified_and_a_missing_one_is_none(start_portal, make_client):
    portal = await start_portal()
    client = make_client(portal)
    data = os.urandom(3000)
    blob_id = await client.upload(data)
    assert blob_id == BlobId.for_data(data)
    assert await client.get_blob(blob_id) == data
    assert await client.get_blob(BlobId(blob_id.hash, 0)) == data  # size unknown: hash only
    assert await client.get_blob(BlobId.for_data(b"absent")) is None
    assert [r[1].split("/")[2] for r in portal.saw("/s5/")][-2:] == ["blob", "download"]


async def test_a_blob_whose_hash_does_not_match_is_refused(start_portal, make_client):
    portal = await start_portal()
    client = make_client(portal)
    data = os.urandom(2000)
    blob_id = await client.upload(data)
    portal.blob_file(blob_id.hash).write_bytes(os.urandom(2000))  # same size, other bytes
    with pytest.raises(FabstirError) as caught:
        await client.get_blob(blob_id)
    assert caught.value.code is ErrorCode.S5_HASH_MISMATCH
    assert client.stats.retries == 0  # wrong bytes are not a transient failure
    portal.blob_file(blob_id.hash).write_bytes(data + b"extra")  # wrong size
    with pytest.raises(FabstirError, match="wrong size"):
        await client.get_blob(blob_id)


async def test_a_tampered_portal_is_skipped_for_one_with_the_right_bytes(start_portal, make_client):
    bad, good = await start_portal("bad"), await start_portal("good")
    data = os.urandom(1000)
    blob_id = await make_client(bad).upload(data)
    await make_client(good).upload(data)
    bad.blob_file(blob_id.hash).write_bytes(os.urandom(1000))
    assert await make_client(bad, good).get_blob(blob_id) == data
    assert good.saw("/s5/")


async def test_a_redirect_to_another_host_is_followed_without_credentials(start_portal, make_client, tmp_path):
    storage_host = await start_portal("cdn", root=tmp_path / "shared")
    portal = await start_portal("portal", root=tmp_path / "shared", redirect_base=storage_host.url, token="tok-A")
    client = make_client(Portal(portal.url, "tok-A"))
    data = os.urandom(4000)
    blob_id = await client.upload(data)
    assert portal.saw("/s5/upload")[-1][2] == "Bearer tok-A"
    assert await client.get_blob(blob_id) == data
    blob_requests = portal.saw("/s5/blob/")
    assert blob_requests and all(auth == "Bearer tok-A" for _, _, auth in blob_requests)
    followed = storage_host.saw("/s5/download/")
    assert followed, "the redirect was not followed to the storage host"
    assert [auth for _, _, auth in storage_host.requests] == [None] * len(storage_host.requests)


async def test_a_same_origin_redirect_keeps_the_token(start_portal, make_client):
    portal = await start_portal(token="tok")
    client = make_client(Portal(portal.url, "tok"))
    blob_id = await client.upload(b"same origin")
    assert await client.get_blob(blob_id) == b"same origin"
    assert portal.saw("/s5/download/")[-1][2] == "Bearer tok"


async def test_download_is_the_fallback_when_blob_is_refused(start_portal, make_client):
    portal = await start_portal()

    async def no_blob_endpoint(request):
        return HttpResponse(400) if request.path.startswith("/s5/blob/") else None

    portal.fault = no_blob_endpoint
    client = make_client(portal)
    blob_id = await client.upload(b"via download")
    assert await client.get_blob(blob_id) == b"via download"
    assert portal.saw("/s5/download/")


async def test_a_portal_that_is_down_passes_to_the_next(start_portal, make_client):
    portal = await start_portal()
    down = closed_port_url()
    data = os.urandom(100)
    blob_id = await make_client(portal).upload(data)
    client = make_client(down, portal)
    assert await client.get_blob(blob_id) == data
    entry = sign_entry(os.urandom(32), 1, b"\x1e" + blake3_hash(data))
    await make_client(portal).set_entry(entry)
    assert await client.get_entry(entry.pk) == entry
    # writes fall back too
    assert await client.upload(b"written past a dead portal") == BlobId.for_data(b"written past a dead portal")
    with pytest.raises(StorageUnavailable, match="no portal answered"):
        await make_client(down, closed_port_url(), max_retries=1).get_blob(blob_id)


async def test_transient_errors_are_retried_in_rounds(start_portal, make_client):
    portal = await start_portal()
    client = make_client(portal, max_retries=3)
    blob_id = await client.upload(b"flaky")
    failures = {"left": 2}

    async def flaky(request):
        if request.path.startswith("/s5/") and request.method == "GET" and failures["left"] > 0:
            failures["left"] -= 1
            return HttpResponse(503)
        return None

    portal.fault = flaky
    assert await client.get_blob(blob_id) == b"flaky"
    assert client.stats.retries >= 1


async def test_the_body_cap_applies(start_portal, make_client):
    portal = await start_portal()
    data = os.urandom(10_000)
    blob_id = await make_client(portal).upload(data)
    with pytest.raises(StorageTooLarge):
        await make_client(portal, max_body_bytes=1000).get_blob(BlobId(blob_id.hash, 0))
    with pytest.raises(StorageTooLarge):
        await make_client(portal).get_blob(blob_id, max_bytes=5000)


async def test_the_highest_valid_revision_wins_across_portals(start_portal, make_client):
    stale, fresh = await start_portal("stale"), await start_portal("fresh")
    key = os.urandom(32)
    old = sign_entry(key, 1, b"\x1e" + blake3_hash(b"old"))
    new = sign_entry(key, 2, b"\x1e" + blake3_hash(b"new"))
    await make_client(stale).set_entry(old)
    await make_client(fresh).set_entry(old)
    await make_client(fresh).set_entry(new)
    assert await make_client(stale, fresh).get_entry(new.pk) == new
    assert await make_client(fresh, stale).get_entry(new.pk) == new
    assert await make_client(stale).get_entry(new.pk) == old
    rival = sign_entry(key, 1, b"\x1e" + blake3_hash(b"rival"))
    with pytest.raises(FabstirError) as caught:
        await make_client(stale).set_entry(rival)  # a portal refuses a revision that is not higher
    assert caught.value.code is ErrorCode.S5_INVALID_ENTRY and "revision" in caught.value.detail


async def test_forged_registry_answers_are_ignored_or_refused(start_portal, make_client):
    honest, forger = await start_portal("honest"), await start_portal("forger")
    key = os.urandom(32)
    real = sign_entry(key, 1, b"\x1e" + blake3_hash(b"real"))
    await make_client(honest).set_entry(real)
    forged = RegistryEntry(real.pk, 99, b"\x1e" + blake3_hash(b"forged"), real.signature)
    (forger.root / "registry" / real.pk.hex()).write_bytes(forged.to_bytes())  # past the portal's own checks
    assert await make_client(forger, honest).get_entry(real.pk) == real
    with pytest.raises(FabstirError) as caught:
        await make_client(forger).get_entry(real.pk)
    assert caught.value.code is ErrorCode.S5_INVALID_ENTRY


async def test_an_entry_nobody_has_is_none_and_health_reflects_reachability(start_portal, make_client):
    portal = await start_portal()
    assert await make_client(portal).get_entry(b"\xed" + os.urandom(32)) is None
    assert (await make_client(closed_port_url(), portal).health()).ok
    status = await make_client(closed_port_url(), max_retries=0).health()
    assert not status.ok and "no portal answers" in status.detail


def test_tokens_pair_with_portals():
    assert [p.token for p in parse_portals(["http://a", "http://b"], "t")] == ["t", "t"]
    assert [p.token for p in parse_portals(["http://a", "http://b"], ",t2")] == [None, "t2"]
    assert [p.token for p in parse_portals(["http://a"], None)] == [None]
    with pytest.raises(ValueError, match="2 tokens for 3 portals"):
        parse_portals(["http://a", "http://b", "http://c"], "x,y")
    assert "t2" not in repr(parse_portals(["http://a"], "t2"))


async def test_cancelling_a_download_leaves_the_client_usable(start_portal, make_client):
    portal = await start_portal()
    client = make_client(portal)
    blob_id = await client.upload(b"after cancel")

    async def stall(request):
        await trio.sleep(30)

    portal.fault = stall
    with trio.move_on_after(0.2):
        await client.get_blob(blob_id)
    portal.fault = None
    assert await client.get_blob(blob_id) == b"after cancel"
