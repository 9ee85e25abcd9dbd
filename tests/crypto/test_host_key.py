"""HostKey, addresses, raw ECDH and signature recovery (fabstir_node.crypto.keys)."""

from __future__ import annotations

import re

import pytest
from coincurve import PrivateKey

from fabstir_node.crypto.keys import (
    HostKey,
    address_from_public_key,
    compress_public_key,
    ecdh_x,
    recover_public_key,
    sign_recoverable,
)

CURVE_ORDER = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
ADDRESS = re.compile(r"0x[0-9a-f]{40}")


def test_from_hex_derives_the_vector_public_key(init_vector):
    key = HostKey.from_hex(init_vector["host_private_key"])
    assert key.public_key_hex == init_vector["host_public_key_compressed"]
    assert key.public_key_compressed == bytes.fromhex(init_vector["host_public_key_compressed"])
    assert len(key.public_key_compressed) == 33


@pytest.mark.parametrize("decorate", [lambda h: "0x" + h, lambda h: "0X" + h.upper(), lambda h: f"  {h}\n"])
def test_from_hex_accepts_prefix_case_and_surrounding_whitespace(init_vector, decorate):
    plain = HostKey.from_hex(init_vector["host_private_key"])
    assert HostKey.from_hex(decorate(init_vector["host_private_key"])) == plain


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("11" * 31, "64 hex characters"),
        ("11" * 33, "64 hex characters"),
        ("", "64 hex characters"),
        ("0x" + "g1" * 32, "non-hex"),
        ("11" * 15 + "  " + "11" * 16, "non-hex"),
        ("00" * 32, "not a valid secp256k1 secret"),
        (f"{CURVE_ORDER:064x}", "not a valid secp256k1 secret"),
        ("ff" * 32, "not a valid secp256k1 secret"),
    ],
)
def test_from_hex_names_the_problem_without_echoing_the_key(text, problem):
    with pytest.raises(ValueError) as info:
        HostKey.from_hex(text)
    message = str(info.value)
    assert problem in message
    body = text.strip().removeprefix("0x")
    if body:
        assert body not in message
        assert body[:16] not in message


def test_from_hex_rejects_non_strings():
    with pytest.raises(ValueError):
        HostKey.from_hex(b"11" * 32)  # type: ignore[arg-type]


def test_constructor_validates_raw_bytes():
    with pytest.raises(ValueError):
        HostKey(b"\x11" * 31)  # coincurve would silently left-pad this
    with pytest.raises(ValueError):
        HostKey(bytearray(b"\x11" * 32))  # type: ignore[arg-type]


def test_generate_gives_distinct_valid_keys():
    a, b = HostKey.generate(), HostKey.generate()
    assert a != b
    assert ADDRESS.fullmatch(a.address)
    assert HostKey(a.private_key) == a


def test_repr_hides_the_private_key():
    key = HostKey.generate()
    text = repr(key) + str(key)
    assert key.private_key.hex() not in text
    assert key.private_key.hex().upper() not in text
    assert repr(key.private_key) not in text
    assert key.public_key_hex in text


def test_address_of_private_key_one_is_the_well_known_one():
    # The Ethereum address of secret 1 (generator point) is public knowledge.
    pub = PrivateKey((1).to_bytes(32, "big")).public_key.format()
    assert address_from_public_key(pub) == "0x7e5f4552091a69125d5dfcb7b8c2659029395bdf"


def test_address_is_the_same_for_both_point_encodings(init_vector):
    client = PrivateKey(bytes.fromhex(init_vector["client_static_private_key"])).public_key
    compressed = address_from_public_key(client.format(compressed=True))
    uncompressed = address_from_public_key(client.format(compressed=False))
    assert compressed == uncompressed == init_vector["client_address"]


@pytest.mark.parametrize("bad", [b"", b"\x02" * 32, b"\x04" + bytes(64), b"\x02" + b"\xff" * 32])
def test_address_and_compress_reject_invalid_points(bad):
    with pytest.raises(ValueError):
        address_from_public_key(bad)
    with pytest.raises(ValueError):
        compress_public_key(bad)


def test_ecdh_x_is_the_raw_x_coordinate_and_symmetric(init_vector, vectors):
    host = bytes.fromhex(init_vector["host_private_key"])
    eph = bytes.fromhex(init_vector["ephemeral_private_key"])
    host_pub = PrivateKey(host).public_key.format()
    eph_pub = PrivateKey(eph).public_key.format(compressed=False)
    x = ecdh_x(host, eph_pub)
    assert x.hex() == init_vector["shared_x"]
    assert ecdh_x(eph, host_pub) == x
    assert HostKey(host).shared_x(eph_pub) == x
    # libsecp256k1's default ECDH hashes the point: the pitfall value, not ours.
    hashed = PrivateKey(host).ecdh(eph_pub)
    assert hashed.hex() == vectors["coincurve_pitfall"]["value"]
    assert hashed != x


def test_sign_and_recover_round_trip_with_every_v_spelling():
    signer = PrivateKey()
    digest = bytes(range(32))
    signature = sign_recoverable(signer.secret, digest)
    assert len(signature) == 65 and signature[64] in (0, 1)
    expected = signer.public_key.format()
    assert recover_public_key(signature, digest) == expected
    legacy = signature[:64] + bytes([signature[64] + 27])
    assert recover_public_key(legacy, digest) == expected
    other = signature[:64] + bytes([1 - signature[64]])
    assert recover_public_key(other, digest) != expected


@pytest.mark.parametrize("v", [4, 26, 29, 255])
def test_recover_rejects_out_of_range_v(v):
    signature = sign_recoverable(PrivateKey().secret, bytes(32))
    with pytest.raises(ValueError):
        recover_public_key(signature[:64] + bytes([v]), bytes(32))


def test_recover_rejects_wrong_sizes_and_zero_signature():
    with pytest.raises(ValueError):
        recover_public_key(bytes(64), bytes(32))
    with pytest.raises(ValueError):
        recover_public_key(bytes(65), bytes(31))
    with pytest.raises(ValueError):
        recover_public_key(bytes(65), bytes(32))
