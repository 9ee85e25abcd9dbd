"""Frames in, typed requests out; replies out as JSON text.  No I/O.

:func:`decode_frame` turns one WebSocket message into a :class:`Request` or a
:class:`Rejected` value carrying the error to send and the correlation fields
to echo.  The rules (protocol §1–§3):

* The frame must be UTF-8 JSON (``INVALID_JSON``) holding an object
  (``INVALID_MESSAGE``) with a string ``type`` (``INVALID_MESSAGE`` if missing,
  ``UNKNOWN_MESSAGE_TYPE`` if not one we serve).
* Every key is accepted in snake_case or camelCase; the snake spelling wins
  when a frame carries both.
* Fields are checked strictly by a cattrs converter (a string is not a number,
  a bool is not a number, no float is NaN or infinite); the few leniencies the
  SDK needs (``job_id`` as number or string, ``chain_id`` as numeric string,
  ``session_id`` as number) are applied before that, in one place.
"""

from __future__ import annotations

import functools
import math
import operator
from collections.abc import Callable
from typing import Any

import attrs
import cattrs
import orjson

from ..errors import ErrorCode, FabstirError
from .keys import to_camel, to_snake
from .messages import (
    DEFAULT_CHAIN_ID,
    Echo,
    EncryptedSessionInit,
    Ping,
    Request,
    SearchVectors,
    SessionInit,
    UploadVectors,
    VectorDatabaseRef,
    parse_vector_database,
)

MAX_ID_LENGTH = 256


@attrs.frozen
class Rejected:
    """A frame we refuse: the error to reply with and what to echo."""

    error: FabstirError
    echo: Echo = attrs.field(factory=Echo)


# --- strict primitive hooks ------------------------------------------------------


def _strict(kind: type, check: Callable[[Any], bool], what: str) -> Callable[[Any, type], Any]:
    def hook(value: Any, _type: type) -> Any:
        if not check(value):
            raise TypeError(f"expected {what}, got {_json_kind(value)}")
        return value

    return hook


def _json_kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _structure_float_list(value: Any, _type: Any) -> list[float]:
    if not isinstance(value, list) or not value:
        raise TypeError("expected a non-empty array of numbers")
    if set(map(type, value)) == _FLOATS and all(map(math.isfinite, value)):
        return value  # the common case, without a Python loop over the items
    for item in value:
        if not _is_number(item):
            raise TypeError("expected only finite numbers")
    return value


_FLOATS = {float}


def _structure_optional_float(value: Any, _type: Any) -> float | None:
    if value is None:
        return None
    if not _is_number(value):
        raise TypeError("expected a finite number or null")
    return float(value)


def _structure_optional_object(value: Any, _type: Any) -> dict[str, Any] | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise TypeError("expected an object or null")
    return value


def _structure_list(value: Any, _type: Any) -> list[Any]:
    if not isinstance(value, list):
        raise TypeError("expected an array")
    return value


def _structure_optional_str(value: Any, _type: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise TypeError("expected a string or null")
    return value


def _structure_database(value: Any, _type: Any) -> VectorDatabaseRef | None:
    return parse_vector_database(value)


_converter = cattrs.Converter(forbid_extra_keys=False, detailed_validation=True)
_converter.register_structure_hook(str, _strict(str, lambda v: isinstance(v, str), "a string"))
_converter.register_structure_hook(
    int, _strict(int, lambda v: isinstance(v, int) and not isinstance(v, bool), "an integer")
)
_converter.register_structure_hook(bool, _strict(bool, lambda v: isinstance(v, bool), "true or false"))
for _type, _hook in (
    (list[float], _structure_float_list),
    (list[Any], _structure_list),
    (float | None, _structure_optional_float),
    (dict[str, Any] | None, _structure_optional_object),
    (str | None, _structure_optional_str),
    (VectorDatabaseRef | None, _structure_database),
):
    _converter.register_structure_hook_func(functools.partial(operator.eq, _type), _hook)
_converter.register_structure_hook(Echo, lambda value, _type: value)
_converter.register_structure_hook(Any, lambda value, _type: value)


# --- leniencies the SDK needs ------------------------------------------------------


def _as_id_string(value: Any, name: str) -> Any:
    """``session_id``/``job_id`` may be numbers on the wire; we keep them as strings."""
    if isinstance(value, bool):
        return value  # left for the strict hook to refuse
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str) and len(value) > MAX_ID_LENGTH:
        raise FabstirError(ErrorCode.INVALID_MESSAGE, f"{name} is longer than {MAX_ID_LENGTH} characters")
    return value


def _as_chain_id(value: Any) -> Any:
    if value is None:
        return DEFAULT_CHAIN_ID
    if isinstance(value, str) and value.strip().isdigit():
        return int(value.strip())
    return value


def _echo_value(value: Any) -> str | int | None:
    """Only strings and integers are echoed (and long strings are cut)."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        return value[:MAX_ID_LENGTH]
    return None


def _session_fields(obj: dict[str, Any]) -> dict[str, Any]:
    if "session_id" not in obj:
        raise FabstirError(ErrorCode.INVALID_MESSAGE, "session_id is required")
    fields = {
        "session_id": _as_id_string(obj["session_id"], "session_id"),
        "job_id": _as_id_string(obj.get("job_id"), "job_id"),
        "chain_id": _as_chain_id(obj.get("chain_id")),
    }
    if fields["session_id"] == "":
        raise FabstirError(ErrorCode.INVALID_MESSAGE, "session_id must not be empty")
    return fields


def _build_session_init(obj: dict[str, Any], echo: Echo) -> dict[str, Any]:
    return {
        **_session_fields(obj),
        "user_address": obj.get("user_address"),
        "vector_database": obj.get("vector_database"),
        "echo": echo,
    }


def _build_encrypted_init(obj: dict[str, Any], echo: Echo) -> dict[str, Any]:
    return {**_session_fields(obj), "payload": obj.get("payload"), "echo": echo}


def _build_upload(obj: dict[str, Any], echo: Echo) -> dict[str, Any]:
    if "vectors" not in obj:
        raise FabstirError(ErrorCode.INVALID_MESSAGE, "vectors is required")
    fields: dict[str, Any] = {"vectors": obj["vectors"], "echo": echo}
    if obj.get("replace") is not None:
        fields["replace"] = obj["replace"]
    return fields


def _build_search(obj: dict[str, Any], echo: Echo) -> dict[str, Any]:
    if "query_vector" not in obj:
        raise FabstirError(ErrorCode.INVALID_MESSAGE, "queryVector is required")
    if "k" not in obj:
        raise FabstirError(ErrorCode.INVALID_MESSAGE, "k is required")
    return {
        "query_vector": obj["query_vector"],
        "k": obj["k"],
        "threshold": obj.get("threshold"),
        "metadata_filter": obj.get("metadata_filter"),
        "echo": echo,
    }


_TYPES: dict[str, tuple[type, Callable[[dict[str, Any], Echo], dict[str, Any]]]] = {
    "session_init": (SessionInit, _build_session_init),
    "encrypted_session_init": (EncryptedSessionInit, _build_encrypted_init),
    "uploadVectors": (UploadVectors, _build_upload),
    "searchVectors": (SearchVectors, _build_search),
    "ping": (Ping, lambda obj, echo: {"echo": echo}),
}

#: The message types we serve, for docs and errors.
MESSAGE_TYPES: tuple[str, ...] = tuple(_TYPES)


def _describe(exc: BaseException, camel: bool = True) -> str:
    """``field: reason`` for the first few failing fields of a cattrs validation error."""
    if isinstance(exc, cattrs.BaseValidationError):
        parts = []
        for leaf in exc.exceptions[:3]:
            notes = getattr(leaf, "__notes__", [])
            names = [getattr(note, "name", None) for note in notes]
            field = next((n for n in names if isinstance(n, str)), None)
            reason = leaf.message if isinstance(leaf, FabstirError) else _describe(leaf, camel)
            shown = to_camel(field) if field and camel else field
            parts.append(f"{shown}: {reason}" if field and not reason.startswith(field) else reason)
        return "; ".join(parts) or "invalid field"
    return str(exc) or exc.__class__.__name__


def parse_json(data: str | bytes) -> Any:
    """orjson, which refuses NaN, Infinity and out-of-range numbers, as the protocol wants."""
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise FabstirError(ErrorCode.INVALID_JSON, "frame is not valid JSON", detail=str(exc)) from None


def decode_frame(data: str | bytes) -> Request | Rejected:
    """Decode one inbound frame.  Never raises for any input."""
    try:
        obj = parse_json(data)
    except FabstirError as error:
        return Rejected(error)
    except RecursionError:  # pragma: no cover - orjson limits depth itself
        return Rejected(FabstirError(ErrorCode.INVALID_JSON, "frame is nested too deeply"))
    if not isinstance(obj, dict):
        return Rejected(FabstirError(ErrorCode.INVALID_MESSAGE, "frame must be a JSON object"))
    return decode_object(obj)


def decode_object(raw: dict[str, Any]) -> Request | Rejected:
    """Decode an already parsed frame object."""
    obj: dict[str, Any] = {}
    for key, value in raw.items():
        snake = to_snake(key)
        if snake not in obj or key == snake:
            obj[snake] = value
    echo = Echo(
        id=_echo_value(obj.get("id")),
        request_id=_echo_value(obj.get("request_id")),
        session_id=obj["session_id"] if isinstance(obj.get("session_id"), str) else None,
    )
    kind = obj.get("type")
    if not isinstance(kind, str) or not kind:
        return Rejected(FabstirError(ErrorCode.INVALID_MESSAGE, "frame has no string 'type'"), echo)
    entry = _TYPES.get(kind)
    if entry is None:
        shown = kind if len(kind) <= 64 else kind[:64] + "…"
        return Rejected(
            FabstirError(ErrorCode.UNKNOWN_MESSAGE_TYPE, f"unknown message type {shown!r}"), echo
        )
    cls, build = entry
    try:
        fields = build(obj, echo)
        return _converter.structure(fields, cls)
    except FabstirError as error:
        return Rejected(error, echo)
    except (cattrs.BaseValidationError, TypeError, ValueError) as exc:
        message = f"invalid {kind}: {_describe(exc, camel=kind[:1].islower() and '_' not in kind)}"
        return Rejected(FabstirError(ErrorCode.INVALID_MESSAGE, message), echo)


def encode(reply: dict[str, Any]) -> str:
    """Reply dict to JSON text (numpy scalars and arrays allowed)."""
    return orjson.dumps(reply, option=orjson.OPT_SERIALIZE_NUMPY).decode()
