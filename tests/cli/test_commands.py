"""The command line as an operator uses it: real processes, a real daemon."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import trio

from fabstir_node.cli import main
from fabstir_node.crypto.keys import HostKey
from fabstir_node.errors import ErrorCode, FabstirError
from fabstir_node.formats.blob import open_blob
from fabstir_node.testing import spawn_daemon

OWNER = "0x00000000000000000000000000000000000c11ce"


def run_cli(*args: str, env: dict | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fabstir_node", *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=timeout)


def test_version():
    from fabstir_node import __version__

    result = run_cli("--version")
    assert result.returncode == 0 and result.stdout.strip() == f"fabstir-node {__version__}"


@pytest.mark.parametrize("env, name", [
    ({"FABSTIR_PORT": "abc"}, "FABSTIR_PORT"),
    ({"FABSTIR_PORT": "70000"}, "FABSTIR_PORT"),
    ({"LOG_FORMAT": "xml"}, "LOG_FORMAT"),
    ({"ENHANCED_S5_URL": "ftp://x"}, "ENHANCED_S5_URL"),
    ({"HOST_PRIVATE_KEY": "1234"}, "HOST_PRIVATE_KEY"),
    ({"HOST_PRIVATE_KEY_FILE": "/nonexistent/key"}, "HOST_PRIVATE_KEY_FILE"),
])
def test_bad_settings_exit_2_naming_the_variable(env, name, tmp_path):
    result = run_cli("serve", env={**env, "FABSTIR_STORE_DIR": str(tmp_path)}, timeout=30)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and name in lines[0]
    assert "1234" not in result.stderr  # a bad key is never echoed


def test_flag_wins_over_environment(tmp_path):
    result = run_cli("config", "--port", "9001", env={"FABSTIR_PORT": "9000"})
    assert "FABSTIR_PORT=9001" in result.stdout


def test_keygen_writes_a_private_file_and_prints_public_parts(tmp_path):
    out = tmp_path / "host.key"
    result = run_cli("keygen", "--out", str(out))
    assert result.returncode == 0
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    key = HostKey.from_hex(out.read_text().strip())
    assert key.public_key_hex in result.stdout and key.address in result.stdout
    assert out.read_text().strip() not in result.stdout
    assert run_cli("keygen", "--out", str(out)).returncode == 1  # never overwrites by accident


def test_publish_jsonl_and_synthetic_into_local_store(tmp_path):
    store = tmp_path / "store"
    rows = tmp_path / "rows.jsonl"
    rng = np.random.default_rng(0)
    rows.write_text("\n".join(json.dumps({"id": f"r{i}", "vector": rng.normal(size=8).tolist(),
                                          "metadata": {"i": i}}) for i in range(25)))
    result = run_cli("publish", "--input", str(rows), "--owner", OWNER, "--name", "rows", "--chunk-size", "10",
                     "--store-dir", str(store), "--format", "json")
    assert result.returncode == 0, result.stderr
    manifest = result.stdout.strip()
    assert manifest == f"home/vector-databases/{OWNER}/rows/manifest.json"
    assert sorted(p.name for p in (store / manifest).parent.iterdir()) == [
        "chunk-0.json", "chunk-1.json", "chunk-2.json", "manifest.json"]
    result = run_cli("publish", "--synthetic", "300", "--dim", "16", "--seed", "1", "--owner", OWNER,
                     "--name", "syn", "--store-dir", str(store), "--encrypt-key", "11" * 32)
    assert result.returncode == 0, result.stderr
    stored = (store / f"home/vector-databases/{OWNER}/syn/chunk-0.json").read_bytes()
    with pytest.raises(FabstirError) as info:  # not readable without the key...
        open_blob(stored, None)
    assert info.value.code == ErrorCode.INVALID_SESSION_KEY
    assert open_blob(stored, bytes.fromhex("11" * 32)).encrypted  # ...and opens with it



async def test_publish_through_a_bridge_stand_in(tmp_path, nursery):
    from fabstir_node.storage.bridge_server import serve_bridge

    root = tmp_path / "bridge"
    root.mkdir()
    bridge = await nursery.start(lambda task_status: serve_bridge(root, task_status=task_status))
    result = await trio.to_thread.run_sync(lambda: run_cli(
        "publish", "--synthetic", "50", "--dim", "8", "--owner", OWNER, "--name", "b", "--s5-bridge", bridge.url))
    assert result.returncode == 0, result.stderr
    assert len(bridge.requests("PUT")) == 2
    assert (root / f"home/vector-databases/{OWNER}/b/manifest.json").exists()


def start_serve(tmp_path: Path, *extra: str, env: dict | None = None):
    return spawn_daemon(tmp_path / "daemon.log", args=extra, env={"FABSTIR_STORE_DIR": str(tmp_path / "store"),
                                                                   **(env or {})})


def test_serve_sample_then_search_cli(tmp_path):
    daemon = start_serve(tmp_path, "--sample")
    try:
        url = daemon.url
        sample = "home/vector-databases/0x0000000000000000000000000000000000000001/sample/manifest.json"
        result = run_cli("search", "--url", url, "--manifest-path", sample,
                         "--user-address", "0x0000000000000000000000000000000000000001", "--random", "-k", "3")
        assert result.returncode == 0, result.stderr
        assert "3 results of 5000 vectors" in result.stdout
        result = run_cli("search", "--url", url, "--manifest-path", sample, "--user-address", "0x" + "2" * 40,
                         "--random", "--json")
        assert result.returncode == 1 and "OWNER_MISMATCH" in result.stderr
        rows = tmp_path / "q.jsonl"
        rows.write_text("\n".join(json.dumps({"id": f"q{i}", "vector": [float(i == j) for j in range(4)]})
                                  for i in range(4)))
        result = run_cli("search", "--url", url, "--upload", str(rows), "--query", "[0, 0, 1, 0]", "-k", "1",
                         "--json")
        assert result.returncode == 0, result.stderr
        assert json.loads(result.stdout)["results"][0]["id"] == "q2"
    finally:
        assert daemon.stop() == 0


def test_serve_logs_host_public_key_from_key_file(tmp_path):
    key = HostKey.generate()
    key_file = tmp_path / "k"
    key_file.write_text(key.private_key.hex())
    key_file.chmod(0o600)
    daemon = start_serve(tmp_path, env={"HOST_PRIVATE_KEY_FILE": str(key_file)})
    started = daemon.started
    try:
        assert started["host_public_key"] == key.public_key_hex and started["host_address"] == key.address
        assert started["encryption"] is True
    finally:
        assert daemon.stop() == 0
    assert key.private_key.hex() not in (tmp_path / "daemon.log").read_text()


def test_search_cli_reports_a_down_node():
    result = run_cli("search", "--url", "ws://127.0.0.1:9/v1/ws", "--upload", "/dev/null", "--random")
    assert result.returncode == 2 and "cannot connect" in result.stderr


def test_config_markdown_is_the_table():
    from fabstir_node.config import markdown_table

    result = run_cli("config", "--markdown")
    assert result.stdout.strip() == markdown_table().strip()


def test_main_without_command_prints_help(capsys):
    assert main([]) == 2
