"""The tenant of a review's namespace, or the verdict that ends the review before any rule runs.

Every tenant-scoped route starts the same way: look the namespace up; a lookup that fails is a
refusal (fail closed, recorded like every refusal); a namespace of no tenant is not ours to
judge. `tenant_or_verdict` is that start, once.
"""

from __future__ import annotations

import dataclasses

from tenantry.model import tenant
from tenantry.webhook import records
from tenantry.webhook.directory import TenantLookup, TenantOf
from tenantry.webhook.review import AdmissionRequest, Verdict


@dataclasses.dataclass(frozen=True, slots=True)
class TenantNamespace:
    """A namespace whose tenant and policy are known."""

    name: str
    spec: tenant.TenantSpec
    found: TenantOf


async def tenant_or_verdict(webhook: str, request: AdmissionRequest, tenants: TenantLookup,
                            recorder: records.Recorder) -> TenantNamespace | Verdict:
    """The request namespace's tenant, or the verdict to answer with at once."""
    found = await tenants.tenant_of(request.namespace)
    if found.problem is not None:
        verdict = Verdict.deny(found.problem, code=found.code)
        recorder.record(records.of_request(webhook, request, tenant=found.tenant, mode="",
                                           verdict=verdict))
        return verdict
    if found.spec is None or found.tenant is None:
        return Verdict.allow()  # not a tenant namespace: not ours to judge
    return TenantNamespace(found.tenant, found.spec, found)
