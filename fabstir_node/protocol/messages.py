"""Typed protocol messages (attrs), free of I/O.

Inbound frames become one of the request classes below (see ``codec.py`` for
the parsing rules); replies are plain dicts built by the ``*_reply``
functions so the spelling of every outbound key is written down in one place.
"""

from __future__ import annotations

from typing import Any

import attrs

from ..errors import ErrorCode, FabstirError
from .keys import lookup

#: Base Sepolia, the SDK's default chain.
DEFAULT_CHAIN_ID = 84532

#: The ``id`` / ``requestId`` a client attached to a frame, echoed on replies.
RequestId = str | int | None


@attrs.frozen
class VectorDatabaseRef:
    """The database a session names: ``vector_database`` / ``vectorDatabase``.

    ``directory_key`` is an extension for native S5 (a 32-byte Ed25519 public
    key shared by the user, hex or base64url), unused by other backends.
    """

    manifest_path: str
    user_address: str
    directory_key: str | None = None


def parse_vector_database(obj: Any, *, code: ErrorCode = ErrorCode.INVALID_MESSAGE) -> VectorDatabaseRef | None:
    """Parse the inner database object, accepting both key spellings.

    ``None`` (absent or JSON null) means the session names no database.
    """
    if obj is None:
        return None
    if not isinstance(obj, dict):
        raise FabstirError(code, "vector_database must be an object")
    path = lookup(obj, "manifest_path")
    user = lookup(obj, "user_address")
    if not isinstance(path, str) or not path:
        raise FabstirError(code, "vector_database.manifest_path must be a non-empty string")
    if not isinstance(user, str) or not user:
        raise FabstirError(code, "vector_database.user_address must be a non-empty string")
    dkey = lookup(obj, "directory_key")
    if dkey is not None and not isinstance(dkey, str):
        raise FabstirError(code, "vector_database.directory_key must be a string")
    return VectorDatabaseRef(manifest_path=path, user_address=user, directory_key=dkey)


# --- requests ----------------------------------------------------------------


@attrs.frozen
class Echo:
    """The correlation fields a frame carried, echoed on every reply to it."""

    id: RequestId = None
    request_id: RequestId = None
    session_id: str | None = None


@attrs.frozen
class SessionInit:
    """``session_init`` (protocol §2.1)."""

    session_id: str
    job_id: str | None = None
    chain_id: int = DEFAULT_CHAIN_ID
    user_address: str | None = None
    vector_database: VectorDatabaseRef | None = None
    echo: Echo = Echo()


@attrs.frozen
class EncryptedSessionInit:
    """``encrypted_session_init`` (protocol §2.2); ``payload`` is opened by ``crypto/``."""

    session_id: str
    job_id: str | None = None
    chain_id: int = DEFAULT_CHAIN_ID
    payload: Any = attrs.field(default=None, repr=False)
    echo: Echo = Echo()


@attrs.frozen
class UploadVectors:
    """``uploadVectors`` (§3.1); ``vectors`` is validated item by item by the engine."""

    vectors: list[Any] = attrs.field(repr=lambda v: f"<{len(v)} vectors>")
    replace: bool = False
    echo: Echo = Echo()


@attrs.frozen
class SearchVectors:
    """``searchVectors`` (§3.2)."""

    query_vector: list[float] = attrs.field(repr=lambda v: f"<{len(v)} floats>")
    k: int
    threshold: float | None = None
    metadata_filter: dict[str, Any] | None = None
    echo: Echo = Echo()


@attrs.frozen
class Ping:
    """``ping``: answered with ``pong`` (a cheap liveness check for clients)."""

    echo: Echo = Echo()


Request = SessionInit | EncryptedSessionInit | UploadVectors | SearchVectors | Ping


# --- replies -------------------------------------------------------------------


def _with_echo(reply: dict[str, Any], echo: Echo) -> dict[str, Any]:
    if echo.id is not None:
        reply["id"] = echo.id
    if echo.request_id is not None:
        reply["requestId"] = echo.request_id
    return reply


def session_init_ack(
    *, session_id: str, job_id: str | None, chain_id: int, echo: Echo, client_address: str | None = None,
    message: str = "Session initialized",
) -> dict[str, Any]:
    reply: dict[str, Any] = {
        "type": "session_init_ack",
        "status": "success",
        "session_id": session_id,
        "job_id": job_id,
        "chain_id": chain_id,
        "message": message,
    }
    if client_address is not None:
        reply["client_address"] = client_address
    return _with_echo(reply, echo)


def upload_reply(*, status: str, uploaded: int, rejected: int, errors: list[str], echo: Echo) -> dict[str, Any]:
    reply = {
        "type": "uploadVectorsResponse",
        "requestId": echo.request_id if echo.request_id is not None else echo.id,
        "status": status,
        "uploaded": uploaded,
        "rejected": rejected,
        "errors": errors,
    }
    return _with_echo(reply, echo)


def search_reply(
    *, results: list[dict[str, Any]], total_vectors: int, search_time_ms: float, echo: Echo
) -> dict[str, Any]:
    reply = {
        "type": "searchVectorsResponse",
        "requestId": echo.request_id if echo.request_id is not None else echo.id,
        "results": results,
        "totalVectors": total_vectors,
        "searchTimeMs": round(search_time_ms, 3),
    }
    return _with_echo(reply, echo)


def pong(echo: Echo) -> dict[str, Any]:
    return _with_echo({"type": "pong"}, echo)


def error_reply(error: FabstirError, echo: Echo | None = None) -> dict[str, Any]:
    """The one shape of every error (§2.3): ``code``, ``message`` and, for old clients, ``error``."""
    reply: dict[str, Any] = {
        "type": "error", "code": error.code.value, "message": error.message, "error": error.message
    }
    if echo is not None:
        if echo.session_id is not None:
            reply["session_id"] = echo.session_id
        _with_echo(reply, echo)
    return reply


def loading_progress(session_id: str, event: str, message: str, **extra: Any) -> dict[str, Any]:
    """A ``vector_loading_progress`` event (§3.3)."""
    payload = {"event": event, "message": message, **extra}
    return {"type": "vector_loading_progress", "session_id": session_id, "payload": payload}
