"""Issue 14 end to end: FABSTIR_ACCESS_POLICY through real WebSockets, storage behind a real bridge stand-in.

The stand-in records every request, so "no chunk is downloaded for a refused load" is counted at
the storage, not inferred.  Every load writes a ``load_audit`` line; the tests read it from the logs.
"""

from __future__ import annotations

import io
import json
import secrets
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio
from coincurve import PrivateKey

from fabstir_node.crypto.client import build_encrypted_init
from fabstir_node.crypto.keys import HostKey, address_from_public_key
from fabstir_node.formats.paths import manifest_path
from fabstir_node.formats.synthetic import synthetic_records
from fabstir_node.formats.writer import build_database
from fabstir_node.logging import configure
from fabstir_node.storage.bridge_server import serve_bridge
from fabstir_node.testing import write_files

N, DIM = 240, 12


def new_wallet() -> tuple[bytes, str]:
    """A client signing key and its address (what the node recovers as ``client_address``)."""
    key = PrivateKey()
    return key.secret, address_from_public_key(key.public_key.format(compressed=False))


def encrypted_init(host: HostKey, client_key: bytes, *, session_id: str = "s", database: dict | None = None):
    plaintext = {"sessionKey": secrets.token_bytes(32).hex(), "jobId": session_id, "modelName": "m",
                 "pricePerToken": 1}
    if database is not None:
        plaintext["vectorDatabase"] = database
    payload = build_encrypted_init(host.public_key_compressed, plaintext, client_key)
    return {"type": "encrypted_session_init", "session_id": session_id, "job_id": session_id,
            "chain_id": 84532, "payload": payload}


@pytest.fixture
def host_key() -> HostKey:
    return HostKey.generate()


@pytest.fixture
def owner() -> tuple[bytes, str]:
    return new_wallet()


@pytest.fixture
def logs():
    """The daemon's log events (JSON lines), captured for the test."""
    stream = io.StringIO()
    configure("info", "json", stream)

    def events(name: str | None = None) -> list[dict]:
        parsed = [json.loads(line) for line in stream.getvalue().splitlines() if line.startswith("{")]
        return [e for e in parsed if name is None or e.get("event") == name]

    try:
        yield events
    finally:
        configure("info", "console")


@pytest.fixture
def with_bridge(tmp_path: Path, nursery: trio.Nursery, start_node, owner):
    """``async with with_bridge(**settings) as (bridge, running, path, records)``: the owner's database."""

    @asynccontextmanager
    async def both(**settings):
        root = tmp_path / "bridge"
        records = synthetic_records(N, DIM, 3)
        write_files(root, build_database(records, owner=owner[1], name="private", chunk_size=60))
        bridge = await nursery.start(lambda task_status: serve_bridge(root, task_status=task_status))
        values = {"s5_bridge_url": bridge.url, "s5_max_retries": 0, "s5_download_timeout_seconds": 5.0}
        values.update(settings)
        async with start_node(**values) as running:
            yield bridge, running, manifest_path(owner[1], "private"), records

    return both


def storage_reads(bridge) -> tuple[int, int]:
    """(manifest downloads, chunk downloads) the bridge served so far."""
    gets = [r.path for r in bridge.requests("GET")]
    return sum(p.endswith("/manifest.json") for p in gets), sum("/chunk-" in p for p in gets)


def database(path: str, user: str, **extra) -> dict:
    return {"manifestPath": path, "userAddress": user, **extra}


async def test_open_policy_is_unchanged_a_plaintext_claim_loads(with_bridge, owner, logs):
    async with with_bridge() as (bridge, running, path, (ids, vectors, _)):
        assert running.settings.access_policy == "open"
        async with running.client() as client:
            await client.session_init("p", manifest_path=path, user_address=owner[1])
            final = await client.wait_loaded(30)
            assert final["event"] == "loading_complete" and final["vector_count"] == N
            assert (await client.search(vectors[4].tolist(), 1))["results"][0]["id"] == ids[4]
    assert storage_reads(bridge) == (1, N // 60)
    (audit,) = logs("load_audit")
    assert audit["policy"] == "open" and audit["decision"] == "allowed_open" and audit["outcome"] == "success"
    assert audit["signed"] is False and audit["client_address"] is None and audit["peer"] == "127.0.0.1"
    assert audit["manifest_path"] == path and len(audit["manifest_digest"]) >= 32


async def test_signed_refuses_a_plaintext_init_before_reading_anything(with_bridge, owner, logs):
    async with with_bridge(access_policy="signed") as (bridge, running, path, _):
        async with running.client() as client:
            ack = await client.session_init("p", manifest_path=path, user_address=owner[1])
            assert ack["type"] == "session_init_ack"
            final = await client.wait_loaded(30)
            assert final["event"] == "loading_error" and final["error_code"] == "ACCESS_DENIED"
            assert owner[1].lower() not in final["error"].lower()
            reply = await client.search([1.0] * DIM, 3)  # the session's source is the refused database
            assert reply["type"] == "error" and reply["code"] == "ACCESS_DENIED"
    assert storage_reads(bridge) == (0, 0)  # not even the manifest
    (audit,) = logs("load_audit")
    assert audit["decision"] == "denied_unsigned" and audit["outcome"] == "ACCESS_DENIED"
    assert audit["policy"] == "signed" and audit["manifest_digest"] is None


async def test_signed_refuses_a_signer_who_is_not_the_owner_after_the_manifest_only(
    with_bridge, host_key, owner, logs
):
    intruder_key, intruder = new_wallet()
    async with with_bridge(access_policy="signed", host_key=host_key) as (bridge, running, path, _):
        async with running.client() as client:
            # claiming the owner's address does not help: the signer is what counts
            for claimed in (owner[1], intruder):
                ack = await client.request(encrypted_init(host_key, intruder_key,
                                                          database=database(path, claimed)))
                assert ack["type"] == "session_init_ack" and ack["client_address"] == intruder
                final = await client.wait_loaded(30)
                assert final["event"] == "loading_error" and final["error_code"] == "ACCESS_DENIED"
                client.events.clear()
    assert storage_reads(bridge) == (2, 0)  # the manifest, to learn the owner; never a chunk
    audits = logs("load_audit")
    assert [a["decision"] for a in audits] == ["denied_not_owner"] * 2
    assert all(a["client_address"] == intruder and a["signed"] is True for a in audits)
    assert audits[0]["manifest_digest"] and audits[0]["claimed_address"] == owner[1]


async def test_signed_accepts_the_owner_and_a_foreign_signer_never_gets_the_cached_copy(
    with_bridge, host_key, owner, logs
):
    intruder_key, _ = new_wallet()
    async with with_bridge(access_policy="signed", host_key=host_key) as (bridge, running, path, records):
        ids, vectors, _ = records
        async with running.client() as first:
            # the owner's address in any case: the comparison ignores ASCII case
            shouting = "0x" + owner[1][2:].upper()
            ack = await first.request(encrypted_init(host_key, owner[0], database=database(path, shouting)))
            assert ack["client_address"] == owner[1]
            final = await first.wait_loaded(30)
            assert final["event"] == "loading_complete" and final["vector_count"] == N
            assert (await first.search(vectors[9].tolist(), 1))["results"][0]["id"] == ids[9]
            # the SDK re-inits before each request, without a database: the load stays
            await first.request(encrypted_init(host_key, owner[0]))
            assert (await first.search(vectors[2].tolist(), 1))["results"][0]["id"] == ids[2]
            reads = storage_reads(bridge)
            (entry,) = running.node.cache.entries()
            assert entry.users == 1
            # while the owner's copy is in the shared cache, others ask for it
            async with running.client() as second:
                for init in (encrypted_init(host_key, intruder_key, database=database(path, owner[1])),
                             {"type": "session_init", "session_id": "plain",
                              "vector_database": database(path, owner[1])},
                             encrypted_init(host_key, intruder_key, session_id="x",
                                            database=database(path, owner[1]))):
                    second.events.clear()
                    await second.request(init)
                    assert (await second.wait_loaded(30))["error_code"] == "ACCESS_DENIED"
                assert entry.users == 1  # never handed over
                # the same session, re-initialised by the owner, loads it (from the cache)
                second.events.clear()
                await second.request(encrypted_init(host_key, owner[0], session_id="x",
                                                    database=database(path, owner[1])))
                assert (await second.wait_loaded(30))["event"] == "loading_complete"
                assert entry.users == 2
    manifests, chunks = storage_reads(bridge)
    assert chunks == reads[1] == N // 60  # the chunks were read once, for the owner
    decisions = [(a["decision"], a["outcome"]) for a in logs("load_audit")]
    assert decisions == [("allowed_owner", "success"), ("denied_not_owner", "ACCESS_DENIED"),
                         ("denied_unsigned", "ACCESS_DENIED"), ("denied_not_owner", "ACCESS_DENIED"),
                         ("allowed_owner", "success")]


async def test_a_directory_key_is_no_capability_on_a_backend_without_directories(with_bridge, owner, logs):
    async with with_bridge(access_policy="signed") as (bridge, running, path, _):
        async with running.client() as client:
            await client.request({"type": "session_init", "session_id": "k", "vector_database": {
                "manifest_path": path, "user_address": owner[1], "directoryKey": "ab" * 32}})
            assert (await client.wait_loaded(30))["error_code"] == "ACCESS_DENIED"
    assert storage_reads(bridge) == (0, 0)
    assert logs("load_audit")[0]["with_directory_key"] is True


async def test_uploads_and_their_searches_work_under_signed(with_bridge, host_key):
    async with with_bridge(access_policy="signed", host_key=host_key) as (bridge, running, _, _records):
        async with running.client() as client:
            inits = (client.session_init("plain"), client.request(encrypted_init(host_key, new_wallet()[0])))
            for init in inits:
                assert (await init)["type"] == "session_init_ack"
                reply = await client.upload([{"id": "mine", "vector": [1.0] + [0.0] * 7},
                                             {"id": "other", "vector": [0.0, 1.0] + [0.0] * 6}])
                assert reply["status"] == "success"
                assert (await client.search([1.0] + [0.0] * 7, 1))["results"][0]["id"] == "mine"
    assert storage_reads(bridge) == (0, 0)


async def test_the_policy_is_logged_at_start_and_open_over_shared_storage_warns(start_node, logs):
    async with start_node():
        pass
    async with start_node(access_policy="signed"):
        pass
    started = logs("server_started")
    assert [e["access_policy"] for e in started] == ["open", "signed"]
    assert started[0]["max_connections_per_ip"] == 32
    assert [e["policy"] for e in logs("access_policy")] == ["open", "signed"]
    (warning,) = logs("access_policy_open")  # the local store holds every user's databases
    assert warning["level"] == "warning" and "FABSTIR_ACCESS_POLICY=signed" in warning["message"]
    assert len(logs("access_policy_signed_without_host_key")) == 1
