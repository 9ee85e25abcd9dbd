"""Manifests: parsing, validation failures, digest, and the access check."""

from __future__ import annotations

import copy
from typing import Any

import cbor2
import orjson
import pytest
from _edit import set_at

from fabstir_node.errors import ErrorCode, FabstirError
from fabstir_node.formats.blob import decode_object, open_blob
from fabstir_node.formats.manifest import Manifest, check_access, parse_manifest
from fabstir_node.formats.writer import UNDEFINED
from fabstir_node.s5.cborx import encode_s5

OWNER = "0x8D1b0F4ad3B0f6E7C4e2bB1F6a3c9d2E5f7A0b1C"


def sdk_manifest(**changes: Any) -> dict[str, Any]:
    """A manifest as the SDK writes it (description left undefined)."""
    base: dict[str, Any] = {
        "name": "notes",
        "owner": OWNER,
        "description": UNDEFINED,
        "dimensions": 384,
        "vectorCount": 15,
        "storageSizeBytes": 0,
        "created": 1764000000000,
        "lastAccessed": 1764000000000,
        "updated": 1764000001000,
        "chunks": [
            {"chunkId": 0, "cid": "home/x/chunk-0.json", "vectorCount": 10, "sizeBytes": 0, "updatedAt": 1},
            {"chunkId": 1, "cid": "home/x/chunk-1.json", "vectorCount": 5, "sizeBytes": 0, "updatedAt": 1},
        ],
        "chunkCount": 2,
        "folderPaths": ["/a", "/b"],
        "deleted": False,
        "pendingDocuments": [{"id": "x"}],
        "readyDocuments": [],
    }
    base.update(changes)
    return base


def _through_cbor(obj: dict[str, Any]) -> Any:
    return decode_object(open_blob(encode_s5(obj), None))


def _json_obj(obj: dict[str, Any]) -> dict[str, Any]:
    """What JSON.stringify keeps: undefined fields dropped."""
    return {k: v for k, v in obj.items() if v is not UNDEFINED}


def _code(obj: Any, **kwargs: Any) -> ErrorCode:
    with pytest.raises(FabstirError) as info:
        parse_manifest(obj, **kwargs)
    return info.value.code


def test_sdk_cbor_manifest_parses() -> None:
    manifest = parse_manifest(_through_cbor(sdk_manifest()))
    assert manifest.name == "notes"
    assert manifest.owner == OWNER
    assert manifest.description is None
    assert manifest.dimensions == 384
    assert manifest.vector_count == 15
    assert manifest.chunk_count == 2
    assert [(c.chunk_id, c.vector_count, c.size_bytes) for c in manifest.chunks] == [(0, 10, 0), (1, 5, 0)]
    assert manifest.chunks[1].cid == "home/x/chunk-1.json"
    assert manifest.folder_paths == ("/a", "/b")
    assert manifest.deleted is False
    assert (manifest.created, manifest.updated) == (1764000000000, 1764000001000)


def test_cbor_writes_large_timestamps_as_floats_and_they_still_parse() -> None:
    raw = cbor2.loads(encode_s5(sdk_manifest()))
    assert isinstance(raw["created"], float)  # cbor-x: not a 32-bit integer -> float64
    assert parse_manifest(_through_cbor(sdk_manifest())).created == 1764000000000


def test_optional_fields_may_be_missing() -> None:
    obj = _json_obj(sdk_manifest(description=UNDEFINED))
    for key in ("dimensions", "deleted", "folderPaths", "created", "updated", "lastAccessed"):
        del obj[key]
    manifest = parse_manifest(obj)
    assert manifest.description is None
    assert manifest.dimensions is None
    assert manifest.deleted is False
    assert manifest.folder_paths == ()
    assert manifest.created is None


def test_description_null_and_string() -> None:
    assert parse_manifest(_json_obj(sdk_manifest(description=None))).description is None
    assert parse_manifest(_json_obj(sdk_manifest(description="d"))).description == "d"


def test_unknown_keys_are_ignored() -> None:
    obj = _json_obj(sdk_manifest(extra={"anything": [1, 2]}, version=7))
    assert parse_manifest(obj).vector_count == 15


def test_fresh_empty_manifest_parses() -> None:
    obj = _json_obj(sdk_manifest(vectorCount=0, chunks=[], chunkCount=0))
    del obj["dimensions"]
    manifest = parse_manifest(obj)
    assert (manifest.vector_count, manifest.chunks, manifest.dimensions) == (0, (), None)


def _mutate(path: tuple[Any, ...], value: Any) -> dict[str, Any]:
    obj = copy.deepcopy(_json_obj(sdk_manifest()))
    set_at(obj, path, value)
    return obj


@pytest.mark.parametrize(
    ("path", "value"),
    [
        (("name",), KeyError),
        (("name",), 3),
        (("owner",), KeyError),
        (("owner",), ""),
        (("owner",), None),
        (("description",), 5),
        (("dimensions",), 0),
        (("dimensions",), -3),
        (("dimensions",), "384"),
        (("dimensions",), True),
        (("dimensions",), 384.5),
        (("vectorCount",), KeyError),
        (("vectorCount",), 16),
        (("vectorCount",), -15),
        (("vectorCount",), True),
        (("vectorCount",), "15"),
        (("chunks",), KeyError),
        (("chunks",), {"0": {}}),
        (("chunkCount",), 3),
        (("chunkCount",), True),
        (("chunks", 0), "chunk"),
        (("chunks", 0, "chunkId"), 1),
        (("chunks", 1, "chunkId"), 0),
        (("chunks", 1, "chunkId"), 2),
        (("chunks", 1, "chunkId"), KeyError),
        (("chunks", 0, "chunkId"), False),
        (("chunks", 0, "vectorCount"), -1),
        (("chunks", 0, "vectorCount"), KeyError),
        (("chunks", 0, "vectorCount"), float("nan")),
        (("chunks", 0, "sizeBytes"), -1),
        (("chunks", 0, "cid"), 7),
        (("folderPaths",), "/a"),
        (("folderPaths",), ["/a", 1]),
        (("deleted",), "false"),
        (("deleted",), 0),
        (("created",), "yesterday"),
    ],
)
def test_structural_errors_are_invalid_database(path: tuple[Any, ...], value: Any) -> None:
    assert _code(_mutate(path, value)) is ErrorCode.INVALID_DATABASE


def test_error_message_names_the_field() -> None:
    with pytest.raises(FabstirError) as info:
        parse_manifest(_mutate(("chunks", 1, "chunkId"), 5))
    assert "chunks[1].chunkId" in info.value.message


def test_duplicate_chunk_ids_are_invalid() -> None:
    obj = _json_obj(sdk_manifest())
    obj["chunks"][1]["chunkId"] = 0
    assert _code(obj) is ErrorCode.INVALID_DATABASE


@pytest.mark.parametrize("value", [None, [], "manifest", 3])
def test_non_objects_are_invalid(value: Any) -> None:
    assert _code(value) is ErrorCode.INVALID_DATABASE


def test_too_many_chunks_is_limit_exceeded() -> None:
    chunks = [{"chunkId": i, "vectorCount": 1} for i in range(11)]
    obj = _json_obj(sdk_manifest(chunks=chunks, chunkCount=11, vectorCount=11))
    assert parse_manifest(obj, max_chunks=11).chunk_count == 11
    assert _code(obj, max_chunks=10) is ErrorCode.LIMIT_EXCEEDED


def test_too_many_dimensions_is_limit_exceeded() -> None:
    assert _code(_json_obj(sdk_manifest(dimensions=10_000)), max_dimensions=4096) is ErrorCode.LIMIT_EXCEEDED


def test_snake_case_keys_are_accepted() -> None:
    obj = _json_obj(sdk_manifest())
    obj["vector_count"] = obj.pop("vectorCount")
    obj["chunk_count"] = obj.pop("chunkCount")
    assert parse_manifest(obj).vector_count == 15


# --- digest ----------------------------------------------------------------------------


def test_digest_is_equal_across_encodings() -> None:
    obj = sdk_manifest()
    from_cbor = parse_manifest(_through_cbor(obj))
    # what the S5 bridge returns: the CBOR value re-serialised as JSON text
    bridge_json = orjson.dumps(_json_obj(obj))
    from_json = parse_manifest(decode_object(open_blob(bridge_json, None)))
    assert from_cbor.digest == from_json.digest
    assert len(from_cbor.digest) == 64


def test_digest_changes_with_content() -> None:
    a = parse_manifest(_json_obj(sdk_manifest()))
    b = parse_manifest(_json_obj(sdk_manifest(updated=1764000002000)))
    assert a.digest != b.digest


def test_digest_ignores_key_order() -> None:
    obj = _json_obj(sdk_manifest())
    reordered = dict(reversed(list(obj.items())))
    assert parse_manifest(obj).digest == parse_manifest(reordered).digest


# --- access --------------------------------------------------------------------------------


def _manifest(**changes: Any) -> Manifest:
    return parse_manifest(_json_obj(sdk_manifest(**changes)))


@pytest.mark.parametrize("user", [OWNER, OWNER.lower(), OWNER.upper().replace("0X", "0x")])
def test_owner_matches_ignoring_ascii_case(user: str) -> None:
    check_access(_manifest(), user)


LOOKALIKES = [
    OWNER.replace("a", "\u0430"),  # Cyrillic a
    OWNER.replace("C", "\u216d"),  # Roman numeral one hundred
    OWNER.replace("b", "\uff42"),  # fullwidth b
    OWNER.replace("0x", "0\u0445"),  # Cyrillic ha
]


@pytest.mark.parametrize("user", LOOKALIKES + ["0xdeadbeef", "", OWNER + " ", OWNER[:-1]])
def test_other_users_are_refused_without_leaking_the_owner(user: str) -> None:
    with pytest.raises(FabstirError) as info:
        check_access(_manifest(), user)
    assert info.value.code is ErrorCode.OWNER_MISMATCH
    assert OWNER.lower() not in info.value.message.lower()
    assert OWNER.lower() not in (info.value.detail or "").lower()


@pytest.mark.parametrize(
    ("owner", "user"),
    [
        ("0xk1", "0x\u212a1"),  # Kelvin sign lowers to ASCII k
        ("0xi1", "0x\u01311"),  # dotless i upper-cases to ASCII I
        ("0x\u212a1", "0xk1"),  # the look-alike may be the stored owner
        ("0xss", "0x\u00df"),  # sharp s casefolds to "ss"
        ("0xst", "0x\ufb06"),  # ligature st casefolds to "st"
    ],
)
def test_case_mapping_look_alikes_do_not_match(owner: str, user: str) -> None:
    with pytest.raises(FabstirError) as info:
        check_access(_manifest(owner=owner), user)
    assert info.value.code is ErrorCode.OWNER_MISMATCH


def test_deleted_database_is_not_found() -> None:
    with pytest.raises(FabstirError) as info:
        check_access(_manifest(deleted=True), OWNER)
    assert info.value.code is ErrorCode.MANIFEST_NOT_FOUND
    assert info.value.message == "database has been deleted"


def test_owner_is_checked_before_deletion() -> None:
    with pytest.raises(FabstirError) as info:
        check_access(_manifest(deleted=True), "0xsomeoneelse")
    assert info.value.code is ErrorCode.OWNER_MISMATCH


def test_empty_database() -> None:
    manifest = _manifest(vectorCount=0, chunks=[], chunkCount=0)
    with pytest.raises(FabstirError) as info:
        check_access(manifest, OWNER)
    assert info.value.code is ErrorCode.EMPTY_DATABASE


def test_user_data_stays_out_of_the_repr() -> None:
    text = repr(_manifest(description="private plans"))
    assert OWNER not in text and "private plans" not in text and "notes" not in text
