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
missed; the first list reports everything as ADDED, for the same reason. Between lists only
metadata is kept, never Secret data.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable, Mapping
from typing import Any

import aiohttp
from kubernetes_asyncio import client as aclient

from tenantry.controller.credential import ciphertext
from tenantry.controller.tenant import meta
from tenantry.model import common

logger = logging.getLogger(__name__)

# (event type, object): ADDED, MODIFIED or DELETED, and the object's metadata only.
OnChange = Callable[[str, Mapping[str, Any]], None]

WATCH_TIMEOUT = 290
"""Seconds the API server keeps one watch open before it is re-opened from the last version."""
BACKOFF = (0.5, 1.0, 2.0, 5.0, 10.0, 30.0)
FORBIDDEN_BACKOFF = 2.0
"""At most this long between attempts while refused: a new namespace's binding comes within
seconds, and tamper detection there should start as soon as it does."""


def is_tenant_namespace(namespace: Mapping[str, Any]) -> bool:
    """Whether the Tenant reconciler made this namespace (and binds the operator in it): both
    operator labels, which admission keeps tenants from setting or removing."""
    labels = (namespace.get("metadata") or {}).get("labels") or {}
    return (bool(labels.get(common.TENANT_LABEL))
            and labels.get(common.MANAGED_BY_LABEL) == meta.MANAGED_BY)


class Refused(Exception):
    """The API server refused a list or watch; `status` is its HTTP status."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"HTTP {status}: {message}")
        self.status = status


def metadata_only(obj: Mapping[str, Any]) -> dict[str, Any]:
    """What is kept of an object between lists, and handed on: never a Secret's data."""
    return {"metadata": dict(obj.get("metadata") or {})}


def _version(obj: Mapping[str, Any]) -> str | None:
    version = (obj.get("metadata") or {}).get("resourceVersion")
    return None if version is None else str(version)


def changes(known: Mapping[str, Mapping[str, Any]],
            listed: Mapping[str, Mapping[str, Any]]) -> list[tuple[str, Mapping[str, Any]]]:
    """The events a re-list stands for (pure): new objects ADDED, another resourceVersion
    MODIFIED, gone DELETED (with what was last known of them); sorted by name."""
    found: list[tuple[str, str, Mapping[str, Any]]] = []
    for name, obj in listed.items():
        before = known.get(name)
        if before is None:
            found.append((name, "ADDED", obj))
        elif _version(before) != _version(obj):
            found.append((name, "MODIFIED", obj))
    found.extend((name, "DELETED", obj) for name, obj in known.items() if name not in listed)
    return [(kind, obj) for _, kind, obj in sorted(found, key=lambda item: item[0])]


class Follower:
    """A list + watch of one collection that reports every change to `on_change`.

    Every list reports its differences from the one before, so the first reports everything as
    ADDED (which a new namespace's watch needs: its Secrets may have been written, and edited,
    before the watch could start). Errors are logged and retried with backoff, a refusal (403)
    within `FORBIDDEN_BACKOFF`.
    """

    def __init__(self, api: aclient.ApiClient, path: str, on_change: OnChange, *,
                 label_selector: str, what: str) -> None:
        self._api = api
        self._path = path
        self._on_change = on_change
        self._selector = label_selector
        self._what = what
        self.known: dict[str, dict[str, Any]] = {}
        """name -> metadata of every object as last seen."""
        self.synced = asyncio.Event()

    def _query(self, **extra: str) -> list[tuple[str, str]]:
        return [("labelSelector", self._selector), *extra.items()]

    def _emit(self, kind: str, obj: Mapping[str, Any]) -> None:
        try:
            self._on_change(kind, obj)
        except Exception:
            # One bad event must not end the watch; tracebacks show code, never values.
            logger.exception("%s: handling a %s event failed", self._what, kind)

    async def _list(self) -> str:
        try:
            listing = await self._api.call_api(
                self._path, "GET", query_params=self._query(),
                header_params={"Accept": "application/json"},
                response_types_map={200: "object"}, auth_settings=["BearerToken"],
                _return_http_data_only=True, _request_timeout=30)
        except aclient.ApiException as error:
            raise Refused(int(error.status or 0), str(error.reason or "")) from None
        listed: dict[str, dict[str, Any]] = {}
        for obj in listing.get("items") or []:
            name = (obj.get("metadata") or {}).get("name")
            if isinstance(name, str):
                listed[name] = metadata_only(obj)
        for kind, obj in changes(self.known, listed):
            self._emit(kind, obj)
        self.known = listed
        self.synced.set()
        return str((listing.get("metadata") or {}).get("resourceVersion", ""))

    async def _watch(self, version: str) -> str | None:
        """Follow changes from `version`; the last version seen, or None when it expired."""
        response = await self._api.call_api(
            self._path, "GET",
            query_params=self._query(watch="true", resourceVersion=version,
                                     allowWatchBookmarks="true",
                                     timeoutSeconds=str(WATCH_TIMEOUT)),
            header_params={"Accept": "application/json"}, auth_settings=["BearerToken"],
            _preload_content=False,
            _request_timeout=aiohttp.ClientTimeout(total=None, sock_read=WATCH_TIMEOUT + 30))
        try:
            if response.status == 410:
                return None
            if response.status != 200:
                body = (await response.read()).decode(errors="replace")[:300]
                raise Refused(response.status, body)
            async for line in response.content:
                if not line.strip():
                    continue
                event = json.loads(line)
                kind, obj = event.get("type"), event.get("object") or {}
                if kind == "ERROR":
                    if obj.get("code") == 410:
                        return None
                    raise Refused(int(obj.get("code") or 0), str(obj.get("message")))
                version = _version(obj) or version
                name = (obj.get("metadata") or {}).get("name")
                if kind not in ("ADDED", "MODIFIED", "DELETED") or not isinstance(name, str):
                    continue  # BOOKMARK: only the version moves on
                kept = metadata_only(obj)
                if kind == "DELETED":
                    self.known.pop(name, None)
                else:
                    self.known[name] = kept
                self._emit(kind, kept)
        finally:
            response.release()
        return version

    async def run(self) -> None:
        """List, then watch for ever; list again whenever the watch cannot go on."""
        failures = 0
        while True:
            try:
                version: str | None = await self._list()
                failures = 0
                while version is not None:
                    version = await self._watch(version)
            except asyncio.CancelledError:
                raise
            except Exception as error:
                delay = BACKOFF[min(failures, len(BACKOFF) - 1)]
                refused = isinstance(error, Refused) and error.status == 403
                if refused:
                    delay = min(delay, FORBIDDEN_BACKOFF)
                failures += 1
                # Refusals are expected for a moment in a namespace just created.
                log = logger.debug if refused and failures <= 5 else logger.warning
                log("watch of %s: %s; retrying in %.1fs", self._what, error, delay)
                await asyncio.sleep(delay)


class TenantSecretWatches:
    """A watch of the ciphertext Secrets in each tenant namespace.

    `follow` creates the watch's task in the caller's context: called from a kopf handler, that
    context lets the callback post kopf Events.
    """

    def __init__(self, api: aclient.ApiClient, on_secret: OnChange) -> None:
        self._api = api
        self._on_secret = on_secret
        self.secrets: dict[str, Follower] = {}
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
        follower = Follower(self._api, f"/api/v1/namespaces/{name}/secrets", self._on_secret,
                            label_selector=ciphertext.CREDENTIAL_LABEL,
                            what=f"ciphertext Secrets in {name}")
        self.secrets[name] = follower
        self._tasks[name] = asyncio.create_task(follower.run())
        logger.debug("watching ciphertext Secrets in tenant namespace %s", name)

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
