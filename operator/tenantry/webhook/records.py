"""Where admission decisions go once made: the hook the audit ledger plugs into.

Every decision about an object in a tenant namespace becomes an `AdmissionRecord`: who asked,
what, where, under which tenant and mode, the verdict, and every violation and exemption that
applied (Audit mode admits silently, so this record is the only trace of what it let through).
The server hands each record to every `DecisionSink` registered with its `Recorder`.

A sink's `record` is called on the request path: it must return at once and never raise (a
ledger sink queues the record, or spools it to disk, and writes it in the background). Records
of dry-run requests carry `dry_run=True`: nothing was stored, and a sink may skip them. A record
holds no object body, only names and field paths, so it carries nothing secret.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Sequence
from typing import Any, Protocol

from tenantry.admission import policy
from tenantry.admission.policy import Exempted
from tenantry.admission.violation import Violation
from tenantry.ledger import events
from tenantry.ledger import recorder as ledger_recorder
from tenantry.webhook.review import AdmissionRequest, Verdict

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True, slots=True)
class AdmissionRecord:
    """One admission decision in a tenant namespace."""

    webhook: str
    """The webhook (route) name, e.g. workloads.admission.tenantry.dev."""
    uid: str
    """The AdmissionReview uid (matches the apiserver's audit log)."""
    operation: str
    kind: str
    """Kind.apiVersion of the object, e.g. Deployment.apps/v1."""
    sub_resource: str
    namespace: str
    name: str
    username: str
    groups: tuple[str, ...]
    tenant: str | None
    mode: str
    """The tenant's podSecurity mode (Deny, Warn, Audit), or "" when none applied."""
    allowed: bool
    dry_run: bool
    violations: tuple[Violation, ...]
    """Violations left after exemptions (refused in Deny mode, admitted in Warn and Audit)."""
    exempted: tuple[Exempted, ...]
    """Violations an exemption let through, with that exemption."""
    message: str = ""
    """The refusal message, when refused."""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (camelCase), e.g. for a ledger event's `changes`."""
        return {
            "webhook": self.webhook,
            "uid": self.uid,
            "operation": self.operation,
            "kind": self.kind,
            "subResource": self.sub_resource,
            "namespace": self.namespace,
            "name": self.name,
            "user": self.username,
            "groups": list(self.groups),
            "tenant": self.tenant,
            "mode": self.mode,
            "allowed": self.allowed,
            "dryRun": self.dry_run,
            "violations": [v.to_dict() for v in self.violations],
            "exempted": [{**e.violation.to_dict(), "exemption": e.exemption.wire()}
                         for e in self.exempted],
            "message": self.message,
        }


class DecisionSink(Protocol):
    """Receives admission records; `record` must return promptly and never raise."""

    def record(self, record: AdmissionRecord) -> None: ...


class LogSink:
    """Writes one log line per decision: JSON after a fixed prefix, for grep and for humans.

    Refusals and anything with a violation or an exemption are logged at INFO; clean admissions,
    the bulk of the traffic, at DEBUG (`--verbose`).
    """

    def __init__(self, log: logging.Logger | None = None) -> None:
        self._log = log or logger

    def record(self, record: AdmissionRecord) -> None:
        clean = record.allowed and not record.violations and not record.exempted
        level = logging.DEBUG if clean else logging.INFO
        if not self._log.isEnabledFor(level):
            return
        verdict = "allowed" if record.allowed else "denied"
        self._log.log(level, "admission %s %s %s/%s (tenant %s, mode %s, %d violation(s), "
                       "%d exempt)%s: %s",
                       verdict, record.kind, record.namespace, record.name, record.tenant,
                       record.mode or "-", len(record.violations), len(record.exempted),
                       " [dry run]" if record.dry_run else "",
                       json.dumps(record.to_dict(), separators=(",", ":")))


class Recorder:
    """Fans each record out to the registered sinks, isolating the request from their faults."""

    def __init__(self, sinks: Sequence[DecisionSink] = ()) -> None:
        self._sinks: list[DecisionSink] = list(sinks)

    def add(self, sink: DecisionSink) -> None:
        """Register a sink (the audit ledger, a test probe...)."""
        self._sinks.append(sink)

    def record(self, record: AdmissionRecord) -> None:
        for sink in self._sinks:
            try:
                sink.record(record)
            except Exception:
                logger.exception("decision sink %r failed; the decision stands", sink)


def of_request(webhook: str, request: AdmissionRequest, *, tenant: str | None, mode: str,
               verdict: Verdict, decision: policy.Decision | None = None) -> AdmissionRecord:
    """The record of `verdict` on `request` (with the policy decision behind it, if any)."""
    return AdmissionRecord(
        webhook=webhook,
        uid=request.uid,
        operation=request.operation,
        kind=str(request.kind),
        sub_resource=request.sub_resource,
        namespace=request.namespace,
        name=request.display_name,
        username=request.user.username,
        groups=request.user.groups,
        tenant=tenant,
        mode=mode,
        allowed=verdict.allowed,
        dry_run=request.dry_run,
        violations=decision.violations if decision else (),
        exempted=decision.exempted if decision else (),
        message=verdict.message,
    )


def ledger_event(record: AdmissionRecord) -> events.AuditEvent | None:
    """The ledger entry for a decision worth keeping (pure), or None.

    Kept: every refusal, every admission with violations (Warn and Audit mode let them through,
    so the ledger is their trace) and every exemption used. Clean admissions (the bulk of the
    traffic) and dry runs are not recorded.

    The action names Tenantry's verdict (`admission.deny`, `.warn`, `.audit`, `.exempt`) and
    `changes.decision` says whose it is: `admitted-by-tenantry` or `refused-by-tenantry`. Other
    admission steps run after this webhook and may still refuse what it let through, so an entry
    never claims the cluster admitted anything.
    """
    if record.dry_run or (record.allowed and not record.violations and not record.exempted):
        return None
    if not record.allowed:
        outcome = "deny"
    elif record.violations:
        outcome = (record.mode or events.ADMITTED_BY_TENANTRY).lower()
    else:
        outcome = "exempt"
    username = record.username or "system:anonymous"
    return events.AuditEvent(
        tenant=record.tenant, actor=username,
        actor_kind=events.actor_kind_of(username),
        identity=events.kubernetes_identity(username, record.groups),
        action=f"admission.{outcome}",
        resource_kind=record.kind, resource_namespace=record.namespace or None,
        resource_name=record.name,
        changes={"webhook": record.webhook, "operation": record.operation, "mode": record.mode,
                 "allowed": record.allowed,
                 "decision": (events.ADMITTED_BY_TENANTRY if record.allowed
                              else events.REFUSED_BY_TENANTRY),
                 "violations": [{"rule": v.rule_id, "fieldPath": v.field_path}
                                for v in record.violations],
                 "exempted": [{"rule": e.violation.rule_id, "fieldPath": e.violation.field_path,
                               "exemption": e.exemption.wire()} for e in record.exempted]},
        request_id=record.uid or None, component="admission")


class LedgerSink:
    """Sends decisions worth keeping to the audit ledger, through a durable spool (see
    `tenantry.ledger.recorder.Recorder`): never blocks on, nor fails with, the database."""

    def __init__(self, recorder: ledger_recorder.Recorder) -> None:
        self._recorder = recorder

    def record(self, record: AdmissionRecord) -> None:
        event = ledger_event(record)
        if event is not None:
            self._recorder.record_now(event)
