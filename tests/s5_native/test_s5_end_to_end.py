"""Issue 8 done-when: `publish` writes the s5.js layout into a local portal, a session loads it natively.

For each way of naming whose tree it is -- (a) the host's seed identity,
(b) a directory key the user shares, (c) the SDK's wallet identity (only with
S5_ALLOW_WALLET_IDENTITY) -- through a real portal on loopback, a real daemon
and a real WebSocket session, then a search checked against brute force.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import trio
from _s5_native_helpers import file_hash

from fabstir_node.cli import main
from fabstir_node.formats.synthetic import synthetic_records
from fabstir_node.s5.identity import S5Identity
from fabstir_node.server.portal import embedded_seed_phrase, serve_portal

OWNER = "0x5A5a000000000000000000000000000000000001"
N, DIM, SEED = 300, 16, 7


async def publish_cli(capsys, *args: str) -> tuple[str, str]:
    """Run `fabstir-node publish ... --s5-portal` (in a thread: it runs its own Trio); (manifest path, key)."""
    argv = ["publish", "--synthetic", str(N), "--dim", str(DIM), "--seed", str(SEED), "--owner", OWNER,
            "--name", "docs", "--chunk-size", "100", *args]
    capsys.readouterr()
    assert await trio.to_thread.run_sync(main, argv) == 0
    lines = capsys.readouterr().out.split()
    assert len(lines) == 2, lines
    return lines[0], lines[1]


def seed_file(tmp_path: Path, identity: S5Identity) -> str:
    path = tmp_path / "seed-phrase"
    path.write_text(identity.phrase + "\n")
    return str(path)


async def load_and_search(running, manifest: str, *, directory_key: str | None = None, chain_id: int = 84532):
    database = {"manifest_path": manifest, "user_address": OWNER.lower()}
    if directory_key is not None:
        database["directoryKey"] = directory_key
    async with running.client() as client:
        ack = await client.request({"type": "session_init", "session_id": "s", "job_id": 1, "chain_id": chain_id,
                                    "vector_database": database})
        assert ack["type"] == "session_init_ack", ack
        final = await client.wait_loaded(30)
        if final["event"] != "loading_complete":
            return final, None
        ids, vectors, _ = synthetic_records(N, DIM, SEED)
        query = vectors[11] / np.linalg.norm(vectors[11])
        reply = await client.search(query.tolist(), 5)
        scores = vectors.astype(np.float64) @ query.astype(np.float64)
        expected = [ids[i] for i in sorted(range(N), key=lambda i: (-scores[i], i))[:5]]
        return final, ([r["id"] for r in reply["results"]], expected)


def settings_for(portal_url: str, **extra):
    return {"s5_portal_url": (portal_url,), "s5_max_retries": 1, "s5_download_timeout_seconds": 5.0,
            "vector_dtype": "f32", **extra}


async def test_a_the_host_seed_identity(start_portal, start_node, identity, tmp_path, capsys):
    portal = await start_portal()
    manifest, key = await publish_cli(capsys, "--s5-portal", portal.url, "--seed-phrase-file",
                                      seed_file(tmp_path, identity))
    assert manifest == f"home/vector-databases/{OWNER}/docs/manifest.json"
    assert key == identity.directory(f"home/vector-databases/{OWNER}/docs").public_key32.hex()
    async with start_node(**settings_for(portal.url, s5_seed_phrase=identity.phrase)) as running:
        final, (got, expected) = await load_and_search(running, manifest)
        assert final["event"] == "loading_complete" and final["vector_count"] == N
        assert got == expected
        assert running.node.storage.stats.bytes > 0


async def test_b_a_shared_directory_key(start_portal, start_node, identity, tmp_path, capsys):
    portal = await start_portal()
    manifest, key = await publish_cli(capsys, "--s5-portal", portal.url, "--seed-phrase-file",
                                      seed_file(tmp_path, identity), "--encrypt-files")
    async with start_node(**settings_for(portal.url)) as running:  # the host has no identity at all
        final, (got, expected) = await load_and_search(running, manifest, directory_key=key)
        assert final["event"] == "loading_complete" and got == expected
        final, _ = await load_and_search(running, manifest)  # without the key it cannot see the tree
        assert final["event"] == "loading_error" and final["error_code"] == "MANIFEST_NOT_FOUND"
        final, _ = await load_and_search(running, manifest, directory_key="not-a-key")
        assert final["event"] == "loading_error" and final["error_code"] == "INVALID_SESSION_KEY"


async def test_c_the_wallet_identity_only_when_allowed(start_portal, start_node, identity, capsys):
    portal = await start_portal()
    manifest, key = await publish_cli(capsys, "--s5-portal", portal.url, "--wallet-identity", "--chain-id", "84532")
    wallet = S5Identity.from_wallet(OWNER, 84532)
    assert key == wallet.directory(f"home/vector-databases/{OWNER}/docs").public_key32.hex()
    async with start_node(**settings_for(portal.url, s5_allow_wallet_identity=True)) as running:
        final, (got, expected) = await load_and_search(running, manifest)
        assert final["event"] == "loading_complete" and got == expected
        final, _ = await load_and_search(running, manifest, chain_id=1)  # another chain: another identity
        assert final["event"] == "loading_error" and final["error_code"] == "MANIFEST_NOT_FOUND"
    # a host with its own identity but the setting off does not look in the wallet tree
    async with start_node(**settings_for(portal.url, s5_seed_phrase=identity.phrase)) as running:
        final, _ = await load_and_search(running, manifest)
        assert final["event"] == "loading_error" and final["error_code"] == "MANIFEST_NOT_FOUND"


async def test_a_tampered_chunk_fails_the_load(start_portal, start_node, make_client, identity, tmp_path, capsys):
    portal = await start_portal()
    manifest, _ = await publish_cli(capsys, "--s5-portal", portal.url, "--seed-phrase-file",
                                    seed_file(tmp_path, identity))
    chunk = manifest.replace("manifest.json", "chunk-1.json")
    blob = portal.blob_file(await file_hash(make_client(portal), identity.root(), chunk))
    damaged = bytearray(blob.read_bytes())
    damaged[len(damaged) // 2] ^= 1
    blob.write_bytes(bytes(damaged))
    async with start_node(**settings_for(portal.url, s5_seed_phrase=identity.phrase)) as running:
        final, _ = await load_and_search(running, manifest)
        assert final["event"] == "loading_error" and final["error_code"] == "S5_HASH_MISMATCH"


async def test_the_embedded_portal_serves_the_daemon(start_node, tmp_path, capsys):
    root = tmp_path / "embedded"
    phrase = embedded_seed_phrase(root)
    assert oct((root / "host-seed-phrase").stat().st_mode & 0o777) == "0o600"
    assert embedded_seed_phrase(root) == phrase
    with trio.CancelScope() as scope:  # a portal over the same directory, only while publishing
        async with trio.open_nursery() as inner:
            port = await inner.start(serve_portal, root, "127.0.0.1", 0)
            manifest, _ = await publish_cli(capsys, "--s5-portal", f"http://127.0.0.1:{port}",
                                            "--seed-phrase-file", str(root / "host-seed-phrase"))
            scope.cancel()
    async with start_node(s5_embedded_portal_dir=root, vector_dtype="f32") as running:
        assert running.node.storage.name == "s5"
        final, (got, expected) = await load_and_search(running, manifest)
        assert final["event"] == "loading_complete" and got == expected
