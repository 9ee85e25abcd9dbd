"""Tools for testing and benchmarking a node from the outside (like ``trio.testing``).

:func:`spawn_daemon` starts ``fabstir-node serve`` as a real subprocess on a
free port, with JSON logs going to a file, and waits for its
``server_started`` event.  Used by the CLI tests and by ``scripts/fuzz``,
``scripts/soak`` and ``scripts/bench``.  :func:`write_files` puts a built database
into a directory that a local store or a bridge stand-in serves.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs


@attrs.define
class SpawnedDaemon:
    """A running ``fabstir-node serve`` process and what it announced."""

    process: subprocess.Popen = attrs.field(repr=False)
    started: dict[str, Any]
    log_path: Path

    @property
    def port(self) -> int:
        return int(self.started["port"])

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/v1/ws"

    @property
    def pid(self) -> int:
        return self.process.pid

    def stop(self, timeout: float = 15.0) -> int | str:
        """SIGTERM, then wait; returns the exit status (or ``"killed"`` after ``timeout``)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            return "killed"

    def log_events(self) -> list[dict[str, Any]]:
        events = []
        for line in self.log_path.read_text().splitlines():
            try:
                events.append(json.loads(line))
            except json.JSONDecodeError:
                continue
        return events


def write_files(root: Path | str, files: Mapping[str, bytes]) -> None:
    """Write ``{relative path: bytes}`` (e.g. ``build_database`` output) under a store or bridge directory."""
    for rel, body in files.items():
        target = Path(root) / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(body)


def spawn_daemon(
    log_path: Path | str, *, args: Sequence[str] = (), env: Mapping[str, str] | None = None, timeout: float = 60.0
) -> SpawnedDaemon:
    """Start ``python -m fabstir_node serve --port 0 ARGS`` and wait until it listens.

    Logs are JSON lines in ``log_path`` (stdout and stderr).  The metrics
    server is off unless ``env`` turns it on.  Raises ``RuntimeError`` with
    the log's tail if the daemon exits or does not start within ``timeout``.
    """
    log_path = Path(log_path)
    full_env = {**os.environ, "LOG_FORMAT": "json", "FABSTIR_METRICS_PORT": "0", **(env or {})}
    with open(log_path, "w") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "fabstir_node", "serve", "--port", "0", *args],
            env=full_env, stdout=log, stderr=subprocess.STDOUT,
        )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None:
        daemon = SpawnedDaemon(process=process, started={}, log_path=log_path)
        for event in daemon.log_events():
            if event.get("event") == "server_started":
                daemon.started = event
                return daemon
        time.sleep(0.05)
    if process.poll() is None:
        process.kill()
        process.wait()
    raise RuntimeError(f"fabstir-node serve did not start:\n{log_path.read_text()[-3000:]}")
