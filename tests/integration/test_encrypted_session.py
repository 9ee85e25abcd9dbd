"""Issue 4 end to end: SDK-style encrypted_session_init over a real WebSocket."""

from __future__ import annotations

import io
import secrets

import numpy as np
import pytest
from coincurve import PrivateKey

from fabstir_node.crypto.client import build_encrypted_init
from fabstir_node.crypto.keys import HostKey, address_from_public_key
from fabstir_node.logging import configure

OWNER = "0xAbCdEf0000000000000000000000000000000001"


def sdk_init(host: HostKey, client_key: bytes, session_key: bytes, *, session_id="7", database=None, **extra):
    plaintext = {"sessionKey": session_key.hex(), "jobId": session_id, "modelName": "m", "pricePerToken": "2000n"}
    if database is not None:
        plaintext["vectorDatabase"] = database
    return {
        "type": "encrypted_session_init", "session_id": session_id, "job_id": session_id, "chain_id": 84532,
        "payload": build_encrypted_init(host.public_key_compressed, plaintext, client_key), **extra,
    }


@pytest.fixture
def host_key():
    return HostKey.generate()


async def test_known_answer_init_over_websocket(start_node, test_vectors):
    vector = test_vectors["encrypted_session_init"]
    host = HostKey.from_hex(vector["host_private_key"])
    async with start_node(host_key=host) as running, running.client() as client:
        ack = await client.request(vector["message"])
        assert ack["type"] == "session_init_ack" and ack["status"] == "success"
        assert ack["client_address"] == vector["client_address"] and ack["session_id"] == "42"
        # the vector names a database that does not exist: loading fails after the ack
        final = await client.wait_loaded(10)
        assert final["event"] == "loading_error" and final["error_code"] == "MANIFEST_NOT_FOUND"


async def test_sdk_client_gets_its_address_and_encrypted_database_loads(start_node, publish_local, host_key):
    session_key = secrets.token_bytes(32)
    path, (ids, vectors, metas) = publish_local(400, 24, owner=OWNER, key=session_key, chunk_size=100)
    client_key = PrivateKey().secret
    expected_address = address_from_public_key(PrivateKey(client_key).public_key.format(compressed=False))
    async with start_node(host_key=host_key) as running, running.client() as client:
        ack = await client.request(sdk_init(host_key, client_key, session_key, database={
            "manifestPath": path, "userAddress": OWNER.lower()}))
        assert ack["client_address"] == expected_address
        assert "sessionKey" not in str(ack) and session_key.hex() not in str(ack)
        final = await client.wait_loaded(30)
        assert final["event"] == "loading_complete" and final["vector_count"] == 400
        reply = await client.search(vectors[5].tolist(), 3)
        assert reply["results"][0]["id"] == ids[5]
        # the SDK re-inits before every RAG request with a new key and no database: still searchable
        for _ in range(2):
            ack = await client.request(sdk_init(host_key, client_key, secrets.token_bytes(32)))
            assert ack["type"] == "session_init_ack"
            reply = await client.search(vectors[9].tolist(), 3)
            assert reply["results"][0]["id"] == ids[9] and reply["totalVectors"] == 400


async def test_encrypted_database_under_another_key_fails(start_node, publish_local, host_key):
    path, _ = publish_local(50, 8, owner=OWNER, key=secrets.token_bytes(32))
    async with start_node(host_key=host_key) as running, running.client() as client:
        await client.request(sdk_init(host_key, PrivateKey().secret, secrets.token_bytes(32),
                                      database={"manifestPath": path, "userAddress": OWNER}))
        final = await client.wait_loaded(10)
        assert final["event"] == "loading_error" and final["error_code"] == "DECRYPTION_FAILED"
        reply = await client.search([1.0] * 8, 3)
        assert reply["code"] == "DECRYPTION_FAILED"


async def test_reinit_keeps_uploads_and_new_database_replaces(start_node, publish_local, host_key):
    path, (ids, vectors, _) = publish_local(60, 8, owner=OWNER)
    client_key = PrivateKey().secret
    async with start_node(host_key=host_key) as running, running.client() as client:
        await client.request(sdk_init(host_key, client_key, secrets.token_bytes(32)))
        await client.upload([{"id": "mine", "vector": [1.0] + [0.0] * 7}])
        await client.request(sdk_init(host_key, client_key, secrets.token_bytes(32)))
        assert (await client.search([1.0] + [0.0] * 7, 1))["results"][0]["id"] == "mine"
        await client.request(sdk_init(host_key, client_key, secrets.token_bytes(32),
                                      database={"manifestPath": path, "userAddress": OWNER}))
        assert (await client.wait_loaded(10))["event"] == "loading_complete"
        assert (await client.search(vectors[0].tolist(), 1))["results"][0]["id"] == ids[0]


@pytest.mark.parametrize(
    "mutate, code",
    [
        (lambda msg: msg.pop("payload"), "MISSING_PAYLOAD"),
        (lambda msg: msg.__setitem__("payload", "text"), "INVALID_PAYLOAD"),
        (lambda msg: msg["payload"].pop("ciphertextHex"), "INVALID_PAYLOAD"),
        (lambda msg: msg["payload"].__setitem__("nonceHex", "zz" * 24), "INVALID_HEX_ENCODING"),
        (lambda msg: msg["payload"].__setitem__("nonceHex", "00" * 12), "INVALID_NONCE_SIZE"),
        (lambda msg: msg["payload"].__setitem__("ciphertextHex", "00" * 80), "DECRYPTION_FAILED"),
    ],
)
async def test_encrypted_init_errors(start_node, host_key, mutate, code):
    async with start_node(host_key=host_key) as running, running.client() as client:
        message = sdk_init(host_key, PrivateKey().secret, secrets.token_bytes(32), id="e1")
        mutate(message)
        reply = await client.request(message)
        assert reply["type"] == "error" and reply["code"] == code and reply["id"] == "e1"
        assert (await client.request({"type": "ping"}))["type"] == "pong"


async def test_invalid_session_key_in_payload(start_node, host_key):
    async with start_node(host_key=host_key) as running, running.client() as client:
        plaintext = {"sessionKey": "ab" * 31, "jobId": "1", "modelName": "m", "pricePerToken": 1}
        message = {"type": "encrypted_session_init", "session_id": "1",
                   "payload": build_encrypted_init(host_key.public_key_compressed, plaintext)}
        assert (await client.request(message))["code"] == "INVALID_SESSION_KEY"


async def test_without_host_key_encryption_is_not_supported(start_node, host_key):
    async with start_node() as running, running.client() as client:
        reply = await client.request(sdk_init(host_key, PrivateKey().secret, secrets.token_bytes(32)))
        assert reply["code"] == "ENCRYPTION_NOT_SUPPORTED"
        assert (await client.session_init("plain"))["type"] == "session_init_ack"


async def test_plaintext_session_cannot_open_encrypted_database(start_node, publish_local):
    path, _ = publish_local(20, 8, owner=OWNER, key=secrets.token_bytes(32))
    async with start_node() as running, running.client() as client:
        await client.session_init("p", manifest_path=path, user_address=OWNER)
        final = await client.wait_loaded(10)
        assert final["error_code"] == "INVALID_SESSION_KEY"


async def test_no_key_reaches_any_log_line(start_node, publish_local, host_key):
    stream = io.StringIO()
    configure("debug", "json", stream)
    try:
        session_key = secrets.token_bytes(32)
        path, (ids, vectors, metas) = publish_local(100, 8, owner=OWNER, key=session_key)
        async with start_node(host_key=host_key, log_level="debug") as running, running.client() as client:
            await client.request(sdk_init(host_key, PrivateKey().secret, session_key,
                                          database={"manifestPath": path, "userAddress": OWNER}))
            await client.wait_loaded(10)
            await client.search(vectors[0].tolist(), 2)
            # a failure path too: a tampered payload and a wrong key
            bad = sdk_init(host_key, PrivateKey().secret, session_key)
            bad["payload"]["ciphertextHex"] = "00" * 64
            await client.request(bad)
            await client.upload([{"id": "u", "vector": [0.25] * 8, "metadata": {"secret": "s3cr3t-text"}}])
    finally:
        configure("info", "console")
    text = stream.getvalue()
    assert "session_init" in text and "load_finished" in text  # the capture worked
    for secret in (host_key.private_key.hex(), session_key.hex(), session_key.hex().upper(), "s3cr3t-text"):
        assert secret not in text
    assert np.format_float_positional(vectors[0][0])[:8] not in text
