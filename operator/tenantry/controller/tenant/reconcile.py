"""Reconcile one Tenant: decide namespace ownership, apply children in order, prune, report.

This is the I/O shell around the pure builders of this package: it reads what exists, asks the
builders what should exist, server-side applies the difference under one field manager, and
turns the outcome into status conditions. Safe to run any number of times (every step is
idempotent), which is what lets kopf retry it, the drift watch re-run it, and a restarted
operator resume it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Sequence
from typing import Any

from tenantry.controller import conditions
from tenantry.controller.kubeapi import ApiError, KubeApi
from tenantry.controller.tenant import desired, meta, namespaces
from tenantry.model import tenant

logger = logging.getLogger(__name__)

# Which status condition reports on which kind of child.
PART_OF_KIND = {
    "Namespace": "Namespaces",
    "NetworkPolicy": "NetworkPolicies",
    "ResourceQuota": "Quotas",
    "LimitRange": "Quotas",
    "RoleBinding": "RBAC",
    "ClusterRole": "RBAC",
    "ClusterRoleBinding": "RBAC",
}
PARTS = ("Namespaces", "NetworkPolicies", "Quotas", "RBAC")

# Apply stages: isolation before access (see desired.py); roles before the bindings that point
# at them (binding a role that does not exist yet fails RBAC's escalation check). Objects within
# a stage go in parallel.
_STAGE_OF_KIND = {"Namespace": 0, "NetworkPolicy": 1, "ResourceQuota": 1, "LimitRange": 1,
                  "ClusterRole": 2, "RoleBinding": 3, "ClusterRoleBinding": 3}


@dataclasses.dataclass
class Outcome:
    """What one reconciliation did, for status and events."""

    decisions: dict[str, namespaces.Decision]
    failures: dict[str, list[str]] = dataclasses.field(default_factory=dict)
    deleted: list[str] = dataclasses.field(default_factory=list)
    released: list[str] = dataclasses.field(default_factory=list)

    def fail(self, part: str, message: str) -> None:
        self.failures.setdefault(part, []).append(message)


def _selector(tenant_name: str) -> str:
    """What the operator applied for this tenant: both of its labels, never the tenant label
    alone. A namespace (or object) an admin merely labelled for a tenant is never pruned, so
    nothing the operator did not make is deleted or released behind someone's back."""
    return ",".join(f"{key}={value}" for key, value in meta.tenant_labels(tenant_name).items())


async def applied_children(api: KubeApi, tenant_name: str) -> list[meta.ObjectRef]:
    """Everything carrying this tenant's label now, across all child kinds."""
    listings = await asyncio.gather(*(
        api.list(api_version, kind, all_namespaces=True, label_selector=_selector(tenant_name))
        for api_version, kind in desired.CHILD_KINDS
    ))
    refs = []
    for (api_version, kind), items in zip(desired.CHILD_KINDS, listings, strict=True):
        for item in items:
            refs.append(meta.ref({"apiVersion": api_version, "kind": kind, **item}))
    return refs


async def decide_namespaces(api: KubeApi, tenant_name: str,
                            spec: tenant.TenantSpec) -> dict[str, namespaces.Decision]:
    existing = await asyncio.gather(*(api.get("v1", "Namespace", entry.name)
                                      for entry in spec.namespaces))
    return {
        entry.name: namespaces.decide(
            tenant_name, entry,
            None if found is None else (found["metadata"].get("labels") or {}))
        for entry, found in zip(spec.namespaces, existing, strict=True)
    }


async def _apply_all(api: KubeApi, objects: Sequence[meta.Manifest], outcome: Outcome) -> None:
    stages: dict[int, list[meta.Manifest]] = {}
    for obj in objects:
        stages.setdefault(_STAGE_OF_KIND.get(obj["kind"], 3), []).append(obj)
    for stage in sorted(stages):
        results = await asyncio.gather(*(api.apply(obj) for obj in stages[stage]),
                                       return_exceptions=True)
        for obj, result in zip(stages[stage], results, strict=True):
            if isinstance(result, ApiError):
                outcome.fail(PART_OF_KIND.get(obj["kind"], "RBAC"),
                             f"{meta.ref(obj)}: {result.reason or result.status}: "
                             f"{result.message}")
            elif isinstance(result, BaseException):
                raise result


async def _prune(api: KubeApi, tenant_name: str, wanted: Sequence[meta.Manifest],
                 policy: tenant.DeletionPolicy, outcome: Outcome) -> None:
    previous = await applied_children(api, tenant_name)
    plan = desired.prune(previous, wanted, policy)
    for ref in plan.delete:
        try:
            if await api.delete(ref.api_version, ref.kind, ref.name, ref.namespace or None):
                outcome.deleted.append(str(ref))
        except ApiError as error:
            outcome.fail(PART_OF_KIND.get(ref.kind, "RBAC"), f"deleting {ref}: {error}")
    for name in plan.release:
        try:
            await api.apply(namespaces.released_namespace(name))
            outcome.released.append(name)
        except ApiError as error:
            outcome.fail("Namespaces", f"releasing namespace {name}: {error}")


async def reconcile(api: KubeApi, tenant_name: str, tenant_uid: str,
                    spec: tenant.TenantSpec, *, first_time: bool = False) -> Outcome:
    """Make the cluster match `spec`; returns what happened (never raises for API refusals).

    `first_time` (no generation observed yet) skips pruning: nothing of an older spec can
    exist, and listing seven kinds cluster-wide per new tenant dominates a mass rollout.
    """
    decisions = await decide_namespaces(api, tenant_name, spec)
    outcome = Outcome(decisions=decisions)
    granted = {name for name, decision in decisions.items() if decision.may_apply}
    wanted = desired.desired_objects(tenant_name, tenant_uid, spec, granted=granted)
    await _apply_all(api, wanted, outcome)
    if not first_time:
        await _prune(api, tenant_name, wanted, spec.deletion_policy, outcome)
    return outcome


async def finalize(api: KubeApi, tenant_name: str, spec: tenant.TenantSpec) -> Outcome:
    """Remove everything of a deleted Tenant; namespaces follow `spec.deletionPolicy`."""
    outcome = Outcome(decisions={})
    await _prune(api, tenant_name, [], spec.deletion_policy, outcome)
    return outcome


def audit_summary(outcome: Outcome) -> dict[str, Any]:
    """What a reconciliation changed, for the audit ledger (pure; names only, no contents)."""
    summary: dict[str, Any] = {
        "namespaces": {name: decision.action.value
                       for name, decision in sorted(outcome.decisions.items())},
    }
    if outcome.deleted:
        summary["deleted"] = sorted(outcome.deleted)
    if outcome.released:
        summary["released"] = sorted(outcome.released)
    if outcome.failures:
        summary["failedParts"] = sorted(outcome.failures)
    return summary


def changed_anything(outcome: Outcome) -> bool:
    """Whether the reconciliation created, adopted, pruned or released something."""
    return bool(outcome.deleted or outcome.released or any(
        decision.action in (namespaces.Action.CREATE, namespaces.Action.ADOPT)
        for decision in outcome.decisions.values()))


def status_of(outcome: Outcome, spec: tenant.TenantSpec, generation: int | None,
              previous: dict[str, Any] | None) -> dict[str, Any]:
    """The Tenant's status after a reconciliation (pure)."""
    conflicts = [d for d in outcome.decisions.values() if not d.may_apply]
    parts = []
    for part in PARTS:
        problems = list(outcome.failures.get(part, []))
        if part == "Namespaces":
            problems = [d.message for d in conflicts] + problems
        if problems:
            reason = ("NamespaceConflict" if part == "Namespaces" and conflicts
                      else "ApplyFailed")
            if len(conflicts) == 1 and part == "Namespaces" and not outcome.failures.get(part):
                reason = conflicts[0].reason
            parts.append(conditions.condition(part, "False", reason, "; ".join(problems),
                                              generation=generation))
        else:
            parts.append(conditions.condition(part, "True", "Applied", "",
                                              generation=generation))
    ready = conditions.summarize(parts, generation=generation)
    namespace_status = [
        {"name": name, "ready": decision.may_apply and not outcome.failures.get("Namespaces"),
         "reason": decision.reason, "message": decision.message[:1024]}
        for name, decision in sorted(outcome.decisions.items())
    ]
    return {
        "observedGeneration": generation,
        "conditions": conditions.merge((previous or {}).get("conditions"), [ready, *parts]),
        "namespaces": namespace_status,
        "namespaceCount": sum(1 for d in outcome.decisions.values() if d.may_apply),
        "memberCount": len(spec.members),
    }
