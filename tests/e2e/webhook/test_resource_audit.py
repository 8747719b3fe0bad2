"""`kubectl apply` of a Tenant by a person lands in the ledger with her identity, before the change
happens, as a request Tenantry admitted (never as a change the cluster made); with the ledger
down, the change is refused (fail closed)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from kubernetes import client

from tests.conftest import OPERATOR_USER, Ledger, OperatorProcess, UserApi, api_message
from tests.e2e.webhook.test_webhook_metrics import scrape, total
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
        assert [e["action"] for e in admitted] == ["tenant.create.requested",
                                                   "tenant.update.requested"]
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
                                  if e["action"] == "tenant.delete.requested"],
                         what="the delete entry")
    assert deleted[0]["actor"] != username  # the admin deleted it
    result = ledger.verify(name)
    assert result.ok, result.describe()


def test_with_the_ledger_down_changes_to_tenants_are_refused(
        alice: client.CustomObjectsApi, admin_api: client.ApiClient, ledger: Ledger,
        webhook: WebhookProcess) -> None:
    name = unique("unrecorded")
    failures = "tenantry_webhook_ledger_record_failures_total"
    before = total(scrape(webhook)[0], failures)
    with ledger.outage():
        with pytest.raises(client.ApiException) as refused:
            alice.create_cluster_custom_object(GROUP, VERSION, "tenants", _tenant(name, "bob"))
        assert refused.value.status == 503
        assert "audit ledger is unavailable" in api_message(refused.value)
        # ... and the webhook's failure counter says so, for the alert.
        assert total(scrape(webhook)[0], failures) > before
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
        "tenant.create.requested"


def _create(api: client.CustomObjectsApi, name: str) -> bool:
    api.create_cluster_custom_object(GROUP, VERSION, "tenants", _tenant(name, "bob"))
    return True


def _admission_entries(ledger: Ledger, chain: str) -> list[dict[str, Any]]:
    return [e for e in ledger.entries(chain) if e["component"] == "admission"]


def test_a_create_the_apiserver_refuses_after_tenantry_admitted_it_is_not_called_admitted(
        alice: client.CustomObjectsApi, admin_api: client.ApiClient, ledger: Ledger,
        webhook: WebhookProcess) -> None:
    """Storage refuses a second CREATE of an existing name *after* every admission webhook ran:
    the ledger holds that request as requested and admitted by Tenantry, nothing more."""
    name = unique("refused-later")
    alice.create_cluster_custom_object(GROUP, VERSION, "tenants", _tenant(name, "bob"))
    try:
        with pytest.raises(client.ApiException) as refused:
            alice.create_cluster_custom_object(GROUP, VERSION, "tenants", _tenant(name, "eve"))
        assert refused.value.status == 409  # AlreadyExists: the cluster refused the change
        entries = eventually(lambda: [e for e in _admission_entries(ledger, name)
                                      if e["action"].startswith("tenant.create")] or None,
                             what="the create entries")
        assert len(entries) >= 2, entries  # the refused one is there too ...
        for entry in entries:  # ... in words that claim no more than what was known
            assert entry["action"] == "tenant.create.requested"
            assert entry["changes"]["decision"] == "admitted-by-tenantry"
            assert entry["action"] not in ("tenant.create", "tenant.created")
        stored = client.CustomObjectsApi(admin_api).get_cluster_custom_object(
            GROUP, VERSION, "tenants", name)
        assert stored["spec"]["members"][0]["name"] == "bob"  # eve's create never happened
    finally:
        client.CustomObjectsApi(admin_api).delete_cluster_custom_object(
            GROUP, VERSION, "tenants", name)


def test_a_change_a_validating_admission_policy_refuses_is_never_recorded_as_admitted(
        alice: client.CustomObjectsApi, admin_api: client.ApiClient, ledger: Ledger,
        webhook: WebhookProcess) -> None:
    """The apiserver runs ValidatingAdmissionPolicies before validating webhooks: a change a
    policy refuses never reaches Tenantry, and the ledger must not hold an entry claiming it."""
    name = unique("vap-refused")
    policy = unique("no-frozen-tenants")
    registration = client.AdmissionregistrationV1Api(admin_api)
    registration.create_validating_admission_policy({
        "metadata": {"name": policy},
        "spec": {"failurePolicy": "Fail",
                 "matchConstraints": {"resourceRules": [{
                     "apiGroups": [GROUP], "apiVersions": ["*"], "resources": ["tenants"],
                     "operations": ["UPDATE"]}]},
                 "validations": [{
                     "expression": f"object.metadata.name != '{name}' || "
                                   "!has(object.metadata.labels) || "
                                   "!('example.com/frozen' in object.metadata.labels)",
                     "message": "frozen tenants may not be changed"}]}})
    registration.create_validating_admission_policy_binding({
        "metadata": {"name": policy},
        "spec": {"policyName": policy, "validationActions": ["Deny"]}})
    frozen = {"metadata": {"labels": {"example.com/frozen": "yes"}}}
    try:
        alice.create_cluster_custom_object(GROUP, VERSION, "tenants", _tenant(name, "bob"))

        def enforced() -> bool:
            # Dry runs are never recorded, so probing leaves the ledger alone.
            try:
                alice.patch_cluster_custom_object(GROUP, VERSION, "tenants", name, frozen,
                                                  dry_run="All")
            except client.ApiException as error:
                return error.status in (400, 403, 422) and "frozen" in api_message(error)
            return False

        eventually(enforced, timeout=30, what="the policy to be enforced")
        before = _admission_entries(ledger, name)
        with pytest.raises(client.ApiException) as refused:
            alice.patch_cluster_custom_object(GROUP, VERSION, "tenants", name, frozen)
        assert "frozen tenants may not be changed" in api_message(refused.value)
        after = _admission_entries(ledger, name)
        assert [e for e in after if e not in before] == []
        assert all(e["action"].endswith(".requested") for e in after)
        assert all(e["changes"]["decision"] == "admitted-by-tenantry" for e in after)
        assert not any(e["action"].startswith("tenant.update") for e in after)
    finally:
        registration.delete_validating_admission_policy_binding(policy)
        registration.delete_validating_admission_policy(policy)
        client.CustomObjectsApi(admin_api).delete_cluster_custom_object(
            GROUP, VERSION, "tenants", name)


def test_concurrent_changes_to_one_tenant_are_each_recorded_on_a_gapless_chain(
        alice: client.CustomObjectsApi, admin_api: client.ApiClient, ledger: Ledger,
        webhook: WebhookProcess) -> None:
    """Twelve edits at once through the apiserver: the webhook commits their entries together
    (group commit), yet every edit the cluster applied has its own entry, before it happened,
    on one chain that verifies."""
    name = unique("burst")
    alice.create_cluster_custom_object(GROUP, VERSION, "tenants", _tenant(name, "bob"))
    try:
        def label(index: int) -> None:
            alice.patch_cluster_custom_object(GROUP, VERSION, "tenants", name, {
                "metadata": {"labels": {f"burst-{index}": "yes"}}})

        with ThreadPoolExecutor(max_workers=12) as pool:
            list(pool.map(label, range(12)))
        updates = [e for e in _admission_entries(ledger, name)
                   if e["action"] == "tenant.update.requested"]
        recorded = {field for e in updates for field in e["changes"]["fields"]}
        # A retried update (a conflict inside the apiserver) may be recorded twice, never less.
        assert recorded == {f"metadata.labels[burst-{index}]" for index in range(12)}
        assert len({e["request_id"] for e in updates}) == len(updates)
        entries = ledger.entries(name)
        assert [e["seq"] for e in entries] == list(range(1, len(entries) + 1))
        result = ledger.verify(name)
        assert result.ok, result.describe()
    finally:
        client.CustomObjectsApi(admin_api).delete_cluster_custom_object(
            GROUP, VERSION, "tenants", name)
