"""The workloads handler: the tenant's mode, exemptions and quota, applied to a review."""

from __future__ import annotations

import copy
import json
from typing import Any

from tenantry.webhook import records, workloads
from tenantry.webhook.directory import TenantOf
from tests.unit.admission.admission_helpers import hardened_pod, wrap
from tests.unit.webhook.webhook_unit_helpers import Collected, Tenants, acme, request_of

WEBHOOK = "workloads.admission.tenantry.dev"
ROOT_FS = "readOnlyRootFilesystem"


def writable(pod: dict[str, Any]) -> dict[str, Any]:
    pod = copy.deepcopy(pod)
    pod["spec"]["containers"][0]["securityContext"]["readOnlyRootFilesystem"] = False
    return pod


async def judge(tenants: Tenants, obj: dict[str, Any] | None, **kwargs: Any) -> Any:
    sink = Collected()
    validate = workloads.handler(WEBHOOK, tenants, records.Recorder([sink]))
    verdict = await validate(request_of(obj, **kwargs))
    return verdict, sink.records


async def test_hardened_pod_is_allowed_and_recorded() -> None:
    verdict, recorded = await judge(acme(), hardened_pod())
    assert verdict.allowed and verdict.warnings == ()
    assert verdict.audit_annotations == {"tenant": "acme", "mode": "Deny"}
    assert len(recorded) == 1 and recorded[0].allowed and recorded[0].violations == ()


async def test_deny_lists_every_violation_with_template_paths() -> None:
    pod = writable(hardened_pod())
    pod["spec"]["hostNetwork"] = True
    verdict, recorded = await judge(acme(), wrap(pod, "Deployment"), kind="Deployment")
    assert not verdict.allowed and verdict.code == 403
    assert verdict.message.startswith("tenant 'acme' (podSecurity.mode Deny): violates "
                                      "Tenantry's hardening rules: ")
    assert ("spec.template.spec.containers[0].securityContext.readOnlyRootFilesystem: must be "
            "true") in verdict.message
    assert "spec.template.spec.hostNetwork" in verdict.message
    assert "[hostNamespaces]" in verdict.message and f"[{ROOT_FS}]" in verdict.message
    assert json.loads(verdict.audit_annotations["violations"])
    record = recorded[0]
    assert not record.allowed and record.mode == "Deny" and record.tenant == "acme"
    assert record.kind == "Deployment.apps/v1" and record.username == "alice"
    assert {v.rule_id for v in record.violations} == {ROOT_FS, "hostNamespaces"}


async def test_cronjob_paths() -> None:
    verdict, _ = await judge(acme(), wrap(writable(hardened_pod()), "CronJob"), kind="CronJob")
    assert ("spec.jobTemplate.spec.template.spec.containers[0].securityContext."
            "readOnlyRootFilesystem") in verdict.message


async def test_warn_admits_with_one_warning_per_violation() -> None:
    pod = writable(hardened_pod())
    pod["spec"]["containers"][1]["securityContext"]["readOnlyRootFilesystem"] = False
    verdict, recorded = await judge(acme(podSecurity={"mode": "Warn"}), pod)
    assert verdict.allowed
    assert len(verdict.warnings) == 2
    assert all(w.startswith("tenant 'acme' (podSecurity.mode Warn): spec.containers[")
               for w in verdict.warnings)
    assert recorded[0].allowed and len(recorded[0].violations) == 2


async def test_audit_admits_silently_but_records() -> None:
    verdict, recorded = await judge(acme(podSecurity={"mode": "Audit"}),
                                    writable(hardened_pod()))
    assert verdict.allowed and verdict.warnings == ()
    assert "violations" in verdict.audit_annotations
    assert recorded[0].mode == "Audit" and [v.rule_id for v in recorded[0].violations] == \
        [ROOT_FS]


async def test_exempted_violations_are_admitted_and_recorded_as_exempt() -> None:
    tenants = acme(podSecurity={"exemptions": [{"rule": ROOT_FS, "reason": "legacy"}]})
    verdict, recorded = await judge(tenants, writable(hardened_pod()))
    assert verdict.allowed
    assert "legacy" in verdict.audit_annotations["exempted"]
    assert recorded[0].exempted[0].exemption.reason == "legacy"
    assert recorded[0].to_dict()["exempted"][0]["exemption"]["rule"] == ROOT_FS


async def test_services_against_the_quota() -> None:
    service = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s"},
               "spec": {"type": "NodePort"}}
    verdict, _ = await judge(acme(), service)
    assert not verdict.allowed and "[nodePortServices]" in verdict.message
    verdict, _ = await judge(acme(quota={"servicesNodePorts": 2}), service)
    assert verdict.allowed


async def test_ephemeral_containers_subresource() -> None:
    old = hardened_pod()
    new = copy.deepcopy(old)
    debug = copy.deepcopy(new["spec"]["containers"][0])
    debug["name"] = "debug"
    debug["securityContext"]["privileged"] = True
    new["spec"]["ephemeralContainers"] = [debug]
    verdict, _ = await judge(acme(), new, operation="UPDATE", old=old,
                             sub_resource="ephemeralcontainers")
    assert not verdict.allowed
    assert "spec.ephemeralContainers[0].securityContext.privileged" in verdict.message


async def test_update_that_leaves_the_pod_alone_is_not_judged() -> None:
    old = wrap(writable(hardened_pod()), "Deployment")
    relabelled = copy.deepcopy(old)
    relabelled["metadata"]["labels"] = {"tier": "web"}
    relabelled["spec"]["replicas"] = 3
    tenants = acme()
    verdict, recorded = await judge(tenants, relabelled, operation="UPDATE", old=old,
                                    kind="Deployment")
    assert verdict.allowed and recorded == [] and tenants.asked == []
    changed = copy.deepcopy(relabelled)
    changed["spec"]["template"]["metadata"]["annotations"] = {"x": "y"}
    verdict, _ = await judge(tenants, changed, operation="UPDATE", old=old, kind="Deployment")
    assert not verdict.allowed


def test_judged_part_changed() -> None:
    pod = hardened_pod()
    assert workloads.judged_part_changed(pod, None)
    assert not workloads.judged_part_changed(pod, copy.deepcopy(pod))
    other = copy.deepcopy(pod)
    other["metadata"]["annotations"] = {"container.apparmor.security.beta.kubernetes.io/app":
                                        "unconfined"}
    assert workloads.judged_part_changed(other, pod)
    service = {"apiVersion": "v1", "kind": "Service", "metadata": {}, "spec": {"type": "A"}}
    assert workloads.judged_part_changed(service, {**service, "spec": {"type": "B"}})
    assert not workloads.judged_part_changed(service, {**service, "metadata": {"labels": {}}})


async def test_outside_tenant_namespaces_nothing_is_judged_or_recorded() -> None:
    verdict, recorded = await judge(Tenants({}), writable(hardened_pod()), namespace="else")
    assert verdict.allowed and verdict.audit_annotations == {} and recorded == []


async def test_missing_tenant_fails_closed() -> None:
    problem = TenantOf("team-a", "ghost", problem="Tenant 'ghost' does not exist")
    verdict, recorded = await judge(Tenants({"team-a": problem}), hardened_pod())
    assert not verdict.allowed and verdict.message == "Tenant 'ghost' does not exist"
    assert recorded[0].tenant == "ghost" and not recorded[0].allowed
    unavailable = TenantOf("team-a", None, problem="cannot read", code=503)
    verdict, _ = await judge(Tenants({"team-a": unavailable}), hardened_pod())
    assert not verdict.allowed and verdict.code == 503


async def test_delete_and_connect_pass() -> None:
    verdict, recorded = await judge(acme(), None, operation="DELETE", old=hardened_pod())
    assert verdict.allowed and recorded == []


async def test_a_failing_sink_does_not_change_the_verdict() -> None:
    class Broken:
        def record(self, record: records.AdmissionRecord) -> None:
            raise RuntimeError("ledger down")

    validate = workloads.handler(WEBHOOK, acme(), records.Recorder([Broken()]))
    verdict = await validate(request_of(writable(hardened_pod())))
    assert not verdict.allowed
