"""NodePort and LoadBalancer Services under the tenant's quota."""

from __future__ import annotations

from typing import Any

import pytest

from tenantry.admission import services
from tenantry.model.tenant import Quota


def service(**spec: Any) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s"},
            "spec": {"ports": [{"port": 80}], **spec}}


def rules_and_paths(svc: dict[str, Any], quota: Quota) -> set[tuple[str, str]]:
    return {(v.rule_id, v.field_path) for v in services.check_service(svc, quota)}


def test_default_quota_forbids_node_ports_and_load_balancers() -> None:
    quota = Quota()
    assert rules_and_paths(service(type="NodePort"), quota) == {
        ("nodePortServices", "spec.type")}
    assert rules_and_paths(service(type="LoadBalancer"), quota) == {
        ("loadBalancerServices", "spec.type"),
        ("nodePortServices", "spec.allocateLoadBalancerNodePorts"),
    }


@pytest.mark.parametrize("kind", [None, "ClusterIP", "ExternalName"])
def test_services_that_open_no_node_port_pass(kind: str | None) -> None:
    svc = service() if kind is None else service(type=kind)
    assert services.check_service(svc, Quota()) == []


def test_quota_that_allows_them_lets_them_through() -> None:
    quota = Quota(services_node_ports=2, services_load_balancers=1)
    assert services.check_service(service(type="NodePort"), quota) == []
    assert services.check_service(service(type="LoadBalancer"), quota) == []


def test_load_balancer_without_node_ports() -> None:
    quota = Quota(services_load_balancers=1)
    assert rules_and_paths(service(type="LoadBalancer"), quota) == {
        ("nodePortServices", "spec.allocateLoadBalancerNodePorts")}
    svc = service(type="LoadBalancer", allocateLoadBalancerNodePorts=False)
    assert services.check_service(svc, quota) == []


def test_messages_say_what_is_required() -> None:
    [violation] = services.check_service(service(type="NodePort"), Quota())
    assert violation.required_value == "ClusterIP"
    assert "servicesNodePorts is 0" in violation.message


def test_other_objects_are_not_services() -> None:
    other = {"apiVersion": "serving.knative.dev/v1", "kind": "Service",
             "spec": {"type": "NodePort"}}
    assert services.check_service(other, Quota()) == []
