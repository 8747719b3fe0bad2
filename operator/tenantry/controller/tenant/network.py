"""NetworkPolicies of a tenant namespace: deny everything, then allow exactly what the spec says.

Policies are additive (a packet passes if any policy allows it), so isolation comes from one
default-deny policy and every other policy here only opens a precise hole:

    tenantry-default-deny         selects every pod, allows nothing, ingress and egress
    tenantry-allow-intra-tenant   to/from the tenant's own namespaces (when allowIntraTenant)
    tenantry-allow-dns            egress to the cluster DNS pods, UDP and TCP 53
    tenantry-allow-egress         the allow-list, private ranges carved out unless approved

Namespaces are selected by `kubernetes.io/metadata.name` (set by the apiserver, immutable) and,
for the tenant's own namespaces, also by the operator-owned tenant label. Never by a label a
tenant could set on its namespace: that would let a tenant opt itself into someone else's policy.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence
from typing import Any

from tenantry.controller.tenant import meta
from tenantry.model import common, tenant
from tenantry.model.cidrs import private_excepts

NAME_LABEL = "kubernetes.io/metadata.name"
DNS_POD_LABELS = tenant.DNS_POD_LABELS
DNS_PORT = tenant.DNS_PORT

DEFAULT_DENY = f"{meta.NAME_PREFIX}default-deny"
ALLOW_INTRA_TENANT = f"{meta.NAME_PREFIX}allow-intra-tenant"
ALLOW_DNS = f"{meta.NAME_PREFIX}allow-dns"
ALLOW_EGRESS = f"{meta.NAME_PREFIX}allow-egress"


def ip_block(cidr: str, approved: Iterable[str]) -> dict[str, Any] | None:
    """The ipBlock peer for an egress CIDR, or None when the CIDR is wholly unapproved private.

    The CRD's CEL rule already refuses such a spec; returning None (and so dropping the rule)
    is the second line of defence, failing closed if a spec ever gets past the schema.
    """
    excepts = private_excepts(cidr, approved)
    if excepts == [str(ipaddress.ip_network(cidr))]:
        return None
    block: dict[str, Any] = {"cidr": cidr}
    if excepts:
        block["except"] = excepts
    return block


def unapproved_rules(network: tenant.Network) -> list[tenant.EgressRule]:
    """Egress CIDR rules left out because they lie wholly in unapproved private space.

    For the handler, to say so in the NetworkPolicies condition rather than drop them silently.
    """
    return [rule for rule in network.egress
            if rule.cidr is not None
            and ip_block(rule.cidr, network.approved_private_ranges) is None]


def _ports(rules: Sequence[tenant.PortRule]) -> list[dict[str, Any]]:
    ports: list[dict[str, Any]] = []
    for rule in rules:
        port: dict[str, Any] = {"protocol": str(rule.protocol), "port": rule.port}
        if rule.end_port is not None and rule.end_port != rule.port:
            port["endPort"] = rule.end_port
        ports.append(port)
    return ports


def _policy(name: str, namespace: str, tenant_name: str, tenant_uid: str | None,
            spec: dict[str, Any]) -> meta.Manifest:
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": meta.metadata(name, tenant_name=tenant_name, tenant_uid=tenant_uid,
                                  namespace=namespace),
        # An empty podSelector selects every pod of the namespace, including future ones.
        "spec": {"podSelector": {}, **spec},
    }


def default_deny(tenant_name: str, tenant_uid: str | None, namespace: str) -> meta.Manifest:
    """Selects every pod and allows nothing: all ingress and egress is denied unless allowed."""
    return _policy(DEFAULT_DENY, namespace, tenant_name, tenant_uid,
                   {"policyTypes": ["Ingress", "Egress"]})


def tenant_namespaces_peer(tenant_name: str, namespaces: Iterable[str]) -> dict[str, Any]:
    """A peer matching the tenant's own namespaces, every pod in them.

    Both conditions must hold (selector terms are ANDed): the immutable name is in the list AND
    the operator-owned tenant label says this tenant. A namespace listed in the spec but owned by
    another tenant (a conflict) therefore never matches, nor does one not yet labelled.
    """
    return {"namespaceSelector": {
        "matchLabels": {common.TENANT_LABEL: tenant_name},
        "matchExpressions": [
            {"key": NAME_LABEL, "operator": "In", "values": sorted(set(namespaces))},
        ],
    }}


def allow_intra_tenant(tenant_name: str, tenant_uid: str | None, namespace: str,
                       namespaces: Iterable[str]) -> meta.Manifest:
    """Ingress from and egress to every pod in the tenant's own namespaces."""
    peer = tenant_namespaces_peer(tenant_name, namespaces)
    return _policy(ALLOW_INTRA_TENANT, namespace, tenant_name, tenant_uid, {
        "policyTypes": ["Ingress", "Egress"],
        "ingress": [{"from": [peer]}],
        "egress": [{"to": [peer]}],
    })


def allow_dns(tenant_name: str, tenant_uid: str | None, namespace: str,
              dns_namespace: str) -> meta.Manifest:
    """Egress to the cluster DNS pods on port 53, UDP (queries) and TCP (large answers)."""
    return _policy(ALLOW_DNS, namespace, tenant_name, tenant_uid, {
        "policyTypes": ["Egress"],
        "egress": [{
            "to": [{
                "namespaceSelector": {"matchLabels": {NAME_LABEL: dns_namespace}},
                "podSelector": {"matchLabels": dict(DNS_POD_LABELS)},
            }],
            "ports": [{"protocol": "UDP", "port": DNS_PORT}, {"protocol": "TCP", "port": DNS_PORT}],
        }],
    })


def egress_rule(rule: tenant.EgressRule, approved: Sequence[str]) -> dict[str, Any] | None:
    """One NetworkPolicyEgressRule for one allow-list entry (None: dropped, see `ip_block`)."""
    peer: dict[str, Any]
    if rule.cidr is not None:
        block = ip_block(rule.cidr, approved)
        if block is None:
            return None
        peer = {"ipBlock": block}
    elif rule.namespace is not None:
        peer = {"namespaceSelector": {"matchLabels": {NAME_LABEL: rule.namespace}}}
        if rule.pod_labels:
            peer["podSelector"] = {"matchLabels": dict(sorted(rule.pod_labels.items()))}
    else:
        # The schema requires exactly one of cidr/namespace; an empty peer list would mean
        # "everywhere", so a rule with neither must never become one.
        return None
    egress: dict[str, Any] = {"to": [peer]}
    if rule.ports:
        egress["ports"] = _ports(rule.ports)
    return egress


def allow_egress(tenant_name: str, tenant_uid: str | None, namespace: str,
                 network: tenant.Network) -> meta.Manifest | None:
    """The egress allow-list, in spec order; None when nothing is allowed (nothing to apply)."""
    rules = [built for rule in network.egress
             if (built := egress_rule(rule, network.approved_private_ranges)) is not None]
    if not rules:
        return None
    return _policy(ALLOW_EGRESS, namespace, tenant_name, tenant_uid,
                   {"policyTypes": ["Egress"], "egress": rules})


def network_policies(tenant_name: str, tenant_uid: str | None, namespace: str,
                     network: tenant.Network, tenant_namespaces: Iterable[str]
                     ) -> list[meta.Manifest]:
    """Every NetworkPolicy of one tenant namespace, default-deny first.

    `tenant_namespaces` are the namespaces this tenant actually holds (not those in conflict).
    """
    policies = [default_deny(tenant_name, tenant_uid, namespace)]
    if network.allow_intra_tenant:
        policies.append(allow_intra_tenant(tenant_name, tenant_uid, namespace, tenant_namespaces))
    policies.append(allow_dns(tenant_name, tenant_uid, namespace, network.dns_namespace))
    egress = allow_egress(tenant_name, tenant_uid, namespace, network)
    if egress is not None:
        policies.append(egress)
    return policies
