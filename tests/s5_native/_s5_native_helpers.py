"""Helpers shared by the native S5 tests (plain functions; fixtures live in conftest.py)."""

from __future__ import annotations

import socket
from typing import Any

from fabstir_node.s5.resolve import NeedEntry, Resolver
from fabstir_node.storage.s5_portal import PortalClient


def closed_port_url() -> str:
    """A loopback URL nothing listens on (the port was bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


async def file_hash(client: PortalClient, start: Any, path: str) -> bytes:
    """The stored-blob hash of the file at ``path`` (resolved through ``client``)."""
    resolver = Resolver(start, path)
    while (request := resolver.request) is not None:
        if isinstance(request, NeedEntry):
            resolver.feed(await client.get_entry(request.public_key))
        else:
            resolver.feed(await client.get_blob(request.blob_id))
    return resolver.result.ref.hash
