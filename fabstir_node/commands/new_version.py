"""``fabstir-node publish --add/--delete-ids/--update``: a new version of a stored database.

Reads the current version (manifest and every chunk) from the store the
settings select (local store or S5 bridge), applies the edits as the SDK does
(:mod:`fabstir_node.formats.edits`) and returns the files of the new version:
every chunk and the manifest rewritten, ``created`` kept, ``updated`` and
``lastAccessed`` advanced.  The caller stores them chunks first, manifest last.
"""

from __future__ import annotations

import time
from functools import partial
from pathlib import Path
from typing import Any

import attrs
import trio

from ..config import Settings
from ..errors import FabstirError, StorageError
from ..formats.blob import decode_object, open_blob
from ..formats.chunk import Chunk, decode_chunk
from ..formats.edits import EditError, Records, apply_edits, next_times, read_records
from ..formats.manifest import Manifest, parse_manifest
from ..formats.paths import chunk_path, manifest_path
from ..formats.writer import build_database

__all__ = ["Edits", "new_version_files", "read_database"]


@attrs.frozen
class Edits:
    delete: list[str] = attrs.Factory(list)
    update: Records | None = None
    add: Records | None = None


def read_delete_ids(path: Path) -> list[str]:
    """One id a line (blank lines ignored)."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise SystemExit(f"fabstir-node publish: cannot read {path} ({type(exc).__name__})") from None
    return [line.strip() for line in lines if line.strip()]


def _decode(raw: bytes, ref: Any, key: bytes | None, dimensions: int | None) -> Chunk:
    return decode_chunk(open_blob(raw, key), chunk_id=ref.chunk_id, expected_count=ref.vector_count,
                        dimensions=dimensions)


async def read_database(
    settings: Settings, owner: str, name: str, key: bytes | None
) -> tuple[Manifest, Records, str]:
    """The stored database's manifest, records and format (``cbor`` or ``json``)."""
    from ..server.daemon import build_storage

    client = None
    if settings.s5_bridge_url:
        from ..storage.bridge import make_http_client

        client = make_http_client(max_connections=8, timeout=settings.s5_download_timeout_seconds)
    storage = build_storage(settings, client)
    path = manifest_path(owner, name)
    try:
        opened = open_blob(await storage.get(path), key)
        manifest = parse_manifest(decode_object(opened))
        chunks = []
        for ref in manifest.chunks:
            raw = await storage.get(chunk_path(path, ref.chunk_id))
            chunks.append(await trio.to_thread.run_sync(partial(_decode, raw, ref, key, manifest.dimensions)))
    finally:
        await storage.aclose()
        if client is not None:
            await client.aclose()
    return manifest, read_records(manifest, chunks), opened.format


def new_version_files(
    manifest: Manifest, current: Records, edits: Edits, *, owner: str, name: str, format: str,
    key: bytes | None, chunk_size: int, now_ms: int | None = None,
) -> tuple[dict[str, bytes], int]:
    """The files of the next version and its vector count; raises :class:`EditError`."""
    records = apply_edits(current, delete=edits.delete, update=edits.update, add=edits.add)
    times = next_times(manifest, int(time.time() * 1000) if now_ms is None else now_ms)
    files = build_database(
        records, owner=owner, name=name, format=format, key=key, chunk_size=chunk_size,  # type: ignore[arg-type]
        now_ms=times.updated, created_ms=times.created, description=manifest.description,
    )
    return files, len(records[0])


def run_edits(args: Any, settings: Settings, key: bytes | None, read_jsonl: Any) -> tuple[dict[str, bytes], int]:
    """The files of the new version the command line asks for."""
    edits = Edits(
        delete=read_delete_ids(args.delete_ids) if args.delete_ids else [],
        update=read_jsonl(args.update) if args.update else None,
        add=read_jsonl(args.add) if args.add else None,
    )
    try:
        manifest, current, stored_format = trio.run(read_database, settings, args.owner, args.name, key)
    except (FabstirError, StorageError) as exc:
        raise SystemExit(f"fabstir-node publish: cannot read the current version ({exc})") from None
    try:
        return new_version_files(
            manifest, current, edits, owner=args.owner, name=args.name, format=args.format or stored_format,
            key=key, chunk_size=args.chunk_size,
        )
    except EditError as exc:
        raise SystemExit(f"fabstir-node publish: {exc}") from None
