"""Append-only at the database level, proven as the application role and then as the owner.

Two independent layers: the app role lacks the privileges (so PostgreSQL refuses before any
trigger runs), and triggers refuse UPDATE, DELETE and TRUNCATE even for the role owning the
tables. Each refusal is an error, never a silent no-op.
"""

from __future__ import annotations

import json

import asyncpg
import pytest

from tenantry.ledger import append, hashing, verify
from tests.ledger.ledger_helpers import Database, make_event, read_chain, read_head

pytestmark = pytest.mark.postgres


@pytest.fixture
async def chain(app_conn: asyncpg.Connection) -> list[hashing.LedgerRow]:
    """Three entries in chain 'acme', as the app role wrote them."""
    await append.append_batch(app_conn, [make_event(i) for i in range(3)])
    return await read_chain(app_conn, "acme")


async def assert_unchanged(conn: asyncpg.Connection, before: list[hashing.LedgerRow]) -> None:
    assert await read_chain(conn, "acme") == before
    result = await verify.verify_chain(conn, "acme")
    assert result.ok
    assert result.checked == len(before)


# -- as the application role ---------------------------------------------------------------------

@pytest.mark.parametrize("sql", [
    "UPDATE ledger.audit_log SET action = 'tenant.delete' WHERE seq = 2",
    "UPDATE ledger.audit_log SET action = 'x' WHERE false",
    "DELETE FROM ledger.audit_log WHERE seq = 3",
    "DELETE FROM ledger.audit_log",
    "TRUNCATE ledger.audit_log",
    "TRUNCATE ledger.audit_log CASCADE",
])
async def test_app_role_cannot_change_or_remove_entries(
        app_conn: asyncpg.Connection, chain: list[hashing.LedgerRow], sql: str) -> None:
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        await app_conn.execute(sql)
    await assert_unchanged(app_conn, chain)


async def test_app_role_cannot_insert_entries_directly(
        app_conn: asyncpg.Connection, chain: list[hashing.LedgerRow]) -> None:
    last = chain[-1]
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        await app_conn.execute(
            "INSERT INTO ledger.audit_log (chain, seq, tenant, actor, actor_kind, action, "
            "resource_kind, component, prev_hash, hash) VALUES ('acme', 4, 'acme', 'mallory', "
            "'user', 'forged', 'Tenant', 'api', $1, $2)", last.hash, "0" * 64)
    await assert_unchanged(app_conn, chain)


@pytest.mark.parametrize("sql", [
    "UPDATE ledger.chain_heads SET seq = 1",
    "UPDATE ledger.chain_heads SET hash = repeat('0', 64)",
    "DELETE FROM ledger.chain_heads",
    "TRUNCATE ledger.chain_heads",
    "INSERT INTO ledger.chain_heads (chain, seq, hash) VALUES ('evil', 0, repeat('0', 64))",
    "SELECT * FROM ledger.chain_heads FOR UPDATE",
])
async def test_app_role_cannot_move_or_lock_chain_heads(
        app_conn: asyncpg.Connection, chain: list[hashing.LedgerRow], sql: str) -> None:
    head = await read_head(app_conn, "acme")
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        await app_conn.execute(sql)
    assert await read_head(app_conn, "acme") == head == (3, chain[-1].hash)
    await assert_unchanged(app_conn, chain)


@pytest.mark.parametrize("sql", [
    "UPDATE ledger.checkpoints SET signature = 'x'",
    "DELETE FROM ledger.checkpoints",
    "TRUNCATE ledger.checkpoints",
])
async def test_app_role_can_add_checkpoints_but_not_change_them(
        app_conn: asyncpg.Connection, sql: str) -> None:
    await app_conn.execute(
        "INSERT INTO ledger.checkpoints (key_id, payload, signature) VALUES ('k', '{}', 's')")
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        await app_conn.execute(sql)
    assert await app_conn.fetchval("SELECT count(*) FROM ledger.checkpoints") == 1


async def test_app_role_cannot_use_the_internal_functions(app_conn: asyncpg.Connection) -> None:
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        await app_conn.fetchval("SELECT ledger.jcs('{}'::jsonb)")


@pytest.mark.parametrize("member", ["seq", "event_time", "hash", "prev_hash", "chain"])
async def test_app_cannot_choose_position_time_or_hash(
        app_conn: asyncpg.Connection, member: str) -> None:
    event = {**make_event().payload(), member: "2000-01-01T00:00:00Z"}
    with pytest.raises(asyncpg.InvalidParameterValueError, match="unknown members"):
        await app_conn.fetch("SELECT * FROM ledger.append_batch($1::jsonb)", json.dumps([event]))
    assert await app_conn.fetchval("SELECT count(*) FROM ledger.audit_log") == 0


async def test_the_typed_sql_append_function_works_for_the_app(
        app_conn: asyncpg.Connection) -> None:
    row = await app_conn.fetchrow(
        "SELECT * FROM ledger.append(tenant => 'acme', actor => 'alice', actor_kind => 'user', "
        "action => 'tenant.create', resource_kind => 'Tenant', component => 'psql', "
        "source_ip => '2001:DB8:0::1')")
    assert (row["chain"], row["seq"]) == ("acme", 1)
    stored = (await read_chain(app_conn, "acme"))[0]
    assert stored.source_ip == "2001:db8::1"
    assert stored.hash == row["hash"] == stored.compute_hash()


# -- as the owner role, and as the superuser: the triggers -----------------------------------------

@pytest.mark.parametrize("sql", [
    "UPDATE ledger.audit_log SET action = 'tenant.delete' WHERE seq = 2",
    "UPDATE ledger.audit_log SET action = 'x' WHERE false",
    "DELETE FROM ledger.audit_log WHERE seq = 3",
    "DELETE FROM ledger.audit_log WHERE false",
    "TRUNCATE ledger.audit_log",
    "INSERT INTO ledger.audit_log SELECT * FROM ledger.audit_log WHERE seq = 1 "
    "ON CONFLICT (chain, seq) DO UPDATE SET action = 'x'",
    "DELETE FROM ledger.checkpoints",
    "DELETE FROM ledger.chain_heads",
    "TRUNCATE ledger.chain_heads",
])
@pytest.mark.parametrize("as_owner", [True, False], ids=["owner", "superuser"])
async def test_triggers_refuse_changes_even_for_the_owner_and_superuser(
        ledger_db: Database, admin_conn: asyncpg.Connection, chain: list[hashing.LedgerRow],
        sql: str, as_owner: bool) -> None:
    async with admin_conn.transaction():
        if as_owner:
            await admin_conn.execute(f'SET LOCAL ROLE "{ledger_db.owner_role}"')
        with pytest.raises(asyncpg.PostgresError,
                           match=r"append-only|does not extend|may only move forward"):
            await admin_conn.execute(sql)
    await assert_unchanged(admin_conn, chain)


async def test_owner_inserts_that_break_the_chain_are_refused(
        ledger_db: Database, admin_conn: asyncpg.Connection,
        chain: list[hashing.LedgerRow]) -> None:
    insert = ("INSERT INTO ledger.audit_log (chain, seq, tenant, actor, actor_kind, action, "
              "resource_kind, component, prev_hash) VALUES ('acme', $1, 'acme', 'mallory', "
              "'user', 'forged', 'Tenant', 'api', $2)")
    for seq, prev in ((5, chain[-1].hash),    # a gap
                      (4, chain[0].hash),     # links to the wrong entry
                      (1, hashing.GENESIS_HASH)):  # a second entry 1
        async with admin_conn.transaction():
            await admin_conn.execute(f'SET LOCAL ROLE "{ledger_db.owner_role}"')
            with pytest.raises(asyncpg.IntegrityConstraintViolationError):
                await admin_conn.execute(insert, seq, prev)
    await assert_unchanged(admin_conn, chain)


async def test_an_owner_insert_that_bypasses_the_append_function_is_detected(
        ledger_db: Database, admin_conn: asyncpg.Connection,
        chain: list[hashing.LedgerRow]) -> None:
    """A well-linked insert by hand is sealed by the trigger but leaves the head behind."""
    async with admin_conn.transaction():
        await admin_conn.execute(f'SET LOCAL ROLE "{ledger_db.owner_role}"')
        await admin_conn.execute(
            "INSERT INTO ledger.audit_log (chain, seq, tenant, actor, actor_kind, action, "
            "resource_kind, component, prev_hash, event_time, hash) VALUES ('acme', 4, 'acme', "
            "'mallory', 'user', 'forged', 'Tenant', 'api', $1, '2001-01-01', $2)",
            chain[-1].hash, "f" * 64)
    forged = (await read_chain(admin_conn, "acme"))[-1]
    assert not forged.event_time.startswith("2001")  # the server's clock, not the inserter's
    assert forged.hash == forged.compute_hash() != "f" * 64
    result = await verify.verify_chain(admin_conn, "acme")
    assert not result.ok
    assert (result.first_broken_seq, result.kind) == (4, verify.BreakKind.HEAD)


@pytest.mark.parametrize(("seq_offset", "use_hash_of"), [(-1, -2), (0, -2), (1, -1)])
async def test_heads_only_move_forward_to_existing_entries(
        ledger_db: Database, admin_conn: asyncpg.Connection, chain: list[hashing.LedgerRow],
        seq_offset: int, use_hash_of: int) -> None:
    async with admin_conn.transaction():
        await admin_conn.execute(f'SET LOCAL ROLE "{ledger_db.owner_role}"')
        with pytest.raises(asyncpg.IntegrityConstraintViolationError,
                           match="may only move forward"):
            await admin_conn.execute(
                "UPDATE ledger.chain_heads SET seq = seq + $1, hash = $2 WHERE chain = 'acme'",
                seq_offset, chain[use_hash_of].hash)
    assert await read_head(admin_conn, "acme") == (3, chain[-1].hash)
