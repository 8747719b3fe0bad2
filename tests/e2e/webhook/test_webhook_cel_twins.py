"""The webhook and the CEL twins in policies/ give the same verdict, seen in one request each.

Both run on the real apiserver at once, on one tenant namespace: the CEL policy bound there in
Warn mode (its verdict comes back as a warning naming the policy), the webhook enforcing the
tenant's Deny mode (its verdict is the answer). For every Pod Security Admission fixture pod,
as written and made read-only-root, bare and in a Deployment, the two must agree.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client

from tenantry import kube
from tenantry.admission import cel
from tenantry.model import common
from tests.conftest import REPO_ROOT
from tests.e2e.test_cel_policies import read_only_root
from tests.e2e.webhook.conftest import wait_default_service_account
from tests.e2e.webhook.webhook_helpers import (
    RawApi,
    WebhookProcess,
    deployment,
    dns_name,
    in_namespace,
)
from tests.helpers import eventually
from tests.unit.admission.admission_helpers import hardened_pod, psa_cases

POLICY = "tenantry-hardening"
NAMESPACE = "wh-twins"


def _cel_warned(warnings: tuple[str, ...]) -> bool:
    return any(POLICY in warning for warning in warnings)


@pytest.fixture(scope="module")
def twins(admin_api: client.ApiClient, acme: str, webhook: WebhookProcess,
          raw_api: RawApi) -> Iterator[str]:
    """A namespace of the Deny tenant wh-acme, with the CEL policy bound in Warn mode."""
    core = client.CoreV1Api(admin_api)
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(
        name=NAMESPACE, labels={common.TENANT_LABEL: "wh-acme", cel.MODE_LABEL: "Warn",
                                "pod-security.kubernetes.io/enforce": "privileged"})))
    documents = kube.load_manifests([REPO_ROOT / "policies" / "hardening-policy.yaml",
                                     REPO_ROOT / "policies" / "hardening-bindings.yaml"])
    kube.apply(admin_api, documents)
    admission = client.AdmissionregistrationV1Api(admin_api)
    try:
        wait_default_service_account(admin_api, NAMESPACE)
        bad = in_namespace({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "bad"},
                            "spec": {"containers": [{"name": "c", "image": "busybox"}]}},
                           NAMESPACE)
        eventually(lambda: _cel_warned(raw_api.create(bad).warnings),
                   what="the CEL policy to warn in the twins namespace")
        yield NAMESPACE
    finally:
        for document in documents:
            with contextlib.suppress(client.ApiException):
                if document["kind"] == "ValidatingAdmissionPolicyBinding":
                    admission.delete_validating_admission_policy_binding(
                        document["metadata"]["name"])
                else:
                    admission.delete_validating_admission_policy(document["metadata"]["name"])
        with contextlib.suppress(client.ApiException):
            core.delete_namespace(NAMESPACE)


def _objects() -> list[Any]:
    params = [pytest.param(hardened_pod(), id="hardened")]
    for case in psa_cases():
        for variant, pod in (("as-is", case.pod), ("read-only-root", read_only_root(case.pod))):
            params.append(pytest.param(pod, id=f"{case}-{variant}"))
    return params


@pytest.mark.parametrize("pod", _objects())
@pytest.mark.parametrize("kind", ["Pod", "Deployment"])
def test_webhook_and_cel_agree(twins: str, raw_api: RawApi, pod: dict[str, Any],
                               kind: str) -> None:
    name = dns_name(str(pod.get("metadata", {}).get("name") or "pod"))
    obj = (in_namespace(pod, twins, name) if kind == "Pod"
           else deployment(pod, twins, name))
    outcome = raw_api.create(obj)
    if outcome.status == 422:
        pytest.skip("refused by the apiserver's own validation before any admission")
    webhook_allowed = outcome.status == 201
    assert outcome.status in (201, 403), outcome.body
    cel_allowed = not _cel_warned(outcome.warnings)
    assert webhook_allowed == cel_allowed, (
        f"webhook {'allowed' if webhook_allowed else 'denied'} "
        f"({outcome.body.get('message', '')[:300]}), CEL "
        f"{'allowed' if cel_allowed else 'denied'} ({outcome.warnings})")
