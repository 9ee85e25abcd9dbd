"""The embedded default's sample database, published on first run."""

from __future__ import annotations

import trio

from ..config import Settings
from ..formats.paths import manifest_path
from ..formats.synthetic import synthetic_records
from ..formats.writer import build_database
from ..logging import get_logger
from .publish import SAMPLE_OWNER, write_files

log = get_logger(__name__)

SAMPLE_NAME = "sample"
SAMPLE_VECTORS = 5_000
SAMPLE_DIMENSIONS = 384
SAMPLE_MANIFEST = manifest_path(SAMPLE_OWNER, SAMPLE_NAME)


def ensure_sample_database(settings: Settings) -> str:
    """Publish the sample database into the local store unless it is there; returns its manifest path."""
    if settings.s5_bridge_url:
        log.info("sample_skipped", reason="an S5 bridge is configured; the sample lives in the local store only")
        return SAMPLE_MANIFEST
    target = settings.store_path / SAMPLE_MANIFEST
    if target.exists():
        log.info("sample_present", manifest_path=SAMPLE_MANIFEST)
        return SAMPLE_MANIFEST
    records = synthetic_records(SAMPLE_VECTORS, SAMPLE_DIMENSIONS, seed=42)
    files = build_database(records, owner=SAMPLE_OWNER, name=SAMPLE_NAME, format="cbor", chunk_size=1_000)
    trio.run(write_files, settings, files)
    log.info("sample_published", manifest_path=SAMPLE_MANIFEST, vectors=SAMPLE_VECTORS, user_address=SAMPLE_OWNER)
    return SAMPLE_MANIFEST
