"""Loading tests/data/s5-vectors.json (produced by running s5.js itself) for parametrisation."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

VECTORS_PATH = Path(__file__).resolve().parent.parent / "data" / "s5-vectors.json"
DOCUMENT: dict[str, Any] = json.loads(VECTORS_PATH.read_text(encoding="utf-8"))
VECTORS: dict[str, list[dict[str, Any]]] = DOCUMENT["vectors"]


def cases(category: str) -> list[Any]:
    """``pytest.param`` per vector of ``category``, with a readable id (new vectors are picked up)."""
    return [
        pytest.param(vector, id=f"{category}[{i}]:{vector.get('name') or vector.get('description', '')[:40]}")
        for i, vector in enumerate(VECTORS.get(category, []))
    ]


def pattern(length: int) -> bytes:
    """The vectors' "byte[i] = i mod 251" input."""
    return bytes(i % 251 for i in range(length))


def h(text: str) -> bytes:
    return bytes.fromhex(text)
