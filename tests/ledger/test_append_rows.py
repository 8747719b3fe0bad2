"""Version 2's append path: a ledger written at version 1 keeps verifying once migrated, and what
the faster path trusts is still checked by the database or caught by verification.

`ledger.append_rows` takes identity and changes as canonical JSON text from the writer and skips
the per-row seal trigger (`ledger.sealed_by`); the statement-level `audit_log_linked` trigger
still refuses any row that does not extend its chain or does not carry the server's time.
"""

from __future__ import annotations

import dataclasses
import json

import asyncpg
import pytest

from tenantry.ledger import append, hashing, migrations, schema, verify
from tests.ledger.ledger_helpers import Database, make_event, read_chain, read_head

pytestmark = pytest.mark.postgres

_APPEND_ROWS = ("SELECT * FROM ledger.append_rows($1::text[], $2::text[], $3::text[], "
                "$4::text[], $5::text[], $6::text[], $7::text[], $8::text[], $9::text[], "
                "$10::text[], $11::text[], $12::text[])")

#: The ledger as version 1 shipped it: its one migration, its two functions.
LEDGER_V1 = dataclasses.replace(
    migrations.LEDGER, migrations=schema.MIGRATIONS[:1],
    function_grants=tuple(f for f in schema.APP_FUNCTION_GRANTS
                          if not f.startswith(("ledger.append_rows(", "ledger.watch("))))


async def test_a_version_1_ledger_verifies_after_migrating_and_appends_continue_its_chains(
        empty_db: Database) -> None:
    await empty_db.migrate(component=LEDGER_V1)
    conn = await asyncpg.connect(empty_db.app_dsn)
    try:
        assert await migrations.current_version(conn) == 1
        old = [make_event(i).payload() for i in range(4)]
        old += [make_event(i, tenant=None).payload() for i in range(2)]
        await conn.fetch("SELECT * FROM ledger.append_batch($1::jsonb)", json.dumps(old))
        before = await verify.verify_all(conn)
        assert [(r.chain, r.ok, r.checked) for r in before] == [
            (hashing.PLATFORM_CHAIN, True, 2), ("acme", True, 4)]
        last_old = (await read_chain(conn, "acme"))[-1]

        report = await empty_db.migrate()
        assert report.applied == tuple(m.version for m in schema.MIGRATIONS[1:])
        await migrations.require_current(conn)
        assert [(r.chain, r.ok, r.checked) for r in await verify.verify_all(conn)] == [
            (hashing.PLATFORM_CHAIN, True, 2), ("acme", True, 4)]

        # The new path, from Python, and the JSON one, from SQL: both extend the old chains.
        new = await append.append_batch(conn, [make_event(10), make_event(11, tenant=None),
                                               make_event(12, tenant="beta")])
        assert [(a.chain, a.seq) for a in new] == [
            ("acme", 5), (hashing.PLATFORM_CHAIN, 3), ("beta", 1)]
        await conn.fetch("SELECT * FROM ledger.append_batch($1::jsonb)",
                         json.dumps([make_event(13).payload()]))
        rows = await read_chain(conn, "acme")
        assert rows[4].prev_hash == last_old.hash
        assert [row.seq for row in rows] == [1, 2, 3, 4, 5, 6]
        assert all(row.compute_hash() == row.hash for row in rows)
        assert [(r.chain, r.ok, r.checked) for r in await verify.verify_all(conn)] == [
            (hashing.PLATFORM_CHAIN, True, 3), ("acme", True, 6), ("beta", True, 1)]
        assert await read_head(conn, "acme") == (6, rows[-1].hash)
    finally:
        await conn.close()


async def test_the_app_role_may_call_append_rows_and_nothing_it_bypasses(
        app_conn: asyncpg.Connection) -> None:
    appended = await append.append(app_conn, make_event(1))
    assert (appended.chain, appended.seq) == ("acme", 1)
    # Setting the marker buys the app nothing: it has no INSERT on the table to use it with.
    await app_conn.execute("SET ledger.sealed_by = 'append_rows'")
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        await app_conn.execute(
            "INSERT INTO ledger.audit_log (chain, seq, tenant, actor, actor_kind, action, "
            "resource_kind, component, prev_hash, hash) VALUES ('acme', 2, 'acme', 'mallory', "
            "'user', 'forged', 'Tenant', 'api', $1, $1)", appended.hash)
    assert [row.seq for row in await read_chain(app_conn, "acme")] == [1]


@pytest.mark.parametrize(("seq", "prev", "when"), [
    (3, "last", "clock_timestamp()"),        # a gap
    (2, "genesis", "clock_timestamp()"),     # links to the wrong entry
    (2, "last", "'2001-01-01'"),             # well linked, but a time of the inserter's choice
])
async def test_presealed_inserts_by_the_owner_must_still_extend_the_chain(
        ledger_db: Database, admin_conn: asyncpg.Connection, app_conn: asyncpg.Connection,
        seq: int, prev: str, when: str) -> None:
    """The owner (or a superuser) may set the marker that skips the seal trigger; the
    statement trigger still refuses what append_rows would never write. (`when` is one of the
    constants above, hence the f-string.)"""
    first = await append.append(app_conn, make_event(1))
    prev_hash = first.hash if prev == "last" else hashing.GENESIS_HASH
    async with admin_conn.transaction():
        await admin_conn.execute(f'SET LOCAL ROLE "{ledger_db.owner_role}"')
        await admin_conn.execute("SET LOCAL ledger.sealed_by = 'append_rows'")
        with pytest.raises(asyncpg.IntegrityConstraintViolationError,
                           match=r"does not extend the chain|server's time"):
            await admin_conn.execute(
                "INSERT INTO ledger.audit_log (chain, seq, event_time, tenant, actor, "  # noqa: S608
                "actor_kind, action, resource_kind, component, prev_hash, hash) VALUES "
                f"('acme', $1, {when}, 'acme', 'mallory', 'user', 'forged', 'Tenant', 'api', "
                "$2, $3)", seq, prev_hash, "f" * 64)
    assert [row.seq for row in await read_chain(app_conn, "acme")] == [1]
    assert (await verify.verify_chain(app_conn, "acme")).ok


async def test_a_writer_that_sends_non_canonical_json_is_caught_by_verification(
        app_conn: asyncpg.Connection) -> None:
    """What the database takes on trust from the writer: that identity and changes are RFC 8785
    text. A writer that lies gets its entry stored, and verification names that entry."""
    await append.append(app_conn, make_event(1))
    columns = append._columns([make_event(2)])
    columns[8] = ['{"n": 2, "b": 1}']  # whitespace and unsorted keys: not canonical
    await app_conn.fetch(_APPEND_ROWS, *columns)
    await append.append(app_conn, make_event(3))
    result = await verify.verify_chain(app_conn, "acme")
    assert (result.ok, result.first_broken_seq, result.kind) == (False, 2,
                                                                  verify.BreakKind.CHANGED)


async def test_arrays_of_different_lengths_are_refused(app_conn: asyncpg.Connection) -> None:
    columns = append._columns([make_event(1), make_event(2)])
    columns[4] = columns[4][:1]
    with pytest.raises(asyncpg.InvalidParameterValueError, match="of one length"):
        await app_conn.fetch(_APPEND_ROWS, *columns)
    assert await app_conn.fetchval("SELECT count(*) FROM ledger.audit_log") == 0
