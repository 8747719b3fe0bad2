"""Shared fixtures: a real local control plane and a real PostgreSQL, started once per session.

The control plane is always one these tests started themselves: they never touch a cluster from
the environment (KUBECONFIG is ignored), so a developer's real cluster is safe.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime
import json
import secrets
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from kubernetes import client

from tenantry import kube
from tenantry.crypto import cli as crypto_cli
from tenantry.crypto import keyring
from tenantry.devcluster.cluster import LocalControlPlane
from tenantry.devcluster.devenv import install_crds
from tenantry.devcluster.postgres import LocalPostgres
from tenantry.devcluster.process import free_port, wait_until
from tenantry.ledger import migrations, verify
from tests import logscan

REPO_ROOT = Path(__file__).resolve().parent.parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "/e2e/" in str(item.path):
            item.add_marker(pytest.mark.e2e)
    # The log scan reads what every other test's components wrote: it runs last, and knows
    # which components this run starts, so a log that was never registered is a failure.
    last = [item for item in items if item.get_closest_marker("last")]
    items[:] = [item for item in items if not item.get_closest_marker("last")] + last
    for item in items:
        where = item.path.as_posix()
        if "/e2e/webhook/" in where:
            logscan.EXPECTED.add("webhook")
        if "/e2e/api/" in where:
            logscan.EXPECTED.add("api")
        if "operator" in getattr(item, "fixturenames", ()):
            logscan.EXPECTED.add("operator")


@pytest.fixture(scope="session")
def postgres() -> Iterator[LocalPostgres]:
    """A PostgreSQL server on loopback; `postgres.dsn()` connects as its superuser."""
    with LocalPostgres() as server:
        yield server


@dataclasses.dataclass(frozen=True)
class Ledger:
    """The audit ledger in the session's PostgreSQL, migrated, as the operator uses it."""

    admin_dsn: str
    app_dsn: str

    def entries(self, chain: str, *, as_admin: bool = False) -> list[dict[str, Any]]:
        """Every entry of one chain in order, `identity` and `changes` decoded (as the app
        role, or as the superuser while the app role is locked out)."""
        async def fetch() -> list[dict[str, Any]]:
            conn = await asyncpg.connect(self.admin_dsn if as_admin else self.app_dsn)
            try:
                rows = await conn.fetch("SELECT * FROM ledger.audit_log WHERE chain = $1 "
                                        "ORDER BY seq", chain)
            finally:
                await conn.close()
            return [{**dict(row), "identity": json.loads(row["identity"]),
                     "changes": json.loads(row["changes"])} for row in rows]

        return asyncio.run(fetch())

    def verify(self, chain: str) -> verify.VerifyResult:
        async def run() -> verify.VerifyResult:
            conn = await asyncpg.connect(self.app_dsn)
            try:
                return await verify.verify_chain(conn, chain)
            finally:
                await conn.close()

        return asyncio.run(run())

    def admin(self, *statements: str) -> None:
        """Run SQL as the database superuser."""
        async def run() -> None:
            conn = await asyncpg.connect(self.admin_dsn)
            try:
                for statement in statements:
                    await conn.execute(statement)
            finally:
                await conn.close()

        asyncio.run(run())

    @contextlib.contextmanager
    def outage(self) -> Iterator[None]:
        """The database refuses Tenantry: the app role cannot log in and its sessions are cut."""
        role = migrations.DEFAULT_APP_ROLE
        self.admin(f'ALTER ROLE "{role}" NOLOGIN',
                   "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                   " WHERE datname = current_database() AND pid <> pg_backend_pid()")
        try:
            yield
        finally:
            self.admin(f'ALTER ROLE "{role}" LOGIN')


LEDGER_DATABASE = "tenantry_ledger"


@pytest.fixture(scope="session")
def ledger(postgres: LocalPostgres) -> Ledger:
    """A migrated ledger database; the app role's DSN is what Tenantry components get."""
    password = secrets.token_urlsafe(18)

    async def setup() -> None:
        admin = await asyncpg.connect(postgres.dsn(database="postgres"))
        try:
            await admin.execute(f'CREATE DATABASE "{LEDGER_DATABASE}"')
        finally:
            await admin.close()
        await migrations.migrate(postgres.dsn(database=LEDGER_DATABASE), app_password=password)

    asyncio.run(setup())
    return Ledger(admin_dsn=postgres.dsn(database=LEDGER_DATABASE),
                  app_dsn=postgres.dsn(database=LEDGER_DATABASE,
                                       user=migrations.DEFAULT_APP_ROLE, password=password))


@pytest.fixture(scope="session")
def control_plane() -> Iterator[LocalControlPlane]:
    """etcd + kube-apiserver + kube-controller-manager, built once and cached."""
    with LocalControlPlane() as plane:
        yield plane


@contextlib.contextmanager
def operator_ready_plane() -> Iterator[LocalControlPlane]:
    """A control plane of a test module's own, with the CRDs and the operator's namespace and
    RBAC: for tests that kill operators, which must never disturb the session's."""
    with LocalControlPlane() as plane:
        install_crds(plane.admin_kubeconfig)
        api = kube.api_client(plane.admin_kubeconfig)
        try:
            kube.apply(api, kube.load_manifests([
                REPO_ROOT / "manifests" / "namespace.yaml",
                REPO_ROOT / "manifests" / "operator" / "rbac.yaml"]))
        finally:
            api.close()
        yield plane


@pytest.fixture(scope="session")
def admin_api(control_plane: LocalControlPlane) -> Iterator[client.ApiClient]:
    """An ApiClient authenticated as a cluster admin (group system:masters)."""
    api = kube.api_client(control_plane.admin_kubeconfig)
    yield api
    api.close()


@pytest.fixture(scope="session")
def crds(control_plane: LocalControlPlane) -> None:
    """The generated CRDs, installed and Established."""
    install_crds(control_plane.admin_kubeconfig)


UserApi = Callable[..., client.ApiClient]


@pytest.fixture
def as_user(control_plane: LocalControlPlane) -> Iterator[UserApi]:
    """Factory: `as_user("alice", ["team-a"])` -> an ApiClient authenticated as that identity."""
    opened: list[client.ApiClient] = []

    def make(user: str, groups: Sequence[str] = ()) -> client.ApiClient:
        api = kube.api_client(control_plane.kubeconfig_for(user, groups))
        opened.append(api)
        return api

    yield make
    for api in opened:
        api.close()


@pytest.fixture
def namespace(admin_api: client.ApiClient) -> Iterator[str]:
    """A fresh namespace for one test, deleted afterwards."""
    name = f"t-{uuid.uuid4().hex[:10]}"
    core = client.CoreV1Api(admin_api)
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    yield name
    with contextlib.suppress(client.ApiException):
        core.delete_namespace(name)


def api_message(error: client.ApiException) -> str:
    """The human-readable message of a Kubernetes Status error."""
    try:
        return str(json.loads(error.body)["message"])
    except (TypeError, ValueError, KeyError):
        return str(error.body)


OPERATOR_USER = "system:serviceaccount:tenantry-system:tenantry-operator"
OPERATOR_GROUPS = ("system:serviceaccounts", "system:serviceaccounts:tenantry-system",
                   "system:authenticated")


ROTATION_INTERVAL = 1.0
"""`--rotation-interval` of every operator the tests start (the product's default is 5 s): the
RotationPolicy timer's rounds are what rotation tests wait for (a grace period or an overlap
over, a rotation resumed), never what they are about."""


TENANT_RETRY_DELAY = 2.0
"""`--tenant-retry-delay` of every test operator (the product's default is 10 s): a test that
removes what made a Tenant fail waits for the retry, which is not what it is about."""


class OperatorProcess:
    """The real operator (`tenantry operator run`) as a child process, its log in a file."""

    def __init__(self, kubeconfig: Path, log_path: Path,
                 peering: Sequence[str] | None = None, *,
                 extra_args: Sequence[str] = ()) -> None:
        """`peering`: extra arguments such as ["--priority", "100"]; None runs standalone.

        `extra_args`: further `tenantry operator run` options (keyring, ledger, ...).
        """
        self.log_path = log_path
        logscan.watch_log("operator", log_path)
        self.port = free_port()
        self._log = log_path.open("wb")
        mode = ["--standalone"] if peering is None else list(peering)
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tenantry", "operator", "run", *mode,
             "--kubeconfig", str(kubeconfig),
             "--liveness", f"http://127.0.0.1:{self.port}/healthz",
             "--rotation-interval", str(ROTATION_INTERVAL),
             "--tenant-retry-delay", str(TENANT_RETRY_DELAY), *extra_args],
            stdout=self._log, stderr=subprocess.STDOUT, cwd=REPO_ROOT,
        )

    def wait_ready(self, timeout: float = 60.0) -> None:
        def healthy() -> bool:
            url = f"http://127.0.0.1:{self.port}/healthz"
            with urllib.request.urlopen(url, timeout=2) as response:
                return bool(response.status == 200)

        wait_until(healthy, timeout=timeout, what="the operator's liveness endpoint")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def timer_rounds(self, namespace: str, name: str, *, since: float) -> int:
        """How many rounds of the RotationPolicy timer on NAMESPACE/NAME ended well after
        `since` (a `time.time()`), by this operator's log."""
        wanted = f"RotationPolicy/{namespace}/{name}"
        rounds = 0
        for line in self.log().splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if record.get("object") == wanted and \
                    record.get("message") == "Timer 'tick_policy' succeeded." and \
                    datetime.datetime.fromisoformat(record["time"]).timestamp() > since:
                rounds += 1
        return rounds

    def wait_timer_rounds(self, namespace: str, name: str, rounds: int = 2, *,
                          timeout: float = 60.0) -> None:
        """Wait until the timer has looked at NAMESPACE/NAME `rounds` times from now on: what a
        test that proves the operator keeps waiting (or does nothing) waits for, instead of a
        fixed sleep it hopes is long enough. Two rounds: at least one began after the call."""
        since = time.time()
        wait_until(lambda: self.timer_rounds(namespace, name, since=since) >= rounds,
                   timeout=timeout, interval=0.1,
                   what=f"{rounds} timer rounds of the operator on {namespace}/{name}")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if not self._log.closed:
            self._log.close()


@pytest.fixture(scope="session")
def operator_options(tmp_path_factory: pytest.TempPathFactory, ledger: Ledger) -> list[str]:
    """The `tenantry operator run` options every test operator gets (keyrings, ledger, ...).

    Each concern adds its own options here; tests that start their own operator pass them too.
    """
    state = tmp_path_factory.mktemp("operator-state")
    dsn_file = state / "ledger-dsn"
    dsn_file.write_text(ledger.app_dsn)
    dsn_file.chmod(0o600)
    options: list[str] = ["--ledger-dsn-file", str(dsn_file),
                          "--ledger-spool", str(state / "ledger-spool")]
    # Credentials: a master keyring and a sealing key (files, as mounted Secrets would be).
    options += crypto_cli.dev_key_files(state)
    ring = keyring.load_file(options[options.index("--keyring") + 1])
    for version in ring.versions:
        logscan.remember(ring.key(version), f"master key {version}")
    return options


@pytest.fixture(scope="session")
def operator(control_plane: LocalControlPlane, crds: None, operator_options: list[str],
             tmp_path_factory: pytest.TempPathFactory) -> Iterator[OperatorProcess]:
    """The operator, running for the whole session with the identity and RBAC of manifests/.

    It authenticates as its ServiceAccount's user name (a client certificate for
    system:serviceaccount:tenantry-system:tenantry-operator), so every test also proves that
    the ClusterRole we ship is enough, and that nothing works only because tests are admins.
    """
    api = kube.api_client(control_plane.admin_kubeconfig)
    try:
        kube.apply(api, kube.load_manifests([REPO_ROOT / "manifests" / "namespace.yaml",
                                             REPO_ROOT / "manifests" / "operator" / "rbac.yaml"]))
    finally:
        api.close()
    identity = control_plane.kubeconfig_for(OPERATOR_USER, OPERATOR_GROUPS)
    log_path = tmp_path_factory.mktemp("operator") / "operator.log"
    process = OperatorProcess(identity, log_path, extra_args=operator_options)
    try:
        process.wait_ready()
        yield process
    finally:
        process.stop()
