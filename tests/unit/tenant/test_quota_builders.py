"""ResourceQuota and LimitRange from the spec, with the model's defaults."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tenantry.controller.tenant import quota
from tenantry.model import common
from tenantry.model.tenant import Limits, Quota, TenantSpec

TENANT = "acme"
UID = "6c0d6c5e-1f0b-4d8a-9b4e-3f1f4c1b2a77"


def test_default_quota(valid: Callable[[dict[str, Any]], None]) -> None:
    manifest = quota.resource_quota(TENANT, UID, "acme-prod", Quota())
    valid(manifest)
    assert manifest["kind"] == "ResourceQuota" and manifest["apiVersion"] == "v1"
    assert manifest["metadata"]["name"] == "tenantry-quota"
    assert manifest["metadata"]["namespace"] == "acme-prod"
    assert manifest["metadata"]["labels"][common.TENANT_LABEL] == TENANT
    assert manifest["spec"]["hard"] == {
        "configmaps": "100",
        "limits.cpu": "8",
        "limits.ephemeral-storage": "20Gi",
        "limits.memory": "16Gi",
        "persistentvolumeclaims": "20",
        "pods": "50",
        "requests.cpu": "8",
        "requests.ephemeral-storage": "20Gi",
        "requests.memory": "16Gi",
        "requests.storage": "100Gi",
        "secrets": "100",
        "services": "20",
        "services.loadbalancers": "0",
        "services.nodeports": "0",
    }


def test_quota_from_the_spec(acme: TenantSpec) -> None:
    hard = quota.quota_hard(acme.quota)
    assert hard["requests.cpu"] == hard["limits.cpu"] == "16"
    assert hard["requests.memory"] == hard["limits.memory"] == "32Gi"
    assert hard["pods"] == "100"
    assert list(hard) == sorted(hard)


def test_quota_counts_are_strings() -> None:
    hard = quota.quota_hard(Quota(services_load_balancers=2, services_node_ports=1))
    assert hard["services.loadbalancers"] == "2" and hard["services.nodeports"] == "1"
    assert all(isinstance(v, str) for v in hard.values())


def test_default_limit_range(valid: Callable[[dict[str, Any]], None]) -> None:
    manifest = quota.limit_range(TENANT, UID, "acme-prod", Limits())
    valid(manifest)
    assert manifest["kind"] == "LimitRange" and manifest["metadata"]["name"] == "tenantry-limits"
    assert manifest["metadata"]["ownerReferences"][0]["uid"] == UID
    assert manifest["spec"] == {"limits": [{
        "type": "Container",
        "default": {"cpu": "500m", "memory": "512Mi"},
        "defaultRequest": {"cpu": "100m", "memory": "128Mi"},
        "max": {"cpu": "4", "memory": "8Gi"},
    }]}


def test_limit_range_from_the_spec(make_spec: Callable[..., TenantSpec]) -> None:
    spec = make_spec(limits={"defaultCpu": "1", "maxMemory": "2Gi"})
    (limits,) = quota.limit_range(TENANT, UID, "ns", spec.limits)["spec"]["limits"]
    assert limits["default"]["cpu"] == "1" and limits["max"]["memory"] == "2Gi"
