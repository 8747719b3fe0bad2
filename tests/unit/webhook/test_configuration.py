"""The ValidatingWebhookConfiguration builder (pure), and what its selectors can ever match."""

from __future__ import annotations

import base64
from collections.abc import Mapping
from typing import Any

import pytest

from tenantry.admission import podspecs
from tenantry.model import common
from tenantry.webhook import configuration, routes
from tenantry.webhook.records import Recorder
from tenantry.webhook.review import AdmissionRequest, Verdict

OPERATOR_NAMESPACE = "tenantry-system"


async def _allow(request: AdmissionRequest) -> Verdict:
    return Verdict.allow()


class _NoTenants:
    async def tenant_of(self, namespace: str) -> Any:
        raise AssertionError("not called")


def _routes() -> list[routes.WebhookRoute]:
    context = routes.HandlerContext(tenants=_NoTenants(),  # type: ignore[arg-type]
                                    recorder=Recorder(), operator_namespace=OPERATOR_NAMESPACE)
    return routes.build_routes(context)


def _build(**kwargs: Any) -> dict[str, Any]:
    options: dict[str, Any] = {"endpoint": configuration.UrlEndpoint("https://127.0.0.1:9443"),
                               "ca_bundle": b"PEM"}
    options.update(kwargs)
    return configuration.webhook_configuration(_routes(), **options)


def _entry(config: Mapping[str, Any], name: str) -> dict[str, Any]:
    return next(w for w in config["webhooks"] if w["name"] == name)


def matches(selector: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    """metav1.LabelSelector semantics (matchLabels and the four operators)."""
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expression in selector.get("matchExpressions") or []:
        key, operator, values = expression["key"], expression["operator"], \
            expression.get("values", [])
        if operator == "In" and labels.get(key) not in values:
            return False
        if operator == "NotIn" and key in labels and labels[key] in values:
            return False
        if operator == "Exists" and key not in labels:
            return False
        if operator == "DoesNotExist" and key in labels:
            return False
    return True


def namespace_labels(name: str, **labels: str) -> dict[str, str]:
    """A namespace's labels as the apiserver has them (it always sets metadata.name)."""
    return {"kubernetes.io/metadata.name": name, **labels}


# -- the workloads webhook -----------------------------------------------------------------------

def test_workloads_webhook_is_fail_closed_fast_and_side_effect_free() -> None:
    entry = _entry(_build(), routes.WORKLOADS)
    assert entry["failurePolicy"] == "Fail"
    assert entry["sideEffects"] == "None"
    assert entry["timeoutSeconds"] <= 5
    assert entry["admissionReviewVersions"] == ["v1"]
    assert entry["matchPolicy"] == "Equivalent"
    assert all(rule["operations"] == ["CREATE", "UPDATE"] for rule in entry["rules"])
    assert entry["clientConfig"]["url"] == "https://127.0.0.1:9443/validate/workloads"
    assert base64.b64decode(entry["clientConfig"]["caBundle"]) == b"PEM"


def test_workloads_webhook_covers_pods_every_pod_template_kind_and_services() -> None:
    entry = _entry(_build(), routes.WORKLOADS)
    covered = {(group, resource) for rule in entry["rules"] for group in rule["apiGroups"]
               for resource in rule["resources"]}
    plural = {"Pod": "pods", "PodTemplate": "podtemplates",
              "ReplicationController": "replicationcontrollers", "Deployment": "deployments",
              "StatefulSet": "statefulsets", "DaemonSet": "daemonsets",
              "ReplicaSet": "replicasets", "Job": "jobs", "CronJob": "cronjobs"}
    assert {(group, plural[kind]) for group, kind in podspecs.POD_PATHS} <= covered
    assert ("", "pods/ephemeralcontainers") in covered
    assert ("", "services") in covered


def test_selector_selects_tenant_namespaces_only() -> None:
    selector = _entry(_build(), routes.WORKLOADS)["namespaceSelector"]
    tenant = {common.TENANT_LABEL: "acme"}
    assert matches(selector, namespace_labels("acme-prod", **tenant))
    # Namespaces of no tenant: untouched, whatever happens to the webhook.
    for name in ("default", "team-x", "monitoring"):
        assert not matches(selector, namespace_labels(name))
    # The system and Tenantry itself: never, even if someone labelled them for a tenant.
    for name in ("kube-system", "kube-public", "kube-node-lease", OPERATOR_NAMESPACE):
        assert not matches(selector, namespace_labels(name))
        assert not matches(selector, namespace_labels(name, **tenant)), name


def test_no_webhook_ever_selects_the_system_or_tenantry() -> None:
    """With failurePolicy Fail, a crashed webhook blocks exactly what its selectors match: no
    entry may match kube-system, kube-public, kube-node-lease or Tenantry's namespace."""
    config = _build()
    for entry in config["webhooks"]:
        assert entry["failurePolicy"] == "Fail"
        for name in ("kube-system", "kube-public", "kube-node-lease", OPERATOR_NAMESPACE):
            labels = namespace_labels(name, **{common.TENANT_LABEL: "acme"})
            assert not matches(entry["namespaceSelector"], labels), (entry["name"], name)


def test_excluded_namespaces_follow_the_operator_namespace() -> None:
    assert configuration.excluded_namespaces("platform-tenantry") == (
        "kube-node-lease", "kube-public", "kube-system", "platform-tenantry")


def test_credentials_webhook_sees_every_namespace_but_the_system() -> None:
    entry = _entry(_build(), routes.CREDENTIALS)
    assert entry["rules"] == [{"apiGroups": ["tenantry.dev"], "apiVersions": ["v1alpha1"],
                               "resources": ["credentials"],
                               "operations": ["CREATE", "UPDATE", "DELETE"],
                               "scope": "Namespaced"}]
    assert matches(entry["namespaceSelector"], namespace_labels("default"))
    assert not matches(entry["namespaceSelector"], namespace_labels("kube-system"))



def test_only_the_operators_spec_keeping_updates_skip_the_credentials_webhook() -> None:
    """The exemption names the operator, UPDATE and an unchanged spec, all three (the apiserver
    evaluates it; tests/e2e/webhook/test_webhook.py attacks it)."""
    operator = "system:serviceaccount:tenantry-system:tenantry-operator"
    context = routes.HandlerContext(tenants=_NoTenants(),  # type: ignore[arg-type]
                                    recorder=Recorder(), operator_namespace=OPERATOR_NAMESPACE,
                                    operator_user=operator)
    config = configuration.webhook_configuration(
        routes.build_routes(context), endpoint=configuration.UrlEndpoint("https://127.0.0.1:9443"),
        ca_bundle=b"PEM")
    condition, deletes = _entry(config, routes.CREDENTIALS)["matchConditions"]
    assert condition["expression"] == (
        f"!(request.userInfo.username == '{operator}' && request.operation == 'UPDATE' && "
        "has(object.spec) && has(oldObject.spec) && object.spec == oldObject.spec)")
    assert deletes == routes.CREDENTIAL_DELETES
    # No operator named: every create and update is reviewed (deletes as above).
    assert _entry(_build(), routes.CREDENTIALS)["matchConditions"] == [
        routes.CREDENTIAL_DELETES]


# -- endpoints and settings ----------------------------------------------------------------------

def test_service_endpoint() -> None:
    endpoint = configuration.ServiceEndpoint("tenantry-system", "tenantry-webhook")
    entry = _entry(_build(endpoint=endpoint), routes.WORKLOADS)
    assert entry["clientConfig"]["service"] == {
        "namespace": "tenantry-system", "name": "tenantry-webhook",
        "path": "/validate/workloads", "port": 443}
    assert "url" not in entry["clientConfig"]
    assert configuration.serving_names(endpoint)[0] == "tenantry-webhook.tenantry-system.svc"


def test_serving_names_deduplicate_and_normalise() -> None:
    endpoint = configuration.UrlEndpoint("https://127.0.0.1:9443/")
    assert configuration.serving_names(endpoint, ["127.0.0.1", "Webhook.Local"]) == (
        "127.0.0.1", "webhook.local")
    assert _entry(_build(endpoint=endpoint), routes.WORKLOADS)["clientConfig"]["url"] == \
        "https://127.0.0.1:9443/validate/workloads"


@pytest.mark.parametrize("url", ["http://127.0.0.1:9443", "https://", "https://h/?q=1",
                                 "https://user@h/"])
def test_url_endpoint_is_validated(url: str) -> None:
    with pytest.raises(ValueError, match="webhook URL"):
        configuration.UrlEndpoint(url)


def test_timeout_is_at_most_five_seconds() -> None:
    assert _entry(_build(timeout_seconds=2), routes.WORKLOADS)["timeoutSeconds"] == 2
    with pytest.raises(ValueError, match="timeoutSeconds must be 1 to 5"):
        _build(timeout_seconds=6)


def test_failure_policy() -> None:
    assert {w["failurePolicy"] for w in _build(failure_policy="Ignore")["webhooks"]} == \
        {"Ignore"}
    with pytest.raises(ValueError, match="failurePolicy"):
        _build(failure_policy="Maybe")


def test_an_empty_ca_bundle_is_refused() -> None:
    with pytest.raises(ValueError, match="caBundle"):
        _build(ca_bundle=b"")


# -- adding a route ------------------------------------------------------------------------------

def test_a_route_is_one_line_and_its_entry_follows() -> None:
    audit = routes.WebhookRoute(
        "resources.audit.tenantry.dev", "/audit/resources", _allow,
        rules=(routes.Rule(("tenantry.dev",), ("*",), ("tenants", "credentials"),
                           operations=("CREATE", "UPDATE", "DELETE"), scope="*"),),
        match_conditions=({"name": "not-operator",
                           "expression": "request.userInfo.username != 'op'"},),
        failure_policy="Ignore", side_effects="NoneOnDryRun", timeout_seconds=3)
    config = configuration.webhook_configuration(
        [*_routes(), audit], endpoint=configuration.UrlEndpoint("https://127.0.0.1:9443"),
        ca_bundle=b"PEM")
    entry = _entry(config, "resources.audit.tenantry.dev")
    assert entry["clientConfig"]["url"].endswith("/audit/resources")
    assert entry["failurePolicy"] == "Ignore" and entry["sideEffects"] == "NoneOnDryRun"
    assert entry["timeoutSeconds"] == 3
    assert entry["matchConditions"][0]["name"] == "not-operator"
    assert entry["namespaceSelector"] == {}
    assert entry["rules"][0]["operations"] == ["CREATE", "UPDATE", "DELETE"]
    assert "matchConditions" not in _entry(config, routes.WORKLOADS)


def test_webhook_names_must_be_unique() -> None:
    with pytest.raises(ValueError, match="unique"):
        configuration.webhook_configuration(
            [*_routes(), *_routes()],
            endpoint=configuration.UrlEndpoint("https://127.0.0.1:9443"), ca_bundle=b"PEM")


def test_ca_bundle_of() -> None:
    assert configuration.ca_bundle_of(_build(ca_bundle=b"X\n")) == b"X\n"
    assert configuration.ca_bundle_of({}) == b""
