"""Helpers shared by the ledger tests: per-test databases, sample events, superuser tampering."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from typing import Any

import asyncpg

from tenantry.devcluster.postgres import LocalPostgres
from tenantry.ledger import events, export, hashing, migrations


@dataclasses.dataclass(frozen=True)
class Database:
    """One test's database and the roles that go with it."""

    server: LocalPostgres
    name: str
    owner_role: str
    app_role: str
    app_password: str

    @property
    def admin_dsn(self) -> str:
        """The superuser, connected to this database."""
        return self.server.dsn(database=self.name)

    @property
    def app_dsn(self) -> str:
        return self.server.dsn(database=self.name, user=self.app_role,
                               password=self.app_password)

    async def migrate(self, **overrides: Any) -> migrations.MigrationReport:
        options: dict[str, Any] = {"app_role": self.app_role, "app_password": self.app_password,
                                   "owner_role": self.owner_role}
        options.update(overrides)
        return await migrations.migrate(self.admin_dsn, **options)


def make_event(n: int = 0, *, tenant: str | None = "acme", **fields: Any) -> events.AuditEvent:
    """A plausible event; `n` makes events distinguishable."""
    data: dict[str, Any] = {
        "tenant": tenant,
        "actor": "alice",
        "actor_kind": events.ActorKind.USER,
        "identity": events.kubernetes_identity("alice", ["team-a", "system:authenticated"]),
        "action": "tenant.update",
        "resource_kind": "Tenant",
        "resource_name": tenant or "platform",
        "changes": {"spec.quotas.cpu": {"from": str(n), "to": str(n + 1)}, "n": n},
        "source_ip": "10.1.2.3",
        "request_id": f"req-{n}",
        "component": "admission",
    }
    data.update(fields)
    return events.AuditEvent(**data)


async def tamper(admin_conn: asyncpg.Connection, sql: str, *args: Any) -> None:
    """Run SQL as the superuser with triggers off: what an attacker with full DB access does."""
    async with admin_conn.transaction():
        await admin_conn.execute("SET LOCAL session_replication_role = replica")
        await admin_conn.execute(sql, *args)


async def read_chain(conn: asyncpg.Connection, chain: str) -> list[hashing.LedgerRow]:
    """All rows of a chain, in order."""
    async with conn.transaction():
        rows: list[hashing.LedgerRow] = [row async for row in export.iter_rows(conn, chain)]
    return rows


async def read_head(conn: asyncpg.Connection, chain: str) -> tuple[int, str] | None:
    row = await conn.fetchrow("SELECT seq, hash FROM ledger.chain_heads WHERE chain = $1", chain)
    return None if row is None else (row["seq"], row["hash"])


_COLUMNS = (*hashing.ENTRY_FIELDS, "hash")


def db_values(row: hashing.LedgerRow) -> list[Any]:
    """A row's values as bind parameters for an INSERT listing `_COLUMNS`."""
    values = {name: getattr(row, name) for name in _COLUMNS}
    values["event_time"] = hashing.parse_event_time(row.event_time)
    values["identity"] = hashing.canonical_json(row.identity).decode()
    values["changes"] = hashing.canonical_json(row.changes).decode()
    return [values[name] for name in _COLUMNS]


# Constant column names only; the values are bind parameters.
INSERT_ROW = (f"INSERT INTO ledger.audit_log ({', '.join(_COLUMNS)}) "  # noqa: S608
              f"VALUES ({', '.join(f'${i}' for i in range(1, len(_COLUMNS) + 1))})")


def relink(rows: Iterable[hashing.LedgerRow], chain: str) -> list[hashing.LedgerRow]:
    """`rows` renumbered from 1, re-linked and rehashed: an internally consistent chain."""
    out: list[hashing.LedgerRow] = []
    prev = hashing.GENESIS_HASH
    for seq, row in enumerate(rows, start=1):
        linked = dataclasses.replace(row, chain=chain, seq=seq, prev_hash=prev)
        linked = dataclasses.replace(linked, hash=linked.compute_hash())
        out.append(linked)
        prev = linked.hash
    return out


async def forge_chain(admin_conn: asyncpg.Connection, chain: str,
                      rows: Iterable[hashing.LedgerRow]) -> list[hashing.LedgerRow]:
    """Replace a chain by `rows`, re-linked and rehashed, and move its head to match: a
    superuser's perfect rewrite, invisible to chain verification alone."""
    forged = relink(rows, chain)
    async with admin_conn.transaction():
        await admin_conn.execute("SET LOCAL session_replication_role = replica")
        await admin_conn.execute("DELETE FROM ledger.audit_log WHERE chain = $1", chain)
        for row in forged:
            await admin_conn.execute(INSERT_ROW, *db_values(row))
        await admin_conn.execute(
            "UPDATE ledger.chain_heads SET seq = $2, hash = $3 WHERE chain = $1",
            chain, len(forged), forged[-1].hash if forged else hashing.GENESIS_HASH)
    return forged
