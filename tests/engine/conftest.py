"""Fixtures for the engine tests."""

from __future__ import annotations

from typing import Any

import pytest
from _engine_data import make_clustered, make_metadata, make_queries


@pytest.fixture(scope="session")
def clustered() -> dict[str, Any]:
    vectors, topic = make_clustered(3000, 48)
    return {
        "vectors": vectors,
        "ids": [f"doc-{i}" for i in range(len(vectors))],
        "metadata": make_metadata(len(vectors), topic),
        "queries": make_queries(vectors, 25),
    }
