"""The protocol layer without a socket: frames in, requests or errors out."""

import json
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fabstir_node.errors import ErrorCode, FabstirError
from fabstir_node.protocol import messages as m
from fabstir_node.protocol.codec import MESSAGE_TYPES, Rejected, decode_frame, encode


def frame(**fields):
    return json.dumps(fields)


def rejected(data) -> Rejected:
    result = decode_frame(data)
    assert isinstance(result, Rejected), result
    return result


# --- both spellings -------------------------------------------------------------


@pytest.mark.parametrize(
    "fields",
    [
        {"session_id": "s1", "job_id": "7", "chain_id": 84532,
         "vector_database": {"manifest_path": "home/a/manifest.json", "user_address": "0xAb"}},
        {"sessionId": "s1", "jobId": "7", "chainId": 84532,
         "vectorDatabase": {"manifestPath": "home/a/manifest.json", "userAddress": "0xAb"}},
        {"session_id": "s1", "jobId": 7, "chain_id": "84532",
         "vector_database": {"manifestPath": "home/a/manifest.json", "user_address": "0xAb"}},
    ],
)
def test_session_init_accepts_both_spellings(fields):
    request = decode_frame(frame(type="session_init", **fields))
    assert request == m.SessionInit(
        session_id="s1", job_id="7", chain_id=84532,
        vector_database=m.VectorDatabaseRef("home/a/manifest.json", "0xAb"),
        echo=m.Echo(session_id="s1"),
    )


def test_session_init_defaults_and_echo():
    request = decode_frame(frame(type="session_init", session_id=12, id="abc"))
    assert isinstance(request, m.SessionInit)
    assert request.session_id == "12" and request.chain_id == 84532 and request.vector_database is None
    assert request.echo.id == "abc"


def test_snake_spelling_wins_when_both_present():
    request = decode_frame(frame(type="session_init", session_id="snake", sessionId="camel"))
    assert request.session_id == "snake"


@pytest.mark.parametrize("key", ["requestId", "request_id"])
def test_search_request_id_both_spellings(key):
    request = decode_frame(json.dumps({"type": "searchVectors", key: "r9", "queryVector": [1, 0.5], "k": 3}))
    assert isinstance(request, m.SearchVectors)
    assert request.echo.request_id == "r9" and request.k == 3 and request.threshold is None


def test_search_full():
    request = decode_frame(frame(
        type="searchVectors", requestId="r", query_vector=[0.1, 0.2], k=5, threshold=-0.5,
        metadata_filter={"tag": {"$in": ["a"]}},
    ))
    assert request.threshold == -0.5 and request.metadata_filter == {"tag": {"$in": ["a"]}}


def test_upload():
    request = decode_frame(frame(type="uploadVectors", requestId="u", vectors=[{"id": "a"}], replace=True))
    assert isinstance(request, m.UploadVectors) and request.replace is True and len(request.vectors) == 1


def test_encrypted_init_keeps_payload_opaque():
    request = decode_frame(frame(type="encrypted_session_init", session_id="1", payload={"x": 1}))
    assert isinstance(request, m.EncryptedSessionInit) and request.payload == {"x": 1}
    assert "x" not in repr(request)


# --- every bad-input class gets its code ------------------------------------------


@pytest.mark.parametrize(
    "data, code",
    [
        (b"\xff\xfe not utf8", ErrorCode.INVALID_JSON),
        ("{not json", ErrorCode.INVALID_JSON),
        ("", ErrorCode.INVALID_JSON),
        ('{"type":"searchVectors","queryVector":[NaN],"k":1}', ErrorCode.INVALID_JSON),
        ('{"type":"searchVectors","queryVector":[1e999],"k":1}', ErrorCode.INVALID_JSON),
        ("[1,2,3]", ErrorCode.INVALID_MESSAGE),
        ('"session_init"', ErrorCode.INVALID_MESSAGE),
        ("null", ErrorCode.INVALID_MESSAGE),
        ("{}", ErrorCode.INVALID_MESSAGE),
        ('{"type":7}', ErrorCode.INVALID_MESSAGE),
        ('{"type":""}', ErrorCode.INVALID_MESSAGE),
        ('{"type":"launchMissiles"}', ErrorCode.UNKNOWN_MESSAGE_TYPE),
        ('{"type":"session_init"}', ErrorCode.INVALID_MESSAGE),
        ('{"type":"session_init","session_id":""}', ErrorCode.INVALID_MESSAGE),
        ('{"type":"session_init","session_id":true}', ErrorCode.INVALID_MESSAGE),
        ('{"type":"session_init","session_id":"s","chain_id":"x"}', ErrorCode.INVALID_MESSAGE),
        ('{"type":"session_init","session_id":"s","vector_database":"home/x"}', ErrorCode.INVALID_MESSAGE),
        ('{"type":"session_init","session_id":"s","vector_database":{"manifest_path":"home/x"}}',
         ErrorCode.INVALID_MESSAGE),
        ('{"type":"searchVectors","requestId":"r","k":3}', ErrorCode.INVALID_MESSAGE),
        ('{"type":"searchVectors","requestId":"r","queryVector":[1]}', ErrorCode.INVALID_MESSAGE),
        ('{"type":"searchVectors","queryVector":[],"k":1}', ErrorCode.INVALID_MESSAGE),
        ('{"type":"searchVectors","queryVector":[1,"2"],"k":1}', ErrorCode.INVALID_MESSAGE),
        ('{"type":"searchVectors","queryVector":[1,true],"k":1}', ErrorCode.INVALID_MESSAGE),
        ('{"type":"searchVectors","queryVector":"1,2","k":1}', ErrorCode.INVALID_MESSAGE),
        ('{"type":"searchVectors","queryVector":[1],"k":"5"}', ErrorCode.INVALID_MESSAGE),
        ('{"type":"searchVectors","queryVector":[1],"k":2.5}', ErrorCode.INVALID_MESSAGE),
        ('{"type":"searchVectors","queryVector":[1],"k":1,"threshold":"0.2"}', ErrorCode.INVALID_MESSAGE),
        ('{"type":"searchVectors","queryVector":[1],"k":1,"metadataFilter":[1]}', ErrorCode.INVALID_MESSAGE),
        ('{"type":"uploadVectors","requestId":"u"}', ErrorCode.INVALID_MESSAGE),
        ('{"type":"uploadVectors","vectors":{"id":"a"}}', ErrorCode.INVALID_MESSAGE),
        ('{"type":"uploadVectors","vectors":[],"replace":"yes"}', ErrorCode.INVALID_MESSAGE),
    ],
)
def test_bad_frames_get_their_code(data, code):
    assert rejected(data).error.code == code


def test_errors_echo_correlation_fields():
    bad = rejected('{"type":"searchVectors","requestId":"r-1","id":5,"session_id":"s","k":"x","queryVector":[1]}')
    reply = m.error_reply(bad.error, bad.echo)
    assert reply["type"] == "error" and reply["code"] == "INVALID_MESSAGE"
    assert reply["requestId"] == "r-1" and reply["id"] == 5 and reply["session_id"] == "s"
    assert reply["error"] == reply["message"] and "k" in reply["message"]


def test_unknown_type_echoes_request_id():
    bad = rejected('{"type":"whatever","requestId":"q"}')
    assert m.error_reply(bad.error, bad.echo)["requestId"] == "q"


def test_error_messages_name_the_field():
    assert "queryVector" in rejected('{"type":"searchVectors","queryVector":[1,"x"],"k":1}').error.message
    assert "chain_id" in rejected('{"type":"session_init","session_id":"s","chain_id":[]}').error.message


def test_encode_replies_are_json_with_documented_spellings():
    echo = m.Echo(request_id="r")
    text = encode(m.search_reply(results=[], total_vectors=3, search_time_ms=1.23456, echo=echo))
    assert json.loads(text) == {
        "type": "searchVectorsResponse", "requestId": "r", "results": [], "totalVectors": 3, "searchTimeMs": 1.235,
    }
    ack = m.session_init_ack(session_id="s", job_id="1", chain_id=1, echo=m.Echo(id="i"), client_address="0xab")
    assert ack["client_address"] == "0xab" and ack["id"] == "i" and ack["status"] == "success"


def test_message_types_listed():
    assert set(MESSAGE_TYPES) >= {"session_init", "encrypted_session_init", "uploadVectors", "searchVectors"}


# --- nothing escapes ------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=5),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_random_bytes_never_raise(data):
    assert isinstance(decode_frame(data), (Rejected, m.Ping, m.SessionInit, m.SearchVectors,
                                           m.UploadVectors, m.EncryptedSessionInit))


@settings(max_examples=500, deadline=None)
@given(st.sampled_from(list(MESSAGE_TYPES) + ["other"]), st.dictionaries(
    st.sampled_from(["session_id", "sessionId", "job_id", "chain_id", "vector_database", "vectorDatabase",
                     "queryVector", "query_vector", "k", "threshold", "metadataFilter", "vectors", "replace",
                     "requestId", "id", "payload", "user_address"]),
    json_values, max_size=8))
def test_random_messages_never_raise(kind, fields):
    result = decode_frame(json.dumps({"type": kind, **fields}))
    if isinstance(result, Rejected):
        assert isinstance(result.error, FabstirError) and result.error.message
    if isinstance(result, m.SearchVectors):
        assert all(math.isfinite(x) for x in result.query_vector)
