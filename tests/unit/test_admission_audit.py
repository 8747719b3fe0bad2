"""Admission requests on Tenantry resources -> ledger entries: who, what, which fields; never
values."""

from __future__ import annotations

import json
from typing import Any

from tenantry.ledger.events import ActorKind
from tenantry.webhook import audit
from tenantry.webhook.review import AdmissionRequest, parse_review


def _request(operation: str, kind: str = "Tenant", *, obj: Any = None, old: Any = None,
             user: str = "alice", **extra: Any) -> AdmissionRequest:
    request = {"uid": "0d6c-req",
               "kind": {"group": "tenantry.dev", "version": "v1alpha1", "kind": kind},
               "resource": {"group": "tenantry.dev", "version": "v1alpha1",
                            "resource": kind.lower() + "s"},
               "operation": operation, "name": "acme",
               "userInfo": {"username": user, "groups": ["devs", "system:authenticated"],
                            "uid": "u-1"},
               **({"object": obj} if obj is not None else {}),
               **({"oldObject": old} if old is not None else {}), **extra}
    return parse_review(json.dumps({"apiVersion": "admission.k8s.io/v1",
                                    "kind": "AdmissionReview", "request": request}).encode())


def test_a_create_by_a_user_names_her_her_groups_and_the_request() -> None:
    tenant = {"metadata": {"name": "acme", "generation": 1},
              "spec": {"members": [{"name": "alice", "role": "owner"}]}}
    event = audit.event_for(_request("CREATE", obj=tenant), tenant="acme")
    assert event is not None
    assert (event.actor, event.actor_kind) == ("alice", ActorKind.USER)
    assert event.identity == {"kind": "kubernetes", "username": "alice",
                              "groups": ["devs", "system:authenticated"], "uid": "u-1"}
    assert (event.action, event.resource_kind, event.resource_name) == (
        "tenant.create.requested", "Tenant", "acme")
    assert event.request_id == "0d6c-req"
    assert event.chain == "acme"
    assert event.changes == {"operation": "CREATE", "generation": 1,
                             "fields": ["spec.members"], "decision": "admitted-by-tenantry"}


def test_an_entry_never_claims_the_cluster_admitted_the_change() -> None:
    # Written before later admission steps and storage decide: a request Tenantry let through.
    for operation in ("CREATE", "UPDATE", "DELETE"):
        event = audit.event_for(_request(operation, obj={}, old={}), tenant="acme")
        assert event is not None
        assert event.action == f"tenant.{operation.lower()}.requested"
        assert event.changes["decision"] == "admitted-by-tenantry"
        assert "admitted" not in event.action


def test_an_update_lists_changed_paths_not_values() -> None:
    old = {"metadata": {"labels": {"team": "a"}},
           "spec": {"sealed": {"encryptedData": {"token": "AgBy-old-ciphertext"}},
                    "scope": "platform", "allowedServiceAccounts": ["a", "b"]}}
    new = {"metadata": {"labels": {"team": "b"}, "generation": 3},
           "spec": {"sealed": {"encryptedData": {"token": "AgBy-new-ciphertext"}},
                    "scope": "caller", "allowedServiceAccounts": ["a", "b", "c"]}}
    event = audit.event_for(_request("UPDATE", "Credential", obj=new, old=old,
                                     namespace="acme-app"), tenant="acme")
    assert event is not None
    assert event.changes["fields"] == ["spec.allowedServiceAccounts", "spec.scope",
                                       "spec.sealed.encryptedData.token",
                                       "metadata.labels[team]"]
    assert "ciphertext" not in str(event.payload())
    assert event.resource_namespace == "acme-app"


def test_deletes_are_recorded_and_dry_runs_are_not() -> None:
    deleted = audit.event_for(_request("DELETE", old={"metadata": {"name": "acme"}}),
                              tenant="acme")
    assert deleted is not None and deleted.action == "tenant.delete.requested"
    assert audit.event_for(_request("CREATE", obj={}, dryRun=True), tenant="acme") is None
    assert audit.event_for(_request("CONNECT", obj={}), tenant="acme") is None


def test_service_accounts_and_system_users_are_told_apart() -> None:
    sa = audit.event_for(_request("CREATE", obj={}, user="system:serviceaccount:ci:deployer"),
                         tenant=None)
    system = audit.event_for(_request("CREATE", obj={}, user="system:admin"), tenant=None)
    assert sa is not None and sa.actor_kind is ActorKind.SERVICEACCOUNT
    assert system is not None and system.actor_kind is ActorKind.SYSTEM
    assert sa.chain == "_platform"


def test_the_tenant_chain_of_a_request() -> None:
    assert audit.tenant_of(_request("CREATE", obj={}), None) == "acme"
    assert audit.tenant_of(_request("CREATE", "Credential", obj={}), "blue") == "blue"


def test_long_edits_are_capped() -> None:
    old = {"spec": {f"k{i:03d}": i for i in range(80)}}
    new = {"spec": {f"k{i:03d}": i + 1 for i in range(80)}}
    summary = audit.summary("UPDATE", old, new)
    assert len(summary["fields"]) == audit.MAX_PATHS
    assert summary["moreFields"] == 30


def _decision(**overrides: Any) -> Any:
    from tenantry.admission.violation import Violation
    from tenantry.webhook.records import AdmissionRecord

    fields: dict[str, Any] = dict(
        webhook="workloads.admission.tenantry.dev", uid="r-1", operation="CREATE",
        kind="Pod.v1", sub_resource="", namespace="acme-app", name="web",
        username="system:serviceaccount:ci:deployer", groups=("system:serviceaccounts",),
        tenant="acme", mode="Audit", allowed=True, dry_run=False,
        violations=(Violation("readOnlyRootFilesystem",
                              "spec.containers[0].securityContext.readOnlyRootFilesystem",
                              "must be true (is unset)", "true", "app", "nginx"),),
        exempted=())
    fields.update(overrides)
    return AdmissionRecord(**fields)


def test_audited_refused_and_exempted_decisions_become_ledger_entries() -> None:
    from tenantry.webhook.records import ledger_event

    audited = ledger_event(_decision())
    assert audited is not None
    assert (audited.action, audited.chain, audited.actor_kind) == (
        "admission.audit", "acme", ActorKind.SERVICEACCOUNT)
    assert audited.changes["violations"] == [
        {"rule": "readOnlyRootFilesystem",
         "fieldPath": "spec.containers[0].securityContext.readOnlyRootFilesystem"}]
    assert audited.request_id == "r-1"
    assert audited.changes["decision"] == "admitted-by-tenantry"
    denied = ledger_event(_decision(mode="Deny", allowed=False))
    assert denied is not None and denied.action == "admission.deny"
    assert denied.changes["decision"] == "refused-by-tenantry"
    unmoded = ledger_event(_decision(mode=""))
    assert unmoded is not None and unmoded.action == "admission.admitted-by-tenantry"
    # Clean admissions and dry runs are not kept.
    assert ledger_event(_decision(violations=())) is None
    assert ledger_event(_decision(dry_run=True)) is None
