"""Migrations on a real PostgreSQL: idempotent, concurrency-safe, and the roles they set up."""

from __future__ import annotations

import asyncio
import secrets

import asyncpg
import pytest

from tenantry.ledger import append, migrations, schema, verify
from tests.ledger.ledger_helpers import Database, make_event

pytestmark = pytest.mark.postgres


async def test_first_run_applies_everything_and_records_it(empty_db: Database) -> None:
    conn = await asyncpg.connect(empty_db.admin_dsn)
    try:
        assert await migrations.current_version(conn) == 0
        with pytest.raises(migrations.MigrationError, match="version 0"):
            await migrations.require_current(conn)
        report = await empty_db.migrate()
        assert report.applied == tuple(m.version for m in schema.MIGRATIONS)
        assert report.version == migrations.LATEST_VERSION
        rows = await conn.fetch("SELECT version, checksum FROM ledger.schema_migrations")
        assert {(r["version"], r["checksum"]) for r in rows} == {
            (m.version, m.checksum) for m in schema.MIGRATIONS}
        await migrations.require_current(conn)
        owner = await conn.fetchval(
            "SELECT tableowner FROM pg_tables WHERE schemaname = 'ledger' "
            "AND tablename = 'audit_log'")
        assert owner == empty_db.owner_role
    finally:
        await conn.close()


async def test_running_again_changes_nothing_and_keeps_data(ledger_db: Database) -> None:
    async with asyncpg.create_pool(ledger_db.app_dsn, min_size=1, max_size=2) as pool:
        await append.append_batch(pool, [make_event(i) for i in range(3)])
        again = await ledger_db.migrate()
        assert again.applied == ()
        third = await ledger_db.migrate()
        assert third.applied == ()
        appended = await append.append(pool, make_event(3))
        assert appended.seq == 4
        result = await verify.verify_chain(pool, "acme")
        assert result.ok
        assert result.checked == 4
    conn = await asyncpg.connect(ledger_db.admin_dsn)
    try:
        assert await conn.fetchval("SELECT count(*) FROM ledger.schema_migrations") == len(
            schema.MIGRATIONS)
    finally:
        await conn.close()


async def test_concurrent_migrators_apply_each_migration_once(empty_db: Database) -> None:
    reports = await asyncio.gather(*(empty_db.migrate() for _ in range(5)))
    applied = [report.applied for report in reports]
    assert applied.count(tuple(m.version for m in schema.MIGRATIONS)) == 1
    assert applied.count(()) == 4
    conn = await asyncpg.connect(empty_db.admin_dsn)
    try:
        assert await conn.fetchval("SELECT count(*) FROM ledger.schema_migrations") == len(
            schema.MIGRATIONS)
    finally:
        await conn.close()


async def test_a_changed_applied_migration_stops_the_run(ledger_db: Database) -> None:
    conn = await asyncpg.connect(ledger_db.admin_dsn)
    try:
        await conn.execute("UPDATE ledger.schema_migrations SET checksum = 'edited'")
    finally:
        await conn.close()
    with pytest.raises(migrations.MigrationError, match="changed after it was applied"):
        await ledger_db.migrate()


async def test_app_role_may_only_read_and_call_the_append_functions(
        ledger_db: Database, admin_conn: asyncpg.Connection) -> None:
    app = ledger_db.app_role

    async def table_privilege(table: str, privilege: str) -> bool:
        return bool(await admin_conn.fetchval("SELECT has_table_privilege($1, $2, $3)",
                                              app, table, privilege))

    for table in ("ledger.audit_log", "ledger.chain_heads", "ledger.schema_migrations"):
        assert await table_privilege(table, "SELECT")
        for privilege in ("INSERT", "UPDATE", "DELETE", "TRUNCATE", "REFERENCES", "TRIGGER"):
            assert not await table_privilege(table, privilege), (table, privilege)
    assert await table_privilege("ledger.checkpoints", "INSERT")
    for privilege in ("UPDATE", "DELETE", "TRUNCATE"):
        assert not await table_privilege("ledger.checkpoints", privilege)

    functions = await admin_conn.fetch(
        "SELECT p.oid::regprocedure::text AS name, has_function_privilege($1, p.oid, 'EXECUTE') "
        "AS may FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace "
        "WHERE n.nspname = 'ledger'", app)
    executable = {row["name"] for row in functions if row["may"]}
    assert executable == {
        "ledger.append_rows(text[],text[],text[],text[],text[],text[],text[],text[],text[],"
        "text[],text[],text[])",
        "ledger.append_batch(jsonb)",
        "ledger.append(text,text,text,text,text,text,jsonb,text,text,jsonb,text,text)",
        "ledger.watch(text)"}  # arms a chain for the live stream (version 5), nothing more
    attrs = await admin_conn.fetchrow(
        "SELECT rolsuper, rolcreaterole, rolcreatedb, rolbypassrls, rolcanlogin "
        "FROM pg_roles WHERE rolname = $1", app)
    assert dict(attrs) == {"rolsuper": False, "rolcreaterole": False, "rolcreatedb": False,
                           "rolbypassrls": False, "rolcanlogin": True}
    owner_login = await admin_conn.fetchval(
        "SELECT rolcanlogin FROM pg_roles WHERE rolname = $1", ledger_db.owner_role)
    assert owner_login is False


async def test_password_is_stored_as_a_scram_verifier_and_can_be_rotated(
        ledger_db: Database, admin_conn: asyncpg.Connection) -> None:
    stored = await admin_conn.fetchval(
        "SELECT rolpassword FROM pg_authid WHERE rolname = $1", ledger_db.app_role)
    assert stored.startswith("SCRAM-SHA-256$4096:")
    assert ledger_db.app_password not in stored

    new_password = secrets.token_urlsafe(18)
    await ledger_db.migrate(app_password=new_password)
    conn = await asyncpg.connect(ledger_db.server.dsn(
        database=ledger_db.name, user=ledger_db.app_role, password=new_password))
    assert await conn.fetchval("SELECT current_user") == ledger_db.app_role
    await conn.close()
    with pytest.raises(asyncpg.InvalidPasswordError):
        await asyncpg.connect(ledger_db.app_dsn)

    # Without a password, a re-run leaves the current one alone.
    await ledger_db.migrate(app_password=None)
    conn = await asyncpg.connect(ledger_db.server.dsn(
        database=ledger_db.name, user=ledger_db.app_role, password=new_password))
    await conn.close()


def test_non_ascii_passwords_are_refused_rather_than_hashed_wrongly() -> None:
    with pytest.raises(ValueError, match="ASCII"):
        migrations.scram_verifier("pässword")
    with pytest.raises(ValueError, match="ASCII"):
        migrations.scram_verifier("")


async def test_a_privileged_app_role_is_refused(empty_db: Database) -> None:
    conn = await asyncpg.connect(empty_db.admin_dsn)
    try:
        await conn.execute(f'CREATE ROLE "{empty_db.app_role}" LOGIN SUPERUSER')
        with pytest.raises(migrations.MigrationError, match="superuser"):
            await empty_db.migrate()
        await conn.execute(f'ALTER ROLE "{empty_db.app_role}" NOSUPERUSER')
        await conn.execute(f'CREATE ROLE "{empty_db.owner_role}" NOLOGIN')
        await conn.execute(f'GRANT "{empty_db.owner_role}" TO "{empty_db.app_role}"')
        with pytest.raises(migrations.MigrationError, match="member of the owner role"):
            await empty_db.migrate()
    finally:
        await conn.close()


@pytest.mark.parametrize("bad", ['app"; DROP TABLE x; --', "App", "1app", "a" * 64])
async def test_role_names_are_checked_before_any_sql(empty_db: Database, bad: str) -> None:
    with pytest.raises(migrations.MigrationError, match="role name"):
        await empty_db.migrate(app_role=bad)


async def test_same_role_for_app_and_owner_is_refused(empty_db: Database) -> None:
    with pytest.raises(migrations.MigrationError, match="must not be the owner"):
        await empty_db.migrate(app_role=empty_db.owner_role)


async def test_a_createrole_administrator_can_migrate(empty_db: Database) -> None:
    """Managed PostgreSQL services give no superuser: CREATEROLE plus a database owner."""
    admin_role = f"adm_{empty_db.owner_role}"
    password = secrets.token_urlsafe(18)
    root = await asyncpg.connect(empty_db.admin_dsn)
    try:
        await root.execute(f"CREATE ROLE \"{admin_role}\" LOGIN CREATEROLE PASSWORD '{password}'")
        await root.execute(f'ALTER DATABASE "{empty_db.name}" OWNER TO "{admin_role}"')
        report = await migrations.migrate(
            empty_db.server.dsn(database=empty_db.name, user=admin_role, password=password),
            app_role=empty_db.app_role, app_password=empty_db.app_password,
            owner_role=empty_db.owner_role)
        assert report.applied == tuple(m.version for m in schema.MIGRATIONS)
        async with asyncpg.create_pool(empty_db.app_dsn, min_size=1, max_size=1) as pool:
            await append.append(pool, make_event())
            assert (await verify.verify_chain(pool, "acme")).ok
    finally:
        await root.close()
        # The database (owned by the administrator) must go before the administrator can.
        cleanup = await asyncpg.connect(empty_db.server.dsn(database="postgres"))
        try:
            await cleanup.execute(f'DROP DATABASE IF EXISTS "{empty_db.name}" WITH (FORCE)')
            await cleanup.execute(f'DROP ROLE IF EXISTS "{admin_role}"')
        finally:
            await cleanup.close()
