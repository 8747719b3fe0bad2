"""The CEL twin of the isolation rules (policies/isolation-*.yaml) on the real apiserver.

The ValidatingAdmissionPolicy takes Tenants as parameters. For each case the verdict of the CEL
policy (which the apiserver runs before any webhook) must equal the verdict of the Python rules
(`isolation.check_isolation`), with the same field paths and rule ids, except in the corners the
policy's docstring names, where CEL is stricter and never looser.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client

from tenantry import kube
from tenantry.admission import isolation
from tenantry.devcluster.cluster import LocalControlPlane
from tenantry.model import cidrs, tenant
from tests.conftest import OPERATOR_GROUPS, OPERATOR_USER, REPO_ROOT, api_message
from tests.e2e.webhook.conftest import session_tenant
from tests.e2e.webhook.webhook_helpers import WebhookProcess, in_namespace
from tests.helpers import eventually
from tests.unit.admission.admission_helpers import hardened_pod

TENANT = "wh-celiso"
PROD, DEV = "wh-celiso-prod", "wh-celiso-dev"
SPEC: dict[str, Any] = {
    "network": {
        "egress": [{"cidr": "203.0.113.0/24", "ports": [{"port": 443}]},
                   {"cidr": "0.0.0.0/0", "ports": [{"port": 8443}]},
                   {"cidr": "2001:db8:1::/48"},
                   {"namespace": "shared-db", "podLabels": {"app": "pg"},
                    "ports": [{"port": 5432}]}],
        "approvedPrivateRanges": ["10.20.0.0/16"],
    },
    "podSecurity": {"mode": "Warn"},
    "allowedPriorityClasses": ["wh-celiso-batch"],
}
DENIED_BY_CEL = "ValidatingAdmissionPolicy 'tenantry-isolation'"
POLICY_FILES = ("isolation-policy.yaml", "isolation-bindings.yaml")
_FINDING = re.compile(r"([\w.\[\]]+): [^;\[]+ \[(\w+)\]")


@pytest.fixture(scope="module")
def cel_isolation(admin_api: client.ApiClient, operator: Any,
                  webhook: WebhookProcess) -> Iterator[tenant.TenantSpec]:
    """The tenant, and the isolation policy bound over every Tenant (removed afterwards)."""
    documents = kube.load_manifests([REPO_ROOT / "policies" / name for name in POLICY_FILES])
    with session_tenant(admin_api, TENANT, [PROD, DEV], **SPEC) as obj:
        kube.apply(admin_api, documents)
        scheduling = client.SchedulingV1Api(admin_api)
        with contextlib.suppress(client.ApiException):
            scheduling.create_priority_class(client.V1PriorityClass(
                metadata=client.V1ObjectMeta(name="wh-celiso-batch"), value=100))
        try:
            networking = client.NetworkingV1Api(admin_api)

            def enforcing() -> bool:
                try:
                    networking.create_namespaced_network_policy(
                        PROD, _policy("probe", egress=[{}]), dry_run="All")
                except client.ApiException as error:
                    return DENIED_BY_CEL in api_message(error)
                return False

            eventually(enforcing, timeout=60, what="the isolation policy to enforce")
            yield tenant.TenantSpec.model_validate(obj["spec"])
        finally:
            admission = client.AdmissionregistrationV1Api(admin_api)
            with contextlib.suppress(client.ApiException):
                admission.delete_validating_admission_policy_binding("tenantry-isolation")
            with contextlib.suppress(client.ApiException):
                admission.delete_validating_admission_policy("tenantry-isolation")
            with contextlib.suppress(client.ApiException):
                scheduling.delete_priority_class("wh-celiso-batch")


def _policy(name: str, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"name": name, "namespace": PROD}, "spec": {"podSelector": {}, **spec}}


def _egress(*peers: dict[str, Any], ports: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    rule: dict[str, Any] = {"to": list(peers)}
    if ports is not None:
        rule["ports"] = ports
    return _policy("case", policyTypes=["Egress"], egress=[rule])


def _ingress(*peers: dict[str, Any]) -> dict[str, Any]:
    return _policy("case", policyTypes=["Ingress"], ingress=[{"from": list(peers)}])


def _by_name(name: str) -> dict[str, Any]:
    return {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": name}}}


def _service(**spec: Any) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "case", "namespace": PROD},
            "spec": {"ports": [{"port": 80}], **spec}}


def _pod(priority_class: str) -> dict[str, Any]:
    pod = in_namespace(hardened_pod(), PROD, "case")
    pod["spec"]["priorityClassName"] = priority_class
    return pod


CARVED = cidrs.private_excepts("0.0.0.0/0", ["10.20.0.0/16"])
CASES: dict[str, dict[str, Any]] = {
    # refused
    "egress-empty": _policy("case", egress=[{}]),
    "ingress-empty": _policy("case", ingress=[{}]),
    "egress-everything-v4": _egress({"ipBlock": {"cidr": "0.0.0.0/0"}}),
    "egress-everything-v6": _egress({"ipBlock": {"cidr": "::/0"}}),
    "egress-metadata": _egress({"ipBlock": {"cidr": "169.254.169.254/32"}},
                               ports=[{"port": 8443}]),
    "egress-rfc1918-unapproved": _egress({"ipBlock": {"cidr": "10.21.0.0/16"}},
                                         ports=[{"port": 8443}]),
    "egress-wrong-port": _egress({"ipBlock": {"cidr": "203.0.113.0/24"}}, ports=[{"port": 22}]),
    "egress-all-ports": _egress({"ipBlock": {"cidr": "203.0.113.0/24"}}),
    "egress-named-port": _egress({"ipBlock": {"cidr": "203.0.113.0/24"}},
                                 ports=[{"port": "https"}]),
    "egress-every-namespace": _egress({"namespaceSelector": {}}),
    "egress-tenantry-system": _egress(_by_name("tenantry-system")),
    "egress-tenant-label-other": _egress({"namespaceSelector": {
        "matchLabels": {"tenantry.dev/tenant": "someone-else"}}}),
    "egress-db-without-labels": _egress(_by_name("shared-db"), ports=[{"port": 5432}]),
    "ingress-ipblock": _ingress({"ipBlock": {"cidr": "203.0.113.0/24"}}),
    "ingress-team-label": _ingress({"namespaceSelector": {"matchLabels": {"team": "x"}}}),
    "ingress-from-shared-db": _ingress(_by_name("shared-db")),
    "service-external-name-out": _service(type="ExternalName",
                                          externalName="db.other.svc.cluster.local"),
    "secret-sa-token": {"apiVersion": "v1", "kind": "Secret",
                        "metadata": {"name": "case", "namespace": PROD,
                                     "annotations": {
                                         "kubernetes.io/service-account.name": "default"}},
                        "type": "kubernetes.io/service-account-token"},
    "pod-system-priority": _pod("system-node-critical"),
    # admitted
    "deny-all": _policy("case", policyTypes=["Ingress", "Egress"]),
    "same-namespace-pods": _ingress({"podSelector": {"matchLabels": {"app": "web"}}}),
    "own-namespace-by-name": _ingress(_by_name(DEV)),
    "own-tenant-by-label": _egress({"namespaceSelector": {
        "matchLabels": {"tenantry.dev/tenant": TENANT}}}),
    "allowed-range": _egress({"ipBlock": {"cidr": "203.0.113.64/26"}}, ports=[{"port": 443}]),
    "allowed-v6-any-port": _egress({"ipBlock": {"cidr": "2001:db8:1:2::/64"}}),
    "approved-private": _egress({"ipBlock": {"cidr": "10.20.3.0/24"}}, ports=[{"port": 8443}]),
    "everything-carved": _egress({"ipBlock": {"cidr": "0.0.0.0/0", "except": CARVED}},
                                 ports=[{"port": 8443}]),
    "everything-carved-whole": _egress({"ipBlock": {
        "cidr": "0.0.0.0/0", "except": cidrs.private_excepts("0.0.0.0/0", [])}},
        ports=[{"port": 8443}]),
    "db-with-labels": _egress({**_by_name("shared-db"),
                               "podSelector": {"matchLabels": {"app": "pg"}}},
                              ports=[{"port": 5432}]),
    "dns": _egress({**_by_name("kube-system"),
                    "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}}},
                   ports=[{"port": 53, "protocol": "UDP"}]),
    "service-external-name-own": _service(type="ExternalName",
                                          externalName=f"db.{DEV}.svc.cluster.local"),
    "pod-allowed-priority": _pod("wh-celiso-batch"),
}
def _create(admin_api: client.ApiClient, obj: dict[str, Any]) -> None:
    core, networking = client.CoreV1Api(admin_api), client.NetworkingV1Api(admin_api)
    create = {"NetworkPolicy": networking.create_namespaced_network_policy,
              "Service": core.create_namespaced_service, "Secret": core.create_namespaced_secret,
              "Pod": core.create_namespaced_pod}[obj["kind"]]
    create(PROD, obj, dry_run="All")


def _cel_verdict(admin_api: client.ApiClient, obj: dict[str, Any]) -> set[tuple[str, str]] | None:
    """None when the policy admits `obj` (dry run), else the (path, rule) pairs it names."""
    try:
        _create(admin_api, obj)
    except client.ApiException as error:
        message = api_message(error)
        if DENIED_BY_CEL not in message:
            return {("<not the policy>", message)}
        return set(_FINDING.findall(message.split("breaks tenant isolation: ", 1)[-1]))
    return None


# Where CEL is stricter than the webhook, by design (see admission/cel_isolation.py): a private
# range carved in pieces (10/8 around the approved 10.20/16) is not added up in CEL.
STRICTER = {"everything-carved": {("spec.egress[0].to[0].ipBlock.cidr", "networkPolicyEgress")}}


@pytest.mark.parametrize("case", sorted(CASES))
def test_the_cel_policy_agrees_with_the_python_rules(
        cel_isolation: tenant.TenantSpec, admin_api: client.ApiClient, case: str) -> None:
    obj = CASES[case]
    expected = {(v.field_path, v.rule_id) for v in isolation.check_isolation(
        obj, cel_isolation, tenant_name=TENANT, tenant_namespaces=(PROD, DEV))}
    got = _cel_verdict(admin_api, obj)
    if case in STRICTER:
        assert not expected and got == STRICTER[case]
    elif not expected:
        assert got is None, got
    else:
        assert got == expected


def test_external_ips_are_refused_before_the_policy_by_the_apiserver_plugin(
        cel_isolation: tenant.TenantSpec, admin_api: client.ApiClient) -> None:
    got = _cel_verdict(admin_api, _service(externalIPs=["203.0.113.9"]))
    assert got is not None and "external IPs is denied" in str(got)


def test_the_operators_own_writes_are_not_judged_but_a_tenants_copy_is(
        cel_isolation: tenant.TenantSpec, admin_api: client.ApiClient,
        control_plane: LocalControlPlane) -> None:
    operator = kube.api_client(control_plane.kubeconfig_for(OPERATOR_USER, OPERATOR_GROUPS))
    try:
        networking = client.NetworkingV1Api(operator)
        stored = networking.list_namespaced_network_policy(PROD).items
        assert {p.metadata.name for p in stored} >= {"tenantry-default-deny",
                                                     "tenantry-allow-egress"}
        for policy in stored:
            # An UPDATE (dry run) of exactly what the operator wrote, as the operator.
            networking.replace_namespaced_network_policy(policy.metadata.name, PROD, policy,
                                                         dry_run="All")
    finally:
        operator.close()
    # The deny-all and DNS policies pass when anyone else writes them too.
    copy = client.NetworkingV1Api(admin_api).read_namespaced_network_policy(
        "tenantry-allow-dns", PROD)
    copy.metadata = client.V1ObjectMeta(name="copy-of-dns", namespace=PROD)
    client.NetworkingV1Api(admin_api).create_namespaced_network_policy(PROD, copy,
                                                                      dry_run="All")
