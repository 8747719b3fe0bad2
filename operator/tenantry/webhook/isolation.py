"""Tenant isolation at the webhook: `admission.isolation` with the cluster's facts filled in.

The pure rules need what only the cluster knows: which namespaces the tenant holds (from the
directory's namespace cache) and whether a PriorityClass a pod names is the cluster's
globalDefault (the apiserver's Priority admission fills that one into pods that name none, so
it must pass). `judge` is shared by the workloads route (pods, pod templates, Services) and the
isolation route (tenant NetworkPolicies and ServiceAccount token Secrets).

Isolation refusals do not depend on the tenant's podSecurity mode: Warn and Audit relax the
hardening rules, never the walls between tenants. Every UPDATE is judged (a NetworkPolicy left
wider than a narrowed allow-list is refused at its next update); DELETE always passes.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from tenantry.admission import isolation, podspecs, policy
from tenantry.admission.violation import Violation
from tenantry.model import tenant
from tenantry.webhook import records, tenancy
from tenantry.webhook.directory import LOOKUP_ERRORS, IsolationLookup, TenantOf
from tenantry.webhook.review import AdmissionRequest, Handler, Verdict


class LookupFailed(Exception):
    """A fact the rules need could not be read; the review is refused with 503 (fail closed)."""


async def _default_priority_classes(obj: Mapping[str, Any], spec: tenant.TenantSpec,
                                    tenants: IsolationLookup) -> tuple[str, ...]:
    ref = podspecs.find_pod(obj)
    name = ref.spec.get("priorityClassName") if ref is not None else None
    if not isinstance(name, str) or not name or name in spec.allowed_priority_classes:
        return ()
    try:
        return (name,) if await tenants.is_default_priority_class(name) else ()
    except LOOKUP_ERRORS as error:
        raise LookupFailed(f"cannot read PriorityClass {name} to tell whether it is the "
                           f"cluster default ({error or type(error).__name__}); refusing "
                           "(fail closed), try again") from None


async def violations(obj: Mapping[str, Any], found: TenantOf, namespace: str,
                     tenants: IsolationLookup) -> list[Violation]:
    """Every isolation violation of `obj` in `namespace` of tenant `found`."""
    assert found.tenant is not None and found.spec is not None
    return isolation.check_isolation(
        obj, found.spec, tenant_name=found.tenant,
        tenant_namespaces=tenants.namespaces_of(found.tenant, found.spec, namespace),
        default_priority_classes=await _default_priority_classes(obj, found.spec, tenants))


def refusal(tenant_name: str, found: list[Violation]) -> Verdict:
    message = (f"tenant {tenant_name!r}: breaks tenant isolation (refused in every podSecurity "
               "mode): " + "; ".join(str(v) for v in found))
    return Verdict.deny(message, audit_annotations={
        "tenant": tenant_name, "isolation": "; ".join(v.rule_id for v in found)})


async def judge(webhook: str, request: AdmissionRequest, obj: Mapping[str, Any], found: TenantOf,
                tenants: IsolationLookup, recorder: records.Recorder) -> Verdict | None:
    """The refusal of `obj` (recorded, like every refusal), or None when it stays inside."""
    assert found.tenant is not None and found.spec is not None
    try:
        broken = await violations(obj, found, request.namespace, tenants)
    except LookupFailed as error:
        return Verdict.deny(str(error), code=503)
    if not broken:
        return None
    verdict = refusal(found.tenant, broken)
    mode = found.spec.pod_security.mode
    # Recorded as a policy decision, so the ledger lists its violations like any other.
    decision = policy.Decision(allowed=False, mode=mode, violations=tuple(broken), exempted=(),
                               warnings=())
    recorder.record(records.of_request(webhook, request, tenant=found.tenant, mode=mode.value,
                                       verdict=verdict, decision=decision))
    return verdict


def handler(webhook: str, tenants: IsolationLookup, recorder: records.Recorder) -> Handler:
    """The isolation route's handler (NetworkPolicies, ServiceAccount token Secrets)."""

    async def validate(request: AdmissionRequest) -> Verdict:
        obj = request.typed_object()
        if request.operation not in ("CREATE", "UPDATE") or obj is None:
            return Verdict.allow()
        owner = await tenancy.tenant_or_verdict(webhook, request, tenants, recorder)
        if isinstance(owner, Verdict):
            return owner
        refused = await judge(webhook, request, obj, owner.found, tenants, recorder)
        return refused if refused is not None else Verdict.allow()

    return validate
