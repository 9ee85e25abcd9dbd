"""Connections per client address (``FABSTIR_MAX_CONNECTIONS_PER_IP``): pure bookkeeping.

:func:`client_address` says which address a connection counts for: the peer's,
or -- only when the peer is a trusted reverse proxy (``FABSTIR_TRUSTED_PROXIES``)
-- the client its ``X-Forwarded-For`` header names.  The header is read from the
right: each trusted proxy appends the address it received the request from, so
the first address from the right that is not a trusted proxy is the client;
anything left of it was written by the client and is not believed.

:class:`PeerCounter` holds the open connections per address and refuses one
beyond the cap.  The WebSocket server acquires before it accepts a handshake
and releases when the connection ends, whatever the way.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence

__all__ = ["PeerCounter", "client_address", "parse_networks"]

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address


def parse_networks(texts: Iterable[str] | None) -> tuple[Network, ...]:
    return tuple(ipaddress.ip_network(text, strict=False) for text in (texts or ()))


def _parse(text: str) -> Address | None:
    """One address as a peer or an X-Forwarded-For entry writes it (``[v6]:port`` and ``v4:port`` too)."""
    value = text.strip().strip('"')
    if value.startswith("["):
        value = value[1:].partition("]")[0]
    elif value.count(":") == 1:  # IPv4 with a port
        value = value.partition(":")[0]
    try:
        address = ipaddress.ip_address(value)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _trusted(address: Address, trusted: Sequence[Network]) -> bool:
    return any(address.version == net.version and address in net for net in trusted)


def client_address(
    peer: str | None, forwarded_for: Sequence[str] = (), trusted: Sequence[Network] = ()
) -> str:
    """The address a connection counts for (see the module docstring); ``"unknown"`` without a peer.

    ``forwarded_for`` holds the values of every ``X-Forwarded-For`` header, in order.
    """
    parsed = _parse(peer) if peer else None
    if parsed is None:
        return peer or "unknown"
    if not trusted or not _trusted(parsed, trusted):
        return str(parsed)
    entries = [entry for value in forwarded_for for entry in value.split(",")]
    current = parsed
    for entry in reversed(entries):
        hop = _parse(entry)
        if hop is None:
            break  # garbage: believe nothing further left
        current = hop
        if not _trusted(hop, trusted):
            break
    return str(current)


class PeerCounter:
    """Open connections per address, at most ``limit`` each (0 = no cap)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._open: dict[str, int] = {}

    def acquire(self, address: str) -> bool:
        """Count one more connection for ``address``, or return False if it already holds ``limit``."""
        count = self._open.get(address, 0)
        if self.limit and count >= self.limit:
            return False
        self._open[address] = count + 1
        return True

    def release(self, address: str) -> None:
        count = self._open.get(address, 0) - 1
        if count > 0:
            self._open[address] = count
        else:
            self._open.pop(address, None)

    def count(self, address: str) -> int:
        return self._open.get(address, 0)

    def __len__(self) -> int:
        """Addresses with at least one open connection."""
        return len(self._open)
