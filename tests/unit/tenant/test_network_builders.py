"""NetworkPolicies: deny by default, then exactly the holes the spec asks for."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from tenantry.controller.tenant import network
from tenantry.model import common
from tenantry.model.tenant import EgressRule, Network, TenantSpec

TENANT = "acme"
UID = "6c0d6c5e-1f0b-4d8a-9b4e-3f1f4c1b2a77"
OWN = ["acme-prod", "acme-staging"]


def _policies(spec: TenantSpec, namespace: str = "acme-prod") -> dict[str, dict[str, Any]]:
    built = network.network_policies(TENANT, UID, namespace, spec.network, OWN)
    return {p["metadata"]["name"]: p for p in built}


def _namespace_selectors(node: Any) -> Iterator[dict[str, Any]]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "namespaceSelector":
                yield value
            yield from _namespace_selectors(value)
    elif isinstance(node, list):
        for item in node:
            yield from _namespace_selectors(item)


def test_policies_of_the_sample_tenant_in_order(acme: TenantSpec) -> None:
    assert list(_policies(acme)) == ["tenantry-default-deny", "tenantry-allow-intra-tenant",
                                     "tenantry-allow-dns", "tenantry-allow-egress"]


def test_every_policy_is_a_valid_owned_child(acme: TenantSpec,
                                             valid: Callable[[dict[str, Any]], None]) -> None:
    for name, policy in _policies(acme).items():
        valid(policy)
        assert name.startswith("tenantry-")
        assert policy["apiVersion"] == "networking.k8s.io/v1"
        assert policy["metadata"]["namespace"] == "acme-prod"
        assert policy["metadata"]["labels"] == {common.TENANT_LABEL: TENANT,
                                                common.MANAGED_BY_LABEL: "tenantry"}
        assert policy["metadata"]["ownerReferences"][0]["uid"] == UID
        # Every policy applies to every pod of the namespace.
        assert policy["spec"]["podSelector"] == {}


def test_default_deny_denies_everything(acme: TenantSpec) -> None:
    spec = _policies(acme)["tenantry-default-deny"]["spec"]
    assert spec == {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}


def test_intra_tenant_selects_own_namespaces_by_name_and_operator_label(
        acme: TenantSpec) -> None:
    spec = _policies(acme)["tenantry-allow-intra-tenant"]["spec"]
    peer = {"namespaceSelector": {
        "matchLabels": {common.TENANT_LABEL: TENANT},
        "matchExpressions": [{"key": "kubernetes.io/metadata.name", "operator": "In",
                              "values": OWN}],
    }}
    assert spec == {"podSelector": {}, "policyTypes": ["Ingress", "Egress"],
                    "ingress": [{"from": [peer]}], "egress": [{"to": [peer]}]}


def test_intra_tenant_namespace_list_is_sorted_and_unique() -> None:
    peer = network.tenant_namespaces_peer("t", ["b", "a", "b"])
    assert peer["namespaceSelector"]["matchExpressions"][0]["values"] == ["a", "b"]


def test_intra_tenant_can_be_turned_off(make_spec: Callable[..., TenantSpec]) -> None:
    spec = make_spec(network={"allowIntraTenant": False})
    assert "tenantry-allow-intra-tenant" not in _policies(spec)
    assert "tenantry-default-deny" in _policies(spec)


def test_namespaces_are_only_selected_by_labels_tenants_cannot_set(acme: TenantSpec) -> None:
    allowed_keys = {"kubernetes.io/metadata.name", common.TENANT_LABEL}
    selectors = list(_namespace_selectors(list(_policies(acme).values())))
    assert len(selectors) >= 4
    for selector in selectors:
        keys = set(selector.get("matchLabels", {}))
        keys |= {e["key"] for e in selector.get("matchExpressions", [])}
        assert keys and keys <= allowed_keys, selector


def test_dns_is_allowed_to_the_cluster_dns_pods_only(acme: TenantSpec) -> None:
    spec = _policies(acme)["tenantry-allow-dns"]["spec"]
    assert spec["policyTypes"] == ["Egress"] and "ingress" not in spec
    (rule,) = spec["egress"]
    assert rule["to"] == [{
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
        "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}},
    }]
    assert rule["ports"] == [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]


def test_dns_namespace_comes_from_the_spec(make_spec: Callable[..., TenantSpec]) -> None:
    spec = make_spec(network={"dnsNamespace": "dns-system"})
    peer = _policies(spec)["tenantry-allow-dns"]["spec"]["egress"][0]["to"][0]
    assert peer["namespaceSelector"]["matchLabels"] == {
        "kubernetes.io/metadata.name": "dns-system"}


def test_egress_allow_list_of_the_sample(acme: TenantSpec) -> None:
    spec = _policies(acme)["tenantry-allow-egress"]["spec"]
    assert spec["policyTypes"] == ["Egress"] and "ingress" not in spec
    assert spec["egress"] == [
        {"to": [{"ipBlock": {"cidr": "203.0.113.0/24"}}],
         "ports": [{"protocol": "TCP", "port": 443}]},
        {"to": [{"namespaceSelector": {
                     "matchLabels": {"kubernetes.io/metadata.name": "observability"}},
                 "podSelector": {"matchLabels": {"app": "otel-collector"}}}],
         "ports": [{"protocol": "TCP", "port": 4317}]},
        # Private but approved: no except, reachable.
        {"to": [{"ipBlock": {"cidr": "10.20.30.0/24"}}],
         "ports": [{"protocol": "TCP", "port": 443}]},
    ]


def _egress(rule: dict[str, Any], approved: list[str] | None = None) -> dict[str, Any] | None:
    return network.egress_rule(EgressRule.model_validate(rule), approved or [])


def test_whole_internet_rule_carves_out_private_space() -> None:
    built = _egress({"cidr": "0.0.0.0/0", "ports": [{"port": 443}]})
    assert built is not None
    block = built["to"][0]["ipBlock"]
    assert block["cidr"] == "0.0.0.0/0"
    assert "10.0.0.0/8" in block["except"] and "169.254.0.0/16" in block["except"]


def test_ports_map_protocol_and_end_port() -> None:
    built = _egress({"cidr": "203.0.113.0/24", "ports": [
        {"port": 8000, "endPort": 8100}, {"port": 53, "protocol": "UDP"},
        {"port": 9000, "endPort": 9000, "protocol": "SCTP"}]})
    assert built is not None
    assert built["ports"] == [
        {"protocol": "TCP", "port": 8000, "endPort": 8100},
        {"protocol": "UDP", "port": 53},
        {"protocol": "SCTP", "port": 9000},  # a one-port range is just the port
    ]


def test_no_ports_means_all_ports() -> None:
    built = _egress({"cidr": "203.0.113.0/24"})
    assert built == {"to": [{"ipBlock": {"cidr": "203.0.113.0/24"}}]}


def test_namespace_rule_without_pod_labels_selects_all_its_pods() -> None:
    built = _egress({"namespace": "shared"})
    assert built == {"to": [{"namespaceSelector": {
        "matchLabels": {"kubernetes.io/metadata.name": "shared"}}}]}


def test_pod_labels_are_sorted() -> None:
    built = _egress({"namespace": "shared", "podLabels": {"z": "1", "a": "2"}})
    assert built is not None
    assert list(built["to"][0]["podSelector"]["matchLabels"]) == ["a", "z"]


def test_unapproved_private_rule_is_dropped_and_reported() -> None:
    # The CRD's CEL rule refuses this spec; pydantic alone does not, so the builder must
    # fail closed on its own.
    net = Network.model_validate({"egress": [
        {"cidr": "169.254.169.254/32", "ports": [{"port": 80}]},
        {"cidr": "203.0.113.0/24"},
    ]})
    policy = network.allow_egress(TENANT, UID, "acme-prod", net)
    assert policy is not None
    assert policy["spec"]["egress"] == [{"to": [{"ipBlock": {"cidr": "203.0.113.0/24"}}]}]
    assert [r.cidr for r in network.unapproved_rules(net)] == ["169.254.169.254/32"]


def test_no_effective_rule_means_no_egress_policy() -> None:
    assert network.allow_egress(TENANT, UID, "ns", Network()) is None
    only_blocked = Network.model_validate({"egress": [{"cidr": "10.0.0.0/8"}]})
    assert network.allow_egress(TENANT, UID, "ns", only_blocked) is None


def test_a_rule_with_no_destination_never_becomes_allow_everywhere() -> None:
    # Bypasses validation on purpose: an empty `to` would mean "every destination".
    empty = EgressRule.model_construct(description=None, cidr=None, namespace=None,
                                       pod_labels=None, ports=[])
    assert network.egress_rule(empty, []) is None


def test_no_rule_has_an_empty_peer_list(acme: TenantSpec) -> None:
    for policy in _policies(acme).values():
        for rule in policy["spec"].get("egress", []):
            assert rule["to"], policy["metadata"]["name"]
        for rule in policy["spec"].get("ingress", []):
            assert rule["from"], policy["metadata"]["name"]
