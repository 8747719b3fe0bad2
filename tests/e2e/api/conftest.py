"""Fixtures of the API's tests: a database migrated by `tenantry db migrate`, and `tenantry api
run` as a real child process on loopback, driven over real HTTP.

Roles are cluster-wide in PostgreSQL and the session's `ledger` fixture owns the default role
names, so this database gets its own role names (`api_e2e_*`).

`api` is one server for the session, started with `--trusted-proxy 127.0.0.1/32`: each test's
client (`client` fixture) sends its own `X-Forwarded-For` address, so the per-address rate
limit and login throttle of one test never spill into another's (and trusting the header only
from a configured proxy is exercised on every request).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import ipaddress
import itertools
import secrets
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import asyncpg
import httpx
import pytest
import yaml
from kubernetes import client as kube_client

from tenantry import kube
from tenantry.api import passwords, store
from tenantry.devcluster.cluster import LocalControlPlane
from tenantry.devcluster.postgres import LocalPostgres
from tenantry.devcluster.process import ManagedProcess, free_port, wait_until
from tests import logscan
from tests.conftest import REPO_ROOT
from tests.helpers import GROUP, VERSION

DATABASE = "tenantry_api_e2e"
ROLES = {"ledger_app": "api_e2e_ledger_app", "ledger_owner": "api_e2e_ledger_owner",
         "api_app": "api_e2e_api_app", "api_owner": "api_e2e_api_owner"}
PASSWORD = "a long enough password, 2026"


def tenantry(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "tenantry", *args], input=stdin,
                          capture_output=True, text=True, cwd=REPO_ROOT, check=False,
                          timeout=120)


@dataclasses.dataclass(frozen=True)
class ApiDatabase:
    admin_dsn: str
    app_dsn: str
    state: Path
    ledger_dsn: str = ""

    @property
    def app_dsn_file(self) -> Path:
        return self.state / "api-dsn"

    @property
    def ledger_dsn_file(self) -> Path:
        return self.state / "ledger-dsn"

    def ledger_entries(self, action_prefix: str) -> list[asyncpg.Record]:
        """Ledger rows whose action starts with `action_prefix`, oldest first."""
        return self.fetch("SELECT * FROM ledger.audit_log WHERE action LIKE $1 || '%' "
                          "ORDER BY chain, seq", action_prefix)

    @contextlib.contextmanager
    def tampered(self, chain: str, seq: int) -> Iterator[None]:
        """Entry `seq` of `chain` forged (its `changes.role` rewritten) the way an attacker with
        database access would: as the superuser, the append-only triggers switched off. The
        original is put back afterwards, since other tests sign checkpoints over every chain."""

        async def rewrite(changes: str | None) -> str:
            conn = await asyncpg.connect(self.admin_dsn)
            try:
                async with conn.transaction():
                    await conn.execute("SET LOCAL session_replication_role = replica")
                    old = await conn.fetchval("SELECT changes::text FROM ledger.audit_log "
                                              "WHERE chain = $1 AND seq = $2", chain, seq)
                    await conn.execute(
                        "UPDATE ledger.audit_log SET changes = coalesce($3::jsonb, "
                        "jsonb_set(changes, '{role}', '\"owner\"')) "
                        "WHERE chain = $1 AND seq = $2", chain, seq, changes)
                    return str(old)
            finally:
                await conn.close()

        original = asyncio.run(rewrite(None))
        try:
            yield
        finally:
            asyncio.run(rewrite(original))

    def fetch(self, sql: str, *args: object) -> list[asyncpg.Record]:
        """One statement as the superuser."""
        async def go() -> list[asyncpg.Record]:
            conn = await asyncpg.connect(self.admin_dsn)
            try:
                return list(await conn.fetch(sql, *args))
            finally:
                await conn.close()

        return asyncio.run(go())

    def add_user(self, username: str | None = None, password: str = PASSWORD, *,
                 password_hash: str | None = None) -> str:
        """A password user (hashed here, as `create-user` does); returns the login name."""
        return asyncio.run(self.add_user_async(username, password, password_hash=password_hash))

    async def add_user_async(self, username: str | None = None, password: str = PASSWORD, *,
                             password_hash: str | None = None) -> str:
        name = username or f"user-{uuid.uuid4().hex[:10]}@acme.example"
        logscan.remember(password, f"password of {name}")
        conn = await asyncpg.connect(self.app_dsn)
        try:
            # A name of the caller's choosing may already exist (root@acme.example, the
            # platform admin, is shared by several modules): its password is set anew.
            await store.upsert_password_user(
                conn, name, password_hash or passwords.Passwords().rehash(password),
                replace=username is not None)
        finally:
            await conn.close()
        return name


@pytest.fixture(scope="session")
def api_db(postgres: LocalPostgres, tmp_path_factory: pytest.TempPathFactory) -> ApiDatabase:
    """The ledger's and the API's schemas, migrated by the real `tenantry db migrate`."""
    state = tmp_path_factory.mktemp("api-state")

    async def create() -> None:
        conn = await asyncpg.connect(postgres.dsn(database="postgres"))
        try:
            await conn.execute(f'CREATE DATABASE "{DATABASE}"')
        finally:
            await conn.close()

    asyncio.run(create())
    admin_dsn = postgres.dsn(database=DATABASE)
    (state / "admin-dsn").write_text(admin_dsn + "\n")
    app_password = secrets.token_urlsafe(18)
    (state / "api-pw").write_text(app_password + "\n")
    (state / "ledger-pw").write_text(secrets.token_urlsafe(18) + "\n")
    result = tenantry(
        "db", "migrate", "--dsn-file", str(state / "admin-dsn"),
        "--api-app-password-file", str(state / "api-pw"),
        "--ledger-app-password-file", str(state / "ledger-pw"),
        *itertools.chain.from_iterable(
            (f"--{key.replace('_', '-')}-role", role) for key, role in ROLES.items()))
    assert result.returncode == 0, result.stderr
    app_dsn = postgres.dsn(database=DATABASE, user=ROLES["api_app"], password=app_password)
    ledger_dsn = postgres.dsn(database=DATABASE, user=ROLES["ledger_app"],
                              password=(state / "ledger-pw").read_text().strip())
    db = ApiDatabase(admin_dsn=admin_dsn, app_dsn=app_dsn, state=state, ledger_dsn=ledger_dsn)
    for path, dsn in ((db.app_dsn_file, app_dsn), (db.ledger_dsn_file, ledger_dsn)):
        path.write_text(dsn + "\n")
        path.chmod(0o600)
    return db


API_IDENTITY = "system:serviceaccount:tenantry-system:tenantry-api"


@pytest.fixture(scope="session")
def api_kubeconfig(control_plane: LocalControlPlane, crds: None) -> Path:
    """The API's own identity, with exactly the RBAC of manifests/api/rbac.yaml (read Tenants)."""
    documents = [doc for doc in yaml.safe_load_all((REPO_ROOT / "manifests/api/rbac.yaml")
                                                   .read_text())
                 if doc["kind"] in ("ClusterRole", "ClusterRoleBinding")]
    api = kube.api_client(control_plane.admin_kubeconfig)
    try:
        kube.apply(api, documents)
    finally:
        api.close()
    return control_plane.kubeconfig_for(API_IDENTITY)


@pytest.fixture(scope="session")
def signing_key(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("api-keys") / "signing.pem"
    result = tenantry("api", "keygen", "--output", str(path))
    assert result.returncode == 0, result.stderr
    return path


class ApiServer:
    """`tenantry api run` as a child process on loopback, its log in a file."""

    def __init__(self, db: ApiDatabase, key: Path, log_path: Path,
                 extra: Sequence[str] = (), *, kubeconfig: Path,
                 port: int | None = None) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        logscan.watch_log("api", log_path)
        self.spool = log_path.parent / f"spool-{self.port}"
        self.process = ManagedProcess(
            "tenantry-api",
            [sys.executable, "-m", "tenantry", "api", "run", "--dsn-file", str(db.app_dsn_file),
             "--signing-key-file", str(key), "--listen", f"127.0.0.1:{self.port}",
             "--kubeconfig", str(kubeconfig),
             "--ledger-dsn-file", str(db.ledger_dsn_file), "--ledger-spool", str(self.spool),
             *extra],
            log_path, cwd=REPO_ROOT)

    def wait_ready(self) -> None:
        def ready() -> bool:
            return httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200

        wait_until(ready, timeout=60, what="the API's /readyz", process=self.process)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        self.process.stop()

    def __enter__(self) -> ApiServer:
        """Ready, or stopped and the error raised: `with ApiServer(...) as server:`."""
        try:
            self.wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


@pytest.fixture(scope="session")
def api(api_db: ApiDatabase, signing_key: Path, api_kubeconfig: Path,
        operator_options: list[str],
        tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServer]:
    """The session's API, with the operator's keyring mounted (as in a cluster), so it can
    hand Credentials to workloads."""
    keyring = operator_options[operator_options.index("--keyring") + 1]
    server = ApiServer(api_db, signing_key, tmp_path_factory.mktemp("api") / "api.log",
                       ["--trusted-proxy", "127.0.0.1/32", "--platform-admin",
                        "root@acme.example", "--platform-admin-group", "oidc:platform-team",
                        "--keyring", keyring],
                       kubeconfig=api_kubeconfig)
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


_addresses = (str(ipaddress.ip_address("198.18.0.0") + i) for i in itertools.count(1))


@pytest.fixture
def client(api: ApiServer) -> Iterator[httpx.Client]:
    """An HTTP client to `api` from an address of its own (X-Forwarded-For via the trusted
    loopback proxy)."""
    with httpx.Client(base_url=api.url, timeout=30,
                      headers={"X-Forwarded-For": next(_addresses)}) as http:
        yield http


# -- Tenants (the API reads only their members) --------------------------------------------------

TenantMaker = Callable[..., str]


@pytest.fixture
def tenant(admin_api: kube_client.ApiClient, crds: None) -> Iterator[TenantMaker]:
    """Create a Tenant with the given members (`{"alice@x": "owner"}`); `set_members` later."""
    custom = kube_client.CustomObjectsApi(admin_api)
    created: list[str] = []

    def make(members: dict[str, str], groups: dict[str, str] | None = None) -> str:
        name = f"api-{uuid.uuid4().hex[:8]}"
        custom.create_cluster_custom_object(GROUP, VERSION, "tenants", {
            "apiVersion": f"{GROUP}/{VERSION}", "kind": "Tenant", "metadata": {"name": name},
            "spec": {"members": _members(members, groups),
                     "namespaces": [{"name": f"{name}-ns"}]}})
        created.append(name)
        return name

    yield make
    for name in created:
        with contextlib.suppress(kube_client.ApiException):
            custom.patch_cluster_custom_object(GROUP, VERSION, "tenants", name,
                                               {"spec": {"deletionPolicy": "Delete"}})
            custom.delete_cluster_custom_object(GROUP, VERSION, "tenants", name)


KEEPER = "keeper@acme.example"
"""An owner nobody signs in as: a Tenant needs an owner (the CRD's rule)."""


def _members(users: dict[str, str], groups: dict[str, str] | None) -> list[dict[str, str]]:
    users = {KEEPER: "owner", **users}
    return ([{"kind": "User", "name": user, "role": role} for user, role in users.items()]
            + [{"kind": "Group", "name": group, "role": role}
               for group, role in (groups or {}).items()])


def set_members(admin_api: kube_client.ApiClient, name: str, users: dict[str, str]) -> None:
    kube_client.CustomObjectsApi(admin_api).patch_cluster_custom_object(
        GROUP, VERSION, "tenants", name, {"spec": {"members": _members(users, None)}})
