"""open_encrypted_init: round trips with fresh keys, every error code, hostile input."""

from __future__ import annotations

from typing import Any

import pytest
from coincurve import PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from fabstir_node.crypto.client import build_encrypted_init
from fabstir_node.crypto.keys import HostKey, address_from_public_key
from fabstir_node.crypto.session_init import DecryptedInit, open_encrypted_init
from fabstir_node.errors import ErrorCode, FabstirError

HOST = HostKey.generate()
CLIENT = PrivateKey()
CLIENT_ADDRESS = address_from_public_key(CLIENT.public_key.format())
SESSION_KEY_HEX = "ab" * 32
PLAIN: dict[str, Any] = {
    "sessionKey": SESSION_KEY_HEX,
    "jobId": "7",
    "modelName": "llama",
    "pricePerToken": 2000,
}
HEX_FIELDS = ["ephPubHex", "saltHex", "nonceHex", "ciphertextHex", "signatureHex", "aadHex", "info"]


def build(plaintext: Any = None, host: HostKey = HOST, **kwargs: Any) -> dict[str, Any]:
    return build_encrypted_init(
        host.public_key_compressed, PLAIN if plaintext is None else plaintext, CLIENT.secret, **kwargs
    )


def plain(**changes: Any) -> dict[str, Any]:
    out = dict(PLAIN)
    for key, value in changes.items():
        if value is ...:
            del out[key]
        else:
            out[key] = value
    return out


def code_of(payload: object, host: HostKey = HOST) -> ErrorCode:
    with pytest.raises(FabstirError) as info:
        open_encrypted_init(payload, host)
    return info.value.code


# --- round trips ---------------------------------------------------------------


def test_round_trip_with_fresh_keys():
    payload = build()
    assert set(payload) == {*HEX_FIELDS, "recid", "alg"}
    result = open_encrypted_init(payload, HOST)
    assert result == DecryptedInit(
        session_key=bytes.fromhex(SESSION_KEY_HEX),
        job_id="7",
        model_name="llama",
        price_per_token=2000,
        vector_database=None,
        recovery_public_key=None,
        client_address=CLIENT_ADDRESS,
    )


def test_fresh_ephemeral_key_and_nonce_each_time():
    a, b = build(), build()
    assert a["ephPubHex"] != b["ephPubHex"]
    assert a["nonceHex"] != b["nonceHex"]
    assert open_encrypted_init(a, HOST) == open_encrypted_init(b, HOST)


def test_throwaway_client_key_when_none_given():
    payload = build_encrypted_init(HOST.public_key_compressed, PLAIN)
    assert open_encrypted_init(payload, HOST).client_address != CLIENT_ADDRESS


def test_optional_fields_and_snake_case_inner_keys():
    db = {"manifest_path": "home/vector-databases/0xabc/db/manifest.json", "user_address": "0xabc"}
    result = open_encrypted_init(
        build(plain(vectorDatabase=db, recoveryPublicKey="0x02" + "11" * 32, jobId=42)), HOST
    )
    assert result.job_id == "42"
    assert result.recovery_public_key == "0x02" + "11" * 32
    assert result.vector_database is not None
    assert result.vector_database.manifest_path == db["manifest_path"]
    assert result.vector_database.user_address == "0xabc"


def test_snake_case_plaintext_keys():
    snake = {"session_key": SESSION_KEY_HEX, "job_id": "7", "model_name": "llama", "price_per_token": 1}
    assert open_encrypted_init(build(snake), HOST).price_per_token == 1


@pytest.mark.parametrize(
    ("price", "expected"),
    [
        ("2000n", 2000),
        ("2000", 2000),
        (2000, 2000),
        (0, 0),
        (0.5, 0.5),
        ("0.25", 0.25),
        ("12345678901234567890n", 12345678901234567890),
    ],
)
def test_price_spellings(price, expected):
    result = open_encrypted_init(build(plain(pricePerToken=price)), HOST)
    assert result.price_per_token == expected
    assert type(result.price_per_token) is type(expected)


def test_0x_prefixes_everywhere():
    payload = {k: ("0x" + v if k in HEX_FIELDS else v) for k, v in build(aad=b"ctx").items()}
    payload["ciphertextHex"] = "0X" + payload["ciphertextHex"][2:].upper()
    assert open_encrypted_init(payload, HOST).client_address == CLIENT_ADDRESS
    with_0x_key = open_encrypted_init(build(plain(sessionKey="0x" + SESSION_KEY_HEX)), HOST)
    assert with_0x_key.session_key == bytes.fromhex(SESSION_KEY_HEX)


def test_snake_case_payload_keys():
    snake_names = {
        "ephPubHex": "eph_pub_hex",
        "saltHex": "salt_hex",
        "nonceHex": "nonce_hex",
        "ciphertextHex": "ciphertext_hex",
        "signatureHex": "signature_hex",
        "aadHex": "aad_hex",
    }
    payload = {snake_names.get(k, k): v for k, v in build().items()}
    assert open_encrypted_init(payload, HOST).client_address == CLIENT_ADDRESS


def test_uncompressed_ephemeral_key_is_accepted():
    eph = PrivateKey()
    payload = build(ephemeral_private_key=eph.secret)
    payload["ephPubHex"] = eph.public_key.format(compressed=False).hex()
    assert open_encrypted_init(payload, HOST).client_address == CLIENT_ADDRESS


def test_salt_absent_or_empty_means_zero_salt():
    for value in (None, "", ...):
        payload = build()
        if value is ...:
            del payload["saltHex"]
        else:
            payload["saltHex"] = value
        assert open_encrypted_init(payload, HOST).client_address == CLIENT_ADDRESS


def test_non_default_salt_info_and_aad_round_trip():
    payload = build(salt=b"\x07" * 16, info=b"fabstir", aad=b"job-7")
    assert payload["info"] == b"fabstir".hex()
    assert open_encrypted_init(payload, HOST).client_address == CLIENT_ADDRESS


@pytest.mark.parametrize("v_offset", [0, 27])
def test_signature_v_spellings_and_64_byte_signature_with_recid(v_offset):
    payload = build()
    sig = bytes.fromhex(payload["signatureHex"])
    payload["signatureHex"] = (sig[:64] + bytes([sig[64] + v_offset])).hex()
    assert open_encrypted_init(payload, HOST).client_address == CLIENT_ADDRESS
    payload["signatureHex"] = sig[:64].hex()
    payload["recid"] = sig[64] + v_offset
    assert open_encrypted_init(payload, HOST).client_address == CLIENT_ADDRESS


def test_flipped_recovery_id_names_someone_else():
    # Recovery has nothing to compare against: a changed v yields another key.
    payload = build()
    sig = bytes.fromhex(payload["signatureHex"])
    payload["signatureHex"] = (sig[:64] + bytes([sig[64] ^ 1])).hex()
    try:
        assert open_encrypted_init(payload, HOST).client_address != CLIENT_ADDRESS
    except FabstirError as exc:
        assert exc.code is ErrorCode.INVALID_SIGNATURE


# --- error codes -----------------------------------------------------------------


def test_missing_payload():
    assert code_of(None) is ErrorCode.MISSING_PAYLOAD


@pytest.mark.parametrize("payload", [[], "payload", 7, True, {}])
def test_payload_not_an_object_or_empty(payload):
    assert code_of(payload) is ErrorCode.INVALID_PAYLOAD


@pytest.mark.parametrize("field", ["ephPubHex", "nonceHex", "ciphertextHex", "signatureHex"])
def test_required_field_missing_or_null(field):
    payload = build()
    del payload[field]
    assert code_of(payload) is ErrorCode.INVALID_PAYLOAD
    payload[field] = None
    assert code_of(payload) is ErrorCode.INVALID_PAYLOAD


@pytest.mark.parametrize("field", HEX_FIELDS)
@pytest.mark.parametrize("value", [12, ["00"], {"hex": "00"}, True])
def test_hex_field_of_wrong_type(field, value):
    payload = build()
    payload[field] = value
    assert code_of(payload) is ErrorCode.INVALID_PAYLOAD


@pytest.mark.parametrize("field", HEX_FIELDS)
@pytest.mark.parametrize(
    "mangle",
    [
        lambda h: h + "0",  # odd length
        lambda h: "zz" + h,
        lambda h: h[:2] + " " + h[3:],  # even length, inner space
        lambda h: "0x0x" + h,
        lambda h: "+" + h + "0",
    ],
)
def test_bad_hex(field, mangle):
    payload = build()
    payload[field] = mangle(payload[field] or "00")
    assert code_of(payload) is ErrorCode.INVALID_HEX_ENCODING


@pytest.mark.parametrize("size", [0, 12, 23, 25, 32])
def test_nonce_of_wrong_size(size):
    payload = build()
    payload["nonceHex"] = "44" * size
    assert code_of(payload) is ErrorCode.INVALID_NONCE_SIZE


@pytest.mark.parametrize(
    "eph",
    ["02" + "ff" * 32, "05" + "11" * 32, "04" + "00" * 64, "02" + "11" * 31, "", "02" * 65],
)
def test_bad_ephemeral_point(eph):
    payload = build()
    payload["ephPubHex"] = eph
    assert code_of(payload) is ErrorCode.INVALID_PAYLOAD


def test_oversized_field():
    payload = build()
    payload["ciphertextHex"] = "00" * (64 * 1024 + 1)
    assert code_of(payload) is ErrorCode.INVALID_PAYLOAD


def _flip(hex_text: str, index: int) -> str:
    data = bytearray.fromhex(hex_text)
    data[index] ^= 0x01
    return data.hex()


@pytest.mark.parametrize("index", [0, 10, -1, -16])
def test_tampered_ciphertext_or_tag(index):
    payload = build()
    payload["ciphertextHex"] = _flip(payload["ciphertextHex"], index)
    assert code_of(payload) is ErrorCode.DECRYPTION_FAILED


def test_truncated_ciphertext():
    payload = build()
    payload["ciphertextHex"] = payload["ciphertextHex"][:30]
    assert code_of(payload) is ErrorCode.DECRYPTION_FAILED
    payload["ciphertextHex"] = ""
    assert code_of(payload) is ErrorCode.DECRYPTION_FAILED


def test_wrong_host_key():
    assert code_of(build(), host=HostKey.generate()) is ErrorCode.DECRYPTION_FAILED


@pytest.mark.parametrize(
    ("field", "value"), [("aadHex", "00"), ("saltHex", "01" * 32), ("nonceHex", "45" * 24)]
)
def test_wrong_aad_salt_or_nonce(field, value):
    payload = build()
    payload[field] = value
    assert code_of(payload) is ErrorCode.DECRYPTION_FAILED


def test_dropped_aad():
    payload = build(aad=b"job-7")
    payload["aadHex"] = ""
    assert code_of(payload) is ErrorCode.DECRYPTION_FAILED


@pytest.mark.parametrize(
    "session_key",
    ["ab" * 31, "ab" * 33, "0x" + "ab" * 31, "zz" * 32, "ab" * 31 + "a", 1234, ["ab"], ""],
)
def test_invalid_session_key(session_key):
    payload = build(plain(sessionKey=session_key))
    with pytest.raises(FabstirError) as info:
        open_encrypted_init(payload, HOST)
    assert info.value.code is ErrorCode.INVALID_SESSION_KEY
    if isinstance(session_key, str) and session_key:
        assert session_key not in info.value.message
        assert "abab" not in info.value.message


@pytest.mark.parametrize(
    "signature",
    ["11" * 66, "11" * 63, "", "00" * 65, "11" * 64 + "05", "11" * 64 + "1d", "11" * 64],
)
def test_invalid_signature(signature):
    payload = build()
    payload["signatureHex"] = signature
    payload.pop("recid")
    assert code_of(payload) is ErrorCode.INVALID_SIGNATURE


@pytest.mark.parametrize("recid", [None, True, "0", 5, -1, 1.0])
def test_64_byte_signature_needs_a_good_recid(recid):
    payload = build()
    payload["signatureHex"] = payload["signatureHex"][:128]
    payload["recid"] = recid
    assert code_of(payload) is ErrorCode.INVALID_SIGNATURE


@pytest.mark.parametrize(
    "plaintext",
    [
        b"not json",
        b"\xff\xfe",
        b"[1, 2]",
        b'"text"',
        b"null",
        b"[" * 5000,
        plain(sessionKey=...),
        plain(modelName=...),
        plain(modelName=5),
        plain(jobId=...),
        plain(jobId=True),
        plain(jobId=""),
        plain(jobId=-1),
        plain(jobId=1.5),
        plain(pricePerToken=...),
        plain(pricePerToken=None),
        plain(pricePerToken=-1),
        plain(pricePerToken=True),
        plain(pricePerToken="abc"),
        plain(pricePerToken="2000nn"),
        plain(pricePerToken="-5n"),
        plain(pricePerToken="1e999"),
        plain(pricePerToken="9" * 5000),
        plain(pricePerToken=[1]),
        plain(vectorDatabase="home/x"),
        plain(vectorDatabase={"manifestPath": "home/x"}),
        plain(recoveryPublicKey=7),
    ],
)
def test_invalid_plaintext(plaintext):
    assert code_of(build(plaintext)) is ErrorCode.INVALID_PAYLOAD


def test_repr_of_result_and_key_hides_secrets():
    key = HostKey.generate()
    result = open_encrypted_init(build(host=key), key)
    text = repr(result) + str(result) + repr(key)
    for secret in (SESSION_KEY_HEX, key.private_key.hex()):
        assert secret not in text
        assert secret.upper() not in text
    assert repr(result.session_key) not in text
    assert CLIENT_ADDRESS in text


# --- hostile input ---------------------------------------------------------------

_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)
_hexish = st.binary(max_size=80).map(bytes.hex) | st.sampled_from(["", "0x", "zz", "0", "0x" + "02" * 33])
_field_names = st.sampled_from([*HEX_FIELDS, "recid", "eph_pub_hex", "nonce_hex", "signature_hex"])


@settings(max_examples=300, deadline=None)
@given(st.none() | _json | st.dictionaries(_field_names | st.text(max_size=8), _hexish | _json, max_size=9))
def test_arbitrary_payloads_raise_only_fabstir_errors(payload):
    with pytest.raises(FabstirError):
        open_encrypted_init(payload, HOST)


_VALID = build()


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(sorted(_VALID)), _hexish | _json)
def test_one_mutated_field_raises_only_fabstir_errors(field, value):
    payload = dict(_VALID)
    payload[field] = value
    try:
        open_encrypted_init(payload, HOST)
    except FabstirError:
        pass


_plain_names = st.sampled_from(
    [
        "sessionKey",
        "jobId",
        "modelName",
        "pricePerToken",
        "vectorDatabase",
        "recoveryPublicKey",
        "session_key",
    ]
)
_plain_values = (
    _json
    | st.just(SESSION_KEY_HEX)
    | st.from_regex(r"[0-9]{1,25}n?", fullmatch=True)
    | st.fixed_dictionaries({"manifestPath": _json, "userAddress": _json})
)


@settings(max_examples=300, deadline=None)
@given(
    st.dictionaries(_plain_names, _plain_values, max_size=7).map(lambda extra: {**PLAIN, **extra})
    | _json
    | st.binary(max_size=64)
)
def test_arbitrary_plaintexts_raise_only_fabstir_errors(plaintext):
    try:
        result = open_encrypted_init(build(plaintext), HOST)
    except FabstirError:
        return
    assert len(result.session_key) == 32
    assert result.client_address == CLIENT_ADDRESS
