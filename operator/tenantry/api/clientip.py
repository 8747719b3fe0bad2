"""The client's address: the TCP peer, or X-Forwarded-For only behind a configured proxy.

X-Forwarded-For is whatever the client wrote, plus what each proxy appended. We trust it only
when the peer is one of the configured proxies, and then walk it from the right, skipping
addresses of trusted proxies: the first untrusted one is the client. Anything unparsable stops
the walk at the last address known good. With no trusted proxies, the header is ignored, so a
client cannot pick its own rate-limit bucket or throttle key.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_networks(values: Sequence[str]) -> tuple[Network, ...]:
    networks = []
    for value in values:
        try:
            networks.append(ipaddress.ip_network(value, strict=False))
        except ValueError:
            raise ValueError(f"trusted proxy {value!r}: not an IP address or CIDR") from None
    return tuple(networks)


def _plain_address(text: str) -> bool:
    """An IPv4 or IPv6 address without a zone (`fe80::1%eth0` is no client address)."""
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return False
    return not (isinstance(address, ipaddress.IPv6Address) and address.scope_id)


def _trusted(address: str, proxies: Sequence[Network]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in net for net in proxies)


def client_ip(peer: str, forwarded_for: str | None, proxies: Sequence[Network]) -> str:
    """The address to rate-limit and log for a request from `peer` (see module doc)."""
    if not forwarded_for or not _trusted(peer, proxies):
        return peer
    client = peer
    for hop in reversed([part.strip() for part in forwarded_for.split(",")]):
        if not _plain_address(hop):
            return client
        client = hop
        if not _trusted(hop, proxies):
            return hop
    return client
