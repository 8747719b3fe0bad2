"""At most `reconcile.MAX_CONCURRENT_RECONCILES` Tenants reconcile at once; others wait in turn.

Why it matters: 200 Tenants created together, all reconciling at once, interleave their stages
so that nearly every tenant becomes Ready only at the end of the whole rollout. Here the
reconciler runs against an in-memory API that yields on every call and remembers which tenants
are between their first request (the namespace claim) and their last apply.
"""

from __future__ import annotations

import asyncio
import copy
from typing import Any, cast

from tenantry.controller.tenant import desired, rbac, reconcile
from tenantry.kubeapi import KubeApi
from tenantry.model import common
from tenantry.model.tenant import TenantSpec


class CountingApi:
    """Accepts every write; tracks the tenants in flight and the most there ever were."""

    def __init__(self, applies_per_tenant: int) -> None:
        self.applies_per_tenant = applies_per_tenant
        self.applied: dict[str, int] = {}
        self.objects: dict[tuple[str, str], dict[str, Any]] = {}
        self.in_flight: set[str] = set()
        self.most = 0
        self.finished: list[str] = []

    @staticmethod
    def _tenant(obj_or_name: Any) -> str:
        return str(obj_or_name).removesuffix("-ns")

    def _starts(self, kind: str, name: str) -> None:
        """The namespace claim (a read, or on a first pass the create) opens a tenant's pass."""
        if kind == "Namespace":
            self.in_flight.add(self._tenant(name))
            self.most = max(self.most, len(self.in_flight))

    async def get(self, api_version: str, kind: str, name: str,
                  namespace: str | None = None) -> dict[str, Any] | None:
        self._starts(kind, name)
        await asyncio.sleep(0)
        found = self.objects.get((kind, name))
        return copy.deepcopy(found) if found else None

    async def create(self, obj: dict[str, Any], **_: Any) -> dict[str, Any]:
        self._starts(obj["kind"], obj["metadata"]["name"])
        await asyncio.sleep(0)
        obj = copy.deepcopy(obj)
        obj["metadata"]["resourceVersion"] = "1"
        self.objects[(obj["kind"], obj["metadata"]["name"])] = obj
        return obj

    async def apply(self, obj: dict[str, Any], **_: Any) -> dict[str, Any]:
        await asyncio.sleep(0)
        labels = obj["metadata"]["labels"]
        tenant = labels.get(common.TENANT_LABEL) or labels[rbac.OPERATOR_ACCESS_LABEL]
        self.applied[tenant] = self.applied.get(tenant, 0) + 1
        if self.applied[tenant] == self.applies_per_tenant:
            self.in_flight.discard(tenant)
            self.finished.append(tenant)
        return obj

    async def list(self, api_version: str, kind: str, namespace: str | None = None,
                   **_: Any) -> list[dict[str, Any]]:
        await asyncio.sleep(0)
        return []


def _spec(name: str) -> TenantSpec:
    return TenantSpec.model_validate({
        "members": [{"kind": "User", "name": f"{name}-owner", "role": "owner"}],
        "namespaces": [{"name": f"{name}-ns"}]})


async def test_a_mass_rollout_runs_a_bounded_number_of_tenants_at_once_first_come_first() -> None:
    # The claim creates the namespace; everything else of the tenant is applied.
    api = CountingApi(sum(1 for obj in desired.desired_objects("t", "uid", _spec("t"))
                          if obj["kind"] != "Namespace"))
    names = [f"t{index:03d}" for index in range(3 * reconcile.MAX_CONCURRENT_RECONCILES)]

    outcomes = await asyncio.gather(*(
        reconcile.reconcile(cast(KubeApi, api), name, f"uid-{name}", _spec(name),
                            first_time=True,
                            protection_gate=reconcile.ProtectionGate(enforced=True))
        for name in names))

    assert api.most == reconcile.MAX_CONCURRENT_RECONCILES
    assert all(not outcome.failures for outcome in outcomes)
    assert all(outcome.decisions[f"{name}-ns"].action.name == "CREATE"
               for name, outcome in zip(names, outcomes, strict=True))
    # Those that waited were let in in the order they asked.
    waited = api.finished[reconcile.MAX_CONCURRENT_RECONCILES:]
    assert waited == sorted(waited)
    assert sorted(api.finished) == names
