"""Tenant isolation at admission (pure): what no tenant may do, in any podSecurity mode.

    check_isolation(obj, spec, tenant_name=..., tenant_namespaces=..., default_priority_classes=...)
        -> [Violation]

The hardening rules (`policy`) are about how a workload runs, and a Tenant may relax them with
Warn, Audit or exemptions. These rules are about reaching out of the tenant, so none of that
applies: a violation here is always a refusal.

- `networkPolicyIngress` / `networkPolicyEgress`: a tenant NetworkPolicy only narrows
  (see `networkpolicy`).
- `serviceExternalIPs`: a Service with `spec.externalIPs` can intercept traffic to any address
  cluster-wide (CVE-2020-8554).
- `serviceExternalName`: an ExternalName Service is a DNS alias the cluster's proxies and
  ingress controllers follow; it may only alias a Service in the tenant's own namespaces
  (`NAME.NAMESPACE.svc[.cluster.local]`), never another tenant's, the platform's or an address.
- `serviceAccountTokenSecret`: a `kubernetes.io/service-account-token` Secret gets a token that
  never expires; workloads use projected, expiring tokens instead.
- `priorityClass`: a pod may name only the PriorityClasses its Tenant allows (or the cluster's
  globalDefault one); system-node-critical and friends would let it preempt the platform.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping
from typing import Any

from tenantry.admission import networkpolicy, podspecs
from tenantry.admission.violation import Violation, items, mapping, show
from tenantry.model import tenant

SERVICE_EXTERNAL_IPS = "serviceExternalIPs"
SERVICE_EXTERNAL_NAME = "serviceExternalName"
SERVICE_ACCOUNT_TOKEN_SECRET = "serviceAccountTokenSecret"  # noqa: S105 - a rule id
PRIORITY_CLASS = "priorityClass"

RULES: Mapping[str, str] = {
    **networkpolicy.RULES,
    SERVICE_EXTERNAL_IPS: "no Service externalIPs (CVE-2020-8554)",
    SERVICE_EXTERNAL_NAME: "an ExternalName Service aliases only a Service of the tenant's own "
                           "namespaces",
    SERVICE_ACCOUNT_TOKEN_SECRET: "no legacy, never-expiring ServiceAccount token Secrets",
    PRIORITY_CLASS: "pods use only the PriorityClasses the Tenant allows",
}
RULE_IDS = frozenset(RULES)

SERVICE_ACCOUNT_TOKEN_TYPE = "kubernetes.io/service-account-token"  # noqa: S105 - a type
_SERVICE_NAME = re.compile(
    r"^(?P<service>[a-z0-9]([-a-z0-9]*[a-z0-9])?)\.(?P<namespace>[a-z0-9]([-a-z0-9]*[a-z0-9])?)"
    r"\.svc(\.cluster\.local)?\.?$")


def _service(obj: Mapping[str, Any], tenant_namespaces: Collection[str]) -> list[Violation]:
    spec = mapping(obj.get("spec"))
    found: list[Violation] = []
    if items(spec.get("externalIPs")):
        found.append(Violation(
            SERVICE_EXTERNAL_IPS, "spec.externalIPs",
            "must be empty: externalIPs let a Service capture traffic to any address in the "
            "cluster (CVE-2020-8554); use a LoadBalancer or an Ingress", "[]"))
    if spec.get("type") == "ExternalName":
        target = spec.get("externalName")
        match = _SERVICE_NAME.match(target.lower()) if isinstance(target, str) else None
        if match is None or match.group("namespace") not in tenant_namespaces:
            found.append(Violation(
                SERVICE_EXTERNAL_NAME, "spec.externalName",
                f"must name a Service in one of the tenant's namespaces as "
                f"NAME.NAMESPACE.svc (is {show(target)}): an ExternalName outside the tenant "
                "lets proxies and ingress controllers reach what the tenant may not",
                "NAME.NAMESPACE.svc of the tenant"))
    return found


def _secret(obj: Mapping[str, Any]) -> list[Violation]:
    if obj.get("type") != SERVICE_ACCOUNT_TOKEN_TYPE:
        return []
    return [Violation(
        SERVICE_ACCOUNT_TOKEN_SECRET, "type",
        f"must not be {SERVICE_ACCOUNT_TOKEN_TYPE}: such a Secret holds a ServiceAccount token "
        "that never expires; mount a projected serviceAccountToken volume (it expires and "
        "rotates) or use `kubectl create token`", "any other type")]


def _priority(obj: Mapping[str, Any], spec: tenant.TenantSpec,
              default_priority_classes: Collection[str]) -> list[Violation]:
    ref = podspecs.find_pod(obj)
    if ref is None:
        return []
    name = ref.spec.get("priorityClassName")
    if name in (None, "") or name in spec.allowed_priority_classes \
            or name in default_priority_classes:
        return []
    allowed = ", ".join(spec.allowed_priority_classes) or "none besides the cluster default"
    return [Violation(
        PRIORITY_CLASS, f"{ref.prefix}spec.priorityClassName",
        f"must be one the Tenant allows (is {show(name)}; allowed: {allowed}): a priority the "
        "platform did not grant lets the tenant's pods preempt other tenants' and the "
        "cluster's own", "a class in the Tenant's spec.allowedPriorityClasses")]


def check_isolation(obj: Mapping[str, Any], spec: tenant.TenantSpec, *, tenant_name: str,
                    tenant_namespaces: Collection[str],
                    default_priority_classes: Collection[str] = ()) -> list[Violation]:
    """Every way `obj`, written in one of the tenant's namespaces, reaches out of the tenant.

    `tenant_namespaces`: the namespaces the tenant holds; `default_priority_classes`: the
    cluster's globalDefault PriorityClass, which the apiserver fills into pods that name none.
    """
    api_version, kind = obj.get("apiVersion"), obj.get("kind")
    if api_version == "v1" and kind == "Service":
        return _service(obj, tenant_namespaces)
    if api_version == "v1" and kind == "Secret":
        return _secret(obj)
    if networkpolicy.is_network_policy(obj):
        return networkpolicy.check_network_policy(obj, spec, tenant_name=tenant_name,
                                                  tenant_namespaces=tenant_namespaces)
    return _priority(obj, spec, default_priority_classes)
