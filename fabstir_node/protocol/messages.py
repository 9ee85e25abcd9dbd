"""Typed protocol messages (attrs), free of I/O."""

from __future__ import annotations

from typing import Any

import attrs

from ..errors import ErrorCode, FabstirError
from .keys import lookup


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
