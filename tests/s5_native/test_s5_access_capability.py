"""Issue 14 with native S5: under FABSTIR_ACCESS_POLICY=signed a shared directory key is a capability.

A real portal on loopback, a database published into the host's own tree (which holds every user's
data, so it needs the policy), a real daemon and real WebSocket sessions.
"""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import trio

from fabstir_node.cli import main
from fabstir_node.logging import configure

OWNER = "0x5A5a000000000000000000000000000000000002"


async def publish(capsys, portal_url: str, seed_file: Path) -> tuple[str, str]:
    argv = ["publish", "--synthetic", "150", "--dim", "8", "--seed", "5", "--owner", OWNER, "--name", "shared",
            "--chunk-size", "50", "--s5-portal", portal_url, "--seed-phrase-file", str(seed_file)]
    capsys.readouterr()
    assert await trio.to_thread.run_sync(main, argv) == 0
    manifest, key = capsys.readouterr().out.split()
    return manifest, key


async def load(running, manifest: str, directory_key: str | None) -> dict:
    database = {"manifest_path": manifest, "user_address": OWNER}
    if directory_key is not None:
        database["directoryKey"] = directory_key
    async with running.client() as client:
        ack = await client.request({"type": "session_init", "session_id": "s", "vector_database": database})
        assert ack["type"] == "session_init_ack"
        return await client.wait_loaded(30)


async def test_a_directory_key_the_manifest_resolves_through_is_accepted_in_place_of_a_signature(
    start_portal, start_node, identity, tmp_path, capsys
):
    portal = await start_portal()
    seed_file = tmp_path / "seed"
    seed_file.write_text(identity.phrase + "\n")
    manifest, key = await publish(capsys, portal.url, seed_file)
    stream = io.StringIO()
    configure("info", "json", stream)
    try:
        async with start_node(s5_portal_url=(portal.url,), s5_seed_phrase=identity.phrase, s5_max_retries=0,
                              access_policy="signed") as running:
            final = await load(running, manifest, key)
            assert final["event"] == "loading_complete" and final["vector_count"] == 150
            # the host's own tree holds it too, but a plaintext init without the key proves nothing
            before = len(portal.requests)
            final = await load(running, manifest, None)
            assert final["event"] == "loading_error" and final["error_code"] == "ACCESS_DENIED"
            assert len(portal.requests) == before  # refused before anything was read
            # a well-formed key that is not the directory's resolves nothing: no capability
            final = await load(running, manifest, os.urandom(32).hex())
            assert final["event"] == "loading_error" and final["error_code"] == "MANIFEST_NOT_FOUND"
    finally:
        configure("info", "console")
    audits = [json.loads(line) for line in stream.getvalue().splitlines()
              if line.startswith("{") and '"load_audit"' in line]
    assert [(a["decision"], a["outcome"]) for a in audits] == [
        ("allowed_capability", "success"), ("denied_unsigned", "ACCESS_DENIED"),
        ("allowed_capability", "MANIFEST_NOT_FOUND"),
    ]
    assert key not in stream.getvalue()  # the capability itself is never logged
