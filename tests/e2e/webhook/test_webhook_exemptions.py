"""Exemptions meet Pod Security on bare Pods, through the real apiserver (issue 10).

Tenant namespaces always enforce Pod Security `restricted`, so only Tenantry's own rules can be
exempt: an exemption of readOnlyRootFilesystem admits a bare Pod that Pod Security accepts, an
exemption of a Pod Security rule is refused by the Tenant's schema, and image exemptions match
at a registry/repository boundary, never a bare string prefix. Bare Pods on purpose: Deployments
alone never reach Pod Security here (no ReplicaSet controller runs).
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client

from tests.conftest import api_message
from tests.e2e.webhook.conftest import session_tenant
from tests.e2e.webhook.webhook_helpers import WebhookProcess, in_namespace
from tests.helpers import GROUP, VERSION
from tests.unit.admission.admission_helpers import hardened_pod

NAMESPACE = "wh-exempt-prod"
LEGACY = "registry.example.com/legacy"


@pytest.fixture(scope="module")
def exempt(admin_api: client.ApiClient, operator: Any, webhook: WebhookProcess) -> Iterator[str]:
    exemption = {"rule": "readOnlyRootFilesystem", "image": LEGACY,
                 "reason": "legacy app writes its cache under /"}
    with session_tenant(admin_api, "wh-exempt", [NAMESPACE],
                        podSecurity={"exemptions": [exemption]}):
        yield NAMESPACE


def _writable_pod(name: str, image: str) -> dict[str, Any]:
    pod = in_namespace(hardened_pod(), NAMESPACE, name)
    for container in pod["spec"]["initContainers"] + pod["spec"]["containers"]:
        container["image"] = image
        container["securityContext"]["readOnlyRootFilesystem"] = False
    return pod


def _create(admin_api: client.ApiClient, pod: dict[str, Any]) -> str | None:
    """None when admitted (dry run), else the refusal's message."""
    try:
        client.CoreV1Api(admin_api).create_namespaced_pod(NAMESPACE, pod, dry_run="All")
    except client.ApiException as error:
        return api_message(error)
    return None


def test_an_exemption_of_tenantrys_own_rule_admits_a_bare_pod(
        exempt: str, admin_api: client.ApiClient) -> None:
    assert _create(admin_api, _writable_pod("legacy", f"{LEGACY}:1.2")) is None
    assert _create(admin_api, _writable_pod("legacy-digest", f"{LEGACY}@sha256:" + "a" * 64)) \
        is None


@pytest.mark.parametrize("image", [f"{LEGACY}.evil.io/x:1", f"{LEGACY}-fork:1",
                                   "registry.example.com.evil.io/legacy:1"])
def test_image_exemptions_match_at_a_boundary_not_a_string_prefix(
        exempt: str, admin_api: client.ApiClient, image: str) -> None:
    message = _create(admin_api, _writable_pod("lookalike", image))
    assert message is not None and "[readOnlyRootFilesystem]" in message, message


def test_pod_security_still_refuses_what_no_exemption_may_lift(
        exempt: str, admin_api: client.ApiClient) -> None:
    pod = _writable_pod("root", f"{LEGACY}:1.2")
    pod["spec"]["securityContext"]["runAsNonRoot"] = False
    message = _create(admin_api, pod)
    assert message is not None and "runAsNonRoot" in message, message


def test_the_tenant_schema_refuses_an_exemption_of_a_pod_security_rule(
        exempt: str, admin_api: client.ApiClient) -> None:
    custom = client.CustomObjectsApi(admin_api)
    tenant = custom.get_cluster_custom_object(GROUP, VERSION, "tenants", "wh-exempt")
    spec = copy.deepcopy(tenant["spec"])
    spec["podSecurity"]["exemptions"].append({"rule": "runAsNonRoot", "reason": "root app"})
    with pytest.raises(client.ApiException) as raised:
        custom.patch_cluster_custom_object(GROUP, VERSION, "tenants", "wh-exempt",
                                           {"spec": {"podSecurity": spec["podSecurity"]}})
    assert raised.value.status == 422
    message = api_message(raised.value)
    assert "spec.podSecurity.exemptions[1].rule" in message and "runAsNonRoot" in message
