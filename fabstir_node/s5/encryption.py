"""XChaCha20-Poly1305 as FS5 uses it (s5.md §3.4, §3.7).

Three formats, all with 24-byte nonces and the 16-byte tag appended:

* **Mutable** (the root directory blob)::

      8d 01 | nonce(24) | AEAD(key, nonce, u32le(len) | payload | zero padding)

  padded so the whole stored blob is ``pad_file_size(len + 46)`` bytes.
* **Chunked** (``fs.put(..., {encryption})``): the plaintext in 256 KiB chunks,
  chunk *i* sealed with nonce = *i* as 24-byte little-endian, ciphertexts
  concatenated, no padding.  The FileRef keeps the *plaintext* size.
* **Padded chunked** (``uploadBlobEncrypted``): as chunked, but the last chunk
  is zero-padded first so the ciphertext is a padded block size.

Decryption failures raise ``FabstirError(DECRYPTION_FAILED)`` and never show
key or plaintext bytes.
"""

from __future__ import annotations

import os

from Crypto.Cipher import ChaCha20_Poly1305

from fabstir_node.errors import ErrorCode, FabstirError

__all__ = [
    "CHUNK_SIZE",
    "MUTABLE_MAGIC",
    "check_padded_block",
    "decrypt_chunked",
    "decrypt_mutable",
    "decrypt_padded_chunked",
    "encrypt_chunked",
    "encrypt_mutable",
    "encrypt_padded_chunked",
    "is_mutable_encrypted",
    "pad_file_size",
]

MUTABLE_MAGIC = b"\x8d\x01"
NONCE_SIZE = 24
TAG_SIZE = 16
KEY_SIZE = 32
CHUNK_SIZE = 262_144
#: 2 (magic) + 24 (nonce) + 16 (tag) + 4 (length prefix)
MUTABLE_OVERHEAD = 46
_KIB = 1024


def _failed(message: str, detail: str | None = None) -> FabstirError:
    return FabstirError(ErrorCode.DECRYPTION_FAILED, message, detail=detail)


def _check_key(key: bytes) -> bytes:
    key = bytes(key)
    if len(key) != KEY_SIZE:
        raise FabstirError(ErrorCode.INVALID_SESSION_KEY, "an XChaCha20-Poly1305 key must be 32 bytes")
    return key


def pad_file_size(size: int) -> int:
    """Skynet padding: 4 KiB steps up to 80 KiB, then the step doubles every 10 sizes."""
    for n in range(53):
        if size <= (1 << n) * 80 * _KIB:
            block = (1 << n) * 4 * _KIB
            return -(-size // block) * block
    raise ValueError("size too large to pad")


def check_padded_block(size: int) -> bool:
    """True if ``size`` is a size :func:`pad_file_size` can produce."""
    for n in range(53):
        if size <= (1 << n) * 80 * _KIB:
            return size % ((1 << n) * 4 * _KIB) == 0
    return False


def _seal(key: bytes, nonce: bytes, plaintext: bytes) -> bytes:
    cipher = ChaCha20_Poly1305.new(key=key, nonce=nonce)
    ciphertext, tag = cipher.encrypt_and_digest(plaintext)
    return ciphertext + tag


def _open(key: bytes, nonce: bytes, sealed: bytes) -> bytes:
    if len(sealed) < TAG_SIZE:
        raise _failed("ciphertext is too short")
    cipher = ChaCha20_Poly1305.new(key=key, nonce=nonce)
    try:
        return cipher.decrypt_and_verify(sealed[:-TAG_SIZE], sealed[-TAG_SIZE:])
    except ValueError:
        raise _failed("authentication failed: wrong key or corrupted data") from None


def _chunk_nonce(index: int) -> bytes:
    return index.to_bytes(NONCE_SIZE, "little")


# --- mutable (root directory) -------------------------------------------------


def is_mutable_encrypted(blob: bytes) -> bool:
    """s5.js's test: the first byte is ``0x8d``."""
    return blob[:1] == MUTABLE_MAGIC[:1]


def encrypt_mutable(key: bytes, payload: bytes, nonce: bytes | None = None) -> bytes:
    """Seal ``payload`` (a whole DirV1 blob) in the padded ``8d 01`` format.

    ``nonce`` defaults to 24 random bytes; pass one only to reproduce vectors.
    """
    key = _check_key(key)
    nonce = os.urandom(NONCE_SIZE) if nonce is None else bytes(nonce)
    if len(nonce) != NONCE_SIZE:
        raise ValueError("nonce must be 24 bytes")
    payload = bytes(payload)
    total = pad_file_size(len(payload) + MUTABLE_OVERHEAD)
    padding = total - (len(payload) + MUTABLE_OVERHEAD)
    plaintext = len(payload).to_bytes(4, "little") + payload + bytes(padding)
    return MUTABLE_MAGIC + nonce + _seal(key, nonce, plaintext)


def decrypt_mutable(key: bytes, blob: bytes) -> bytes:
    """Inverse of :func:`encrypt_mutable`: the payload, padding removed."""
    key = _check_key(key)
    blob = bytes(blob)
    if blob[:2] != MUTABLE_MAGIC:
        raise _failed("not an 8d01 encrypted blob")
    if len(blob) < MUTABLE_OVERHEAD or not check_padded_block(len(blob)):
        raise _failed("encrypted blob does not have a padded size")
    nonce = blob[2 : 2 + NONCE_SIZE]
    plaintext = _open(key, nonce, blob[2 + NONCE_SIZE :])
    length = int.from_bytes(plaintext[:4], "little")
    if length > len(plaintext) - 4:
        raise _failed("encrypted blob has a bad length prefix")
    return plaintext[4 : 4 + length]


# --- chunked (per-file) ---------------------------------------------------------


def encrypt_chunked(key: bytes, plaintext: bytes) -> bytes:
    """``fs.put`` file encryption: 256 KiB chunks, nonce = chunk index, no padding."""
    key = _check_key(key)
    plaintext = bytes(plaintext)
    parts = []
    for index, start in enumerate(range(0, len(plaintext), CHUNK_SIZE)):
        parts.append(_seal(key, _chunk_nonce(index), plaintext[start : start + CHUNK_SIZE]))
    return b"".join(parts)


def decrypt_chunked(key: bytes, ciphertext: bytes, size: int) -> bytes:
    """Inverse of :func:`encrypt_chunked`; ``size`` is the FileRef's plaintext size.

    Reads strides of 262160 bytes and truncates to ``size`` (s5.js
    ``downloadAndDecryptBlob``); a result shorter than ``size`` is refused.
    """
    key = _check_key(key)
    ciphertext = bytes(ciphertext)
    stride = CHUNK_SIZE + TAG_SIZE
    parts = []
    for index, start in enumerate(range(0, len(ciphertext), stride)):
        parts.append(_open(key, _chunk_nonce(index), ciphertext[start : start + stride]))
    plaintext = b"".join(parts)
    if not isinstance(size, int) or size < 0 or len(plaintext) < size:
        raise _failed("decrypted file is shorter than its recorded size")
    return plaintext[:size]


def padded_chunk_padding(size: int) -> int:
    """Zero bytes ``uploadBlobEncrypted`` appends to the last chunk of a ``size``-byte blob."""
    chunks = -(-size // CHUNK_SIZE)
    with_overhead = size + chunks * TAG_SIZE
    padding = pad_file_size(with_overhead) - with_overhead
    last_chunk = size % CHUNK_SIZE
    if padding + last_chunk >= CHUNK_SIZE:
        padding = CHUNK_SIZE - last_chunk
    return padding


def encrypt_padded_chunked(key: bytes, plaintext: bytes) -> tuple[bytes, int]:
    """``uploadBlobEncrypted``: returns ``(ciphertext, padding)``."""
    plaintext = bytes(plaintext)
    padding = padded_chunk_padding(len(plaintext))
    return encrypt_chunked(key, plaintext + bytes(padding)), padding


def decrypt_padded_chunked(key: bytes, ciphertext: bytes, padding: int) -> bytes:
    """Inverse of :func:`encrypt_padded_chunked`."""
    key = _check_key(key)
    ciphertext = bytes(ciphertext)
    stride = CHUNK_SIZE + TAG_SIZE
    parts = [
        _open(key, _chunk_nonce(index), ciphertext[start : start + stride])
        for index, start in enumerate(range(0, len(ciphertext), stride))
    ]
    plaintext = b"".join(parts)
    if not isinstance(padding, int) or not 0 <= padding <= len(plaintext):
        raise _failed("bad padding length")
    return plaintext[: len(plaintext) - padding]
