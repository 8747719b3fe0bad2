"""Shared by the webhook's unit tests: AdmissionReview requests, a tenant table, a record sink."""

from __future__ import annotations

import json
from typing import Any

from tenantry.model import tenant
from tenantry.webhook import review
from tenantry.webhook.directory import TenantOf
from tenantry.webhook.records import AdmissionRecord

GVK = {"Pod": ("", "v1"), "Deployment": ("apps", "v1"), "CronJob": ("batch", "v1"),
       "Service": ("", "v1"), "Credential": ("tenantry.dev", "v1alpha1"),
       "Secret": ("", "v1"), "NetworkPolicy": ("networking.k8s.io", "v1")}
PLURAL = {"Pod": "pods", "Deployment": "deployments", "CronJob": "cronjobs",
          "Service": "services", "Credential": "credentials", "Secret": "secrets",
          "NetworkPolicy": "networkpolicies"}


def review_body(obj: dict[str, Any] | None, *, operation: str = "CREATE",
                old: dict[str, Any] | None = None, namespace: str = "team-a",
                sub_resource: str | None = None, dry_run: bool = False,
                kind: str | None = None) -> dict[str, Any]:
    """An AdmissionReview v1 as the apiserver sends it."""
    kind = kind or (obj or old or {}).get("kind", "Pod")
    group, version = GVK[kind]
    request: dict[str, Any] = {
        "uid": "705ab4f5-6393-11e8-b7cc-42010a800002",
        "kind": {"group": group, "version": version, "kind": kind},
        "resource": {"group": group, "version": version, "resource": PLURAL[kind]},
        "operation": operation, "namespace": namespace,
        "name": ((obj or old or {}).get("metadata") or {}).get("name", ""),
        "userInfo": {"username": "alice", "uid": "u-1", "groups": ["team-a"]},
        "object": obj, "oldObject": old, "dryRun": dry_run,
    }
    if sub_resource:
        request["subResource"] = sub_resource
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": request}


def request_of(obj: dict[str, Any] | None, **kwargs: Any) -> review.AdmissionRequest:
    return review.parse_review(json.dumps(review_body(obj, **kwargs)).encode())


def tenant_spec(**spec: Any) -> tenant.TenantSpec:
    return tenant.TenantSpec.model_validate({
        "members": [{"kind": "User", "name": "alice", "role": "owner"}],
        "namespaces": [{"name": "team-a"}, {"name": "team-b"}], **spec})


DEFAULT_PRIORITY_CLASS = "cluster-default"


class Tenants:
    """A fixed namespace -> TenantOf table (the directory's interface, without a cluster)."""

    def __init__(self, table: dict[str, TenantOf]) -> None:
        self.table = table
        self.asked: list[str] = []

    async def tenant_of(self, namespace: str) -> TenantOf:
        self.asked.append(namespace)
        return self.table.get(namespace, TenantOf(namespace, None))

    def namespaces_of(self, tenant_name: str, spec: tenant.TenantSpec,
                      namespace: str) -> frozenset[str]:
        return frozenset(n for n, found in self.table.items() if found.tenant == tenant_name)

    async def is_default_priority_class(self, name: str) -> bool:
        return name == DEFAULT_PRIORITY_CLASS


def acme(**spec: Any) -> Tenants:
    found = TenantOf("team-a", "acme", spec=tenant_spec(**spec))
    return Tenants({"team-a": found, "team-b": TenantOf("team-b", "acme",
                                                         spec=found.spec)})


class Collected:
    """A decision sink that keeps what it is given."""

    def __init__(self) -> None:
        self.records: list[AdmissionRecord] = []

    def record(self, record: AdmissionRecord) -> None:
        self.records.append(record)
