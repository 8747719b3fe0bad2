"""`tenantry db migrate` (one runner, one least-privilege role per component), `tenantry api
create-user`, start-up refusals, and the store's one-statement rules on a real PostgreSQL."""

from __future__ import annotations

import asyncio
import datetime
import secrets
import ssl
import uuid
from pathlib import Path

import asyncpg
import httpx
import pytest

from tenantry.api import ratelimit, schema, store
from tenantry.api.tokens import rfc9700
from tenantry.devcluster import pki
from tenantry.devcluster.postgres import LocalPostgres
from tenantry.devcluster.process import wait_until
from tests.e2e.api.conftest import DATABASE, ROLES, ApiDatabase, ApiServer, tenantry

pytestmark = pytest.mark.postgres


def test_db_migrate_again_changes_nothing_and_keeps_secrets_out(api_db: ApiDatabase) -> None:
    result = tenantry("db", "migrate", "--dsn-file", str(api_db.state / "admin-dsn"),
                      *[arg for key, role in ROLES.items()
                        for arg in (f"--{key.replace('_', '-')}-role", role)])
    assert result.returncode == 0, result.stderr
    assert "ledger schema at version" in result.stdout
    assert (f"api schema at version {len(schema.MIGRATIONS)}; applied: none (already current)"
            in result.stdout)
    password = (api_db.state / "api-pw").read_text().strip()
    assert password not in result.stdout + result.stderr


def test_api_role_has_exactly_its_grants_and_nothing_on_the_ledger(api_db: ApiDatabase) -> None:
    app, ledger_app = ROLES["api_app"], ROLES["ledger_app"]
    rows = api_db.fetch(
        "SELECT c.oid::regclass::text AS name, p.privilege "
        "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace, "
        "unnest(ARRAY['SELECT','INSERT','UPDATE','DELETE','TRUNCATE','REFERENCES','TRIGGER']) "
        "AS p(privilege) WHERE n.nspname IN ('api', 'ledger') AND c.relkind = 'r' "
        "AND has_table_privilege($1, c.oid, p.privilege)", app)
    granted: dict[str, set[str]] = {}
    for row in rows:
        granted.setdefault(row["name"], set()).add(row["privilege"])
    expected = {table: {p.strip() for p in privileges.split(",")}
                for privileges, table in schema.APP_TABLE_GRANTS}
    assert granted == expected
    [row] = api_db.fetch(
        "SELECT has_schema_privilege($1, 'ledger', 'USAGE') AS api_on_ledger, "
        "has_schema_privilege($2, 'api', 'USAGE') AS ledger_on_api, "
        "(SELECT rolsuper OR rolbypassrls OR rolcreaterole FROM pg_roles WHERE rolname = $1) "
        "AS privileged", app, ledger_app)
    assert dict(row) == {"api_on_ledger": False, "ledger_on_api": False, "privileged": False}


async def test_api_role_cannot_read_the_ledger_or_delete_users(api_db: ApiDatabase) -> None:
    conn = await asyncpg.connect(api_db.app_dsn)
    try:
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.fetch("SELECT * FROM ledger.audit_log")
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.execute("DELETE FROM api.users")
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.execute("CREATE TABLE api.mine (x int)")
    finally:
        await conn.close()


def test_create_user_reads_the_password_from_stdin_and_refuses_weak_ones(
        api_db: ApiDatabase, api: ApiServer) -> None:
    user = f"cli-{uuid.uuid4().hex[:8]}@acme.example"
    password = "a password from stdin " + secrets.token_hex(4)
    dsn = str(api_db.app_dsn_file)
    made = tenantry("api", "create-user", "--dsn-file", dsn, "--username", user,
                    stdin=password + "\n")
    assert made.returncode == 0, made.stderr
    assert f"created password user {user}" in made.stdout
    assert password not in made.stdout + made.stderr
    with httpx.Client(base_url=api.url, headers={"X-Forwarded-For": "198.19.0.1"}) as http:
        assert http.post("/v1/auth/login",
                         json={"username": user, "password": password}).status_code == 200
    again = tenantry("api", "create-user", "--dsn-file", dsn, "--username", user,
                     stdin=password + "\n")
    assert again.returncode == 2
    assert "exists; pass --replace" in again.stderr
    weak = tenantry("api", "create-user", "--dsn-file", dsn, "--username", "w@acme.example",
                    stdin="short\n")
    assert weak.returncode == 2
    assert "at least 12 characters" in weak.stderr


def test_create_user_takes_no_password_argument() -> None:
    result = tenantry("api", "create-user", "--username", "a@acme.example",
                      "--password", "on the command line")
    assert result.returncode == 2
    assert "unrecognized arguments" in result.stderr


def test_api_refuses_to_start_on_an_unmigrated_database(
        postgres: LocalPostgres, api_db: ApiDatabase, signing_key: Path, tmp_path: Path) -> None:
    name = f"api_empty_{uuid.uuid4().hex[:8]}"

    async def create() -> None:
        conn = await asyncpg.connect(postgres.dsn(database="postgres"))
        try:
            await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()

    asyncio.run(create())
    app_dsn = api_db.app_dsn.replace(f"/{DATABASE}", f"/{name}")
    dsn_file = tmp_path / "dsn"
    dsn_file.write_text(app_dsn)
    result = tenantry("api", "run", "--dsn-file", str(dsn_file), "--signing-key-file",
                      str(signing_key), "--listen", "127.0.0.1:0", "--no-ledger")
    assert result.returncode == 2
    assert "tenantry db migrate" in result.stderr
    password = app_dsn.split(":")[2].split("@")[0]
    assert password not in result.stderr


def test_api_refuses_a_signing_key_that_is_not_ed25519(api_db: ApiDatabase,
                                                       tmp_path: Path) -> None:
    bad = tmp_path / "key.pem"
    bad.write_text("not a key")
    result = tenantry("api", "run", "--dsn-file", str(api_db.app_dsn_file),
                      "--signing-key-file", str(bad))
    assert result.returncode == 2
    assert f"signing key {bad}" in result.stderr


def test_keygen_refuses_to_overwrite_and_writes_0600(tmp_path: Path) -> None:
    path = tmp_path / "k.pem"
    assert tenantry("api", "keygen", "--output", str(path)).returncode == 0
    assert path.stat().st_mode & 0o777 == 0o600
    assert tenantry("api", "keygen", "--output", str(path)).returncode == 2


# -- the store's rules under concurrency ---------------------------------------------------------

async def test_concurrent_refreshes_of_one_token_are_decided_one_after_the_other(
        api_db: ApiDatabase) -> None:
    user = await api_db.add_user_async()
    async with asyncpg.create_pool(api_db.app_dsn, min_size=4, max_size=4) as pool:
        found = await store.find_user(pool, user)
        assert found is not None
        token = rfc9700.new_token()
        await store.start_family(pool, found.id, rfc9700.token_hash(token))
        results = await asyncio.gather(*(
            store.rotate(pool, rfc9700.token_hash(token), rfc9700.token_hash(rfc9700.new_token()),
                         datetime.timedelta(seconds=10)) for _ in range(4)))
    outcomes = sorted(r.outcome.value for r in results)
    # One rotation, one grace retry; the other two are reuse, which revoked the family.
    assert outcomes == ["grace", "reused", "reused", "rotate"] or outcomes == [
        "grace", "reused", "revoked", "rotate"] or outcomes == [
        "grace", "revoked", "revoked", "rotate"]


async def test_the_bucket_takes_one_token_per_statement_across_connections(
        api_db: ApiDatabase) -> None:
    key = f"test:{uuid.uuid4().hex}"
    limit = ratelimit.Limit(capacity=5, period=3600)
    async with asyncpg.create_pool(api_db.app_dsn, min_size=5, max_size=5) as pool:
        decisions = await asyncio.gather(*(store.take_token(pool, key, limit) for _ in range(8)))
    assert sum(d.allowed for d in decisions) == 5
    assert all(d.retry_after >= 1 for d in decisions if not d.allowed)


async def test_the_bucket_refills_at_its_rate(api_db: ApiDatabase) -> None:
    key = f"test:{uuid.uuid4().hex}"
    limit = ratelimit.Limit(capacity=2, period=0.5)
    conn = await asyncpg.connect(api_db.app_dsn)
    try:
        assert [(await store.take_token(conn, key, limit)).allowed for _ in range(3)] == [
            True, True, False]
        await asyncio.sleep(0.3)
        assert (await store.take_token(conn, key, limit)).allowed
    finally:
        await conn.close()


async def test_throttle_counts_per_name_and_address_and_locks_progressively(
        api_db: ApiDatabase) -> None:
    name = f"t-{uuid.uuid4().hex[:8]}"
    conn = await asyncpg.connect(api_db.app_dsn)
    try:
        for expected in range(1, 5):
            assert await store.throttle_failure(conn, name, "192.0.2.1") == expected
            assert await store.throttle_wait(conn, name, "192.0.2.1") == 0
        assert await store.throttle_failure(conn, name, "192.0.2.1") == 5
        assert 0 < await store.throttle_wait(conn, name, "192.0.2.1") <= 1
        assert await store.throttle_failure(conn, name, "192.0.2.1") == 6
        assert 1 < await store.throttle_wait(conn, name, "192.0.2.1") <= 2
        assert await store.throttle_wait(conn, name, "192.0.2.2") == 0
        await store.throttle_clear(conn, name, "192.0.2.1")
        assert await store.throttle_wait(conn, name, "192.0.2.1") == 0
    finally:
        await conn.close()


async def test_purge_drops_only_rows_that_no_longer_matter(api_db: ApiDatabase) -> None:
    conn = await asyncpg.connect(api_db.app_dsn)
    try:
        await store.revoke_jti(conn, "old-jti", 1, "test")
        await store.revoke_jti(conn, "live-jti", 4_000_000_000, "test")
        await store.purge_expired(conn)
        left = {r["jti"] for r in await conn.fetch(
            "SELECT jti FROM api.revoked_jtis WHERE jti LIKE '%-jti'")}
        assert left == {"live-jti"}
    finally:
        await conn.close()


def test_api_serves_tls_itself_with_tls_cert_and_key(api_db: ApiDatabase, signing_key: Path,
                                                     api_kubeconfig: Path,
                                                     tmp_path: Path) -> None:
    ca = pki.make_ca("api-test-ca")
    serving = pki.make_serving_cert(ca, "tenantry-api", ["127.0.0.1"])
    (tmp_path / "tls.crt").write_bytes(serving.cert_pem)
    (tmp_path / "tls.key").write_bytes(serving.key_pem)
    (tmp_path / "ca.crt").write_bytes(ca.cert_pem)
    server = ApiServer(api_db, signing_key, tmp_path / "api.log",
                       ["--tls-cert", str(tmp_path / "tls.crt"),
                        "--tls-key", str(tmp_path / "tls.key")], kubeconfig=api_kubeconfig)
    url = server.url.replace("http://", "https://")
    try:
        context = ssl.create_default_context(cafile=str(tmp_path / "ca.crt"))
        wait_until(lambda: httpx.get(f"{url}/readyz", verify=context).status_code == 200,
                   timeout=60, what="the API over TLS", process=server.process)
        with pytest.raises(httpx.RemoteProtocolError):
            httpx.get(f"{server.url}/healthz")  # plain HTTP to a TLS port
    finally:
        server.stop()


def test_tls_cert_without_key_is_refused(api_db: ApiDatabase, signing_key: Path) -> None:
    result = tenantry("api", "run", "--dsn-file", str(api_db.app_dsn_file),
                      "--signing-key-file", str(signing_key), "--tls-cert", "x.crt")
    assert result.returncode == 2
    assert "--tls-cert and --tls-key go together" in result.stderr


def test_api_refuses_to_start_without_an_audit_ledger_unless_told(
        api_db: ApiDatabase, signing_key: Path) -> None:
    result = tenantry("api", "run", "--dsn-file", str(api_db.app_dsn_file), "--signing-key-file",
                      str(signing_key), "--listen", "127.0.0.1:0")
    assert result.returncode == 2
    assert "the audit ledger is required" in result.stderr and "--no-ledger" in result.stderr
