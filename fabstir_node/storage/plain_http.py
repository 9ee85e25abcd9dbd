"""The sans-io parts of a plain ``http://`` GET of a stored object (no sockets here).

Shared by the daemon's bulk downloads (``bulk.py``, Trio) and a decode worker's own read of a chunk
(``direct.py``, blocking): which URLs qualify, the request bytes, and what a response head declares
about its body.  h11 is the parser (the one httpx uses).
"""

from __future__ import annotations

from urllib.parse import urlsplit

import h11

from .. import __version__

__all__ = ["MAX_HEAD", "USER_AGENT", "declared_size", "request_bytes", "target_of"]

#: The response head may be at most this long.
MAX_HEAD = 64 * 1024
#: What the node says it is in every request to storage.
USER_AGENT = f"fabstir-node/{__version__}"


def target_of(url: str) -> tuple[str, int, str] | None:
    """(host, port, request target) of a plain ``http://`` URL; None for anything else."""
    parts = urlsplit(url)
    if parts.scheme != "http" or not parts.hostname or parts.username or parts.password:
        return None
    try:
        port = parts.port or 80
    except ValueError:
        return None
    target = parts.path or "/"
    if parts.query:
        target += "?" + parts.query
    return parts.hostname, port, target


def _header(response: h11.Response, name: bytes) -> bytes | None:
    values = [value for key, value in response.headers if key == name]
    return values[0] if len(values) == 1 else (b"" if values else None)


def request_bytes(connection: h11.Connection, host: str, port: int, target: str) -> bytes:
    """The ``GET`` of ``target`` (whole, ``Connection: close``) as ``connection`` sends it."""
    name = f"[{host}]" if ":" in host else host  # urlsplit gives an IPv6 address without its brackets
    authority = name if port == 80 else f"{name}:{port}"
    request = h11.Request(method="GET", target=target, headers=[
        ("Host", authority), ("User-Agent", USER_AGENT), ("Accept", "*/*"),
        ("Accept-Encoding", "identity"), ("Connection", "close"),
    ])
    return connection.send(request) + connection.send(h11.EndOfMessage())


def declared_size(response: h11.Response) -> int | None:
    """A 200's body size from its head: the length, -1 for a body of unknown length (chunked), or None
    for one this path does not take (a content coding, a malformed length)."""
    length = _header(response, b"content-length")
    coding = _header(response, b"content-encoding")
    if coding is not None and coding.strip().lower() not in (b"", b"identity"):
        return None
    if length is None or _header(response, b"transfer-encoding") is not None:
        return -1
    return int(length) if length.isdigit() else None
