"""The webhook's lifecycle through the real apiserver: stopped, restarted, rotating its CA.

- Stopped: tenant namespaces fail closed (failurePolicy Fail), kube-system and every namespace
  of no tenant carry on as if Tenantry did not exist; restarted, it re-uses its CA from the
  Secret (the caBundle does not change) and enforces again.
- CA rotation: a CA near its end is replaced; both CAs sit in the caBundle while the serving
  certificate moves to the new CA, which the server loads without a restart; requests made all
  along are judged by the webhook, none fails for TLS.
"""

from __future__ import annotations

import dataclasses
import datetime
import ssl
import threading
import time

from cryptography import x509
from cryptography.x509.oid import NameOID
from kubernetes import client

from tenantry.devcluster.cluster import LocalControlPlane
from tenantry.webhook import certs, configuration
from tests.e2e.webhook.conftest import CONFIGURATION, wait_enforcing, wait_for_log
from tests.e2e.webhook.webhook_helpers import (
    DENIED_BY_WORKLOADS,
    Outcome,
    RawApi,
    WebhookProcess,
    in_namespace,
)
from tests.helpers import eventually, unique
from tests.unit.admission.admission_helpers import hardened_pod

SECRET_PATH = "/api/v1/namespaces/tenantry-system/secrets/tenantry-webhook-tls"
CONFIGURATION_PATH = ("/apis/admissionregistration.k8s.io/v1/validatingwebhookconfigurations/"
                      + CONFIGURATION)


def _bundle(raw: RawApi) -> tuple[x509.Certificate, ...]:
    outcome = raw.request("GET", CONFIGURATION_PATH)
    assert outcome.status == 200, outcome
    bundles = {configuration.ca_bundle_of({"webhooks": [w]}) for w in outcome.body["webhooks"]}
    assert len(bundles) == 1, "every webhook entry carries the same caBundle"
    return tuple(x509.load_pem_x509_certificate(pem) for pem in certs.split_pems(bundles.pop()))


def _presented(webhook: WebhookProcess) -> x509.Certificate:
    pem = ssl.get_server_certificate(("127.0.0.1", webhook.port))
    return x509.load_pem_x509_certificate(pem.encode())


def _violating_pod(namespace: str) -> dict[str, object]:
    pod = hardened_pod()
    pod["spec"]["containers"][0]["securityContext"]["readOnlyRootFilesystem"] = False
    return in_namespace(pod, namespace, unique("probe"))


def test_stopped_webhook_blocks_tenant_namespaces_only(raw_api: RawApi, acme: str,
                                                      outsider: str,
                                                      webhook: WebhookProcess) -> None:
    bundle = _bundle(raw_api)
    webhook.stop()
    try:
        refused = raw_api.create(in_namespace(hardened_pod(), acme, unique("pod")))
        assert refused.status >= 400, refused
        assert "failed calling webhook" in refused.message, refused
        assert "workloads.admission.tenantry.dev" in refused.message
        for namespace in ("kube-system", outsider, "default"):
            pod = _violating_pod(namespace)
            outcome = raw_api.create(pod)
            assert outcome.status == 201, (namespace, outcome)
        # Objects the webhook does not cover at all carry on in tenant namespaces too.
        config_map = {"apiVersion": "v1", "kind": "ConfigMap",
                      "metadata": {"name": unique("cm"), "namespace": acme}}
        assert raw_api.request("POST", f"/api/v1/namespaces/{acme}/configmaps?dryRun=All",
                               config_map).status == 201
    finally:
        webhook.start()
        webhook.wait_ready()
        wait_enforcing(raw_api)
    assert _bundle(raw_api) == bundle, "a restart must re-use the CA in the Secret"
    assert raw_api.create(in_namespace(hardened_pod(), acme, unique("pod"))).status == 201


def test_ca_rotation_updates_the_ca_bundle_and_keeps_serving(
        raw_api: RawApi, control_plane: LocalControlPlane, acme: str,
        webhook: WebhookProcess, admin_api: client.ApiClient) -> None:
    secret = raw_api.request("GET", SECRET_PATH).body
    state, problem = certs.from_secret(secret)
    assert state is not None, problem
    old_ca = state.ca.cert
    # Re-date the CA (same key and name, so everything it signed still verifies) to 30 days
    # before its end: the webhook must see it as due for rotation.
    now = datetime.datetime.now(datetime.UTC)
    common_name = str(old_ca.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value)
    aged = certs.make_ca(now - datetime.timedelta(days=335), datetime.timedelta(days=365),
                         key_pem=state.ca.key_pem, common_name=common_name)
    aged_state = dataclasses.replace(state, ca=aged, trusted=(aged.cert_pem,))

    outcomes: list[Outcome] = []
    stop = threading.Event()

    def keep_asking() -> None:
        api = RawApi(control_plane)
        try:
            while not stop.is_set():
                outcomes.append(api.create(_violating_pod(acme)))
                time.sleep(0.05)
        finally:
            api.close()

    asker = threading.Thread(target=keep_asking, daemon=True)
    asker.start()
    try:
        written = raw_api.request("PUT", SECRET_PATH, certs.to_secret(
            aged_state, name="tenantry-webhook-tls", namespace="tenantry-system",
            resource_version=secret["metadata"]["resourceVersion"]))
        assert written.status == 200, written

        def rotated() -> tuple[x509.Certificate, ...] | None:
            bundle = _bundle(raw_api)
            return bundle if len(bundle) == 2 and bundle[0].subject != old_ca.subject else None

        new_ca, previous = eventually(rotated, timeout=20, what="a new CA in the caBundle")
        assert previous.subject == old_ca.subject
        assert previous.public_key() == old_ca.public_key()
        eventually(lambda: certs.issued_by(_presented(webhook), new_ca), timeout=20,
                   what="the server to present a certificate of the new CA")
        time.sleep(1.0)  # a few more requests against the new certificate
    finally:
        stop.set()
        asker.join(30)
    assert len(outcomes) > 20, "the asker barely ran"
    failed = [o for o in outcomes if DENIED_BY_WORKLOADS not in o.message]
    assert not failed, f"{len(failed)} of {len(outcomes)} requests not judged: {failed[:3]}"
    log = wait_for_log(webhook, "serving certificate reloaded")
    assert "is due for rotation" in log
    assert webhook.running()
    # The Secret agrees with what is published.
    final, _ = certs.from_secret(raw_api.request("GET", SECRET_PATH).body)
    assert final is not None
    assert [x509.load_pem_x509_certificate(p) for p in final.trusted] == list(_bundle(raw_api))
