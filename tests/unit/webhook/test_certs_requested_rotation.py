"""Rotations the operator asks for: a request in the rotation ConfigMap is a forced rotation
through the scheduled path's own steps (pure `certs.plan`), served once, with the same CA
overlap; `tls.CertKeeper.run` looks for one between resyncs and publishes the public facts.

Every resync here goes through the objects as the apiserver keeps them: the webhook's Secret
(`to_secret`, read back with `from_secret`) and the operator's request keys in the ConfigMap
(`with_request`); the request never touches the Secret.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import datetime
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509

from tenantry.kubeapi import ApiError
from tenantry.webhook import certs, tls

NOW = datetime.datetime(2030, 1, 1, tzinfo=datetime.UTC)
DAY = datetime.timedelta(days=1)
MINUTE = datetime.timedelta(minutes=1)
NAMES = ("tenantry-webhook.tenantry-system.svc", "127.0.0.1")
POLICY = certs.CertPolicy(ca_validity=365 * DAY, cert_validity=90 * DAY,
                          ca_propagation=5 * MINUTE)


def _secret(state: certs.TlsState) -> dict[str, Any]:
    """The Secret after the webhook wrote `state`."""
    return certs.to_secret(state, name=certs.SECRET_NAME, namespace="tenantry-system")


def _rotation(request: str | None = None, *, rotate_ca: bool = False,
              served: str | None = None) -> dict[str, Any]:
    """The rotation ConfigMap after the operator wrote `request` (and the webhook `served`)."""
    data: dict[str, str] = {}
    if request is not None:
        data[certs.REQUESTED_KEY] = request
    if rotate_ca:
        data[certs.ROTATE_CA_KEY] = "true"
    if served is not None:
        data[certs.SERVED_KEY] = served
    return {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": certs.ROTATION_CONFIGMAP, "namespace": "tenantry-system"},
            "data": data}


def _read(secret: dict[str, Any], rotation: dict[str, Any] | None = None) -> certs.TlsState:
    state, problem = certs.from_secret(secret)
    assert state is not None, problem
    return certs.with_request(state, rotation)


def _resync(at: datetime.datetime, state: certs.TlsState, request: str | None = None, *,
            rotate_ca: bool = False) -> certs.Plan:
    return certs.plan(at, _read(_secret(state), _rotation(request, rotate_ca=rotate_ca)),
                      NAMES, POLICY)


def _fresh() -> certs.TlsState:
    return certs.plan(NOW, None, NAMES, POLICY).state


def _due_ca() -> tuple[datetime.datetime, certs.TlsState]:
    """A day when the CA is due for rotation and the serving certificate (renewed by daily
    resyncs) is still good: (that day, the state before it)."""
    state = _fresh()
    for day in range(1, 365):
        at = NOW + day * DAY
        if certs.needs_rotation(at, state.ca.cert, POLICY.renew_fraction):
            return at, state
        state = _resync(at, state).state
    raise AssertionError("the CA never fell due")


def _trusted(state: certs.TlsState) -> list[x509.Certificate]:
    return [x509.load_pem_x509_certificate(pem) for pem in state.trusted]


def test_a_request_reissues_the_serving_certificate_now_under_the_same_ca() -> None:
    before = _fresh()
    rotated = _resync(NOW + MINUTE, before, "trigger:now@1")
    assert rotated.changed
    state = rotated.state
    assert state.serving.cert.serial_number != before.serving.cert.serial_number
    assert state.ca == before.ca and state.trusted == before.trusted
    assert certs.issued_by(state.serving.cert, before.ca.cert)
    assert state.served == "trigger:now@1"
    assert any("rotation trigger:now@1 asked for a new serving certificate" in r
               for r in rotated.reasons)
    assert any(f"served: serving certificate serial {certs.serial_text(state.serving.cert)}" in r
               for r in rotated.reasons)
    # Served: the request stays on the Secret, and changes nothing any more.
    again = _resync(NOW + 2 * MINUTE, state, "trigger:now@1")
    assert not again.changed
    assert again.state.serving == state.serving


def test_a_request_with_a_ca_keeps_the_overlap_and_switches_after_propagation() -> None:
    before = _fresh()
    old_ca = before.ca.cert
    first = _resync(NOW + MINUTE, before, "trigger:ca@1", rotate_ca=True)
    state = first.state
    new_ca = state.ca.cert
    # 1. A new CA heads the bundle, the old one stays; the serving certificate does not move.
    assert new_ca != old_ca
    assert _trusted(state) == [new_ca, old_ca]
    assert state.serving == before.serving
    assert state.ca_served == "trigger:ca@1" and state.served is None
    assert any("rotation trigger:ca@1 asked for a new CA" in r for r in first.reasons)

    # 2. Resyncs within the propagation delay change nothing (and make no second CA).
    waiting = _resync(NOW + 3 * MINUTE, state, "trigger:ca@1", rotate_ca=True)
    assert not waiting.changed
    assert waiting.state.ca == state.ca

    # 3. Past it, the serving certificate moves to the new CA: the request is served.
    switched = _resync(NOW + 7 * MINUTE, state, "trigger:ca@1", rotate_ca=True).state
    assert certs.issued_by(switched.serving.cert, new_ca)
    assert switched.served == "trigger:ca@1"
    assert _trusted(switched) == [new_ca, old_ca]
    assert not _resync(NOW + 8 * MINUTE, switched, "trigger:ca@1", rotate_ca=True).changed

    # 4. The old CA leaves the bundle when it expires, as after a scheduled rotation.
    later = switched
    for day in range(1, 400, 10):
        later = _resync(NOW + day * DAY, later, "trigger:ca@1", rotate_ca=True).state
        assert certs.serving_problem(NOW + day * DAY, later.serving, NAMES,
                                     _trusted(later)) is None
    assert old_ca not in _trusted(later)


def test_with_no_propagation_delay_a_ca_request_is_served_in_one_write() -> None:
    before = _fresh()
    policy = certs.CertPolicy(ca_propagation=datetime.timedelta(0))
    state = certs.plan(NOW, _read(_secret(before), _rotation("r1", rotate_ca=True)), NAMES,
                       policy).state
    assert certs.issued_by(state.serving.cert, state.ca.cert)
    assert state.ca != before.ca
    assert (state.served, state.ca_served) == ("r1", "r1")


def test_a_ca_that_is_due_anyway_is_the_one_the_request_gets() -> None:
    at, before = _due_ca()
    rotated = _resync(at, before, "r1", rotate_ca=True)
    assert len(rotated.state.trusted) == 2, "one new CA, not two"
    assert rotated.state.ca_served == "r1"
    assert rotated.state.serving == before.serving, "the serving certificate waits"
    assert any("is due for rotation" in r for r in rotated.reasons)


def test_a_serving_request_during_a_ca_propagation_waits_for_the_switch() -> None:
    at, before = _due_ca()
    # A scheduled CA rotation just happened: the serving certificate waits for propagation.
    mid = _resync(at, before).state
    assert not certs.issued_by(mid.serving.cert, mid.ca.cert)
    waiting = _resync(at + MINUTE, mid, "r2")
    assert not waiting.changed, "switching before the apiserver trusts the new CA would fail"
    switched = _resync(at + 6 * MINUTE, mid, "r2").state
    assert certs.issued_by(switched.serving.cert, mid.ca.cert)
    assert switched.served == "r2"


def test_each_new_request_is_served_once() -> None:
    state = _resync(NOW, _fresh(), "r1").state
    serials = {state.serving.cert.serial_number}
    for number, request in enumerate(("r2", "r3", "r2"), start=1):
        state = _resync(NOW + number * MINUTE, state, request).state
        assert state.served == request
        serials.add(state.serving.cert.serial_number)
    assert len(serials) == 4


def test_a_request_the_secret_says_it_served_is_not_served_again() -> None:
    """The webhook's own record (the Secret's served annotation) decides, not the ConfigMap:
    once served, the same request changes nothing."""
    served = _resync(NOW, _fresh(), "r1").state
    assert served.served == "r1"
    assert certs.pending_request(_rotation("r1", served="r1")) is None
    assert not certs.plan(NOW + MINUTE, _read(_secret(served), _rotation("r1")), NAMES,
                          POLICY).changed


def test_a_served_mark_in_the_configmap_alone_serves_nothing() -> None:
    """A `rotated-for` in the ConfigMap that the Secret does not back (forged, or published by a
    replica behind) stops only the poll's early resync; the next resync serves the request, and
    the operator judges by the certificates anyway (test_webhookcerts)."""
    before = _fresh()
    forged = _rotation("r1", served="r1")
    assert certs.pending_request(forged) is None
    rotated = certs.plan(NOW, _read(_secret(before), forged), NAMES, POLICY)
    assert rotated.changed and rotated.state.served == "r1"
    assert rotated.state.serving.cert.serial_number != before.serving.cert.serial_number


def test_only_printable_bounded_ids_are_requests() -> None:
    before = _fresh()
    for bogus in ("", "two words", "line\nbreak", "x" * (certs.MAX_REQUEST_ID + 1), "é"):
        rotation = _rotation(bogus)
        assert certs.pending_request(rotation) is None, bogus
        assert not certs.plan(NOW, _read(_secret(before), rotation), NAMES, POLICY).changed, bogus
    assert certs.pending_request(_rotation("x" * certs.MAX_REQUEST_ID)) is not None
    assert certs.pending_request(None) is None, "no ConfigMap yet: nothing asked"
    # rotate-ca means a CA only when it says exactly "true".
    rotation = _rotation("r1")
    rotation["data"][certs.ROTATE_CA_KEY] = "yes"
    assert certs.pending_request(rotation) == certs.Request("r1", rotate_ca=False)


def test_a_request_annotated_on_the_secret_is_ignored() -> None:
    """The old protocol (annotations on the Secret) asks for nothing: the operator may not
    write, or read, the Secret any more."""
    before = _fresh()
    secret = _secret(before)
    secret["metadata"]["annotations"]["tenantry.dev/rotate-requested"] = "r1"
    assert _read(secret).request is None
    assert not certs.plan(NOW, _read(secret), NAMES, POLICY).changed


def test_the_webhook_writes_what_it_served_and_never_the_request() -> None:
    state = _resync(NOW, _fresh(), "r1", rotate_ca=True).state
    secret = certs.to_secret(state, name="s", namespace="n")
    annotations = secret["metadata"]["annotations"]
    assert annotations[certs.CA_SERVED_ANNOTATION] == "r1"
    assert certs.SERVED_ANNOTATION not in annotations  # not yet: the CA propagates first
    assert not any("rotate" in key and "rotated" not in key for key in annotations)
    restored = _read(secret)
    assert (restored.served, restored.ca_served, restored.request) == (None, "r1", None)
    # The ConfigMap it applies: the public facts only, never a request key, never a key.
    published = certs.rotation_configmap(state, name=certs.ROTATION_CONFIGMAP, namespace="n")
    assert set(published["data"]) == {certs.TLS_CERT, certs.TRUSTED_CAS, certs.SIGNER_CERT}
    assert published["data"][certs.TLS_CERT] == state.serving.cert_pem.decode()
    assert published["data"][certs.SIGNER_CERT] == state.ca.cert_pem.decode()
    assert published["data"][certs.TRUSTED_CAS] == state.ca_bundle().decode()
    text = repr(published)
    assert "PRIVATE KEY" not in text
    assert state.ca.key_pem.decode() not in text and state.serving.key_pem.decode() not in text
    served = _resync(NOW + 6 * MINUTE, state, "r1", rotate_ca=True).state
    assert certs.rotation_facts(served)[certs.SERVED_KEY] == "r1"


class _Cluster:
    """The objects `CertKeeper` touches, kept as the apiserver would (enough for `run`): the
    Secret, and the rotation ConfigMap whose request keys are the operator's (an apply of the
    webhook's facts leaves them, as server-side apply leaves another manager's fields)."""

    def __init__(self, secret: dict[str, Any]) -> None:
        self.secret = secret
        self.rotation: dict[str, Any] | None = None
        self.writes = 0
        self.fact_writes = 0
        self.gets = 0
        self.secret_gets = 0
        self.refuse_facts = False

    async def get(self, api_version: str, kind: str, name: str,
                  namespace: str | None = None) -> dict[str, Any] | None:
        self.gets += 1
        if kind == "Secret":
            self.secret_gets += 1
            return copy.deepcopy(self.secret)
        if kind == "ConfigMap" and name == certs.ROTATION_CONFIGMAP:
            return copy.deepcopy(self.rotation)
        return None

    async def create(self, body: dict[str, Any], *,
                     field_manager: str | None = None) -> dict[str, Any]:
        assert body["kind"] == "ConfigMap" and self.rotation is None
        if self.refuse_facts:
            raise ApiError(403, "Forbidden", "configmaps is forbidden")
        self.rotation = copy.deepcopy(body)
        self.fact_writes += 1
        return body

    async def apply(self, body: dict[str, Any], *, field_manager: str) -> dict[str, Any]:
        if body["kind"] == "Secret":
            annotations = {**self.secret["metadata"].get("annotations", {}),
                           **body["metadata"]["annotations"]}
            self.secret = {**body, "metadata": {**body["metadata"], "annotations": annotations}}
            self.writes += 1
        elif body["kind"] == "ConfigMap":
            assert self.rotation is not None
            assert not set(body["data"]) & set(certs.REQUEST_KEYS), "the operator's keys"
            requests = {k: v for k, v in self.rotation["data"].items() if k in certs.REQUEST_KEYS}
            self.rotation = {**body, "data": {**requests, **body["data"]}}
            self.fact_writes += 1
        return body

    def ask(self, request: str) -> None:
        """The operator's merge patch of the request key."""
        assert self.rotation is not None
        self.rotation["data"][certs.REQUESTED_KEY] = request


def _keeper(cluster: _Cluster, tmp_path: Path) -> tls.CertKeeper:
    return tls.CertKeeper(cluster, namespace="tenantry-system",  # type: ignore[arg-type]
                          secret_name=certs.SECRET_NAME, names=NAMES, cert_dir=tmp_path,
                          policy=POLICY, configuration=lambda bundle: {
                              "apiVersion": "admissionregistration.k8s.io/v1",
                              "kind": "ValidatingWebhookConfiguration", "metadata": {"name": "c"}},
                          clock=lambda: NOW + MINUTE)


async def test_the_keeper_makes_the_configmap_and_publishes_the_facts(tmp_path: Path) -> None:
    cluster = _Cluster(_secret(_resync(NOW, _fresh(), "r0").state))
    keeper = _keeper(cluster, tmp_path)
    state = await keeper.start()
    assert cluster.rotation is None, "not before the caBundle is published"
    await keeper.publish(state)
    assert await keeper.publish_facts(state)
    assert cluster.rotation is not None
    data = cluster.rotation["data"]
    assert data == {key: value for key, value in certs.rotation_facts(state).items()
                    if value is not None}
    assert data[certs.SERVED_KEY] == "r0"
    assert not await keeper.publish_facts(state), "unchanged facts: no write"
    assert cluster.fact_writes == 1


async def test_a_refused_publication_holds_back_no_certificate(tmp_path: Path) -> None:
    """The facts are published last: a resync that cannot write them (RBAC of an older
    install, say) still stores and serves the new certificate, then reports the failure."""
    aged = _fresh()
    cluster = _Cluster(_secret(aged))
    cluster.refuse_facts = True
    keeper = tls.CertKeeper(cluster, namespace="tenantry-system",  # type: ignore[arg-type]
                            secret_name=certs.SECRET_NAME, names=NAMES, cert_dir=tmp_path,
                            policy=POLICY, configuration=lambda bundle: {
                                "apiVersion": "admissionregistration.k8s.io/v1",
                                "kind": "ValidatingWebhookConfiguration",
                                "metadata": {"name": "c"}},
                            clock=lambda: NOW + 80 * DAY)  # the serving certificate is due
    with pytest.raises(ApiError):
        await keeper.sync()
    renewed = _read(cluster.secret)
    assert renewed.serving != aged.serving
    assert keeper.cert_file.read_bytes() == renewed.serving.cert_pem, "served all the same"


async def test_between_resyncs_the_keeper_serves_a_request_within_a_poll(tmp_path: Path) -> None:
    cluster = _Cluster(_secret(_resync(NOW, _fresh(), "r0").state))
    keeper = _keeper(cluster, tmp_path)
    state = await keeper.start()
    keeper.install(state)
    await keeper.publish_facts(state)
    cluster.ask("r0")
    assert cluster.writes == 0
    task = asyncio.create_task(keeper.run(interval=3600, request_poll=0.01))
    try:
        await asyncio.sleep(0.2)
        assert cluster.gets > 5 and cluster.writes == 0, "no request: polls, no resync"
        assert cluster.secret_gets == 1, "the poll reads the ConfigMap, not the Secret"
        cluster.ask("r1")
        for _ in range(200):
            if (cluster.rotation or {}).get("data", {}).get(certs.SERVED_KEY) == "r1":
                break
            await asyncio.sleep(0.01)
        served = _read(cluster.secret)
        assert served.served == "r1", "an hour-long resync interval did not hold the request"
        assert keeper.cert_file.read_bytes() == served.serving.cert_pem, "and it serves it"
        assert cluster.rotation is not None
        published = cluster.rotation["data"]
        assert published[certs.REQUESTED_KEY] == "r1", "the operator's request stays"
        assert published[certs.TLS_CERT] == served.serving.cert_pem.decode()
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
