"""Both spellings of every key (protocol §1).

The real protocol mixes snake_case (session messages) and camelCase (RAG
messages), and the SDK and the original node disagree on inner keys.  Input
accepts either spelling; replies use the spelling the protocol documents.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

_CAMEL_BOUNDARY = re.compile(r"(?<!^)(?=[A-Z])")
_MISSING = object()


def to_snake(key: str) -> str:
    """``manifestPath`` -> ``manifest_path``; snake keys pass through."""
    return _CAMEL_BOUNDARY.sub("_", key).lower()


def to_camel(key: str) -> str:
    """``manifest_path`` -> ``manifestPath``; camel keys pass through."""
    head, *rest = key.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


def lookup(obj: Mapping[str, Any], snake: str, default: Any = None) -> Any:
    """Value of ``snake`` or its camelCase twin in ``obj`` (snake wins if both)."""
    value = obj.get(snake, _MISSING)
    if value is _MISSING:
        value = obj.get(to_camel(snake), _MISSING)
    return default if value is _MISSING else value


def has(obj: Mapping[str, Any], snake: str) -> bool:
    return snake in obj or to_camel(snake) in obj
