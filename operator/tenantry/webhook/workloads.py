"""The workloads route: Pods, ephemeral containers, the eight pod-template kinds and Services.

For each review in a tenant namespace: find the tenant, apply `policy.evaluate` with its
podSecurity (mode, exemptions) and quota, and answer:

- Deny: refused, the message listing every violation with its field path in the object as
  written (spec.template.spec.containers[0]... for a Deployment) and its rule id;
- Warn: admitted, one warning per violation;
- Audit: admitted silently.

Every decision goes to the recorder (the audit ledger's hook), whatever the mode. A namespace
whose tenant cannot be established is refused (fail closed), with the reason. Before the
hardening rules, the isolation rules (`webhook.isolation`: Service externalIPs and
ExternalName, priority classes) refuse in every mode.

An UPDATE that leaves the pod (spec and annotations) or, for a Service, the spec unchanged is
admitted without evaluation, as Pod Security Admission does: labelling, scaling or finalizing an
object that exists changes nothing the rules judge, and must keep working for objects admitted
before the namespace joined a tenant or before the tenant switched to Deny.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from tenantry.admission import podspecs, policy, services
from tenantry.admission.violation import mapping
from tenantry.model import tenant
from tenantry.webhook import isolation, records, tenancy
from tenantry.webhook.directory import IsolationLookup
from tenantry.webhook.review import AdmissionRequest, Handler, Verdict

# Largest audit annotation value we send; the apiserver's audit event is no place for novels.
MAX_ANNOTATION = 4096


def _pod_fingerprint(obj: Mapping[str, Any]) -> Any:
    ref = podspecs.find_pod(obj)
    if ref is None:
        return None
    return ref.spec, mapping(ref.metadata.get("annotations"))


def judged_part_changed(new: Mapping[str, Any], old: Mapping[str, Any] | None) -> bool:
    """Whether an UPDATE changes what the rules judge (a pod's spec and annotations, or a
    Service's spec). Without an old object, everything is new."""
    if old is None:
        return True
    if services.is_service(new):
        return bool(mapping(new.get("spec")) != mapping(old.get("spec")))
    fingerprint = _pod_fingerprint(new)
    return fingerprint is None or fingerprint != _pod_fingerprint(old)


def refusal_message(tenant_name: str, decision: policy.Decision) -> str:
    """Why an object is refused: the tenant, then every violation with path and rule id."""
    return (f"tenant {tenant_name!r} (podSecurity.mode {decision.mode.value}): "
            f"{decision.message}")


def _annotation(values: list[str]) -> str:
    text = json.dumps(values, separators=(",", ":"))
    return text if len(text) <= MAX_ANNOTATION else text[: MAX_ANNOTATION - 5] + "...]"


def verdict_for(tenant_name: str, decision: policy.Decision) -> Verdict:
    """The answer to the apiserver for a decision under a tenant's mode."""
    annotations: dict[str, str] = {"tenant": tenant_name, "mode": decision.mode.value}
    if decision.violations:
        annotations["violations"] = _annotation([str(v) for v in decision.violations])
    if decision.exempted:
        annotations["exempted"] = _annotation(
            [f"{e.violation} (exemption: {e.exemption.reason})" for e in decision.exempted])
    if not decision.allowed:
        return Verdict.deny(refusal_message(tenant_name, decision), audit_annotations=annotations)
    warnings: tuple[str, ...] = ()
    if decision.mode is tenant.EnforcementMode.WARN and decision.violations:
        warnings = tuple(f"tenant {tenant_name!r} (podSecurity.mode Warn): {v}"
                         for v in decision.violations)
    return Verdict.allow(warnings=warnings, audit_annotations=annotations)


def handler(webhook: str, tenants: IsolationLookup, recorder: records.Recorder) -> Handler:
    """The route's handler: AdmissionRequest -> Verdict."""

    async def validate(request: AdmissionRequest) -> Verdict:
        obj = request.typed_object()
        if request.operation not in ("CREATE", "UPDATE") or obj is None:
            return Verdict.allow()
        if request.operation == "UPDATE" and not judged_part_changed(
                obj, request.typed_old_object()):
            return Verdict.allow()
        owner = await tenancy.tenant_or_verdict(webhook, request, tenants, recorder)
        if isinstance(owner, Verdict):
            return owner
        spec = owner.spec
        refused = await isolation.judge(webhook, request, obj, owner.found, tenants, recorder)
        if refused is not None:
            return refused
        decision = policy.evaluate(obj, spec.pod_security, quota=spec.quota,
                                   namespace=request.namespace)
        verdict = verdict_for(owner.name, decision)
        recorder.record(records.of_request(webhook, request, tenant=owner.name,
                                           mode=decision.mode.value, verdict=verdict,
                                           decision=decision))
        return verdict

    return validate

