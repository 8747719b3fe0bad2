"""Every change to Tenantry's own resources that Tenantry admits goes to the audit ledger, first.

The apiserver sends CREATE, UPDATE and DELETE of Tenants, Credentials and RotationPolicies here
(except the operator's own writes, which the operator records itself). The change is allowed only
once its ledger entry is committed: if the ledger cannot be written, the change is refused (fail
closed), unless the webhook runs with `--ledger-failure allow`, which admits it and logs loudly.

The entry is written before the apiserver has decided: after this webhook, other webhooks, the
ResourceQuota plugin and storage itself (an existing name, a conflict) may still refuse the
change. So the entry says what is known at that moment and no more: action
`<kind>.<operation>.requested` (e.g. `tenant.create.requested`) with `changes.decision`
`admitted-by-tenantry`. It proves who asked for what and that Tenantry let it through, never
that the change happened; the object itself and the operator's entries (`tenant.reconcile`,
`credential.encrypt`, ...) show what did. (A ValidatingAdmissionPolicy runs before validating
webhooks: a change it refuses never gets here and leaves no entry.)

`event_for` is the pure part: AdmissionReview request -> AuditEvent. It records who (the request's
`userInfo`: user name, groups, uid), what (operation on kind/namespace/name) and which fields
changed, by path only: a Credential's sealed data or a Secret reference never enters the ledger
by value. Dry runs change nothing and are not recorded (the webhook declares NoneOnDryRun).

The entries go through `tenantry.ledger.client.LedgerClient`: concurrent reviews are committed
together in one statement (group commit), and each review waits for its own entry's commit.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from typing import Any

from tenantry.ledger import append as append_module
from tenantry.ledger import client as ledger_client
from tenantry.ledger import events
from tenantry.webhook import metrics
from tenantry.webhook.directory import TenantDirectory
from tenantry.webhook.review import AdmissionRequest, Handler, Verdict

logger = logging.getLogger(__name__)

COMPONENT = "admission"
OPERATIONS = ("CREATE", "UPDATE", "DELETE")
# Enough to see what an edit touched without turning one entry into a copy of the object.
MAX_PATHS = 50
# The apiserver gives the whole webhook 5 s at most; leave room for the rest of the request.
RECORD_TIMEOUT = 3.0
UNAVAILABLE = append_module.UNAVAILABLE


def changed_paths(old: Any, new: Any, path: str = "") -> list[str]:
    """Field paths whose values differ between `old` and `new` (pure), e.g. spec.members[2].role.

    Lists are compared element by element; a list that changed length is reported at the list.
    A mapping that appears or disappears is reported by its leaves' parents, like any other.
    """
    if old is None and isinstance(new, Mapping):
        old = {}
    if new is None and isinstance(old, Mapping):
        new = {}
    if isinstance(old, Mapping) and isinstance(new, Mapping):
        found: list[str] = []
        for key in sorted(set(old) | set(new), key=str):
            child = f"{path}.{key}" if path else str(key)
            found += changed_paths(old.get(key), new.get(key), child)
        return found
    if isinstance(old, list) and isinstance(new, list) and len(old) == len(new):
        return [p for i, (a, b) in enumerate(zip(old, new, strict=True))
                for p in changed_paths(a, b, f"{path}[{i}]")]
    return [] if old == new else [path]


def _meta_keys_changed(old: Mapping[str, Any], new: Mapping[str, Any], field: str) -> list[str]:
    before = (old.get("metadata") or {}).get(field) or {}
    after = (new.get("metadata") or {}).get(field) or {}
    return sorted(f"metadata.{field}[{key}]" for key in set(before) | set(after)
                  if before.get(key) != after.get(key))


def summary(operation: str, old: Mapping[str, Any] | None,
            new: Mapping[str, Any] | None) -> dict[str, Any]:
    """Which fields the operation set, changed or removed, by path (pure)."""
    old, new = old or {}, new or {}
    if operation == "DELETE":
        return {"operation": operation}
    paths = changed_paths(old.get("spec"), new.get("spec"), "spec")
    paths += _meta_keys_changed(old, new, "labels")
    paths += [p for p in _meta_keys_changed(old, new, "annotations")
              if "last-applied-configuration" not in p]
    result: dict[str, Any] = {"operation": operation, "fields": paths[:MAX_PATHS]}
    if len(paths) > MAX_PATHS:
        result["moreFields"] = len(paths) - MAX_PATHS
    generation = (new.get("metadata") or {}).get("generation")
    if generation is not None:
        result["generation"] = generation
    return result


def event_for(request: AdmissionRequest, *, tenant: str | None) -> events.AuditEvent | None:
    """The ledger entry for an admission request, or None when nothing is to be recorded.

    `tenant`: the tenant the resource belongs to (a Tenant's own name; for namespaced kinds, the
    tenant owning the namespace; None when there is none, which records on the platform chain).
    """
    if request.operation not in OPERATIONS or request.dry_run:
        return None
    username = request.user.username or "system:anonymous"
    return events.AuditEvent(
        tenant=tenant,
        actor=username,
        actor_kind=events.actor_kind_of(username),
        identity=events.kubernetes_identity(username, request.user.groups,
                                            uid=request.user.uid or None),
        action=f"{request.kind.kind.lower()}.{request.operation.lower()}.{events.REQUESTED}",
        resource_kind=request.kind.kind,
        resource_namespace=request.namespace or None,
        resource_name=request.display_name,
        changes={**summary(request.operation, request.old_object, request.object),
                 "decision": events.ADMITTED_BY_TENANTRY},
        request_id=request.uid or None,
        component=COMPONENT,
    )


def tenant_of(request: AdmissionRequest, namespace_tenant: str | None) -> str | None:
    """A Tenant's chain is its own; other kinds belong to their namespace's tenant."""
    if request.kind.kind == "Tenant":
        return request.display_name if request.name else None
    return namespace_tenant


def handler(webhook: str, tenants: TenantDirectory, ledger: ledger_client.LedgerClient | None, *,
            fail_closed: bool = True) -> Handler:
    """The `/audit/resources` handler: record, then allow; refuse if it cannot be recorded.

    Concurrent reviews' entries share one round trip (`ledger_client`); each review still waits
    for its own entry's commit, and a batch that fails refuses every review in it."""

    async def handle(request: AdmissionRequest) -> Verdict:
        namespace_tenant = None
        if request.namespace:
            namespace_tenant = (await tenants.tenant_of(request.namespace)).tenant
        event = event_for(request, tenant=tenant_of(request, namespace_tenant))
        if event is None or ledger is None:
            return Verdict.allow()
        started = time.perf_counter()
        try:
            appended = await asyncio.wait_for(ledger.append(event), RECORD_TIMEOUT)
            metrics.LEDGER_RECORD_DURATION.observe(time.perf_counter() - started)
        except UNAVAILABLE as error:
            metrics.LEDGER_RECORD_FAILURES.inc()
            what = f"{request.kind.kind} {request.display_name}"
            if not fail_closed:
                logger.error("%s: audit ledger unavailable (%s); %s %s admitted UNRECORDED "
                             "(--ledger-failure allow)", webhook, type(error).__name__,
                             request.operation, what)
                return Verdict.allow(warnings=(
                    "the audit ledger is unavailable: this change was not recorded",))
            logger.warning("%s: audit ledger unavailable (%s); refusing %s %s", webhook,
                           type(error).__name__, request.operation, what)
            return Verdict.deny(
                f"the audit ledger is unavailable, so this change to {what} cannot be recorded "
                "and is refused (fail closed); retry shortly", code=503)
        return Verdict.allow(audit_annotations={
            "ledger-entry": f"{appended.chain}/{appended.seq}"})

    return handle
