"""A tenant's own NetworkPolicies may only narrow, never widen, its isolation (pure).

    check_network_policy(policy, spec, tenant=..., tenant_namespaces=...) -> [Violation]

NetworkPolicies are additive: a packet passes when any policy selecting the pod allows it. The
operator's default-deny plus allow-list is therefore only as strong as the widest policy a
tenant admin writes next to it. A tenant policy passes when every peer it opens is one of:

- pods of the policy's own namespace (a peer with a podSelector and no namespaceSelector);
- pods of the tenant's own namespaces, the namespaceSelector pinned by the operator-owned
  tenant label (`tenantry.dev/tenant: <tenant>`) or by `kubernetes.io/metadata.name` (set by
  the apiserver, immutable) naming only namespaces of this tenant;
- for egress only, a destination the Tenant's allow-list already permits on those ports: an
  ipBlock whose addresses (cidr minus except) all lie in what an allow-list cidr entry really
  opens (its range minus unapproved private space, as the builders carve it), a namespace
  entry (with its podLabels required by the peer's podSelector), or the cluster DNS pods on
  port 53 (which the operator opens for every tenant).

Everything else is wider and refused, whatever the tenant's podSecurity.mode: an empty or
missing `from`/`to` (everywhere), `namespaceSelector: {}` or a selector on labels a tenant
controls, ingress from an ipBlock, an ipBlock outside the allow-list (IPv4 and IPv6), ports
the allow-list entry does not open (named ports cannot be proven inside a numbered range).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Collection, Mapping, Sequence
from typing import Any

from tenantry.admission.violation import Violation, items, mapping, show
from tenantry.model import cidrs, common, tenant

INGRESS = "networkPolicyIngress"
EGRESS = "networkPolicyEgress"

RULES: Mapping[str, str] = {
    INGRESS: "a tenant NetworkPolicy admits ingress only from the tenant's own namespaces",
    EGRESS: "a tenant NetworkPolicy allows egress only to the tenant's own namespaces and to "
            "destinations the Tenant's egress allow-list already permits",
}
RULE_IDS = frozenset(RULES)

NAME_LABEL = "kubernetes.io/metadata.name"
_PIN_HINT = (f"select namespaces with {common.TENANT_LABEL}: <tenant> or {NAME_LABEL} "
             "(matchLabels, or matchExpressions with operator In)")


def is_network_policy(obj: Mapping[str, Any]) -> bool:
    return obj.get("kind") == "NetworkPolicy" and obj.get("apiVersion") == "networking.k8s.io/v1"


def _pinned_namespaces(selector: Mapping[str, Any], tenant_name: str,
                       tenant_namespaces: Collection[str]) -> set[str] | None:
    """The namespaces outside the tenant a namespaceSelector can match at most (empty: none),
    or None when it is not pinned at all.

    Selector terms are ANDed, so one pinning term bounds the whole selector; further terms only
    narrow it. "Pinned" means by a label no tenant can set on a namespace of its choosing: the
    operator's tenant label (which bounds the selector to this tenant's namespaces, whatever
    their names) or the apiserver's immutable name label.
    """
    labels = mapping(selector.get("matchLabels"))
    expressions = [mapping(e) for e in items(selector.get("matchExpressions"))]
    if labels.get(common.TENANT_LABEL) == tenant_name or any(
            e.get("key") == common.TENANT_LABEL and e.get("operator") == "In"
            and set(items(e.get("values"))) == {tenant_name} for e in expressions):
        return set()
    bounds: list[set[str]] = []
    name = labels.get(NAME_LABEL)
    if isinstance(name, str):
        bounds.append({name})
    for expression in expressions:
        if expression.get("key") == NAME_LABEL and expression.get("operator") == "In":
            bounds.append({v for v in items(expression.get("values")) if isinstance(v, str)})
    if not bounds:
        return None
    return set.intersection(*bounds) - set(tenant_namespaces)


# -- ports -------------------------------------------------------------------------------------

_Range = tuple[str, int, int]  # protocol, first port, last port


def _policy_port_ranges(ports: Sequence[Any]) -> list[_Range | None] | None:
    """A rule's ports as ranges; None: every port. An entry that cannot be bounded (a named
    port, a protocol without a port) is None inside the list."""
    if not ports:
        return None
    ranges: list[_Range | None] = []
    for port in ports:
        port = mapping(port)
        protocol = port.get("protocol") or "TCP"
        number, end = port.get("port"), port.get("endPort")
        if not isinstance(number, int) or isinstance(number, bool):
            ranges.append(None)
            continue
        last = end if isinstance(end, int) and not isinstance(end, bool) and end >= number \
            else number
        ranges.append((str(protocol), number, last))
    return ranges


def _entry_port_ranges(entry: tenant.EgressRule) -> list[_Range] | None:
    if not entry.ports:
        return None
    return [(str(p.protocol), p.port, p.end_port or p.port) for p in entry.ports]


def _ports_within(wanted: list[_Range | None] | None, allowed: list[_Range] | None) -> bool:
    if allowed is None:
        return True
    if wanted is None:
        return False
    return all(w is not None and any(
        w[0] == a[0] and a[1] <= w[1] and w[2] <= a[2] for a in allowed) for w in wanted)


# -- peers -------------------------------------------------------------------------------------

def _block_networks(block: Mapping[str, Any]) -> list[cidrs.IPNetwork] | str:
    """The addresses an ipBlock opens (cidr minus except), or why it cannot be read."""
    try:
        network = ipaddress.ip_network(str(block.get("cidr")), strict=False)
        holes = [ipaddress.ip_network(str(e), strict=False) for e in items(block.get("except"))]
    except ValueError:
        return f"is not a CIDR (is {show(block.get('cidr'))})"
    return cidrs.subtract_all([network], holes)


def _egress_block_problem(block: Mapping[str, Any], ports: list[_Range | None] | None,
                          network: tenant.Network) -> str | None:
    opened = _block_networks(block)
    if isinstance(opened, str):
        return opened
    reachable: list[cidrs.IPNetwork] = []
    for entry in network.egress:
        if entry.cidr is not None and _ports_within(ports, _entry_port_ranges(entry)):
            reachable.extend(cidrs.reachable(entry.cidr, network.approved_private_ranges))
    outside = opened
    for allowed in reachable:
        outside = cidrs.subtract(outside, allowed)
    if not outside:
        return None
    first = cidrs.collapse(outside)[0]
    return (f"{show(block.get('cidr'))} reaches {first}, which the Tenant's egress allow-list "
            "does not open on these ports (private ranges need spec.network."
            "approvedPrivateRanges); list it in the Tenant's spec.network.egress first")


def _namespace_destinations(network: tenant.Network) -> list[tenant.EgressRule]:
    """The allow-list's namespace entries, and the cluster DNS every tenant may query."""
    dns = tenant.EgressRule(namespace=network.dns_namespace, pod_labels=dict(
        tenant.DNS_POD_LABELS), ports=[tenant.PortRule(port=tenant.DNS_PORT, protocol=protocol)
                                       for protocol in (tenant.Protocol.UDP, tenant.Protocol.TCP)])
    return [*(entry for entry in network.egress if entry.namespace is not None), dns]


def _namespace_entry_allows(entry: tenant.EgressRule, namespace: str,
                            pod_selector: Mapping[str, Any] | None,
                            ports: list[_Range | None] | None) -> bool:
    if entry.namespace != namespace or not _ports_within(ports, _entry_port_ranges(entry)):
        return False
    if not entry.pod_labels:
        return True
    required = mapping((pod_selector or {}).get("matchLabels"))
    return all(required.get(k) == v for k, v in entry.pod_labels.items())


def _peer_violation(peer: Mapping[str, Any], path: str, *, egress: bool,
                    ports: list[_Range | None] | None, spec: tenant.TenantSpec,
                    tenant_name: str, tenant_namespaces: Collection[str]) -> Violation | None:
    rule = EGRESS if egress else INGRESS
    block = peer.get("ipBlock")
    if block is not None:
        if not egress:
            return Violation(rule, f"{path}.ipBlock",
                             "must not admit traffic from IP ranges: ingress is only from the "
                             "tenant's own namespaces", "a podSelector or namespaceSelector")
        problem = _egress_block_problem(mapping(block), ports, spec.network)
        if problem is None:
            return None
        return Violation(rule, f"{path}.ipBlock.cidr", problem,
                         "a range inside the Tenant's spec.network.egress")
    if "namespaceSelector" not in peer:
        if "podSelector" in peer:
            return None  # pods of this very namespace
        return Violation(rule, path, "must select something: an empty peer matches everywhere",
                         "a podSelector, namespaceSelector or (egress) ipBlock")
    selector = mapping(peer.get("namespaceSelector"))
    pinned = _pinned_namespaces(selector, tenant_name, tenant_namespaces)
    if pinned is None:
        return Violation(rule, f"{path}.namespaceSelector",
                         f"selects namespaces of other tenants or the platform (is "
                         f"{show(dict(selector))}): {_PIN_HINT}",
                         "the tenant's own namespaces")
    outside = sorted(pinned)
    if not outside:
        return None
    pod_selector = peer.get("podSelector")
    if egress and all(any(_namespace_entry_allows(
            entry, name, mapping(pod_selector) if pod_selector is not None else None, ports)
            for entry in _namespace_destinations(spec.network)) for name in outside):
        return None
    if egress:
        message = (f"namespace {', '.join(outside)} is not the tenant's, nor a destination the "
                   "Tenant's egress allow-list opens on these ports (with its podLabels)")
    else:
        message = (f"namespace {', '.join(outside)} is not one of the tenant's: ingress is only "
                   "from the tenant's own namespaces")
    return Violation(rule, f"{path}.namespaceSelector", message, "the tenant's own namespaces")


def check_network_policy(policy: Mapping[str, Any], spec: tenant.TenantSpec, *, tenant_name: str,
                         tenant_namespaces: Collection[str]) -> list[Violation]:
    """Every way `policy` (a networking.k8s.io/v1 NetworkPolicy in one of the tenant's
    namespaces) opens more than the tenant's isolation allows; [] when it only narrows."""
    if not is_network_policy(policy):
        return []
    body = mapping(policy.get("spec"))
    found: list[Violation] = []
    for direction, peers_key, egress in (("ingress", "from", False), ("egress", "to", True)):
        rule = EGRESS if egress else INGRESS
        for index, entry in enumerate(items(body.get(direction))):
            entry = mapping(entry)
            path = f"spec.{direction}[{index}]"
            peers = items(entry.get(peers_key))
            if not peers:
                found.append(Violation(
                    rule, f"{path}.{peers_key}",
                    f"must list peers: an empty or missing {peers_key!r} means every address, "
                    "inside and outside the cluster",
                    "peers inside the tenant" + (" or its allow-list" if egress else "")))
                continue
            ports = _policy_port_ranges(items(entry.get("ports"))) if egress else None
            for peer_index, peer in enumerate(peers):
                violation = _peer_violation(
                    mapping(peer), f"{path}.{peers_key}[{peer_index}]", egress=egress,
                    ports=ports, spec=spec, tenant_name=tenant_name,
                    tenant_namespaces=tenant_namespaces)
                if violation is not None:
                    found.append(violation)
    return found
