"""The credentials route: what a Credential's schema cannot check, because it needs the tenant.

A Credential is encrypted under its tenant's key, so it must live in a namespace of a tenant:

- `credentialNamespace`: the namespace carries the operator's tenant label, its Tenant exists,
  and that Tenant lists the namespace in spec.namespaces (a label left behind by a namespace the
  tenant gave up does not count);
- `credentialServiceAccounts`: every allowedServiceAccounts entry names a ServiceAccount of the
  Credential's own namespace. The schema accepts plain names only; a qualified form
  (`system:serviceaccount:NS:NAME` or `NS/NAME`) naming another namespace is refused here too, so
  that no future relaxation of the schema can reach across namespaces or tenants;
- `credentialScope`: a Credential whose scope is not `caller` (before or after the write) is
  created, changed and deleted by the tenant's owners and admins only. Members write Credentials
  (caller-scoped ones are theirs to manage), but a `platform` or `participant` value is not
  theirs to read: re-scoped to `caller` with a ServiceAccount of theirs, or deleted and created
  again as `caller` from a copy of its sealed values (bound to namespace, name and field, not to
  the scope), it would be handed to their workload. Nor may they swap the value the platform or
  participants use. A requester's tier is read from the Tenant's members the way its RoleBindings
  bind them (`tenant_role`); anybody else who may write Credentials there (a cluster admin, the
  control plane) got that from outside the tenant and is not judged here.

The checks themselves (`check_credential`, `check_scope`) are pure; `handler` adds the tenant
lookup.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

from tenantry.admission.violation import Violation, items, mapping
from tenantry.model import common, tenant
from tenantry.webhook import records
from tenantry.webhook.directory import TenantLookup
from tenantry.webhook.review import AdmissionRequest, Handler, Verdict

NAMESPACE_RULE = "credentialNamespace"
SERVICE_ACCOUNTS_RULE = "credentialServiceAccounts"
SCOPE_RULE = "credentialScope"
SA_USER_PREFIX = tenant.SERVICE_ACCOUNT_USER_PREFIX
SCOPE_MANAGERS = (tenant.Role.OWNER, tenant.Role.ADMIN)


def _foreign_namespace(entry: str) -> str | None:
    """The namespace a qualified ServiceAccount reference names, if it is qualified."""
    if entry.startswith(SA_USER_PREFIX):
        rest = entry[len(SA_USER_PREFIX):]
        return rest.split(":", 1)[0] if ":" in rest else ""
    if "/" in entry:
        return entry.split("/", 1)[0]
    if ":" in entry:
        return ""
    return None


def check_credential(obj: Mapping[str, Any], *, namespace: str, tenant_name: str,
                     spec: tenant.TenantSpec) -> list[Violation]:
    """Every way a Credential in `namespace` of tenant `tenant_name` breaks the tenant rules."""
    found: list[Violation] = []
    owned = [entry.name for entry in spec.namespaces]
    if namespace not in owned:
        found.append(Violation(
            NAMESPACE_RULE, "metadata.namespace",
            f"namespace {namespace} is labelled for tenant {tenant_name}, but the Tenant does not "
            f"list it in spec.namespaces ({', '.join(owned)}); a Credential must live in one of "
            "its tenant's namespaces", "one of " + ", ".join(owned)))
    accounts = items(mapping(obj.get("spec")).get("allowedServiceAccounts"))
    for index, entry in enumerate(accounts):
        path = f"spec.allowedServiceAccounts[{index}]"
        if not isinstance(entry, str) or not entry:
            found.append(Violation(SERVICE_ACCOUNTS_RULE, path,
                                   "must be the name of a ServiceAccount in this namespace",
                                   "a ServiceAccount name"))
            continue
        other = _foreign_namespace(entry)
        if other is None:
            continue
        if other != namespace:
            where = f"namespace {other}" if other else "no namespace"
            found.append(Violation(
                SERVICE_ACCOUNTS_RULE, path,
                f"{entry!r} names a ServiceAccount of {where}; a Credential may only be used by "
                f"ServiceAccounts of its own namespace ({namespace}): give the plain name",
                f"a ServiceAccount name in {namespace}"))
    return found


def _matches(member: tenant.Member, username: str, groups: Collection[str]) -> bool:
    """Whether RBAC would apply a binding to `member` to this requester."""
    if member.kind is tenant.SubjectKind.USER:
        return member.name == username
    if member.kind is tenant.SubjectKind.GROUP:
        return member.name in groups
    return username == f"{SA_USER_PREFIX}{member.namespace}:{member.name}"


def tenant_role(username: str, groups: Collection[str],
                spec: tenant.TenantSpec) -> tenant.Role | None:
    """The highest tier the tenant's members give this requester; None: no tier at all.

    A ServiceAccount of one of the tenant's namespaces holds at most `member`, listed or not:
    any member can run a pod as any ServiceAccount of the namespace, so whatever such an account
    may do, a member may do (and an admin's RoleBinding that gives one more is not a way up).
    Each member counts at the tier its RoleBindings bind it to (`tenant.bound_role`), not the one
    its entry says: a Tenant stored before the schema refused them may still list everyone's
    groups or a ServiceAccount spelled as a User or Group with a higher role, which RBAC never
    binds as such, so the everyone groups every requester carries make nobody an admin here."""
    roles = [role for member in spec.members if _matches(member, username, groups)
             and (role := tenant.bound_role(member)) is not None]
    if username.startswith(SA_USER_PREFIX):
        namespace = username[len(SA_USER_PREFIX):].split(":", 1)[0]
        if namespace in {entry.name for entry in spec.namespaces}:
            roles = [min(role, tenant.Role.MEMBER, key=tenant.ROLE_RANK.__getitem__)
                     for role in roles]
            roles.append(tenant.Role.MEMBER)
    return max(roles, key=tenant.ROLE_RANK.__getitem__, default=None)


def _scope(obj: Mapping[str, Any] | None) -> str | None:
    if obj is None:
        return None
    scope = mapping(obj.get("spec")).get("scope")
    return scope if isinstance(scope, str) else "caller"  # the schema's default


def check_scope(operation: str, obj: Mapping[str, Any] | None,
                old: Mapping[str, Any] | None, *, username: str, groups: Collection[str],
                tenant_name: str, spec: tenant.TenantSpec) -> list[Violation]:
    """Whether this requester may make this write as far as the Credential's scope goes."""
    managed = sorted({scope for scope in (_scope(obj), _scope(old))
                      if scope not in (None, "caller")})
    if not managed:
        return []
    role = tenant_role(username, groups, spec)
    if role is None or role in SCOPE_MANAGERS:
        return []
    verb = {"CREATE": "create", "DELETE": "delete"}.get(operation, "change")
    return [Violation(
        SCOPE_RULE, "spec.scope",
        f"only tenant {tenant_name!r}'s owners and admins may {verb} a Credential scoped "
        f"{' or '.join(managed)} ({username} is a {role} there): its values are the platform's "
        "or participants', not a member's workloads'; members manage caller-scoped Credentials",
        "caller (for a member)")]


def handler(webhook: str, tenants: TenantLookup, recorder: records.Recorder) -> Handler:
    """The route's handler: AdmissionRequest -> Verdict."""

    async def validate(request: AdmissionRequest) -> Verdict:
        if request.operation == "DELETE":
            return await validate_delete(request)
        obj = request.object
        if request.operation not in ("CREATE", "UPDATE") or obj is None:
            return Verdict.allow()
        found = await tenants.tenant_of(request.namespace)
        if found.problem is not None:
            verdict = Verdict.deny(found.problem, code=found.code)
        elif found.spec is None or found.tenant is None:
            verdict = Verdict.deny(
                f"metadata.namespace: namespace {request.namespace} belongs to no tenant (it has "
                f"no {common.TENANT_LABEL} label); a Credential is encrypted under its tenant's "
                f"key and must live in one of the tenant's namespaces [{NAMESPACE_RULE}]")
        else:
            violations = [
                *check_credential(obj, namespace=request.namespace, tenant_name=found.tenant,
                                  spec=found.spec),
                *check_scope(request.operation, obj, request.old_object,
                             username=request.user.username, groups=request.user.groups,
                             tenant_name=found.tenant, spec=found.spec)]
            if violations:
                verdict = Verdict.deny(
                    f"Credential violates its tenant's rules (tenant {found.tenant!r}): "
                    + "; ".join(str(v) for v in violations))
            else:
                verdict = Verdict.allow()
        recorder.record(records.of_request(webhook, request, tenant=found.tenant, mode="",
                                           verdict=verdict))
        return verdict

    async def validate_delete(request: AdmissionRequest) -> Verdict:
        # Sent only for Credentials scoped other than caller (the route's matchConditions).
        found = await tenants.tenant_of(request.namespace)
        if found.problem is not None:
            verdict = Verdict.deny(found.problem, code=found.code)
        elif found.spec is None or found.tenant is None:
            verdict = Verdict.allow()  # no tenant: nobody's tier to judge
        else:
            violations = check_scope("DELETE", None, request.old_object,
                                     username=request.user.username,
                                     groups=request.user.groups, tenant_name=found.tenant,
                                     spec=found.spec)
            verdict = Verdict.deny(
                f"Credential violates its tenant's rules (tenant {found.tenant!r}): "
                + "; ".join(str(v) for v in violations)) if violations else Verdict.allow()
        recorder.record(records.of_request(webhook, request, tenant=found.tenant, mode="",
                                           verdict=verdict))
        return verdict

    return validate
