"""Only the apiserver may send the webhook reviews: forged ones are refused and never recorded.

The attacker is anyone who can reach the webhook's port (a pod, a node, a laptop on the network)
and POSTs an AdmissionReview claiming to be someone else. Before client authentication, the audit
route appended that claim to the ledger as fact. The session's webhook requires the client
certificate the local control plane's apiserver presents (AdmissionConfiguration + kubeconfig,
as a real cluster is configured; README, "Webhook client authentication").
"""

from __future__ import annotations

import http.client
import json
import ssl
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from tenantry.devcluster import pki
from tenantry.devcluster.cluster import LocalControlPlane
from tenantry.devcluster.process import free_port
from tests.conftest import REPO_ROOT, Ledger
from tests.e2e.webhook.webhook_helpers import WebhookProcess, in_namespace
from tests.helpers import GROUP, VERSION, eventually, unique
from tests.unit.admission.admission_helpers import hardened_pod

MALLORY = {"username": "mallory", "groups": ["system:masters", "platform-team"]}
# A refused connection: the handshake fails (certificate of another CA), or the server drops it.
HANDSHAKE_REFUSED = (ssl.SSLError, ConnectionError, http.client.RemoteDisconnected)


def _review(kind: dict[str, str], resource: dict[str, str], obj: dict[str, Any],
            namespace: str = "") -> bytes:
    request = {"uid": str(uuid.uuid4()), "kind": kind, "resource": resource,
               "operation": "CREATE", "name": obj["metadata"]["name"], "userInfo": MALLORY,
               "object": obj, "dryRun": False}
    if namespace:
        request["namespace"] = namespace
    return json.dumps({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
                       "request": request}).encode()


def _tenant(name: str) -> dict[str, Any]:
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "Tenant", "metadata": {"name": name},
            "spec": {"members": [{"kind": "User", "name": "mallory", "role": "owner"}],
                     "namespaces": [{"name": f"{name}-app"}], "deletionPolicy": "Delete"}}


def _tenant_review(name: str) -> bytes:
    return _review({"group": GROUP, "version": VERSION, "kind": "Tenant"},
                   {"group": GROUP, "version": VERSION, "resource": "tenants"}, _tenant(name))


def _forgers(control_plane: LocalControlPlane, workdir: Path) -> dict[str, tuple[Path, Path]]:
    """Client certificates a forger might hold: one of another CA with the apiserver's CN, the
    cluster admin's own (signed by the cluster CA, not the webhook client CA)."""
    other = pki.make_client_cert(pki.make_ca("tenantry-dev-webhook-client-ca"),
                                 "kube-apiserver-webhook-client")
    (workdir / "other.crt").write_bytes(other.cert_pem)
    (workdir / "other.key").write_bytes(other.key_pem)
    return {"another CA": (workdir / "other.crt", workdir / "other.key"),
            "the cluster admin": (control_plane.workdir / "admin.crt",
                                  control_plane.workdir / "admin.key")}


def _wrong_cn(control_plane: LocalControlPlane, workdir: Path) -> tuple[Path, Path]:
    """A certificate of the right CA with another CN (as if that CA signed others too)."""
    ca = pki.KeyPair(control_plane.webhook_client_ca.read_bytes(),
                     (control_plane.workdir / "webhook-client-ca.key").read_bytes())
    pair = pki.make_client_cert(ca, "mallory")
    (workdir / "cn.crt").write_bytes(pair.cert_pem)
    (workdir / "cn.key").write_bytes(pair.key_pem)
    return workdir / "cn.crt", workdir / "cn.key"


def _attack(webhook: WebhookProcess, control_plane: LocalControlPlane, workdir: Path,
            path: str, body: bytes) -> None:
    """Every forgery of `body` to `path` is refused before any handler sees it."""
    status, answer = webhook.post(path, body, anonymous=True)
    assert status == 401, answer
    assert answer["reason"] == "Unauthorized" and "client certificate is required" in \
        answer["message"]
    status, answer = webhook.post(path, body, client_cert=_wrong_cn(control_plane, workdir))
    assert status == 403 and "CN (mallory) is not allowed" in answer["message"], answer
    for who, cert in _forgers(control_plane, workdir).items():
        try:
            answered = webhook.post(path, body, client_cert=cert)
        except HANDSHAKE_REFUSED:
            continue
        pytest.fail(f"a client certificate of {who} got an answer: {answered}")


def test_a_forged_tenant_review_is_refused_and_not_recorded_and_the_real_one_is(
        webhook: WebhookProcess, control_plane: LocalControlPlane, admin_api: client.ApiClient,
        ledger: Ledger, tmp_path: Path) -> None:
    name = unique("forged")
    _attack(webhook, control_plane, tmp_path, "/audit/resources", _tenant_review(name))
    # The audit route writes before it answers: a forged review would be there already.
    assert ledger.entries(name) == []
    assert "/audit/resources: refused a review from 127.0.0.1 (HTTP 401)" in webhook.log()
    # The apiserver's own review of the same change is admitted and recorded, with the identity
    # the apiserver authenticated, not one a caller claims.
    custom = client.CustomObjectsApi(admin_api)
    custom.create_cluster_custom_object(GROUP, VERSION, "tenants", _tenant(name))
    try:
        recorded = [e for e in ledger.entries(name) if e["component"] == "admission"]
        assert recorded, "the real create was not recorded"
        assert {e["identity"]["username"] for e in recorded} == {"tenantry-admin"}
        assert all(e["actor"] != "mallory" for e in ledger.entries(name))
    finally:
        custom.delete_cluster_custom_object(GROUP, VERSION, "tenants", name)


def test_a_forged_workload_review_is_refused_and_not_recorded(
        webhook: WebhookProcess, control_plane: LocalControlPlane, acme_psa_off: str,
        ledger: Ledger, tmp_path: Path) -> None:
    acme = acme_psa_off  # tenant wh-acme's, without Pod Security: the webhook alone decides
    root = hardened_pod()
    root["spec"]["securityContext"]["runAsNonRoot"] = False  # refused, so recorded
    forged = in_namespace(root, acme, unique("forged-pod"))
    body = _review({"group": "", "version": "v1", "kind": "Pod"},
                   {"group": "", "version": "v1", "resource": "pods"}, forged, acme)
    _attack(webhook, control_plane, tmp_path, "/validate/workloads", body)
    # The same review with the apiserver's certificate is judged, refused and recorded (through
    # the spool, in order: once it is in the ledger, a forged one sent before it would be too).
    # Posted directly, because ValidatingAdmissionPolicies of other tests may refuse the pod in
    # the apiserver before it calls the webhook.
    real = in_namespace(root, acme, unique("real-pod"))
    status, answer = webhook.post(
        "/validate/workloads",
        _review({"group": "", "version": "v1", "kind": "Pod"},
                {"group": "", "version": "v1", "resource": "pods"}, real, acme))
    assert status == 200 and answer["response"]["allowed"] is False, answer
    assert "[runAsNonRoot]" in answer["response"]["status"]["message"]

    def names() -> set[str]:
        return {e["resource_name"] for e in ledger.entries("wh-acme")}

    eventually(lambda: real["metadata"]["name"] in names(), timeout=30,
               what="the judged refusal in the ledger")
    assert forged["metadata"]["name"] not in names()


def _run_webhook(control_plane: LocalControlPlane,
                 *options: str) -> subprocess.CompletedProcess[str]:
    port = free_port()
    return subprocess.run(
        [sys.executable, "-m", "tenantry", "webhook", "run",
         "--kubeconfig", str(control_plane.admin_kubeconfig), "--listen", f"127.0.0.1:{port}",
         "--url", f"https://127.0.0.1:{port}", "--no-ledger", *options],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=60, check=False)


def test_the_webhook_refuses_to_start_without_a_client_ca_or_the_explicit_bypass(
        control_plane: LocalControlPlane, tmp_path: Path) -> None:
    result = _run_webhook(control_plane)
    assert result.returncode == 2, result.stderr
    assert "the apiserver must authenticate to the webhook" in result.stderr
    assert "--client-ca-file FILE" in result.stderr and "--insecure-no-client-auth" in \
        result.stderr
    empty = tmp_path / "empty.crt"
    empty.write_bytes(b"")
    result = _run_webhook(control_plane, "--client-ca-file", str(empty))
    assert result.returncode == 2
    assert f"--client-ca-file {empty}: holds no PEM certificate" in result.stderr
