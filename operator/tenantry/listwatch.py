"""List + watch of one Kubernetes collection, kept as a cache and, if asked, reported as changes.

One implementation for every component that follows a collection: the webhook's caches of
tenant namespaces, Tenants and Ingress hosts, and the operator's per-namespace watches of
ciphertext Secrets. Why not kopf: kopf watches a resource cluster-wide or in a fixed set of
namespaces, and the webhook runs no kopf at all.

A `ListWatch` lists, then watches from the list's resourceVersion, and lists again whenever the
watch cannot go on (410 Gone, an error). Each object is reduced by `reduce` to what is kept (a
tenant name, a parsed spec, metadata only: never more than the caller needs, and never a
Secret's data unless the caller asks for it); objects reduced to None are not kept. With
`on_change`, every change is reported as (ADDED|MODIFIED|DELETED, kept value), and every list
reports its differences from what was known before (new ones ADDED, another resourceVersion
MODIFIED, gone ones DELETED with their last value), so nothing that happened while no watch was
open is missed; the first list reports everything as ADDED. Errors are logged and retried with
backoff; a refusal (403), expected for a moment where a RoleBinding is still being written, at
least every `forbidden_backoff` seconds when that is set.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Mapping
from typing import Any, Generic, TypeVar

import aiohttp
from kubernetes_asyncio import client as aclient

logger = logging.getLogger(__name__)

T = TypeVar("T")

WATCH_TIMEOUT = 290
"""Seconds the apiserver keeps one watch open before it is re-opened from the last version."""
BACKOFF = (0.5, 1.0, 2.0, 5.0, 10.0, 30.0)

OnChange = Callable[[str, T], None]
"""(event type, kept value): ADDED, MODIFIED or DELETED."""


class Refused(Exception):
    """The apiserver refused a list or watch; `status` is its HTTP status."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"HTTP {status}: {message}")
        self.status = status


def name_of(obj: Mapping[str, Any]) -> object:
    """The default key: metadata.name."""
    return (obj.get("metadata") or {}).get("name")


def version_of(obj: Mapping[str, Any]) -> str | None:
    version = (obj.get("metadata") or {}).get("resourceVersion")
    return None if version is None else str(version)


def changes(known: Mapping[str, tuple[str | None, T]],
            listed: Mapping[str, tuple[str | None, T]]) -> list[tuple[str, T]]:
    """The events a re-list stands for (pure), from key -> (resourceVersion, value) before and
    now: new keys ADDED, another resourceVersion MODIFIED, gone keys DELETED with their last
    value; sorted by key."""
    found: list[tuple[str, str, T]] = []
    for key, (version, value) in listed.items():
        before = known.get(key)
        if before is None:
            found.append((key, "ADDED", value))
        elif before[0] != version:
            found.append((key, "MODIFIED", value))
    found.extend((key, "DELETED", value) for key, (_, value) in known.items() if key not in listed)
    return [(kind, value) for _, kind, value in sorted(found, key=lambda item: item[0])]


class ListWatch(Generic[T]):
    """A list + watch cache of one collection (`items`: key -> reduced value)."""

    def __init__(self, api: aclient.ApiClient, path: str,
                 reduce: Callable[[Mapping[str, Any]], T | None], *,
                 label_selector: str | None = None, what: str = "objects",
                 key: Callable[[Mapping[str, Any]], object] = name_of,
                 on_change: OnChange[T] | None = None,
                 forbidden_backoff: float | None = None) -> None:
        self._api = api
        self._path = path
        self._reduce = reduce
        self._selector = label_selector
        self._what = what
        self._key = key
        self._on_change = on_change
        self._forbidden_backoff = forbidden_backoff
        self._versions: dict[str, str | None] = {}
        self.items: dict[str, T] = {}
        self.synced = asyncio.Event()
        """Set after the first complete list."""

    def _query(self, **extra: str) -> list[tuple[str, str]]:
        query = [("labelSelector", self._selector)] if self._selector else []
        return query + list(extra.items())

    def _emit(self, kind: str, value: T) -> None:
        if self._on_change is None:
            return
        try:
            self._on_change(kind, value)
        except Exception:
            # One bad event must not end the watch; tracebacks show code, never values.
            logger.exception("%s: handling a %s event failed", self._what, kind)

    def _reduced(self, obj: Mapping[str, Any]) -> tuple[str, T | None] | None:
        key = self._key(obj)
        if not isinstance(key, str):
            return None
        return key, self._reduce(obj)

    async def _list(self) -> str:
        try:
            listing = await self._api.call_api(
                self._path, "GET", query_params=self._query(),
                header_params={"Accept": "application/json"},
                response_types_map={200: "object"}, auth_settings=["BearerToken"],
                _return_http_data_only=True, _request_timeout=30)
        except aclient.ApiException as error:
            raise Refused(int(error.status or 0), str(error.reason or "")) from None
        listed: dict[str, tuple[str | None, T]] = {}
        for obj in listing.get("items") or []:
            reduced = self._reduced(obj)
            if reduced is not None and reduced[1] is not None:
                listed[reduced[0]] = (version_of(obj), reduced[1])
        known = {key: (self._versions.get(key), value) for key, value in self.items.items()}
        self.items = {key: value for key, (_, value) in listed.items()}
        self._versions = {key: version for key, (version, _) in listed.items()}
        for kind, value in changes(known, listed):
            self._emit(kind, value)
        self.synced.set()
        return str((listing.get("metadata") or {}).get("resourceVersion", ""))

    def _apply(self, kind: str, obj: Mapping[str, Any]) -> None:
        reduced = self._reduced(obj)
        if reduced is None:
            return
        key, value = reduced
        if kind == "DELETED" or value is None:
            gone = self.items.pop(key, None)
            self._versions.pop(key, None)
            if gone is not None:
                self._emit("DELETED", gone)
            return
        is_new = key not in self.items
        self.items[key] = value
        self._versions[key] = version_of(obj)
        self._emit("ADDED" if is_new else "MODIFIED", value)

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
                version = version_of(obj) or version
                if kind in ("ADDED", "MODIFIED", "DELETED"):
                    self._apply(kind, obj)
                # BOOKMARK: only the version moves on.
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
                if refused and self._forbidden_backoff is not None:
                    delay = min(delay, self._forbidden_backoff)
                failures += 1
                # Refusals are expected for a moment where a RoleBinding is still coming.
                quiet = refused and self._forbidden_backoff is not None and failures <= 5
                (logger.debug if quiet else logger.warning)(
                    "watch of %s: %s; retrying in %.1fs", self._what, error, delay)
                await asyncio.sleep(delay)
