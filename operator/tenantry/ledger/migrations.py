"""Apply the ledger's schema (`schema.MIGRATIONS`) and set up its two roles.

`migrate(dsn_admin, app_role=..., app_password=...)` connects with an administrative DSN (a
superuser, or a role with CREATEROLE that may create schemas in the database) and:

1. takes a database-wide advisory lock, so concurrent migrators (several API replicas starting at
   once) run one after another; the others then find nothing left to do;
2. creates the NOLOGIN owner role and the application (LOGIN) role if missing; sets the app
   role's password when one is given. The password travels as a SCRAM-SHA-256 verifier computed
   here, so its plain text never appears in SQL text, server logs or pg_stat_statements. Refuses
   an app role that is a superuser, may bypass row security, or is a member of the owner role;
3. applies each pending migration in its own transaction as the owner role and records it in
   `ledger.schema_migrations`, refusing to continue when an applied migration's SQL changed;
4. converges the app role's privileges to exactly `schema.APP_TABLE_GRANTS` and
   `schema.APP_FUNCTION_GRANTS` (everything else on the schema's objects is revoked).

Every step is idempotent: running `migrate` again changes nothing but the password, if given.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import hashlib
import hmac
import re
import secrets
from typing import Any

import asyncpg

from tenantry.ledger import schema

DEFAULT_OWNER_ROLE = "tenantry_ledger_owner"
DEFAULT_APP_ROLE = "tenantry_app"

# One 64-bit key for "the ledger schema of this database" (advisory locks are per database).
_LOCK_KEY = int.from_bytes(hashlib.sha256(b"tenantry.ledger.migrate").digest()[:8], "big",
                           signed=True)
_ROLE_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


class MigrationError(RuntimeError):
    """The schema cannot be brought up to date safely; nothing after the failing step ran."""


@dataclasses.dataclass(frozen=True)
class MigrationReport:
    """What a `migrate` run did."""

    applied: tuple[int, ...]
    """Versions applied by this run (empty when the schema was already current)."""
    version: int
    """The schema version after the run."""


LATEST_VERSION = max(m.version for m in schema.MIGRATIONS)


def scram_verifier(password: str, *, iterations: int = 4096, salt: bytes | None = None) -> str:
    """The SCRAM-SHA-256 verifier PostgreSQL stores for `password` (RFC 5802 / 7677).

    Only printable ASCII passwords are accepted: PostgreSQL applies SASLprep to other passwords
    before hashing, and a verifier computed without it would silently never match.
    """
    if not password or not password.isascii() or not password.isprintable():
        raise ValueError("the app password must be non-empty printable ASCII")
    salt = secrets.token_bytes(16) if salt is None else salt
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    client_key = hmac.new(salted, b"Client Key", "sha256").digest()
    stored_key = hashlib.sha256(client_key).digest()
    server_key = hmac.new(salted, b"Server Key", "sha256").digest()

    def b64(data: bytes) -> str:
        return base64.b64encode(data).decode()

    return f"SCRAM-SHA-256${iterations}:{b64(salt)}${b64(stored_key)}:{b64(server_key)}"


def _ident(name: str) -> str:
    """A role name, checked and quoted for SQL (role names are not bind parameters)."""
    if not _ROLE_NAME.match(name):
        raise MigrationError(f"role name {name!r} must match {_ROLE_NAME.pattern}")
    return f'"{name}"'


async def migrate(dsn_admin: str, *, app_role: str = DEFAULT_APP_ROLE,
                  app_password: str | None = None, owner_role: str = DEFAULT_OWNER_ROLE,
                  lock_timeout: float = 60.0) -> MigrationReport:
    """Bring the ledger schema in the DSN's database to the latest version (see module doc).

    `app_password=None` leaves an existing app role's password alone (a new role then has none
    and cannot log in with a password until one is set).
    """
    conn = await asyncpg.connect(dsn_admin)
    try:
        return await migrate_connection(conn, app_role=app_role, app_password=app_password,
                                        owner_role=owner_role, lock_timeout=lock_timeout)
    finally:
        await conn.close()


async def migrate_connection(conn: Any, *, app_role: str = DEFAULT_APP_ROLE,
                             app_password: str | None = None,
                             owner_role: str = DEFAULT_OWNER_ROLE,
                             lock_timeout: float = 60.0) -> MigrationReport:
    """`migrate` on an open administrative connection (not inside a transaction)."""
    owner, app = _ident(owner_role), _ident(app_role)
    if owner_role == app_role:
        raise MigrationError("the app role must not be the owner role")
    verifier = None if app_password is None else scram_verifier(app_password)
    if await conn.fetchval("SELECT current_user") == app_role:
        raise MigrationError("connect as an administrator, not as the app role")
    await _lock(conn, lock_timeout)
    try:
        async with conn.transaction():
            if await conn.fetchval("SHOW server_encoding") != "UTF8":
                raise MigrationError("the ledger needs a UTF8 database (hashes are over UTF-8)")
            await _ensure_roles(conn, owner_role, app_role, verifier)
            await _ensure_schema(conn, owner_role)
        applied = await _applied_checksums(conn)
        for migration in schema.MIGRATIONS:
            recorded = applied.get(migration.version)
            if recorded is not None and recorded != migration.checksum:
                raise MigrationError(
                    f"migration {migration.version} was changed after it was applied "
                    "(checksum differs); add a new migration instead")
        done: list[int] = []
        for migration in schema.MIGRATIONS:
            if migration.version in applied:
                continue
            async with conn.transaction():
                await conn.execute(f"SET LOCAL ROLE {owner}")
                await conn.execute(migration.sql)
                await conn.execute(
                    "INSERT INTO ledger.schema_migrations (version, name, checksum) "
                    "VALUES ($1, $2, $3)", migration.version, migration.name, migration.checksum)
            done.append(migration.version)
        async with conn.transaction():
            await _grant_app(conn, owner, app, app_role)
        return MigrationReport(applied=tuple(done), version=LATEST_VERSION)
    finally:
        # A broken connection has released the session lock already.
        if not conn.is_closed():
            await conn.execute("SELECT pg_advisory_unlock($1)", _LOCK_KEY)


async def current_version(conn: Any) -> int:
    """The applied schema version of the connection's database (0: never migrated)."""
    if await conn.fetchval("SELECT to_regclass('ledger.schema_migrations')") is None:
        return 0
    version = await conn.fetchval("SELECT max(version) FROM ledger.schema_migrations")
    return int(version or 0)


async def require_current(conn: Any) -> None:
    """Raise MigrationError unless the schema is at `LATEST_VERSION` (for service start-up)."""
    version = await current_version(conn)
    if version != LATEST_VERSION:
        raise MigrationError(f"ledger schema is at version {version}, this Tenantry needs "
                             f"{LATEST_VERSION}: run `tenantry ledger migrate`")


async def _lock(conn: Any, wait_seconds: float) -> None:
    # pg_try_advisory_lock in a loop rather than pg_advisory_lock: a bounded wait with a clear
    # error beats hanging behind a stuck migrator.
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait_seconds
    while not await conn.fetchval("SELECT pg_try_advisory_lock($1)", _LOCK_KEY):
        if loop.time() > deadline:
            raise MigrationError(
                f"another migration held the ledger lock for over {wait_seconds}s")
        await asyncio.sleep(0.05)


async def _create_role(conn: Any, statement: str) -> None:
    # Roles are cluster-wide but advisory locks are per database: a migrator of another database
    # may create the same role a moment earlier. A savepoint turns that race into "exists".
    try:
        async with conn.transaction():
            await conn.execute(statement)
    except asyncpg.DuplicateObjectError:
        pass


async def _ensure_roles(conn: Any, owner_role: str, app_role: str, verifier: str | None) -> None:
    owner, app = _ident(owner_role), _ident(app_role)
    await _create_role(conn, f"CREATE ROLE {owner} NOLOGIN")
    attrs = await conn.fetchrow(
        "SELECT rolsuper, rolbypassrls FROM pg_roles WHERE rolname = $1", owner_role)
    if attrs["rolsuper"] or attrs["rolbypassrls"]:
        raise MigrationError(f"owner role {owner_role} must not be a superuser or bypass RLS")
    if not await conn.fetchval("SELECT pg_has_role(current_user, $1, 'MEMBER')", owner_role):
        # A CREATEROLE administrator needs membership to create objects as the owner.
        await conn.execute(f"GRANT {owner} TO CURRENT_USER")

    # The verifier is base64 plus "$:" and digits, so it is safe inside a literal.
    password = "" if verifier is None else f" PASSWORD '{verifier}'"
    await _create_role(conn, f"CREATE ROLE {app} LOGIN{password}")
    attrs = await conn.fetchrow(
        "SELECT rolsuper, rolbypassrls, pg_has_role(oid, $2, 'MEMBER') AS owns "
        "FROM pg_roles WHERE rolname = $1", app_role, owner_role)
    if attrs["rolsuper"] or attrs["rolbypassrls"] or attrs["owns"]:
        raise MigrationError(
            f"app role {app_role} is a superuser, bypasses RLS or is a member of the owner role: "
            "it could rewrite the ledger; use a dedicated unprivileged role")
    await conn.execute(f"ALTER ROLE {app} LOGIN{password}")


async def _ensure_schema(conn: Any, owner_role: str) -> None:
    owner = _ident(owner_role)
    current = await conn.fetchval(
        "SELECT r.rolname FROM pg_namespace n JOIN pg_roles r ON r.oid = n.nspowner "
        "WHERE n.nspname = $1", schema.SCHEMA)
    if current is None:
        await conn.execute(f"CREATE SCHEMA ledger AUTHORIZATION {owner}")
    elif current != owner_role:
        raise MigrationError(f"schema ledger is owned by {current}, not by {owner_role}")
    await conn.execute(f"SET LOCAL ROLE {owner}")
    await conn.execute("""
        CREATE TABLE IF NOT EXISTS ledger.schema_migrations (
            version     integer PRIMARY KEY,
            name        text NOT NULL,
            checksum    text NOT NULL,
            applied_at  timestamptz NOT NULL DEFAULT clock_timestamp()
        )""")
    await conn.execute("RESET ROLE")


async def _applied_checksums(conn: Any) -> dict[int, str]:
    rows = await conn.fetch("SELECT version, checksum FROM ledger.schema_migrations")
    return {row["version"]: row["checksum"] for row in rows}


async def _grant_app(conn: Any, owner: str, app: str, app_role: str) -> None:
    await conn.execute(f"SET LOCAL ROLE {owner}")
    await conn.execute(f"""
        REVOKE ALL ON ALL TABLES IN SCHEMA ledger FROM {app};
        REVOKE ALL ON ALL SEQUENCES IN SCHEMA ledger FROM {app};
        REVOKE ALL ON ALL FUNCTIONS IN SCHEMA ledger FROM {app};
        GRANT USAGE ON SCHEMA ledger TO {app};
    """)
    for privileges, table in schema.APP_TABLE_GRANTS:
        await conn.execute(f"GRANT {privileges} ON {table} TO {app}")
    for function in schema.APP_FUNCTION_GRANTS:
        await conn.execute(f"GRANT EXECUTE ON FUNCTION {function} TO {app}")
    await conn.execute("RESET ROLE")
    # PUBLIC may connect by default; hardened clusters revoke that, so grant it explicitly then.
    if not await conn.fetchval(
            "SELECT has_database_privilege($1, current_database(), 'CONNECT')", app_role):
        database = await conn.fetchval("SELECT quote_ident(current_database())")
        await conn.execute(f"GRANT CONNECT ON DATABASE {database} TO {app}")
