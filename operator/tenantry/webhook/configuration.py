"""The ValidatingWebhookConfiguration Tenantry writes for itself (pure builders).

kopf's managed admission configurations use `timeoutSeconds: 30` and no namespace selector, and
linger after a crash; this one is built for the day the webhook is down:

- the workloads webhook selects tenant namespaces only (the operator-owned label
  `tenantry.dev/tenant` Exists) and, belt and braces, never kube-system, kube-public,
  kube-node-lease or Tenantry's own namespace (`kubernetes.io/metadata.name` NotIn, a label the
  apiserver sets on every namespace and nobody can change). `failurePolicy: Fail` therefore
  blocks tenants' pods, as fail-closed requires, and nothing else;
- `sideEffects: None`, `timeoutSeconds` at most 5, CREATE and UPDATE, `admissionReviewVersions:
  [v1]`, `matchPolicy: Equivalent` (a Deployment sent as apps/v1beta2 is still judged).

Where the apiserver calls: a URL (local development, where there are no Services) or a Service.
"""

from __future__ import annotations

import base64
import dataclasses
import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from tenantry.model import common

if TYPE_CHECKING:
    from tenantry.webhook.routes import WebhookRoute

NAME = "tenantry-admission"
API_VERSION = "admissionregistration.k8s.io/v1"
SYSTEM_NAMESPACES = ("kube-system", "kube-public", "kube-node-lease")
NAMESPACE_NAME_LABEL = "kubernetes.io/metadata.name"
MAX_TIMEOUT_SECONDS = 5
FAILURE_POLICIES = ("Fail", "Ignore")


def excluded_namespaces(operator_namespace: str) -> tuple[str, ...]:
    """Namespaces no Tenantry webhook ever selects: the system's and Tenantry's own."""
    return tuple(sorted({*SYSTEM_NAMESPACES, operator_namespace}))


def all_but(excluded: Sequence[str]) -> dict[str, Any]:
    """A namespaceSelector for every namespace except `excluded`."""
    return {"matchExpressions": [
        {"key": NAMESPACE_NAME_LABEL, "operator": "NotIn", "values": sorted(excluded)}]}


def tenant_namespaces(excluded: Sequence[str]) -> dict[str, Any]:
    """A namespaceSelector for tenant namespaces (the operator's label), minus `excluded`."""
    return {"matchExpressions": [
        {"key": common.TENANT_LABEL, "operator": "Exists"},
        *all_but(excluded)["matchExpressions"],
    ]}


@dataclasses.dataclass(frozen=True, slots=True)
class UrlEndpoint:
    """The apiserver calls `base` + the route's path (local development: no Services)."""

    base: str

    def __post_init__(self) -> None:
        parts = urlsplit(self.base)
        if parts.scheme != "https" or not parts.hostname:
            raise ValueError(f"webhook URL must be https://HOST[:PORT][/PATH], not {self.base!r}")
        if parts.query or parts.fragment or parts.username or parts.password:
            raise ValueError("webhook URL must not carry a query, fragment or user info")

    def client_config(self, path: str) -> dict[str, Any]:
        return {"url": self.base.rstrip("/") + path}

    def names(self) -> tuple[str, ...]:
        host = urlsplit(self.base).hostname
        assert host is not None
        return (host,)


@dataclasses.dataclass(frozen=True, slots=True)
class ServiceEndpoint:
    """The apiserver calls Service `namespace/name` on `port` (in a cluster)."""

    namespace: str
    name: str
    port: int = 443

    def client_config(self, path: str) -> dict[str, Any]:
        return {"service": {"namespace": self.namespace, "name": self.name, "path": path,
                            "port": self.port}}

    def names(self) -> tuple[str, ...]:
        """The DNS names the apiserver may use for the Service (it verifies `name.ns.svc`)."""
        base = f"{self.name}.{self.namespace}"
        return (f"{base}.svc", f"{base}.svc.cluster.local", base, self.name)


Endpoint = UrlEndpoint | ServiceEndpoint


def serving_names(endpoint: Endpoint, extra: Iterable[str] = ()) -> tuple[str, ...]:
    """The names (DNS or IP) the serving certificate must cover, without duplicates."""
    names: list[str] = []
    for name in (*endpoint.names(), *extra):
        try:
            name = str(ipaddress.ip_address(name))
        except ValueError:
            name = name.lower()
        if name not in names:
            names.append(name)
    return tuple(names)


def webhook_entry(route: WebhookRoute, *, endpoint: Endpoint, ca_bundle: bytes,
                  failure_policy: str, timeout_seconds: int) -> dict[str, Any]:
    """One entry of `webhooks` for `route`."""
    policy = route.failure_policy or failure_policy
    timeout = route.timeout_seconds or timeout_seconds
    if policy not in FAILURE_POLICIES:
        raise ValueError(f"failurePolicy must be Fail or Ignore, not {policy!r}")
    if not 1 <= timeout <= MAX_TIMEOUT_SECONDS:
        raise ValueError(f"timeoutSeconds must be 1 to {MAX_TIMEOUT_SECONDS}: the apiserver "
                         f"waits that long on every write the webhook sees (got {timeout})")
    entry: dict[str, Any] = {
        "name": route.name,
        "clientConfig": {**endpoint.client_config(route.path),
                         "caBundle": base64.b64encode(ca_bundle).decode()},
        "rules": [rule.wire() for rule in route.rules],
        "failurePolicy": policy,
        "matchPolicy": "Equivalent",
        "namespaceSelector": dict(route.namespace_selector or {}),
        "objectSelector": {},
        "sideEffects": route.side_effects,
        "timeoutSeconds": timeout,
        "admissionReviewVersions": ["v1"],
    }
    if route.match_conditions:
        entry["matchConditions"] = [dict(c) for c in route.match_conditions]
    return entry


def webhook_configuration(routes: Sequence[WebhookRoute], *, endpoint: Endpoint,
                          ca_bundle: bytes, failure_policy: str = "Fail",
                          timeout_seconds: int = MAX_TIMEOUT_SECONDS, name: str = NAME,
                          labels: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The ValidatingWebhookConfiguration for `routes`, for server-side apply."""
    if not ca_bundle:
        raise ValueError("caBundle is empty: the apiserver could not verify the webhook")
    names = [route.name for route in routes]
    if len(set(names)) != len(names):
        raise ValueError(f"webhook names must be unique: {names}")
    return {
        "apiVersion": API_VERSION,
        "kind": "ValidatingWebhookConfiguration",
        "metadata": {"name": name,
                     "labels": dict(labels or {common.MANAGED_BY_LABEL: "tenantry"})},
        "webhooks": [webhook_entry(route, endpoint=endpoint, ca_bundle=ca_bundle,
                                   failure_policy=failure_policy,
                                   timeout_seconds=timeout_seconds) for route in routes],
    }


def ca_bundle_of(configuration: Mapping[str, Any]) -> bytes:
    """The caBundle of a configuration's first webhook (they all carry the same one)."""
    webhooks = configuration.get("webhooks") or []
    if not webhooks:
        return b""
    return base64.b64decode((webhooks[0].get("clientConfig") or {}).get("caBundle") or "")
