"""`POST /v1/tenants/{tenant}/rotations`: a tenant admin rotates now through the API, which sets
the RotationPolicy's spec.trigger in the real apiserver as its own identity (with exactly the
RBAC of manifests/api/rbac.yaml) and records who asked in the tenant's ledger chain.

Attacked the ways a tenant user would: a role below admin, another tenant's route, a policy in
a namespace that is not the tenant's (named through the caller's own tenant), a policy that
does not exist, malformed and over-long references; and the API's identity itself may do
nothing with RotationPolicies beyond get and patch.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, cast

import httpx
import pytest
import yaml
from kubernetes import client

from tenantry import kube
from tenantry.model import rotation as rotation_model
from tests.conftest import REPO_ROOT
from tests.e2e.api.conftest import ApiDatabase, TenantMaker
from tests.e2e.api.test_memberships import bearer, create_key, sign_in, wait_role
from tests.helpers import GROUP, VERSION, eventually

PolicyMaker = Callable[[str], str]
"""`policy(tenant_name)` -> "NS/NAME" of a new RotationPolicy in that tenant's namespace."""


def tenant_namespace(tenant_name: str) -> str:
    return f"{tenant_name}-ns"  # the `tenant` fixture's one namespace


@pytest.fixture
def policy(admin_api: client.ApiClient) -> Iterator[PolicyMaker]:
    yield from policies(admin_api)


def policies(admin_api: client.ApiClient) -> Iterator[PolicyMaker]:
    """Create the tenant's namespace (unless the operator, when another module started it,
    already did) and a RotationPolicy; delete the namespaces afterwards (the body of `policy`
    fixtures)."""
    core, custom = client.CoreV1Api(admin_api), client.CustomObjectsApi(admin_api)
    namespaces: list[str] = []

    def make(tenant_name: str) -> str:
        namespace = tenant_namespace(tenant_name)
        if namespace not in namespaces:
            try:
                core.create_namespace(client.V1Namespace(
                    metadata=client.V1ObjectMeta(name=namespace)))
            except client.ApiException as error:
                if error.status != 409:
                    raise
            namespaces.append(namespace)
        name = f"rotate-{uuid.uuid4().hex[:6]}"
        custom.create_namespaced_custom_object(GROUP, VERSION, namespace, "rotationpolicies", {
            "apiVersion": f"{GROUP}/{VERSION}", "kind": "RotationPolicy",
            "metadata": {"name": name},
            "spec": {"targets": ["Credentials"], "trigger": "initial"}})
        return f"{namespace}/{name}"

    yield make
    for namespace in namespaces:
        with contextlib.suppress(client.ApiException):
            core.delete_namespace(namespace)


def read_policy(admin_api: client.ApiClient, reference: str) -> dict[str, Any]:
    namespace, _, name = reference.partition("/")
    return cast(dict[str, Any], client.CustomObjectsApi(admin_api).get_namespaced_custom_object(
        GROUP, VERSION, namespace, "rotationpolicies", name))


def rotate(http: httpx.Client, token: str, tenant_name: str, body: object) -> httpx.Response:
    return http.post(f"/v1/tenants/{tenant_name}/rotations", json=body, headers=bearer(token))


def ledger_entry(api_db: ApiDatabase, tenant_name: str, action: str) -> list[Any]:
    def landed() -> list[Any] | None:
        rows = [row for row in api_db.ledger_entries(action) if row["chain"] == tenant_name]
        return rows or None

    return eventually(landed, timeout=30, what=f"{action} on chain {tenant_name}")


def test_tenant_admin_rotates_now_through_the_api_as_the_apis_identity(
        client: httpx.Client, api_db: ApiDatabase, admin_api: client.ApiClient,
        tenant: TenantMaker, policy: PolicyMaker) -> None:
    admin = sign_in(client, api_db)
    acme = tenant({admin["username"]: "admin"})
    wait_role(client, admin["access_token"], acme, "admin")
    target = policy(acme)

    response = rotate(client, admin["access_token"], acme, {"policy": target})
    assert response.status_code == 202, response.text
    answer = response.json()
    assert answer["policy"] == target and answer["previousTrigger"] == "initial"
    assert answer["trigger"].startswith("api:")
    stored = read_policy(admin_api, target)
    assert stored["spec"]["trigger"] == answer["trigger"]
    assert stored["metadata"]["generation"] == answer["generation"]
    managers = {entry["manager"] for entry in stored["metadata"]["managedFields"]}
    assert "tenantry-api" in managers

    # Each request is a new rotation: a second one sets another value.
    again = rotate(client, admin["access_token"], acme, {"policy": target}).json()
    assert again["trigger"] != answer["trigger"] and again["previousTrigger"] == answer["trigger"]

    entries = ledger_entry(api_db, acme, "rotation.trigger.requested")
    first = entries[0]
    assert first["actor"] == admin["username"] and first["component"] == "api"
    assert (first["resource_kind"], first["resource_namespace"], first["resource_name"]) == \
        ("RotationPolicy", *target.split("/"))
    assert '"initial"' in first["changes"] and answer["trigger"] in first["changes"]


def test_an_admin_api_key_can_rotate_and_is_named_by_its_prefix(
        client: httpx.Client, api_db: ApiDatabase, admin_api: client.ApiClient,
        tenant: TenantMaker, policy: PolicyMaker) -> None:
    owner = sign_in(client, api_db)
    acme = tenant({owner["username"]: "owner"})
    wait_role(client, owner["access_token"], acme, "owner")
    target = policy(acme)
    created = create_key(client, owner["access_token"], acme, "admin").json()
    response = rotate(client, created["key"], acme, {"policy": target})
    assert response.status_code == 202, response.text
    assert read_policy(admin_api, target)["spec"]["trigger"] == response.json()["trigger"]
    entries = ledger_entry(api_db, acme, "rotation.trigger.requested")
    assert entries[0]["actor"] == f"api-key:{created['key'][:12]}"


def test_members_viewers_and_other_tenants_cannot_rotate(
        client: httpx.Client, api_db: ApiDatabase, admin_api: client.ApiClient,
        tenant: TenantMaker, policy: PolicyMaker) -> None:
    member, viewer, stranger = (sign_in(client, api_db) for _ in range(3))
    acme = tenant({member["username"]: "member", viewer["username"]: "viewer"})
    other = tenant({stranger["username"]: "owner"})
    wait_role(client, member["access_token"], acme, "member")
    wait_role(client, stranger["access_token"], other, "owner")
    target = policy(acme)
    for who in (member, viewer, stranger):
        response = rotate(client, who["access_token"], acme, {"policy": target})
        assert response.status_code == 403, response.text
    assert client.post(f"/v1/tenants/{acme}/rotations", json={"policy": target}).status_code \
        == 401
    # The stranger is owner of their own tenant: naming acme's policy through it is refused
    # exactly like a policy that does not exist, so nothing about acme is learnt.
    through_own = rotate(client, stranger["access_token"], other, {"policy": target})
    missing = rotate(client, stranger["access_token"], other,
                     {"policy": f"{tenant_namespace(other)}/no-such-policy"})
    assert through_own.status_code == missing.status_code == 404
    assert through_own.json()["detail"].endswith(f"in tenant {other}'s namespaces")
    assert read_policy(admin_api, target)["spec"]["trigger"] == "initial"


@pytest.mark.parametrize("body", [
    {}, {"policy": ""}, {"policy": "no-slash"}, {"policy": "a/b/c"}, {"policy": "NS/name"},
    {"policy": "ns/" + "n" * 254}, {"policy": "../etc"}, {"policy": "ns/name", "trigger": "x"},
    {"policy": ["ns/name"]}, "ns/name"])
def test_malformed_policy_references_are_refused_with_422(
        client: httpx.Client, api_db: ApiDatabase, tenant: TenantMaker, body: object) -> None:
    admin = sign_in(client, api_db)
    acme = tenant({admin["username"]: "admin"})
    wait_role(client, admin["access_token"], acme, "admin")
    response = rotate(client, admin["access_token"], acme, body)
    assert response.status_code == 422, response.text
    assert "policy" in response.text or "trigger" in response.text or "body" in response.text


def test_the_apis_identity_can_only_get_and_patch_rotation_policies(
        api_kubeconfig: Path, admin_api: client.ApiClient, tenant: TenantMaker,
        policy: PolicyMaker) -> None:
    acme = tenant({})
    namespace, _, name = policy(acme).partition("/")
    api = kube.api_client(api_kubeconfig)
    custom = client.CustomObjectsApi(api)
    try:
        assert custom.get_namespaced_custom_object(GROUP, VERSION, namespace,
                                                   "rotationpolicies", name)
        attempts: list[Callable[[], object]] = [
            lambda: custom.list_namespaced_custom_object(GROUP, VERSION, namespace,
                                                         "rotationpolicies"),
            lambda: custom.delete_namespaced_custom_object(GROUP, VERSION, namespace,
                                                           "rotationpolicies", name),
            lambda: custom.create_namespaced_custom_object(
                GROUP, VERSION, namespace, "rotationpolicies",
                {"apiVersion": f"{GROUP}/{VERSION}", "kind": "RotationPolicy",
                 "metadata": {"name": "planted"},
                 "spec": {"targets": ["Credentials"], "trigger": "x"}}),
            lambda: custom.patch_cluster_custom_object(GROUP, VERSION, "tenants", acme,
                                                       {"spec": {"deletionPolicy": "Delete"}}),
        ]
        for attempt in attempts:
            with pytest.raises(client.ApiException) as refused:
                attempt()
            assert refused.value.status == 403
    finally:
        api.close()


TRIGGER_ONLY = REPO_ROOT / "manifests/api/trigger-only.yaml"


def test_the_trigger_only_policy_covers_every_spec_field_but_the_trigger() -> None:
    """A RotationPolicy field the admission policy does not compare would be one a compromised
    API could change: adding a field to the model must add it there."""
    expressions = " ".join(validation["expression"]
                           for document in yaml.safe_load_all(TRIGGER_ONLY.read_text())
                           if document["kind"] == "ValidatingAdmissionPolicy"
                           for validation in document["spec"]["validations"])
    fields = {field.alias or name
              for name, field in rotation_model.RotationPolicySpec.model_fields.items()}
    for field in fields - {"trigger"}:
        assert f"object.spec.?{field} ==" in expressions or \
            f"object.spec.{field} ==" in expressions, field


def test_in_the_apiserver_the_apis_identity_may_change_the_trigger_only(
        api_kubeconfig: Path, admin_api: client.ApiClient, tenant: TenantMaker,
        policy: PolicyMaker) -> None:
    """manifests/api/trigger-only.yaml, enforced by the real apiserver, against the API's
    identity acting outside the API's code (a compromised pod with its token)."""
    core, custom = client.CoreV1Api(admin_api), client.CustomObjectsApi(admin_api)
    kube.apply(admin_api, list(yaml.safe_load_all(TRIGGER_ONLY.read_text())))
    namespace, _, name = policy(tenant({})).partition("/")
    existing = {ns.metadata.name for ns in core.list_namespace().items}
    created_system = "tenantry-system" not in existing
    if created_system:
        core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(
            name="tenantry-system")))
    custom.create_namespaced_custom_object(GROUP, VERSION, "tenantry-system",
                                           "rotationpolicies", {
        "apiVersion": f"{GROUP}/{VERSION}", "kind": "RotationPolicy",
        "metadata": {"name": "platform-keys-e2e"},
        "spec": {"targets": ["MasterKey"], "trigger": "initial"}})
    api = kube.api_client(api_kubeconfig)
    as_api = client.CustomObjectsApi(api)

    def patch(where: str, what: str, body: dict[str, Any]) -> Any:
        return as_api.patch_namespaced_custom_object(GROUP, VERSION, where, "rotationpolicies",
                                                     what, body)

    try:
        # The policy takes effect once the apiserver has compiled it: probe until refused.
        def refused_schedule() -> str | None:
            try:
                patch(namespace, name, {"spec": {"schedule": "@daily"}})
            except client.ApiException as error:
                return str(error.body) if error.status in (403, 422) else None
            patch(namespace, name, {"spec": {"schedule": None}})  # undo; retry
            return None

        assert "spec.trigger only" in eventually(refused_schedule, timeout=30,
                                                 what="the trigger-only policy in force")
        refusals = {
            "suspend": (namespace, name, {"spec": {"suspend": True}}),
            "targets": (namespace, name, {"spec": {"targets": ["MasterKey"]}}),
            "annotation": (namespace, name, {"metadata": {"annotations": {
                "tenantry.dev/backup-confirmed": "v2:x"}}}),
            "label": (namespace, name, {"metadata": {"labels": {"x": "y"}}}),
            "platform policy": ("tenantry-system", "platform-keys-e2e",
                                {"spec": {"trigger": "now"}}),
        }
        for case, (where, what, body) in refusals.items():
            with pytest.raises(client.ApiException) as denied:
                patch(where, what, body)
            assert denied.value.status in (403, 422), case
        assert patch(namespace, name, {"spec": {"trigger": "allowed"}})["spec"]["trigger"] \
            == "allowed"
        stored = read_policy(admin_api, f"{namespace}/{name}")
        assert "schedule" not in stored["spec"] and stored["spec"]["suspend"] is False
        assert read_policy(admin_api, "tenantry-system/platform-keys-e2e")["spec"][
            "trigger"] == "initial"
    finally:
        api.close()
        custom.delete_namespaced_custom_object(GROUP, VERSION, "tenantry-system",
                                               "rotationpolicies", "platform-keys-e2e")
        if created_system:
            core.delete_namespace("tenantry-system")
        admission = client.AdmissionregistrationV1Api(admin_api)
        admission.delete_validating_admission_policy_binding(
            "tenantry-api-rotation-trigger-only")
        admission.delete_validating_admission_policy("tenantry-api-rotation-trigger-only")
