"""The operator's own changes land in the audit ledger, with its identity, and none is lost
while the ledger is down."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import asyncpg
from kubernetes import client

from tenantry.ledger import migrations, verify
from tests.conftest import OPERATOR_USER, Ledger, OperatorProcess
from tests.e2e.conftest import TenantFactory, owner
from tests.helpers import eventually, unique


def _entries(ledger: Ledger, chain: str) -> list[dict[str, Any]]:
    async def fetch() -> list[dict[str, Any]]:
        conn = await asyncpg.connect(ledger.app_dsn)
        try:
            rows = await conn.fetch(
                "SELECT seq, actor, actor_kind, identity, action, resource_kind, resource_name,"
                " changes, component FROM ledger.audit_log WHERE chain = $1 ORDER BY seq", chain)
        finally:
            await conn.close()
        return [{**dict(row), "identity": json.loads(row["identity"]),
                 "changes": json.loads(row["changes"])} for row in rows]

    return asyncio.run(fetch())


def _chain_ok(ledger: Ledger, chain: str) -> verify.VerifyResult:
    async def run() -> verify.VerifyResult:
        conn = await asyncpg.connect(ledger.app_dsn)
        try:
            return await verify.verify_chain(conn, chain)
        finally:
            await conn.close()

    return asyncio.run(run())


def _admin(ledger: Ledger, *statements: str) -> None:
    async def run() -> None:
        conn = await asyncpg.connect(ledger.admin_dsn)
        try:
            for statement in statements:
                await conn.execute(statement)
        finally:
            await conn.close()

    asyncio.run(run())


def test_tenant_changes_and_drift_corrections_are_recorded_with_the_operators_identity(
        admin_api: client.ApiClient, tenants: TenantFactory, ledger: Ledger) -> None:
    name = unique("audited")
    tenants(name, [f"{name}-app"], [owner(f"{name}-alice")])
    created = eventually(lambda: [e for e in _entries(ledger, name)
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
    drift = eventually(lambda: [e for e in _entries(ledger, name)
                                if e["action"] == "tenant.drift-corrected"],
                       what="the drift correction in the ledger")
    assert "NetworkPolicy tenantry-default-deny was deleted" in drift[0]["changes"]["drift"]
    result = _chain_ok(ledger, name)
    assert result.ok, result.describe()
    assert result.checked == len(_entries(ledger, name)) >= 2


def test_a_ledger_outage_delays_entries_but_loses_none(
        admin_api: client.ApiClient, tenants: TenantFactory, ledger: Ledger,
        operator: OperatorProcess) -> None:
    role = migrations.DEFAULT_APP_ROLE
    name = unique("outage")
    # The database refuses the operator: its login is disabled and its sessions are cut.
    _admin(ledger, f'ALTER ROLE "{role}" NOLOGIN',
           "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
           " WHERE datname = current_database() AND pid <> pg_backend_pid()")
    try:
        tenants(name, [f"{name}-app"], [owner(f"{name}-alice")])
        eventually(lambda: "audit ledger unavailable" in operator.log(),
                   what="the operator to report the ledger outage")

        # The Tenant is served regardless; its entry waits in the spool.
        async def count() -> int:
            conn = await asyncpg.connect(ledger.admin_dsn)
            try:
                return int(await conn.fetchval(
                    "SELECT count(*) FROM ledger.audit_log WHERE chain = $1", name))
            finally:
                await conn.close()

        assert asyncio.run(count()) == 0
    finally:
        _admin(ledger, f'ALTER ROLE "{role}" LOGIN')
    entries = eventually(lambda: _entries(ledger, name), timeout=60,
                         what="the spooled entry to reach the ledger once it is back")
    assert [e["action"] for e in entries][:1] == ["tenant.reconcile"]
    assert ledger.app_dsn.split("@")[0].rsplit(":", 1)[1] not in operator.log()
    result = _chain_ok(ledger, name)
    assert result.ok, result.describe()
