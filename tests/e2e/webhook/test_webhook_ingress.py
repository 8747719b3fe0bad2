"""Ingresses through the real apiserver, as each tenant's own tiers: no tenant can claim a host
another tenant (or the platform) serves, nor use snippet annotations, nor a host outside the
Tenant's allowedHostnames; a tenant may share a host across its own namespaces.

Two tenants for the module: `ing-a` (Audit mode: the rules that protect other tenants refuse in
every mode) with two namespaces, and `ing-b` (Deny, allowedHostnames *.example.test).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from kubernetes import client

from tenantry.admission import ingress
from tests.conftest import OperatorProcess, UserApi, api_message
from tests.e2e.webhook.conftest import session_tenant
from tests.e2e.webhook.webhook_helpers import Outcome, WebhookProcess
from tests.helpers import eventually, unique

INGRESSES = "ingresses.admission.tenantry.dev"
DENIED = f'admission webhook "{INGRESSES}" denied the request'
A_ONE, A_TWO, B = "ing-a-one", "ing-a-two", "ing-b"


def an_ingress(namespace: str, *hosts: str, tls: list[str] | None = None,
               annotations: dict[str, str] | None = None) -> dict[str, Any]:
    backend = {"service": {"name": "web", "port": {"number": 80}}}
    spec: dict[str, Any] = {"rules": [
        {"host": h, "http": {"paths": [{"path": "/", "pathType": "Prefix",
                                        "backend": backend}]}} for h in hosts]}
    if tls is not None:
        spec["tls"] = [{"hosts": tls, "secretName": "web-tls"}]
    return {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
            "metadata": {"name": unique("web"), "namespace": namespace,
                         "annotations": annotations or {}},
            "spec": spec}


@pytest.fixture(scope="module")
def two_tenants(admin_api: client.ApiClient, operator: OperatorProcess,
                webhook: WebhookProcess) -> Iterator[None]:
    with session_tenant(admin_api, "ing-a", [A_ONE, A_TWO],
                        members=[{"kind": "User", "name": "alice", "role": "owner"},
                                 {"kind": "User", "name": "ann", "role": "admin"}],
                        podSecurity={"mode": "Audit"}), \
            session_tenant(admin_api, "ing-b", [B],
                           members=[{"kind": "User", "name": "alice", "role": "owner"},
                                    {"kind": "User", "name": "bob", "role": "admin"}],
                           ingress={"allowedHostnames": ["*.example.test"]}):
        yield


def creator(identity: client.ApiClient) -> Callable[..., Outcome]:
    """Create an Ingress as `identity` (dry run unless told); the outcome, refused or not."""
    api = client.NetworkingV1Api(identity)

    def create(obj: dict[str, Any], *, dry_run: bool = True) -> Outcome:
        try:
            api.create_namespaced_ingress(obj["metadata"]["namespace"], obj,
                                          dry_run="All" if dry_run else None)
        except client.ApiException as error:
            return Outcome(error.status, {"message": api_message(error)}, ())
        return Outcome(201, {}, ())

    return create


@pytest.fixture
def stored(admin_api: client.ApiClient) -> Iterator[Callable[..., dict[str, Any]]]:
    """Create an Ingress as `user` for real; every one is deleted afterwards."""
    made: list[dict[str, Any]] = []
    networking = client.NetworkingV1Api(admin_api)

    def store(create: Callable[..., Outcome], obj: dict[str, Any]) -> dict[str, Any]:
        outcome = create(obj, dry_run=False)
        assert outcome.allowed, outcome
        made.append(obj)
        return obj

    yield store
    for obj in made:
        with contextlib.suppress(client.ApiException):
            networking.delete_namespaced_ingress(obj["metadata"]["name"],
                                                 obj["metadata"]["namespace"])


def test_a_host_another_tenant_serves_cannot_be_claimed(
        two_tenants: None, as_user: UserApi, stored: Callable[..., dict[str, Any]]) -> None:
    ann, bob = creator(as_user("ann")), creator(as_user("bob"))
    host = f"{unique('shop')}.example.test"
    stored(ann, an_ingress(A_ONE, host))
    # At once (no waiting for any cache): a stored host is always refused.
    outcome = bob(an_ingress(B, host))
    assert outcome.status == 403 and DENIED in outcome.message, outcome
    assert outcome.findings() == {("spec.rules[0].host", ingress.HOST_CLAIMED)}
    assert "tenant 'ing-b'" in outcome.message
    assert "ing-a" not in outcome.message.replace("tenant 'ing-b'", "")  # A's name is not told
    # ... nor through TLS only, nor under a wildcard that covers it.
    sneaky = an_ingress(B, f"free-{host}", tls=[host])
    sneaked = bob(sneaky)
    assert sneaked.findings() == {("spec.tls[0].hosts[0]", ingress.HOST_CLAIMED)}, sneaked
    wildcard = bob(an_ingress(B, "*.example.test"))  # matches the host, one label down
    assert wildcard.findings() == {("spec.rules[0].host", ingress.HOST_CLAIMED)}, wildcard
    assert bob(an_ingress(B, f"*.{host}")).allowed  # x.shop-...: no name matches both
    # A wildcard A serves takes every one-label name under it from B.
    zone = unique("zone")
    stored(ann, an_ingress(A_ONE, f"*.{zone}.example.test"))
    assert bob(an_ingress(B, f"api.{zone}.example.test")).findings() == {
        ("spec.rules[0].host", ingress.HOST_CLAIMED)}


def test_audit_mode_does_not_let_a_tenant_take_another_ones_host(
        two_tenants: None, as_user: UserApi, stored: Callable[..., dict[str, Any]]) -> None:
    bob, ann = creator(as_user("bob")), creator(as_user("ann"))
    host = f"{unique('b-only')}.example.test"
    stored(bob, an_ingress(B, host))
    outcome = ann(an_ingress(A_TWO, host))
    assert outcome.status == 403 and DENIED in outcome.message, outcome
    assert "(podSecurity.mode Audit)" in outcome.message
    assert outcome.findings() == {("spec.rules[0].host", ingress.HOST_CLAIMED)}


def test_a_tenant_reuses_its_own_host_in_its_other_namespace(
        two_tenants: None, as_user: UserApi, stored: Callable[..., dict[str, Any]]) -> None:
    ann, alice = creator(as_user("ann")), creator(as_user("alice"))
    host = f"{unique('shared')}.example.test"
    stored(ann, an_ingress(A_ONE, host))
    outcome = alice(an_ingress(A_TWO, host, tls=[host]))
    assert outcome.allowed, outcome


def test_a_host_the_platform_serves_outside_any_tenant_cannot_be_claimed(
        two_tenants: None, outsider: str, admin_api: client.ApiClient, as_user: UserApi,
        stored: Callable[..., dict[str, Any]]) -> None:
    platform = f"{unique('login')}.example.test"
    stored(creator(admin_api), an_ingress(outsider, platform))
    outcome = creator(as_user("bob"))(an_ingress(B, platform))
    assert outcome.findings() == {("spec.rules[0].host", ingress.HOST_CLAIMED)}, outcome


def test_a_deleted_ingress_frees_its_host(
        two_tenants: None, as_user: UserApi, admin_api: client.ApiClient,
        stored: Callable[..., dict[str, Any]]) -> None:
    ann, bob = creator(as_user("ann")), creator(as_user("bob"))
    host = f"{unique('moving')}.example.test"
    # The same name in both of A's namespaces: deleting one leaves the other's host taken.
    first = stored(ann, an_ingress(A_ONE, host))
    twin = an_ingress(A_TWO, f"other-{host}")
    twin["metadata"]["name"] = first["metadata"]["name"]
    stored(ann, twin)
    assert bob(an_ingress(B, host)).findings() == {("spec.rules[0].host", ingress.HOST_CLAIMED)}
    client.NetworkingV1Api(admin_api).delete_namespaced_ingress(first["metadata"]["name"], A_ONE)
    eventually(lambda: bob(an_ingress(B, host)).allowed, timeout=15,
               what="the freed host to be admitted for tenant ing-b")
    assert bob(an_ingress(B, f"other-{host}")).findings() == {
        ("spec.rules[0].host", ingress.HOST_CLAIMED)}


def test_an_update_cannot_add_a_claimed_host(
        two_tenants: None, as_user: UserApi, stored: Callable[..., dict[str, Any]]) -> None:
    ann, bob = creator(as_user("ann")), creator(as_user("bob"))
    taken = f"{unique('taken')}.example.test"
    stored(ann, an_ingress(A_ONE, taken))
    mine = stored(bob, an_ingress(B, f"{unique('mine')}.example.test"))
    networking = client.NetworkingV1Api(as_user("bob"))
    name = mine["metadata"]["name"]
    with pytest.raises(client.ApiException) as refused:
        networking.patch_namespaced_ingress(name, B, {"spec": {"tls": [{"hosts": [taken]}]}})
    assert refused.value.status == 403 and DENIED in api_message(refused.value)
    assert "spec.tls[0].hosts[0]" in api_message(refused.value)
    # Changes that leave the hosts alone still go through.
    networking.patch_namespaced_ingress(name, B, {"metadata": {"labels": {"tier": "web"}}})


@pytest.mark.parametrize("key", ["nginx.ingress.kubernetes.io/configuration-snippet",
                                 "nginx.ingress.kubernetes.io/server-snippet",
                                 "nginx.org/location-snippets"])
def test_snippet_annotations_are_refused_in_every_mode(two_tenants: None, as_user: UserApi,
                                                       key: str) -> None:
    body = {key: "location /steal { return 200 $hostname; }"}
    for create, namespace in ((creator(as_user("bob")), B), (creator(as_user("ann")), A_ONE)):
        outcome = create(an_ingress(namespace, f"{unique('s')}.example.test", annotations=body))
        assert outcome.status == 403 and DENIED in outcome.message, outcome
        assert outcome.findings() == {(f'metadata.annotations["{key}"]',
                                       ingress.SNIPPET_ANNOTATION)}, outcome


def test_an_annotation_naming_another_tenants_secret_is_refused_in_every_mode(
        two_tenants: None, as_user: UserApi) -> None:
    """bob (tenant B) points the shared controller at tenant A's client CA: the controller
    would read it with its own identity. Refused in Deny and Audit mode alike; his own
    namespace's Secret, named either way, is fine."""
    key = "nginx.ingress.kubernetes.io/auth-tls-secret"
    for create, namespace in ((creator(as_user("bob")), B), (creator(as_user("ann")), A_ONE)):
        foreign = B if namespace == A_ONE else A_ONE
        outcome = create(an_ingress(namespace, f"{unique('r')}.example.test",
                                    annotations={key: f"{foreign}/client-ca"}))
        assert outcome.status == 403 and DENIED in outcome.message, outcome
        assert outcome.findings() == {(f'metadata.annotations["{key}"]',
                                       ingress.FOREIGN_REFERENCE)}, outcome
        for own in (f"{namespace}/client-ca", "client-ca"):
            admitted = create(an_ingress(namespace, f"{unique('r')}.example.test",
                                         annotations={key: own}))
            assert admitted.status == 201, admitted


def test_a_catch_all_is_refused(two_tenants: None, as_user: UserApi) -> None:
    obj = an_ingress(B, "")
    obj["spec"]["rules"][0].pop("host")
    outcome = creator(as_user("bob"))(obj)
    assert outcome.findings() == {("spec.rules[0].host", ingress.CATCH_ALL)}, outcome


def test_a_host_outside_allowed_hostnames_is_refused(two_tenants: None,
                                                      as_user: UserApi) -> None:
    bob = creator(as_user("bob"))
    outcome = bob(an_ingress(B, f"{unique('x')}.example.org"))
    assert outcome.status == 403 and DENIED in outcome.message, outcome
    assert outcome.findings() == {("spec.rules[0].host", ingress.HOST_NOT_ALLOWED)}
    assert "spec.ingress.allowedHostnames (*.example.test)" in outcome.message
    assert bob(an_ingress(B, f"{unique('x')}.deep.example.test")).allowed
