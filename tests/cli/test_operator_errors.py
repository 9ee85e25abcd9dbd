"""What an operator sees when something is wrong: one line naming the setting, status 2; help for people."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest

from fabstir_node.crypto.keys import HostKey
from fabstir_node.testing import spawn_daemon


def run_cli(
    *args: str, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "fabstir_node", *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=timeout)


def one_line(result: subprocess.CompletedProcess[str]) -> str:
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


@pytest.fixture
def held_port():
    """A loopback port another process (here: this one) already listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


@pytest.mark.parametrize("flags, variable", [
    (["--metrics-port", "0", "--port"], "FABSTIR_PORT"),
    (["--port", "0", "--metrics-port"], "FABSTIR_METRICS_PORT"),
])
def test_a_port_in_use_is_one_line_naming_port_and_variable(flags, variable, held_port, tmp_path):
    result = run_cli("serve", *flags, str(held_port), env={"FABSTIR_STORE_DIR": str(tmp_path / "store"),
                                                             "FABSTIR_CACHE_DIR": "off"})
    assert result.returncode == 2
    line = one_line(result)
    assert variable in line and str(held_port) in line and "already in use" in line
    assert "Traceback" not in result.stderr + result.stdout


@pytest.mark.parametrize("variable", ["FABSTIR_STORE_DIR", "FABSTIR_CACHE_DIR"])
def test_a_directory_that_cannot_be_written_is_one_line(variable, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    env = {"FABSTIR_STORE_DIR": str(tmp_path / "store"), "FABSTIR_CACHE_DIR": str(tmp_path / "cache"),
           "FABSTIR_METRICS_PORT": "0", "FABSTIR_PORT": "0"}
    env[variable] = str(blocker / "below")
    result = run_cli("serve", env=env)
    assert result.returncode == 2
    line = one_line(result)
    assert variable in line and str(blocker / "below") in line


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes to any directory")
def test_a_read_only_store_directory_is_one_line(tmp_path):
    store = tmp_path / "store"
    store.mkdir(mode=0o555)
    result = run_cli("serve", "--store-dir", str(store),
                     env={"FABSTIR_CACHE_DIR": "off", "FABSTIR_METRICS_PORT": "0"})
    assert result.returncode == 2
    assert "FABSTIR_STORE_DIR" in one_line(result) and "Permission denied" in result.stderr


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660])
def test_a_key_file_open_to_others_is_refused(mode, tmp_path):
    key = HostKey.generate().private_key.hex()
    key_file = tmp_path / "host-key"
    key_file.write_text(key)
    key_file.chmod(mode)
    result = run_cli("serve", "--store-dir", str(tmp_path / "store"),
                     env={"HOST_PRIVATE_KEY_FILE": str(key_file)})
    assert result.returncode == 2
    line = one_line(result)
    assert "HOST_PRIVATE_KEY_FILE" in line and f"{mode:04o}" in line and "chmod 600" in line
    assert key not in result.stderr + result.stdout


def test_random_query_follows_the_uploaded_dimension(tmp_path):
    rows = tmp_path / "rows.jsonl"
    rows.write_text("\n".join(json.dumps({"id": f"r{i}", "vector": [float(i == j) for j in range(12)]})
                              for i in range(12)))
    daemon = spawn_daemon(tmp_path / "daemon.log", env={"FABSTIR_STORE_DIR": str(tmp_path / "store")})
    try:
        result = run_cli("search", "--url", daemon.url, "--upload", str(rows), "--random", "-k", "3",
                         "--json")
        assert result.returncode == 0, result.stderr
        assert len(json.loads(result.stdout)["results"]) == 3
        # an explicit --dim still wins (and the node says why it cannot answer)
        result = run_cli("search", "--url", daemon.url, "--upload", str(rows), "--random", "--dim", "5")
        assert result.returncode == 1 and "DIMENSION_MISMATCH" in result.stderr
    finally:
        assert daemon.stop() == 0


def test_help_is_written_for_people():
    result = run_cli("--help")
    assert result.returncode == 0
    text = result.stdout
    assert "``" not in text and "the command line." not in text
    assert "vector searches over WebSocket" in text
    for command in ("serve", "publish", "search", "keygen", "portal", "config"):
        assert f"    {command} " in text
    assert "fabstir-node serve --sample" in text  # a first step to copy


@pytest.mark.parametrize("command, words", [
    ("serve", ["SIGTERM", "--port PORT", "[env FABSTIR_PORT, default 8080]", "examples:"]),
    ("search", ["Exit status 0", "--upload FILE", "examples:"]),
    ("publish", ["manifest path", "--owner ADDR", "examples:"]),
    ("keygen", ["HOST_PRIVATE_KEY_FILE", "--out FILE"]),
    ("portal", ["docs/s5.md"]),
    ("config", ["VARIABLE=value"]),
])
def test_every_command_explains_itself(command, words):
    result = run_cli(command, "--help")
    assert result.returncode == 0
    flat = " ".join(result.stdout.split())
    for word in words:
        assert word in flat, word
    description = result.stdout.split("\n\n")[1]
    assert max(len(line) for line in description.splitlines()) <= 100
