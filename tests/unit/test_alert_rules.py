"""The alerting rules in manifests/monitoring/: valid, and about metrics that exist.

Every `tenantry_*` series an expression names must be served by a component's registry (the
operator's, the webhook's or the API's), so a renamed metric cannot silently disable an alert.
When promtool is available (built from the Go module proxy by `tenantry dev build`, cached in
~/.cache/tenantry), the rules are also checked by Prometheus' own tool.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tenantry import metrics as operator_metrics
from tenantry.api import metrics as api_metrics
from tenantry.devcluster import build
from tenantry.ledger.recorder import Recorder
from tenantry.ledger.spool import Spool
from tenantry.webhook import metrics as webhook_metrics
from tests.conftest import REPO_ROOT

RULES = REPO_ROOT / "manifests" / "monitoring" / "prometheusrule.yaml"
SUFFIXES = ("_total", "_count", "_sum", "_bucket", "_created")


def rules() -> list[dict[str, Any]]:
    document = yaml.safe_load(RULES.read_text())
    assert document["kind"] == "PrometheusRule"
    return [rule for group in document["spec"]["groups"] for rule in group["rules"]]


def served(spool_dir: Path) -> set[str]:
    """Every series the components serve, the ledger spool's (registered at run time, once
    the operator has its recorder) included."""
    ledger = operator_metrics.LedgerCollector(Recorder(Spool(spool_dir), "postgresql://unused",
                                                       "system:serviceaccount:t:op"))
    names: set[str] = set()
    for collector in (operator_metrics.REGISTRY, api_metrics.REGISTRY, webhook_metrics.REGISTRY,
                      ledger):
        for family in collector.collect():
            names.add(family.name)
            names.update(sample.name for sample in family.samples)
    return names


def family_of(series: str) -> str:
    for suffix in SUFFIXES:
        if series.endswith(suffix):
            return series[: -len(suffix)]
    return series


def test_every_alert_is_named_labelled_and_explained() -> None:
    found = rules()
    assert {rule["alert"] for rule in found} >= {
        "TenantryLedgerSpoolGrowing", "TenantryWebhookCertificateExpiring",
        "TenantryReconcileErrors", "TenantryRefreshTokenReuseSpike", "TenantryRotationStuck"}
    for rule in found:
        assert rule["labels"]["severity"] in ("page", "ticket"), rule["alert"]
        assert rule["annotations"]["summary"], rule["alert"]


def test_every_metric_an_alert_names_is_served(tmp_path: Path) -> None:
    available = served(tmp_path)
    families = {family_of(name) for name in available}
    for rule in rules():
        for series in re.findall(r"\btenantry_[a-z0-9_]+", rule["expr"]):
            assert series in available or family_of(series) in families, (rule["alert"], series)


def test_promtool_accepts_the_rules(tmp_path: Path) -> None:
    promtool = build.promtool_path()
    if not promtool.exists():
        reason = f"promtool not built ({promtool}); `tenantry dev build` builds it"
        if os.environ.get("TENANTRY_REQUIRE_FIXTURES") == "1":
            pytest.fail(f"TENANTRY_REQUIRE_FIXTURES=1 but: {reason}")
        pytest.skip(reason)
    document = yaml.safe_load(RULES.read_text())
    plain = tmp_path / "rules.yaml"
    plain.write_text(yaml.safe_dump({"groups": document["spec"]["groups"]}))
    result = subprocess.run([str(promtool), "check", "rules", str(plain)], capture_output=True,
                            text=True, check=False, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
