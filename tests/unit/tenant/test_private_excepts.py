"""The `except` carve-out: a public egress rule never reaches private space unless approved."""

from __future__ import annotations

import ipaddress

import pytest

from tenantry.controller.tenant import network
from tenantry.model import cidrs
from tenantry.model.tenant import PRIVATE_RANGES

# The model's ranges as `except` lists them: sorted, adjacent ranges merged (224/4 and 240/4
# into 224/3; fe80::/10 and fec0::/10 into fe80::/9), ::1 inside ::/96.
IPV4_PRIVATE = ["0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16",
                "172.16.0.0/12", "192.0.0.0/24", "192.168.0.0/16", "198.18.0.0/15",
                "224.0.0.0/3"]
IPV6_PRIVATE = ["::/96", "::ffff:0:0/96", "64:ff9b::/96", "64:ff9b:1::/48", "100::/64",
                "2001::/23", "2002::/16", "fc00::/7", "fe80::/9", "ff00::/8"]


def test_everything_ipv4_excepts_every_ipv4_private_range_sorted() -> None:
    assert network.private_excepts("0.0.0.0/0", []) == IPV4_PRIVATE


def test_everything_ipv6_excepts_every_ipv6_private_range_sorted() -> None:
    assert network.private_excepts("::/0", []) == IPV6_PRIVATE


def test_the_model_ranges_are_the_ones_carved() -> None:
    merged = cidrs.collapse(ipaddress.ip_network(r) for r in PRIVATE_RANGES)
    assert [str(n) for n in merged] == IPV4_PRIVATE + IPV6_PRIVATE


@pytest.mark.parametrize("address", [
    "0.0.0.0",  # noqa: S104 - an address probed, not bound
    "169.254.169.254", "192.0.0.8", "198.18.0.1", "240.0.0.1", "255.255.255.255",
    "224.0.0.1", "::", "::1", "::10.0.0.1", "::ffff:10.0.0.1", "::ffff:169.254.169.254",
    "64:ff9b::a00:1", "64:ff9b:1::1", "2002:a00:1::1", "2001:0:a00:1::1", "fec0::1", "ff02::1",
    "100::1",
])
def test_special_purpose_ranges_that_reach_private_space_are_carved(address: str) -> None:
    """IANA special-purpose addresses that are private, the host, or embed an IPv4 address a
    gateway may translate (IPv4-mapped, NAT64, 6to4, Teredo) are never reached by default."""
    everything = "0.0.0.0/0" if "." in address and ":" not in address else "::/0"
    carved = [ipaddress.ip_network(e) for e in network.private_excepts(everything, [])]
    assert any(ipaddress.ip_address(address) in net for net in carved), address


@pytest.mark.parametrize("cidr", ["203.0.113.0/24", "8.8.8.8/32", "2001:db8::/32", "2600::/7",
                                  "172.32.0.0/11", "100.128.0.0/9", "11.0.0.0/8"])
def test_public_ranges_need_no_excepts(cidr: str) -> None:
    assert network.private_excepts(cidr, []) == []
    assert network.ip_block(cidr, []) == {"cidr": cidr}


@pytest.mark.parametrize(("cidr", "excepts"), [
    ("0.0.0.0/1", ["0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8"]),
    ("128.0.0.0/1", ["169.254.0.0/16", "172.16.0.0/12", "192.0.0.0/24", "192.168.0.0/16",
                     "198.18.0.0/15", "224.0.0.0/3"]),
    ("169.0.0.0/8", ["169.254.0.0/16"]),
    ("172.0.0.0/8", ["172.16.0.0/12"]),
    ("fc00::/6", ["fc00::/7", "fe80::/9", "ff00::/8"]),
    ("fe00::/7", ["fe80::/9", "ff00::/8"]),
    ("::/8", ["::/96", "::ffff:0:0/96", "64:ff9b::/96", "64:ff9b:1::/48"]),
    ("2000::/3", ["2001::/23", "2002::/16"]),
])
def test_only_the_private_ranges_inside_the_rule_are_carved(cidr: str,
                                                            excepts: list[str]) -> None:
    assert network.private_excepts(cidr, []) == excepts


def test_families_never_mix() -> None:
    assert all(":" not in e for e in network.private_excepts("0.0.0.0/0", IPV6_PRIVATE))
    assert all("." not in e for e in network.private_excepts("::/0", IPV4_PRIVATE))
    # An approval of the other family approves nothing here.
    assert network.private_excepts("0.0.0.0/0", ["::/0"]) == IPV4_PRIVATE


def test_an_approved_private_range_is_not_carved() -> None:
    excepts = network.private_excepts("0.0.0.0/0", ["10.0.0.0/8", "fc00::/7"])
    assert "10.0.0.0/8" not in excepts
    assert excepts == [e for e in IPV4_PRIVATE if e != "10.0.0.0/8"]


def test_a_partly_approved_range_opens_only_the_approved_part() -> None:
    excepts = network.private_excepts("0.0.0.0/0", ["10.20.30.0/24"])
    carved = [ipaddress.IPv4Network(e) for e in excepts if e.startswith("10.")]
    approved = ipaddress.IPv4Network("10.20.30.0/24")
    # 10/8 minus a /24: one CIDR per bit of difference, none touching the approved range.
    assert len(carved) == 16
    assert not any(c.overlaps(approved) for c in carved)
    assert sum(c.num_addresses for c in carved) + approved.num_addresses == 2 ** 24
    assert all(c.subnet_of(ipaddress.IPv4Network("10.0.0.0/8")) for c in carved)


def test_approving_the_metadata_address_alone_leaves_the_rest_of_link_local_blocked() -> None:
    excepts = network.private_excepts("169.254.0.0/15", ["169.254.169.254/32"])
    nets = [ipaddress.IPv4Network(e) for e in excepts]
    metadata = ipaddress.IPv4Address("169.254.169.254")
    assert not any(metadata in n for n in nets)
    assert any(ipaddress.IPv4Address("169.254.169.253") in n for n in nets)
    assert any(ipaddress.IPv4Address("169.254.0.1") in n for n in nets)


@pytest.mark.parametrize(("cidr", "approved"), [
    ("10.20.30.0/24", ["10.20.30.0/24"]),   # exactly the approved range
    ("10.20.30.0/24", ["10.0.0.0/8"]),      # inside a larger approval
    ("10.20.30.128/25", ["10.20.30.0/24"]),
    ("169.254.169.254/32", ["169.254.169.254/32"]),
    ("fd12:3456::/32", ["fc00::/7"]),
    ("::1/128", ["::1/128"]),
])
def test_a_rule_inside_an_approved_private_range_needs_no_excepts(
        cidr: str, approved: list[str]) -> None:
    assert network.private_excepts(cidr, approved) == []
    assert network.ip_block(cidr, approved) == {"cidr": cidr}


@pytest.mark.parametrize(("cidr", "approved"), [
    ("10.0.0.0/8", []),
    ("10.20.30.0/24", []),
    ("10.20.30.0/24", ["10.20.31.0/24"]),     # a neighbour's approval does not help
    ("169.254.169.254/32", []),
    ("fd00::/8", []),
    ("fe80::1/128", ["fc00::/7"]),
    ("127.0.0.1/32", ["::1/128"]),
])
def test_a_rule_wholly_in_unapproved_private_space_is_refused(
        cidr: str, approved: list[str]) -> None:
    assert network.private_excepts(cidr, approved) == [cidr]
    assert network.ip_block(cidr, approved) is None


def test_a_private_rule_partly_approved_is_narrowed_not_refused() -> None:
    # The CRD's CEL rule refuses such a spec; should one get through, only the approved part
    # opens: the unapproved rest is carved out of the rule.
    assert network.ip_block("192.168.1.0/24", ["192.168.1.0/25"]) == {
        "cidr": "192.168.1.0/24", "except": ["192.168.1.128/25"]}
    block = network.ip_block("10.0.0.0/8", ["10.20.30.0/24"])
    assert block is not None
    rule = ipaddress.IPv4Network("10.0.0.0/8")
    carved = [ipaddress.IPv4Network(e) for e in block["except"]]
    assert len(carved) == 16 and all(c != rule and c.subnet_of(rule) for c in carved)


def test_nested_private_ranges_collapse_to_the_outer_one() -> None:
    private = ["10.0.0.0/8", "10.1.0.0/16", "10.1.2.0/24"]
    assert network.private_excepts("0.0.0.0/0", [], private) == ["10.0.0.0/8"]
    assert network.private_excepts("10.1.0.0/16", [], private) == ["10.1.0.0/16"]


def test_adjacent_leftovers_merge_into_the_fewest_cidrs() -> None:
    # Two adjacent private /9s form one /8; approving nothing must give the /8 back.
    private = ["10.0.0.0/9", "10.128.0.0/9"]
    assert network.private_excepts("0.0.0.0/0", [], private) == ["10.0.0.0/8"]


def test_several_approvals_combine() -> None:
    excepts = network.private_excepts(
        "0.0.0.0/0", ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10",
                      "169.254.0.0/16", "127.0.0.0/8"])
    assert excepts == ["0.0.0.0/8", "192.0.0.0/24", "198.18.0.0/15", "224.0.0.0/3"]
    assert network.private_excepts("::/0", ["fc00::/8"]) == [
        e if e != "fc00::/7" else "fd00::/8" for e in IPV6_PRIVATE]


def test_the_order_of_approvals_does_not_matter() -> None:
    approved = ["10.20.30.0/24", "169.254.169.254/32", "fd00::/8", "172.16.5.0/24"]
    first = network.private_excepts("0.0.0.0/0", approved)
    assert first == network.private_excepts("0.0.0.0/0", list(reversed(approved)))
    assert first == network.private_excepts("0.0.0.0/0", sorted(approved))


PROBES = ["10.0.0.1", "10.20.30.5", "10.20.31.5", "100.64.0.1", "100.127.255.254",
          "100.128.0.1", "127.0.0.1", "169.254.169.254", "169.254.0.1", "172.15.255.255",
          "172.16.0.1", "172.31.255.255", "172.32.0.1", "192.168.1.1", "192.169.0.1", "8.8.8.8",
          "203.0.113.7", "::1", "fc00::1", "fdff::1", "fe80::1", "febf::1", "fec0::1",
          "2001:db8::1", "::2"]


@pytest.mark.parametrize(("cidr", "approved"), [
    ("0.0.0.0/0", []),
    ("0.0.0.0/0", ["10.20.30.0/24", "169.254.169.254/32"]),
    ("0.0.0.0/0", ["172.16.0.0/12"]),
    ("128.0.0.0/1", ["192.168.0.0/17"]),
    ("::/0", []),
    ("::/0", ["fd00::/8", "::1/128"]),
    ("10.0.0.0/8", ["10.20.30.0/24"]),
    ("160.0.0.0/3", ["169.254.169.0/24"]),
])
def test_reachable_means_in_the_rule_and_public_or_approved(cidr: str,
                                                            approved: list[str]) -> None:
    """The semantic property, probed address by address."""
    rule = ipaddress.ip_network(cidr)
    excepts = [ipaddress.ip_network(e) for e in network.private_excepts(cidr, approved)]
    private = [ipaddress.ip_network(p) for p in PRIVATE_RANGES]
    approvals = [ipaddress.ip_network(a) for a in approved]
    for text in PROBES:
        address = ipaddress.ip_address(text)
        if address.version != rule.version or address not in rule:
            continue
        allowed_by_policy = not any(address in e for e in excepts)
        is_private = any(p.version == address.version and address in p for p in private)
        is_approved = any(a.version == address.version and address in a for a in approvals)
        assert allowed_by_policy == (not is_private or is_approved), (cidr, approved, text)
    # Kubernetes refuses an except that is not strictly inside the ipBlock's cidr.
    for net in excepts:
        assert net.version == rule.version
        assert net.subnet_of(rule) and net != rule  # type: ignore[arg-type]
