"""Database paths: every traversal and smuggling form is refused."""

from __future__ import annotations

import pytest

from fabstir_node.errors import ErrorCode, FabstirError
from fabstir_node.formats.paths import (
    MAX_PATH_BYTES,
    chunk_path,
    database_dir,
    manifest_path,
    validate_path,
)

GOOD = [
    "home/vector-databases/0xAbC/my-db/manifest.json",
    "home/vector-databases/0xabc/my db (2)/manifest.json",
    "archive/vector-databases/0xabc/db/chunk-3.json",
    "home/x",
    "home/vector-databases/0xabc/db.v2/manifest.json",
    "home/vector-databases/0xabc/ünïcödé/manifest.json",
    "home/a%20b/manifest.json",  # an encoded space is harmless
]

BAD = [
    "",
    "/home/vector-databases/0xabc/db/manifest.json",
    "//home/x",
    "home",
    "home/",
    "home//x",
    "home/x/",
    "home/../etc/passwd",
    "home/vector-databases/../../secret",
    "home/./x",
    "home/x/..",
    "home/x/.",
    "home/.. /x",
    "home/... /x",
    "..",
    "../home/x",
    "./home/x",
    "etc/passwd",
    "users/home/x",
    "Home/x",
    "home\\..\\x",
    "home/x\\y",
    "home/x\x00y",
    "home/x\ny",
    "home/x\ty",
    "home/x\x7fy",
    "home/x\x85y",
    "home/%2e%2e/x",
    "home/%2E%2E/x",
    "home/x%2fy",
    "home/x%2F..%2Fy",
    "home/x%5cy",
    "home/%252e%252e/x",
    "home/x%00",
    "home/x%0a",
    "C:/home/x",
    "c:home/x",
    "~/home/x",
    "file:///home/x",
    "home/x/http://evil",
    "home/\uff0e\uff0e/x",  # fullwidth full stops
    "home/x\uff0fy",  # fullwidth solidus
    "home/\u2025/x",  # two-dot leader (NFKC: "..")
    "home/x\uff3cy",  # fullwidth reverse solidus
    "home/x\ud800y",  # lone surrogate
    "home/" + "a" * MAX_PATH_BYTES,
    "home/" + "é" * (MAX_PATH_BYTES // 2),  # short in characters, long in bytes
]


@pytest.mark.parametrize("path", GOOD)
def test_good_paths_pass_unchanged(path: str) -> None:
    assert validate_path(path) == path


@pytest.mark.parametrize("path", BAD)
def test_bad_paths_are_refused(path: str) -> None:
    with pytest.raises(FabstirError) as info:
        validate_path(path)
    assert info.value.code is ErrorCode.INVALID_PATH


@pytest.mark.parametrize("value", [None, 3, b"home/x", ["home", "x"]])
def test_non_strings_are_refused(value: object) -> None:
    with pytest.raises(FabstirError) as info:
        validate_path(value)  # type: ignore[arg-type]
    assert info.value.code is ErrorCode.INVALID_PATH


def test_chunk_path_is_derived_from_the_manifest_directory() -> None:
    manifest = "home/vector-databases/0xabc/db/manifest.json"
    assert chunk_path(manifest, 0) == "home/vector-databases/0xabc/db/chunk-0.json"
    assert chunk_path(manifest, 12) == "home/vector-databases/0xabc/db/chunk-12.json"
    # the manifest's file name does not matter, only its directory
    assert chunk_path("archive/a/b/other.cbor", 1) == "archive/a/b/chunk-1.json"


@pytest.mark.parametrize("chunk_id", [-1, True, 1.0, "1", None])
def test_chunk_path_refuses_bad_ids(chunk_id: object) -> None:
    with pytest.raises(FabstirError) as info:
        chunk_path("home/vector-databases/0xabc/db/manifest.json", chunk_id)  # type: ignore[arg-type]
    assert info.value.code is ErrorCode.INVALID_PATH


def test_chunk_path_validates_the_manifest_path() -> None:
    with pytest.raises(FabstirError) as info:
        chunk_path("home/../manifest.json", 0)
    assert info.value.code is ErrorCode.INVALID_PATH


def test_database_dir_and_manifest_path() -> None:
    assert database_dir("0xAbC", "notes") == "home/vector-databases/0xAbC/notes"
    assert manifest_path("0xAbC", "notes") == "home/vector-databases/0xAbC/notes/manifest.json"


@pytest.mark.parametrize(
    ("owner", "name"),
    [("0xabc", "a/b"), ("0xabc", ".."), ("0xabc", ""), ("0x/abc", "db"), ("0xabc", "a\\b"), ("", "db")],
)
def test_database_dir_refuses_bad_names(owner: str, name: str) -> None:
    with pytest.raises(FabstirError) as info:
        database_dir(owner, name)
    assert info.value.code is ErrorCode.INVALID_PATH
