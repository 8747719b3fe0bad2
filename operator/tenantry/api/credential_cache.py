"""What a credential exchange reads from the apiserver, kept current by watches, not fetched.

An exchange needs the Credential (scope, allowed ServiceAccounts, where its ciphertext is), the
tenant label of its namespace, and the ciphertext Secret. Fetching the three on every exchange
is three apiserver round trips per request; so:

- Credentials and tenant namespaces are followed by list + watch (`tenantry.listwatch`, the
  implementation every component uses), reduced to the fields an exchange reads (no values
  exist in a Credential anyway). A change (a ServiceAccount removed from the list, a new
  encryption generation) is seen as soon as its watch event arrives. An object not (yet) in the
  cache is read with a GET, so a Credential created a moment ago is not refused.
- The ciphertext Secret is read once per (Credential UID, encryption generation, key id): its
  envelopes are bound to exactly those, so a cached copy can never open as anything newer, and a
  re-encryption (new generation) reads the new Secret. The cache is bounded.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Mapping
from typing import Any

from kubernetes_asyncio import client as aclient

from tenantry import aio, listwatch
from tenantry.api import exchange, memberships
from tenantry.model import common, credential

SECRET_CACHE_SIZE = 4096


def _key(obj: Mapping[str, Any]) -> object:
    metadata = obj.get("metadata") or {}
    return f"{metadata.get('namespace')}/{metadata.get('name')}"


def reduce_credential(obj: Mapping[str, Any]) -> dict[str, Any] | None:
    """What an exchange or a metadata listing reads of a Credential."""
    metadata = obj.get("metadata") or {}
    spec, status = obj.get("spec") or {}, obj.get("status") or {}
    return {"metadata": {k: metadata.get(k) for k in ("name", "namespace", "uid")},
            "spec": {k: spec.get(k) for k in ("scope", "allowedServiceAccounts")},
            "status": {k: status.get(k) for k in ("secretRef", "encryptionGeneration", "keys",
                                                  "conditions")}}


def reduce_namespace(obj: Mapping[str, Any]) -> str | None:
    labels = (obj.get("metadata") or {}).get("labels") or {}
    value = labels.get(common.TENANT_LABEL)
    return value if isinstance(value, str) else None


class CredentialCache:
    """Credentials, tenant namespaces and ciphertext Secrets for exchanges."""

    def __init__(self, api: aclient.ApiClient, kube_api: Any) -> None:
        self._kube = kube_api
        self._credentials: listwatch.ListWatch[dict[str, Any]] = listwatch.ListWatch(
            api, f"/apis/{common.API_VERSION}/{credential.PLURAL}", reduce_credential,
            key=_key, what="Credentials")
        self._namespaces: listwatch.ListWatch[str] = listwatch.ListWatch(
            api, "/api/v1/namespaces", reduce_namespace, label_selector=common.TENANT_LABEL,
            what="tenant namespaces")
        self._secrets: collections.OrderedDict[tuple[str, ...], dict[str, Any]] = \
            collections.OrderedDict()
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        for watch in (self._credentials, self._namespaces):
            self._tasks.append(asyncio.create_task(watch.run()))

    async def close(self) -> None:
        await aio.cancel_all(self._tasks)

    @property
    def synced(self) -> bool:
        return self._credentials.synced.is_set() and self._namespaces.synced.is_set()

    async def credential(self, namespace: str, name: str) -> dict[str, Any] | None:
        found = self._credentials.items.get(f"{namespace}/{name}")
        if found is not None:
            return found
        obj = await self._kube.get(common.API_VERSION, credential.KIND, name, namespace)
        return None if obj is None else reduce_credential(obj)

    def in_namespace(self, namespace: str) -> list[dict[str, Any]]:
        prefix = f"{namespace}/"
        return [obj for key, obj in self._credentials.items.items() if key.startswith(prefix)]

    async def namespace_tenant(self, namespace: str) -> str | None:
        found = self._namespaces.items.get(namespace)
        if found is not None:
            return found
        obj = await self._kube.get("v1", "Namespace", namespace)
        return None if obj is None else reduce_namespace(obj)

    async def holds(self, directory: memberships.Directory, tenant: str,
                    namespace: str) -> bool:
        """Whether `tenant` holds `namespace`: its spec lists it and the namespace carries its
        label (a namespace listed by two Tenants is the labelled one's)."""
        members = directory.get(tenant)
        if members is None or namespace not in members.namespaces:
            return False
        return await self.namespace_tenant(namespace) == tenant

    async def held(self, directory: memberships.Directory, tenant: str) -> list[str]:
        members = directory.get(tenant)
        return [namespace for namespace in (members.namespaces if members else ())
                if await self.holds(directory, tenant, namespace)]

    def forget(self, obj: Mapping[str, Any], where: exchange.Ready) -> None:
        """Drop a cached Secret whose envelopes did not open (the operator restores it)."""
        self._secrets.pop(self._secret_key(obj, where), None)

    @staticmethod
    def _secret_key(obj: Mapping[str, Any], where: exchange.Ready) -> tuple[str, ...]:
        metadata = obj.get("metadata") or {}
        return (str(metadata.get("namespace")), str(metadata.get("uid")), where.secret_name,
                str(where.generation), where.key_id)

    async def secret(self, obj: Mapping[str, Any], where: exchange.Ready) -> dict[str, Any] | None:
        key = self._secret_key(obj, where)
        cached = self._secrets.get(key)
        if cached is not None:
            self._secrets.move_to_end(key)
            return cached
        secret = await self._kube.get("v1", "Secret", where.secret_name, key[0])
        if secret is None:
            return None
        kept = {"type": secret.get("type"), "data": dict(secret.get("data") or {})}
        self._secrets[key] = kept
        while len(self._secrets) > SECRET_CACHE_SIZE:
            self._secrets.popitem(last=False)
        return kept
