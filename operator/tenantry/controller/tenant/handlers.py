"""kopf handlers for Tenants: thin decorators that hand events to `reconcile`.

They parse the spec, call the reconciler, write status, post events, and ask kopf to retry when
the cluster refused part of the work. The watches of every child kind (`children.py`, not kopf's:
kopf's machinery per event cost more than the reconciles in a mass rollout) re-run the
reconciler for the child's tenant when a child is deleted or changed by anyone but the operator,
and tell pruning what was applied before without listing.
"""

from __future__ import annotations

import asyncio
import copy
import logging
from collections.abc import Coroutine, Mapping
from typing import Any

import kopf

from tenantry import kubeapi, logs, metrics
from tenantry.controller import audit, diffbase, events
from tenantry.controller.credential import watches
from tenantry.controller.tenant import children, namespaces, rbac, reconcile
from tenantry.kubeapi import KubeApi
from tenantry.model import common
from tenantry.model import tenant as tenant_model

logger = logging.getLogger(__name__)

TENANTS = (common.GROUP, common.VERSION, tenant_model.PLURAL)
RETRY_DELAY = 10.0
"""Seconds before a Tenant whose reconcile failed in part (a fence refused, a namespace taken)
is tried again, unless `tenantry operator run --tenant-retry-delay` (`memo.tenant_retry_delay`)
says otherwise."""
# Waiting for the apiserver to enforce the protection policy takes about a second, once: the
# first retry comes after 1 s, then 2, 4... up to the usual delay (a policy that is never
# enforced must not have every Tenant reconciled every second).
PROTECTION_RETRY_DELAY = 1.0
# Re-applies everything now and then, whatever the watches saw (missed events, a lost watch).
RESYNC_INTERVAL = 300.0
# Child events within this window cause one reconciliation, not one each.
DRIFT_DEBOUNCE = 0.5


def _tenant_ref(name: str, uid: str) -> kopf.Body:
    """Enough of a Tenant for kopf to attach Events to it."""
    return kopf.Body({"apiVersion": common.API_VERSION, "kind": tenant_model.KIND,
                      "metadata": {"name": name, "uid": uid}})


async def _post_events(api: KubeApi, body: kopf.Body, outcome: reconcile.Outcome) -> None:
    posted: list[events.Posted] = []
    for _name, decision in sorted(outcome.decisions.items()):
        if decision.action in (namespaces.Action.CREATE, namespaces.Action.ADOPT):
            posted.append(events.normal(decision.reason, decision.message))
        elif not decision.may_apply:
            posted.append(events.warning(decision.reason, decision.message))
    for ref in outcome.deleted:
        posted.append(events.normal("Pruned", f"deleted {ref}: no longer in the spec"))
    for name in outcome.released:
        posted.append(events.normal(
            "NamespaceReleased",
            f"namespace {name} kept (deletionPolicy Retain) without tenant ownership"))
    for _name, message in sorted(outcome.withheld.items()):
        posted.append(events.warning("IsolationIncomplete", message[:1024]))
    for part, problems in sorted(outcome.failures.items()):
        posted.append(events.warning(f"{part}Failed", "; ".join(problems)[:1024]))
    await events.post(api, body, posted)


def _protection_gate(memo: kopf.Memo) -> reconcile.ProtectionGate:
    """The operator's one gate (not enforced until its probe says so), made at start-up
    (`start_children`): kopf copies the memo per object, so a gate made here on first use
    would be one per Tenant, each probing (a dry-run POST per Tenant) and, until its own
    probe is refused, withholding access and retrying. Made here only without a start-up
    (a handler called directly)."""
    gate: reconcile.ProtectionGate | None = memo.get("protection_gate")
    if gate is None:
        gate = memo.protection_gate = reconcile.ProtectionGate()
    return gate


async def _reconcile_and_report(api: KubeApi, name: str, uid: str, raw_spec: Mapping[str, Any],
                                generation: int | None, previous_status: Mapping[str, Any],
                                body: kopf.Body, watched: children.Children | None,
                                protection_gate: reconcile.ProtectionGate, *,
                                resync: bool = False
                                ) -> tuple[dict[str, Any], reconcile.Outcome]:
    logs.bind_reconcile(tenant_model.KIND, name, tenant=name)
    spec = tenant_model.TenantSpec.model_validate(dict(raw_spec))
    first_time = previous_status.get("observedGeneration") is None
    outcome = await reconcile.reconcile(api, name, uid, spec, first_time=first_time,
                                        children=watched, resync=resync,
                                        protection_gate=protection_gate)
    status = reconcile.status_of(outcome, spec, generation, dict(previous_status))
    await _post_events(api, body, outcome)
    wider = reconcile.newly_wider(previous_status, status)
    if wider is not None:
        await events.post(api, body, [events.warning(reconcile.WIDER_THAN_ALLOW_LIST,
                                                     wider["message"])])
    return status, outcome


def _failure_summary(outcome: reconcile.Outcome) -> str:
    return "; ".join(m for problems in outcome.failures.values() for m in problems)[:512]


@kopf.on.resume(*TENANTS)
@kopf.on.create(*TENANTS)
@kopf.on.update(*TENANTS, field="spec")
@metrics.reconciliation(tenant_model.KIND)
@events.reported
async def reconcile_tenant(name: str, uid: str, spec: kopf.Spec, meta: kopf.Meta,
                           status: kopf.Status, body: kopf.Body, memo: kopf.Memo, reason: str,
                           retry: int = 0, **_: Any) -> None:
    new_status, outcome = await _reconcile_and_report(
        memo.api, name, uid, spec, meta.get("generation"), status, body, _children(memo),
        _protection_gate(memo))
    # A resume that found everything in place changed nothing worth a ledger entry.
    if reason != "resume" or reconcile.changed_anything(outcome):
        await _record(memo, name, "tenant.reconcile", outcome, trigger=reason,
                      generation=meta.get("generation"))
    # Written here rather than through `patch`: kopf patches the Tenant (its annotations)
    # first and the status after, so Ready would wait for a round trip that decides nothing.
    # Done, this write also carries kopf's record of what was handled (`diffbase`), so kopf
    # has nothing of its own to write after it; not while a retry is due.
    handled = None if outcome.failures else diffbase.handled(body)
    if handled is not None:
        new_status[diffbase.STATUS_FIELD] = handled
    await _write_status(memo.api, name, new_status)
    if handled is not None:
        diffbase.written(body, handled)
    if outcome.failures:
        raise kopf.TemporaryError(_failure_summary(outcome), delay=(
            _retry_delay(memo) if _protection_gate(memo).enforced
            else min(PROTECTION_RETRY_DELAY * 2 ** min(retry, 10), _retry_delay(memo))))


@kopf.timer(*TENANTS, interval=RESYNC_INTERVAL, initial_delay=RESYNC_INTERVAL, idle=60)
@metrics.reconciliation(tenant_model.KIND)
@events.reported
async def resync_tenant(name: str, uid: str, spec: kopf.Spec, meta: kopf.Meta,
                        status: kopf.Status, body: kopf.Body, patch: kopf.Patch,
                        memo: kopf.Memo, **_: Any) -> None:
    new_status, outcome = await _reconcile_and_report(
        memo.api, name, uid, spec, meta.get("generation"), status, body, _children(memo),
        _protection_gate(memo), resync=True)
    if reconcile.changed_anything(outcome):
        await _record(memo, name, "tenant.reconcile", outcome, trigger="resync",
                      generation=meta.get("generation"))
    # A resync that found everything in place would write the same status again: skip it.
    if any(status.get(key) != value for key, value in new_status.items()):
        patch.status.update(new_status)


async def _write_status(api: KubeApi, tenant_name: str, status: Mapping[str, Any]) -> None:
    await api.merge_patch(common.API_VERSION, tenant_model.KIND, tenant_name,
                          {"status": dict(status)}, subresource="status")


async def _record(memo: kopf.Memo, tenant_name: str, action: str, outcome: reconcile.Outcome,
                  **details: Any) -> None:
    await audit.record(memo, tenant=tenant_name, action=action, kind=tenant_model.KIND,
                       namespace=None, name=tenant_name,
                       changes={**{k: v for k, v in details.items() if v is not None},
                                **reconcile.audit_summary(outcome)})


@kopf.on.delete(*TENANTS)
@metrics.reconciliation(tenant_model.KIND)
@events.reported
async def finalize_tenant(name: str, spec: kopf.Spec, body: kopf.Body, memo: kopf.Memo,
                          **_: Any) -> None:
    outcome = await reconcile.finalize(memo.api, name,
                                       tenant_model.TenantSpec.model_validate(dict(spec)))
    await _post_events(memo.api, body, outcome)
    await _record(memo, name, "tenant.finalize", outcome,
                  deletionPolicy=str(spec.get("deletionPolicy") or "Retain"))
    if outcome.failures:
        raise kopf.TemporaryError(_failure_summary(outcome), delay=_retry_delay(memo))


# -- drift: a child changed or vanished behind our back -------------------------------------------

@kopf.on.startup()
async def start_children(memo: kopf.Memo, **_: Any) -> None:
    """The watches of every child kind (`children.py`: drift events, and what pruning compares
    with), started once the operator's own start-up handler has made the client."""
    memo.tenant_children = children.Children(
        lambda kind, child: _on_child_event(memo, kind, child))
    # On the operator's memo, before kopf copies it per object: one gate for every Tenant,
    # patient for the moment the apiserver takes to enforce the policy just installed.
    memo.protection_gate = reconcile.ProtectionGate(patience=reconcile.PROTECTION_PATIENCE)
    memo.tenant_children_task = asyncio.create_task(_start_children(memo),
                                                    name="tenantry-children-start")


async def _start_children(memo: kopf.Memo) -> None:
    while True:  # the shared client, once the operator's own start-up handler has made it
        if memo.get("api") is not None and memo.get("drift_tasks") is not None:
            break
        await asyncio.sleep(0.2)
    _children(memo).start(watches.watch_client(memo.api.api))


@kopf.on.cleanup()
async def stop_children(memo: kopf.Memo, **_: Any) -> None:
    task: asyncio.Task[None] | None = memo.get("tenant_children_task")
    if task is not None:
        task.cancel()
    watched: children.Children | None = memo.get("tenant_children")
    if watched is not None:
        await watched.stop()


def _retry_delay(memo: kopf.Memo) -> float:
    return float(memo.get("tenant_retry_delay", RETRY_DELAY))


def _children(memo: kopf.Memo) -> children.Children:
    found: children.Children = memo.tenant_children
    return found


async def _restore(memo: kopf.Memo, tenant_name: str, what: str,
                   delay: float = DRIFT_DEBOUNCE) -> None:
    await asyncio.sleep(delay)
    memo.drift_tasks.pop(tenant_name, None)
    tenant = await memo.api.get(common.API_VERSION, tenant_model.KIND, tenant_name)
    if tenant is None or tenant["metadata"].get("deletionTimestamp"):
        return  # gone or being finalized: nothing to restore
    uid = tenant["metadata"]["uid"]
    body = _tenant_ref(tenant_name, uid)
    await events.post(memo.api, body, [events.normal("DriftCorrected", f"{what}; re-applying")])
    metrics.DRIFT_CORRECTIONS.inc()
    new_status, outcome = await _reconcile_and_report(
        memo.api, tenant_name, uid, tenant.get("spec") or {},
        tenant["metadata"].get("generation"), tenant.get("status") or {}, body,
        _children(memo), _protection_gate(memo))
    await _record(memo, tenant_name, "tenant.drift-corrected", outcome, drift=what)
    await _write_status(memo.api, tenant_name, new_status)
    # Like kopf's retry of the main handler: a refused part (a fence that cannot come back,
    # so access stays withheld) is tried again, rather than waiting for the next resync.
    if outcome.failures and tenant_name not in memo.drift_tasks:
        memo.drift_tasks[tenant_name] = asyncio.create_task(
            _restore(memo, tenant_name, what, delay=_retry_delay(memo)))


def _on_child_event(memo: kopf.Memo, kind: str, child: children.Child) -> None:
    """A change the watches saw: re-reconcile the child's tenant when someone but the operator
    changed it or anyone deleted it (debounced per tenant); restore a tier role directly."""
    if kind == "DELETED":
        what = f"{child.ref.kind} {child.ref.name} was deleted"
    elif kind == "MODIFIED" and child.last_writer != kubeapi.FIELD_MANAGER:
        what = f"{child.ref.kind} {child.ref.name} was changed by {child.last_writer}"
    else:
        return  # ADDED (the first list reports everything so), or the operator's own write
    if child.ref.kind == "ClusterRole" and child.ref.name in _TIER_ROLES:
        _schedule(memo, f"ClusterRole {child.ref.name}", _restore_tier_role(memo, child, kind))
    elif child.tenant:
        _schedule(memo, child.tenant, _restore(memo, child.tenant, what))


def _schedule(memo: kopf.Memo, key: str, work: Coroutine[Any, Any, None]) -> None:
    """Run `work` unless work for `key` is pending already (a burst of events of one tenant
    makes one reconciliation); pending work is cancelled at shutdown."""
    if key in memo.drift_tasks:
        work.close()
        return
    memo.drift_tasks[key] = asyncio.create_task(work)


# The shared tier roles carry no tenant label: they are restored directly, not by a tenant.
_TIER_ROLES = {role["metadata"]["name"]: role for role in rbac.cluster_roles()}


async def _restore_tier_role(memo: kopf.Memo, child: children.Child, kind: str) -> None:
    try:
        await memo.api.apply(copy.deepcopy(_TIER_ROLES[child.ref.name]))
        await audit.record(memo, tenant=None, action="clusterrole.restore", kind="ClusterRole",
                           namespace=None, name=child.ref.name,
                           changes={"drift": "deleted" if kind == "DELETED"
                                    else f"changed by {child.last_writer}"})
    finally:
        memo.drift_tasks.pop(f"ClusterRole {child.ref.name}", None)
