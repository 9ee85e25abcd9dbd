"""``fabstir-node publish``: write a vector database in the SDK layout.

Input is a JSON Lines file of ``{"id", "vector", "metadata"}`` records, or
synthetic clustered data (``--synthetic N --dim D --seed S``).  The files go
to the local store, or through the S5 bridge (``PUT /s5/fs/{path}``) when
``--s5-bridge`` / ``ENHANCED_S5_URL`` is set.  Prints the manifest path.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import trio

from ..config import ConfigError, Settings
from ..formats.paths import manifest_path
from ..formats.writer import build_database
from .progress import ProgressBar

SAMPLE_OWNER = "0x0000000000000000000000000000000000000001"


def add_parser(sub: Any) -> None:
    parser = sub.add_parser("publish", help="write a vector database in the SDK layout")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--input", type=Path, help="JSON Lines file of {id, vector, metadata} records")
    source.add_argument("--synthetic", type=int, metavar="N", help="publish N synthetic clustered vectors")
    parser.add_argument("--dim", type=int, default=384, help="dimensions of synthetic vectors (default 384)")
    parser.add_argument("--seed", type=int, default=0, help="seed of synthetic vectors (default 0)")
    parser.add_argument("--text-chars", type=int, default=0, help="synthetic metadata text length (default short)")
    parser.add_argument("--owner", required=True, help="the user address that owns the database")
    parser.add_argument("--name", required=True, help="the database name")
    parser.add_argument("--format", choices=["cbor", "json"], default="cbor", help="cbor (as the SDK writes) or json")
    parser.add_argument("--encrypt-key", metavar="HEX", help="AES-256-GCM key (64 hex chars), the original node's format")
    parser.add_argument("--chunk-size", type=int, default=10_000, help="vectors per chunk (default 10000)")
    parser.add_argument("--store-dir", dest="store_dir", help="local store directory (env FABSTIR_STORE_DIR)")
    parser.add_argument("--s5-bridge", dest="s5_bridge_url", help="write through this S5 bridge (env ENHANCED_S5_URL)")
    parser.set_defaults(handler=run)


def read_jsonl(path: Path) -> tuple[list[str], np.ndarray, list[dict[str, Any] | None]]:
    ids: list[str] = []
    rows: list[list[float]] = []
    metadata: list[dict[str, Any] | None] = []
    with path.open("rb") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                record = orjson.loads(line)
                ids.append(str(record["id"]))
                rows.append(record["vector"])
                metadata.append(record.get("metadata"))
            except (orjson.JSONDecodeError, KeyError, TypeError) as exc:
                raise SystemExit(f"fabstir-node publish: {path}:{number}: bad record ({exc})") from None
    if not ids:
        raise SystemExit(f"fabstir-node publish: {path} holds no records")
    try:
        vectors = np.asarray(rows, dtype=np.float32)
    except ValueError:
        raise SystemExit(f"fabstir-node publish: {path}: vectors must all have the same dimension") from None
    return ids, vectors, metadata


def parse_key(text: str | None) -> bytes | None:
    if text is None:
        return None
    value = text[2:] if text.lower().startswith("0x") else text
    try:
        key = bytes.fromhex(value)
    except ValueError:
        raise SystemExit("fabstir-node publish: --encrypt-key must be hex") from None
    if len(key) != 32:
        raise SystemExit("fabstir-node publish: --encrypt-key must be 32 bytes (64 hex chars)")
    return key


async def write_files(settings: Settings, files: dict[str, bytes], bar: ProgressBar | None = None) -> None:
    """Store every file, through the bridge if configured, else in the local store."""
    from ..server.daemon import build_storage

    client = None
    if settings.s5_bridge_url:
        from ..storage.bridge import make_http_client

        client = make_http_client(max_connections=8, timeout=settings.s5_download_timeout_seconds)
    storage = build_storage(settings, client)
    try:
        done = 0
        # chunks first, manifest last: a reader never sees a manifest whose chunks are missing
        for path in sorted(files, key=lambda p: p.endswith("manifest.json")):
            await storage.put(path, files[path])
            done += 1
            if bar is not None:
                bar.update(done, len(files), path.rsplit("/", 1)[-1])
    finally:
        await storage.aclose()
        if client is not None:
            await client.aclose()


def run(args: argparse.Namespace) -> int:
    flags = {"store_dir": args.store_dir, "s5_bridge_url": args.s5_bridge_url}
    settings = Settings.from_sources(dict(os.environ), flags)
    key = parse_key(args.encrypt_key)
    if args.synthetic is not None:
        from ..formats.synthetic import synthetic_records

        if args.synthetic < 1 or args.dim < 1:
            raise ConfigError("--synthetic and --dim must be positive")
        records = synthetic_records(args.synthetic, args.dim, args.seed, text_chars=args.text_chars or None)
    else:
        records = read_jsonl(args.input)
    files = build_database(
        records, owner=args.owner, name=args.name, format=args.format, key=key, chunk_size=args.chunk_size
    )
    bar = ProgressBar()
    trio.run(write_files, settings, files, bar)
    bar.close()
    where = settings.s5_bridge_url or str(settings.store_path)
    print(f"published {len(records[0])} vectors in {len(files) - 1} chunks to {where}", file=sys.stderr)
    print(manifest_path(args.owner, args.name))
    return 0
