"""`tenantry dev up`: everything a new user needs on one machine, started in order.

Without a configured cluster: a local control plane and PostgreSQL, then the CRDs and the
samples. With a kubeconfig given, that cluster is used instead and no control plane is started.

The admission webhook accepts reviews only from the apiserver, proven by its webhook client
certificate. Our control plane is configured for that; a given cluster's apiserver is not ours to
configure, so the webhook starts there only when told which CA signs that apiserver's webhook
client certificate ($TENANTRY_WEBHOOK_CLIENT_CA, and optionally its CN in
$TENANTRY_WEBHOOK_CLIENT_CN).
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

    def processes(self) -> list[ManagedProcess]:
        children = self.control_plane.processes() if self.control_plane else []
        return [*children, *([self.operator] if self.operator else []),
                *([self.webhook] if self.webhook else [])]


def _say(message: str) -> None:
    print(f"[tenantry dev] {message}", file=sys.stderr, flush=True)


def install_crds(kubeconfig: Path) -> None:
    api = kube.api_client(kubeconfig)
    try:
        kube.apply(api, crdgen.all_crds())
        kube.wait_for_crds(api, [resource.name for resource in crdgen.RESOURCES])
    finally:
        api.close()


def prepare_ledger(postgres: LocalPostgres, state_dir: Path) -> list[str]:
    """Migrate the ledger in the dev database; the operator options that point at it."""
    password = secrets.token_urlsafe(18)
    asyncio.run(migrations.migrate(postgres.dsn(), app_password=password))
    dsn_file = state_dir / "ledger-dsn"
    dsn_file.touch(mode=0o600)
    dsn_file.write_text(postgres.dsn(user=migrations.DEFAULT_APP_ROLE, password=password))
    return ["--ledger-dsn-file", str(dsn_file), "--ledger-spool", str(state_dir / "ledger-spool")]


def start_operator(kubeconfig: Path, log_dir: Path,
                   options: Sequence[str] = ("--no-ledger",)) -> ManagedProcess:
    """`tenantry operator run` as a child process, ready once its liveness probe answers."""
    port = free_port()
    process = ManagedProcess(
        "operator",
        [sys.executable, "-m", "tenantry", "operator", "run", "--standalone",
         "--kubeconfig", str(kubeconfig), "--liveness", f"http://127.0.0.1:{port}/healthz",
         *options],
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
         *options],
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
        if with_postgres:
            postgres = stack.enter_context(LocalPostgres())
            dsn = postgres.dsn()
            _say(f"PostgreSQL ready on 127.0.0.1:{postgres.port}")
            operator_options = prepare_ledger(postgres, state_dir)
            _say("audit ledger migrated (database tenantry, schema ledger)")
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
                             control_plane=control_plane, operator=operator, webhook=webhook)


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
