"""Four-tier RBAC: the tier ClusterRoles, and the bindings that give a tenant's members a tier.

Tiers. `tenantry:viewer` ⊂ `tenantry:member` ⊂ `tenantry:admin` ⊂ `tenantry:owner`, each built as
the tier below plus its own grants, so the inclusion holds by construction (and a test checks
it permission by permission). The ClusterRoles are shared by all tenants and built once; they
only ever take effect through RoleBindings in a tenant's namespaces, never a ClusterRoleBinding.

    viewer  reads workloads, config maps, services, events, quotas and policies of the namespace;
            no Secrets or Credentials (not even list/watch, which return the values), no writes.
    member  + writes workloads, config maps, services, PVCs, Secrets, Credentials; exec/attach/
            port-forward; service accounts. What a developer shipping an app needs.
    admin   + Roles/RoleBindings, NetworkPolicies, PodDisruptionBudgets, ServiceAccount tokens.
    owner   + bulk deletion (`deletecollection`), ephemeral debug containers, RotationPolicies.

What no tier has. No `escalate`, `bind` or `impersonate`, no wildcards, no write access to
ResourceQuotas or LimitRanges (read only, so people see their limits), no write access to
Namespaces (their labels carry the tenant and Pod Security), no `pods/proxy`/`services/proxy`
(the apiserver's proxy reaches pods from outside every NetworkPolicy), no cluster-scoped or
`tenantry.dev/tenants` access (a member sees only its own Tenant, through the per-tenant role).

Roles and RoleBindings (admin+). Safe to grant because Kubernetes' own escalation prevention
applies to every tenant: a RoleBinding may only grant a role whose permissions the creator
already holds in that namespace (no `bind` anywhere), and a Role may only contain permissions
the creator holds (no `escalate`). An admin can therefore share admin but never make anyone an
owner, since owner holds permissions admin lacks; that is why every tier must add something.

NetworkPolicies (admin+). RBAC cannot tell objects apart by name on `create`, nor protect some
objects of a kind but not others on `update`/`delete` without listing every name. So admins get
create/update/patch/delete on all NetworkPolicies of their namespaces, and the operator's
ValidatingAdmissionPolicy (`controller.protection`, evaluated in the apiserver, so no webhook
can be down) is the control that refuses changes to the operator's: names starting `tenantry-`
and anything labelled `app.kubernetes.io/managed-by=tenantry` (the same protects the
`tenantry:*` RoleBindings, which admins could otherwise edit). Policies are additive, so a
tenant policy can only open more traffic: the webhook must also confine tenant-authored egress
to the tenant's own namespaces, or an admin could allow 0.0.0.0/0 and undo the egress
allow-list and the private-range blocks.

ServiceAccounts. Whoever may create pods in a namespace can run them as any ServiceAccount of
that namespace (members can), so a ServiceAccount member that lives in a tenant namespace is in
effect available to every member there: such accounts get at most the `member` tier. The
schema refuses more, also for the spellings RBAC treats as the same accounts (the User
`system:serviceaccount:NS:NAME`, the Group `system:serviceaccounts:NS`), and refuses the groups
that mean everyone; `bound_role` applies both once more here, for a Tenant stored before those
rules (the apiserver keeps an unchanged invalid list on later updates), so that no such Tenant
ever makes a workload an admin or lets everyone in.

Seeing one's own Tenant. RBAC `resourceNames` cannot restrict a plain `list` (the name is not
known when the request is authorized), so members get no cluster-wide list of Tenants. A per-
tenant ClusterRole grants get/list/watch on their Tenant by name: `get` works as usual, and the
apiserver authorizes list/watch by name only when the request carries the field selector
`metadata.name=<tenant>` (as `kubectl get tenant <name> --watch` does); a plain
`kubectl get tenants` stays forbidden.

The operator's own Secret access. The operator reads and writes Secrets (ciphertext it writes,
sources it imports) only in tenant namespaces: ClusterRole `tenantry-operator-secrets`
(manifests/operator/rbac.yaml) is bound nowhere cluster-wide, only by one RoleBinding of that
name in each tenant namespace (`operator_secrets_binding`). It is not access for people: it
carries `tenantry.dev/operator-access` instead of the tenant label (so nothing counts it among
the tenant's bindings), is applied with the fences and is never withheld or revoked with the
members' bindings; it is pruned with the namespace's other children. The operator needs `bind`
on that one ClusterRole to create it (it holds no Secret permission of its own to pass on).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from typing import Any

from tenantry.controller.tenant import meta
from tenantry.model import common, tenant

RBAC_GROUP = "rbac.authorization.k8s.io"
RBAC_API_VERSION = f"{RBAC_GROUP}/v1"

READ = ("get", "list", "watch")
WRITE = ("create", "update", "patch", "delete")

# Verbs that would let a tenant step around RBAC itself; no tier may ever hold them.
FORBIDDEN_VERBS = frozenset({"escalate", "bind", "impersonate", "*"})

# Lowest tier first; each tier includes every one before it.
TIERS: tuple[tenant.Role, ...] = (
    tenant.Role.VIEWER, tenant.Role.MEMBER, tenant.Role.ADMIN, tenant.Role.OWNER,
)


@dataclasses.dataclass(frozen=True, order=True)
class Permission:
    """One (API group, resource, verb) a tier may use, the unit the superset test compares."""

    api_group: str
    resource: str
    verb: str


@dataclasses.dataclass(frozen=True)
class Grant:
    """Verbs on resources of one API group: how tiers are written down, compactly."""

    api_group: str
    resources: tuple[str, ...]
    verbs: tuple[str, ...]

    def permissions(self) -> frozenset[Permission]:
        return frozenset(Permission(self.api_group, resource, verb)
                         for resource in self.resources for verb in self.verbs)


_VIEWER_GRANTS = (
    Grant("", ("configmaps", "endpoints", "events", "limitranges", "namespaces",
               "namespaces/status", "persistentvolumeclaims", "persistentvolumeclaims/status",
               "pods", "pods/log", "pods/status", "replicationcontrollers",
               "replicationcontrollers/scale", "replicationcontrollers/status", "resourcequotas",
               "resourcequotas/status", "serviceaccounts", "services", "services/status"), READ),
    Grant("apps", ("controllerrevisions", "daemonsets", "daemonsets/status", "deployments",
                   "deployments/scale", "deployments/status", "replicasets", "replicasets/scale",
                   "replicasets/status", "statefulsets", "statefulsets/scale",
                   "statefulsets/status"), READ),
    Grant("autoscaling", ("horizontalpodautoscalers", "horizontalpodautoscalers/status"), READ),
    Grant("batch", ("cronjobs", "cronjobs/status", "jobs", "jobs/status"), READ),
    Grant("discovery.k8s.io", ("endpointslices",), READ),
    Grant("events.k8s.io", ("events",), READ),
    Grant("networking.k8s.io", ("ingresses", "ingresses/status", "networkpolicies"), READ),
    Grant("policy", ("poddisruptionbudgets", "poddisruptionbudgets/status"), READ),
    Grant(common.GROUP, ("rotationpolicies",), READ),
)

_MEMBER_GRANTS = (
    Grant("", ("configmaps", "persistentvolumeclaims", "pods", "replicationcontrollers",
               "replicationcontrollers/scale", "serviceaccounts", "services"), WRITE),
    # Secrets only from member up: list/watch return the values, so read is as good as get.
    Grant("", ("secrets",), READ + WRITE),
    # `get` as well as `create`: exec/attach/port-forward over WebSockets start as a GET.
    Grant("", ("pods/attach", "pods/exec", "pods/portforward"), ("create", "get")),
    Grant("", ("pods/eviction",), ("create",)),
    Grant("apps", ("daemonsets", "deployments", "deployments/scale", "replicasets",
                   "replicasets/scale", "statefulsets", "statefulsets/scale"), WRITE),
    Grant("autoscaling", ("horizontalpodautoscalers",), WRITE),
    Grant("batch", ("cronjobs", "jobs"), WRITE),
    Grant("networking.k8s.io", ("ingresses",), WRITE),
    # Ciphertext only, but they name integration secrets: kept from viewers like Secrets.
    Grant(common.GROUP, ("credentials",), READ + WRITE),
)

_ADMIN_GRANTS = (
    Grant(RBAC_GROUP, ("rolebindings", "roles"), READ + WRITE),
    Grant("networking.k8s.io", ("networkpolicies",), WRITE),
    # A PodDisruptionBudget can stall node drains for the whole cluster: not for every member.
    Grant("policy", ("poddisruptionbudgets",), WRITE),
    Grant("", ("serviceaccounts/token",), ("create",)),
)

_OWNER_GRANTS = (
    Grant("", ("configmaps", "persistentvolumeclaims", "pods", "secrets", "serviceaccounts"),
          ("deletecollection",)),
    Grant("apps", ("daemonsets", "deployments", "replicasets", "statefulsets"),
          ("deletecollection",)),
    Grant("batch", ("cronjobs", "jobs"), ("deletecollection",)),
    Grant(common.GROUP, ("credentials",), ("deletecollection",)),
    Grant("", ("pods/ephemeralcontainers",), ("patch", "update")),
    Grant(common.GROUP, ("rotationpolicies",), WRITE),
)

_GRANTS: Mapping[tenant.Role, tuple[Grant, ...]] = {
    tenant.Role.VIEWER: _VIEWER_GRANTS,
    tenant.Role.MEMBER: _MEMBER_GRANTS,
    tenant.Role.ADMIN: _ADMIN_GRANTS,
    tenant.Role.OWNER: _OWNER_GRANTS,
}


def permissions(role: tenant.Role) -> frozenset[Permission]:
    """Everything `role` may do in a tenant namespace: the tier below's plus its own grants."""
    result: frozenset[Permission] = frozenset()
    for tier in TIERS:
        for grant in _GRANTS[tier]:
            result |= grant.permissions()
        if tier == role:
            return result
    raise ValueError(f"unknown role {role!r}")


def rules(granted: Iterable[Permission]) -> list[dict[str, Any]]:
    """PolicyRules for a set of permissions: few, sorted, one API group per rule.

    Resources that share exactly the same verbs go into one rule, so the output is both compact
    and a pure function of the set (the order of the grants above does not matter).
    """
    verbs_of: dict[tuple[str, str], set[str]] = {}
    for permission in granted:
        verbs_of.setdefault((permission.api_group, permission.resource), set()).add(
            permission.verb)
    resources_of: dict[tuple[str, tuple[str, ...]], list[str]] = {}
    for (group, resource), verbs in verbs_of.items():
        resources_of.setdefault((group, tuple(sorted(verbs))), []).append(resource)
    return [{"apiGroups": [group], "resources": sorted(resources), "verbs": list(verbs)}
            for (group, verbs), resources in sorted(resources_of.items())]


def cluster_role_name(role: tenant.Role) -> str:
    return f"tenantry:{role}"


def cluster_role(role: tenant.Role) -> meta.Manifest:
    """The shared ClusterRole of one tier (no tenant label, no owner: it serves every tenant)."""
    return {
        "apiVersion": RBAC_API_VERSION,
        "kind": "ClusterRole",
        "metadata": {"name": cluster_role_name(role), "labels": meta.managed_labels()},
        "rules": rules(permissions(role)),
    }


def cluster_roles() -> list[meta.Manifest]:
    """The four tier ClusterRoles, lowest tier first. Apply once per cluster, not per tenant.

    Whoever applies them needs every permission they contain or `escalate` on clusterroles;
    shipping them in manifests/ (generated from this function) keeps that out of the operator.
    """
    return [cluster_role(role) for role in TIERS]


def subject(member: tenant.Member) -> dict[str, str]:
    """An RBAC subject: Users and Groups are in the RBAC API group, ServiceAccounts in core."""
    if member.kind is tenant.SubjectKind.SERVICE_ACCOUNT:
        if member.namespace is None:  # the schema requires it; never bind a namespace-less SA
            raise ValueError(f"ServiceAccount member {member.name!r} has no namespace")
        return {"kind": "ServiceAccount", "name": member.name, "namespace": member.namespace}
    return {"apiGroup": RBAC_GROUP, "kind": str(member.kind), "name": member.name}


def subjects(members: Iterable[tenant.Member]) -> list[dict[str, str]]:
    """Subjects of `members`, de-duplicated and sorted (kind, namespace, name); never one that
    means everyone."""
    unique = {(s["kind"], s.get("namespace", ""), s["name"]): s
              for s in (subject(m) for m in members if not tenant.is_everyone(m))}
    return [unique[key] for key in sorted(unique)]


def role_binding_name(role: tenant.Role) -> str:
    return f"tenantry:{role}"


def role_bindings(tenant_name: str, tenant_uid: str | None, namespace: str,
                  members: Iterable[tenant.Member]) -> list[meta.Manifest]:
    """One RoleBinding `tenantry:<role>` per tier that has members, highest tier first.

    A tier without members gets no binding (a removed last member means the binding is pruned).
    A subject listed under several tiers is bound to each; RBAC is a union, so the highest wins.
    Each member is bound at its `bound_role` (a workload at most member, everyone never).
    """
    by_role: dict[tenant.Role, list[tenant.Member]] = {}
    for member in members:
        role = tenant.bound_role(member)
        if role is not None:
            by_role.setdefault(role, []).append(member)
    bindings = []
    for role in reversed(TIERS):
        if role not in by_role:
            continue
        bindings.append({
            "apiVersion": RBAC_API_VERSION,
            "kind": "RoleBinding",
            "metadata": meta.metadata(role_binding_name(role), tenant_name=tenant_name,
                                      tenant_uid=tenant_uid, namespace=namespace),
            "roleRef": {"apiGroup": RBAC_GROUP, "kind": "ClusterRole",
                        "name": cluster_role_name(role)},
            "subjects": subjects(by_role[role]),
        })
    return bindings


OPERATOR_SECRETS = "tenantry-operator-secrets"
"""The ClusterRole (shipped in manifests/operator/rbac.yaml) and the per-namespace RoleBinding."""
OPERATOR_SERVICE_ACCOUNT = "tenantry-operator"
OPERATOR_ACCESS_LABEL = f"{common.GROUP}/operator-access"
"""Marks the operator's own binding (value: the tenant); it is listed by this label, not the
tenant label, which marks what the tenant's people are given."""


def operator_access_labels(tenant_name: str) -> dict[str, str]:
    """Labels of the operator's own binding: its tenant under its own key, and managed-by (which
    admission protects, so no tenant can edit, delete or forge it)."""
    return {OPERATOR_ACCESS_LABEL: tenant_name, **meta.managed_labels()}


def is_operator_access(obj: Mapping[str, Any]) -> bool:
    """Whether `obj` (a manifest) is the operator's own binding rather than people's access."""
    labels = (obj.get("metadata") or {}).get("labels") or {}
    return obj.get("kind") == "RoleBinding" and OPERATOR_ACCESS_LABEL in labels


API_SECRETS = "tenantry-api-secrets"
"""The ClusterRole (manifests/api/rbac.yaml: get secrets) and its per-namespace RoleBinding: the
API reads a Credential's ciphertext Secret to hand its value to an allowed workload, and reads
no Secret outside tenant namespaces."""
API_SERVICE_ACCOUNT = "tenantry-api"


def api_secrets_binding(tenant_name: str, tenant_uid: str | None, namespace: str,
                        operator_namespace: str) -> meta.Manifest:
    """The RoleBinding that lets the API's ServiceAccount (in Tenantry's namespace) get Secrets
    in tenant namespace `namespace`: the ciphertext it decrypts for credential exchanges."""
    binding = operator_secrets_binding(tenant_name, tenant_uid, namespace, operator_namespace)
    binding["metadata"]["name"] = API_SECRETS
    binding["roleRef"]["name"] = API_SECRETS
    binding["subjects"] = [{"kind": "ServiceAccount", "name": API_SERVICE_ACCOUNT,
                            "namespace": operator_namespace}]
    return binding


def operator_secrets_binding(tenant_name: str, tenant_uid: str | None, namespace: str,
                             operator_namespace: str) -> meta.Manifest:
    """The RoleBinding that lets the operator's ServiceAccount (in `operator_namespace`) handle
    Secrets in tenant namespace `namespace`, and nowhere else (see the module docstring)."""
    metadata: dict[str, Any] = {"name": OPERATOR_SECRETS, "namespace": namespace,
                                "labels": operator_access_labels(tenant_name)}
    if tenant_uid is not None:
        metadata["ownerReferences"] = [meta.owner_reference(tenant_name, tenant_uid)]
    return {
        "apiVersion": RBAC_API_VERSION,
        "kind": "RoleBinding",
        "metadata": metadata,
        "roleRef": {"apiGroup": RBAC_GROUP, "kind": "ClusterRole", "name": OPERATOR_SECRETS},
        "subjects": [{"kind": "ServiceAccount", "name": OPERATOR_SERVICE_ACCOUNT,
                      "namespace": operator_namespace}],
    }


def tenant_view_name(tenant_name: str) -> str:
    return f"tenantry:tenant:{tenant_name}:view"


def tenant_view_role(tenant_name: str, tenant_uid: str | None) -> meta.Manifest:
    """A ClusterRole that reads one Tenant object by name (see the module docstring)."""
    return {
        "apiVersion": RBAC_API_VERSION,
        "kind": "ClusterRole",
        "metadata": meta.metadata(tenant_view_name(tenant_name), tenant_name=tenant_name,
                                  tenant_uid=tenant_uid),
        "rules": [{"apiGroups": [common.GROUP], "resources": [tenant.PLURAL],
                   "resourceNames": [tenant_name], "verbs": list(READ)}],
    }


def tenant_view_binding(tenant_name: str, tenant_uid: str | None,
                        members: Iterable[tenant.Member]) -> meta.Manifest:
    """Binds every member of the tenant, whatever the tier, to its Tenant's view role."""
    return {
        "apiVersion": RBAC_API_VERSION,
        "kind": "ClusterRoleBinding",
        "metadata": meta.metadata(tenant_view_name(tenant_name), tenant_name=tenant_name,
                                  tenant_uid=tenant_uid),
        "roleRef": {"apiGroup": RBAC_GROUP, "kind": "ClusterRole",
                    "name": tenant_view_name(tenant_name)},
        "subjects": subjects(members),
    }
