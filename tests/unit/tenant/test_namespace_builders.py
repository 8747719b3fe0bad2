"""Namespaces: labelled for the tenant and Pod Security, and never taken from anyone."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pytest

from tenantry.controller.tenant import desired, namespaces
from tenantry.controller.tenant.namespaces import Action
from tenantry.model import common
from tenantry.model.tenant import POD_SECURITY_VERSION, TenantNamespace, TenantSpec

TENANT = "acme"
# Condition.reason's pattern (metav1.Condition).
REASON = re.compile(r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$")


def test_namespace_labels(valid: Callable[[dict[str, Any]], None]) -> None:
    manifest = namespaces.namespace(TENANT, "acme-prod")
    valid(manifest)
    assert manifest["apiVersion"] == "v1" and manifest["kind"] == "Namespace"
    assert manifest["metadata"]["name"] == "acme-prod"
    assert manifest["metadata"]["labels"] == {
        common.TENANT_LABEL: TENANT,
        common.MANAGED_BY_LABEL: "tenantry",
        "pod-security.kubernetes.io/enforce": "restricted",
        "pod-security.kubernetes.io/enforce-version": "v1.35",
        "pod-security.kubernetes.io/audit": "restricted",
        "pod-security.kubernetes.io/audit-version": "v1.35",
        "pod-security.kubernetes.io/warn": "restricted",
        "pod-security.kubernetes.io/warn-version": "v1.35",
        "tenantry.dev/pod-security-mode": "Deny",
    }
    assert POD_SECURITY_VERSION == "v1.35"


def test_the_tenants_pod_security_mode_is_mirrored_for_the_cel_bindings() -> None:
    from tenantry.admission import cel
    from tenantry.model.tenant import EnforcementMode

    labels = namespaces.namespace(TENANT, "acme-prod", EnforcementMode.WARN)["metadata"]["labels"]
    assert labels[cel.MODE_LABEL] == "Warn"
    assert cel.MODE_LABEL not in namespaces.released_namespace("acme-prod")["metadata"]["labels"]


def test_namespace_has_no_owner_reference() -> None:
    # Otherwise the garbage collector would delete it (and its data) with the Tenant.
    assert "ownerReferences" not in namespaces.namespace(TENANT, "acme-prod")["metadata"]


def test_released_namespace_keeps_pod_security_and_drops_ownership() -> None:
    labels = namespaces.released_namespace("acme-prod")["metadata"]["labels"]
    assert common.TENANT_LABEL not in labels and common.MANAGED_BY_LABEL not in labels
    assert labels == namespaces.pod_security_labels()


def _entry(adopt: bool = False, name: str = "acme-prod") -> TenantNamespace:
    return TenantNamespace(name=name, adopt=adopt)


@pytest.mark.parametrize(("labels", "adopt", "action", "reason", "owner"), [
    (None, False, Action.CREATE, "NamespaceCreated", None),
    (None, True, Action.CREATE, "NamespaceCreated", None),
    ({common.TENANT_LABEL: TENANT}, False, Action.OWNED, "NamespaceOwned", None),
    ({common.TENANT_LABEL: TENANT, "team": "x"}, True, Action.OWNED, "NamespaceOwned", None),
    ({}, True, Action.ADOPT, "NamespaceAdopted", None),
    ({"team": "x", common.MANAGED_BY_LABEL: "tenantry"}, True, Action.ADOPT,
     "NamespaceAdopted", None),
    ({}, False, Action.CONFLICT, "NamespaceExists", None),
    ({"kubernetes.io/metadata.name": "acme-prod"}, False, Action.CONFLICT, "NamespaceExists",
     None),
    ({common.TENANT_LABEL: "globex"}, False, Action.CONFLICT, "NamespaceOwnedByAnotherTenant",
     "globex"),
    # adopt never takes a namespace from another tenant.
    ({common.TENANT_LABEL: "globex"}, True, Action.CONFLICT, "NamespaceOwnedByAnotherTenant",
     "globex"),
    # An empty tenant label is still a claim: fail closed.
    ({common.TENANT_LABEL: ""}, True, Action.CONFLICT, "NamespaceOwnedByAnotherTenant", ""),
])
def test_ownership_decisions(labels: dict[str, str] | None, adopt: bool, action: Action,
                             reason: str, owner: str | None) -> None:
    decision = namespaces.decide(TENANT, _entry(adopt), labels)
    assert decision.action is action
    assert decision.reason == reason and REASON.match(decision.reason)
    assert decision.owner == owner
    assert decision.may_apply == (action is not Action.CONFLICT)
    assert "acme-prod" in decision.message


def test_conflict_messages_say_what_to_do() -> None:
    other = namespaces.decide(TENANT, _entry(), {common.TENANT_LABEL: "globex"})
    assert "globex" in other.message and "never taken over" in other.message
    unowned = namespaces.decide(TENANT, _entry(), {})
    assert "adopt: true" in unowned.message


@pytest.mark.parametrize("name", ["default", "kube-system", "kube-public", "kube-node-lease",
                                  "kube-anything", "tenantry-system"])
@pytest.mark.parametrize("labels", [None, {}, {common.TENANT_LABEL: TENANT}])
def test_reserved_namespaces_are_never_a_tenants(name: str,
                                                 labels: dict[str, str] | None) -> None:
    decision = namespaces.decide(TENANT, _entry(adopt=True, name=name), labels)
    assert decision.action is Action.CONFLICT and decision.reason == "NamespaceReserved"
    assert not decision.may_apply


@pytest.mark.parametrize("name", ["acme-prod", "kubeflow", "my-kube-system", "tenantry"])
def test_ordinary_names_are_not_reserved(name: str) -> None:
    assert not namespaces.is_reserved(name)


@pytest.mark.parametrize("labels", [{}, {"kubernetes.io/metadata.name": "platform-security"}])
def test_the_operators_own_namespace_is_reserved_whatever_it_is_called(
        labels: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    # The manifests take the operator's namespace from its pod (TENANTRY_NAMESPACE), so
    # `kustomize edit set namespace platform-security` moves it out of the tenantry- prefix. A
    # Tenant that lists that namespace with adopt: true (it exists and has no tenant label) must
    # not get it: its members would get RoleBindings next to the master keyring, the sealing key
    # and the API's signing keys, and read every tenant's Credentials.
    monkeypatch.setenv("TENANTRY_NAMESPACE", "platform-security")
    entry = _entry(adopt=True, name="platform-security")
    decision = namespaces.decide(TENANT, entry, labels)
    assert decision.action is Action.CONFLICT and decision.reason == "NamespaceReserved"
    assert "operator" in decision.message
    assert namespaces.is_reserved("platform-security")
    spec = TenantSpec.model_validate({
        "members": [{"kind": "User", "name": "alice", "role": "owner"}],
        "namespaces": [{"name": "platform-security", "adopt": True}, {"name": "acme-prod"}]})
    assert desired.tenant_namespaces(spec) == ["acme-prod"]
    # Passed explicitly, the operator's namespace wins over the environment.
    assert namespaces.is_reserved("elsewhere", operator_namespace="elsewhere")
    assert not namespaces.is_reserved("platform-security", operator_namespace="elsewhere")
