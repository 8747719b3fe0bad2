"""The per-namespace ciphertext watches: what a re-list reports, what is kept, where they go.

The list + watch against a real API server (403 until the binding exists, tamper detection in
seconds) is proven end to end in tests/e2e/test_credentials.py and test_operator_rbac.py; here
the pure diff of a re-list and the bookkeeping that starts and stops a watch per namespace.
"""

from __future__ import annotations

import asyncio
from typing import Any

from kubernetes_asyncio import client as aclient

from tenantry import listwatch
from tenantry.controller.credential import watches

VALUE = "UExBSU5URVhULXVuaXQtd2F0Y2gtN2YzYQ=="  # a value that must never be kept


def _secret(name: str, version: str) -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": "acme-prod", "resourceVersion": version},
            "data": {"token": VALUE}}


def _kept(name: str, version: str) -> tuple[str, dict[str, Any]]:
    return version, watches.metadata_only(_secret(name, version))


def test_a_relist_reports_what_changed_and_vanished_while_no_watch_was_open() -> None:
    known = {"a": _kept("a", "1"), "b": _kept("b", "2"), "c": _kept("c", "3")}
    listed = {"a": _kept("a", "1"),   # untouched: nothing to say
              "b": _kept("b", "9"),   # edited behind our back
              "d": _kept("d", "4")}   # new
    found = listwatch.changes(known, listed)
    assert [(kind, obj["metadata"]["name"]) for kind, obj in found] == [
        ("MODIFIED", "b"), ("DELETED", "c"), ("ADDED", "d")]
    # What was last known of a vanished object is what is reported (its owner, its namespace).
    assert found[1][1] is known["c"][1]
    assert listwatch.changes(listed, listed) == []


def test_only_metadata_is_kept_never_secret_data() -> None:
    kept = watches.metadata_only(_secret("a", "1"))
    assert kept == {"metadata": _secret("a", "1")["metadata"]}
    assert VALUE not in repr(kept)


def _namespace(name: str, **labels: str) -> dict[str, Any]:
    return {"metadata": {"name": name, "labels": labels}}


TENANT_NS = {"tenantry.dev/tenant": "acme", "app.kubernetes.io/managed-by": "tenantry"}


def test_only_namespaces_the_operator_made_for_a_tenant_are_followed() -> None:
    assert watches.is_tenant_namespace(_namespace("acme-prod", **TENANT_NS))
    # Merely labelled for a tenant (no binding there), or released (labels gone): not followed.
    assert not watches.is_tenant_namespace(_namespace("x", **{"tenantry.dev/tenant": "acme"}))
    assert not watches.is_tenant_namespace(_namespace("x", **{
        "pod-security.kubernetes.io/enforce": "restricted"}))
    assert not watches.is_tenant_namespace({"metadata": {"name": "kube-system"}})


async def test_a_secret_watch_per_tenant_namespace_started_and_stopped_with_it() -> None:
    api = aclient.ApiClient()
    seen: list[tuple[str, Any]] = []
    follow = watches.TenantSecretWatches(api, lambda kind, obj: seen.append((kind, obj)))
    try:
        follow.update(None, _namespace("acme-prod", **TENANT_NS))  # kopf's initial listing
        follow.update("MODIFIED", _namespace("acme-prod", **TENANT_NS))  # no second watch
        follow.update("ADDED", _namespace("acme-dev", **TENANT_NS))
        follow.update("ADDED", _namespace("platform"))
        assert sorted(follow.secrets) == ["acme-dev", "acme-prod"]
        prod = follow.secrets["acme-prod"]
        assert prod._path == "/api/v1/namespaces/acme-prod/secrets"
        assert prod._selector == "tenantry.dev/credential"
        tasks = dict(follow._tasks)
        # Released (its Tenant's labels removed) or deleted: the watch ends at once.
        follow.update("MODIFIED", _namespace("acme-prod"))
        follow.update("DELETED", _namespace("acme-dev", **TENANT_NS))
        assert follow.secrets == {}
        await asyncio.sleep(0)
        assert all(task.cancelled() or task.done() for task in tasks.values())
    finally:
        await follow.stop()
        await api.close()
    assert seen == []


async def test_the_watches_hold_their_connections_on_a_pool_of_their_own() -> None:
    """Each watch keeps a connection open: on the operator's shared client (a pool of 100), a
    hundred tenant namespaces would starve every reconcile (bench_tenants stalled at 1 of 200
    tenants Ready before this)."""
    shared = aclient.ApiClient()
    follow = watches.TenantSecretWatches(shared, lambda kind, obj: None)
    try:
        assert follow._api is not shared
        assert follow._api.configuration.connection_pool_maxsize == 0  # aiohttp: no limit
        assert shared.configuration.connection_pool_maxsize == 100  # left as it was
    finally:
        await follow.stop()
        await shared.close()
