"""What we ship is valid for the real apiserver and meets our own hardening rules."""

from __future__ import annotations

from pathlib import Path

import pytest
from kubernetes import client

from tenantry import kube
from tenantry.admission import check
from tests.conftest import REPO_ROOT

# manifests/monitoring/ holds a PrometheusRule, a kind of prometheus-operator's that this
# apiserver has no CRD for; tests/unit/test_alert_rules.py checks it (promtool, metric names).
SHIPPED = sorted(p for p in (REPO_ROOT / "manifests").rglob("*.yaml")
                 if p.name != "kustomization.yaml" and p.parent.name != "monitoring")


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: str(p.relative_to(REPO_ROOT)))
def test_shipped_manifest_is_accepted_by_the_apiserver_and_hardened(
        path: Path, admin_api: client.ApiClient, crds: None) -> None:
    documents = kube.load_manifests([path])
    assert documents, f"{path} holds no objects"
    located = [check.Located(source=str(path), document=i, item=None, obj=doc)
               for i, doc in enumerate(documents, start=1)]
    report = check.check_objects(located)
    assert report.exit_code == 0, check.render_text(report)
    # The namespaces must exist for a dry run of what goes into them (samples name acme-prod).
    namespaces = {d["metadata"]["namespace"] for d in documents
                  if d.get("metadata", {}).get("namespace")}
    kube.apply(admin_api, [{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": n}}
                           for n in sorted(namespaces)], field_manager="tenantry-tests")
    kube.apply(admin_api, documents, dry_run=True)
