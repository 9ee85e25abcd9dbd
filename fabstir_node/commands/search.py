"""``fabstir-node search``: check a node the way a client uses it.

Connects, opens a session (naming a database with ``--manifest-path`` and
``--user-address``, or uploading a JSON Lines file with ``--upload``), shows
loading progress, runs one search and prints the results as a table (or JSON
with ``--json``).  Exit status 0 on results, 1 on an error reply.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import trio

from ..client import NodeClient
from . import HelpFormatter, paragraph
from .progress import ProgressBar
from .publish import read_jsonl

#: Dimensions of a ``--random`` query when nothing tells us the database's (the SDK's default embedding).
DEFAULT_DIM = 384


def add_parser(sub: Any) -> None:
    parser = sub.add_parser(
        "search", help="search a node as a client would",
        description=paragraph(
            "Check a running node the way a client uses it: connect, open a session on a stored "
            "database (--manifest-path and --user-address) or on vectors uploaded from a file "
            "(--upload), show the loading progress, run one search and print the hits. "
            "Exit status 0 with results, 1 when the node answers with an error, 2 when it "
            "cannot be reached."
        ),
        epilog="examples:\n"
               "  fabstir-node search --random -k 5 \\\n"
               "      --manifest-path home/vector-databases/0x…/sample/manifest.json --user-address 0x…\n"
               "  fabstir-node search --upload rows.jsonl --query '[0.1, 0.2, 0.3]' --json",
        formatter_class=HelpFormatter,
    )
    parser.add_argument("--url", default="ws://127.0.0.1:8080/v1/ws", help="node URL (default %(default)s)")
    parser.add_argument("--session-id", metavar="ID", default="cli", help="session id to use")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--manifest-path", metavar="PATH",
                        help="database to load, e.g. home/vector-databases/0x…/name/manifest.json")
    source.add_argument("--upload", metavar="FILE", type=Path,
                        help="JSON Lines file of {id, vector, metadata} to upload instead")
    parser.add_argument("--user-address", metavar="ADDR", default="", help="owner address of the database")
    query = parser.add_mutually_exclusive_group(required=True)
    query.add_argument("--query", metavar="JSON", help="query vector as a JSON array, or @FILE holding one")
    query.add_argument("--random", action="store_true",
                       help="a random unit query vector (with the uploaded vectors' dimensions, else --dim)")
    parser.add_argument("--dim", metavar="N", type=int, default=None,
                        help="dimensions of the --random vector (default: those of --upload, else 384)")
    parser.add_argument("-k", type=int, default=5, help="results to return (default 5)")
    parser.add_argument("--threshold", metavar="SCORE", type=float, default=None,
                        help="minimum cosine similarity")
    parser.add_argument("--filter", metavar="JSON", dest="metadata_filter",
                        help="metadata filter as JSON, e.g. '{\"tag\":\"a\"}'")
    parser.add_argument("--timeout", metavar="SECONDS", type=float, default=300.0,
                        help="seconds to wait for loading (default 300)")
    parser.add_argument("--json", action="store_true", help="print the raw reply as JSON")
    parser.set_defaults(handler=run)


def _query(args: argparse.Namespace, uploaded_dim: int | None = None) -> list[float]:
    if args.random:
        dim = args.dim if args.dim is not None else uploaded_dim or DEFAULT_DIM
        vector = np.random.default_rng().normal(size=dim)
        return (vector / np.linalg.norm(vector)).tolist()
    text = args.query
    if text.startswith("@"):
        text = Path(text[1:]).read_text()
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        raise SystemExit("fabstir-node search: --query must be a JSON array of numbers") from None
    if not isinstance(value, list):
        raise SystemExit("fabstir-node search: --query must be a JSON array of numbers")
    return value


def _table(reply: dict[str, Any]) -> str:
    lines = [f"{'#':>3}  {'score':>8}  {'id':<28}  metadata"]
    for rank, hit in enumerate(reply["results"], 1):
        meta = orjson.dumps(hit.get("metadata") or {}).decode()
        meta = meta if len(meta) <= 70 else meta[:67] + "..."
        lines.append(f"{rank:>3}  {hit['score']:>8.4f}  {str(hit['id'])[:28]:<28}  {meta}")
    lines.append(
        f"{len(reply['results'])} results of {reply['totalVectors']} vectors"
        f" in {reply['searchTimeMs']:.2f} ms"
    )
    return "\n".join(lines)


async def _run(args: argparse.Namespace) -> int:
    filter_spec = orjson.loads(args.metadata_filter) if args.metadata_filter else None
    uploaded_dim: int | None = None
    async with NodeClient.connect(args.url, timeout=args.timeout) as client:
        if args.upload is not None:
            ack = await client.session_init(args.session_id)
        else:
            ack = await client.session_init(
                args.session_id, manifest_path=args.manifest_path, user_address=args.user_address
            )
        if ack.get("type") == "error":
            return _fail(ack)
        if args.upload is not None:
            ids, vectors, metadata = read_jsonl(args.upload)
            uploaded_dim = int(vectors.shape[-1])
            for start in range(0, len(ids), 1000):
                batch = [
                    {"id": ids[i], "vector": vectors[i].tolist(), "metadata": metadata[i]}
                    for i in range(start, min(start + 1000, len(ids)))
                ]
                reply = await client.upload(batch)
                if reply.get("type") == "error":
                    return _fail(reply)
        else:
            bar = ProgressBar()
            with trio.fail_after(args.timeout):
                while True:
                    payloads = client.progress()
                    if payloads:
                        last = payloads[-1]
                        if last.get("event") == "chunk_downloaded":
                            bar.update(int(last["percent"]), 100, f"chunk {last['chunk_id']}")
                        if last.get("event") in ("loading_complete", "loading_error"):
                            break
                    message = await client.receive(timeout=args.timeout)
                    client.events.append(message)
            bar.close()
            final = client.progress()[-1]
            if final["event"] == "loading_error":
                return _fail({"code": final.get("error_code"), "message": final.get("error")})
            print(f"loaded {final['vector_count']} vectors in {final['duration_ms']:.0f} ms", file=sys.stderr)
        reply = await client.search(
            _query(args, uploaded_dim), args.k, threshold=args.threshold, metadata_filter=filter_spec
        )
        if reply.get("type") == "error":
            return _fail(reply)
        print(orjson.dumps(reply).decode() if args.json else _table(reply))
        return 0


def _fail(reply: dict[str, Any]) -> int:
    print(f"error {reply.get('code')}: {reply.get('message')}", file=sys.stderr)
    return 1


def run(args: argparse.Namespace) -> int:
    from trio_websocket import ConnectionClosed, HandshakeError

    try:
        return trio.run(_run, args)
    except (HandshakeError, OSError) as exc:
        print(f"fabstir-node search: cannot connect to {args.url} ({exc.__class__.__name__})", file=sys.stderr)
        return 2
    except ConnectionClosed as exc:
        print(f"fabstir-node search: the node closed the connection ({exc.reason})", file=sys.stderr)
        return 2
    except trio.TooSlowError:
        print("fabstir-node search: timed out", file=sys.stderr)
        return 2
