"""Storage paths of a vector database (protocol §4.1).

A database lives in one directory::

    home/vector-databases/{userAddress}/{databaseName}/manifest.json
    home/vector-databases/{userAddress}/{databaseName}/chunk-{N}.json

Paths come from clients, so every one is checked before it reaches a storage
backend: relative, rooted at ``home/`` or ``archive/``, and free of anything a
URL decoder, a Unicode normaliser or a file system could turn into a step
outside that root.  The node derives chunk paths from the manifest's own
directory and the chunk number, never from the manifest's ``cid`` field.
"""

from __future__ import annotations

import re
import unicodedata

from ..errors import ErrorCode, FabstirError

__all__ = [
    "MAX_PATH_BYTES",
    "ROOTS",
    "chunk_path",
    "database_dir",
    "manifest_path",
    "validate_path",
]

#: Longest path accepted, in UTF-8 bytes.
MAX_PATH_BYTES = 1024

#: First segment every path must have.
ROOTS = ("home", "archive")

# Percent-encoded dot, slash, backslash, percent (double encoding) and control
# characters.  The S5 bridge does not URL-decode, but something in between
# might; such a path has no legitimate use.
_ENCODED = re.compile(r"%(2e|2f|5c|25|[01][0-9a-f]|7f)", re.IGNORECASE)
_DRIVE = re.compile(r"^[A-Za-z]:")


def _refuse(reason: str) -> FabstirError:
    return FabstirError(ErrorCode.INVALID_PATH, f"invalid path: {reason}")


def _has_control(text: str) -> bool:
    return any(ord(c) < 0x20 or 0x7F <= ord(c) < 0xA0 for c in text)


def _check_segments(segments: list[str]) -> None:
    for segment in segments:
        if not segment:
            raise _refuse("empty segment")
        if segment.strip(". ") == "":
            # ".", "..", and the Windows spellings ". ", "... "
            raise _refuse("'.' and '..' segments are not allowed")


def validate_path(path: str) -> str:
    """Return ``path`` unchanged if it is a safe database path, else raise.

    Raises :class:`FabstirError` with ``INVALID_PATH``.  The rules: a string of
    at most :data:`MAX_PATH_BYTES` UTF-8 bytes; relative (no leading ``/``, no
    drive letter, no ``~``); first segment ``home`` or ``archive`` followed by at
    least one more; no empty, ``.`` or ``..`` segment; no backslash, NUL or
    other control character; no percent-encoded dot, slash, backslash, percent
    or control character; and no character that Unicode compatibility
    normalisation (NFKC) would turn into a dot or a slash sequence that breaks
    these rules (fullwidth ``．``/``／``, one-dot leader, ...).
    """
    if not isinstance(path, str):
        raise _refuse("path must be a string")
    if not path:
        raise _refuse("path is empty")
    try:
        size = len(path.encode("utf-8"))
    except UnicodeEncodeError:  # lone surrogates
        raise _refuse("path is not valid Unicode") from None
    if size > MAX_PATH_BYTES:
        raise _refuse(f"path is longer than {MAX_PATH_BYTES} bytes")
    if _has_control(path):
        raise _refuse("control characters are not allowed")
    if "\\" in path:
        raise _refuse("backslashes are not allowed")
    if path.startswith(("/", "~")) or _DRIVE.match(path) or "://" in path:
        raise _refuse("path must be relative")
    if _ENCODED.search(path):
        raise _refuse("percent-encoded separators are not allowed")
    segments = path.split("/")
    _check_segments(segments)
    if segments[0] not in ROOTS:
        raise _refuse("path must start with home/ or archive/")
    if len(segments) < 2:
        raise _refuse("path names no file below its root")
    # A later layer that applies NFKC must not see a different structure.
    folded = unicodedata.normalize("NFKC", path)
    if folded != path:
        if "\\" in folded or _has_control(folded) or folded.count("/") != path.count("/"):
            raise _refuse("path contains look-alike separators")
        _check_segments(folded.split("/"))
    return path


def _check_name(value: str, what: str) -> str:
    if not isinstance(value, str) or not value:
        raise _refuse(f"{what} must be a non-empty string")
    if "/" in value or "\\" in value:
        raise _refuse(f"{what} must not contain a slash")
    return value


def database_dir(owner: str, name: str) -> str:
    """``home/vector-databases/{owner}/{name}``, validated."""
    _check_name(owner, "owner")
    _check_name(name, "database name")
    return validate_path(f"home/vector-databases/{owner}/{name}")


def manifest_path(owner: str, name: str) -> str:
    """``home/vector-databases/{owner}/{name}/manifest.json``, validated."""
    return validate_path(database_dir(owner, name) + "/manifest.json")


def chunk_path(manifest_path: str, chunk_id: int) -> str:
    """The path of chunk ``chunk_id``: ``chunk-{N}.json`` beside the manifest.

    ``manifest_path`` is validated first; the result is validated too.
    """
    validate_path(manifest_path)
    if type(chunk_id) is not int or chunk_id < 0:
        raise _refuse("chunk id must be a non-negative integer")
    directory = manifest_path.rsplit("/", 1)[0]
    return validate_path(f"{directory}/chunk-{chunk_id}.json")
