"""Isolation at the webhook: refused in every mode, recorded, and fail closed on lookups."""

from __future__ import annotations

from typing import Any

from tenantry.webhook import isolation, records, workloads
from tests.unit.admission.admission_helpers import hardened_pod
from tests.unit.webhook.webhook_unit_helpers import (
    DEFAULT_PRIORITY_CLASS,
    Collected,
    Tenants,
    acme,
    request_of,
)

WORKLOADS = "workloads.admission.tenantry.dev"
ISOLATION = "isolation.admission.tenantry.dev"


def _service(**spec: Any) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "s", "namespace": "team-a"}, "spec": spec}


async def test_external_ips_are_refused_even_in_audit_mode() -> None:
    """The apiserver's DenyServiceExternalIPs plugin answers first where it is on; this is the
    refusal on clusters where it is not."""
    sink = Collected()
    validate = workloads.handler(WORKLOADS, acme(podSecurity={"mode": "Audit"}),
                                 records.Recorder([sink]))
    verdict = await validate(request_of(_service(externalIPs=["203.0.113.9"]), kind="Service"))
    assert not verdict.allowed and verdict.code == 403
    assert "breaks tenant isolation" in verdict.message
    assert "spec.externalIPs: must be empty" in verdict.message
    assert [v.rule_id for v in sink.records[0].violations] == ["serviceExternalIPs"]
    assert not sink.records[0].allowed


async def test_an_external_name_to_another_tenants_namespace_is_refused() -> None:
    validate = workloads.handler(WORKLOADS, acme(podSecurity={"mode": "Warn"}),
                                 records.Recorder([Collected()]))
    refused = await validate(request_of(_service(
        type="ExternalName", externalName="db.globex.svc.cluster.local"), kind="Service"))
    assert not refused.allowed and "[serviceExternalName]" in refused.message
    allowed = await validate(request_of(_service(
        type="ExternalName", externalName="db.team-b.svc"), kind="Service"))
    assert allowed.allowed


async def test_network_policies_are_judged_on_every_update() -> None:
    sink = Collected()
    validate = isolation.handler(ISOLATION, acme(), records.Recorder([sink]))
    wide = {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"name": "p", "namespace": "team-a"},
            "spec": {"podSelector": {}, "egress": [{}]}}
    verdict = await validate(request_of(wide, kind="NetworkPolicy", operation="UPDATE", old=wide))
    assert not verdict.allowed and "spec.egress[0].to: must list peers" in verdict.message
    assert (await validate(request_of(wide, kind="NetworkPolicy", operation="DELETE",
                                      old=wide))).allowed


async def test_other_namespaces_are_not_judged() -> None:
    validate = isolation.handler(ISOLATION, Tenants({}), records.Recorder([Collected()]))
    secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "x", "namespace": "o"},
              "type": "kubernetes.io/service-account-token"}
    assert (await validate(request_of(secret, kind="Secret", namespace="o"))).allowed


async def test_the_cluster_default_priority_class_passes_and_a_failed_lookup_refuses() -> None:
    pod = hardened_pod()
    pod["spec"]["priorityClassName"] = DEFAULT_PRIORITY_CLASS
    validate = workloads.handler(WORKLOADS, acme(), records.Recorder([Collected()]))
    assert (await validate(request_of(pod))).allowed

    class Unreachable(Tenants):
        async def is_default_priority_class(self, name: str) -> bool:
            raise TimeoutError

    tenants = acme()
    broken = workloads.handler(WORKLOADS, Unreachable(tenants.table),
                               records.Recorder([Collected()]))
    verdict = await broken(request_of(pod))
    assert not verdict.allowed and verdict.code == 503
    assert "cannot read PriorityClass" in verdict.message and "fail closed" in verdict.message
