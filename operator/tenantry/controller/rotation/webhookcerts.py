"""The WebhookCertificates target (pure): ask the webhook for a new serving certificate (and a
new CA when `spec.webhookCertificates.rotateCA` says so), then follow the Secret until the
certificates themselves show it happened.

The webhook owns its certificates and already rotates them with an overlap (`webhook.certs`):
a new CA joins the caBundle first, the serving certificate moves to it after the propagation
delay, the old CA stays trusted until it expires. So the operator makes no certificate and uses
no key (it can read them: RBAC has no metadata-only read; its code never decodes them): it asks,
through two annotations on Secret `tenantry-webhook-tls` (a merge patch with a
resourceVersion precondition; RBAC: get and patch on that one Secret), and the webhook, which
looks for requests every few seconds, rotates through its own code path and marks the request
served. One call of `decide` is one step:

1. **Start** (new trigger or due slot): the rotation goes into `status.webhookCertificates`
   with the serial and CA it starts from, then the handler annotates the Secret. A crash in
   between finds a rotation whose request the Secret lacks, and annotates it then.
2. **Requested**; with a CA, **AwaitingCaPropagation** once the new CA is in the bundle and
   the serving certificate still comes from the old one.
3. **Done** only when the Secret says it served the request *and* its certificates agree: the
   serving serial differs from the one the rotation started from and, with a CA, the serving
   certificate is signed by a CA other than the one it started from. The served annotation
   alone proves nothing (anyone who may patch the Secret can write it): a claim the
   certificates do not back is reported (Warning Event, ledger) and asked again under a new id.

Only certificates are read from the Secret (serials, fingerprints, notAfter), never its keys;
status, Events and ledger entries carry those and the request ids.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import datetime
import re
from collections.abc import Mapping, Sequence
from typing import Any

from cryptography import x509

from tenantry.controller import conditions
from tenantry.controller.rotation import plan, schedule
from tenantry.model import rotation
from tenantry.webhook import certs

TARGET = rotation.Target.WEBHOOK_CERTIFICATES
SECRET = certs.SECRET_NAME

WEBHOOK_SECRET_UNAVAILABLE = "WebhookSecretUnavailable"  # noqa: S105 - a reason
OWN_POLICY_NEEDED = "TargetNeedsOwnPolicy"
REQUESTED = "Requested"
AWAITING_CA_PROPAGATION = "AwaitingCaPropagation"
CLAIM_UNBACKED = "RotationClaimUnbacked"

# Ledger actions (the start and completion share plan's names).
CA_ADDED = "rotation.ca-added"
REQUESTED_AGAIN = "rotation.requested-again"

_UNSAFE = re.compile(r"[^A-Za-z0-9._:/+=-]")


def applies(spec: rotation.RotationPolicySpec) -> bool:
    """Whether a policy is a WebhookCertificates policy (decided here rather than by `plan`)."""
    return TARGET in spec.targets


@dataclasses.dataclass(frozen=True)
class WebhookTls:
    """The webhook's Secret as the operator reads it: certificates' public facts and the
    rotation annotations, never key bytes."""

    resource_version: str
    serving_serial: str
    serving_not_after: str
    serving_by_ca: bool
    """Whether the serving certificate is signed by the signing CA (`ca`)."""
    ca: str
    """Fingerprint of the CA that signs serving certificates."""
    trusted: tuple[str, ...]
    """Fingerprints of the caBundle, the signing CA first."""
    requested: str | None
    served: str | None


@dataclasses.dataclass(frozen=True)
class RotationRequest:
    """The Secret write to make: annotate `request`, only if it is still at `resource_version`."""

    request: str
    rotate_ca: bool
    resource_version: str

    def patch(self) -> dict[str, Any]:
        """The JSON merge patch: the request annotations alone (no `data`: nothing secret)."""
        return {"metadata": {"resourceVersion": self.resource_version, "annotations": {
            certs.REQUESTED_ANNOTATION: self.request,
            certs.ROTATE_CA_ANNOTATION: "true" if self.rotate_ca else None}}}


def _certificate(data: Mapping[str, Any], field: str) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(base64.b64decode(str(data[field]), validate=True))
    except KeyError:
        raise ValueError(f"it has no {field}") from None
    except (binascii.Error, ValueError):
        raise ValueError(f"its {field} is not a PEM certificate") from None


def facts(secret: Mapping[str, Any]) -> WebhookTls:
    """The public facts of the webhook's Secret as the API returns it; ValueError (naming the
    field) if it holds no certificates to judge by. Its keys are not even decoded."""
    data = secret.get("data") or {}
    meta = secret.get("metadata") or {}
    serving = _certificate(data, certs.TLS_CERT)
    signer = _certificate(data, certs.SIGNER_CERT)
    try:
        bundle = certs.split_pems(base64.b64decode(str(data.get(certs.TRUSTED_CAS, "")),
                                                   validate=True))
        trusted = tuple(certs.fingerprint(x509.load_pem_x509_certificate(p)) for p in bundle)
    except (binascii.Error, ValueError):
        raise ValueError(f"its {certs.TRUSTED_CAS} is not a PEM bundle") from None
    annotations = meta.get("annotations") or {}
    return WebhookTls(
        resource_version=str(meta.get("resourceVersion") or ""),
        serving_serial=certs.serial_text(serving),
        serving_not_after=schedule.format_time(serving.not_valid_after_utc),
        serving_by_ca=certs.issued_by(serving, signer), ca=certs.fingerprint(signer),
        trusted=trusted, requested=certs.request_id(annotations.get(certs.REQUESTED_ANNOTATION)),
        served=certs.request_id(annotations.get(certs.SERVED_ANNOTATION)))


def request_id(rotation_id: str, now: datetime.datetime, attempt: int = 1) -> str:
    """The id annotated for a rotation: its own id made annotation- and log-safe, the time
    (a policy re-created with the same trigger is a new request) and the attempt."""
    stamp = now.strftime("%Y%m%dT%H%M%SZ")
    return f"{_UNSAFE.sub('_', rotation_id)[:200]}@{stamp}" + (
        f"#{attempt}" if attempt > 1 else "")


def problem(world: plan.World, tls: WebhookTls | None,
            tls_problem: str) -> tuple[str, str] | None:
    """(reason, message) of what keeps a WebhookCertificates policy from rotating, or None."""
    if world.namespace != world.operator_namespace:
        return plan.TARGET_NOT_ALLOWED, (
            f"spec.targets names {TARGET.value}: platform-wide targets may be rotated only by a "
            f"RotationPolicy in Tenantry's namespace {world.operator_namespace}, not in "
            f"{world.namespace}; keep only Credentials here")
    others = sorted(t.value for t in world.spec.targets if t is not TARGET)
    if others:
        return OWN_POLICY_NEEDED, (
            f"spec.targets names {', '.join(others)} next to {TARGET.value}: rotate the "
            f"webhook's certificates in a policy of their own (spec.targets: [{TARGET.value}])")
    if world.spec.schedule is not None and (why := schedule.problem(world.spec.schedule)):
        return plan.INVALID_SCHEDULE, why
    for other in sorted(world.others, key=lambda o: (o.created, o.name)):
        if (other.created, other.name) < (world.created, world.name) \
                and TARGET.value in other.targets:
            return plan.CONFLICT, (
                f"RotationPolicy {world.namespace}/{other.name} (older) already rotates the "
                "webhook's certificates: two policies may not rotate the same target; delete "
                "one of them")
    if tls is None:
        return WEBHOOK_SECRET_UNAVAILABLE, (
            f"the webhook's certificates cannot be read, so no rotation can be asked for or "
            f"checked: {tls_problem}")
    return None


def _where(world: plan.World) -> str:
    return f"Secret {world.operator_namespace}/{SECRET}"


def _begin(world: plan.World, tls: WebhookTls, cause: str, id_: str,
           decision: plan.Decision) -> rotation.WebhookCertRotation:
    options = world.spec.webhook_certificates
    rotate_ca = bool(options and options.rotate_ca)
    active = rotation.WebhookCertRotation(
        id=id_[:192], request=request_id(id_, world.now),
        started_time=schedule.format_time(world.now), rotate_ca=rotate_ca,
        from_serial=tls.serving_serial, from_ca=tls.ca)
    what = "a new CA and serving certificate" if rotate_ca else "a new serving certificate"
    decision.events.append(("Normal", "RotationStarted", (
        f"{cause}: asking the webhook for {what} (serving certificate now serial "
        f"{tls.serving_serial}, CA {tls.ca})")))
    decision.audit.append((plan.STARTED, {
        "rotation": active.id, "cause": cause, "target": TARGET.value, "rotateCA": rotate_ca,
        "request": active.request, "fromSerial": tls.serving_serial, "fromCA": tls.ca}))
    return active


def _switched(active: rotation.WebhookCertRotation, tls: WebhookTls) -> bool:
    """Whether the certificates show the rotation: a new serving serial and, with a CA, one
    signed by a CA it did not start from (the signing CA, which heads the bundle)."""
    if tls.serving_serial == active.from_serial:
        return False
    return not active.rotate_ca or (tls.ca != active.from_ca and tls.serving_by_ca
                                    and tls.trusted[:1] == (tls.ca,))


def _follow(world: plan.World, tls: WebhookTls, active: rotation.WebhookCertRotation,
            decision: plan.Decision) -> tuple[str, str] | None:
    """Carry the rotation on: (Rotating reason, message) while it waits, None once done."""
    if active.rotate_ca and tls.ca != active.from_ca \
            and active.step is rotation.WebhookCertStep.REQUESTED:
        # Reported even when the step after it is seen too (the webhook can be quicker than
        # the operator's next look): every step has its Event and ledger entry.
        active.step = rotation.WebhookCertStep.AWAITING_CA_PROPAGATION
        decision.events.append(("Normal", "CaAdded", (
            f"new webhook CA {tls.ca} is in the caBundle next to {active.from_ca}; the serving "
            "certificate moves to it once every apiserver has had time to see it (the "
            "webhook's --ca-propagation)")))
        decision.audit.append((CA_ADDED, {"rotation": active.id, "fromCA": active.from_ca,
                                          "toCA": tls.ca, "trusted": list(tls.trusted)}))
    if tls.served == active.request and _switched(active, tls):
        return None
    if tls.served == active.request:
        claimed = active.request
        active.requests += 1
        active.request = request_id(active.id, world.now, active.requests)
        still = (f"serving certificate serial {tls.serving_serial}"
                 + (f", signed by CA {tls.ca}" if active.rotate_ca else ""))
        decision.events.append(("Warning", CLAIM_UNBACKED, (
            f"{_where(world)} says it served request {claimed} (annotation "
            f"{certs.SERVED_ANNOTATION}), but it still holds the {still} the rotation started "
            f"from: asking the webhook again as {active.request}")))
        decision.audit.append((REQUESTED_AGAIN, {
            "rotation": active.id, "claimed": claimed, "request": active.request,
            "servingSerial": tls.serving_serial, "ca": tls.ca}))
    if active.step is rotation.WebhookCertStep.AWAITING_CA_PROPAGATION:
        return AWAITING_CA_PROPAGATION, (
            f"new CA {tls.ca} is in the caBundle (with {len(tls.trusted) - 1} older one(s)); "
            f"the serving certificate (serial {tls.serving_serial}) moves to it after the "
            "webhook's CA propagation delay")
    what = "a new CA and serving certificate" if active.rotate_ca else \
        "a new serving certificate"
    return REQUESTED, (
        f"asked the webhook for {what} (annotation {certs.REQUESTED_ANNOTATION}="
        f"{active.request} on {_where(world)}; it looks for requests every few seconds); "
        f"serving certificate now serial {tls.serving_serial}")


def _complete(world: plan.World, tls: WebhookTls, active: rotation.WebhookCertRotation,
              decision: plan.Decision) -> None:
    status = decision.status
    summary = (f"serving certificate serial {active.from_serial} -> {tls.serving_serial}"
               + (f"; CA {active.from_ca} -> {tls.ca} (the old CA stays trusted until it "
                  "expires)" if active.rotate_ca else f" (CA {tls.ca} unchanged)"))
    record = rotation.RotationRecord(
        time=schedule.format_time(world.now), target=TARGET, from_version=active.from_serial,
        to_version=tls.serving_serial, result="Succeeded", message=summary[:1024])
    status.history = [record, *status.history][:plan.HISTORY_LIMIT]
    status.last_rotation_time = record.time
    decision.events.append(("Normal", "RotationCompleted", f"rotation {active.id}: {summary}"))
    decision.audit.append((plan.COMPLETED, {
        "rotation": active.id, "result": "Succeeded", "target": TARGET.value,
        "request": active.request, "fromSerial": active.from_serial,
        "toSerial": tls.serving_serial, "fromCA": active.from_ca, "toCA": tls.ca,
        "trusted": list(tls.trusted)}))


def decide(world: plan.World, tls: WebhookTls | None, tls_problem: str = ""
           ) -> tuple[plan.Decision, RotationRequest | None]:
    """The next step of a WebhookCertificates policy, and the Secret annotation to write (None:
    none)."""
    none: Sequence[plan.CredentialInfo] = ()
    decision, due = plan.opening(world, none, None, ())
    status = decision.status
    trouble = problem(world, tls, tls_problem)
    if trouble is not None:
        return plan.refuse(world, decision, trouble, due), None
    assert tls is not None
    generation = world.generation
    web = status.webhook_certificates = (
        status.webhook_certificates or rotation.WebhookCertificatesStatus()).model_copy(deep=True)
    web.serving_serial, web.serving_not_after = tls.serving_serial, tls.serving_not_after
    web.ca, web.trusted = tls.ca, list(tls.trusted)
    status.current_versions = {TARGET.value: tls.serving_serial}

    if web.rotation is None:
        if (found := plan.due_start(world, decision, due)) is not None:
            web.rotation = _begin(world, tls, found[0], found[1], decision)
    else:
        plan.skip_due_slot(world, decision, due)

    ask: RotationRequest | None = None
    active = web.rotation
    waiting = None if active is None else _follow(world, tls, active, decision)
    if active is not None and waiting is None:
        _complete(world, tls, active, decision)
        web.rotation = None
    if active is not None and waiting is not None:
        if tls.requested != active.request:
            ask = RotationRequest(active.request, active.rotate_ca, tls.resource_version)
        reason, message = waiting
        updates = [
            conditions.condition("Ready", "False", plan.IN_PROGRESS, message,
                                 generation=generation),
            conditions.condition("Rotating", "True", reason, f"rotation {active.id}: {message}",
                                 generation=generation)]
    else:
        updates = plan.rotation_conditions(world, status)
    status.conditions = plan.merged_conditions(world, updates)
    return decision, ask
