"""The credentials route: what a Credential's schema cannot check, because it needs the tenant.

A Credential is encrypted under its tenant's key, so it must live in a namespace of a tenant:

- `credentialNamespace`: the namespace carries the operator's tenant label, its Tenant exists,
  and that Tenant lists the namespace in spec.namespaces (a label left behind by a namespace the
  tenant gave up does not count);
- `credentialServiceAccounts`: every allowedServiceAccounts entry names a ServiceAccount of the
  Credential's own namespace. The schema accepts plain names only; a qualified form
  (`system:serviceaccount:NS:NAME` or `NS/NAME`) naming another namespace is refused here too, so
  that no future relaxation of the schema can reach across namespaces or tenants.

The check itself (`check_credential`) is pure; `handler` adds the tenant lookup.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from tenantry.admission.violation import Violation, items, mapping
from tenantry.model import common, tenant
from tenantry.webhook import records
from tenantry.webhook.directory import TenantLookup
from tenantry.webhook.review import AdmissionRequest, Handler, Verdict

NAMESPACE_RULE = "credentialNamespace"
SERVICE_ACCOUNTS_RULE = "credentialServiceAccounts"
SA_USER_PREFIX = "system:serviceaccount:"


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


def handler(webhook: str, tenants: TenantLookup, recorder: records.Recorder) -> Handler:
    """The route's handler: AdmissionRequest -> Verdict."""

    async def validate(request: AdmissionRequest) -> Verdict:
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
            violations = check_credential(obj, namespace=request.namespace,
                                          tenant_name=found.tenant, spec=found.spec)
            if violations:
                verdict = Verdict.deny(
                    f"Credential violates its tenant's rules (tenant {found.tenant!r}): "
                    + "; ".join(str(v) for v in violations))
            else:
                verdict = Verdict.allow()
        recorder.record(records.of_request(webhook, request, tenant=found.tenant, mode="",
                                           verdict=verdict))
        return verdict

    return validate
