"""Apply a component's schema (the ledger's `schema.MIGRATIONS`, or another) and its two roles.

Each Tenantry component that keeps tables in PostgreSQL (the audit ledger, the API pod) is a
`Component`: its own schema, versioned migrations, NOLOGIN owner role, application role and
exact grants. The ledger is `LEDGER`, the default everywhere below, so the ledger's callers are
unchanged; `tenantry db migrate` runs every component's migrations through this same runner.
One app role per component: a component's role gets its own grants and nothing on another's
schema (every run revokes everything else on the schema's objects from it).

`migrate(dsn_admin, app_role=..., app_password=...)` connects with an administrative DSN (a
superuser, or a role with CREATEROLE that may create schemas in the database) and:

1. takes a database-wide advisory lock, so concurrent migrators (several API replicas starting at
   once) run one after another; the others then find nothing left to do;
2. creates the NOLOGIN owner role and the application (LOGIN) role if missing; sets the app
   role's password when one is given. The password travels as a SCRAM-SHA-256 verifier computed
   here, so its plain text never appears in SQL text, server logs or pg_stat_statements. Refuses
   an app role that is a superuser, may bypass row security, or is a member of the owner role;
3. applies each pending migration in its own transaction as the owner role and records it in
   `<schema>.schema_migrations`, refusing to continue when an applied migration's SQL changed;
4. converges the app role's privileges to exactly the component's table and function grants
   (the ledger's: `schema.APP_TABLE_GRANTS`, `schema.APP_FUNCTION_GRANTS`); everything else on
   the schema's objects is revoked.

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

_ROLE_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
Migration = schema.Migration


@dataclasses.dataclass(frozen=True)
class Component:
    """One component's schema, migrations, default roles and the app role's exact grants."""

    name: str
    """Short name for messages and the advisory lock ("ledger", "api")."""
    schema: str
    """The PostgreSQL schema holding all its objects, `<schema>.schema_migrations` too."""
    migrations: tuple[Migration, ...]
    """Every version, in order; never edit one that shipped."""
    table_grants: tuple[tuple[str, str], ...]
    """(privileges, table) the app role gets; everything else is revoked on every run."""
    function_grants: tuple[str, ...]
    """Functions (with their signature) the app role may EXECUTE."""
    default_owner_role: str
    default_app_role: str
    command: str
    """The command that migrates it, named in errors."""

    @property
    def latest_version(self) -> int:
        return max(m.version for m in self.migrations)

    @property
    def lock_key(self) -> int:
        """One 64-bit key for "this component's schema in this database" (advisory locks are
        per database)."""
        return int.from_bytes(hashlib.sha256(f"tenantry.{self.name}.migrate".encode()).digest()[:8],
                              "big", signed=True)


LEDGER = Component(
    name="ledger", schema=schema.SCHEMA, migrations=schema.MIGRATIONS,
    table_grants=schema.APP_TABLE_GRANTS, function_grants=schema.APP_FUNCTION_GRANTS,
    default_owner_role=DEFAULT_OWNER_ROLE, default_app_role=DEFAULT_APP_ROLE,
    command="tenantry ledger migrate")


class MigrationError(RuntimeError):
    """The schema cannot be brought up to date safely; nothing after the failing step ran."""


@dataclasses.dataclass(frozen=True)
class MigrationReport:
    """What a `migrate` run did."""

    applied: tuple[int, ...]
    """Versions applied by this run (empty when the schema was already current)."""
    version: int
    """The schema version after the run."""


LATEST_VERSION = LEDGER.latest_version


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


async def migrate(dsn_admin: str, *, app_role: str | None = None,
                  app_password: str | None = None, owner_role: str | None = None,
                  lock_timeout: float = 60.0, component: Component = LEDGER) -> MigrationReport:
    """Bring the component's schema (default: the ledger) in the DSN's database to the latest
    version (see module doc); roles default to the component's.

    `app_password=None` leaves an existing app role's password alone (a new role then has none
    and cannot log in with a password until one is set).
    """
    conn = await asyncpg.connect(dsn_admin)
    try:
        return await migrate_connection(conn, app_role=app_role, app_password=app_password,
                                        owner_role=owner_role, lock_timeout=lock_timeout,
                                        component=component)
    finally:
        await conn.close()


async def migrate_connection(conn: Any, *, app_role: str | None = None,
                             app_password: str | None = None,
                             owner_role: str | None = None,
                             lock_timeout: float = 60.0,
                             component: Component = LEDGER) -> MigrationReport:
    """`migrate` on an open administrative connection (not inside a transaction)."""
    app_role = app_role or component.default_app_role
    owner_role = owner_role or component.default_owner_role
    owner, app = _ident(owner_role), _ident(app_role)
    _ident(component.schema)
    if owner_role == app_role:
        raise MigrationError("the app role must not be the owner role")
    verifier = None if app_password is None else scram_verifier(app_password)
    if await conn.fetchval("SELECT current_user") == app_role:
        raise MigrationError("connect as an administrator, not as the app role")
    await _lock(conn, lock_timeout, component)
    try:
        async with conn.transaction():
            if await conn.fetchval("SHOW server_encoding") != "UTF8":
                raise MigrationError(f"the {component.name} needs a UTF8 database (hashes are "
                                     "over UTF-8)")
            await _ensure_roles(conn, owner_role, app_role, verifier)
            await _ensure_schema(conn, owner_role, component.schema)
        applied = await _applied_checksums(conn, component.schema)
        for migration in component.migrations:
            recorded = applied.get(migration.version)
            if recorded is not None and recorded != migration.checksum:
                raise MigrationError(
                    f"migration {migration.version} was changed after it was applied "
                    "(checksum differs); add a new migration instead")
        done: list[int] = []
        table = f"{component.schema}.schema_migrations"
        for migration in component.migrations:
            if migration.version in applied:
                continue
            async with conn.transaction():
                await conn.execute(f"SET LOCAL ROLE {owner}")
                await conn.execute(migration.sql)
                await conn.execute(
                    f"INSERT INTO {table} (version, name, checksum) "  # noqa: S608 - checked name
                    "VALUES ($1, $2, $3)", migration.version, migration.name, migration.checksum)
            done.append(migration.version)
        async with conn.transaction():
            await _grant_app(conn, owner, app, app_role, component)
        return MigrationReport(applied=tuple(done), version=component.latest_version)
    finally:
        # A broken connection has released the session lock already.
        if not conn.is_closed():
            await conn.execute("SELECT pg_advisory_unlock($1)", component.lock_key)


async def current_version(conn: Any, component: Component = LEDGER) -> int:
    """The applied schema version of the connection's database (0: never migrated)."""
    table = f"{_ident(component.schema)[1:-1]}.schema_migrations"
    if await conn.fetchval("SELECT to_regclass($1)", table) is None:
        return 0
    version = await conn.fetchval(f"SELECT max(version) FROM {table}")  # noqa: S608
    return int(version or 0)


async def require_current(conn: Any, component: Component = LEDGER) -> None:
    """Raise MigrationError unless the component's schema is at its latest version (for
    service start-up)."""
    version = await current_version(conn, component)
    if version != component.latest_version:
        raise MigrationError(f"{component.name} schema is at version {version}, this Tenantry "
                             f"needs {component.latest_version}: run `{component.command}`")


async def _lock(conn: Any, wait_seconds: float, component: Component) -> None:
    # pg_try_advisory_lock in a loop rather than pg_advisory_lock: a bounded wait with a clear
    # error beats hanging behind a stuck migrator.
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait_seconds
    while not await conn.fetchval("SELECT pg_try_advisory_lock($1)", component.lock_key):
        if loop.time() > deadline:
            raise MigrationError(
                f"another migration held the {component.name} lock for over {wait_seconds}s")
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
            "it could rewrite its tables; use a dedicated unprivileged role")
    await conn.execute(f"ALTER ROLE {app} LOGIN{password}")


async def _ensure_schema(conn: Any, owner_role: str, schema_name: str) -> None:
    owner, name = _ident(owner_role), _ident(schema_name)
    current = await conn.fetchval(
        "SELECT r.rolname FROM pg_namespace n JOIN pg_roles r ON r.oid = n.nspowner "
        "WHERE n.nspname = $1", schema_name)
    if current is None:
        await conn.execute(f"CREATE SCHEMA {name} AUTHORIZATION {owner}")
    elif current != owner_role:
        raise MigrationError(f"schema {schema_name} is owned by {current}, not by {owner_role}")
    await conn.execute(f"SET LOCAL ROLE {owner}")
    await conn.execute(f"""
        CREATE TABLE IF NOT EXISTS {name}.schema_migrations (
            version     integer PRIMARY KEY,
            name        text NOT NULL,
            checksum    text NOT NULL,
            applied_at  timestamptz NOT NULL DEFAULT clock_timestamp()
        )""")
    await conn.execute("RESET ROLE")


async def _applied_checksums(conn: Any, schema_name: str) -> dict[int, str]:
    rows = await conn.fetch(
        f"SELECT version, checksum FROM {_ident(schema_name)}.schema_migrations")  # noqa: S608
    return {row["version"]: row["checksum"] for row in rows}


async def _grant_app(conn: Any, owner: str, app: str, app_role: str,
                     component: Component) -> None:
    name = _ident(component.schema)
    await conn.execute(f"SET LOCAL ROLE {owner}")
    await conn.execute(f"""
        REVOKE ALL ON ALL TABLES IN SCHEMA {name} FROM {app};
        REVOKE ALL ON ALL SEQUENCES IN SCHEMA {name} FROM {app};
        REVOKE ALL ON ALL FUNCTIONS IN SCHEMA {name} FROM {app};
        GRANT USAGE ON SCHEMA {name} TO {app};
    """)
    for privileges, table in component.table_grants:
        await conn.execute(f"GRANT {privileges} ON {table} TO {app}")
    for function in component.function_grants:
        await conn.execute(f"GRANT EXECUTE ON FUNCTION {function} TO {app}")
    await conn.execute("RESET ROLE")
    # PUBLIC may connect by default; hardened clusters revoke that, so grant it explicitly then.
    if not await conn.fetchval(
            "SELECT has_database_privilege($1, current_database(), 'CONNECT')", app_role):
        database = await conn.fetchval("SELECT quote_ident(current_database())")
        await conn.execute(f"GRANT CONNECT ON DATABASE {database} TO {app}")
