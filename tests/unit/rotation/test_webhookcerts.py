"""The WebhookCertificates planner, step by step, against the webhook's own certificate code.

`Pair` holds the webhook's Secret and the rotation ConfigMap as the apiserver would: the
operator's steps read only the ConfigMap and write its request keys (their merge patch,
resourceVersion-checked), the webhook's resyncs run the real `certs.plan` over the Secret and the
request and write both back the way `tls.CertKeeper` does (the Secret; then the ConfigMap's facts,
the request keys kept). So these tests show the whole protocol: asked, served, judged by the
certificates, and what a forged `rotated-for` gets (nothing but a Warning and a new request).
"""

from __future__ import annotations

import base64
import copy
import datetime
import json
from typing import Any

import pytest

from tenantry.controller.rotation import cli, plan, webhookcerts
from tenantry.model import rotation
from tenantry.webhook import certs
from tests.unit.rotation.test_plan import _apply_merge_patch

UTC = datetime.UTC
NOW = datetime.datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
SECOND = datetime.timedelta(seconds=1)
NAMES = ("tenantry-webhook.tenantry-system.svc",)
POLICY = certs.CertPolicy(ca_propagation=datetime.timedelta(minutes=5))
OPERATOR_NS = "tenantry-system"


def _spec(**fields: Any) -> rotation.RotationPolicySpec:
    fields.setdefault("targets", ["WebhookCertificates"])
    if "schedule" not in fields:
        fields.setdefault("trigger", "t1")
    return rotation.RotationPolicySpec.model_validate(fields)


class Pair:
    """A policy's stored status, the webhook's Secret and the rotation ConfigMap."""

    def __init__(self) -> None:
        self.status = rotation.RotationPolicyStatus()
        self.now = NOW
        self.version = 1
        state = certs.plan(NOW, None, NAMES, POLICY).state
        self.secret: dict[str, Any] = certs.to_secret(state, name=certs.SECRET_NAME,
                                                      namespace=OPERATOR_NS)
        self.rotation: dict[str, Any] = certs.rotation_configmap(
            state, name=certs.ROTATION_CONFIGMAP, namespace=OPERATOR_NS)
        self._stamp(self.secret)
        self._stamp(self.rotation)
        self.patches: list[dict[str, Any]] = []

    def _stamp(self, obj: dict[str, Any]) -> None:
        self.version += 1
        obj["metadata"]["resourceVersion"] = str(self.version)

    @property
    def data(self) -> dict[str, str]:
        """The rotation ConfigMap's data."""
        return dict(self.rotation.get("data") or {})

    def world(self, spec: rotation.RotationPolicySpec, *, namespace: str = OPERATOR_NS,
              others: tuple[plan.OtherPolicy, ...] = (), generation: int = 1) -> plan.World:
        return plan.World(namespace=namespace, name="webhook", generation=generation,
                          created="2026-11-01T00:00:00Z", spec=spec, status=self.status,
                          credentials=[], others=others, primary="v1", now=self.now,
                          operator_namespace=OPERATOR_NS)

    def step(self, spec: rotation.RotationPolicySpec, *, apply: bool = True,
             tls: webhookcerts.WebhookTls | str | None = "read", **world: Any
             ) -> tuple[plan.Decision, webhookcerts.RotationRequest | None]:
        """One operator step; `apply=False`: it dies before writing the request."""
        facts = webhookcerts.facts(self.rotation) if tls == "read" else tls
        assert not isinstance(facts, str)
        decision, ask = webhookcerts.decide(self.world(spec, **world), facts,
                                            "ConfigMap tenantry-system/tenantry-webhook-rotation "
                                            "does not exist")
        stored = json.loads(json.dumps(self.status.wire()))
        self.status = rotation.RotationPolicyStatus.model_validate(
            _apply_merge_patch(stored, json.loads(json.dumps(decision.status_patch()))))
        assert self.status == decision.status
        if ask is not None and apply:
            patch = ask.patch()
            self.patches.append(patch)
            assert patch["metadata"]["resourceVersion"] == self.rotation["metadata"][
                "resourceVersion"], "a stale write would be refused"
            assert set(patch) == {"metadata", "data"} and set(patch["metadata"]) == {
                "resourceVersion"}, "nothing but the request"
            assert set(patch["data"]) <= set(certs.REQUEST_KEYS)
            self.rotation = _apply_merge_patch(self.rotation, {"data": patch["data"]})
            self._stamp(self.rotation)
        return decision, ask

    def resync(self, after: datetime.timedelta = SECOND) -> certs.Plan:
        """One webhook resync, `after` later: plan over the Secret and the request, write the
        Secret, then publish the facts (the operator's request keys kept, as server-side apply
        keeps another manager's fields)."""
        self.now += after
        state, problem = certs.from_secret(self.secret)
        assert state is not None, problem
        planned = certs.plan(self.now, certs.with_request(state, self.rotation), NAMES, POLICY)
        if planned.changed:
            written = certs.to_secret(planned.state, name=certs.SECRET_NAME,
                                      namespace=OPERATOR_NS)
            metadata = {**self.secret["metadata"],
                        "annotations": written["metadata"]["annotations"]}
            self.secret = {**written, "metadata": metadata}
            self._stamp(self.secret)
        facts = certs.rotation_configmap(planned.state, name=certs.ROTATION_CONFIGMAP,
                                         namespace=OPERATOR_NS)["data"]
        requests = {k: v for k, v in self.data.items() if k in certs.REQUEST_KEYS}
        if {k: v for k, v in self.data.items() if k not in certs.REQUEST_KEYS} != facts:
            self.rotation = {**self.rotation, "data": {**requests, **facts}}
            self._stamp(self.rotation)
        return planned

    def serving_serial(self) -> str:
        state, _ = certs.from_secret(self.secret)
        assert state is not None
        return certs.serial_text(state.serving.cert)

    def key_texts(self) -> list[str]:
        """Every private key of the Secret, as PEM text and base64: what must never leak."""
        data = self.secret["data"]
        texts = []
        for field in (certs.TLS_KEY, certs.SIGNER_KEY):
            pem = base64.b64decode(data[field]).decode()
            body = "".join(pem.splitlines()[1:-1])
            texts += [data[field], body[:40], body[-40:]]
        return texts


def _conditions(status: rotation.RotationPolicyStatus) -> dict[str, Any]:
    return {c.type: c for c in status.conditions}


def _no_keys(pair: Pair, *decisions: plan.Decision) -> None:
    everything = json.dumps([pair.status.wire(), [d.events for d in decisions],
                             [d.audit for d in decisions], pair.patches, pair.rotation])
    assert "PRIVATE KEY" not in everything
    for text in pair.key_texts():
        assert text not in everything


def test_a_trigger_gets_a_new_serving_certificate_and_reports_it() -> None:
    pair = Pair()
    before = pair.serving_serial()
    first, ask = pair.step(_spec())
    assert ask is not None and ask.request.startswith("trigger:t1@")
    assert pair.data[certs.REQUESTED_KEY] == ask.request
    assert certs.ROTATE_CA_KEY not in pair.data
    ready, rotating = _conditions(pair.status)["Ready"], _conditions(pair.status)["Rotating"]
    assert (ready.status, ready.reason) == ("False", plan.IN_PROGRESS)
    assert (rotating.status, rotating.reason) == ("True", webhookcerts.REQUESTED)
    assert f"rotate-requested={ask.request}" in rotating.message
    assert "ConfigMap tenantry-system/tenantry-webhook-rotation" in rotating.message
    assert pair.status.last_handled_trigger == "t1"
    assert [a for a, _ in first.audit] == [plan.STARTED]
    assert first.audit[0][1]["fromSerial"] == before

    # Nothing served yet: the next step waits and asks nothing new.
    waiting, again = pair.step(_spec())
    assert again is None and waiting.events == [] and waiting.audit == []

    served = pair.resync()
    assert any("served" in r for r in served.reasons)
    after = pair.serving_serial()
    assert after != before
    done, ask = pair.step(_spec())
    assert ask is None
    ready = _conditions(pair.status)["Ready"]
    assert (ready.status, ready.reason) == ("True", plan.SUCCEEDED)
    assert _conditions(pair.status)["Rotating"].status == "False"
    record = pair.status.history[0]
    assert (record.target, record.from_version, record.to_version, record.result) == (
        rotation.Target.WEBHOOK_CERTIFICATES, before, after, "Succeeded")
    assert "unchanged" in record.message
    assert pair.status.current_versions == {"WebhookCertificates": after}
    web = pair.status.webhook_certificates
    assert web is not None and web.rotation is None and web.serving_serial == after
    assert [(t, r) for t, r, _ in first.events + done.events] == [
        ("Normal", "RotationStarted"), ("Normal", "RotationCompleted")]
    assert [a for a, _ in done.audit] == [plan.COMPLETED]
    assert done.audit[0][1]["toSerial"] == after
    _no_keys(pair, first, done)
    # The same trigger again does nothing.
    idle, ask = pair.step(_spec())
    assert ask is None and idle.events == [] and pair.serving_serial() == after


def test_a_ca_rotation_waits_for_propagation_and_keeps_the_old_ca_trusted() -> None:
    pair = Pair()
    spec = _spec(webhookCertificates={"rotateCA": True})
    before_serial = pair.serving_serial()
    first, ask = pair.step(spec)
    assert ask is not None and ask.rotate_ca
    assert pair.data[certs.ROTATE_CA_KEY] == "true"
    web = pair.status.webhook_certificates
    assert web is not None
    old_ca = web.ca

    pair.resync()  # the webhook makes a CA; the serving certificate stays
    added, _ = pair.step(spec)
    web = pair.status.webhook_certificates
    assert web is not None and web.ca != old_ca and web.trusted == [web.ca, old_ca]
    assert pair.serving_serial() == before_serial
    rotating = _conditions(pair.status)["Rotating"]
    assert (rotating.status, rotating.reason) == ("True", webhookcerts.AWAITING_CA_PROPAGATION)
    assert [(t, r) for t, r, _ in added.events] == [("Normal", "CaAdded")]
    assert [a for a, _ in added.audit] == [webhookcerts.CA_ADDED]

    pair.resync(datetime.timedelta(minutes=1))  # still within propagation: nothing
    waiting, _ = pair.step(spec)
    assert waiting.events == [] and _conditions(pair.status)["Rotating"].status == "True"

    pair.resync(datetime.timedelta(minutes=5))  # propagated: the serving certificate moves
    done, _ = pair.step(spec)
    assert (_conditions(pair.status)["Ready"].reason) == plan.SUCCEEDED
    record = pair.status.history[0]
    assert record.to_version == pair.serving_serial() != before_serial
    assert f"CA {old_ca} -> {web.ca}" in record.message
    assert pair.status.webhook_certificates is not None
    assert pair.status.webhook_certificates.trusted == [web.ca, old_ca]
    _no_keys(pair, first, added, done)


def test_a_forged_served_fact_is_not_success_and_is_asked_again() -> None:
    pair = Pair()
    before = pair.serving_serial()
    _, ask = pair.step(_spec())
    assert ask is not None
    # Someone who got past the admission policy claims, in the ConfigMap, that the request
    # was served; no certificate changed (the webhook has not resynced yet).
    pair.rotation["data"][certs.SERVED_KEY] = ask.request
    claimed, again = pair.step(_spec())
    assert _conditions(pair.status)["Ready"].reason == plan.IN_PROGRESS
    assert pair.status.history == []
    assert [(t, r) for t, r, _ in claimed.events] == [("Warning", webhookcerts.CLAIM_UNBACKED)]
    assert f"still holds the serving certificate serial {before}" in claimed.events[0][2]
    assert [a for a, _ in claimed.audit] == [webhookcerts.REQUESTED_AGAIN]
    assert again is not None and again.request.startswith("trigger:t1@")
    assert again.request.endswith("#2") and again.request != ask.request

    pair.resync()  # a new id: the webhook serves it, and its facts replace the forged mark
    assert pair.data[certs.SERVED_KEY] == again.request
    pair.step(_spec())
    assert _conditions(pair.status)["Ready"].reason == plan.SUCCEEDED
    assert pair.status.history[0].from_version == before != pair.serving_serial()


def test_a_forged_claim_of_a_ca_rotation_needs_a_new_ca_too() -> None:
    pair = Pair()
    spec = _spec(webhookCertificates={"rotateCA": True})
    _, ask = pair.step(spec)
    assert ask is not None
    # Without the CA: a new serving certificate from the old CA, and a claim.
    pair.rotation["data"].pop(certs.ROTATE_CA_KEY)
    pair.resync()
    assert pair.data[certs.SERVED_KEY] == ask.request
    claimed, again = pair.step(spec)
    assert [r for _, r, _ in claimed.events] == [webhookcerts.CLAIM_UNBACKED]
    assert again is not None and again.rotate_ca
    assert pair.status.history == []


def test_a_ca_step_the_operator_did_not_see_is_still_reported() -> None:
    pair = Pair()
    spec = _spec(webhookCertificates={"rotateCA": True})
    pair.step(spec)
    pair.resync()
    pair.resync(datetime.timedelta(minutes=6))  # CA, then the switch, before the next step
    done, _ = pair.step(spec)
    assert [r for _, r, _ in done.events] == ["CaAdded", "RotationCompleted"]
    assert [a for a, _ in done.audit] == [webhookcerts.CA_ADDED, plan.COMPLETED]
    assert _conditions(pair.status)["Ready"].reason == plan.SUCCEEDED


def test_an_operator_that_dies_before_writing_the_request_asks_on_its_next_step() -> None:
    pair = Pair()
    _, ask = pair.step(_spec(), apply=False)
    assert ask is not None
    assert certs.REQUESTED_KEY not in pair.data
    resumed, again = pair.step(_spec())
    assert again is not None and again.request == ask.request
    assert resumed.events == [], "the start is not reported twice"
    pair.resync()
    pair.step(_spec())
    assert _conditions(pair.status)["Ready"].reason == plan.SUCCEEDED


def test_a_due_schedule_slot_rotates() -> None:
    pair = Pair()
    spec = _spec(schedule="@hourly")
    _, ask = pair.step(spec)
    assert ask is None and pair.status.next_rotation_time == "2026-12-01T10:00:00Z"
    pair.now = datetime.datetime(2026, 12, 1, 10, 0, 1, tzinfo=UTC)
    _, ask = pair.step(spec)
    assert ask is not None and ask.request.startswith("schedule:2026-12-01T10:00:00Z@")
    assert pair.status.next_rotation_time == "2026-12-01T11:00:00Z"


def test_outside_tenantrys_namespace_nothing_is_read_or_asked() -> None:
    pair = Pair()
    decision, ask = pair.step(_spec(), tls=None, namespace="acme-prod")
    assert ask is None
    ready = _conditions(pair.status)["Ready"]
    assert (ready.status, ready.reason) == ("False", plan.TARGET_NOT_ALLOWED)
    assert "spec.targets names WebhookCertificates" in ready.message
    assert "only by a RotationPolicy in Tenantry's namespace tenantry-system" in ready.message
    assert "trigger 't1' waits until this is fixed" in ready.message
    assert pair.status.last_handled_trigger is None
    assert [(t, r) for t, r, _ in decision.events] == [("Warning", plan.TARGET_NOT_ALLOWED)]


@pytest.mark.parametrize(("targets", "reason"), [
    (["WebhookCertificates", "Credentials"], webhookcerts.OWN_POLICY_NEEDED),
    (["WebhookCertificates", "MasterKey"], webhookcerts.OWN_POLICY_NEEDED)])
def test_webhook_certificates_want_a_policy_of_their_own(targets: list[str],
                                                         reason: str) -> None:
    pair = Pair()
    _, ask = pair.step(_spec(targets=targets))
    assert ask is None
    ready = _conditions(pair.status)["Ready"]
    assert (ready.status, ready.reason) == ("False", reason)
    assert "spec.targets: [WebhookCertificates]" in ready.message


def test_two_policies_the_younger_reports_a_conflict() -> None:
    pair = Pair()
    older = plan.OtherPolicy("certs", "2026-10-01T00:00:00Z",
                             frozenset({"WebhookCertificates"}), None)
    _, ask = pair.step(_spec(), others=(older,))
    assert ask is None
    ready = _conditions(pair.status)["Ready"]
    assert (ready.status, ready.reason) == ("False", plan.CONFLICT)
    assert "RotationPolicy tenantry-system/certs (older) already rotates" in ready.message


def test_a_missing_configmap_keeps_the_trigger_pending() -> None:
    pair = Pair()
    _, ask = pair.step(_spec(), tls=None)
    assert ask is None
    ready = _conditions(pair.status)["Ready"]
    assert (ready.status, ready.reason) == ("False", webhookcerts.WEBHOOK_ROTATION_UNAVAILABLE)
    assert "ConfigMap tenantry-system/tenantry-webhook-rotation does not exist" in ready.message
    pair.step(_spec(), generation=1)
    assert pair.status.last_handled_trigger == "t1"


def test_facts_are_computed_from_the_published_certificates() -> None:
    pair = Pair()
    configmap = copy.deepcopy(pair.rotation)
    assert not set(configmap["data"]) & {certs.TLS_KEY, certs.SIGNER_KEY}, "no key published"
    facts = webhookcerts.facts(configmap)
    assert facts.serving_serial == pair.serving_serial()
    state, _ = certs.from_secret(pair.secret)
    assert state is not None and facts.ca == certs.fingerprint(state.ca.cert)
    assert facts.serving_by_ca and facts.trusted == (facts.ca,)
    assert facts.ca.startswith("sha256:") and len(facts.ca) == 71
    # A serving certificate the published CA did not sign is not "by the CA", whatever else
    # the ConfigMap says: the signature is checked here.
    other = certs.plan(NOW, None, NAMES, POLICY).state
    configmap["data"][certs.TLS_CERT] = other.serving.cert_pem.decode()
    assert not webhookcerts.facts(configmap).serving_by_ca
    del configmap["data"][certs.TLS_CERT]
    with pytest.raises(ValueError, match=r"it has no tls\.crt"):
        webhookcerts.facts(configmap)
    configmap = copy.deepcopy(pair.rotation)
    configmap["data"][certs.SIGNER_CERT] = "%%%"
    with pytest.raises(ValueError, match=r"its ca-signer\.crt is not a PEM certificate"):
        webhookcerts.facts(configmap)
    configmap = copy.deepcopy(pair.rotation)
    configmap["data"][certs.TRUSTED_CAS] = "%%%"
    with pytest.raises(ValueError, match=r"its ca\.crt holds no certificate"):
        webhookcerts.facts(configmap)


def test_the_request_is_log_safe_and_the_patch_holds_only_the_request() -> None:
    request = webhookcerts.request_id("trigger:a b\nc é", NOW, 3)
    assert request == "trigger:a_b_c__@20261201T090000Z#3"
    assert certs.request_id(request) == request
    long = webhookcerts.request_id("trigger:" + "x" * 500, NOW, 99)
    assert certs.request_id(long) == long
    patch = webhookcerts.RotationRequest(request, False, "7").patch()
    assert patch == {"metadata": {"resourceVersion": "7"}, "data": {
        certs.REQUESTED_KEY: request, certs.ROTATE_CA_KEY: None}}
    assert webhookcerts.RotationRequest(request, True, "7").patch()["data"][
        certs.ROTATE_CA_KEY] == "true"


def test_tenantry_rotate_follows_a_webhook_certificates_rotation_to_its_end() -> None:
    pair = Pair()
    pair.step(_spec(trigger="cli"))

    def followed() -> cli.Followed:
        obj = {"metadata": {"generation": 1}, "status": pair.status.wire()}
        return cli.follow(obj, "cli", 1)

    waiting = followed()
    assert waiting.exit_code is None
    assert waiting.line.startswith("Requested: rotation trigger:cli: asked the webhook")
    pair.resync()
    pair.step(_spec(trigger="cli"))
    done = followed()
    assert done.exit_code == cli.EXIT_OK and done.line.startswith("done")
    assert "re-encrypted" not in done.line  # nothing is re-encrypted: Ready's own words


def test_a_rotation_the_configmap_stops_answering_for_is_paused_not_lost() -> None:
    pair = Pair()
    _, ask = pair.step(_spec())
    assert ask is not None
    pair.step(_spec(), tls=None)
    rotating = _conditions(pair.status)["Rotating"]
    assert (rotating.status, rotating.reason) == ("False", plan.PAUSED)
    assert pair.status.webhook_certificates is not None
    assert pair.status.webhook_certificates.rotation is not None
    pair.resync()
    pair.step(_spec())
    assert _conditions(pair.status)["Ready"].reason == plan.SUCCEEDED
