"""RotationPolicy target WebhookCertificates through the real operator, the real webhook process
and the real apiserver (the session's: webhook resync 1 s, CA propagation 2 s).

A trigger asks the webhook, through ConfigMap tenantry-webhook-rotation, for a new serving
certificate (and a new CA when `rotateCA` is set); the webhook rotates through its own overlap
(new CA in the caBundle first, the serving certificate moves after the propagation delay) and
publishes what it served with its certificates there; the policy reports it from those
certificates. All along, a loop of dry-run pod and Credential creates must be judged by the
webhook: not one may fail on TLS. Attacks: a policy outside Tenantry's namespace; the operator's
identity against the webhook's Secret (no access at all: its keys), other ConfigMaps and the
fields of this one; anyone but the webhook writing the facts
(manifests/webhook/operator-requests-only.yaml, in force for the whole module, so the real
requests and publications pass it); a forged `rotated-for`.
"""

from __future__ import annotations

import base64
import contextlib
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from cryptography import x509
from kubernetes import client

from tenantry import kube
from tenantry.devcluster.cluster import LocalControlPlane
from tenantry.webhook import certs
from tests.conftest import (
    OPERATOR_GROUPS,
    OPERATOR_USER,
    REPO_ROOT,
    Ledger,
    OperatorProcess,
    UserApi,
    api_message,
)
from tests.e2e.test_rotation import _create_policy, _get_policy, _policy_events, _policy_ready
from tests.e2e.webhook.test_webhook_lifecycle import (
    SECRET_PATH,
    _bundle,
    _presented,
    _violating_pod,
)
from tests.e2e.webhook.webhook_helpers import (
    DENIED_BY_CREDENTIALS,
    DENIED_BY_WORKLOADS,
    WEBHOOK_GROUPS,
    WEBHOOK_USER,
    Outcome,
    RawApi,
    WebhookProcess,
    credential,
)
from tests.helpers import GROUP, VERSION, conditions_of, eventually, forbidden, unique

NAMESPACE = "tenantry-system"
PLURAL = "rotationpolicies"
REQUESTS_ONLY = REPO_ROOT / "manifests" / "webhook" / "operator-requests-only.yaml"
REQUESTS_ONLY_NAMES = ("tenantry-webhook-rotation-operator-requests-only",
                       "tenantry-webhook-rotation-facts-webhook-only")
ROTATION_PATH = f"/api/v1/namespaces/{NAMESPACE}/configmaps/{certs.ROTATION_CONFIGMAP}"


def _as_operator(as_user: UserApi) -> client.CoreV1Api:
    return client.CoreV1Api(as_user(OPERATOR_USER, list(OPERATOR_GROUPS)))


@pytest.fixture(scope="module", autouse=True)
def requests_only(admin_api: client.ApiClient, webhook: WebhookProcess,
                  control_plane: LocalControlPlane) -> Iterator[None]:
    """The admission policies that hold the operator's identity to the request keys and keep
    the facts the webhook's, in force (probed: a label the operator may not add, a fact the
    admin may not write, are refused), removed afterwards."""
    kube.apply(admin_api, kube.load_manifests([REQUESTS_ONLY]))
    operator_api = kube.api_client(control_plane.kubeconfig_for(OPERATOR_USER, OPERATOR_GROUPS))
    as_operator, core = client.CoreV1Api(operator_api), client.CoreV1Api(admin_api)
    name = certs.ROTATION_CONFIGMAP

    def refused(call: Any) -> bool:
        try:
            call()
        except client.ApiException as error:
            return error.status in (403, 422)
        return False

    def in_force() -> bool:
        if not refused(lambda: as_operator.patch_namespaced_config_map(
                name, NAMESPACE, {"metadata": {"labels": {"probe": "x"}}})):
            core.patch_namespaced_config_map(name, NAMESPACE,
                                             {"metadata": {"labels": {"probe": None}}})
            return False
        if not refused(lambda: core.patch_namespaced_config_map(
                name, NAMESPACE, {"data": {"probe": "x"}})):
            core.patch_namespaced_config_map(name, NAMESPACE, {"data": {"probe": None}})
            return False
        return True

    try:
        eventually(in_force, timeout=30, what="the rotation ConfigMap's admission policies")
    finally:
        operator_api.close()
    yield
    admission = client.AdmissionregistrationV1Api(admin_api)
    for policy_name in REQUESTS_ONLY_NAMES:
        admission.delete_validating_admission_policy_binding(policy_name)
        admission.delete_validating_admission_policy(policy_name)


def _state(raw: RawApi) -> tuple[certs.TlsState, dict[str, Any]]:
    secret = raw.request("GET", SECRET_PATH).body
    state, problem = certs.from_secret(secret)
    assert state is not None, problem
    return state, secret


def _serial(raw: RawApi) -> str:
    return certs.serial_text(_state(raw)[0].serving.cert)


def _rotation(raw: RawApi) -> dict[str, Any]:
    """The rotation ConfigMap (the webhook made it at start)."""
    found: dict[str, Any] = raw.request("GET", ROTATION_PATH).body
    assert found.get("kind") == "ConfigMap", found
    return found


class Asker(threading.Thread):
    """Dry-run creates, as fast as it can: a violating pod in a tenant namespace and a Credential
    outside any tenant; each must come back refused *by the webhook* (any other answer, such as
    "failed calling webhook", is a failed review)."""

    def __init__(self, control_plane: LocalControlPlane, namespace: str) -> None:
        super().__init__(daemon=True)
        self.control_plane, self.namespace = control_plane, namespace
        self.outcomes: list[tuple[str, Outcome]] = []
        self.stopping = threading.Event()

    def run(self) -> None:
        api = RawApi(self.control_plane)
        try:
            while not self.stopping.is_set():
                self.outcomes.append((DENIED_BY_WORKLOADS,
                                      api.create(_violating_pod(self.namespace))))
                self.outcomes.append((DENIED_BY_CREDENTIALS, api.create(credential("default"))))
                time.sleep(0.02)
        finally:
            api.close()

    def failed(self) -> list[Outcome]:
        return [o for expected, o in self.outcomes if expected not in o.message]


@contextlib.contextmanager
def asking(control_plane: LocalControlPlane, namespace: str) -> Iterator[Asker]:
    asker = Asker(control_plane, namespace)
    asker.start()
    try:
        yield asker
    finally:
        asker.stopping.set()
        asker.join(30)
    assert len(asker.outcomes) > 40, "the asker barely ran"
    failed = asker.failed()
    assert not failed, f"{len(failed)} of {len(asker.outcomes)} reviews failed: {failed[:3]}"


@pytest.fixture
def policy(admin_api: client.ApiClient) -> Iterator[str]:
    """A fresh policy name in Tenantry's namespace; the policy is deleted afterwards."""
    name = unique("webhook-certs")
    yield name
    with contextlib.suppress(client.ApiException):
        client.CustomObjectsApi(admin_api).delete_namespaced_custom_object(
            GROUP, VERSION, NAMESPACE, PLURAL, name)


def _policy(name: str, namespace: str = NAMESPACE, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "RotationPolicy",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"targets": ["WebhookCertificates"], "trigger": "now", **spec}}


def _platform_entries(ledger: Ledger, name: str) -> list[dict[str, Any]]:
    return [e for e in ledger.entries("_platform")
            if e["resource_name"] == name and e["action"].startswith("rotation.")]


def _key_texts(state: certs.TlsState) -> list[str]:
    """The Secret's private keys, base64 as stored and the PEM bodies: what must not leak."""
    texts = []
    for pem in (state.serving.key_pem, state.ca.key_pem):
        body = "".join(pem.decode().splitlines()[1:-1])
        texts += [base64.b64encode(pem).decode(), body[:48], body[-48:]]
    return texts


def test_a_trigger_rotates_the_serving_certificate_with_no_failed_review(
        admin_api: client.ApiClient, raw_api: RawApi, control_plane: LocalControlPlane,
        operator: OperatorProcess, webhook: WebhookProcess, acme: str, ledger: Ledger,
        policy: str) -> None:
    before, _ = _state(raw_api)
    before_serial = certs.serial_text(before.serving.cert)
    bundle = _bundle(raw_api)
    with asking(control_plane, acme):
        _create_policy(admin_api, _policy(policy))
        done = _policy_ready(admin_api, NAMESPACE, policy, status="True",
                             reason="RotationSucceeded")
        after, _ = _state(raw_api)
        eventually(lambda: _presented(webhook) == after.serving.cert, timeout=20,
                   what="the webhook to present the new certificate")
        time.sleep(1.0)  # a few more reviews against the new certificate
    after_serial = certs.serial_text(after.serving.cert)
    assert after_serial != before_serial
    assert after.ca == before.ca and _bundle(raw_api) == bundle, "no CA was asked for"
    status = done["status"]
    assert status["currentVersions"] == {"WebhookCertificates": after_serial}
    record = status["history"][0]
    assert (record["target"], record["fromVersion"], record["toVersion"], record["result"]) == (
        "WebhookCertificates", before_serial, after_serial, "Succeeded")
    assert status["webhookCertificates"]["servingSerial"] == after_serial
    assert status["webhookCertificates"]["ca"] == certs.fingerprint(after.ca.cert)
    assert "rotation" not in status["webhookCertificates"]
    reasons = [r for _, r in _policy_events(admin_api, NAMESPACE, policy)]
    assert "RotationStarted" in reasons and "RotationCompleted" in reasons

    # The request is an id, the served mark the same id, beside the public certificates the
    # webhook published (the ones it serves): no key anywhere in the ConfigMap.
    rotation = _rotation(raw_api)
    data = rotation["data"]
    request = data[certs.REQUESTED_KEY]
    assert request.startswith("trigger:now@") and len(request) < 64
    assert data[certs.SERVED_KEY] == request == after.served
    assert certs.ROTATE_CA_KEY not in data
    assert data[certs.TLS_CERT] == after.serving.cert_pem.decode()
    assert data[certs.SIGNER_CERT] == after.ca.cert_pem.decode()
    assert data[certs.TRUSTED_CAS] == after.ca_bundle().decode()
    assert "PRIVATE KEY" not in repr(rotation)
    annotations = _state(raw_api)[1]["metadata"]["annotations"]
    assert not any(k.startswith("tenantry.dev/rotate-") for k in annotations), \
        "nothing is requested on the Secret"

    def completed() -> list[dict[str, Any]] | None:
        found = _platform_entries(ledger, policy)
        return found if found and found[-1]["action"] == "rotation.completed" else None

    entries = eventually(completed, what="the rotation's ledger entries")
    assert [e["action"] for e in entries] == ["rotation.started", "rotation.completed"]
    assert entries[-1]["changes"]["fromSerial"] == before_serial
    assert entries[-1]["changes"]["toSerial"] == after_serial
    dumped = repr([entries, status, rotation, _policy_events(admin_api, NAMESPACE, policy),
                   client.CoreV1Api(admin_api).list_namespaced_event(NAMESPACE).to_dict()])
    for text in _key_texts(before) + _key_texts(after):
        assert text not in dumped


def test_a_ca_rotation_trusts_the_new_ca_before_serving_from_it(
        admin_api: client.ApiClient, raw_api: RawApi, control_plane: LocalControlPlane,
        operator: OperatorProcess, webhook: WebhookProcess, acme: str, ledger: Ledger,
        policy: str) -> None:
    before, _ = _state(raw_api)
    old_ca = before.ca.cert
    seen_overlap: list[bool] = []
    with asking(control_plane, acme):
        _create_policy(admin_api, _policy(policy, webhookCertificates={"rotateCA": True}))

        def new_ca_trusted() -> tuple[x509.Certificate, ...] | None:
            bundle = _bundle(raw_api)
            if bundle[0] == old_ca:
                return None
            # The new CA is published while the server still presents the old CA's certificate.
            seen_overlap.append(certs.issued_by(_presented(webhook), old_ca))
            return bundle

        bundle = eventually(new_ca_trusted, timeout=30, interval=0.05,
                            what="a new CA at the head of the caBundle")
        new_ca = bundle[0]
        assert old_ca in bundle, "the old CA stays trusted"
        eventually(lambda: certs.issued_by(_presented(webhook), new_ca), timeout=20,
                   what="the server to present a certificate of the new CA")
        done = _policy_ready(admin_api, NAMESPACE, policy, status="True",
                             reason="RotationSucceeded")
        time.sleep(1.0)
    assert seen_overlap[0], "the serving certificate switched before the new CA propagated"
    after, _ = _state(raw_api)
    assert after.ca.cert == new_ca and old_ca in _bundle(raw_api)
    assert certs.issued_by(after.serving.cert, new_ca)
    web = done["status"]["webhookCertificates"]
    assert web["ca"] == certs.fingerprint(new_ca)
    assert web["trusted"][:2] == [certs.fingerprint(new_ca), certs.fingerprint(old_ca)]
    record = done["status"]["history"][0]
    assert record["toVersion"] == certs.serial_text(after.serving.cert)
    assert (f"CA {certs.fingerprint(old_ca)} -> {certs.fingerprint(new_ca)}"
            in record["message"])
    reasons = [r for _, r in _policy_events(admin_api, NAMESPACE, policy)]
    assert {"RotationStarted", "CaAdded", "RotationCompleted"} <= set(reasons), reasons

    def completed() -> list[dict[str, Any]] | None:
        found = _platform_entries(ledger, policy)
        return found if found and found[-1]["action"] == "rotation.completed" else None

    entries = eventually(completed, what="the rotation's ledger entries")
    assert [e["action"] for e in entries] == ["rotation.started", "rotation.ca-added",
                                              "rotation.completed"]
    assert entries[1]["changes"]["toCA"] == certs.fingerprint(new_ca)


def test_a_policy_outside_tenantrys_namespace_touches_no_certificate(
        admin_api: client.ApiClient, raw_api: RawApi, operator: OperatorProcess,
        webhook: WebhookProcess, namespace: str) -> None:
    _, secret = _state(raw_api)
    version = secret["metadata"]["resourceVersion"]
    rotation_version = _rotation(raw_api)["metadata"]["resourceVersion"]
    name = "certs"
    _create_policy(admin_api, _policy(name, namespace))
    refused = _policy_ready(admin_api, namespace, name, status="False",
                            reason="TargetNotAllowed")
    message = conditions_of(refused)["Ready"]["message"]
    assert "spec.targets names WebhookCertificates" in message
    assert "only by a RotationPolicy in Tenantry's namespace tenantry-system" in message
    assert "lastHandledTrigger" not in refused["status"]
    assert ("Warning", "TargetNotAllowed") in _policy_events(admin_api, namespace, name)
    time.sleep(3.0)  # several webhook resyncs: nothing was asked
    _, later = _state(raw_api)
    assert later["metadata"]["resourceVersion"] == version
    assert _rotation(raw_api)["metadata"]["resourceVersion"] == rotation_version

    # The CA option belongs to the WebhookCertificates target (the CRD's rule).
    with pytest.raises(client.ApiException) as invalid:
        _create_policy(admin_api, _policy("creds", namespace, targets=["Credentials"],
                                          webhookCertificates={"rotateCA": True}))
    assert invalid.value.status == 422
    assert "spec.webhookCertificates needs 'WebhookCertificates' in spec.targets" in \
        api_message(invalid.value)


def test_the_operator_may_not_read_the_webhook_secret_only_write_its_request(
        admin_api: client.ApiClient, as_user: UserApi, operator: OperatorProcess,
        webhook: WebhookProcess) -> None:
    """The finding this protocol fixes: `get` of the webhook's Secret returns `ca-signer.key`,
    with which a stolen operator token could sign serving certificates the apiserver trusts.
    The operator's identity has no permission on it at all, and get+patch of one ConfigMap."""
    def may(verb: str, resource: str, name: str = "") -> bool:
        review = client.V1SubjectAccessReview(spec=client.V1SubjectAccessReviewSpec(
            user=OPERATOR_USER, groups=list(OPERATOR_GROUPS),
            resource_attributes=client.V1ResourceAttributes(
                verb=verb, resource=resource, namespace=NAMESPACE, name=name or None)))
        answer = client.AuthorizationV1Api(admin_api).create_subject_access_review(review)
        return bool(answer.status.allowed)

    secret, rotation = certs.SECRET_NAME, certs.ROTATION_CONFIGMAP
    for verb in ("get", "patch", "update", "create", "delete", "list", "watch",
                 "deletecollection"):
        assert not may(verb, "secrets", secret), f"{verb} Secret {secret}"
    assert may("get", "configmaps", rotation) and may("patch", "configmaps", rotation)
    for verb in ("create", "update", "delete", "list", "watch", "deletecollection"):
        assert not may(verb, "configmaps", rotation), f"{verb} ConfigMap {rotation}"
    for other in ("tenantry-webhook-client-ca", "tenantry-webhook-rotation-copy"):
        assert not may("get", "configmaps", other) and not may("patch", "configmaps", other)

    # The same as real requests with the operator's credentials.
    core = client.CoreV1Api(admin_api)
    decoy = unique("decoy")
    core.create_namespaced_config_map(NAMESPACE, client.V1ConfigMap(
        metadata=client.V1ObjectMeta(name=decoy), data={"k": "not-for-operator"}))
    try:
        as_operator = client.CoreV1Api(as_user(OPERATOR_USER, list(OPERATOR_GROUPS)))
        # The attack: read the webhook's keys. RBAC refuses it outright (403, not admission).
        with pytest.raises(client.ApiException) as refused:
            as_operator.read_namespaced_secret(secret, NAMESPACE)
        assert refused.value.status == 403, refused.value.body
        assert "ca-signer" not in str(refused.value.body)
        for call in (lambda: as_operator.patch_namespaced_secret(secret, NAMESPACE, {
                         "metadata": {"annotations": {"tenantry.dev/rotate-requested": "x"}}}),
                     lambda: as_operator.delete_namespaced_secret(secret, NAMESPACE),
                     lambda: as_operator.list_namespaced_secret(NAMESPACE)):
            with pytest.raises(client.ApiException) as refused:
                call()
            assert refused.value.status == 403
        # Its one ConfigMap: readable, and nothing secret in it.
        found = as_operator.read_namespaced_config_map(rotation, NAMESPACE)
        assert found.data and certs.TLS_CERT in found.data
        assert "PRIVATE KEY" not in repr(found.data)
        patch = {"data": {certs.REQUESTED_KEY: "x"}}
        assert forbidden(lambda: as_operator.patch_namespaced_config_map(decoy, NAMESPACE, patch))
        assert forbidden(lambda: as_operator.read_namespaced_config_map(decoy, NAMESPACE))
        assert forbidden(lambda: as_operator.delete_namespaced_config_map(rotation, NAMESPACE))
        assert forbidden(lambda: as_operator.list_namespaced_config_map(NAMESPACE))
        assert forbidden(lambda: as_operator.create_namespaced_config_map(
            NAMESPACE, client.V1ConfigMap(metadata=client.V1ObjectMeta(name=unique("new")))))
    finally:
        core.delete_namespaced_config_map(decoy, NAMESPACE)


@contextlib.contextmanager
def webhook_cannot_write(admin_api: client.ApiClient) -> Iterator[None]:
    """The webhook keeps serving and reading its Secret, but may not write it (its Role's Secret
    rules without patch and update, put back afterwards): no request can be served meanwhile,
    and so no fact published (a resync publishes after its Secret write)."""
    rbac = client.RbacAuthorizationV1Api(admin_api)
    role = rbac.read_namespaced_role("tenantry-webhook", NAMESPACE)
    original: list[dict[str, Any]] = [admin_api.sanitize_for_serialization(rule)
                                      for rule in role.rules]
    reduced = [{**rule, "verbs": [v for v in rule["verbs"] if v not in ("patch", "update")]}
               if rule["resources"] == ["secrets"] else rule for rule in original]
    rbac.patch_namespaced_role("tenantry-webhook", NAMESPACE, {"rules": reduced})
    try:
        yield
    finally:
        rbac.patch_namespaced_role("tenantry-webhook", NAMESPACE, {"rules": original})


def test_a_forged_rotated_for_is_not_reported_as_a_rotation(
        admin_api: client.ApiClient, raw_api: RawApi, as_user: UserApi,
        operator: OperatorProcess, webhook: WebhookProcess, policy: str) -> None:
    """The admission policy lets only the webhook's identity write `rotated-for`; if even that
    identity claims a request it did not serve, the certificates say otherwise."""
    before_serial = _serial(raw_api)
    core = client.CoreV1Api(admin_api)
    as_webhook = client.CoreV1Api(as_user(WEBHOOK_USER, list(WEBHOOK_GROUPS)))

    def requested() -> str | None:
        found = core.read_namespaced_config_map(certs.ROTATION_CONFIGMAP, NAMESPACE)
        value = (found.data or {}).get(certs.REQUESTED_KEY, "")
        return value if value.startswith("trigger:forged@") else None

    with webhook_cannot_write(admin_api):
        _create_policy(admin_api, _policy(policy, trigger="forged"))
        request = eventually(requested, what="the operator's rotation request")
        # The forgery: the ConfigMap claims the request was served; the certificate is the same.
        as_webhook.patch_namespaced_config_map(certs.ROTATION_CONFIGMAP, NAMESPACE, {
            "data": {certs.SERVED_KEY: request}})

        def warned() -> bool:
            return ("Warning", "RotationClaimUnbacked") in _policy_events(
                admin_api, NAMESPACE, policy)

        eventually(warned, timeout=30, what="a RotationClaimUnbacked Warning")
        status = _get_policy(admin_api, NAMESPACE, policy)["status"]
        assert conditions_of({"status": status})["Ready"]["reason"] == "InProgress"
        assert not status.get("history")
        assert status["webhookCertificates"]["rotation"]["requests"] >= 2
        assert _serial(raw_api) == before_serial
        # Asked again under another id, which the forged mark does not cover.
        def asked_again() -> str | None:
            value = requested()
            return value if value != request else None

        assert eventually(asked_again, what="a new request").endswith("#2")
    done = _policy_ready(admin_api, NAMESPACE, policy, status="True",
                         reason="RotationSucceeded")
    record = done["status"]["history"][0]
    assert record["fromVersion"] == before_serial
    assert record["toVersion"] == _serial(raw_api) != before_serial
    assert webhook.running()


def test_the_operator_may_write_the_request_keys_and_no_one_else_the_facts(
        admin_api: client.ApiClient, raw_api: RawApi, as_user: UserApi,
        operator: OperatorProcess, webhook: WebhookProcess) -> None:
    as_operator = _as_operator(as_user)
    as_admin = client.CoreV1Api(admin_api)
    before, _ = _state(raw_api)
    rotation = _rotation(raw_api)
    other = certs.plan(before.ca_rotated_at, None, ("forged.example",)).state
    forged_cert = other.serving.cert_pem.decode()
    facts_only = "only the webhook's identity"
    operator_refusals: dict[str, tuple[dict[str, Any], str]] = {
        "the served mark": ({"data": {certs.SERVED_KEY: "forged"}},
                            "may change only data keys rotate-requested and rotate-ca"),
        "a serving certificate": ({"data": {certs.TLS_CERT: forged_cert}},
                                  "may change only data keys"),
        "a CA": ({"data": {certs.SIGNER_CERT: other.ca.cert_pem.decode()}},
                 "may change only data keys"),
        "removing a fact": ({"data": {certs.TRUSTED_CAS: None}}, "may change only data keys"),
        "another key": ({"data": {"x": "y"}}, "may change only data keys"),
        "binaryData": ({"binaryData": {"x": "eQ=="}}, "may change only data keys"),
        "a label": ({"metadata": {"labels": {"x": "y"}}}, "may change only data keys"),
        "an annotation": ({"metadata": {"annotations": {"x": "y"}}},
                          "may change only data keys"),
        "a request with spaces": ({"data": {certs.REQUESTED_KEY: "not an id"}},
                                  "must be a request id"),
        "rotate-ca not true": ({"data": {certs.ROTATE_CA_KEY: "yes"}}, 'may only be "true"'),
    }
    # A write of a fact key (binaryData is one: the facts policy guards every key but the two
    # requests) breaks both policies, and the apiserver reports whichever it evaluated first:
    # either refusal is the right one there.
    writes_a_fact = {"the served mark", "a serving certificate", "a CA", "removing a fact",
                     "another key", "binaryData"}
    for case, (patch, message) in operator_refusals.items():
        with pytest.raises(client.ApiException) as denied:
            as_operator.patch_namespaced_config_map(certs.ROTATION_CONFIGMAP, NAMESPACE, patch)
        assert denied.value.status in (403, 422), case
        said = api_message(denied.value)
        assert message in said or (case in writes_a_fact and facts_only in said), (
            case, denied.value.body)
    # Nor anyone else but the webhook: not even a cluster admin may write a fact.
    for case, patch in {"the served mark": {certs.SERVED_KEY: "forged"},
                        "a serving certificate": {certs.TLS_CERT: forged_cert},
                        "another key": {"x": "y"}}.items():
        with pytest.raises(client.ApiException) as denied:
            as_admin.patch_namespaced_config_map(certs.ROTATION_CONFIGMAP, NAMESPACE,
                                                 {"data": patch})
        assert denied.value.status in (403, 422), case
        assert facts_only in api_message(denied.value), (case, denied.value.body)
    unchanged = _rotation(raw_api)
    assert unchanged["metadata"]["resourceVersion"] == rotation["metadata"]["resourceVersion"]
    assert _state(raw_api)[0] == before
    # The positive control: a request, and the webhook (only it) makes the certificate and
    # publishes it.
    as_operator.patch_namespaced_config_map(certs.ROTATION_CONFIGMAP, NAMESPACE, {
        "data": {certs.REQUESTED_KEY: "e2e-by-hand@1"}})

    def serves() -> dict[str, str] | None:
        data: dict[str, str] = _rotation(raw_api)["data"]
        return data if data.get(certs.SERVED_KEY) == "e2e-by-hand@1" else None

    published = eventually(serves, timeout=20, what="the webhook to serve the request")
    served = _state(raw_api)[0]
    assert served.served == "e2e-by-hand@1"
    assert served.serving.cert.serial_number != before.serving.cert.serial_number
    assert published[certs.TLS_CERT] == served.serving.cert_pem.decode()


def test_the_webhook_makes_the_configmap_again_when_it_is_deleted(
        admin_api: client.ApiClient, raw_api: RawApi, webhook: WebhookProcess) -> None:
    """The webhook, not the operator, creates the ConfigMap (the operator holds no `create`):
    deleting it (what an admin does instead of editing facts) loses nothing but a pending
    request, and the next resync publishes the facts again, as the webhook's identity."""
    core = client.CoreV1Api(admin_api)
    state, _ = _state(raw_api)
    core.delete_namespaced_config_map(certs.ROTATION_CONFIGMAP, NAMESPACE)

    def again() -> dict[str, Any] | None:
        found = raw_api.request("GET", ROTATION_PATH)
        return found.body if found.body.get("kind") == "ConfigMap" else None

    made = eventually(again, timeout=30, what="the webhook to make the ConfigMap again")
    assert made["data"][certs.TLS_CERT] == _state(raw_api)[0].serving.cert_pem.decode()
    assert made["data"][certs.SIGNER_CERT] == state.ca.cert_pem.decode()
    managers = {m["manager"] for m in made["metadata"].get("managedFields", [])}
    assert managers == {"tenantry-webhook"}, managers
    assert webhook.running()
