"""Which tenant a namespace belongs to, and that tenant's policy: watched caches, GET on a miss.

Every review needs the tenant of its namespace; a round trip to the apiserver for each one would
double the latency the webhook adds. So two caches are kept by list + watch: tenant-labelled
Namespaces (name -> tenant) and Tenants (name -> parsed spec). A miss is not trusted: the
apiserver chose to call us, so the cache may just be behind; the namespace or Tenant is then read
with a GET, bounded by a timeout.

Fail closed: a namespace labelled for a tenant whose Tenant does not exist, or whose spec this
webhook cannot read, or a lookup that errors or times out, yields a `TenantOf` with a `problem`,
which handlers turn into a refusal with that reason.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Mapping
from typing import Any, Protocol

import aiohttp
import pydantic

from tenantry import aio, listwatch
from tenantry.kubeapi import ApiError, KubeApi
from tenantry.model import common, tenant

logger = logging.getLogger(__name__)

PRIORITY_CLASS_TTL = 60.0
"""Seconds a PriorityClass's globalDefault flag is trusted from an earlier GET."""


@dataclasses.dataclass(frozen=True, slots=True)
class TenantPolicy:
    """A Tenant as admission needs it: its spec, or why it cannot be used."""

    spec: tenant.TenantSpec | None
    problem: str | None = None


def tenant_policy(obj: Mapping[str, Any]) -> TenantPolicy:
    """Parse a Tenant object; a spec this webhook cannot read is a problem, not a default."""
    name = (obj.get("metadata") or {}).get("name", "?")
    try:
        return TenantPolicy(tenant.TenantSpec.model_validate(obj.get("spec") or {}))
    except pydantic.ValidationError as error:
        fields = ", ".join(".".join(str(p) for p in e["loc"]) for e in error.errors()[:5])
        return TenantPolicy(None, f"Tenant {name}'s spec cannot be read by this webhook "
                                  f"(fields: {fields}); refusing until it can (fail closed)")


def namespace_tenant(obj: Mapping[str, Any]) -> str | None:
    """The tenant label of a Namespace object, or None."""
    labels = (obj.get("metadata") or {}).get("labels") or {}
    value = labels.get(common.TENANT_LABEL)
    return value if isinstance(value, str) else None


_TenantSpec = tenant.TenantSpec  # TenantOf has a field called `tenant`


@dataclasses.dataclass(frozen=True, slots=True)
class TenantOf:
    """The outcome of looking up a namespace's tenant."""

    namespace: str
    tenant: str | None
    """The tenant label's value; None when the namespace belongs to no tenant."""
    spec: _TenantSpec | None = None
    problem: str | None = None
    """Why the namespace's policy cannot be known: the request must be refused."""
    code: int = 403
    """HTTP code for a refusal because of `problem` (503: try again; 403: fix the cluster)."""

    @property
    def is_tenant_namespace(self) -> bool:
        return self.tenant is not None


class TenantLookup(Protocol):
    """What handlers need from a directory (TenantDirectory; tests may pass a table)."""

    async def tenant_of(self, namespace: str) -> TenantOf: ...


class IsolationLookup(TenantLookup, Protocol):
    """What the isolation rules need besides the tenant: its namespaces, the default priority."""

    def namespaces_of(self, tenant_name: str, spec: tenant.TenantSpec,
                      namespace: str) -> frozenset[str]: ...

    async def is_default_priority_class(self, name: str) -> bool: ...


Informer = listwatch.ListWatch
"""A list + watch cache of one collection (the shared implementation)."""


LOOKUP_ERRORS = (ApiError, TimeoutError, aiohttp.ClientError, OSError)


def _describe(error: BaseException) -> str:
    if isinstance(error, TimeoutError):
        return "timed out"
    return str(error) or type(error).__name__


class TenantDirectory:
    """namespace -> tenant and its policy, from the caches or, on a miss, from the apiserver."""

    def __init__(self, api: KubeApi, *, lookup_timeout: float = 2.0) -> None:
        self._api = api
        self._timeout = lookup_timeout
        self.namespaces: Informer[str] = Informer(
            api.api, "/api/v1/namespaces", namespace_tenant,
            label_selector=common.TENANT_LABEL, what="tenant namespaces")
        self.tenants: Informer[TenantPolicy] = Informer(
            api.api, f"/apis/{common.API_VERSION}/{tenant.PLURAL}", tenant_policy,
            what="Tenants")
        self._tasks: list[asyncio.Task[None]] = []
        self._priority_classes: dict[str, tuple[bool, float]] = {}

    def start(self) -> None:
        for informer in (self.namespaces, self.tenants):
            self._tasks.append(asyncio.create_task(informer.run()))

    async def stop(self) -> None:
        await aio.cancel_all(self._tasks)

    @property
    def synced(self) -> bool:
        return self.namespaces.synced.is_set() and self.tenants.synced.is_set()

    async def wait_synced(self) -> None:
        await self.namespaces.synced.wait()
        await self.tenants.synced.wait()

    async def _get(self, api_version: str, kind: str, name: str) -> dict[str, Any] | None:
        return await asyncio.wait_for(self._api.get(api_version, kind, name), self._timeout)

    def namespaces_of(self, tenant_name: str, spec: tenant.TenantSpec,
                      namespace: str) -> frozenset[str]:
        """The namespaces `tenant_name` holds as far as admission can tell: those its spec
        lists that carry its label (a listed namespace held by another tenant is not its), plus
        `namespace`, whose tenant was just established."""
        held = {n.name for n in spec.namespaces
                if self.namespaces.items.get(n.name) == tenant_name}
        return frozenset({*held, namespace})

    async def is_default_priority_class(self, name: str) -> bool:
        """Whether PriorityClass `name` is the cluster's globalDefault (which the apiserver's
        Priority admission fills into every pod that names none). Cached for a minute."""
        now = asyncio.get_running_loop().time()
        cached = self._priority_classes.get(name)
        if cached is not None and cached[1] > now:
            return cached[0]
        obj = await asyncio.wait_for(
            self._api.get("scheduling.k8s.io/v1", "PriorityClass", name), self._timeout)
        is_default = bool(obj and obj.get("globalDefault"))
        self._priority_classes[name] = (is_default, now + PRIORITY_CLASS_TTL)
        return is_default

    async def tenant_of(self, namespace: str) -> TenantOf:
        """The tenant of `namespace` and its policy, or the problem that stands in the way."""
        tenant_name = self.namespaces.items.get(namespace)
        if tenant_name is None:
            try:
                obj = await self._get("v1", "Namespace", namespace)
            except LOOKUP_ERRORS as error:
                return TenantOf(namespace, None, problem=(
                    f"cannot read namespace {namespace} to find its tenant "
                    f"({_describe(error)}); refusing (fail closed), try again"), code=503)
            if obj is None:
                return TenantOf(namespace, None, problem=(
                    f"namespace {namespace} not found; cannot tell its tenant"))
            tenant_name = namespace_tenant(obj)
            if tenant_name is None:
                return TenantOf(namespace, None)
        policy = self.tenants.items.get(tenant_name)
        if policy is None:
            try:
                obj = await self._get(common.API_VERSION, tenant.KIND, tenant_name) \
                    if tenant_name else None
            except LOOKUP_ERRORS as error:
                return TenantOf(namespace, tenant_name, problem=(
                    f"cannot read Tenant {tenant_name} of namespace {namespace} "
                    f"({_describe(error)}); refusing (fail closed), try again"), code=503)
            if obj is None:
                return TenantOf(namespace, tenant_name, problem=(
                    f"namespace {namespace} is labelled {common.TENANT_LABEL}={tenant_name}, but "
                    f"Tenant {tenant_name!r} does not exist; refusing (fail closed) until the "
                    "Tenant exists or the label is removed"))
            policy = tenant_policy(obj)
        if policy.problem is not None:
            return TenantOf(namespace, tenant_name, problem=policy.problem)
        return TenantOf(namespace, tenant_name, spec=policy.spec)
