"""Everything one Tenant should have, in apply order, and what to remove after a spec change.

Apply order is chosen so that access never precedes isolation: namespaces first, then in every
namespace its NetworkPolicies (default-deny first), ResourceQuota and LimitRange, and only then,
once every namespace is fenced, the RoleBindings that let people in. The operator's own Secret
binding in each namespace (`rbac.operator_secrets_binding`, and the API's read-only
`api_secrets_binding`) goes with the fences: it lets no person in, and Credentials need it as
soon as the namespace exists. Order alone is not enough:
when a fence of a namespace fails to apply, its RoleBindings are withheld (`unfenced`,
`withhold_access`), and removed when the fence is missing altogether (`fence_in_place`). Removal
runs the other way: access goes first, the fences last.

`desired_objects` is a pure function of its arguments and sorts everything that has no meaning
in its order (namespaces, subjects, except lists), so reordering a spec list changes nothing on
the server and two operator replicas always compute the same objects.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Iterable, Mapping
from typing import Any

from tenantry.controller.tenant import meta, namespaces, network, quota, rbac
from tenantry.crypto import custody
from tenantry.model import tenant

# Kinds a Tenant's children can have: list each by the tenant label to learn what was applied
# before (labels survive operator restarts; an annotation listing them could outgrow its limit).
CHILD_KINDS: tuple[tuple[str, str], ...] = (
    ("v1", "Namespace"),
    ("networking.k8s.io/v1", "NetworkPolicy"),
    ("v1", "ResourceQuota"),
    ("v1", "LimitRange"),
    (rbac.RBAC_API_VERSION, "RoleBinding"),
    (rbac.RBAC_API_VERSION, "ClusterRole"),
    (rbac.RBAC_API_VERSION, "ClusterRoleBinding"),
)


def tenant_namespaces(spec: tenant.TenantSpec, granted: Collection[str] | None = None,
                      operator_namespace: str | None = None) -> list[str]:
    """The spec's namespaces this tenant may manage, sorted.

    `granted` is the set the ownership decisions allowed (`namespaces.decide(...).may_apply`);
    None means all of them. Reserved namespaces are left out whatever `granted` says.
    """
    return sorted({entry.name for entry in spec.namespaces
                   if (granted is None or entry.name in granted)
                   and not namespaces.is_reserved(entry.name, operator_namespace)})


def desired_objects(tenant_name: str, tenant_uid: str, spec: tenant.TenantSpec, *,
                    granted: Collection[str] | None = None,
                    operator_namespace: str = custody.DEFAULT_NAMESPACE) -> list[meta.Manifest]:
    """Every object of one tenant, in apply order (see the module docstring).

    Pass `granted` from the ownership decisions: without it every namespace of the spec is
    included, and the handler must never apply children into a namespace in conflict (that
    would hand another tenant's namespace to this tenant's members). The shared tier
    ClusterRoles are not included: see `rbac.cluster_roles`. `operator_namespace` is where the
    operator's ServiceAccount lives, the subject of its Secret binding in every namespace.
    """
    names = tenant_namespaces(spec, granted, operator_namespace)
    objects: list[meta.Manifest] = [
        namespaces.namespace(tenant_name, name, spec.pod_security.mode) for name in names]
    for name in names:
        objects.extend(network.network_policies(tenant_name, tenant_uid, name, spec.network,
                                                names))
        objects.append(quota.resource_quota(tenant_name, tenant_uid, name, spec.quota))
        objects.append(quota.limit_range(tenant_name, tenant_uid, name, spec.limits))
        objects.append(rbac.operator_secrets_binding(tenant_name, tenant_uid, name,
                                                     operator_namespace))
        objects.append(rbac.api_secrets_binding(tenant_name, tenant_uid, name,
                                                operator_namespace))
    for name in names:
        objects.extend(rbac.role_bindings(tenant_name, tenant_uid, name, spec.members))
    objects.append(rbac.tenant_view_role(tenant_name, tenant_uid))
    objects.append(rbac.tenant_view_binding(tenant_name, tenant_uid, spec.members))
    return objects


# What fences a namespace (isolation) and what lets people into it (access). Access in a namespace
# is applied only when every isolation object of that namespace applied in the same pass. The
# operator's own binding is a RoleBinding but neither: it is never withheld, and does not fence.
ISOLATION_KINDS = frozenset({"Namespace", "NetworkPolicy", "ResourceQuota", "LimitRange"})
ACCESS_KINDS = frozenset({"RoleBinding"})


def fenced_namespace(ref: meta.ObjectRef) -> str | None:
    """The namespace an isolation object fences (a Namespace fences itself), else None."""
    if ref.kind not in ISOLATION_KINDS:
        return None
    return ref.name if ref.kind == "Namespace" else ref.namespace


def unfenced(failed: Iterable[meta.ObjectRef]) -> dict[str, list[meta.ObjectRef]]:
    """Namespaces whose isolation did not fully apply: namespace -> its failed fences, sorted."""
    result: dict[str, list[meta.ObjectRef]] = {}
    for ref in failed:
        name = fenced_namespace(ref)
        if name:
            result.setdefault(name, []).append(ref)
    return {name: sorted(refs) for name, refs in sorted(result.items())}


def withhold_access(objects: Iterable[meta.Manifest],
                    namespaces_unfenced: Collection[str]) -> list[meta.Manifest]:
    """`objects` without the access objects (RoleBindings) of the unfenced namespaces; the
    operator's own Secret binding stays (it gives no person anything)."""
    return [obj for obj in objects
            if not (is_access(obj)
                    and obj["metadata"].get("namespace") in namespaces_unfenced)]


def is_access(obj: Mapping[str, Any]) -> bool:
    """Whether `obj` lets people in: a RoleBinding of the tenant, not the operator's own."""
    return obj["kind"] in ACCESS_KINDS and not rbac.is_operator_access(obj)


def fence_in_place(wanted: Mapping[str, Any], live: Mapping[str, Any] | None) -> bool:
    """Whether a fence whose apply failed still stands on the server, in an older version.

    An object that exists still fences (the previous spec's policy or quota); a Namespace only
    while it carries every label the operator wants on it (tenant, Pod Security). When a fence is
    not in place, existing access in its namespace must go too, not only new access.
    """
    if live is None:
        return False
    if wanted["kind"] != "Namespace":
        return True
    labels = live.get("metadata", {}).get("labels") or {}
    return all(labels.get(key) == value
               for key, value in wanted["metadata"].get("labels", {}).items())


# Deletion order: access first, then openings in the fences, the fences, and namespaces last.
_DELETE_RANK = {
    "ClusterRoleBinding": 0,
    "RoleBinding": 1,
    "ClusterRole": 2,
    "NetworkPolicy": 3,
    "LimitRange": 4,
    "ResourceQuota": 5,
    "Namespace": 7,
}


# The operator's own Secret binding goes with the fences: after them, just before the namespace.
_OPERATOR_ACCESS_RANK = 6


def _delete_key(ref: meta.ObjectRef) -> tuple[int, bool, meta.ObjectRef]:
    # Within NetworkPolicies the default-deny goes last, after every allow it was fencing.
    if ref.kind == "RoleBinding" and ref.name in (rbac.OPERATOR_SECRETS, rbac.API_SECRETS):
        return (_OPERATOR_ACCESS_RANK, False, ref)
    return (_DELETE_RANK.get(ref.kind, 3), ref.name == network.DEFAULT_DENY, ref)


@dataclasses.dataclass(frozen=True)
class Prune:
    """What converging to a new desired state removes."""

    delete: list[meta.ObjectRef]
    """Objects to delete, in this order. Children of namespaces being deleted are left out:
    deleting the namespace removes them."""
    release: list[str]
    """Namespaces to keep but hand back (deletionPolicy Retain): apply
    `namespaces.released_namespace(name)` to each, after the deletes."""


def prune(previous: Iterable[meta.ObjectRef], desired: Iterable[Mapping[str, Any]],
          deletion_policy: tenant.DeletionPolicy) -> Prune:
    """What to remove so that only `desired` is left of what was applied before (`previous`).

    Covers every spec change (a member, rule or namespace removed) and, with `desired=[]`, the
    whole tenant at deletion. A namespace that leaves the spec is deleted or released according
    to `deletion_policy`; the operator's children in a released namespace are deleted, so the
    namespace carries nothing of the tenant afterwards (Pod Security labels stay).

    Before deleting or releasing a Namespace, re-read it and go ahead only while its tenant
    label still names this tenant: every tenant is applied by the same field manager, so acting
    on a stale `previous` could strip or delete a namespace another tenant now holds.
    """
    wanted = {meta.ref(manifest) for manifest in desired}
    stale = {ref for ref in previous if ref not in wanted}
    stale_namespaces = {ref.name for ref in stale if ref.kind == "Namespace" and
                        not ref.namespace}
    deleted_namespaces = (stale_namespaces if deletion_policy is tenant.DeletionPolicy.DELETE
                          else set())
    delete = [ref for ref in stale
              if ref.namespace not in deleted_namespaces
              and not (ref.kind == "Namespace" and ref.name not in deleted_namespaces)]
    release = sorted(stale_namespaces - deleted_namespaces)
    return Prune(delete=sorted(delete, key=_delete_key), release=release)
