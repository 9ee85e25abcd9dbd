"""Errors as values: one list of codes, one exception type.

Every failure that a client can see is a :class:`FabstirError` carrying an
:class:`ErrorCode`.  It is raised at the edge where the problem is known and
turned into a reply in one place (``server/``).  ``message`` is safe to show
to a client; ``detail`` is for logs only and must still never contain keys,
session keys or decrypted data.
"""

from __future__ import annotations

import enum


class ErrorCode(enum.StrEnum):
    # Requests (protocol §2.3)
    INVALID_JSON = "INVALID_JSON"
    INVALID_MESSAGE = "INVALID_MESSAGE"
    UNKNOWN_MESSAGE_TYPE = "UNKNOWN_MESSAGE_TYPE"
    NO_SESSION = "NO_SESSION"
    NO_VECTORS = "NO_VECTORS"
    VECTORS_LOADING = "VECTORS_LOADING"
    DIMENSION_MISMATCH = "DIMENSION_MISMATCH"
    LIMIT_EXCEEDED = "LIMIT_EXCEEDED"
    RATE_LIMIT_EXCEEDED = "RATE_LIMIT_EXCEEDED"
    # encrypted_session_init (protocol §2.2)
    ENCRYPTION_NOT_SUPPORTED = "ENCRYPTION_NOT_SUPPORTED"
    MISSING_PAYLOAD = "MISSING_PAYLOAD"
    INVALID_PAYLOAD = "INVALID_PAYLOAD"
    INVALID_HEX_ENCODING = "INVALID_HEX_ENCODING"
    INVALID_NONCE_SIZE = "INVALID_NONCE_SIZE"
    INVALID_SIGNATURE = "INVALID_SIGNATURE"
    # Loading (protocol §3.3)
    MANIFEST_NOT_FOUND = "MANIFEST_NOT_FOUND"
    MANIFEST_DOWNLOAD_FAILED = "MANIFEST_DOWNLOAD_FAILED"
    CHUNK_DOWNLOAD_FAILED = "CHUNK_DOWNLOAD_FAILED"
    OWNER_MISMATCH = "OWNER_MISMATCH"
    #: FABSTIR_ACCESS_POLICY=signed refused the load (our addition)
    ACCESS_DENIED = "ACCESS_DENIED"
    DECRYPTION_FAILED = "DECRYPTION_FAILED"
    MEMORY_LIMIT_EXCEEDED = "MEMORY_LIMIT_EXCEEDED"
    TIMEOUT = "TIMEOUT"
    INVALID_PATH = "INVALID_PATH"
    INVALID_SESSION_KEY = "INVALID_SESSION_KEY"
    EMPTY_DATABASE = "EMPTY_DATABASE"
    INVALID_DATABASE = "INVALID_DATABASE"
    INDEX_BUILD_FAILED = "INDEX_BUILD_FAILED"
    SESSION_NOT_FOUND = "SESSION_NOT_FOUND"
    INTERNAL_ERROR = "INTERNAL_ERROR"
    # Native S5 storage (fabstir_node/s5)
    S5_INVALID_CID = "S5_INVALID_CID"
    S5_HASH_MISMATCH = "S5_HASH_MISMATCH"
    S5_INVALID_ENTRY = "S5_INVALID_ENTRY"
    S5_INVALID_DIRECTORY = "S5_INVALID_DIRECTORY"
    S5_INVALID_SEED_PHRASE = "S5_INVALID_SEED_PHRASE"


#: Codes a client may retry after a while (protocol §3.3).
RETRYABLE: frozenset[ErrorCode] = frozenset(
    {
        ErrorCode.VECTORS_LOADING,
        ErrorCode.MANIFEST_DOWNLOAD_FAILED,
        ErrorCode.CHUNK_DOWNLOAD_FAILED,
        ErrorCode.RATE_LIMIT_EXCEEDED,
        ErrorCode.TIMEOUT,
    }
)


class FabstirError(Exception):
    """A failure with a machine-readable code and a client-safe message."""

    def __init__(self, code: ErrorCode, message: str, *, detail: str | None = None) -> None:
        super().__init__(message)
        self.code = ErrorCode(code)
        self.message = message
        self.detail = detail

    @property
    def retryable(self) -> bool:
        return self.code in RETRYABLE

    def __repr__(self) -> str:
        return f"FabstirError({self.code.value!r}, {self.message!r})"


# --- Storage failures -------------------------------------------------------
# Raised by ``storage/`` backends, which do not know whether a path was a
# manifest or a chunk; the loader maps them to MANIFEST_* / CHUNK_* codes.


class StorageError(Exception):
    """Base class for failures of a storage backend."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}")
        self.path = path
        self.message = message


class StorageNotFound(StorageError):
    """The path does not exist (permanent)."""


class StorageUnavailable(StorageError):
    """The backend failed after its retry budget (transient cause)."""


class StorageTooLarge(StorageError):
    """The object exceeded the configured body cap."""
