"""Tamper detection without cluster-wide Secret access: one ciphertext watch per tenant namespace.

The operator may handle Secrets only in tenant namespaces: each holds RoleBinding
`tenantry-operator-secrets`, applied by the Tenant reconciler with the namespace's fences
(`tenant.rbac.operator_secrets_binding`); nothing grants the operator Secrets anywhere else.
kopf watches a resource cluster-wide (or in a fixed set of namespaces), which would need the
cluster-wide grant, so the ciphertext Secrets are watched here instead, one list + watch per
tenant namespace, started when the namespace becomes one and stopped when it is deleted or
released. Which namespaces those are, the handlers learn from kopf's own watch of namespaces
(the operator may list namespaces everywhere): only those the operator made for a tenant (both
operator labels, `is_tenant_namespace`), since a namespace someone merely labelled has no binding.

Every change of a ciphertext Secret goes to one callback as (event type, object without its
data), as kopf's cluster-wide watch delivered it before. A namespace just created has no binding
for a moment: its Secret watch is refused (403) and retried within seconds. When a watch cannot
go on (it expired: 410 Gone) the namespace is listed again, and what changed or vanished since
the last list is reported as MODIFIED or DELETED, so an edit made while no watch was open is not
missed; the first list reports everything as ADDED, for the same reason (`listwatch` does the
listing and watching for every component). Between lists only metadata is kept, never Secret
data.

`Directory` is what a reconcile needs to know of its namespace and Tenant (the tenant label,
the Tenant's UID and namespaces), kept from the namespace and Tenant events kopf delivers anyway:
reading both for every Credential was two of the eight requests one cost. It is trusted only to
say yes: whatever it cannot answer, or answers with a problem, is read from the API again.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import logging
from collections.abc import Callable, Mapping
from typing import Any

from kubernetes_asyncio import client as aclient

from tenantry import listwatch
from tenantry.controller.credential import ciphertext
from tenantry.controller.tenant import meta
from tenantry.model import common

logger = logging.getLogger(__name__)

# (event type, object): ADDED, MODIFIED or DELETED, and the object's metadata only.
OnChange = Callable[[str, Mapping[str, Any]], None]

FORBIDDEN_BACKOFF = 2.0
"""At most this long between attempts while refused: a new namespace's binding comes within
seconds, and tamper detection there should start as soon as it does."""


def is_tenant_namespace(namespace: Mapping[str, Any]) -> bool:
    """Whether the Tenant reconciler made this namespace (and binds the operator in it): both
    operator labels, which admission keeps tenants from setting or removing."""
    labels = (namespace.get("metadata") or {}).get("labels") or {}
    return (bool(labels.get(common.TENANT_LABEL))
            and labels.get(common.MANAGED_BY_LABEL) == meta.MANAGED_BY)


def metadata_only(obj: Mapping[str, Any]) -> dict[str, Any]:
    """What is kept of an object between lists, and handed on: never a Secret's data."""
    return {"metadata": dict(obj.get("metadata") or {})}


def follower(api: aclient.ApiClient, namespace: str,
             on_change: OnChange) -> listwatch.ListWatch[dict[str, Any]]:
    """The list + watch of one namespace's ciphertext Secrets, reporting every change."""
    return listwatch.ListWatch(
        api, f"/api/v1/namespaces/{namespace}/secrets", metadata_only,
        label_selector=ciphertext.CREDENTIAL_LABEL, what=f"ciphertext Secrets in {namespace}",
        on_change=on_change, forbidden_backoff=FORBIDDEN_BACKOFF)


class Directory:
    """Tenant namespaces and Tenants as kopf's watches last reported them: only what
    `reconcile.tenant_of` reads (labels; UID, deletion and listed namespaces), no more."""

    def __init__(self) -> None:
        self.namespaces: dict[str, dict[str, Any]] = {}
        self.tenants: dict[str, dict[str, Any]] = {}

    def update_namespace(self, kind: str | None, namespace: Mapping[str, Any]) -> None:
        meta = namespace.get("metadata") or {}
        name = meta.get("name")
        if not isinstance(name, str):
            return
        if kind == "DELETED" or not is_tenant_namespace(namespace):
            self.namespaces.pop(name, None)
        else:
            self.namespaces[name] = {"metadata": {"name": name,
                                                  "labels": dict(meta.get("labels") or {})}}

    def update_tenant(self, kind: str | None, tenant: Mapping[str, Any]) -> None:
        meta = tenant.get("metadata") or {}
        name = meta.get("name")
        if not isinstance(name, str):
            return
        if kind == "DELETED":
            self.tenants.pop(name, None)
            return
        self.tenants[name] = {
            "metadata": {"name": name, "uid": meta.get("uid"),
                         "deletionTimestamp": meta.get("deletionTimestamp")},
            "spec": {"namespaces": [{"name": entry.get("name")} for entry in
                                    (tenant.get("spec") or {}).get("namespaces") or []
                                    if isinstance(entry, Mapping)]}}

    def lookup(self, namespace: str) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
        """(Namespace, Tenant its label names) as last reported; None where unknown."""
        namespace_obj = self.namespaces.get(namespace)
        labels = (namespace_obj or {}).get("metadata", {}).get("labels") or {}
        tenant_name = labels.get(common.TENANT_LABEL)
        return namespace_obj, self.tenants.get(tenant_name) if tenant_name else None


def watch_client(api: aclient.ApiClient) -> aclient.ApiClient:
    """A client of its own for the watches, with no limit on its connection pool.

    Each watch holds one connection for as long as it runs. On the operator's shared client
    (a pool of 100) a hundred tenant namespaces would take every connection, and the reconciles
    waiting for one would never run: the watches get their own pool.
    """
    configuration = copy.copy(api.configuration)
    configuration.connection_pool_maxsize = 0  # aiohttp: no limit
    return aclient.ApiClient(configuration)


class TenantSecretWatches:
    """A watch of the ciphertext Secrets in each tenant namespace, on a client of its own.

    `follow` creates the watch's task in the caller's context: called from a kopf handler, that
    context lets the callback post kopf Events.
    """

    def __init__(self, api: aclient.ApiClient, on_secret: OnChange) -> None:
        self._api = watch_client(api)
        self._on_secret = on_secret
        self.secrets: dict[str, listwatch.ListWatch[dict[str, Any]]] = {}
        """Namespace -> its watch, whose `items` hold each Secret's metadata as last seen."""
        self._tasks: dict[str, asyncio.Task[None]] = {}

    def update(self, kind: str | None, namespace: Mapping[str, Any]) -> None:
        """A namespace was listed (kind None), ADDED, MODIFIED or DELETED: follow it while it is
        a tenant namespace, and not a moment longer."""
        name = (namespace.get("metadata") or {}).get("name")
        if not isinstance(name, str):
            return
        if kind != "DELETED" and is_tenant_namespace(namespace):
            self.follow(name)
        else:
            self.forget(name)

    def follow(self, name: str) -> None:
        if name in self._tasks:
            return
        watch = follower(self._api, name, self._on_secret)
        self.secrets[name] = watch
        self._tasks[name] = asyncio.create_task(watch.run())
        logger.debug("watching ciphertext Secrets in tenant namespace %s", name)

    def seen_version(self, namespace: str, secret: str) -> str | None:
        """The resourceVersion the watch last reported for `secret`; None if it has not
        listed the namespace yet or reports no such Secret."""
        watch = self.secrets.get(namespace)
        if watch is None or not watch.synced.is_set():
            return None
        found = watch.items.get(secret)
        return None if found is None else listwatch.version_of(found)

    def lists_none(self, namespace: str, secret: str) -> bool:
        """Whether the namespace's watch has listed it and reports no such Secret."""
        watch = self.secrets.get(namespace)
        return watch is not None and watch.synced.is_set() and secret not in watch.items

    def forget(self, name: str) -> None:
        self.secrets.pop(name, None)
        task = self._tasks.pop(name, None)
        if task is not None:
            task.cancel()
            logger.debug("no longer watching Secrets in %s: not a tenant namespace now", name)

    async def stop(self) -> None:
        tasks = list(self._tasks.values())
        self._tasks.clear()
        self.secrets.clear()
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self._api.close()
