"""manifests/webhook/: installed by kustomize, hardened by our own rules, least privilege."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from tenantry.admission import rules
from tenantry.webhook import configuration, routes

ROOT = Path(__file__).resolve().parents[3] / "manifests"


def _documents() -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}
    for path in sorted((ROOT / "webhook").glob("*.yaml")):
        for document in yaml.safe_load_all(path.read_text()):
            found[f"{document['kind']}/{document['metadata']['name']}"] = document
    return found


def test_the_kustomization_installs_the_webhook() -> None:
    resources = yaml.safe_load((ROOT / "kustomization.yaml").read_text())["resources"]
    assert "webhook/rbac.yaml" in resources and "webhook/deployment.yaml" in resources


def test_the_deployment_passes_the_rules_it_enforces() -> None:
    deployment = _documents()["Deployment/tenantry-webhook"]
    assert rules.check_object(deployment) == []
    assert deployment["spec"]["replicas"] == 2
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["args"][:4] == ["webhook", "run", "--service",
                                     "tenantry-system/tenantry-webhook"]
    assert container["readinessProbe"]["httpGet"]["scheme"] == "HTTPS"


def test_service_and_disruption_budget_select_the_pods() -> None:
    documents = _documents()
    labels = documents["Deployment/tenantry-webhook"]["spec"]["template"]["metadata"]["labels"]
    service = documents["Service/tenantry-webhook"]
    assert service["spec"]["selector"] == labels
    assert service["spec"]["ports"][0]["port"] == 443
    budget = documents["PodDisruptionBudget/tenantry-webhook"]
    assert budget["spec"]["selector"]["matchLabels"] == labels
    assert budget["spec"]["minAvailable"] == 1


def test_rbac_is_limited_to_what_the_webhook_does() -> None:
    documents = _documents()
    cluster_rules = documents["ClusterRole/tenantry-webhook"]["rules"]
    writes = [r for r in cluster_rules if set(r["verbs"]) - {"get", "list", "watch"}]
    assert all(r["resources"] == ["validatingwebhookconfigurations"] for r in writes)
    named = [r for r in writes if "resourceNames" in r]
    assert named and named[0]["resourceNames"] == [configuration.NAME]
    role_rules = documents["Role/tenantry-webhook"]["rules"]
    assert {(tuple(r["resources"]), tuple(r.get("resourceNames", ()))) for r in role_rules} == {
        (("secrets",), ()), (("secrets",), ("tenantry-webhook-tls",)),
        (("configmaps",), ()), (("configmaps",), ("tenantry-webhook-rotation",))}
    assert all(r["verbs"] == ["create"] for r in role_rules if "resourceNames" not in r)
    reads = {resource for r in cluster_rules for resource in r["resources"]
             if r["verbs"] == ["get", "list", "watch"]}
    assert reads == {"namespaces", "tenants"}
    assert routes.WORKLOADS  # the webhook names the RBAC does not need to know
