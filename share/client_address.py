"""The client's address behind a reverse proxy, for login rate limits and the audit trail.

Why: behind ``iain nginx-conf``'s front (or any proxy), every request reaches IAIN from the
proxy's address, so every login would be rate-limited and audited as 127.0.0.1: five failed
logins by anyone would lock an account out for everyone. ``X-Forwarded-For`` says who the
client was, but anybody can send that header, so it is believed only when the request comes
from a proxy the operator named (``SHARE_TRUSTED_PROXIES``), and only as far as the hops those
proxies appended: read from the right, the first address that is not a trusted proxy is the
client. With no trusted proxy (the default) the header is ignored.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

from share.errors import InvalidInputError

__all__ = ["Network", "client_address", "parse_networks"]

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_networks(entries: Sequence[str]) -> tuple[Network, ...]:
    """Addresses or CIDR blocks (``127.0.0.1``, ``10.0.0.0/8``, ``::1``) as networks."""
    networks = []
    for entry in entries:
        try:
            networks.append(ipaddress.ip_network(entry.strip(), strict=False))
        except ValueError:
            raise InvalidInputError(
                f"trusted proxy {entry.strip()!r} is not an IP address or CIDR block"
            ) from None
    return tuple(networks)


def _trusted(address: str, networks: Sequence[Network]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in networks)


def client_address(peer: str | None, forwarded_for: str | None, trusted: Sequence[Network]) -> str:
    """The address to rate-limit and audit: the TCP peer, or, when the peer is a trusted
    proxy, the rightmost ``X-Forwarded-For`` hop that is not one."""
    if peer is None:
        return "unknown"
    if not forwarded_for or not _trusted(peer, trusted):
        return peer
    last = peer
    for hop in reversed([h.strip() for h in forwarded_for.split(",")]):
        if not _trusted(hop, trusted):
            try:
                return str(ipaddress.ip_address(hop))
            except ValueError:  # garbage a client wrote: the last proxy that vouched for it
                return last
        last = hop
    return last  # every hop a trusted proxy
