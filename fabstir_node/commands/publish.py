"""``fabstir-node publish``: write a vector database in the SDK layout.

Input is a JSON Lines file of ``{"id", "vector", "metadata"}`` records, or
synthetic clustered data (``--synthetic N --dim D --seed S``).  The files go
to the local store, or through the S5 bridge (``PUT /s5/fs/{path}``) when
``--s5-bridge`` / ``ENHANCED_S5_URL`` is set.  Prints the manifest path.

With ``--s5-portal URL`` (or ``S5_PORTAL_URL``) the database is written into
an S5 tree through that portal as s5.js would write it (DirV1 directories,
signed registry entries, the root encrypted; ``--encrypt-files`` adds s5.js's
per-file XChaCha20-Poly1305).  The tree is the identity of
``--seed-phrase-file`` / ``S5_SEED_PHRASE``, or with ``--wallet-identity`` the
one the Fabstir SDK derives from ``--owner`` and ``--chain-id``.  It then also
prints the database directory's public key (hex), which a user shares with a
host as ``vectorDatabase.directoryKey``.
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import trio

from ..config import ConfigError, Settings
from ..errors import FabstirError
from ..formats.paths import manifest_path
from ..formats.synthetic import synthetic_records
from ..formats.writer import build_database
from ..s5.identity import S5Identity
from ..server.daemon import build_storage
from ..storage.s5_portal import PortalClient, parse_portals
from ..storage.s5_publish import publish_files
from ..storage.transfer import RetryPolicy, make_http_client
from . import HelpFormatter, paragraph
from .progress import ProgressBar

SAMPLE_OWNER = "0x0000000000000000000000000000000000000001"


def add_parser(sub: Any) -> None:
    parser = sub.add_parser(
        "publish", help="write a vector database in the SDK layout",
        description=paragraph(
            "Write a vector database the way the Fabstir SDK stores it (a manifest and chunks of "
            "vectors) from a JSON Lines file or synthetic data, into the local store, through an "
            "S5 bridge, or into an S5 tree through a portal. Prints the manifest path that "
            "clients name in session_init."
        ),
        epilog="examples:\n"
               "  fabstir-node publish --synthetic 10000 --dim 384 --owner 0x… --name docs\n"
               "  fabstir-node publish --input rows.jsonl --owner 0x… --name docs \\\n"
               "      --s5-bridge http://localhost:5522",
        formatter_class=HelpFormatter,
    )
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--input", metavar="FILE", type=Path,
                        help="JSON Lines file of {id, vector, metadata} records")
    source.add_argument("--synthetic", type=int, metavar="N", help="publish N synthetic clustered vectors")
    edits = parser.add_argument_group("a new version of the stored database (every chunk and the manifest rewritten)")
    edits.add_argument("--add", type=Path, metavar="FILE.jsonl", help="append these records")
    edits.add_argument("--delete-ids", type=Path, metavar="FILE", help="delete these ids (one a line)")
    edits.add_argument("--update", type=Path, metavar="FILE.jsonl", help="replace these records' vectors and metadata")
    parser.add_argument("--dim", metavar="N", type=int, default=384,
                        help="dimensions of synthetic vectors (default 384)")
    parser.add_argument("--seed", metavar="N", type=int, default=0,
                        help="seed of synthetic vectors (default 0)")
    parser.add_argument("--text-chars", metavar="N", type=int, default=0,
                        help="synthetic metadata text length (default short)")
    parser.add_argument("--owner", metavar="ADDR", required=True,
                        help="the user address that owns the database")
    parser.add_argument("--name", metavar="NAME", required=True, help="the database name")
    parser.add_argument("--format", choices=["cbor", "json"], default=None,
                        help="cbor (as the SDK writes; the default) or json; a new version keeps the stored one")
    parser.add_argument("--encrypt-key", metavar="HEX",
                        help="AES-256-GCM key (64 hex chars), the original node's format")
    parser.add_argument("--chunk-size", metavar="N", type=int, default=10_000,
                        help="vectors per chunk (default 10000)")
    parser.add_argument("--store-dir", metavar="DIR", dest="store_dir",
                        help="local store directory (env FABSTIR_STORE_DIR)")
    parser.add_argument("--s5-bridge", metavar="URL", dest="s5_bridge_url",
                        help="write through this S5 bridge (env ENHANCED_S5_URL)")
    s5 = parser.add_argument_group("native S5 (docs/s5.md)")
    s5.add_argument("--s5-portal", dest="s5_portal_url", metavar="URL",
                    help="write the s5.js layout through this S5 portal (env S5_PORTAL_URL)")
    s5.add_argument("--seed-phrase-file", type=Path, metavar="FILE",
                    help="file holding the S5 seed phrase of the tree to write (else env S5_SEED_PHRASE)")
    s5.add_argument("--wallet-identity", action="store_true",
                    help="write into the tree the Fabstir SDK derives from --owner and --chain-id "
                         "(anyone who knows the address can read and write it)")
    s5.add_argument("--chain-id", metavar="ID", type=int, default=84532,
                    help="chain id for --wallet-identity (default 84532)")
    s5.add_argument("--encrypt-files", action="store_true",
                    help="encrypt each file with its own XChaCha20-Poly1305 key, kept in the directory (s5.js option)")
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
    client = None
    if settings.s5_bridge_url:
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


def s5_root(settings: Settings, *, seed_phrase_file: Path | None = None, wallet: tuple[str, int] | None = None) -> Any:
    """Root keys of the tree to write: the SDK wallet identity, a seed phrase file, or ``S5_SEED_PHRASE``."""
    if wallet is not None:
        return S5Identity.from_wallet(*wallet).root()
    phrase = settings.s5_seed_phrase
    if seed_phrase_file is not None:
        try:
            phrase = seed_phrase_file.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"--seed-phrase-file: cannot read {seed_phrase_file}: {type(exc).__name__}") from None
    if not phrase:
        raise ConfigError("--s5-portal needs an identity: --seed-phrase-file, S5_SEED_PHRASE or --wallet-identity")
    try:
        return S5Identity.from_phrase(phrase).root()
    except FabstirError as exc:
        raise ConfigError(f"not a valid S5 seed phrase ({exc.message})") from None


async def publish_s5(
    settings: Settings, root: Any, files: dict[str, bytes], *, encrypt_files: bool = False
) -> bytes:
    """Write one database's files through ``settings.s5_portal_url``; returns its directory key (32 bytes)."""
    directories = {path.rpartition("/")[0] for path in files}
    if len(directories) != 1:
        raise ValueError("a database lives in one directory")
    (directory,) = directories
    assert settings.s5_portal_url
    try:
        portals = parse_portals(settings.s5_portal_url, settings.s5_portal_token)
    except ValueError as exc:
        raise ConfigError(f"S5_PORTAL_URL / S5_PORTAL_TOKEN: {exc}") from None
    async with make_http_client(max_connections=8, timeout=settings.s5_download_timeout_seconds) as client:
        portal = PortalClient(
            portals, client=client, policy=RetryPolicy(settings.s5_max_retries, settings.s5_download_timeout_seconds)
        )
        keys = await publish_files(
            portal,
            root,
            directory,
            {path.rpartition("/")[2]: body for path, body in files.items()},
            encryption_key=(lambda name: os.urandom(32)) if encrypt_files else None,
        )
    return keys.public_key32


def run(args: argparse.Namespace) -> int:
    flags = {"store_dir": args.store_dir, "s5_bridge_url": args.s5_bridge_url, "s5_portal_url": args.s5_portal_url}
    settings = Settings.from_sources(dict(os.environ), flags)
    key = parse_key(args.encrypt_key)
    editing = args.add is not None or args.delete_ids is not None or args.update is not None
    if editing == (args.input is not None or args.synthetic is not None):
        raise ConfigError("publish needs --input or --synthetic, or edits (--add, --delete-ids, --update), not both")
    if editing:
        if settings.s5_portal_url:
            raise ConfigError("edits are written to the local store or through the bridge, not --s5-portal yet")
        from .new_version import run_edits

        files, count = run_edits(args, settings, key, read_jsonl)
        return _write_and_report(settings, files, args, f"a new version: {count}")
    if args.synthetic is not None:
        if args.synthetic < 1 or args.dim < 1:
            raise ConfigError("--synthetic and --dim must be positive")
        records: tuple[list[str], np.ndarray, Sequence[dict[str, Any] | None]]
        records = synthetic_records(args.synthetic, args.dim, args.seed, text_chars=args.text_chars or None)
    else:
        records = read_jsonl(args.input)
    files = build_database(
        records, owner=args.owner, name=args.name, format=args.format or "cbor", key=key, chunk_size=args.chunk_size
    )
    if settings.s5_portal_url:
        root = s5_root(
            settings,
            seed_phrase_file=args.seed_phrase_file,
            wallet=(args.owner, args.chain_id) if args.wallet_identity else None,
        )
        directory_key = trio.run(
            functools.partial(publish_s5, settings, root, files, encrypt_files=args.encrypt_files)
        )
        print(
            f"published {len(records[0])} vectors in {len(files) - 1} chunks to {', '.join(settings.s5_portal_url)}; "
            "share the directory key (second line) as vectorDatabase.directoryKey",
            file=sys.stderr,
        )
        print(manifest_path(args.owner, args.name))
        print(directory_key.hex())
        return 0
    return _write_and_report(settings, files, args, str(len(records[0])))


def _write_and_report(settings: Settings, files: dict[str, bytes], args: Any, what: str) -> int:
    """Write ``files`` to the local store or through the bridge; say what went where; print the path."""
    bar = ProgressBar()
    trio.run(write_files, settings, files, bar)
    bar.close()
    where = settings.s5_bridge_url or str(settings.store_path)
    print(f"published {what} vectors in {len(files) - 1} chunks to {where}", file=sys.stderr)
    print(manifest_path(args.owner, args.name))
    return 0
