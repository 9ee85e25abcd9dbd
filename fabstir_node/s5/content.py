"""File contents: what ``fs.put`` stores and ``fs.get`` returns (s5.md §3.6, §3.7).

* :func:`open_file` turns a FileRef and its downloaded blob into plaintext:
  BLAKE3 check against the FileRef hash, then per-file decryption if the
  FileRef carries ``extra["encryption"]``, then a size check.
* :func:`decode_content` is ``fs.get``'s decoding: raw bytes for binary media
  types, else CBOR, else JSON, else strict UTF-8 text, else raw bytes.
* :func:`encode_content` is ``fs.put``'s encoding: bytes as they are, text as
  UTF-8, anything else as s5.js CBOR -- even for a name ending in ``.json``.
"""

from __future__ import annotations

import json
from typing import Any

from fabstir_node.errors import ErrorCode, FabstirError
from fabstir_node.s5 import cborx
from fabstir_node.s5.cid import BlobId, verify_blob
from fabstir_node.s5.dirv1 import ENCRYPTION_ALGORITHM, FileRef
from fabstir_node.s5.encryption import decrypt_chunked

__all__ = [
    "MEDIA_TYPES",
    "decode_content",
    "encode_content",
    "is_binary_media_type",
    "media_type_for",
    "open_file",
]

#: s5.js fs5.ts ``MEDIA_TYPE_MAP`` (extension -> media type).
MEDIA_TYPES = {
    "jpg": "image/jpeg", "jpeg": "image/jpeg", "png": "image/png", "gif": "image/gif",
    "webp": "image/webp", "svg": "image/svg+xml", "ico": "image/x-icon",
    "pdf": "application/pdf", "doc": "application/msword",
    "docx": "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
    "txt": "text/plain", "html": "text/html", "htm": "text/html", "css": "text/css",
    "js": "application/javascript", "mjs": "application/javascript", "json": "application/json",
    "xml": "application/xml", "md": "text/markdown",
    "mp3": "audio/mpeg", "mp4": "video/mp4", "avi": "video/x-msvideo", "wav": "audio/wav", "ogg": "audio/ogg",
    "zip": "application/zip", "tar": "application/x-tar", "gz": "application/gzip",
    "7z": "application/x-7z-compressed",
    "bin": "application/octet-stream", "exe": "application/x-msdownload", "csv": "text/csv",
    "yaml": "text/yaml", "yml": "text/yaml",
}  # fmt: skip

_BINARY_EXACT = frozenset(
    {
        "application/octet-stream",
        "application/zip",
        "application/gzip",
        "application/x-tar",
        "application/x-7z-compressed",
        "application/pdf",
        "application/x-msdownload",
    }
)


def media_type_for(name: str) -> str | None:
    """Media type from the file extension, as s5.js guesses it (None if unknown)."""
    dot = name.rfind(".")
    return None if dot < 0 else MEDIA_TYPES.get(name[dot + 1 :].lower())


def is_binary_media_type(media_type: str | None) -> bool:
    """True if ``fs.get`` returns the bytes undecoded."""
    if not media_type:
        return False
    return media_type in _BINARY_EXACT or media_type.startswith(("image/", "audio/", "video/"))


def open_file(ref: FileRef, blob: bytes) -> bytes:
    """The plaintext of a file from its stored ``blob``.

    Raises ``S5_HASH_MISMATCH`` if ``blob`` is not the blob ``ref`` names,
    ``DECRYPTION_FAILED`` if it does not decrypt, ``S5_INVALID_DIRECTORY`` for
    unusable encryption metadata.
    """
    encryption = ref.encryption
    if encryption is None:
        verify_blob(BlobId(ref.hash, ref.size), blob)
        return bytes(blob)
    verify_blob(BlobId(ref.hash, 0), blob)
    if encryption.algorithm != ENCRYPTION_ALGORITHM:
        raise FabstirError(
            ErrorCode.DECRYPTION_FAILED, "unsupported file encryption algorithm", detail=encryption.algorithm
        )
    return decrypt_chunked(encryption.key, blob, ref.size)


def _js_keys(value: Any) -> Any:
    """s5.js ``mapToObject``: every map becomes an object with string keys."""
    if isinstance(value, dict):
        return {_js_key(k): _js_keys(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_js_keys(v) for v in value]
    return value


def _js_key(key: Any) -> str:
    if isinstance(key, str):
        return key
    if isinstance(key, bool):
        return "true" if key else "false"
    if isinstance(key, int):
        return str(key)
    return ",".join(str(b) for b in key)  # bytes: String(Uint8Array)


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


def decode_content(data: bytes, media_type: str | None = None) -> Any:
    """Decode file bytes the way s5.js ``fs.get`` does.

    Returns ``bytes`` (binary media type, or nothing else fits), a ``str``, or
    the decoded CBOR/JSON value (dicts with string keys, lists, numbers, ...;
    CBOR ``undefined`` becomes None, Float32/64 typed arrays ``array.array``).
    Never raises for any input.
    """
    data = bytes(data)
    if is_binary_media_type(media_type):
        return data
    try:
        return _js_keys(cborx.decode(data, code=ErrorCode.INVALID_DATABASE))
    except FabstirError:
        pass
    try:
        return json.loads(data.decode("utf-8", errors="replace"), parse_constant=_reject_constant)
    except (ValueError, RecursionError):
        pass
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return data
    if any(ord(c) < 32 and c not in "\t\n\r" for c in text):
        return data
    return text


def encode_content(value: Any, name: str, media_type: str | None = None) -> tuple[bytes, str]:
    """``(stored bytes, media type)`` for ``fs.put(path, value)``; ``name`` is the file name."""
    if value is None:
        value = ""
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value), media_type or media_type_for(name) or "application/octet-stream"
    if isinstance(value, str):
        return value.encode("utf-8"), media_type or media_type_for(name) or "text/plain"
    return cborx.encode_s5(value), media_type or media_type_for(name) or "application/cbor"
