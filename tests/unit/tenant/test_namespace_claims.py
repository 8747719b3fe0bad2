"""Claiming a namespace: of many tenants deciding at once, exactly one takes it, atomically.

The decision logic is pure (`namespaces.decide`, `claim`, `contended`); `reconcile.claim_namespace`
is the loop around it. Here that loop runs against a small in-memory stand-in for the API server
that keeps the two guarantees the real one gives (a create fails with 409 when the name exists,
an apply with a stale resourceVersion fails with 409) and yields to the event loop on every call,
so concurrent tenants interleave between their read and their write, as they do in the operator.
The same race against the real control plane is in tests/e2e/test_tenant_isolation.py.
"""

from __future__ import annotations

import asyncio
import copy
import random
from typing import Any, cast

import pytest

from tenantry.controller.tenant import namespaces, reconcile
from tenantry.controller.tenant.namespaces import Action
from tenantry.kubeapi import ApiError, KubeApi
from tenantry.model import common
from tenantry.model.tenant import EnforcementMode, TenantNamespace

NAME = "contested"


class NamespaceStore:
    """Namespaces only: get, create-if-absent, apply with an optional resourceVersion check."""

    def __init__(self, seed: int = 0) -> None:
        self.objects: dict[str, dict[str, Any]] = {}
        self.version = 0
        self.label_history: list[str | None] = []
        self._random = random.Random(seed)  # noqa: S311 - interleavings, not secrets

    async def _yield(self) -> None:
        for _ in range(self._random.randint(0, 3)):
            await asyncio.sleep(0)

    def _store(self, obj: dict[str, Any]) -> None:
        self.version += 1
        obj["metadata"]["resourceVersion"] = str(self.version)
        self.objects[obj["metadata"]["name"]] = obj
        self.label_history.append(obj["metadata"]["labels"].get(common.TENANT_LABEL))

    async def get(self, api_version: str, kind: str, name: str,
                  namespace: str | None = None) -> dict[str, Any] | None:
        await self._yield()
        found = self.objects.get(name)
        return copy.deepcopy(found) if found is not None else None

    async def create(self, obj: dict[str, Any], *,
                     field_manager: str | None = None) -> dict[str, Any]:
        await self._yield()
        name = obj["metadata"]["name"]
        if name in self.objects:
            raise ApiError(409, "AlreadyExists", f'namespaces "{name}" already exists')
        self._store(copy.deepcopy(obj))
        return copy.deepcopy(self.objects[name])

    async def apply(self, obj: dict[str, Any], **_: Any) -> dict[str, Any]:
        await self._yield()
        name = obj["metadata"]["name"]
        current = self.objects.get(name)
        wanted_version = obj["metadata"].get("resourceVersion")
        if wanted_version is not None and (
                current is None or current["metadata"]["resourceVersion"] != wanted_version):
            raise ApiError(409, "Conflict", "the object has been modified")
        merged = copy.deepcopy(current) if current else {"metadata": {"name": name,
                                                                      "labels": {}}}
        merged["metadata"]["labels"].update(obj["metadata"]["labels"])
        self._store(merged)
        return copy.deepcopy(merged)


def _entry(adopt: bool = False) -> TenantNamespace:
    return TenantNamespace(name=NAME, adopt=adopt)


async def _race(store: NamespaceStore, tenants: list[str], adopt: bool = False,
                assume_absent: bool = False) -> dict[str, namespaces.Decision]:
    api = cast(KubeApi, store)
    results = await asyncio.gather(*(
        reconcile.claim_namespace(api, name, _entry(adopt), EnforcementMode.DENY,
                                  assume_absent=assume_absent)
        for name in tenants))
    for name, (_decision, failure) in zip(tenants, results, strict=True):
        assert failure is None, (name, failure)
    return {name: decision for name, (decision, _) in zip(tenants, results, strict=True)}


@pytest.mark.parametrize("assume_absent", [False, True], ids=["read-first", "create-first"])
@pytest.mark.parametrize("seed", range(20))
async def test_ten_tenants_creating_one_namespace_exactly_one_wins(
        seed: int, assume_absent: bool) -> None:
    store = NamespaceStore(seed)
    tenants = [f"tenant-{i}" for i in range(10)]
    decisions = await _race(store, tenants, assume_absent=assume_absent)
    winners = [name for name, d in decisions.items() if d.action is Action.CREATE]
    assert len(winners) == 1
    [winner] = winners
    # The namespace was written once, by the winner, with its label: never relabelled.
    assert store.label_history == [winner]
    assert store.objects[NAME]["metadata"]["labels"] == namespaces.namespace(
        winner, NAME)["metadata"]["labels"]
    for name, decision in decisions.items():
        if name != winner:
            assert decision.action is Action.CONFLICT
            assert decision.reason == "NamespaceOwnedByAnotherTenant"
            assert decision.owner == winner and winner in decision.message


@pytest.mark.parametrize("assume_absent", [False, True], ids=["read-first", "create-first"])
@pytest.mark.parametrize("seed", range(20))
async def test_ten_tenants_adopting_one_namespace_exactly_one_wins(
        seed: int, assume_absent: bool) -> None:
    store = NamespaceStore(seed)
    store._store({"metadata": {"name": NAME, "labels": {"team": "x"}}})
    store.label_history.clear()
    tenants = [f"tenant-{i}" for i in range(10)]
    decisions = await _race(store, tenants, adopt=True, assume_absent=assume_absent)
    winners = [name for name, d in decisions.items() if d.action is Action.ADOPT]
    assert len(winners) == 1
    assert store.label_history == winners
    assert all(d.reason == "NamespaceOwnedByAnotherTenant"
               for name, d in decisions.items() if name not in winners)


async def test_the_winner_sees_its_own_namespace_as_owned_next_time() -> None:
    store = NamespaceStore()
    await _race(store, ["a", "b"])
    winner = store.objects[NAME]["metadata"]["labels"][common.TENANT_LABEL]
    again = await _race(store, ["a", "b"])
    assert again[winner].action is Action.OWNED
    assert store.label_history == [winner]


async def test_a_lost_create_against_an_unowned_namespace_is_not_an_adoption() -> None:
    """Someone created it plainly between our read and our create: no adopt, no takeover."""
    store = NamespaceStore()
    api = cast(KubeApi, store)
    real_get = store.get

    async def get_then_someone_creates(*args: Any, **kwargs: Any) -> dict[str, Any] | None:
        found = await real_get(*args, **kwargs)
        if NAME not in store.objects:
            store._store({"metadata": {"name": NAME, "labels": {}}})
        return found

    store.get = get_then_someone_creates  # type: ignore[method-assign]
    decision, failure = await reconcile.claim_namespace(api, "a", _entry(),
                                                        EnforcementMode.DENY)
    assert failure is None
    assert decision.action is Action.CONFLICT and decision.reason == "NamespaceExists"
    assert store.objects[NAME]["metadata"]["labels"] == {}


@pytest.mark.parametrize(("labels", "reason"), [
    ({}, "NamespaceExists"),
    ({common.TENANT_LABEL: "b"}, "NamespaceOwnedByAnotherTenant"),
])
async def test_a_first_pass_that_finds_the_namespace_taken_decides_from_what_it_reads(
        labels: dict[str, str], reason: str) -> None:
    """Creating first (a Tenant's first pass) assumes nothing: the 409 leads to a read and the
    usual decision, so an unowned or foreign namespace is neither adopted nor relabelled."""
    store = NamespaceStore()
    store._store({"metadata": {"name": NAME, "labels": dict(labels)}})
    store.label_history.clear()
    decision, failure = await reconcile.claim_namespace(
        cast(KubeApi, store), "a", _entry(), EnforcementMode.DENY, assume_absent=True)
    assert failure is None
    assert decision.action is Action.CONFLICT and decision.reason == reason
    assert store.objects[NAME]["metadata"]["labels"] == labels
    assert store.label_history == []


async def test_a_first_pass_creates_its_namespace_without_reading_it_first() -> None:
    store = NamespaceStore()
    reads: list[str] = []
    real_get = store.get

    async def counted_get(api_version: str, kind: str, name: str,
                          namespace: str | None = None) -> dict[str, Any] | None:
        reads.append(name)
        return await real_get(api_version, kind, name, namespace)

    store.get = counted_get  # type: ignore[method-assign]
    decision, _ = await reconcile.claim_namespace(cast(KubeApi, store), "a", _entry(),
                                                  EnforcementMode.DENY, assume_absent=True)
    assert decision.action is Action.CREATE and reads == []
    again, _ = await reconcile.claim_namespace(cast(KubeApi, store), "a", _entry(),
                                               EnforcementMode.DENY)
    assert again.action is Action.OWNED and reads == [NAME]


async def test_a_namespace_that_keeps_changing_is_left_alone_and_retried() -> None:
    store = NamespaceStore()
    store._store({"metadata": {"name": NAME, "labels": {}}})
    api = cast(KubeApi, store)

    async def always_stale(obj: dict[str, Any], **_: Any) -> dict[str, Any]:
        raise ApiError(409, "Conflict", "the object has been modified")

    store.apply = always_stale  # type: ignore[method-assign]
    decision, failure = await reconcile.claim_namespace(api, "a", _entry(adopt=True),
                                                        EnforcementMode.DENY)
    assert decision.action is Action.CONFLICT and not decision.may_apply
    assert decision.reason == "NamespaceContended"
    assert failure and NAME in failure


async def test_a_refused_claim_is_a_failure_not_a_silent_apply() -> None:
    store = NamespaceStore()
    api = cast(KubeApi, store)

    async def refused(obj: dict[str, Any], **_: Any) -> dict[str, Any]:
        raise ApiError(403, "Forbidden", "namespaces is forbidden")

    store.create = refused  # type: ignore[method-assign]
    decision, failure = await reconcile.claim_namespace(api, "a", _entry(),
                                                        EnforcementMode.DENY)
    assert not decision.may_apply and decision.reason == "NamespaceClaimFailed"
    assert failure and "Forbidden" in failure and NAME in failure
    assert NAME not in store.objects


def test_only_create_and_adopt_claim() -> None:
    assert namespaces.decide("a", _entry(), None).claims
    assert namespaces.decide("a", _entry(adopt=True), {}).claims
    assert not namespaces.decide("a", _entry(), {common.TENANT_LABEL: "a"}).claims
    assert not namespaces.decide("a", _entry(), {common.TENANT_LABEL: "b"}).claims
    assert not namespaces.decide("a", _entry(), {}).claims


def test_a_claim_is_the_whole_namespace_and_adoption_pins_the_version() -> None:
    created = namespaces.claim("a", NAME, EnforcementMode.DENY, None)
    assert created == namespaces.namespace("a", NAME, EnforcementMode.DENY)
    assert "resourceVersion" not in created["metadata"]
    adopted = namespaces.claim("a", NAME, EnforcementMode.DENY,
                               {"metadata": {"name": NAME, "resourceVersion": "42"}})
    assert adopted["metadata"]["resourceVersion"] == "42"
    assert adopted["metadata"]["labels"][common.TENANT_LABEL] == "a"


def test_release_patch_removes_exactly_the_ownership_labels() -> None:
    removed = namespaces.release_patch(NAME)["metadata"]["labels"]
    assert removed == {common.MANAGED_BY_LABEL: None, namespaces.MODE_LABEL: None,
                       common.TENANT_LABEL: None}
    assert not set(removed) & set(namespaces.released_namespace(NAME)["metadata"]["labels"])
