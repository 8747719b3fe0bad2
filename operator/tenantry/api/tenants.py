"""The API's watch of Tenants: every Tenant's members, kept current from the apiserver.

One list + watch (`tenantry.listwatch`, the implementation the webhook and the operator use)
of `tenants.tenantry.dev`, reduced to members only (`memberships.reduce_tenant`): the API never
holds more of a Tenant than who may do what. The API is not ready (`/readyz`) until the first
list has completed, so no request is ever decided on an empty directory.

The API reads Tenants with its own identity: in a cluster its ServiceAccount (RBAC: get, list,
watch on tenants, nothing else; see manifests/api), elsewhere the kubeconfig given with
`--kubeconfig`.
"""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

from kubernetes_asyncio import client as aclient
from kubernetes_asyncio import config as aconfig

from tenantry import listwatch
from tenantry.api import memberships
from tenantry.model import common, tenant


async def api_client(kubeconfig: Path | None) -> aclient.ApiClient:
    """A client from `kubeconfig`, else the in-cluster ServiceAccount, else ~/.kube/config."""
    if kubeconfig is not None:
        return await aconfig.new_client_from_config(config_file=str(kubeconfig))
    try:
        aconfig.load_incluster_config()
        return aclient.ApiClient()
    except aconfig.ConfigException:
        return await aconfig.new_client_from_config()


class TenantWatch:
    """Tenants' members from a list + watch; `directory` is always the latest view."""

    def __init__(self, api: aclient.ApiClient) -> None:
        self._api = api
        self._watch: listwatch.ListWatch[memberships.TenantMembers] = listwatch.ListWatch(
            api, f"/apis/{common.API_VERSION}/{tenant.PLURAL}", memberships.reduce_tenant,
            what="Tenants")
        self._task: asyncio.Task[None] | None = None

    @property
    def api(self) -> aclient.ApiClient:
        return self._api

    @property
    def directory(self) -> memberships.Directory:
        return memberships.Directory(self._watch.items)

    @property
    def synced(self) -> bool:
        return self._watch.synced.is_set()

    def start(self) -> None:
        self._task = asyncio.create_task(self._watch.run(), name="tenant-watch")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._api.close()
