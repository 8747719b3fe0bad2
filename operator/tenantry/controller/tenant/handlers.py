"""kopf handlers for Tenants: thin decorators that hand events to `reconcile`.

They parse the spec, call the reconciler, write status, post events, and ask kopf to retry when
the cluster refused part of the work. A drift watch on every child kind re-runs the reconciler
for the child's tenant when a child is deleted or changed by anyone but the operator.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any

import kopf

from tenantry import logs, metrics
from tenantry.controller import audit, events, kubeapi
from tenantry.controller.kubeapi import KubeApi
from tenantry.controller.tenant import namespaces, rbac, reconcile
from tenantry.model import common
from tenantry.model import tenant as tenant_model

logger = logging.getLogger(__name__)

TENANTS = (common.GROUP, common.VERSION, tenant_model.PLURAL)
RETRY_DELAY = 10.0
# Re-applies everything now and then, whatever the watches saw (missed events, a lost watch).
RESYNC_INTERVAL = 300.0
# Child events within this window cause one reconciliation, not one each.
DRIFT_DEBOUNCE = 0.5


@kopf.index(*TENANTS)
def tenants_by_name(name: str, uid: str, spec: kopf.Spec, meta: kopf.Meta,
                    **_: Any) -> dict[str, tuple[str, dict[str, Any], bool]]:
    """name -> (uid, spec, being deleted): what the drift watch needs to re-reconcile."""
    return {name: (uid, dict(spec), meta.get("deletionTimestamp") is not None)}


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


async def _reconcile_and_report(api: KubeApi, name: str, uid: str, raw_spec: Mapping[str, Any],
                                generation: int | None, previous_status: Mapping[str, Any],
                                body: kopf.Body) -> tuple[dict[str, Any],
                                                                  reconcile.Outcome]:
    logs.bind_reconcile(tenant_model.KIND, name, tenant=name)
    spec = tenant_model.TenantSpec.model_validate(dict(raw_spec))
    first_time = previous_status.get("observedGeneration") is None
    outcome = await reconcile.reconcile(api, name, uid, spec, first_time=first_time)
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
async def reconcile_tenant(name: str, uid: str, spec: kopf.Spec, meta: kopf.Meta,
                           status: kopf.Status, body: kopf.Body, patch: kopf.Patch,
                           memo: kopf.Memo, reason: str, **_: Any) -> None:
    new_status, outcome = await _reconcile_and_report(
        memo.api, name, uid, spec, meta.get("generation"), status, body)
    # A resume that found everything in place changed nothing worth a ledger entry.
    if reason != "resume" or reconcile.changed_anything(outcome):
        await _record(memo, name, "tenant.reconcile", outcome, trigger=reason,
                      generation=meta.get("generation"))
    patch.status.update(new_status)
    if outcome.failures:
        raise kopf.TemporaryError(_failure_summary(outcome), delay=RETRY_DELAY)


@kopf.timer(*TENANTS, interval=RESYNC_INTERVAL, initial_delay=RESYNC_INTERVAL, idle=60)
@metrics.reconciliation(tenant_model.KIND)
async def resync_tenant(name: str, uid: str, spec: kopf.Spec, meta: kopf.Meta,
                        status: kopf.Status, body: kopf.Body, patch: kopf.Patch,
                        memo: kopf.Memo, **_: Any) -> None:
    new_status, outcome = await _reconcile_and_report(
        memo.api, name, uid, spec, meta.get("generation"), status, body)
    if reconcile.changed_anything(outcome):
        await _record(memo, name, "tenant.reconcile", outcome, trigger="resync",
                      generation=meta.get("generation"))
    patch.status.update(new_status)


async def _record(memo: kopf.Memo, tenant_name: str, action: str, outcome: reconcile.Outcome,
                  **details: Any) -> None:
    await audit.record(memo, tenant=tenant_name, action=action, kind=tenant_model.KIND,
                       namespace=None, name=tenant_name,
                       changes={**{k: v for k, v in details.items() if v is not None},
                                **reconcile.audit_summary(outcome)})


@kopf.on.delete(*TENANTS)
@metrics.reconciliation(tenant_model.KIND)
async def finalize_tenant(name: str, spec: kopf.Spec, body: kopf.Body, memo: kopf.Memo,
                          **_: Any) -> None:
    outcome = await reconcile.finalize(memo.api, name,
                                       tenant_model.TenantSpec.model_validate(dict(spec)))
    await _post_events(memo.api, body, outcome)
    await _record(memo, name, "tenant.finalize", outcome,
                  deletionPolicy=str(spec.get("deletionPolicy") or "Retain"))
    if outcome.failures:
        raise kopf.TemporaryError(_failure_summary(outcome), delay=RETRY_DELAY)


# -- drift: a child changed or vanished behind our back -------------------------------------------

def _last_writer(body: Mapping[str, Any]) -> str | None:
    """The manager of the most recent non-status write, from managedFields."""
    entries = [e for e in body.get("metadata", {}).get("managedFields") or []
               if not e.get("subresource")]
    if not entries:
        return None
    latest = max(entries, key=lambda e: e.get("time") or "")
    manager = latest.get("manager")
    return str(manager) if manager is not None else None


async def _restore(memo: kopf.Memo, tenant_name: str, index: kopf.Index[str, Any],
                   what: str, delay: float = DRIFT_DEBOUNCE) -> None:
    await asyncio.sleep(delay)
    memo.drift_tasks.pop(tenant_name, None)
    for uid, raw_spec, deleting in index.get(tenant_name, []):
        if deleting:
            return
        tenant = await memo.api.get(common.API_VERSION, tenant_model.KIND, tenant_name)
        if tenant is None or tenant["metadata"]["uid"] != uid:
            return
        body = _tenant_ref(tenant_name, uid)
        await events.post(memo.api, body, [events.normal("DriftCorrected",
                                                         f"{what}; re-applying")])
        metrics.DRIFT_CORRECTIONS.inc()
        new_status, outcome = await _reconcile_and_report(
            memo.api, tenant_name, uid, raw_spec, tenant["metadata"].get("generation"),
            tenant.get("status") or {}, body)
        await _record(memo, tenant_name, "tenant.drift-corrected", outcome, drift=what)
        await memo.api.merge_patch(common.API_VERSION, tenant_model.KIND, tenant_name,
                                   {"status": new_status}, subresource="status")
        # Like kopf's retry of the main handler: a refused part (a fence that cannot come back,
        # so access stays withheld) is tried again, rather than waiting for the next resync.
        if outcome.failures and tenant_name not in memo.drift_tasks:
            memo.drift_tasks[tenant_name] = asyncio.create_task(
                _restore(memo, tenant_name, index, what, delay=RETRY_DELAY))


def _on_child_event(event: Mapping[str, Any], memo: kopf.Memo,
                    index: kopf.Index[str, Any]) -> None:
    body = event.get("object") or {}
    labels = body.get("metadata", {}).get("labels") or {}
    # The operator's own Secret binding names its tenant under a label of its own (rbac.py).
    tenant_name = labels.get(common.TENANT_LABEL) or labels.get(rbac.OPERATOR_ACCESS_LABEL)
    kind, name = body.get("kind", "object"), body.get("metadata", {}).get("name")
    if event.get("type") == "DELETED":
        what = f"{kind} {name} was deleted"
    elif event.get("type") == "MODIFIED" and _last_writer(body) != kubeapi.FIELD_MANAGER:
        what = f"{kind} {name} was changed by {_last_writer(body)}"
    else:
        return
    if tenant_name and tenant_name not in memo.drift_tasks:
        memo.drift_tasks[tenant_name] = asyncio.create_task(
            _restore(memo, tenant_name, index, what))


_CHILD_RESOURCES = (
    ("", "v1", "namespaces"),
    ("networking.k8s.io", "v1", "networkpolicies"),
    ("", "v1", "resourcequotas"),
    ("", "v1", "limitranges"),
    ("rbac.authorization.k8s.io", "v1", "rolebindings"),
    ("rbac.authorization.k8s.io", "v1", "clusterroles"),
    ("rbac.authorization.k8s.io", "v1", "clusterrolebindings"),
)


def _register_child_watch(group: str, version: str, plural: str) -> None:
    @kopf.on.event(group, version, plural, labels={common.TENANT_LABEL: kopf.PRESENT},
                   id=f"drift-{plural}")
    async def watch_child(*, event: kopf.RawEvent, memo: kopf.Memo, **kwargs: Any) -> None:
        _on_child_event(event, memo, kwargs["tenants_by_name"])


for _group, _version, _plural in _CHILD_RESOURCES:
    _register_child_watch(_group, _version, _plural)


@kopf.on.event("rbac.authorization.k8s.io", "v1", "rolebindings",
               labels={rbac.OPERATOR_ACCESS_LABEL: kopf.PRESENT}, id="drift-operator-access")
async def watch_operator_access(*, event: kopf.RawEvent, memo: kopf.Memo, **kwargs: Any) -> None:
    """The operator's Secret binding in a tenant namespace: without it, Credentials stop there."""
    _on_child_event(event, memo, kwargs["tenants_by_name"])


@kopf.on.event("rbac.authorization.k8s.io", "v1", "clusterroles",
               labels={common.MANAGED_BY_LABEL: "tenantry"}, id="drift-tier-roles")
async def watch_tier_roles(event: kopf.RawEvent, memo: kopf.Memo, **_: Any) -> None:
    """The shared tier roles carry no tenant label: restore them directly."""
    body = event.get("object") or {}
    name = body.get("metadata", {}).get("name")
    wanted = {role["metadata"]["name"]: role for role in rbac.cluster_roles()}
    changed = (event.get("type") == "MODIFIED"
               and _last_writer(body) != kubeapi.FIELD_MANAGER)
    if name in wanted and (event.get("type") == "DELETED" or changed):
        await memo.api.apply(wanted[name])
        await audit.record(memo, tenant=None, action="clusterrole.restore", kind="ClusterRole",
                           namespace=None, name=name,
                           changes={"drift": "deleted" if event.get("type") == "DELETED"
                                    else f"changed by {_last_writer(body)}"})
