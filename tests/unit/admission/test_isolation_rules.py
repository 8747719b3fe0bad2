"""Isolation rules: Services, ServiceAccount token Secrets and priority classes (pure)."""

from __future__ import annotations

from typing import Any

import pytest

from tenantry.admission import isolation
from tenantry.model import tenant
from tests.unit.admission.admission_helpers import hardened_pod, wrap

SPEC = tenant.TenantSpec.model_validate({
    "members": [{"kind": "User", "name": "alice", "role": "owner"}],
    "namespaces": [{"name": "acme-prod"}, {"name": "acme-dev"}],
    "allowedPriorityClasses": ["batch-low"],
})
OWN = ("acme-prod", "acme-dev")


def _check(obj: dict[str, Any], defaults: tuple[str, ...] = ()) -> list[tuple[str, str]]:
    return [(v.rule_id, v.field_path) for v in isolation.check_isolation(
        obj, SPEC, tenant_name="acme", tenant_namespaces=OWN,
        default_priority_classes=defaults)]


def _service(**spec: Any) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s"}, "spec": spec}


def test_external_ips_are_refused() -> None:
    assert _check(_service(externalIPs=["203.0.113.9"])) == [
        ("serviceExternalIPs", "spec.externalIPs")]
    assert _check(_service(externalIPs=[])) == []


@pytest.mark.parametrize("target", [
    "db.globex-prod.svc.cluster.local", "kubernetes.default.svc", "api.stripe.com",
    "169.254.169.254", "db.acme-prod", "db.acme-prod.svc.evil.io", "acme-prod.svc", "", None,
    "DB.GLOBEX.SVC",
])
def test_external_names_outside_the_tenant_are_refused(target: str | None) -> None:
    assert _check(_service(type="ExternalName", externalName=target)) == [
        ("serviceExternalName", "spec.externalName")]


@pytest.mark.parametrize("target", ["db.acme-dev.svc.cluster.local", "db.acme-prod.svc",
                                    "db.acme-prod.svc.cluster.local.", "DB.ACME-DEV.SVC"])
def test_external_names_of_the_tenants_own_services_pass(target: str) -> None:
    assert _check(_service(type="ExternalName", externalName=target)) == []


def test_service_account_token_secrets_are_refused() -> None:
    secret = {"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/service-account-token"}
    assert _check(secret) == [("serviceAccountTokenSecret", "type")]
    assert _check({**secret, "type": "Opaque"}) == []
    assert _check({**secret, "type": "kubernetes.io/dockerconfigjson"}) == []


@pytest.mark.parametrize("name", ["system-node-critical", "system-cluster-critical", "premium"])
def test_priority_classes_the_tenant_does_not_allow_are_refused(name: str) -> None:
    pod = hardened_pod()
    pod["spec"]["priorityClassName"] = name
    assert _check(pod) == [("priorityClass", "spec.priorityClassName")]
    assert _check(wrap(pod, "Deployment")) == [
        ("priorityClass", "spec.template.spec.priorityClassName")]


def test_allowed_and_default_priority_classes_pass() -> None:
    pod = hardened_pod()
    assert _check(pod) == []
    pod["spec"]["priorityClassName"] = "batch-low"
    assert _check(pod) == []
    pod["spec"]["priorityClassName"] = "cluster-default"
    assert _check(pod, defaults=("cluster-default",)) == []
    assert _check(pod) == [("priorityClass", "spec.priorityClassName")]


def test_messages_say_what_to_do() -> None:
    pod = hardened_pod()
    pod["spec"]["priorityClassName"] = "system-node-critical"
    [violation] = isolation.check_isolation(pod, SPEC, tenant_name="acme",
                                            tenant_namespaces=OWN)
    assert "allowed: batch-low" in violation.message
    assert "spec.allowedPriorityClasses" in violation.required_value
