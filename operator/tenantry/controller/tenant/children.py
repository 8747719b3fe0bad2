"""The operator's watch-driven view of every Tenant's children: for drift, and for pruning.

Why not kopf's watches: kopf hands each event of each child to its full machinery (a worker per
object, causes, handler kwargs) only for the drift check to look at two fields and, nearly
always, drop it. In a mass rollout (200 Tenants, 13 children each, bench/bench_tenants.py, py-spy)
that was about a fifth of the operator's CPU, on a machine where the apiserver needs the same
cores. And pruning listed seven kinds cluster-wide on every pass after the first.

Here one `tenantry.listwatch` per child kind, selected on the server by the labels the operator
puts on its children (the tenant label; the operator's own Secret bindings by theirs; the tier
ClusterRoles by managed-by), keeps metadata only: the identity pruning needs, the labels that
say whose child it is, the last writer the drift check needs, its resourceVersion and the
operator's stamp of what it applied (`meta.stamped`), so a resync sends no apply that would
change nothing. Never a spec, never data.

A resync skips a child only when the watch shows it at exactly the resourceVersion the
operator's own apply returned (`written`, in memory: after a restart everything is applied
once). Not by the last writer's field manager: any client may claim the operator's manager name
(`kubectl patch --field-manager=tenantry-operator`), and such a write, keeping the stamp, would
otherwise be skipped at every resync from then on.

The view can lag the cluster by a watch delay. Drift does not care (every event arrives, and a
re-list reports what happened while no watch was open). Pruning takes the view only once every
watch has listed: something applied less than a watch delay before it was given up (a spec
changed twice within milliseconds) is pruned by the next pass, at the latest the resync.
Finalizing a deleted Tenant still lists: there is no next pass after it.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

from kubernetes_asyncio import client as aclient

from tenantry import aio, kubeapi, listwatch
from tenantry.controller.tenant import desired, meta, rbac
from tenantry.model import common


@dataclasses.dataclass(frozen=True)
class Child:
    """What is kept of one child between events."""

    ref: meta.ObjectRef
    labels: Mapping[str, str]
    """Only the operator's own labels (tenant, managed-by, operator-access)."""
    last_writer: str | None
    """The field manager of the latest write that was not to a subresource (`last_writer`)."""
    applied_hash: str | None = None
    """The operator's stamp of what it applied last (`meta.stamped`), if any."""
    resource_version: str | None = None

    @property
    def tenant(self) -> str | None:
        """The tenant it belongs to: the tenant label, or the operator's binding's own label."""
        return self.labels.get(common.TENANT_LABEL) or self.labels.get(rbac.OPERATOR_ACCESS_LABEL)


_KEPT_LABELS = (common.TENANT_LABEL, common.MANAGED_BY_LABEL, rbac.OPERATOR_ACCESS_LABEL)


def last_writer(body: Mapping[str, Any]) -> str | None:
    """The manager of the most recent non-status write, from managedFields (pure)."""
    entries = [e for e in (body.get("metadata") or {}).get("managedFields") or []
               if not e.get("subresource")]
    if not entries:
        return None
    latest = max(entries, key=lambda e: e.get("time") or "")
    manager = latest.get("manager")
    return str(manager) if manager is not None else None


def reduce(api_version: str, kind: str) -> Callable[[Mapping[str, Any]], Child]:
    """The reducer of one kind's watch: list and watch items carry no apiVersion and kind."""
    def reduced(obj: Mapping[str, Any]) -> Child:
        metadata = obj.get("metadata") or {}
        labels = metadata.get("labels") or {}
        return Child(
            ref=meta.ObjectRef(api_version, kind, metadata.get("namespace") or "",
                               metadata["name"]),
            labels={key: labels[key] for key in _KEPT_LABELS if key in labels},
            last_writer=last_writer(obj),
            applied_hash=(metadata.get("annotations") or {}).get(meta.APPLIED_HASH_ANNOTATION),
            resource_version=metadata.get("resourceVersion"))
    return reduced


def unchanged(child: Child | None, manifest: Mapping[str, Any], written: str | None) -> bool:
    """Whether applying `manifest` (stamped) would change nothing on `child` as last seen
    (pure): it is still at `written`, the resourceVersion the operator's own last apply of it
    returned (any later write, whoever it claims to be and even one that kept the stamp, is
    drift and gets the apply), and that apply carried the same stamp."""
    stamp = ((manifest.get("metadata") or {}).get("annotations") or {}).get(
        meta.APPLIED_HASH_ANNOTATION)
    return (child is not None and stamp is not None and child.applied_hash == stamp
            and written is not None and child.resource_version == written)


def key(obj: Mapping[str, Any]) -> object:
    """namespace/name: unique within one kind's cluster-wide watch."""
    metadata = obj.get("metadata") or {}
    name = metadata.get("name")
    return None if not isinstance(name, str) else f"{metadata.get('namespace') or ''}/{name}"


@dataclasses.dataclass(frozen=True)
class Watched:
    """One watched collection: a kind, cluster-wide, and the server-side label selector."""

    api_version: str
    kind: str
    selector: str
    prunable: bool
    """Whether what it sees counts among a tenant's applied children (`Children.applied`)."""

    def path(self) -> str:
        resource = kubeapi.kind_of(self.api_version, self.kind)
        return dataclasses.replace(resource, namespaced=False).collection(None)


WATCHED: tuple[Watched, ...] = (
    *(Watched(api_version, kind, common.TENANT_LABEL, prunable=True)
      for api_version, kind in desired.CHILD_KINDS),
    Watched(rbac.RBAC_API_VERSION, "RoleBinding", rbac.OPERATOR_ACCESS_LABEL, prunable=True),
    # The shared tier roles carry no tenant label; each tenant's view role is seen by both.
    Watched(rbac.RBAC_API_VERSION, "ClusterRole",
            f"{common.MANAGED_BY_LABEL}={meta.MANAGED_BY}", prunable=False),
)

OnChange = Callable[[str, Child], None]
"""(ADDED|MODIFIED|DELETED, the child as kept)."""


def applied(children: Mapping[Watched, Mapping[str, Child]],
            tenant_name: str) -> list[meta.ObjectRef]:
    """What the operator applied for `tenant_name`, as `reconcile.applied_children` lists it
    (pure): both operator labels (the tenant's, or its binding's own, and managed-by), never
    the tenant label alone, so an object someone merely labelled is never pruned. Sorted."""
    found = set()
    for watched, items in children.items():
        if not watched.prunable:
            continue
        for child in items.values():
            owner = child.labels.get(watched.selector)
            if owner == tenant_name and child.labels.get(common.MANAGED_BY_LABEL) == \
                    meta.MANAGED_BY:
                found.add(child.ref)
    return sorted(found)


class Children:
    """The list + watch of every child kind, reporting each change to `on_change`.

    Made before the API client exists (kopf copies its memo per object: whatever a handler
    finds there must be in place at start-up), started with a client of its own once it does
    (`start`: each watch holds a connection), which it closes in `stop`.
    """

    def __init__(self, on_change: OnChange) -> None:
        self._on_change = on_change
        self._api: aclient.ApiClient | None = None
        self._watches: dict[Watched, listwatch.ListWatch[Child]] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._written: dict[meta.ObjectRef, str] = {}

    def remember(self, ref: meta.ObjectRef, resource_version: str | None) -> None:
        """The resourceVersion the operator's apply of `ref` just returned."""
        if resource_version:
            self._written[ref] = resource_version
        else:
            self._written.pop(ref, None)

    def written(self, ref: meta.ObjectRef) -> str | None:
        """The resourceVersion of the operator's last apply of `ref` in this process."""
        return self._written.get(ref)

    def start(self, api: aclient.ApiClient) -> None:
        self._api = api
        self._watches = {
            watched: listwatch.ListWatch(
                api, watched.path(), reduce(watched.api_version, watched.kind),
                label_selector=watched.selector, key=key,
                what=f"{watched.kind} children ({watched.selector})",
                on_change=self._on_change)
            for watched in WATCHED}
        self._tasks = [asyncio.create_task(watch.run(), name=f"tenantry-children-{index}")
                       for index, watch in enumerate(self._watches.values())]

    async def stop(self) -> None:
        await aio.cancel_all(self._tasks)
        if self._api is not None:
            await self._api.close()
            self._api = None

    @property
    def synced(self) -> bool:
        """Whether every watch has listed once (before that, `applied` answers None)."""
        return bool(self._watches) and all(watch.synced.is_set()
                                           for watch in self._watches.values())

    def get(self, ref: meta.ObjectRef) -> Child | None:
        """The child `ref` as the watches last saw it; None when unseen (or not synced)."""
        if not self.synced:
            return None
        for watched, watch in self._watches.items():
            if watched.prunable and (watched.api_version, watched.kind) == (ref.api_version,
                                                                             ref.kind):
                found = watch.items.get(f"{ref.namespace}/{ref.name}")
                if found is not None:
                    return found
        return None

    def applied(self, tenant_name: str) -> list[meta.ObjectRef] | None:
        """This tenant's applied children as the watches see them; None until synced."""
        if not self.synced:
            return None
        return applied({watched: watch.items for watched, watch in self._watches.items()},
                       tenant_name)
