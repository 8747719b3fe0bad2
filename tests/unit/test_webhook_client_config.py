"""The local control plane authenticates to webhooks as Kubernetes documents: the kubeconfig and
AdmissionConfiguration builders, and the admission plugins it turns on."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tenantry.devcluster import cluster, pki


def test_the_webhook_kubeconfig_holds_only_the_apiservers_client_certificate() -> None:
    ca = pki.make_ca("webhook-client-ca")
    client = pki.make_client_cert(ca, cluster.WEBHOOK_CLIENT_CN)
    document = cluster.webhook_client_kubeconfig_document(client)
    assert document["kind"] == "Config"
    # "*" is the apiserver's catch-all match (after exact and "*."-prefix names); no
    # current-context, so nothing else in the file is used as a fallback.
    assert [u["name"] for u in document["users"]] == ["*"]
    assert "current-context" not in document and "contexts" not in document
    user = document["users"][0]["user"]
    assert base64.b64decode(user["client-certificate-data"]) == client.cert_pem
    assert base64.b64decode(user["client-key-data"]) == client.key_pem
    cert = x509.load_pem_x509_certificate(client.cert_pem)
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == \
        "kube-apiserver-webhook-client"
    assert ExtendedKeyUsageOID.CLIENT_AUTH in cert.extensions.get_extension_for_class(
        x509.ExtendedKeyUsage).value
    cert.verify_directly_issued_by(x509.load_pem_x509_certificate(ca.cert_pem))
    service = "tenantry-webhook.tenantry-system.svc"
    named = cluster.webhook_client_kubeconfig_document(client, service)
    assert named["users"][0]["name"] == service


def test_the_admission_configuration_names_the_kubeconfig_for_both_webhook_plugins() -> None:
    path = Path("/etc/kubernetes/webhook-client.kubeconfig")
    document = cluster.admission_configuration_document(path)
    assert (document["apiVersion"], document["kind"]) == ("apiserver.config.k8s.io/v1",
                                                          "AdmissionConfiguration")
    assert {p["name"]: p["configuration"] for p in document["plugins"]} == {
        name: {"apiVersion": "apiserver.config.k8s.io/v1",
               "kind": "WebhookAdmissionConfiguration",
               "kubeConfigFile": "/etc/kubernetes/webhook-client.kubeconfig"}
        for name in ("ValidatingAdmissionWebhook", "MutatingAdmissionWebhook")}


def test_a_relative_kubeconfig_path_is_refused() -> None:
    with pytest.raises(ValueError, match="absolute path"):
        cluster.admission_configuration_document(Path("webhook-client.kubeconfig"))


def test_service_external_ips_are_denied_on_the_local_control_plane() -> None:
    # CVE-2020-8554: whoever may create a Service could otherwise capture traffic to any IP.
    assert "DenyServiceExternalIPs" in cluster.ADMISSION_PLUGINS
    assert {"ValidatingAdmissionWebhook", "MutatingAdmissionWebhook", "PodSecurity"} <= set(
        cluster.ADMISSION_PLUGINS)
