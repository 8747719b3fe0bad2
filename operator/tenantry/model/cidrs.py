"""CIDR set arithmetic (pure): what a list of ranges covers, minus holes, and private carve-outs.

Shared by the NetworkPolicy builders (which carve unapproved private space out of an allow-list
entry with `except`) and by admission (which checks that a tenant's own NetworkPolicy stays
inside what the allow-list already permits): both must agree on what "allowed" means, so the
arithmetic lives once, here.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from tenantry.model import tenant

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def network_key(net: IPNetwork) -> tuple[int, int, int]:
    """A sort key for networks of both families (they do not compare with each other)."""
    return (net.version, int(net.network_address), net.prefixlen)


def subtract(nets: Iterable[IPNetwork], hole: IPNetwork) -> list[IPNetwork]:
    """`nets` minus `hole`. Two CIDRs are either nested or disjoint, which keeps this simple."""
    result: list[IPNetwork] = []
    for net in nets:
        if net.version != hole.version or not net.overlaps(hole):
            result.append(net)
        elif not net.subnet_of(hole):  # type: ignore[arg-type]  # same family, checked above
            # The hole lies strictly inside: keep the rest of net as a minimal list of CIDRs.
            result.extend(net.address_exclude(hole))  # type: ignore[arg-type]
        # else: net lies inside the hole and disappears entirely.
    return result


def subtract_all(nets: Iterable[IPNetwork], holes: Iterable[IPNetwork]) -> list[IPNetwork]:
    """`nets` minus every one of `holes`."""
    result = list(nets)
    for hole in holes:
        result = subtract(result, hole)
    return result


def collapse(nets: Iterable[IPNetwork]) -> list[IPNetwork]:
    """The fewest CIDRs covering `nets` (either family), sorted."""
    by_family: dict[int, list[IPNetwork]] = {}
    for net in nets:
        by_family.setdefault(net.version, []).append(net)
    result: list[IPNetwork] = []
    for family in sorted(by_family):
        result.extend(ipaddress.collapse_addresses(by_family[family]))  # type: ignore[type-var]
    return sorted(result, key=network_key)


def private_excepts(cidr: str, approved: Iterable[str],
                    private: Iterable[str] = tenant.PRIVATE_RANGES) -> list[str]:
    """The parts of `cidr` that are private and not approved, as sorted, minimal CIDRs.

    These become the `except` list of the rule's ipBlock, so 0.0.0.0/0 never reaches 10/8 or the
    cloud metadata address unless a range is approved. Only ranges of the rule's IP family count.
    Approval may cover a private range partly (10.20.30.0/24 out of 10/8): only the approved part
    opens. When the result is `[cidr]` itself, the whole rule is private and unapproved and
    cannot be expressed as an ipBlock (an `except` must be strictly inside its `cidr`).
    """
    rule = ipaddress.ip_network(cidr)
    blocked: list[IPNetwork] = []
    for text in private:
        block = ipaddress.ip_network(text)
        if block.version != rule.version or not block.overlaps(rule):
            continue
        # Nested or disjoint: the overlap is the smaller of the two.
        blocked.append(block if block.prefixlen >= rule.prefixlen else rule)
    blocked = subtract_all(blocked, (ipaddress.ip_network(text) for text in approved))
    return [str(net) for net in collapse(blocked)]


def reachable(cidr: str, approved: Iterable[str]) -> list[IPNetwork]:
    """What an allow-list entry for `cidr` really opens: the range minus unapproved private
    space (the same carve-out the builders write as `except`)."""
    holes = [ipaddress.ip_network(text) for text in private_excepts(cidr, approved)]
    return subtract_all([ipaddress.ip_network(cidr)], holes)
