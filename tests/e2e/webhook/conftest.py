"""Fixtures of the webhook's e2e tests: the webhook itself, tenants to judge pods in, and Pod
Security Admission's fixture pods as parameters.

`webhook` runs `tenantry webhook run` for the whole session, as its ServiceAccount's user name
(so the RBAC in manifests/webhook/ is proven enough) and called by the apiserver at
https://127.0.0.1:PORT (presenting its webhook client certificate, which the webhook requires),
with a 1 s resync and a 2 s CA propagation delay so that rotations complete within a test. It
is ready once the apiserver demonstrably sends it reviews.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from tenantry import kube
from tenantry.admission.violation import Level
from tenantry.devcluster.cluster import LocalControlPlane
from tenantry.model import common
from tests.conftest import REPO_ROOT, OperatorProcess
from tests.e2e.webhook.webhook_helpers import (
    DENIED_BY_CREDENTIALS,
    WEBHOOK_GROUPS,
    WEBHOOK_USER,
    RawApi,
    WebhookProcess,
    credential,
)
from tests.helpers import GROUP, VERSION, conditions_of, eventually
from tests.unit.admission.admission_helpers import PsaCase, fixtures_root, psa_cases

CONFIGURATION = "tenantry-admission"
REQUIRED = os.environ.get("TENANTRY_REQUIRE_FIXTURES") == "1"

# Argument name -> the fixture pods it runs over.
CASES: dict[str, Callable[[PsaCase], bool]] = {
    "psa_fail_case": lambda case: case.verdict == "fail",
    "psa_restricted_pass_case": lambda case: (case.verdict == "pass"
                                              and case.level is Level.RESTRICTED),
}


def _params(wanted: Callable[[PsaCase], bool]) -> list[Any]:
    cases = [c for c in psa_cases() if wanted(c)]
    if cases:
        return [pytest.param(c, id=str(c)) for c in cases]
    _, reason = fixtures_root()
    if REQUIRED:
        raise pytest.UsageError(f"TENANTRY_REQUIRE_FIXTURES=1 but: {reason or 'no fixture pods'}")
    return [pytest.param(None, marks=pytest.mark.skip(reason=reason or "no fixture pods found"))]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    for name, wanted in CASES.items():
        if name in metafunc.fixturenames:
            metafunc.parametrize(name, _params(wanted))


@pytest.fixture(scope="session")
def raw_api(control_plane: LocalControlPlane) -> Iterator[RawApi]:
    api = RawApi(control_plane)
    yield api
    api.close()


def wait_enforcing(raw: RawApi, timeout: float = 30.0) -> None:
    """Until the apiserver sends reviews to the webhook: a Credential outside any tenant's
    namespace is refused by it (dry run, nothing stored)."""

    def refused() -> bool:
        outcome = raw.create(credential("default"))
        return DENIED_BY_CREDENTIALS in outcome.message

    eventually(refused, timeout=timeout, what="the apiserver to call the webhook")


def ledger_args(operator_options: list[str], spool: Path) -> list[str]:
    """The webhook records to the same ledger as the session's operator."""
    return ["--ledger-dsn-file",
            operator_options[operator_options.index("--ledger-dsn-file") + 1],
            "--ledger-spool", str(spool)]


@pytest.fixture(scope="session")
def webhook(control_plane: LocalControlPlane, crds: None, raw_api: RawApi,
            operator_options: list[str],
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebhookProcess]:
    """The webhook for the session; its configuration is removed afterwards (test hygiene: the
    product itself never removes it)."""
    api = kube.api_client(control_plane.admin_kubeconfig)
    try:
        kube.apply(api, kube.load_manifests([REPO_ROOT / "manifests" / "namespace.yaml",
                                             REPO_ROOT / "manifests" / "webhook" / "rbac.yaml"]))
        identity = control_plane.kubeconfig_for(WEBHOOK_USER, WEBHOOK_GROUPS)
        process = WebhookProcess(identity, tmp_path_factory.mktemp("webhook"),
                                 control_plane=control_plane,
                                 extra_args=["--resync", "1s", "--ca-propagation", "2s",
                                             *ledger_args(operator_options,
                                                          tmp_path_factory.mktemp("spool"))])
        process.start()
        try:
            process.wait_ready()
            wait_enforcing(raw_api)
            yield process
        finally:
            process.stop()
            with contextlib.suppress(client.ApiException):
                client.AdmissionregistrationV1Api(api).delete_validating_webhook_configuration(
                    CONFIGURATION)
    finally:
        api.close()


def wait_default_service_account(admin_api: client.ApiClient, namespace: str) -> None:
    """Pods need the namespace's default ServiceAccount (the ServiceAccount admission plugin)."""
    core = client.CoreV1Api(admin_api)
    eventually(lambda: core.read_namespaced_service_account("default", namespace),
               timeout=30, what=f"the default ServiceAccount of {namespace}")


@contextlib.contextmanager
def session_tenant(admin_api: client.ApiClient, name: str, namespaces: list[str],
                   **spec: Any) -> Iterator[dict[str, Any]]:
    """A Tenant made by the real operator, Ready, deleted (with its namespaces) afterwards."""
    custom = client.CustomObjectsApi(admin_api)
    body = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "Tenant", "metadata": {"name": name},
            "spec": {"members": [{"kind": "User", "name": "alice", "role": "owner"}],
                     "namespaces": [{"name": n} for n in namespaces],
                     "deletionPolicy": "Delete", **spec}}
    custom.create_cluster_custom_object(GROUP, VERSION, "tenants", body)
    try:
        def ready() -> dict[str, Any] | None:
            obj = custom.get_cluster_custom_object(GROUP, VERSION, "tenants", name)
            status = conditions_of(obj).get("Ready", {}).get("status")
            return obj if status == "True" else None

        tenant = eventually(ready, timeout=60, what=f"tenant {name} Ready")
        for namespace in namespaces:
            wait_default_service_account(admin_api, namespace)
        yield tenant
    finally:
        with contextlib.suppress(client.ApiException):
            custom.delete_cluster_custom_object(GROUP, VERSION, "tenants", name)


@pytest.fixture(scope="session")
def acme(admin_api: client.ApiClient, operator: OperatorProcess,
         webhook: WebhookProcess) -> Iterator[str]:
    """A Deny-mode tenant with one namespace (made by the operator: Pod Security `restricted`
    enforced too); yields the namespace."""
    with session_tenant(admin_api, "wh-acme", ["wh-acme-prod"]):
        yield "wh-acme-prod"


@pytest.fixture(scope="session")
def acme_psa_off(admin_api: client.ApiClient, acme: str) -> Iterator[str]:
    """A namespace labelled for tenant wh-acme but without Pod Security enforcement, so that
    pods reach the webhook even when Pod Security would refuse them first: what the webhook
    alone decides. (Admins can label namespaces; the Tenant does not list this one.)"""
    name = "wh-acme-nopsa"
    core = client.CoreV1Api(admin_api)
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(
        name=name, labels={common.TENANT_LABEL: "wh-acme",
                           "pod-security.kubernetes.io/enforce": "privileged"})))
    try:
        wait_default_service_account(admin_api, name)
        yield name
    finally:
        with contextlib.suppress(client.ApiException):
            core.delete_namespace(name)


@pytest.fixture(scope="session")
def outsider(admin_api: client.ApiClient, webhook: WebhookProcess) -> Iterator[str]:
    """A namespace of no tenant (and no Pod Security enforcement): the webhook never sees it."""
    name = "wh-outsider"
    core = client.CoreV1Api(admin_api)
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(
        name=name, labels={"pod-security.kubernetes.io/enforce": "privileged"})))
    try:
        wait_default_service_account(admin_api, name)
        yield name
    finally:
        with contextlib.suppress(client.ApiException):
            core.delete_namespace(name)


def wait_for_log(process: WebhookProcess, text: str, timeout: float = 10.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        log = process.log()
        if text in log:
            return log
        time.sleep(0.1)
    raise AssertionError(f"{text!r} not in the webhook's log:\n{process.log()[-3000:]}")
