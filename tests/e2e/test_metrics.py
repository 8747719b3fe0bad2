"""The operator's `/metrics` on its health port, scraped as Prometheus would and parsed with
prometheus_client's own parser (a malformed exposition fails here): the numbers move with what
happened, and no label names a tenant."""

from __future__ import annotations

import urllib.request

from kubernetes import client
from prometheus_client import parser

from tests.conftest import Ledger, OperatorProcess
from tests.e2e.conftest import TenantFactory, owner
from tests.helpers import GROUP, VERSION, eventually, unique

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(operator: OperatorProcess) -> tuple[str, Samples, dict[str, str]]:
    """(the raw text, every sample by name and labels, each family's type)."""
    url = f"http://127.0.0.1:{operator.port}/metrics"
    with urllib.request.urlopen(url, timeout=5) as response:
        assert response.headers["Content-Type"].startswith("text/plain; version=")
        text = response.read().decode()
    samples: Samples = {}
    types: dict[str, str] = {}
    for family in parser.text_string_to_metric_families(text):
        types[family.name] = family.type
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return text, samples, types


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def test_the_operator_serves_its_metrics_in_prometheus_conventions(
        operator: OperatorProcess) -> None:
    _, samples, types = scrape(operator)
    assert types["tenantry_operator_reconciliations"] == "counter"
    assert types["tenantry_operator_reconcile_duration_seconds"] == "histogram"
    assert types["tenantry_operator_drift_corrections"] == "counter"
    assert types["tenantry_operator_leader"] == "gauge"
    assert types["tenantry_ledger_spool_entries"] == "gauge"
    assert types["tenantry_ledger_spool_oldest_entry_age_seconds"] == "gauge"
    assert types["tenantry_ledger_flush_errors"] == "counter"
    assert types["tenantry_credentials"] == "gauge"
    assert types["tenantry_rotation_in_progress_seconds"] == "gauge"
    assert value(samples, "tenantry_operator_leader") == 1.0
    assert types["process_resident_memory_bytes"] == "gauge"
    # The liveness probe shares the port and still answers.
    with urllib.request.urlopen(f"http://127.0.0.1:{operator.port}/healthz",
                                timeout=5) as response:
        assert response.status == 200


def test_reconciliations_and_drift_corrections_are_counted(
        operator: OperatorProcess, admin_api: client.ApiClient, tenants: TenantFactory) -> None:
    _, before, _ = scrape(operator)
    name = unique("metrics")
    tenants(name, [name], [owner(f"{name}-alice")])

    _, after, _ = scrape(operator)
    succeeded = ("tenantry_operator_reconciliations_total", {"kind": "Tenant",
                                                             "result": "succeeded"})
    assert value(after, succeeded[0], **succeeded[1]) > value(before, succeeded[0],
                                                              **succeeded[1])
    count = "tenantry_operator_reconcile_duration_seconds_count"
    assert value(after, count, kind="Tenant") > value(before, count, kind="Tenant")

    client.NetworkingV1Api(admin_api).delete_namespaced_network_policy(
        "tenantry-default-deny", name)
    drift = "tenantry_operator_drift_corrections_total"
    eventually(lambda: value(scrape(operator)[1], drift) > value(after, drift),
               what="the drift correction counter to rise")

    text, _, _ = scrape(operator)
    assert name not in text, "a tenant's name is a label value"


def test_children_applied_and_pruned_are_counted_by_kind(
        operator: OperatorProcess, admin_api: client.ApiClient, tenants: TenantFactory) -> None:
    applied, pruned = ("tenantry_operator_children_applied_total",
                       "tenantry_operator_children_pruned_total")
    _, before, types = scrape(operator)
    assert types["tenantry_operator_children_applied"] == "counter"
    name = unique("children")
    tenants(name, [name, f"{name}-b"], [owner(f"{name}-alice")], deletionPolicy="Delete")

    _, after, _ = scrape(operator)
    for kind in ("Namespace", "NetworkPolicy", "RoleBinding", "ResourceQuota"):
        assert value(after, applied, kind=kind) >= value(before, applied, kind=kind) + 2, kind

    # The second namespace leaves the spec: it and what was in it are deleted (Delete).
    client.CustomObjectsApi(admin_api).patch_cluster_custom_object(
        GROUP, VERSION, "tenants", name, {"spec": {"namespaces": [{"name": name}]}})
    eventually(lambda: value(scrape(operator)[1], pruned, kind="Namespace")
               > value(after, pruned, kind="Namespace"),
               what="the pruned-children counter for Namespaces to rise")
    text, _, _ = scrape(operator)
    assert name not in text


def test_the_ledger_spool_depth_rises_during_an_outage_and_drains(
        operator: OperatorProcess, ledger: Ledger, tenants: TenantFactory) -> None:
    name = unique("metspool")
    with ledger.outage():
        tenants(name, [name], [owner(f"{name}-alice")])
        waiting = eventually(
            lambda: (lambda s: s if value(s, "tenantry_ledger_spool_entries") > 0 else None)(
                scrape(operator)[1]),
            what="audit events to wait in the spool")
        assert value(waiting, "tenantry_ledger_spool_oldest_entry_age_seconds") >= 0.0
    eventually(lambda: value(scrape(operator)[1], "tenantry_ledger_spool_entries") == 0,
               timeout=90, what="the spool to drain once the ledger is back")
    _, drained, _ = scrape(operator)
    assert value(drained, "tenantry_ledger_spool_oldest_entry_age_seconds") == 0.0
    assert value(drained, "tenantry_ledger_flushed_events_total") > 0
