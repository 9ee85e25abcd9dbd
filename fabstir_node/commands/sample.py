"""The embedded default's sample database, published on first run."""

from __future__ import annotations

import attrs
import trio

from ..config import Settings
from ..errors import StorageNotFound
from ..formats.paths import manifest_path
from ..formats.synthetic import synthetic_records
from ..formats.writer import build_database
from ..logging import get_logger
from ..server.daemon import build_s5_store
from ..server.portal import embedded_seed_phrase, serve_portal
from ..storage.transfer import make_http_client
from .publish import SAMPLE_OWNER, publish_s5, write_files

log = get_logger(__name__)

SAMPLE_NAME = "sample"
SAMPLE_VECTORS = 5_000
SAMPLE_DIMENSIONS = 384
SAMPLE_MANIFEST = manifest_path(SAMPLE_OWNER, SAMPLE_NAME)


def ensure_sample_database(settings: Settings) -> str:
    """Publish the sample database unless it is there; returns its manifest path.

    It goes where the daemon will read it: into the host's S5 tree through the
    embedded portal (``S5_EMBEDDED_PORTAL_DIR``) or the configured portals, else
    into the local store.  A bridge is left alone.
    """
    if settings.s5_embedded_portal_dir is not None or settings.s5_portal_url:
        trio.run(_ensure_in_s5, settings)
        return SAMPLE_MANIFEST
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


def _sample_files() -> dict[str, bytes]:
    records = synthetic_records(SAMPLE_VECTORS, SAMPLE_DIMENSIONS, seed=42)
    return build_database(records, owner=SAMPLE_OWNER, name=SAMPLE_NAME, format="cbor", chunk_size=1_000)


async def _ensure_in_s5(settings: Settings) -> None:
    """Publish the sample into the host's S5 tree (starting the embedded portal for the while, if any)."""
    async with trio.open_nursery() as nursery, make_http_client(max_connections=8) as client:
        if settings.s5_embedded_portal_dir is not None:
            root = settings.s5_embedded_portal_dir
            port = await nursery.start(serve_portal, root, "127.0.0.1", 0)
            settings = attrs.evolve(
                settings,
                s5_portal_url=(f"http://127.0.0.1:{port}",),
                s5_portal_token=None,
                s5_seed_phrase=settings.s5_seed_phrase or embedded_seed_phrase(root),
            )
        store = build_s5_store(settings, client)
        if store.host_root is None:
            log.info("sample_skipped", reason="no S5_SEED_PHRASE: the host has no S5 tree to publish into")
        else:
            try:
                await store.get(SAMPLE_MANIFEST)
                log.info("sample_present", manifest_path=SAMPLE_MANIFEST)
            except StorageNotFound:
                await publish_s5(settings, store.host_root, _sample_files())
                log.info("sample_published", manifest_path=SAMPLE_MANIFEST, vectors=SAMPLE_VECTORS,
                         user_address=SAMPLE_OWNER, storage="s5")
        nursery.cancel_scope.cancel()
