"""Known-answer tests for the E2EE v1 handshake (tests/data/test-vectors.json).

Each step of protocol §2.2 is checked on its own, then end to end, in both
directions (host opens the SDK's payload; our builder reproduces it).
"""

from __future__ import annotations

import json

import pytest
from coincurve import PrivateKey

from fabstir_node.crypto import e2ee
from fabstir_node.crypto.client import build_encrypted_init
from fabstir_node.crypto.keys import HostKey, address_from_public_key, recover_public_key
from fabstir_node.crypto.session_init import open_encrypted_init


def _payload(init_vector):
    return init_vector["message"]["payload"]


def test_hkdf_key_from_the_shared_x(init_vector):
    key = e2ee.derive_key(bytes.fromhex(init_vector["shared_x"]), e2ee.ZERO_SALT, b"")
    assert key.hex() == init_vector["hkdf_key"]
    # Empty salt is RFC 5869's "HashLen zeros": the node's salt=None is equivalent.
    assert e2ee.derive_key(bytes.fromhex(init_vector["shared_x"]), b"", b"") == key
    assert e2ee.derive_key(bytes.fromhex(init_vector["shared_x"]), e2ee.ZERO_SALT, b"x") != key


def test_xchacha_opens_the_vector_ciphertext(init_vector):
    payload = _payload(init_vector)
    plaintext = e2ee.open_sealed(
        bytes.fromhex(init_vector["hkdf_key"]),
        bytes.fromhex(payload["nonceHex"]),
        bytes.fromhex(payload["ciphertextHex"]),
    )
    assert plaintext.decode("utf-8") == init_vector["plaintext_utf8"]


def test_xchacha_message_vector_both_ways(vectors):
    v = vectors["xchacha_message"]
    key, nonce = bytes.fromhex(v["key"]), bytes.fromhex(v["nonce"])
    aad, plaintext = v["aad_utf8"].encode(), v["plaintext_utf8"].encode()
    sealed = e2ee.seal(key, nonce, plaintext, aad)
    assert sealed.hex() == v["ciphertext_and_tag"]
    assert e2ee.open_sealed(key, nonce, sealed, aad) == plaintext
    with pytest.raises(ValueError):
        e2ee.open_sealed(key, nonce, sealed, b"message_1")
    with pytest.raises(ValueError):
        e2ee.open_sealed(key, nonce, sealed[:15])


def test_signature_digest_uses_the_compressed_ephemeral_key_as_sent(init_vector):
    payload = _payload(init_vector)
    eph = bytes.fromhex(payload["ephPubHex"])
    host_pub = bytes.fromhex(init_vector["host_public_key_compressed"])
    nonce = bytes.fromhex(payload["nonceHex"])
    digest = e2ee.signature_digest(eph, host_pub, e2ee.ZERO_SALT, nonce, b"", b"")
    assert digest.hex() == init_vector["signature_digest"]
    # Finding: the 65-byte encoding of the same point hashes differently, so the
    # digest is over the 33 bytes the SDK sends (the opener compresses first).
    uncompressed = PrivateKey(bytes.fromhex(init_vector["ephemeral_private_key"])).public_key.format(False)
    assert e2ee.signature_digest(uncompressed, host_pub, e2ee.ZERO_SALT, nonce).hex() != digest.hex()
    # An empty aad adds no separator; a non-empty one does.
    assert e2ee.signature_digest(eph, host_pub, e2ee.ZERO_SALT, nonce, b"", b"x") != digest


def test_signature_recovers_the_client_address(init_vector):
    payload = _payload(init_vector)
    signature = bytes.fromhex(payload["signatureHex"])
    assert signature[64] == payload["recid"]
    recovered = recover_public_key(signature, bytes.fromhex(init_vector["signature_digest"]))
    assert address_from_public_key(recovered) == init_vector["client_address"]
    client = PrivateKey(bytes.fromhex(init_vector["client_static_private_key"]))
    assert recovered == client.public_key.format()


# Cross-runtime digest vectors published in the Fabstir node's own tests,
# generated from @fabstir/sdk-core's makeSigMessage: an independent check.
_NODE_EPH = bytes.fromhex("034f355bdcb7cc0af728ef3cceb9615d90684bb5b2ca5f859ab0f0b704075871aa")
_NODE_RECIPIENT = bytes.fromhex("02466d7fcae563e5cb09a0d1870bb580344804617879a14949cf22285f1bae3f27")
_NODE_NONCE = bytes.fromhex("33" * 24)


@pytest.mark.parametrize(
    ("aad", "expected"),
    [
        (b"", "dc280aec449c4f9a887ed1eb3f5a03b0cbbc63db2174d8a4dc2b7c0851caa36c"),
        (b"job-1106", "a086c48c7b37f9f7af376ba9a67046f01837b32d9ac345df55a1d3072aa34666"),
    ],
)
def test_signature_digest_matches_the_node_cross_runtime_vectors(aad, expected):
    digest = e2ee.signature_digest(_NODE_EPH, _NODE_RECIPIENT, e2ee.ZERO_SALT, _NODE_NONCE, b"", aad)
    assert digest.hex() == expected


def test_node_cross_runtime_signature_recovers_its_address():
    signature = bytes.fromhex(
        "3a42c8921c8e91303507f7565bc2b843f0cfb1c30532ed91ebaf4fe4637c8616"
        "09298aa99b553f8471f9278f41bdc69bb3736a30c6055dfbcde8d9494da56da000"
    )
    digest = e2ee.signature_digest(_NODE_EPH, _NODE_RECIPIENT, e2ee.ZERO_SALT, _NODE_NONCE)
    assert address_from_public_key(recover_public_key(signature, digest)) == (
        "0x17c5185167401ed00cf5f5b2fc97d9bbfdb7d025"
    )


def test_opener_reads_the_vector_end_to_end(init_vector):
    host = HostKey.from_hex(init_vector["host_private_key"])
    result = open_encrypted_init(_payload(init_vector), host)
    expected = json.loads(init_vector["plaintext_utf8"])
    assert result.session_key == bytes.fromhex(expected["sessionKey"])
    assert result.job_id == "42"
    assert result.model_name == "test-model"
    assert result.price_per_token == 2000
    assert result.vector_database is not None
    assert result.vector_database.manifest_path == expected["vectorDatabase"]["manifestPath"]
    assert result.vector_database.user_address == expected["vectorDatabase"]["userAddress"]
    assert result.recovery_public_key is None
    assert result.client_address == init_vector["client_address"]


def test_builder_reproduces_the_vector_payload_byte_for_byte(init_vector):
    payload = _payload(init_vector)
    built = build_encrypted_init(
        bytes.fromhex(init_vector["host_public_key_compressed"]),
        json.loads(init_vector["plaintext_utf8"]),
        bytes.fromhex(init_vector["client_static_private_key"]),
        ephemeral_private_key=bytes.fromhex(init_vector["ephemeral_private_key"]),
        nonce=bytes.fromhex(payload["nonceHex"]),
    )
    assert built == payload
