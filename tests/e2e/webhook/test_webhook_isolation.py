"""Tenant isolation through the real apiserver, acting as the tenant's own tiers (issue 10).

Every attack here worked on the previous main: a tenant admin's NetworkPolicy opened egress to
everything (the cloud metadata address, RFC 1918, other tenants, tenantry-system); a member's
ServiceAccount token Secret got a token that never expires; an ExternalName Service aliased
another tenant's Service; a pod took system-node-critical priority. The tenant runs in Warn
mode on purpose: isolation is refused in every podSecurity mode, not only in Deny.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client

from tests.conftest import UserApi, api_message
from tests.e2e.webhook.conftest import session_tenant
from tests.e2e.webhook.webhook_helpers import WebhookProcess, in_namespace
from tests.helpers import GROUP, VERSION, eventually
from tests.unit.admission.admission_helpers import hardened_pod

TENANT = "wh-iso"
PROD, DEV = "wh-iso-prod", "wh-iso-dev"
OTHER_TENANT, OTHER = "wh-iso-other", "wh-iso-other-prod"
ADMIN, MEMBER = "iso-admin", "iso-member"
ISOLATION = 'admission webhook "isolation.admission.tenantry.dev" denied the request'
WORKLOADS = 'admission webhook "workloads.admission.tenantry.dev" denied the request'
ALLOWED_CLASS = "wh-iso-batch"
NETWORK = {
    "egress": [{"cidr": "203.0.113.0/24", "ports": [{"port": 443}]},
               {"cidr": "2001:db8:1::/48"}],
}


@pytest.fixture(scope="module")
def iso(admin_api: client.ApiClient, operator: Any, webhook: WebhookProcess) -> Iterator[str]:
    """Tenant wh-iso (Warn mode, an admin and a member, an egress allow-list) and a second
    tenant next to it; yields wh-iso's first namespace."""
    members = [{"kind": "User", "name": "alice", "role": "owner"},
               {"kind": "User", "name": ADMIN, "role": "admin"},
               {"kind": "User", "name": MEMBER, "role": "member"}]
    with session_tenant(admin_api, OTHER_TENANT, [OTHER]), \
            session_tenant(admin_api, TENANT, [PROD, DEV], members=members, network=NETWORK,
                           podSecurity={"mode": "Warn"},
                           allowedPriorityClasses=[ALLOWED_CLASS]):
        yield PROD


def _policy(name: str, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"name": name}, "spec": {"podSelector": {}, **spec}}


def _refusal(call: Any) -> str:
    with pytest.raises(client.ApiException) as raised:
        call()
    assert raised.value.status == 403, raised.value.body
    return api_message(raised.value)


ATTACKS = {
    "egress-everywhere": (_policy("open", policyTypes=["Egress"], egress=[{}]),
                          "spec.egress[0].to"),
    "egress-all-ipv4": (_policy("open", egress=[{"to": [{"ipBlock": {"cidr": "0.0.0.0/0"}}]}]),
                        "spec.egress[0].to[0].ipBlock.cidr"),
    "egress-all-ipv6": (_policy("open", egress=[{"to": [{"ipBlock": {"cidr": "::/0"}}]}]),
                        "spec.egress[0].to[0].ipBlock.cidr"),
    "egress-metadata": (_policy("open", egress=[{"to": [
        {"ipBlock": {"cidr": "169.254.169.254/32"}}]}]), "spec.egress[0].to[0].ipBlock.cidr"),
    "egress-rfc1918": (_policy("open", egress=[{"to": [{"ipBlock": {"cidr": "10.0.0.0/8"}}]}]),
                       "spec.egress[0].to[0].ipBlock.cidr"),
    "egress-ipv4-mapped": (_policy("open", egress=[{"to": [
        {"ipBlock": {"cidr": "::ffff:0:0/96"}}]}]), "spec.egress[0].to[0].ipBlock.cidr"),
    "egress-allowed-range-other-port": (_policy("open", egress=[{
        "to": [{"ipBlock": {"cidr": "203.0.113.0/24"}}], "ports": [{"port": 22}]}]),
        "spec.egress[0].to[0].ipBlock.cidr"),
    "egress-every-namespace": (_policy("open", egress=[{"to": [{"namespaceSelector": {}}]}]),
                               "spec.egress[0].to[0].namespaceSelector"),
    "egress-tenantry-system": (_policy("open", egress=[{"to": [{"namespaceSelector": {
        "matchLabels": {"kubernetes.io/metadata.name": "tenantry-system"}}}]}]),
        "spec.egress[0].to[0].namespaceSelector"),
    "egress-other-tenant": (_policy("open", egress=[{"to": [{"namespaceSelector": {
        "matchLabels": {"tenantry.dev/tenant": OTHER_TENANT}}}]}]),
        "spec.egress[0].to[0].namespaceSelector"),
    "ingress-everywhere": (_policy("open", ingress=[{}]), "spec.ingress[0].from"),
    "ingress-tenant-controlled-label": (_policy("open", ingress=[{"from": [{
        "namespaceSelector": {"matchLabels": {"team": "iso"}}}]}]),
        "spec.ingress[0].from[0].namespaceSelector"),
    "ingress-other-tenant-by-name": (_policy("open", ingress=[{"from": [{"namespaceSelector": {
        "matchExpressions": [{"key": "kubernetes.io/metadata.name", "operator": "In",
                              "values": [DEV, OTHER]}]}}]}]),
        "spec.ingress[0].from[0].namespaceSelector"),
}


@pytest.mark.parametrize("attack", sorted(ATTACKS))
def test_a_tenant_admin_cannot_widen_isolation_with_a_network_policy(
        iso: str, as_user: UserApi, attack: str) -> None:
    policy, field = ATTACKS[attack]
    networking = client.NetworkingV1Api(as_user(ADMIN))
    message = _refusal(lambda: networking.create_namespaced_network_policy(iso, policy))
    assert ISOLATION in message
    assert f"{field}: " in message and "[networkPolicy" in message, message
    # Nothing was stored.
    assert not client.NetworkingV1Api(as_user("alice")).list_namespaced_network_policy(
        iso, field_selector="metadata.name=open").items


def test_narrowing_policies_are_admitted(iso: str, as_user: UserApi) -> None:
    networking = client.NetworkingV1Api(as_user(ADMIN))
    policies = [
        _policy("web-from-dev", ingress=[{"from": [{"namespaceSelector": {
            "matchLabels": {"kubernetes.io/metadata.name": DEV}}}]}]),
        _policy("api-egress", egress=[{"to": [{"ipBlock": {"cidr": "203.0.113.64/26"}}],
                                       "ports": [{"port": 443}]}]),
        _policy("own-tenant", egress=[{"to": [{"namespaceSelector": {
            "matchLabels": {"tenantry.dev/tenant": TENANT}}}]}]),
        _policy("dns", egress=[{"to": [{
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
            "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}}}],
            "ports": [{"port": 53, "protocol": "UDP"}]}]),
    ]
    try:
        for policy in policies:
            networking.create_namespaced_network_policy(iso, policy)
    finally:
        for policy in policies:
            with contextlib.suppress(client.ApiException):
                networking.delete_namespaced_network_policy(policy["metadata"]["name"], iso)


def test_a_policy_left_wider_than_a_narrowed_allow_list_is_refused_at_its_next_update(
        iso: str, as_user: UserApi, admin_api: client.ApiClient) -> None:
    networking = client.NetworkingV1Api(as_user(ADMIN))
    custom = client.CustomObjectsApi(admin_api)
    networking.create_namespaced_network_policy(iso, _policy("v6-out", egress=[
        {"to": [{"ipBlock": {"cidr": "2001:db8:1:2::/64"}}]}]))
    try:
        custom.patch_cluster_custom_object(GROUP, VERSION, "tenants", TENANT, {"spec": {
            "network": {"egress": NETWORK["egress"][:1]}}})

        def refused() -> str | None:
            try:
                networking.patch_namespaced_network_policy(
                    "v6-out", iso, {"metadata": {"labels": {"touched": "yes"}}})
            except client.ApiException as error:
                return api_message(error) if error.status == 403 else None
            return None

        message = eventually(refused, timeout=30, what="the narrowed allow-list to apply")
        assert "spec.egress[0].to[0].ipBlock.cidr: " in message and ISOLATION in message
        # Deleting it is always possible.
        networking.delete_namespaced_network_policy("v6-out", iso)
    finally:
        custom.patch_cluster_custom_object(GROUP, VERSION, "tenants", TENANT,
                                           {"spec": {"network": NETWORK}})
        with contextlib.suppress(client.ApiException):
            networking.delete_namespaced_network_policy("v6-out", iso)


def test_a_member_cannot_mint_a_never_expiring_service_account_token(
        iso: str, as_user: UserApi) -> None:
    core = client.CoreV1Api(as_user(MEMBER))
    secret = {"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/service-account-token",
              "metadata": {"name": "forever",
                           "annotations": {"kubernetes.io/service-account.name": "default"}}}
    message = _refusal(lambda: core.create_namespaced_secret(iso, secret))
    assert ISOLATION in message and "type: must not be kubernetes.io/service-account-token" \
        in message and "[serviceAccountTokenSecret]" in message
    # Other Secrets are not even sent to the webhook (matchCondition) and work as before.
    core.create_namespaced_secret(iso, {"apiVersion": "v1", "kind": "Secret",
                                        "metadata": {"name": "plain"}, "type": "Opaque",
                                        "stringData": {"k": "v"}})
    core.delete_namespaced_secret("plain", iso)


def _service(name: str, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name}, "spec": spec}


def test_external_name_services_alias_only_the_tenants_own_services(
        iso: str, as_user: UserApi) -> None:
    core = client.CoreV1Api(as_user(MEMBER))
    for target in (f"db.{OTHER}.svc.cluster.local", "kubernetes.default.svc",
                   "metadata.google.internal", "169.254.169.254",
                   "tenantry-webhook.tenantry-system.svc"):
        message = _refusal(lambda t=target: core.create_namespaced_service(  # type: ignore[misc]
            iso, _service("alias", type="ExternalName", externalName=t)))
        assert WORKLOADS in message and "spec.externalName: " in message \
            and "[serviceExternalName]" in message, message
    core.create_namespaced_service(iso, _service("alias", type="ExternalName",
                                                 externalName=f"db.{DEV}.svc.cluster.local"))
    core.delete_namespaced_service("alias", iso)


def test_services_with_external_ips_are_refused(iso: str, as_user: UserApi) -> None:
    """Refused by the apiserver's DenyServiceExternalIPs plugin where it is on (the local control
    plane, and what the README asks of real clusters), and by Tenantry's rule where it is not
    (unit-tested: the plugin answers first here)."""
    core = client.CoreV1Api(as_user(MEMBER))
    message = _refusal(lambda: core.create_namespaced_service(iso, _service(
        "capture", ports=[{"port": 80}], externalIPs=["203.0.113.9"])))
    assert "external ip" in message.lower(), message


@pytest.fixture(scope="module")
def priority_classes(admin_api: client.ApiClient) -> Iterator[None]:
    scheduling = client.SchedulingV1Api(admin_api)
    names = [ALLOWED_CLASS, "wh-iso-premium"]
    for name in names:
        with contextlib.suppress(client.ApiException):
            scheduling.create_priority_class(client.V1PriorityClass(
                metadata=client.V1ObjectMeta(name=name), value=1000))
    yield
    for name in names:
        with contextlib.suppress(client.ApiException):
            scheduling.delete_priority_class(name)


def _pod(name: str, priority_class: str | None) -> dict[str, Any]:
    pod = in_namespace(hardened_pod(), PROD, name)
    if priority_class is not None:
        pod["spec"]["priorityClassName"] = priority_class
    return pod


@pytest.mark.parametrize("priority_class", ["system-node-critical", "system-cluster-critical",
                                            "wh-iso-premium"])
def test_pods_cannot_take_a_priority_the_tenant_does_not_allow(
        iso: str, as_user: UserApi, priority_classes: None, priority_class: str) -> None:
    core = client.CoreV1Api(as_user(MEMBER))
    message = _refusal(lambda: core.create_namespaced_pod(
        iso, _pod("greedy", priority_class), dry_run="All"))
    assert WORKLOADS in message and "spec.priorityClassName: " in message \
        and "[priorityClass]" in message, message


def test_allowed_and_default_priorities_pass(
        iso: str, as_user: UserApi, admin_api: client.ApiClient, priority_classes: None) -> None:
    core = client.CoreV1Api(as_user(MEMBER))
    core.create_namespaced_pod(iso, _pod("batch", ALLOWED_CLASS), dry_run="All")
    core.create_namespaced_pod(iso, _pod("plain", None), dry_run="All")
    # A cluster globalDefault class is filled into pods that name none, and must pass.
    scheduling = client.SchedulingV1Api(admin_api)
    scheduling.create_priority_class(client.V1PriorityClass(
        metadata=client.V1ObjectMeta(name="wh-iso-cluster-default"), value=10,
        global_default=True))
    try:
        def defaulted() -> Any:
            # The Priority plugin learns of the new class through its informer: wait for it.
            created = core.create_namespaced_pod(iso, _pod("defaulted", None), dry_run="All")
            return created if created.spec.priority_class_name else None

        created = eventually(defaulted, timeout=30, what="the default PriorityClass to apply")
        assert created.spec.priority_class_name == "wh-iso-cluster-default"
    finally:
        scheduling.delete_priority_class("wh-iso-cluster-default")


def test_isolation_refusals_are_in_the_ledger(iso: str, as_user: UserApi, ledger: Any) -> None:
    networking = client.NetworkingV1Api(as_user(ADMIN))
    _refusal(lambda: networking.create_namespaced_network_policy(
        iso, _policy("ledgered", egress=[{}])))

    def recorded() -> dict[str, Any] | None:
        for entry in reversed(ledger.entries(TENANT)):
            if "ledgered" in json.dumps(entry["changes"]) or "ledgered" in str(entry):
                return entry
        return None

    entry = eventually(recorded, timeout=30, what="the refusal in the tenant's ledger chain")
    assert ADMIN in json.dumps(entry["identity"])


@pytest.mark.parametrize(("kind", "name"), [("Group", "system:authenticated"),
                                            ("Group", "system:unauthenticated"),
                                            ("Group", "system:serviceaccounts"),
                                            ("User", "system:anonymous")])
def test_an_owner_cannot_open_the_tenant_to_everyone(iso: str, as_user: UserApi, kind: str,
                                                     name: str) -> None:
    rbac = client.RbacAuthorizationV1Api(as_user("alice"))
    binding = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
               "metadata": {"name": "share-with-everyone"},
               "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                           "name": "tenantry:viewer"},
               "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": kind,
                             "name": name}]}
    message = _refusal(lambda: rbac.create_namespaced_role_binding(iso, binding, dry_run="All"))
    assert "must not grant access to everyone" in message, message
    # Sharing with someone named stays possible.
    binding["subjects"] = [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User",
                            "name": "auditor@acme.example"}]
    rbac.create_namespaced_role_binding(iso, binding, dry_run="All")
