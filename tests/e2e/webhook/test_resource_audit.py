"""`kubectl apply` of a Tenant by a person lands in the ledger with her identity, before the change
happens; with the ledger down, the change is refused (fail closed)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client

from tests.conftest import OPERATOR_USER, Ledger, OperatorProcess, UserApi, api_message
from tests.e2e.webhook.webhook_helpers import WebhookProcess
from tests.helpers import GROUP, VERSION, eventually, unique

GROUPS = ["platform-team", "system:authenticated"]


@pytest.fixture
def alice(admin_api: client.ApiClient, as_user: UserApi) -> Iterator[client.CustomObjectsApi]:
    """A platform engineer allowed to manage Tenants, and nothing else."""
    name = unique("alice")
    rbac = client.RbacAuthorizationV1Api(admin_api)
    rbac.create_cluster_role({"metadata": {"name": name}, "rules": [
        {"apiGroups": [GROUP], "resources": ["tenants"],
         "verbs": ["get", "list", "create", "patch", "update", "delete"]}]})
    rbac.create_cluster_role_binding({
        "metadata": {"name": name},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                    "name": name},
        "subjects": [{"kind": "User", "name": name, "apiGroup": "rbac.authorization.k8s.io"}]})
    api = client.CustomObjectsApi(as_user(name, GROUPS))
    api.username = name  # type: ignore[attr-defined]
    yield api
    rbac.delete_cluster_role_binding(name)
    rbac.delete_cluster_role(name)


def _tenant(name: str, owner: str) -> dict[str, Any]:
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "Tenant", "metadata": {"name": name},
            "spec": {"members": [{"kind": "User", "name": owner, "role": "owner"}],
                     "namespaces": [{"name": f"{name}-app"}], "deletionPolicy": "Delete"}}


def test_alices_apply_is_recorded_with_her_identity_and_the_operators_writes_are_not(
        alice: client.CustomObjectsApi, admin_api: client.ApiClient, ledger: Ledger,
        operator: OperatorProcess, webhook: WebhookProcess) -> None:
    username = alice.username  # type: ignore[attr-defined]
    name = unique("audited")
    custom = client.CustomObjectsApi(admin_api)
    alice.create_cluster_custom_object(GROUP, VERSION, "tenants", _tenant(name, "bob"))
    try:
        alice.patch_cluster_custom_object(GROUP, VERSION, "tenants", name, {"spec": {"members": [
            {"kind": "User", "name": "bob", "role": "owner"},
            {"kind": "User", "name": "carol", "role": "viewer"}]}})
        # The operator has meanwhile written finalizers and annotations to the Tenant.
        eventually(lambda: any(e["action"] == "tenant.reconcile" for e in ledger.entries(name)),
                   what="the operator's own entry")
        admitted = [e for e in ledger.entries(name) if e["component"] == "admission"]
        # The apiserver re-runs admission (under a fresh review uid) when its update loop
        # retries after a conflict, as when the operator writes the same Tenant meanwhile: one
        # change may be recorded twice in a row, identically. Never as a different change.
        admitted = [e for i, e in enumerate(admitted)
                    if i == 0 or (e["action"], e["actor"], e["changes"]) != (
                        admitted[i - 1]["action"], admitted[i - 1]["actor"],
                        admitted[i - 1]["changes"])]
        assert [e["action"] for e in admitted] == ["tenant.create", "tenant.update"]
        create, update = admitted
        assert create["actor"] == username and create["actor_kind"] == "user"
        assert create["identity"]["username"] == username
        assert create["identity"]["groups"] == GROUPS
        assert create["request_id"]
        assert update["changes"]["fields"] == ["spec.members"]
        # The operator's writes go through the operator's own records, never twice.
        assert all(e["actor"] != OPERATOR_USER for e in admitted)
    finally:
        custom.delete_cluster_custom_object(GROUP, VERSION, "tenants", name)
    deleted = eventually(lambda: [e for e in ledger.entries(name)
                                  if e["action"] == "tenant.delete"], what="the delete entry")
    assert deleted[0]["actor"] != username  # the admin deleted it
    result = ledger.verify(name)
    assert result.ok, result.describe()


def test_with_the_ledger_down_changes_to_tenants_are_refused(
        alice: client.CustomObjectsApi, admin_api: client.ApiClient, ledger: Ledger,
        webhook: WebhookProcess) -> None:
    name = unique("unrecorded")
    with ledger.outage():
        with pytest.raises(client.ApiException) as refused:
            alice.create_cluster_custom_object(GROUP, VERSION, "tenants", _tenant(name, "bob"))
        assert refused.value.status == 503
        assert "audit ledger is unavailable" in api_message(refused.value)
        with pytest.raises(client.ApiException):
            client.CustomObjectsApi(admin_api).get_cluster_custom_object(
                GROUP, VERSION, "tenants", name)
        # A dry run records nothing, so it needs no ledger.
        alice.create_cluster_custom_object(GROUP, VERSION, "tenants", _tenant(name, "bob"),
                                           dry_run="All")
    created = eventually(lambda: _create(alice, name), timeout=30,
                         what="the create to be admitted once the ledger is back")
    with contextlib.suppress(client.ApiException):
        client.CustomObjectsApi(admin_api).delete_cluster_custom_object(
            GROUP, VERSION, "tenants", name)
    assert created
    assert next(e["action"] for e in ledger.entries(name) if e["component"] == "admission") == \
        "tenant.create"


def _create(api: client.CustomObjectsApi, name: str) -> bool:
    api.create_cluster_custom_object(GROUP, VERSION, "tenants", _tenant(name, "bob"))
    return True
