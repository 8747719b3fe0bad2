"""The WebhookCertificates target (pure): ask the webhook for a new serving certificate (and a
new CA when `spec.webhookCertificates.rotateCA` says so), then follow the webhook's published
certificates until they themselves show it happened.

The webhook owns its certificates and already rotates them with an overlap (`webhook.certs`):
a new CA joins the caBundle first, the serving certificate moves to it after the propagation
delay, the old CA stays trusted until it expires. So the operator makes no certificate and
cannot even read a key: it never touches the webhook's Secret `tenantry-webhook-tls` (RBAC has
no metadata-only read of a Secret, and `ca-signer.key` would let a stolen operator token sign
serving certificates the apiserver trusts). Both sides meet in ConfigMap
`tenantry-webhook-rotation`, which the webhook makes at start: the operator writes the request
keys (`rotate-requested`, `rotate-ca`; a merge patch with a resourceVersion precondition; RBAC:
get and patch on that one ConfigMap), and the webhook, which looks for requests every few
seconds, rotates through its own code path and publishes the facts there: the request it served
(`rotated-for`) and its certificates (public PEMs). One call of `decide` is one step:

1. **Start** (new trigger or due slot): the rotation goes into `status.webhookCertificates`
   with the serial and CA it starts from, then the handler writes the request. A crash in
   between finds a rotation whose request the ConfigMap lacks, and writes it then.
2. **Requested**; with a CA, **AwaitingCaPropagation** once the new CA is in the bundle and
   the serving certificate still comes from the old one.
3. **Done** only when the webhook says it served the request *and* its certificates agree: the
   serving serial differs from the one the rotation started from and, with a CA, the serving
   certificate is signed by a CA other than the one it started from, which heads the bundle.
   Serials, fingerprints and signatures are computed here from the certificates, never read
   as numbers. The served mark alone proves nothing: only the webhook's identity may write the
   facts (manifests/webhook/operator-requests-only.yaml), and even so a claim the certificates
   do not back is reported (Warning Event, ledger) and asked again under a new id.

Status, Events and ledger entries carry serials, fingerprints and request ids, nothing else.
"""

from __future__ import annotations

import dataclasses
import datetime
import re
from collections.abc import Mapping, Sequence
from typing import Any

from cryptography import x509

from tenantry.controller import conditions
from tenantry.controller.rotation import plan
from tenantry.model import common, rotation
from tenantry.webhook import certs

TARGET = rotation.Target.WEBHOOK_CERTIFICATES
CONFIGMAP = certs.ROTATION_CONFIGMAP

WEBHOOK_ROTATION_UNAVAILABLE = "WebhookRotationUnavailable"
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
    """The rotation ConfigMap as the operator reads it: the facts the webhook published
    (computed here from its public certificates) and the request keys."""

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
    """The ConfigMap write to make: request `request`, only if it is still at
    `resource_version`."""

    request: str
    rotate_ca: bool
    resource_version: str

    def patch(self) -> dict[str, Any]:
        """The JSON merge patch: the request keys alone (the facts are the webhook's)."""
        return {"metadata": {"resourceVersion": self.resource_version}, "data": {
            certs.REQUESTED_KEY: self.request,
            certs.ROTATE_CA_KEY: "true" if self.rotate_ca else None}}


def _certificate(data: Mapping[str, Any], field: str) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(str(data[field]).encode())
    except KeyError:
        raise ValueError(f"it has no {field} (the webhook publishes its certificates there "
                         "at start)") from None
    except ValueError:
        raise ValueError(f"its {field} is not a PEM certificate") from None


def facts(configmap: Mapping[str, Any]) -> WebhookTls:
    """The public facts of the rotation ConfigMap as the API returns it; ValueError (naming the
    field) if it holds no certificates to judge by."""
    data = configmap.get("data") or {}
    meta = configmap.get("metadata") or {}
    serving = _certificate(data, certs.TLS_CERT)
    signer = _certificate(data, certs.SIGNER_CERT)
    try:
        bundle = certs.split_pems(str(data.get(certs.TRUSTED_CAS, "")).encode())
        trusted = tuple(certs.fingerprint(x509.load_pem_x509_certificate(p)) for p in bundle)
    except ValueError:
        raise ValueError(f"its {certs.TRUSTED_CAS} is not a PEM bundle") from None
    if not trusted:
        raise ValueError(f"its {certs.TRUSTED_CAS} holds no certificate")
    return WebhookTls(
        resource_version=str(meta.get("resourceVersion") or ""),
        serving_serial=certs.serial_text(serving),
        serving_not_after=common.format_time(serving.not_valid_after_utc),
        serving_by_ca=certs.issued_by(serving, signer), ca=certs.fingerprint(signer),
        trusted=trusted, requested=certs.request_id(data.get(certs.REQUESTED_KEY)),
        served=certs.request_id(data.get(certs.SERVED_KEY)))


def request_id(rotation_id: str, now: datetime.datetime, attempt: int = 1) -> str:
    """The id requested for a rotation: its own id made log-safe, the time
    (a policy re-created with the same trigger is a new request) and the attempt."""
    stamp = now.strftime("%Y%m%dT%H%M%SZ")
    return f"{_UNSAFE.sub('_', rotation_id)[:200]}@{stamp}" + (
        f"#{attempt}" if attempt > 1 else "")


def problem(world: plan.World, tls: WebhookTls | None,
            tls_problem: str) -> tuple[str, str] | None:
    """(reason, message) of what keeps a WebhookCertificates policy from rotating, or None."""
    if outside := plan.platform_namespace_problem(world, TARGET):
        return outside
    others = sorted(t.value for t in world.spec.targets if t is not TARGET)
    if others:
        return OWN_POLICY_NEEDED, (
            f"spec.targets names {', '.join(others)} next to {TARGET.value}: rotate the "
            f"webhook's certificates in a policy of their own (spec.targets: [{TARGET.value}])")
    if trouble := plan.schedule_or_older_policy_problem(world, TARGET,
                                                        "the webhook's certificates"):
        return trouble
    if tls is None:
        return WEBHOOK_ROTATION_UNAVAILABLE, (
            f"the webhook's certificates cannot be read, so no rotation can be asked for or "
            f"checked: {tls_problem}")
    return None


def _where(world: plan.World) -> str:
    return f"ConfigMap {world.operator_namespace}/{CONFIGMAP}"


def _begin(world: plan.World, tls: WebhookTls, cause: str, id_: str,
           decision: plan.Decision) -> rotation.WebhookCertRotation:
    options = world.spec.webhook_certificates
    rotate_ca = bool(options and options.rotate_ca)
    active = rotation.WebhookCertRotation(
        id=id_[:192], request=request_id(id_, world.now),
        started_time=common.format_time(world.now), rotate_ca=rotate_ca,
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
            f"{_where(world)} says it served request {claimed} (key "
            f"{certs.SERVED_KEY}), but it still holds the {still} the rotation started "
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
        f"asked the webhook for {what} ({certs.REQUESTED_KEY}="
        f"{active.request} on {_where(world)}; it looks for requests every few seconds); "
        f"serving certificate now serial {tls.serving_serial}")


def _complete(world: plan.World, tls: WebhookTls, active: rotation.WebhookCertRotation,
              decision: plan.Decision) -> None:
    status = decision.status
    summary = (f"serving certificate serial {active.from_serial} -> {tls.serving_serial}"
               + (f"; CA {active.from_ca} -> {tls.ca} (the old CA stays trusted until it "
                  "expires)" if active.rotate_ca else f" (CA {tls.ca} unchanged)"))
    record = rotation.RotationRecord(
        time=common.format_time(world.now), target=TARGET, from_version=active.from_serial,
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
    """The next step of a WebhookCertificates policy, and the request to write in the rotation
    ConfigMap (None: none)."""
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
