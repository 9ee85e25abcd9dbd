"""Shared fixtures for the E2EE crypto tests: the known-answer vectors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

_VECTORS = Path(__file__).resolve().parent.parent / "data" / "test-vectors.json"


@pytest.fixture(scope="session")
def vectors() -> dict[str, Any]:
    return json.loads(_VECTORS.read_text(encoding="utf-8"))


@pytest.fixture(scope="session")
def init_vector(vectors: dict[str, Any]) -> dict[str, Any]:
    return vectors["encrypted_session_init"]
