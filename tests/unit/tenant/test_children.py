"""The watch-driven view of a Tenant's children: what pruning may take from it, and the stamp
that lets a resync leave out an apply that would change nothing (pure parts)."""

from __future__ import annotations

from typing import Any

from tenantry import kubeapi
from tenantry.controller.tenant import children, desired, meta, network, rbac
from tenantry.model import common
from tenantry.model.tenant import TenantSpec
from tests.unit.tenant.conftest import TENANT, UID


def _seen(watched: children.Watched, obj: dict[str, Any]) -> children.Child:
    return children.reduce(watched.api_version, watched.kind)(obj)


def _watched(kind: str, selector: str) -> children.Watched:
    return next(w for w in children.WATCHED if w.kind == kind and w.selector == selector)


def test_pruning_takes_only_what_carries_both_operator_labels(acme: TenantSpec) -> None:
    policies = _watched("NetworkPolicy", common.TENANT_LABEL)
    access = _watched("RoleBinding", rbac.OPERATOR_ACCESS_LABEL)
    ours = network.default_deny(TENANT, UID, "acme-prod")
    # An admin's own policy labelled for the tenant, without managed-by: never pruned.
    merely_labelled = {"metadata": {"name": "team-policy", "namespace": "acme-prod",
                                    "labels": {common.TENANT_LABEL: TENANT}}}
    someone_elses = network.default_deny("other", UID, "other-prod")
    binding = rbac.operator_secrets_binding(TENANT, UID, "acme-prod", "tenantry-system")
    tier_roles = _watched("ClusterRole", f"{common.MANAGED_BY_LABEL}={meta.MANAGED_BY}")
    view_role = rbac.tenant_view_role(TENANT, UID)
    seen = {
        policies: {f"{o['metadata']['namespace']}/{o['metadata']['name']}": _seen(policies, o)
                   for o in (ours, merely_labelled, someone_elses)},
        access: {"acme-prod/" + rbac.OPERATOR_SECRETS: _seen(access, binding)},
        # Seen by the tier-role watch only: not counted (the tenant-label watch counts it).
        tier_roles: {"/" + view_role["metadata"]["name"]: _seen(tier_roles, view_role)},
    }
    assert children.applied(seen, TENANT) == sorted([meta.ref(ours), meta.ref(binding)])
    assert children.applied(seen, "other") == [meta.ref(someone_elses)]


def test_a_child_keeps_its_identity_owner_and_last_writer_but_no_contents() -> None:
    binding = rbac.operator_secrets_binding(TENANT, UID, "acme-prod", "tenantry-system")
    binding["metadata"]["managedFields"] = [
        {"manager": kubeapi.FIELD_MANAGER, "operation": "Apply", "time": "2026-01-01T00:00:00Z"},
        {"manager": "kubectl-edit", "operation": "Update", "time": "2026-01-01T00:00:05Z"},
        {"manager": "kube-controller-manager", "operation": "Update", "subresource": "status",
         "time": "2026-01-01T00:00:09Z"},
    ]
    child = _seen(_watched("RoleBinding", rbac.OPERATOR_ACCESS_LABEL), binding)
    assert child.ref == meta.ref(binding) and child.tenant == TENANT
    assert child.last_writer == "kubectl-edit"  # a status write is nobody's drift
    assert "subjects" not in vars(child) and set(child.labels) <= {
        common.TENANT_LABEL, common.MANAGED_BY_LABEL, rbac.OPERATOR_ACCESS_LABEL}


def _live(manifest: dict[str, Any], writer: str | None,
          resource_version: str = "7") -> children.Child:
    managed = [] if writer is None else [{"manager": writer, "operation": "Apply",
                                          "time": "2026-01-01T00:00:00Z"}]
    obj = {**manifest, "metadata": {**manifest["metadata"], "managedFields": managed,
                                    "resourceVersion": resource_version}}
    return children.reduce(manifest["apiVersion"], manifest["kind"])(obj)


def test_a_resync_leaves_out_only_what_is_still_at_the_operators_own_write() -> None:
    wanted = meta.stamped(network.default_deny(TENANT, UID, "acme-prod"))
    assert children.unchanged(_live(wanted, kubeapi.FIELD_MANAGER, "7"), wanted, "7")
    # Written since (here by a client claiming the operator's field manager, keeping the
    # stamp): drift, applied over.
    assert not children.unchanged(_live(wanted, kubeapi.FIELD_MANAGER, "8"), wanted, "7")
    assert not children.unchanged(_live(wanted, "kubectl-edit", "8"), wanted, "7")
    # Not written by this process (after a restart): applied once.
    assert not children.unchanged(_live(wanted, kubeapi.FIELD_MANAGER, "7"), wanted, None)
    # What the operator wants changed (here: the Tenant was recreated, another owner uid).
    other = meta.stamped(network.default_deny(TENANT, "another-uid", "acme-prod"))
    assert meta.ref(other) == meta.ref(wanted)
    assert not children.unchanged(_live(wanted, kubeapi.FIELD_MANAGER), other, "7")
    # Never seen (deleted, or not listed yet), or never stamped: applied.
    assert not children.unchanged(None, wanted, "7")
    unstamped = network.default_deny(TENANT, UID, "acme-prod")
    assert not children.unchanged(_live(unstamped, kubeapi.FIELD_MANAGER), wanted, "7")
    assert not children.unchanged(_live(wanted, kubeapi.FIELD_MANAGER), unstamped, "7")


def test_the_stamp_is_a_digest_of_the_manifest_alone(acme: TenantSpec) -> None:
    for obj in desired.desired_objects(TENANT, UID, acme):
        stamped = meta.stamped(obj)
        assert "annotations" not in obj["metadata"]  # the input is left as it was
        assert meta.applied_hash(stamped) == meta.applied_hash(obj) == \
            stamped["metadata"]["annotations"][meta.APPLIED_HASH_ANNOTATION]
        assert {k: v for k, v in stamped.items() if k != "metadata"} == \
            {k: v for k, v in obj.items() if k != "metadata"}
    hashes = {meta.applied_hash(obj) for obj in desired.desired_objects(TENANT, UID, acme)}
    assert len(hashes) == len(desired.desired_objects(TENANT, UID, acme))
