"""`tenantry dev up`: everything a new user needs on one machine, started in order.

Without a configured cluster: a local control plane and PostgreSQL, then the CRDs and the
samples. With a kubeconfig given, that cluster is used instead and no control plane is started.

The admission webhook accepts reviews only from the apiserver, proven by its webhook client
certificate. Our control plane is configured for that; a given cluster's apiserver is not ours to
configure, so the webhook starts there only when told which CA signs that apiserver's webhook
client certificate ($TENANTRY_WEBHOOK_CLIENT_CA, and optionally its CN in
$TENANTRY_WEBHOOK_CLIENT_CN).

With PostgreSQL, every component's schema is migrated by the one `tenantry db migrate` runner
(each component its own app role and random password), and the API pod runs on loopback with a
signing key of this environment's own. Its only user is the sample tenant's owner, a password
user whose random password is in a 0600 file: the dev API authenticates exactly as a real one
does, there is no bypass.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import secrets
import signal
import ssl
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import FrameType
from typing import Any, cast

from kubernetes import client

from tenantry import kube
from tenantry.api import cli as api_cli
from tenantry.api import schema as api_schema
from tenantry.crypto import cli as crypto_cli
from tenantry.devcluster.cluster import WEBHOOK_CLIENT_CN, LocalControlPlane
from tenantry.devcluster.postgres import LocalPostgres
from tenantry.devcluster.process import ManagedProcess, free_port, wait_until
from tenantry.ledger import migrations
from tenantry.model import common, crdgen


@dataclasses.dataclass
class DevEnvironment:
    kubeconfig: Path
    postgres_dsn: str | None
    control_plane: LocalControlPlane | None
    operator: ManagedProcess | None
    webhook: ManagedProcess | None = None
    api: DevApi | None = None

    def processes(self) -> list[ManagedProcess]:
        children = self.control_plane.processes() if self.control_plane else []
        return [*children, *([self.operator] if self.operator else []),
                *([self.webhook] if self.webhook else []),
                *([self.api.process] if self.api else [])]


@dataclasses.dataclass
class DevApi:
    """`tenantry api run` on loopback, and the file holding the dev user's password."""

    process: ManagedProcess
    url: str
    password_file: Path


DEV_USER = "alice@acme.example"
"""The API's dev user: the owner of manifests/samples/tenant-acme.yaml."""


def _say(message: str) -> None:
    print(f"[tenantry dev] {message}", file=sys.stderr, flush=True)


def install_crds(kubeconfig: Path) -> None:
    api = kube.api_client(kubeconfig)
    try:
        kube.apply(api, crdgen.all_crds())
        kube.wait_for_crds(api, [resource.name for resource in crdgen.RESOURCES])
    finally:
        api.close()


def migrate_databases(postgres: LocalPostgres, state_dir: Path) -> dict[str, Path]:
    """Migrate every component's schema (`tenantry db migrate`'s components, in its order) in
    the dev database, each app role with a fresh random password; {component: its app DSN file,
    `<component>-dsn`, mode 0600}."""
    dsn_files = {}
    for component in api_cli.components():
        password = secrets.token_urlsafe(18)
        asyncio.run(migrations.migrate(postgres.dsn(), component=component,
                                       app_password=password))
        dsn_file = state_dir / f"{component.name}-dsn"
        dsn_file.touch(mode=0o600)
        dsn_file.write_text(postgres.dsn(user=component.default_app_role, password=password))
        dsn_files[component.name] = dsn_file
    return dsn_files


def ledger_options(dsn_files: dict[str, Path], state_dir: Path) -> list[str]:
    """The operator options that point at the migrated ledger."""
    return ["--ledger-dsn-file", str(dsn_files[migrations.LEDGER.name]),
            "--ledger-spool", str(state_dir / "ledger-spool")]


def prepare_ledger(postgres: LocalPostgres, state_dir: Path) -> list[str]:
    """Migrate the dev database (every component); the operator options for its ledger."""
    return ledger_options(migrate_databases(postgres, state_dir), state_dir)


async def _create_password_user(dsn: str, username: str, password: str) -> None:
    import asyncpg

    from tenantry.api import passwords, store

    hashed = passwords.Passwords().hash(password)
    conn = await asyncpg.connect(dsn)
    try:
        await store.upsert_password_user(conn, username, hashed, replace=True)
    finally:
        await conn.close()


def start_api(dsn_file: Path, log_dir: Path, kubeconfig: Path, ledger_dsn_file: Path, *,
              username: str = DEV_USER) -> DevApi:
    """`tenantry api run` as a child process on a free loopback port, ready once /readyz
    answers (so once it has listed the Tenants of `kubeconfig`'s cluster), recording auth
    events in the ledger, with a signing key made here and `username` as a password user whose
    random password is in `log_dir/api-dev-password` (0600)."""
    from tenantry.api.tokens import rfc7517

    key_file = log_dir / "api-signing.pem"
    rfc7517.write_private_key(rfc7517.generate(), key_file)
    password = secrets.token_urlsafe(24)
    password_file = log_dir / "api-dev-password"
    fd = os.open(password_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(password + "\n")
    asyncio.run(_create_password_user(dsn_file.read_text().strip(), username, password))
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    process = ManagedProcess(
        "api",
        [sys.executable, "-m", "tenantry", "api", "run", "--dsn-file", str(dsn_file),
         "--signing-key-file", str(key_file), "--listen", f"127.0.0.1:{port}",
         "--kubeconfig", str(kubeconfig), "--ledger-dsn-file", str(ledger_dsn_file),
         "--ledger-spool", str(log_dir / "api-ledger-spool"), *DEV_LOG_FORMAT],
        log_dir / "api.log",
    )

    def ready() -> bool:
        with urllib.request.urlopen(f"{url}/readyz", timeout=2) as response:  # noqa: S310
            return bool(response.status == 200)

    try:
        wait_until(ready, timeout=60, what="the API's /readyz", process=process)
    except BaseException:
        process.stop()
        raise
    return DevApi(process=process, url=url, password_file=password_file)


# A person reads these logs in a terminal; in a cluster the components log JSON lines.
DEV_LOG_FORMAT = ("--log-format", "text")


def start_operator(kubeconfig: Path, log_dir: Path,
                   options: Sequence[str] = ("--no-ledger",)) -> ManagedProcess:
    """`tenantry operator run` as a child process, ready once its liveness probe answers."""
    port = free_port()
    process = ManagedProcess(
        "operator",
        [sys.executable, "-m", "tenantry", "operator", "run", "--standalone",
         "--kubeconfig", str(kubeconfig), "--liveness", f"http://127.0.0.1:{port}/healthz",
         *DEV_LOG_FORMAT, *options],
        log_dir / "operator.log",
    )

    def healthy() -> bool:
        url = f"http://127.0.0.1:{port}/healthz"
        with urllib.request.urlopen(url, timeout=2) as response:
            return bool(response.status == 200)

    try:
        wait_until(healthy, timeout=60, what="the operator's liveness endpoint", process=process)
    except BaseException:
        process.stop()
        raise
    return process


def start_webhook(kubeconfig: Path, log_dir: Path,
                  options: Sequence[str] = ("--no-ledger",), *, client_ca: Path,
                  client_cns: Sequence[str] = ()) -> ManagedProcess:
    """`tenantry webhook run` as a child process, ready once it answers /readyz over its TLS.

    There are no Services here: the apiserver calls it at https://127.0.0.1:PORT, presenting a
    client certificate signed by `client_ca` (with a CN of `client_cns`, if given). It keeps its
    certificates in a Secret of tenantry-system, so that namespace must exist.
    """
    api = kube.api_client(kubeconfig)
    try:
        kube.apply(api, [{"apiVersion": "v1", "kind": "Namespace",
                          "metadata": {"name": "tenantry-system"}}],
                   field_manager="tenantry-dev-webhook")
    finally:
        api.close()
    port = free_port()
    url = f"https://127.0.0.1:{port}"
    cert_dir = log_dir / "webhook-certs"
    process = ManagedProcess(
        "webhook",
        [sys.executable, "-m", "tenantry", "webhook", "run", "--kubeconfig", str(kubeconfig),
         "--listen", f"127.0.0.1:{port}", "--url", url, "--cert-dir", str(cert_dir),
         "--client-ca-file", str(client_ca), *(f"--client-cn={cn}" for cn in client_cns),
         *DEV_LOG_FORMAT, *options],
        log_dir / "webhook.log",
    )

    def ready() -> bool:
        context = ssl.create_default_context(cafile=str(cert_dir / "ca.crt"))
        with urllib.request.urlopen(f"{url}/readyz", timeout=2,  # noqa: S310 - our https URL
                                    context=context) as response:
            return bool(response.status == 200)

    try:
        wait_until(ready, timeout=60, what="the webhook's /readyz", process=process)
    except BaseException:
        process.stop()
        raise
    return process


def webhook_client(control_plane: LocalControlPlane | None) -> tuple[Path, list[str]] | None:
    """(client CA, allowed CNs) the webhook authenticates the apiserver with; None when unknown
    (a given cluster, and $TENANTRY_WEBHOOK_CLIENT_CA unset)."""
    if control_plane is not None:
        return control_plane.webhook_client_ca, [WEBHOOK_CLIENT_CN]
    ca = os.environ.get("TENANTRY_WEBHOOK_CLIENT_CA")
    if not ca:
        return None
    cn = os.environ.get("TENANTRY_WEBHOOK_CLIENT_CN")
    return Path(ca).expanduser(), [cn] if cn else []


def wait_for_tenants(kubeconfig: Path, names: list[str], timeout: float = 60.0) -> None:
    api = kube.api_client(kubeconfig)
    custom = client.CustomObjectsApi(api)

    def all_ready() -> bool:
        for name in names:
            tenant = cast(dict[str, Any], custom.get_cluster_custom_object(
                common.GROUP, common.VERSION, "tenants", name))
            ready = [c for c in (tenant.get("status") or {}).get("conditions") or []
                     if c["type"] == "Ready"]
            if not ready or ready[0]["status"] != "True":
                return False
        return True

    try:
        wait_until(all_ready, timeout=timeout, what=f"tenant(s) {', '.join(names)} to be Ready")
    finally:
        api.close()


@contextlib.contextmanager
def dev_environment(kubeconfig: Path | None, *, with_postgres: bool = True,
                    samples: Path | None = None,
                    with_operator: bool = True) -> Iterator[DevEnvironment]:
    with contextlib.ExitStack() as stack:
        control_plane = None
        if kubeconfig is None:
            started = time.monotonic()
            _say("no cluster configured: starting a local control plane "
                 "(etcd, kube-apiserver, kube-controller-manager)")
            control_plane = stack.enter_context(LocalControlPlane())
            kubeconfig = control_plane.admin_kubeconfig
            _say(f"control plane ready at {control_plane.server} "
                 f"in {time.monotonic() - started:.1f}s")
        else:
            _say(f"using the cluster of {kubeconfig}")
        dsn = None
        state_dir = control_plane.workdir if control_plane else Path(tempfile.mkdtemp())
        operator_options = ["--no-ledger"]
        dev_api = None
        if with_postgres:
            postgres = stack.enter_context(LocalPostgres())
            dsn = postgres.dsn()
            _say(f"PostgreSQL ready on 127.0.0.1:{postgres.port}")
            dsn_files = migrate_databases(postgres, state_dir)
            operator_options = ledger_options(dsn_files, state_dir)
            _say(f"database tenantry migrated (schemas: {', '.join(dsn_files)})")
            # The API reads Tenants: their CRD must exist before it can become ready.
            install_crds(kubeconfig)
            dev_api = start_api(dsn_files[api_schema.COMPONENT.name], state_dir, kubeconfig,
                                dsn_files[migrations.LEDGER.name])
            stack.callback(dev_api.process.stop)
            _say(f"API running at {dev_api.url}, user {DEV_USER} "
                 f"(log: {dev_api.process.log_path})")
        install_crds(kubeconfig)
        _say("CRDs installed: " + ", ".join(r.name for r in crdgen.RESOURCES))
        operator = webhook = None
        if with_operator:
            # A keyring and a sealing key of this environment's own, so Credentials work.
            operator_options += crypto_cli.dev_operator_keys(kubeconfig, state_dir)
            operator = start_operator(kubeconfig, state_dir, operator_options)
            stack.callback(operator.stop)
            _say(f"operator running (log: {operator.log_path})")
            ledger = operator_options.index("--ledger-dsn-file") \
                if "--ledger-dsn-file" in operator_options else None
            client = webhook_client(control_plane)
            if client is None:
                _say("admission webhook NOT started: it accepts reviews only from an apiserver "
                     "that authenticates with a client certificate, and this cluster's is not "
                     "ours to configure; set TENANTRY_WEBHOOK_CLIENT_CA=FILE (the CA of its "
                     "webhook client certificate; README, 'Webhook client authentication')")
            else:
                webhook = start_webhook(
                    kubeconfig, state_dir, ["--no-ledger"] if ledger is None
                    else [*operator_options[ledger:ledger + 2],
                          "--ledger-spool", str(state_dir / "webhook-spool")],
                    client_ca=client[0], client_cns=client[1])
                stack.callback(webhook.stop)
                _say(f"admission webhook running, for the apiserver only "
                     f"(log: {webhook.log_path})")
        if samples is not None and samples.exists():
            api = kube.api_client(kubeconfig)
            try:
                documents = kube.load_manifests([samples])
                applied = kube.apply(api, documents)
            finally:
                api.close()
            _say(f"applied {len(applied)} sample object(s) from {samples}")
            tenants = [d["metadata"]["name"] for d in documents if d["kind"] == "Tenant"]
            if operator is not None and tenants:
                wait_for_tenants(kubeconfig, tenants)
                _say(f"sample tenant(s) Ready: {', '.join(tenants)}")
                _say(crypto_cli.seal_dev_sample(kubeconfig, operator_options))
        yield DevEnvironment(kubeconfig=kubeconfig, postgres_dsn=dsn,
                             control_plane=control_plane, operator=operator, webhook=webhook,
                             api=dev_api)


def run_until_signalled(kubeconfig: Path | None, *, with_postgres: bool, samples: Path | None,
                        exit_when_ready: bool, with_operator: bool = True) -> int:
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    with dev_environment(kubeconfig, with_postgres=with_postgres, samples=samples,
                         with_operator=with_operator) as env:
        print(f"export KUBECONFIG={env.kubeconfig}", flush=True)
        if env.postgres_dsn:
            # The DSN carries a password: shown to the user at their terminal, never logged.
            print(f"export TENANTRY_LEDGER_DSN='{env.postgres_dsn}'", flush=True)
        if env.api is not None:
            print(f"export TENANTRY_API_URL={env.api.url}", flush=True)
            print(f"export TENANTRY_DEV_PASSWORD_FILE={env.api.password_file}", flush=True)
        _say("ready. Try: kubectl get tenants; kubectl get tenantry -A; "
             "kubectl get networkpolicies -n acme-prod")
        if exit_when_ready:
            return 0
        _say("press Ctrl-C to stop everything")
        while not stop.wait(1.0):
            dead = [p.name for p in env.processes() if not p.running()]
            if dead:
                _say(f"{', '.join(dead)} exited; stopping")
                return 1
    _say("stopped")
    return 0


def configured_kubeconfig(explicit: str | None) -> Path | None:
    """--kubeconfig, else $KUBECONFIG; None means 'start a local control plane'."""
    value = explicit or os.environ.get("KUBECONFIG")
    return Path(value).expanduser() if value else None
