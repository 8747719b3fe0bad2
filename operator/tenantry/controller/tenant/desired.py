"""Everything one Tenant should have, in apply order, and what to remove after a spec change.

Apply order is chosen so that access never precedes isolation: namespaces first, then in every
namespace its NetworkPolicies (default-deny first), ResourceQuota and LimitRange, and only then,
once every namespace is fenced, the RoleBindings that let people in. Removal runs the other way:
access goes first, the fences last.

`desired_objects` is a pure function of its arguments and sorts everything that has no meaning
in its order (namespaces, subjects, except lists), so reordering a spec list changes nothing on
the server and two operator replicas always compute the same objects.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Iterable, Mapping
from typing import Any

from tenantry.controller.tenant import meta, namespaces, network, quota, rbac
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


def tenant_namespaces(spec: tenant.TenantSpec,
                      granted: Collection[str] | None = None) -> list[str]:
    """The spec's namespaces this tenant may manage, sorted.

    `granted` is the set the ownership decisions allowed (`namespaces.decide(...).may_apply`);
    None means all of them. Reserved namespaces are left out whatever `granted` says.
    """
    return sorted({entry.name for entry in spec.namespaces
                   if (granted is None or entry.name in granted)
                   and not namespaces.is_reserved(entry.name)})


def desired_objects(tenant_name: str, tenant_uid: str, spec: tenant.TenantSpec, *,
                    granted: Collection[str] | None = None) -> list[meta.Manifest]:
    """Every object of one tenant, in apply order (see the module docstring).

    Pass `granted` from the ownership decisions: without it every namespace of the spec is
    included, and the handler must never apply children into a namespace in conflict (that
    would hand another tenant's namespace to this tenant's members). The shared tier
    ClusterRoles are not included: see `rbac.cluster_roles`.
    """
    names = tenant_namespaces(spec, granted)
    objects: list[meta.Manifest] = [
        namespaces.namespace(tenant_name, name, spec.pod_security.mode) for name in names]
    for name in names:
        objects.extend(network.network_policies(tenant_name, tenant_uid, name, spec.network,
                                                names))
        objects.append(quota.resource_quota(tenant_name, tenant_uid, name, spec.quota))
        objects.append(quota.limit_range(tenant_name, tenant_uid, name, spec.limits))
    for name in names:
        objects.extend(rbac.role_bindings(tenant_name, tenant_uid, name, spec.members))
    objects.append(rbac.tenant_view_role(tenant_name, tenant_uid))
    objects.append(rbac.tenant_view_binding(tenant_name, tenant_uid, spec.members))
    return objects


# Deletion order: access first, then openings in the fences, the fences, and namespaces last.
_DELETE_RANK = {
    "ClusterRoleBinding": 0,
    "RoleBinding": 1,
    "ClusterRole": 2,
    "NetworkPolicy": 3,
    "LimitRange": 4,
    "ResourceQuota": 5,
    "Namespace": 6,
}


def _delete_key(ref: meta.ObjectRef) -> tuple[int, bool, meta.ObjectRef]:
    # Within NetworkPolicies the default-deny goes last, after every allow it was fencing.
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
