"""The operator's own changes land in the audit ledger, with its identity, and none is lost
while the ledger is down."""

from __future__ import annotations

from kubernetes import client

from tests.conftest import OPERATOR_USER, Ledger, OperatorProcess
from tests.e2e.conftest import TenantFactory, owner
from tests.helpers import eventually, unique


def test_tenant_changes_and_drift_corrections_are_recorded_with_the_operators_identity(
        admin_api: client.ApiClient, tenants: TenantFactory, ledger: Ledger) -> None:
    name = unique("audited")
    tenants(name, [f"{name}-app"], [owner(f"{name}-alice")])
    created = eventually(lambda: [e for e in ledger.entries(name)
                                  if e["action"] == "tenant.reconcile"],
                         what="the tenant's reconcile entry in the ledger")
    entry = created[0]
    assert entry["actor"] == OPERATOR_USER
    assert entry["actor_kind"] == "serviceaccount"
    assert entry["component"] == "operator"
    assert (entry["resource_kind"], entry["resource_name"]) == ("Tenant", name)
    assert entry["changes"]["trigger"] == "create"
    assert entry["changes"]["namespaces"] == {f"{name}-app": "Create"}

    # Someone deletes the default-deny policy: the operator restores it and says so.
    client.NetworkingV1Api(admin_api).delete_namespaced_network_policy(
        "tenantry-default-deny", f"{name}-app")
    drift = eventually(lambda: [e for e in ledger.entries(name)
                                if e["action"] == "tenant.drift-corrected"],
                       what="the drift correction in the ledger")
    assert "NetworkPolicy tenantry-default-deny was deleted" in drift[0]["changes"]["drift"]
    result = ledger.verify(name)
    assert result.ok, result.describe()
    assert result.checked == len(ledger.entries(name)) >= 2


def test_a_ledger_outage_delays_entries_but_loses_none(
        admin_api: client.ApiClient, tenants: TenantFactory, ledger: Ledger,
        operator: OperatorProcess) -> None:
    name = unique("outage")
    with ledger.outage():
        tenants(name, [f"{name}-app"], [owner(f"{name}-alice")])
        eventually(lambda: "audit ledger unavailable" in operator.log(),
                   what="the operator to report the ledger outage")
        # The Tenant is served regardless; its entry waits in the spool (read as superuser).
        assert ledger.entries(name, as_admin=True) == []
    entries = eventually(lambda: ledger.entries(name), timeout=60,
                         what="the spooled entry to reach the ledger once it is back")
    assert [e["action"] for e in entries][:1] == ["tenant.reconcile"]
    assert ledger.app_dsn.split("@")[0].rsplit(":", 1)[1] not in operator.log()
    result = ledger.verify(name)
    assert result.ok, result.describe()
