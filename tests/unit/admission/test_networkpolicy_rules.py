"""A tenant's own NetworkPolicy may only narrow its isolation: every widening is refused."""

from __future__ import annotations

from typing import Any

import pytest

from tenantry.admission import networkpolicy
from tenantry.model import tenant

TENANT = "acme"
OWN = ["acme-prod", "acme-dev"]


def _spec(**network: Any) -> tenant.TenantSpec:
    return tenant.TenantSpec.model_validate({
        "members": [{"kind": "User", "name": "alice", "role": "owner"}],
        "namespaces": [{"name": n} for n in OWN],
        "network": network,
    })


SPEC = _spec(egress=[
    {"cidr": "203.0.113.0/24", "ports": [{"port": 443}]},
    {"cidr": "0.0.0.0/0", "ports": [{"port": 8443}]},
    {"cidr": "2001:db8:1::/48"},
    {"namespace": "shared-db", "podLabels": {"app": "postgres"}, "ports": [{"port": 5432}]},
    {"namespace": "shared-cache"},
], approvedPrivateRanges=["10.20.0.0/16"])


def _policy(**spec: Any) -> dict[str, Any]:
    return {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"name": "p", "namespace": "acme-prod"},
            "spec": {"podSelector": {}, **spec}}


def _check(policy: dict[str, Any], spec: tenant.TenantSpec = SPEC) -> list[tuple[str, str]]:
    return [(v.rule_id, v.field_path) for v in networkpolicy.check_network_policy(
        policy, spec, tenant_name=TENANT, tenant_namespaces=OWN)]


def _egress(*peers: dict[str, Any], ports: list[dict[str, Any]] | None = None
            ) -> dict[str, Any]:
    rule: dict[str, Any] = {"to": list(peers)}
    if ports is not None:
        rule["ports"] = ports
    return _policy(policyTypes=["Egress"], egress=[rule])


def _ingress(*peers: dict[str, Any]) -> dict[str, Any]:
    return _policy(policyTypes=["Ingress"], ingress=[{"from": list(peers)}])


EGRESS = networkpolicy.EGRESS
INGRESS = networkpolicy.INGRESS


# -- the attacks of the issue ------------------------------------------------------------------

def test_egress_to_everything_is_refused() -> None:
    assert _check(_policy(policyTypes=["Egress"], egress=[{}])) == [(EGRESS, "spec.egress[0].to")]
    assert _check(_policy(policyTypes=["Egress"], egress=[{"to": []}])) == [
        (EGRESS, "spec.egress[0].to")]


def test_ingress_from_everywhere_is_refused() -> None:
    assert _check(_policy(ingress=[{}])) == [(INGRESS, "spec.ingress[0].from")]


@pytest.mark.parametrize("cidr", ["0.0.0.0/0", "::/0", "169.254.169.254/32", "10.0.0.0/8",
                                  "172.16.0.0/12", "192.168.0.0/16", "127.0.0.1/32",
                                  "fd00::/8", "::ffff:a00:0/104", "64:ff9b::a9fe:a9fe/128"])
def test_ipblocks_outside_the_allow_list_are_refused(cidr: str) -> None:
    assert _check(_egress({"ipBlock": {"cidr": cidr}})) == [
        (EGRESS, "spec.egress[0].to[0].ipBlock.cidr")]


def test_every_namespace_is_refused() -> None:
    assert _check(_egress({"namespaceSelector": {}})) == [
        (EGRESS, "spec.egress[0].to[0].namespaceSelector")]
    assert _check(_ingress({"namespaceSelector": {}})) == [
        (INGRESS, "spec.ingress[0].from[0].namespaceSelector")]


@pytest.mark.parametrize("selector", [
    {"matchLabels": {"team": "acme"}},  # a label anyone with namespace rights can set
    {"matchLabels": {"tenantry.dev/tenant": "globex"}},  # another tenant's namespaces
    {"matchExpressions": [{"key": "kubernetes.io/metadata.name", "operator": "NotIn",
                           "values": ["kube-system"]}]},
    {"matchExpressions": [{"key": "kubernetes.io/metadata.name", "operator": "Exists"}]},
    {"matchExpressions": [{"key": "tenantry.dev/tenant", "operator": "In",
                           "values": ["acme", "globex"]}]},
])
def test_selectors_a_tenant_controls_or_that_reach_beyond_it_are_refused(
        selector: dict[str, Any]) -> None:
    assert _check(_ingress({"namespaceSelector": selector})) == [
        (INGRESS, "spec.ingress[0].from[0].namespaceSelector")]


@pytest.mark.parametrize("name", ["tenantry-system", "kube-system", "globex-prod", "default"])
def test_other_namespaces_by_name_are_refused(name: str) -> None:
    by_label = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": name}}}
    by_expression = {"namespaceSelector": {"matchExpressions": [
        {"key": "kubernetes.io/metadata.name", "operator": "In", "values": ["acme-dev", name]}]}}
    for peer in (by_label, by_expression):
        assert _check(_ingress(peer)) == [(INGRESS, "spec.ingress[0].from[0].namespaceSelector")]
        assert _check(_egress(peer)) == [(EGRESS, "spec.egress[0].to[0].namespaceSelector")]


def test_ingress_from_ip_ranges_is_refused() -> None:
    assert _check(_ingress({"ipBlock": {"cidr": "203.0.113.0/24"}})) == [
        (INGRESS, "spec.ingress[0].from[0].ipBlock")]


def test_a_wide_block_with_excepts_is_still_wide_where_it_is_not_carved() -> None:
    block = {"cidr": "0.0.0.0/0", "except": ["10.0.0.0/8"]}  # 169.254/16 still open
    assert _check(_egress({"ipBlock": block}, ports=[{"port": 8443}])) == [
        (EGRESS, "spec.egress[0].to[0].ipBlock.cidr")]


def test_every_bad_peer_is_reported_with_its_path() -> None:
    policy = _policy(egress=[{"to": [{"podSelector": {}},
                                     {"ipBlock": {"cidr": "8.8.8.8/32"}},
                                     {"namespaceSelector": {}}]}],
                     ingress=[{"from": [{"podSelector": {}}]}, {}])
    assert _check(policy) == [(INGRESS, "spec.ingress[1].from"),
                              (EGRESS, "spec.egress[0].to[1].ipBlock.cidr"),
                              (EGRESS, "spec.egress[0].to[2].namespaceSelector")]


def test_the_message_names_the_range_and_the_way_out() -> None:
    [violation] = networkpolicy.check_network_policy(
        _egress({"ipBlock": {"cidr": "0.0.0.0/0"}}), SPEC, tenant_name=TENANT,
        tenant_namespaces=OWN)
    assert "0.0.0.0/0" in violation.message and "spec.network.egress" in violation.message
    assert str(violation).startswith("spec.egress[0].to[0].ipBlock.cidr: ")


# -- ports -------------------------------------------------------------------------------------

def test_ports_must_be_within_the_allow_list_entry() -> None:
    peer = {"ipBlock": {"cidr": "203.0.113.8/29"}}
    assert _check(_egress(peer, ports=[{"port": 443}])) == []
    assert _check(_egress(peer, ports=[{"port": 443, "protocol": "TCP"}])) == []
    for ports in ([{"port": 80}], [{"port": 443, "protocol": "UDP"}],
                  [{"port": 400, "endPort": 500}], [{"port": "https"}], None,
                  [{"protocol": "TCP"}]):
        assert _check(_egress(peer, ports=ports)) == [
            (EGRESS, "spec.egress[0].to[0].ipBlock.cidr")], ports


def test_an_entry_without_ports_opens_every_port() -> None:
    assert _check(_egress({"ipBlock": {"cidr": "2001:db8:1:2::/64"}})) == []


# -- what stays allowed ------------------------------------------------------------------------

def test_narrowing_policies_pass() -> None:
    assert _check(_policy(policyTypes=["Ingress", "Egress"])) == []  # deny-all
    assert _check(_ingress({"podSelector": {"matchLabels": {"app": "web"}}})) == []
    assert _check(_egress({"podSelector": {}})) == []


@pytest.mark.parametrize("selector", [
    {"matchLabels": {"tenantry.dev/tenant": "acme"}},
    {"matchLabels": {"kubernetes.io/metadata.name": "acme-dev"}},
    {"matchExpressions": [{"key": "kubernetes.io/metadata.name", "operator": "In",
                           "values": ["acme-dev", "acme-prod"]}]},
    # a tenant-controlled label ANDed with a pinning one only narrows
    {"matchLabels": {"team": "x", "tenantry.dev/tenant": "acme"}},
])
def test_the_tenants_own_namespaces_pass(selector: dict[str, Any]) -> None:
    assert _check(_ingress({"namespaceSelector": selector, "podSelector": {}})) == []
    assert _check(_egress({"namespaceSelector": selector})) == []


def test_allow_listed_destinations_pass() -> None:
    assert _check(_egress({"ipBlock": {"cidr": "203.0.113.0/25"}}, ports=[{"port": 443}])) == []
    # 0.0.0.0/0 on 8443 is allowed by the Tenant, minus the private space the operator carves;
    # the same block with those carve-outs is inside it.
    from tenantry.model.cidrs import private_excepts
    carved = private_excepts("0.0.0.0/0", ["10.20.0.0/16"])
    assert _check(_egress({"ipBlock": {"cidr": "0.0.0.0/0", "except": carved}},
                          ports=[{"port": 8443}])) == []
    # an approved private range under a public entry
    assert _check(_egress({"ipBlock": {"cidr": "10.20.3.0/24"}}, ports=[{"port": 8443}])) == []
    assert _check(_egress({"ipBlock": {"cidr": "10.21.3.0/24"}}, ports=[{"port": 8443}])) == [
        (EGRESS, "spec.egress[0].to[0].ipBlock.cidr")]


def test_allow_listed_namespaces_pass_with_their_pod_labels_and_ports() -> None:
    db = {"matchLabels": {"kubernetes.io/metadata.name": "shared-db"}}
    assert _check(_egress({"namespaceSelector": db,
                           "podSelector": {"matchLabels": {"app": "postgres", "x": "y"}}},
                          ports=[{"port": 5432}])) == []
    assert _check(_egress({"namespaceSelector": db}, ports=[{"port": 5432}])) == [
        (EGRESS, "spec.egress[0].to[0].namespaceSelector")]
    assert _check(_egress({"namespaceSelector": db,
                           "podSelector": {"matchLabels": {"app": "postgres"}}},
                          ports=[{"port": 22}])) == [
        (EGRESS, "spec.egress[0].to[0].namespaceSelector")]
    cache = {"matchLabels": {"kubernetes.io/metadata.name": "shared-cache"}}
    assert _check(_egress({"namespaceSelector": cache})) == []
    # ingress from an allow-listed namespace is still outside the tenant
    assert _check(_ingress({"namespaceSelector": cache})) == [
        (INGRESS, "spec.ingress[0].from[0].namespaceSelector")]


def test_narrowing_the_allow_list_makes_an_existing_policy_wide() -> None:
    policy = _egress({"ipBlock": {"cidr": "203.0.113.0/24"}}, ports=[{"port": 443}])
    assert _check(policy) == []
    assert _check(policy, _spec(egress=[{"cidr": "203.0.113.0/25"}])) == [
        (EGRESS, "spec.egress[0].to[0].ipBlock.cidr")]


def test_other_kinds_are_not_judged() -> None:
    assert _check({"apiVersion": "v1", "kind": "Pod", "spec": {"egress": [{}]}}) == []


def test_the_cluster_dns_is_an_allowed_destination_on_port_53_only() -> None:
    dns = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
           "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}}}
    assert _check(_egress(dns, ports=[{"port": 53, "protocol": "UDP"}, {"port": 53}])) == []
    assert _check(_egress(dns, ports=[{"port": 443}])) == [
        (EGRESS, "spec.egress[0].to[0].namespaceSelector")]
    everything_in_kube_system = {"namespaceSelector": dns["namespaceSelector"]}
    assert _check(_egress(everything_in_kube_system, ports=[{"port": 53}])) == [
        (EGRESS, "spec.egress[0].to[0].namespaceSelector")]


def test_the_operators_own_policies_pass() -> None:
    """What the operator writes is inside the tenant by construction; its intra-tenant peer is
    pinned by the tenant label even for a namespace the webhook has not seen yet."""
    from tenantry.controller.tenant import network
    policies = network.network_policies(TENANT, "uid", "acme-prod", SPEC.network,
                                        [*OWN, "acme-new"])
    assert len(policies) == 4
    for policy in policies:
        assert _check(policy) == [], policy["metadata"]["name"]
