"""Every vector in tests/data/s5-vectors.json, reproduced with the pure S5 package.

Each category has one parametrised test; ``test_every_category_is_checked``
fails if the file gains a category nobody checks.
"""

from __future__ import annotations

import array
import json
import math
from typing import Any

import pytest
from _s5_vectors import VECTORS, cases, h, pattern

from fabstir_node.errors import ErrorCode, FabstirError
from fabstir_node.s5 import cborx, multibase
from fabstir_node.s5.cborx import UNDEFINED, JsMap
from fabstir_node.s5.cid import BlobId, blake3_hash, cid_kind, decode_size, parse_blob_id, verify_blob
from fabstir_node.s5.content import open_file
from fabstir_node.s5.dirv1 import DirRef, DirV1, FileRef, decode_dirv1, encode_dirv1, file_encryption_extra
from fabstir_node.s5.encryption import (
    check_padded_block,
    decrypt_chunked,
    decrypt_mutable,
    decrypt_padded_chunked,
    encrypt_chunked,
    encrypt_mutable,
    encrypt_padded_chunked,
    pad_file_size,
)
from fabstir_node.s5.identity import DirectoryKeys, S5Identity, directory_cid, fs5_uri, sdk_wallet_entropy
from fabstir_node.s5.keys import derive_hash_int, derive_hash_string
from fabstir_node.s5.registry import decode_entry, sign_entry
from fabstir_node.s5.resolve import Resolver, drive
from fabstir_node.s5.seed import entropy_to_phrase, phrase_from_random, phrase_to_entropy
from fabstir_node.s5.writer import TreeWriter

CHECKED = {
    "blob_identifier", "raw_hash_cid", "blob_identifier_size_encoding", "legacy_cid_decode",
    "key_derivation", "seed_phrase_validation", "derive_hash_int", "derive_hash_string",
    "fabstir_sdk_seed", "dirv1", "dirv1_repository_vectors", "registry_entry",
    "mutable_encryption", "pad_file_size", "file_encryption", "cbor", "fs_end_to_end",
}  # fmt: skip


def test_every_category_is_checked() -> None:
    assert set(VECTORS) <= CHECKED, f"unchecked vector categories: {set(VECTORS) - CHECKED}"
    assert all(VECTORS[c] for c in CHECKED), "a checked category is empty"


def _input_bytes(inputs: dict[str, Any]) -> bytes:
    if "data_hex" in inputs:
        return h(inputs["data_hex"])
    assert inputs["pattern"].startswith("byte[i] = i mod 251")
    return pattern(inputs["length"])


# --- identifiers ------------------------------------------------------------------


@pytest.mark.parametrize("vector", cases("blob_identifier"))
def test_blob_identifier(vector: dict[str, Any]) -> None:
    data, out = _input_bytes(vector["inputs"]), vector["outputs"]
    blob_id = BlobId.for_data(data)
    assert blob_id.hash.hex() == out["blake3_hex"]
    assert blob_id.to_bytes().hex() == out["blob_id_hex"]
    assert len(blob_id.to_bytes()) == out["blob_id_length"]
    assert str(blob_id) == out["toString"] == out["b_base32"]
    for base, key in (("b", "b_base32"), ("z", "z_base58"), ("u", "u_base64url"), ("f", "f_hex")):
        assert blob_id.to_string(base) == out[key]
        decoded = BlobId.parse(out[key])
        assert decoded.hash33.hex() == out["decode_results"][key]["hash33_hex"]
        assert decoded.size == out["decode_results"][key]["size"]
    assert cid_kind(multibase.decode(out["b_base32"])) == out["detectCIDFormat_of_b_form"]
    verify_blob(out["z_base58"], data)


@pytest.mark.parametrize("vector", cases("raw_hash_cid"))
def test_raw_hash_cid(vector: dict[str, Any]) -> None:
    digest, out = h(vector["inputs"]["hash_hex"]), vector["outputs"]
    assert multibase.encode(digest, "b") == out["formatCID_base32"]
    assert multibase.encode(digest, "z") == out["formatCID_base58btc"]
    assert multibase.encode(digest, "m") == out["formatCID_base64"]
    for text in (out["formatCID_base32"], out["formatCID_base58btc"], out["formatCID_base64"]):
        assert multibase.decode(text).hex() == out["parseCID_base32_hex"]
    assert cid_kind(multibase.decode(out["formatCID_base32"])) == out["detectCIDFormat_base32"]
    raw = BlobId.parse(out["formatCID_base32"])
    assert (raw.hash.hex(), raw.size) == (out["parseCID_base32_hex"], 0)
    blob_text = VECTORS["blob_identifier"][1]["outputs"]["b_base32"]  # same hash, as a BlobId
    assert parse_blob_id(blob_text).hash.hex() == out["cidStringToHash_of_blob_id_b_form_hex"]


@pytest.mark.parametrize("vector", cases("blob_identifier_size_encoding"))
def test_blob_identifier_size_encoding(vector: dict[str, Any]) -> None:
    inputs, out = vector["inputs"], vector["outputs"]
    hash33, size = h(inputs["hash33_hex"]), inputs["size"]
    blob_id = BlobId(hash33[1:], size)
    assert blob_id.to_bytes(s5js_quirk=True).hex() == out["blob_id_hex"]
    if size < 2**31:  # below the quirk, the correct encoding is the same
        assert blob_id.to_bytes().hex() == out["blob_id_hex"]
    else:  # our default encoding is the correct one, and decodes back exactly
        assert BlobId.from_bytes(blob_id.to_bytes()).size == size
    size_field = h(out["size_bytes_hex"])
    back = out["decoded_back_size"]
    if isinstance(back, int):
        assert decode_size(size_field) == back
    else:  # JS printed a double above 2**53; compare as doubles
        assert float(decode_size(size_field)) == float(back.split()[0])
    assert BlobId.from_bytes(h(out["blob_id_hex"])).hash == hash33[1:]


@pytest.mark.parametrize("vector", cases("legacy_cid_decode"))
def test_legacy_cid_decode(vector: dict[str, Any]) -> None:
    inputs, out = vector["inputs"], vector["outputs"]
    from_bytes = BlobId.from_bytes(h(inputs["legacy_cid_hex"]))
    from_text = BlobId.parse(inputs["legacy_cid_z_base58"])
    assert (from_bytes.hash33.hex(), from_bytes.size) == (out["fromBytes_hash33_hex"], out["fromBytes_size"])
    assert (from_text.hash33.hex(), from_text.size) == (out["decode_z_hash33_hex"], out["decode_z_size"])
    assert from_text.to_bytes().hex() == out["reencoded_blob_id_hex"]
    assert from_text.to_legacy_bytes().hex() == inputs["legacy_cid_hex"]
    assert multibase.encode(from_text.to_legacy_bytes(), "z") == inputs["legacy_cid_z_base58"]


# --- keys and identities ------------------------------------------------------------


@pytest.mark.parametrize("vector", cases("derive_hash_int"))
def test_derive_hash_int(vector: dict[str, Any]) -> None:
    inputs = vector["inputs"]
    assert derive_hash_int(h(inputs["base_hex"]), inputs["tweak"]).hex() == vector["outputs"]["result_hex"]


@pytest.mark.parametrize("vector", cases("derive_hash_string"))
def test_derive_hash_string(vector: dict[str, Any]) -> None:
    inputs, out = vector["inputs"], vector["outputs"]
    tweak = inputs["tweak_utf8"].encode("utf-8")
    assert tweak.hex() == inputs["tweak_hex"]
    assert blake3_hash(tweak).hex() == out["blake3_of_tweak_hex"]
    assert derive_hash_string(h(inputs["base_hex"]), tweak).hex() == out["result_hex"]


def _check_levels(identity: S5Identity, levels: list[dict[str, Any]]) -> None:
    for level in levels:
        path = "" if level["path"] == "(root)" else level["path"]
        keys = identity.directory(path)
        assert keys.write_key.hex() == level["write_key_hex"]
        assert keys.public_key.hex() == level["public_key_hex"]
        if level.get("getPublicDirectoryKey_hex"):
            assert keys.public_key32.hex() == level["getPublicDirectoryKey_hex"]
        if "directory_encryption_key_used_hex" in level:
            used = level["directory_encryption_key_used_hex"]
            assert (keys.encryption_key.hex() if keys.encryption_key else None) == used
        if "unused_derived_0x5e_key_hex" in level:
            assert derive_hash_int(keys.write_key, 0x5E).hex() == level["unused_derived_0x5e_key_hex"]


@pytest.mark.parametrize("vector", cases("key_derivation"))
def test_key_derivation(vector: dict[str, Any]) -> None:
    inputs, out = vector["inputs"], vector["outputs"]
    assert phrase_from_random(h(inputs["generatePhrase_rng_bytes_hex"])) == inputs["phrase"]
    identity = S5Identity.from_phrase(inputs["phrase"])
    assert identity.entropy.hex() == out["entropy16_hex"] == out["phraseToSeed_hex"]
    assert identity.seed_bytes.hex() == out["seedBytes_hex"]
    assert identity.main_seed.hex() == out["main_identity_seed_hex"]
    assert identity.public_seed.hex() == out["public_identity_seed_hex"]
    assert identity.public_sub_seed.hex() == out["public_sub_seed_hex"]
    assert identity.private_data_seed.hex() == out["private_data_seed_hex"]
    assert identity.private_sub_seed.hex() == out["private_sub_seed_hex"]
    assert identity.fs_root_key.hex() == out["fsRootKey_hex"]
    assert identity.portal_account_seed.hex() == out["portalAccountSeed_hex"]
    assert identity.hidden_db_key.hex() == out["hiddenDBKey_hex"]
    assert identity.signing_key_seed.hex() == out["signingKey_seed_hex"]
    root = identity.root()
    assert root.write_key.hex() == out["rootWriteKey_hex"]
    assert root.public_key.hex() == out["root_registry_public_key_hex"]
    assert root.encryption_key.hex() == out["rootEncryptionKey_hex"]
    assert directory_cid(root).hex() == out["root_directory_cid_hex"]
    assert fs5_uri(root, with_write_key=True) == out["root_fs5_uri"]
    _check_levels(identity, out["directory_levels"])


@pytest.mark.parametrize("vector", cases("seed_phrase_validation"))
def test_seed_phrase_validation(vector: dict[str, Any]) -> None:
    phrase, out = vector["inputs"]["phrase"], vector["outputs"]
    if out["valid"]:
        assert phrase_to_entropy(phrase).hex() == out["entropy16_hex"]
    else:
        with pytest.raises(FabstirError) as info:
            phrase_to_entropy(phrase)
        assert info.value.code is ErrorCode.S5_INVALID_SEED_PHRASE
        assert phrase.split()[-1] not in info.value.message  # no seed words in messages


@pytest.mark.parametrize("vector", cases("fabstir_sdk_seed"))
def test_fabstir_sdk_seed(vector: dict[str, Any]) -> None:
    inputs, out = vector["inputs"], vector["outputs"]
    if "address" in inputs:
        source = inputs["address"] + inputs["domain_separator"] + str(inputs["chain_id"])
        assert source == inputs["sha256_input_utf8"]
        entropy = sdk_wallet_entropy(inputs["address"], inputs["chain_id"])
        identity = S5Identity.from_wallet(inputs["address"], inputs["chain_id"])
        assert identity.entropy == entropy
    else:
        entropy = h(inputs["entropy16_hex"])
        identity = S5Identity(entropy)
    assert entropy.hex() == out.get("entropy16_hex", inputs.get("entropy16_hex"))
    assert entropy_to_phrase(entropy) == out["phrase"] == identity.phrase
    assert phrase_to_entropy(out["phrase"]).hex() == out["s5js_entropy16_hex"]
    assert identity.seed_bytes.hex() == out["seedBytes_hex"]
    if "fsRootKey_hex" in out:
        root = identity.root()
        assert identity.fs_root_key.hex() == out["fsRootKey_hex"]
        assert root.write_key.hex() == out["rootWriteKey_hex"]
        assert root.public_key.hex() == out["root_registry_public_key_hex"]
        assert root.encryption_key.hex() == out["rootEncryptionKey_hex"]
        assert fs5_uri(root, with_write_key=True) == out["root_fs5_uri"]
        _check_levels(identity, out["directory_levels"])


@pytest.mark.parametrize("vector", cases("registry_entry"))
def test_registry_entry(vector: dict[str, Any]) -> None:
    inputs, out = vector["inputs"], vector["outputs"]
    seed, revision, data = h(inputs["ed25519_seed_hex"]), inputs["revision"], h(inputs["data_hex"])
    entry = sign_entry(seed, revision, data, s5js_quirk=True)
    assert entry.pk.hex() == out["public_key_hex"]
    assert entry.signed_message().hex() == out["signed_message_hex"]
    assert entry.signature.hex() == out["signature_hex"]
    assert entry.to_bytes().hex() == out["wire_hex"]
    if revision < 2**31:
        assert sign_entry(seed, revision, data) == entry
    decoded = decode_entry(h(out["wire_hex"]))
    assert decoded.is_valid() is out["verify_ok"]
    assert decoded.revision == out["deserialised_revision"]
    assert decoded == entry


# --- directories --------------------------------------------------------------------

_LOCATION_TAGS = {"identity": 0x00, "http": 0x01, "multihash_sha1": 0x11, "multihash_sha2_256": 0x12,
                  "multihash_blake3": 0x1E, "multihash_md5": 0xD5}  # fmt: skip


def _file_ref(spec: dict[str, Any]) -> FileRef:
    extra = None
    if "extra" in spec:
        enc = spec["extra"]["encryption"]
        extra = file_encryption_extra(h(enc["key_hex"]), h(enc["plaintextHash_hex"]))
        assert enc["algorithm"] == "xchacha20-poly1305"
    locations = None
    if "locations" in spec:
        locations = tuple(
            (_LOCATION_TAGS[kind], value if kind == "http" else h(value)) for kind, value in spec["locations"]
        )
    return FileRef(
        hash=h(spec["hash_hex"]),
        size=spec["size"],
        media_type=spec.get("media_type"),
        timestamp=spec.get("timestamp"),
        timestamp_subsec_nanos=spec.get("timestamp_subsec_nanos"),
        locations=locations,
        extra=extra,
        prev=_file_ref(spec["prev"]) if "prev" in spec else None,
    )


def _dir_ref(spec: dict[str, Any]) -> DirRef:
    return DirRef(h(spec["link_hex"]), spec.get("ts_seconds"), spec.get("ts_nanos"))


def _directory_from_inputs(inputs: dict[str, Any]) -> DirV1:
    files = {name: _file_ref(spec) for name, spec in inputs.get("files", {}).items()}
    dirs = {name: _dir_ref(spec) for name, spec in inputs.get("dirs", {}).items()}
    for key, spec in inputs.items():  # "file_secret_bin" -> "secret.bin", "dir_frozen" -> "frozen"
        if key.startswith("file_"):
            stem, _, ext = key[5:].rpartition("_")
            files[f"{stem}.{ext}"] = _file_ref(spec)
        elif key.startswith("dir_"):
            dirs[key[4:]] = _dir_ref(spec)
    for i, name in enumerate(inputs.get("names", [])):
        files[name] = FileRef(bytes([i]) * 32, i)
    return DirV1({}, dirs, files)


@pytest.mark.parametrize("vector", cases("dirv1"))
def test_dirv1(vector: dict[str, Any]) -> None:
    out = vector["outputs"]
    blob = encode_dirv1(_directory_from_inputs(vector["inputs"]))
    assert blob.hex() == out["blob_hex"]
    if "blake3_hex" in out:
        assert blake3_hash(blob).hex() == out["blake3_hex"]
    decoded = decode_dirv1(blob)
    assert encode_dirv1(decoded) == blob
    if "encoded_order" in out:
        assert list(decoded.files) == out["encoded_order"]


@pytest.mark.parametrize("vector", cases("dirv1_repository_vectors"))
def test_dirv1_repository_vectors(vector: dict[str, Any]) -> None:
    data, out = h(vector["inputs"]["cbor_hex"]), vector["outputs"]
    if not out["s5js_deserialise_ok"]:
        with pytest.raises(FabstirError) as info:
            decode_dirv1(data)
        assert info.value.code is ErrorCode.S5_INVALID_DIRECTORY
        return
    directory = decode_dirv1(data)
    assert decode_dirv1(b"\x5f\x5d" + data) == directory
    assert encode_dirv1(directory).hex() == out["s5js_reserialised_blob_hex"]
    if "s5js_name_order" in out:
        assert list(directory.files) == out["input_name_order"]["files"]  # decoding keeps the input order
        reencoded = decode_dirv1(encode_dirv1(directory))
        assert list(reencoded.files) == out["s5js_name_order"]["files"]
        assert list(reencoded.dirs) == out["s5js_name_order"]["dirs"]


# --- encryption ---------------------------------------------------------------------


@pytest.mark.parametrize("vector", cases("mutable_encryption"))
def test_mutable_encryption(vector: dict[str, Any]) -> None:
    inputs, out = vector["inputs"], vector["outputs"]
    key, plaintext = h(inputs["key_hex"]), h(inputs["plaintext_hex"])
    stored = encrypt_mutable(key, plaintext, h(inputs["nonce_hex"]))
    assert stored.hex() == out["stored_hex"]
    assert len(stored) == out["stored_length"]
    assert decrypt_mutable(key, h(out["stored_hex"])) == plaintext


@pytest.mark.parametrize("vector", cases("pad_file_size"))
def test_pad_file_size(vector: dict[str, Any]) -> None:
    size, out = vector["inputs"]["size"], vector["outputs"]
    assert pad_file_size(size) == out["padFileSize"]
    assert check_padded_block(size) is out["checkPaddedBlock"]


@pytest.mark.parametrize("vector", cases("file_encryption"))
def test_file_encryption(vector: dict[str, Any]) -> None:
    inputs, out = vector["inputs"], vector["outputs"]
    plaintext = pattern(inputs["plaintext_length"])
    if "plaintext_hex" in inputs:
        assert plaintext.hex() == inputs["plaintext_hex"]
    assert blake3_hash(plaintext).hex() == out["plaintext_blake3_hex"]
    if "key_hex" not in inputs:  # uploadBlobEncrypted, padded variant
        key = blake3_hash(b"ube:0")
        assert inputs["rng_key_rule"] == "blake3(utf8('ube:0')) as 32 bytes" and key.hex() == out["key_hex"]
        ciphertext, padding = encrypt_padded_chunked(key, plaintext)
        assert padding == out["padding"]
    else:
        key = h(inputs["key_hex"])
        ciphertext = encrypt_chunked(key, plaintext)
    assert len(ciphertext) == out["ciphertext_length"]
    assert blake3_hash(ciphertext).hex() == out["ciphertext_blake3_hex"]
    if "ciphertext_hex" in out:
        assert ciphertext.hex() == out["ciphertext_hex"]
    if "ciphertext_first64_hex" in out:
        assert ciphertext[:64].hex() == out["ciphertext_first64_hex"]
        assert ciphertext[-64:].hex() == out["ciphertext_last64_hex"] if ciphertext else True
    if "key_hex" not in inputs:
        assert decrypt_padded_chunked(key, ciphertext, padding) == plaintext
        return
    assert decrypt_chunked(key, ciphertext, len(plaintext)) == plaintext
    enc = out["fileref_extra_encryption"]
    assert (enc["key_hex"], enc["plaintextHash_hex"]) == (key.hex(), out["plaintext_blake3_hex"])
    # fs.put with encryption: the parent directory blob, and reading it back.
    writer = TreeWriter(S5Identity(bytes(16)).root(), timestamp=1700000000)
    ref = writer.put(inputs["path"], plaintext, encryption_key=key)
    assert (ref.hash.hex(), ref.size, ref.media_type) == (
        out["fileref_hash_hex"], out["fileref_size"], out["fileref_media_type"],
    )  # fmt: skip
    assert ref.encryption is not None and ref.encryption.plaintext_hash.hex() == enc["plaintextHash_hex"]
    if "parent_directory_blob_hex" in out:
        parent = decode_dirv1(h(out["parent_directory_blob_hex"]))
        name = inputs["path"].rsplit("/", 1)[1]
        assert encode_dirv1(DirV1({}, {}, {name: ref})).hex() == out["parent_directory_blob_hex"]
        (stored_ref,) = parent.files.values()
        assert open_file(stored_ref, ciphertext) == plaintext


# --- fs.put CBOR ---------------------------------------------------------------------

USER = "0xabc0000000000000000000000000000000000000"
#: The vectors' JS values, written in Python (``undefined`` -> UNDEFINED, Map -> JsMap).
CBOR_VALUES: dict[str, Any] = {
    "manifest_minimal": {"name": "docs", "owner": USER, "description": UNDEFINED, "dimensions": 3,
                         "chunks": [{"chunkId": 0, "vectorCount": 1}]},
    "chunk_minimal": {"chunkId": 0, "vectors": [{"id": "a", "vector": [0.5, 0.25, -1], "metadata": {"t": "x"}}]},
    "chunk_float32array": {"chunkId": 0, "vectors": [{"id": "a", "vector": array.array("f", [0.5, 0.25, -1]),
                                                      "metadata": {"t": "x"}}]},
    "manifest_sdk_shape": {
        "name": "docs", "owner": USER, "description": "test db", "dimensions": 3, "vectorCount": 1,
        "storageSizeBytes": 0, "created": 1700000000000, "lastAccessed": 1700000000000,
        "updated": 1700000000123,
        "chunks": [{"chunkId": 0, "cid": f"home/vector-databases/{USER}/docs/chunk-0.json", "vectorCount": 1,
                    "sizeBytes": 0, "updatedAt": 1700000000123}],
        "chunkCount": 1, "folderPaths": ["/"], "pendingDocuments": [],
        "readyDocuments": [{"id": "d1", "name": "a.txt"}],
    },
    "key_order": {"z": 1, "B": 2, "a": {"y": 1, "b": 2}, "_u": 3, "arr": [{"y": 1, "b": 2}]},
    "top_level_array": [{"y": 1, "b": 2}, {"y": {"d": 1, "c": 2}}],
    "numbers": {"v": [0, 1, 23, 24, 255, 256, 65535, 65536, 4294967295, 4294967296, 1700000000000, -1, -24, -25,
                      -256, -257, -2147483648, -2147483649, -4294967297, 9007199254740991, 0.5, 0.1, 1.5, -2.5,
                      1e300, 3.4028234663852886e38, math.nan, math.inf, -0.0]},
    "misc_values": {"n": None, "u": UNDEFINED, "t": True, "f": False, "s": "", "s2": "h\u00e9llo \u2713",
                    "b": bytes([1, 2, 3]), "e": [], "o": {}, "m": JsMap({1: "x"})},
    "string_value": "hello",
}  # fmt: skip


def _as_js_json(value: Any) -> Any:
    """What JSON.stringify (with the generator's typed-array replacer) makes of a decoded value."""
    if value is UNDEFINED:
        raise AssertionError("undefined must be dropped by the caller")
    if isinstance(value, dict):
        return {str(k): _as_js_json(v) for k, v in value.items() if v is not UNDEFINED}
    if isinstance(value, list):
        return [_as_js_json(v) for v in value]
    if isinstance(value, bytes):
        return {"typed_array": "Uint8Array", "values": list(value)}
    if isinstance(value, array.array):
        kind = {"f": "Float32Array", "d": "Float64Array"}[value.typecode]
        return {"typed_array": kind, "values": list(value)}
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


@pytest.mark.parametrize("vector", cases("cbor"))
def test_cbor(vector: dict[str, Any]) -> None:
    out = vector["outputs"]
    data = h(out["cbor_hex"])
    assert len(data) == out["length"]
    decoded = cborx.decode(data, code=ErrorCode.INVALID_DATABASE, undefined=UNDEFINED)
    assert _as_js_json(decoded) == json.loads(out["s5js_decodeS5_as_json"])
    assert vector["name"] in CBOR_VALUES, "new cbor vector: add its JS value to CBOR_VALUES"
    assert cborx.encode_s5(CBOR_VALUES[vector["name"]]).hex() == out["cbor_hex"]


# --- the whole tree -----------------------------------------------------------------


@pytest.mark.parametrize("vector", cases("fs_end_to_end"))
def test_fs_end_to_end(vector: dict[str, Any]) -> None:
    inputs, out = vector["inputs"], vector["outputs"]
    identity = S5Identity.from_phrase(inputs["phrase"])
    assert identity.root().public_key.hex() == out["root_registry_public_key_hex"]
    assert identity.root().encryption_key.hex() == out["rootEncryptionKey_hex"]
    (rng_call,) = inputs["rng_calls"]  # only the root nonce comes from the RNG
    nonce = h(rng_call["bytes"])
    writer = TreeWriter(identity.root(), timestamp=inputs["fixed_now_ms"] // 1000, nonce=lambda n: nonce[:n])
    writer.mkdir("home")
    writer.mkdir("archive")  # ensureIdentityInitialized
    db = inputs["db_path"]
    writer.put(f"{db}/manifest.json", CBOR_VALUES["manifest_minimal"])
    writer.put(f"{db}/chunk-0.json", CBOR_VALUES["chunk_minimal"])
    previous = {h(e["pk_hex"]): e["revision"] - 1 for e in out["registry_entries"]}
    publication = writer.build(previous)

    expected_blobs = {h(b["blake3_hex"]): h(b["bytes_hex"]) for b in out["blobs"]}
    assert publication.blobs == expected_blobs
    assert {pk.hex(): e.to_bytes().hex() for pk, e in publication.entries.items()} == {
        e["pk_hex"]: e["wire_hex"] for e in out["registry_entries"]
    }
    for entry in out["registry_entries"]:
        decoded = decode_entry(h(entry["wire_hex"])).verify()
        assert (decoded.revision, decoded.data.hex()) == (entry["revision"], entry["data_hex"])
    root_key = identity.root().encryption_key
    for directory in out["directories_decoded"]:
        blob = expected_blobs[h(directory["blob_hash_hex"])]
        plain = decrypt_mutable(root_key, blob) if directory["encrypted"] else blob
        assert plain.hex() == directory["dirv1_plaintext_hex"]
        parsed = decode_dirv1(plain)
        assert sorted(parsed.dirs) == sorted(directory["dirs"])
        assert sorted(parsed.files) == sorted(directory["files"])

    def entries(pk: bytes) -> Any:
        return publication.entries.get(pk)

    def blobs(blob_id: BlobId) -> bytes | None:
        return publication.blobs.get(blob_id.hash)

    manifest = drive(Resolver(identity.root(), f"{db}/manifest.json"), entries, blobs)
    chunk = drive(Resolver(identity.root(), f"{db}/chunk-0.json"), entries, blobs)
    assert manifest.data.hex() == out["manifest_blob_hex"] and chunk.data.hex() == out["chunk_blob_hex"]
    content = manifest.content()
    assert ("description" in content) is out["fs_get_manifest_has_description_key"]
    assert (content["description"] is None) is out["fs_get_manifest_description_is_undefined"]
    assert {k: v for k, v in content.items() if v is not None} == json.loads(out["fs_get_manifest_json"])
    assert chunk.content() == json.loads(out["fs_get_chunk_json"])
    meta = out["fs_getMetadata_manifest"]
    assert (manifest.ref.size, manifest.ref.media_type, manifest.ref.timestamp) == (
        meta["size"], meta["mediaType"], 1700000000,
    )  # fmt: skip
    assert manifest.ref.hash.hex() == out["advanced_pathToCID_manifest_hex"]
    # readFromPublicDirectory: only the docs directory's public key.
    levels = VECTORS["key_derivation"][0]["outputs"]["directory_levels"]
    docs_key = next(level for level in levels if level["path"] == db)
    shared = DirectoryKeys.from_public_key(h(docs_key["getPublicDirectoryKey_hex"]))
    public_read = drive(Resolver(shared, "manifest.json"), entries, blobs)
    assert public_read.data.hex() == out["readFromPublicDirectory_docs_manifest_hex"]
    # The pathToBlobCID quirk: an id without the 0x1e byte.  We reproduce it, and refuse to parse it.
    quirky = h(out["advanced_pathToBlobCID_decoded_bytes_hex"])
    assert quirky == b"\x5b\x82" + manifest.ref.hash + bytes([manifest.ref.size])
    assert multibase.encode(quirky, "b") == out["advanced_pathToBlobCID_manifest"]
    with pytest.raises(FabstirError) as info:
        BlobId.parse(out["advanced_pathToBlobCID_manifest"])
    assert info.value.code is ErrorCode.S5_INVALID_CID
