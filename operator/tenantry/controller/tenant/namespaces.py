"""Tenant namespaces: the Namespace objects, and whether the operator may touch an existing one.

A namespace is the unit of isolation, so taking one over is the most dangerous thing the
operator does. The rule is simple and decided here, purely, from the labels the namespace has
now: create what is missing, keep what is already ours, adopt an unowned namespace only when the
spec says `adopt: true`, and never take one from another tenant or from the system.

A decision read from labels is only as good as the moment it was read, so creating or adopting
goes through `claim`: one write the API server refuses when someone got there first (a plain
create, or an apply pinned to the resourceVersion that was read). The loser re-reads and decides
again, which is how two tenants racing for a new namespace end with one owner and one conflict.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Mapping
from typing import Any

from tenantry.controller.tenant import meta
from tenantry.crypto import custody
from tenantry.model import common, tenant

PSA_MODES = ("enforce", "audit", "warn")
PSA_LEVEL = "restricted"

# Namespaces no Tenant may ever own, even with `adopt: true`: giving tenant members RoleBindings
# in kube-system (or in the operator's own namespace) would hand them the cluster. The operator's
# namespace is reserved by its actual name too (`is_reserved`): the manifests take it from the
# pod, so it need not start with tenantry-, and it holds the master keyring and sealing key.
RESERVED_NAMESPACES = frozenset({"default", "kube-system", "kube-public", "kube-node-lease"})
RESERVED_PREFIXES = ("kube-", "tenantry-")


# Read by the CEL policy bindings in policies/ (see tenantry.admission.cel.MODE_LABEL).
MODE_LABEL = f"{common.GROUP}/pod-security-mode"


def pod_security_labels() -> dict[str, str]:
    """Pod Security Admission: `restricted` for enforce, audit and warn, at a pinned version.

    Pinned rather than `latest` so that a control-plane upgrade cannot start refusing pods that
    were admitted yesterday; raising the version is a deliberate change of the model.
    """
    labels: dict[str, str] = {}
    for mode in PSA_MODES:
        labels[f"pod-security.kubernetes.io/{mode}"] = PSA_LEVEL
        labels[f"pod-security.kubernetes.io/{mode}-version"] = tenant.POD_SECURITY_VERSION
    return labels


def namespace(tenant_name: str, name: str,
              mode: tenant.EnforcementMode = tenant.EnforcementMode.DENY) -> meta.Manifest:
    """The Namespace `name` of tenant `tenant_name`.

    `mode` (the Tenant's podSecurity.mode) is mirrored into an operator-owned label, so the CEL
    twins of the admission rules (policies/) bind Deny, Warn or Audit per namespace.

    No ownerReference on purpose: the garbage collector would then delete the namespace, and all
    its data, with the Tenant. Whether a namespace outlives its Tenant is `deletionPolicy`'s call,
    carried out by the finalizer.
    """
    labels = {**meta.tenant_labels(tenant_name), **pod_security_labels(),
              MODE_LABEL: str(mode)}
    return {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": name, "labels": dict(sorted(labels.items()))},
    }


def released_namespace(name: str) -> meta.Manifest:
    """What to apply to a namespace the tenant gives up but retains (deletionPolicy Retain).

    Applied with the operator's field manager, it drops the tenant and managed-by labels (the
    operator stops asserting them, so server-side apply removes them) while the Pod Security
    labels stay: workloads left behind remain hardened until a person decides otherwise.
    """
    return {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": name, "labels": dict(sorted(pod_security_labels().items()))},
    }


def release_patch(name: str) -> dict[str, Any]:
    """A merge patch that removes the ownership labels `released_namespace` stops asserting.

    Needed because server-side apply drops a field only when no other manager owns it, and the
    plain create that claims a namespace (`claim`) records its labels under an Update entry: the
    patch removes them whoever else holds them.
    """
    kept = released_namespace(name)["metadata"]["labels"]
    owned = namespace("", name)["metadata"]["labels"]
    return {"metadata": {"labels": {key: None for key in sorted(owned) if key not in kept}}}


def is_reserved(name: str, operator_namespace: str | None = None) -> bool:
    """True for namespaces of the system or of the operator, which no tenant may own.

    `operator_namespace`: where the operator runs; None reads it as the operator does
    (`custody.operator_namespace()`, $TENANTRY_NAMESPACE)."""
    if operator_namespace is None:
        operator_namespace = custody.operator_namespace()
    return (name in RESERVED_NAMESPACES or name.startswith(RESERVED_PREFIXES)
            or name == operator_namespace)


class Action(enum.StrEnum):
    """What the operator does with one namespace of the spec."""

    CREATE = "Create"      # absent: create it
    OWNED = "Owned"        # exists and already labelled for this tenant: keep applying
    ADOPT = "Adopt"        # exists, unowned, and the spec allows adoption: label it and apply
    CONFLICT = "Conflict"  # must not be touched: report it in a condition and leave it alone


@dataclasses.dataclass(frozen=True)
class Decision:
    """The outcome for one namespace, worded for a status condition and `status.namespaces`."""

    action: Action
    reason: str  # CamelCase, for Condition.reason / NamespaceStatus.reason
    message: str
    owner: str | None = None  # with CONFLICT: the other tenant, when there is one

    @property
    def may_apply(self) -> bool:
        """Whether the operator may apply the namespace and its children."""
        return self.action is not Action.CONFLICT

    @property
    def claims(self) -> bool:
        """Whether acting on this decision first takes the namespace (CREATE or ADOPT).

        A claim must be one atomic write that fails when someone else got there first (see
        `claim`): deciding from a read and then applying would let two tenants that read the
        same state both win, the last apply relabelling the namespace."""
        return self.action in (Action.CREATE, Action.ADOPT)


def decide(tenant_name: str, entry: tenant.TenantNamespace,
           existing_labels: Mapping[str, str] | None,
           operator_namespace: str | None = None) -> Decision:
    """Whether tenant `tenant_name` may manage namespace `entry`, given its current labels.

    `existing_labels` is None when the namespace does not exist, and the namespace's labels
    (possibly empty) when it does. The tenant label is operator-owned (admission refuses anyone
    else setting it), so it is a trustworthy record of ownership.
    """
    name = entry.name
    if is_reserved(name, operator_namespace):
        return Decision(
            Action.CONFLICT, "NamespaceReserved",
            f"namespace {name} is reserved for the system or the operator and can never belong "
            "to a tenant")
    if existing_labels is None:
        return Decision(Action.CREATE, "NamespaceCreated",
                        f"namespace {name} did not exist and is created for tenant {tenant_name}")
    owner = existing_labels.get(common.TENANT_LABEL)
    if owner == tenant_name:
        return Decision(Action.OWNED, "NamespaceOwned",
                        f"namespace {name} belongs to tenant {tenant_name}")
    if owner is not None:
        # Even an empty label value counts: someone (the operator, by admission) put it there,
        # and guessing that it means "nobody" would fail open.
        return Decision(
            Action.CONFLICT, "NamespaceOwnedByAnotherTenant",
            f"namespace {name} belongs to tenant {owner!r}; a namespace is never taken over "
            "from another tenant", owner=owner)
    if entry.adopt:
        return Decision(Action.ADOPT, "NamespaceAdopted",
                        f"existing namespace {name} belonged to no tenant and is adopted by "
                        f"tenant {tenant_name} (adopt: true)")
    return Decision(
        Action.CONFLICT, "NamespaceExists",
        f"namespace {name} already exists and belongs to no tenant; set adopt: true on this "
        "namespace in spec.namespaces to take it over")


# How often one reconciliation re-reads and re-decides after losing a claim before it gives up
# for this pass (each loss means the namespace changed in between: created, labelled, adopted).
CLAIM_ATTEMPTS = 3


def claim(tenant_name: str, name: str, mode: tenant.EnforcementMode,
          existing: Mapping[str, Any] | None) -> meta.Manifest:
    """The write that takes namespace `name` for `tenant_name`, atomically.

    For a namespace that did not exist (`existing` None) it is the full Namespace, meant for a
    plain create (POST), which the API server refuses with 409 AlreadyExists when anyone created
    it first. For one being adopted it carries the resourceVersion that was read, so the apply
    is refused with 409 Conflict when the namespace changed since (another tenant adopted it).
    Either way the namespace is born (or taken) with its tenant and Pod Security labels at once.
    """
    manifest = namespace(tenant_name, name, mode)
    if existing is not None:
        manifest["metadata"]["resourceVersion"] = existing["metadata"]["resourceVersion"]
    return manifest


def contended(tenant_name: str, name: str) -> Decision:
    """The verdict when `CLAIM_ATTEMPTS` claims in a row were lost: touch nothing this pass."""
    return Decision(
        Action.CONFLICT, "NamespaceContended",
        f"namespace {name} kept changing while tenant {tenant_name} was claiming it "
        f"({CLAIM_ATTEMPTS} attempts); nothing applied, retrying later")
