"""`tenantry webhook run`: start the admission webhook and keep it, and its configuration, current.

Start-up order, so that the apiserver is never pointed at something that cannot answer:
certificates (the client CA, then the serving certificate from the shared Secret, made on first
start) -> caches start filling -> TLS server listening -> the ValidatingWebhookConfiguration
applied with the current caBundle. Then resyncs (client CA, certificates, caBundle,
configuration drift) run until SIGTERM or SIGINT.

Stopping does not delete the configuration: that would open a window in which tenants' pods are
admitted unchecked. A stopped webhook blocks only what its selector covers, tenant namespaces,
and only their writes of pods, workloads and Services; kube-system and everyone else carry on.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import signal
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aiohttp import web

from tenantry import aio
from tenantry.kubeapi import ApiError, KubeApi
from tenantry.ledger import client as ledger_client
from tenantry.ledger import recorder as ledger_recorder
from tenantry.ledger.spool import Spool
from tenantry.webhook import certs, clientauth, configuration, metrics, routes, server, tls
from tenantry.webhook.directory import TenantDirectory
from tenantry.webhook.ingresses import IngressHosts
from tenantry.webhook.records import DecisionSink, LedgerSink, LogSink, Recorder

logger = logging.getLogger(__name__)

# How long start-up waits for the caches before publishing the configuration anyway (misses
# fall back to GETs, so serving early is correct, only slower).
SYNC_TIMEOUT = 30.0


@dataclasses.dataclass(frozen=True)
class Settings:
    """Everything `tenantry webhook run` is told."""

    endpoint: configuration.Endpoint
    """Where the apiserver calls the webhook: a URL or a Service."""
    cert_dir: Path
    """Where the serving certificate is written for the TLS server (a private directory)."""
    kubeconfig: Path | None = None
    """Cluster to use; None: in-cluster ServiceAccount, then $KUBECONFIG."""
    listen_host: str = "0.0.0.0"  # noqa: S104 - a server in a pod listens on its pod IP
    """Address to listen on."""
    listen_port: int = 8443
    """Port to listen on (TLS)."""
    namespace: str = "tenantry-system"
    """Tenantry's own namespace: holds the TLS Secret; never selected by the webhooks."""
    secret_name: str = "tenantry-webhook-tls"  # noqa: S105 - a name, not a secret
    """The Secret all replicas share their CA and serving certificate through."""
    configuration_name: str = configuration.NAME
    """The ValidatingWebhookConfiguration this webhook writes."""
    failure_policy: str = "Fail"
    """What the apiserver does when the webhook cannot answer (routes may override)."""
    timeout_seconds: int = configuration.MAX_TIMEOUT_SECONDS
    """How long the apiserver waits for an answer (1-5)."""
    extra_names: tuple[str, ...] = ()
    """DNS names or IPs the serving certificate covers besides the endpoint's."""
    cert_policy: certs.CertPolicy = dataclasses.field(default_factory=certs.CertPolicy)
    """Certificate lifetimes and renewal."""
    resync_interval: float = 60.0
    """Seconds between checks of the certificates and the webhook configuration."""
    lookup_timeout: float = 2.0
    """Seconds a namespace or Tenant GET may take on a cache miss before the review is refused."""
    ledger_dsn: str | None = None
    """The audit ledger (app role DSN); None only with --no-ledger."""
    ledger_fail_closed: bool = True
    """Refuse changes to Tenantry resources that cannot be recorded."""
    operator_user: str = ""
    """The operator's user name, whose writes the operator records itself."""
    ledger_spool: Path = Path(tempfile.gettempdir()) / "tenantry-webhook-spool"
    """Durable queue of admission decisions on their way to the ledger."""
    client_ca_file: Path | None = None
    """The CA of the apiserver's client certificate; reviews from peers without a certificate
    it verifies are refused. None only with `insecure_no_client_auth`."""
    client_common_names: tuple[str, ...] = ()
    """Allowed CNs of that certificate; empty: any the CA verifies."""
    insecure_no_client_auth: bool = False
    """Accept reviews from anyone who can reach the webhook (explicit opt-out, logged loudly)."""

    @property
    def clients(self) -> clientauth.ClientPolicy:
        """Who may send reviews; `clientauth.ClientAuthError` when neither a client CA nor the
        bypass is set."""
        return clientauth.ClientPolicy(self.client_ca_file,
                                       frozenset(self.client_common_names),
                                       insecure=self.insecure_no_client_auth)


class Webhook:
    """The running webhook: server, caches, certificates. `start()`, then `stop()`."""

    def __init__(self, settings: Settings, sinks: tuple[DecisionSink, ...] = ()) -> None:
        self.settings = settings
        self.recorder = Recorder(sinks or (LogSink(),))
        self._api: KubeApi | None = None
        self._runner: web.AppRunner | None = None
        self._tasks: list[asyncio.Task[Any]] = []
        self.directory: TenantDirectory | None = None
        self.keeper: tls.CertKeeper | None = None
        self.ledger: ledger_client.LedgerClient | None = None
        self.decisions: ledger_recorder.Recorder | None = None

    async def start(self) -> None:
        settings = self.settings
        clients = settings.clients  # refuse to run unauthenticated unless told to, first
        if clients.insecure:
            logger.warning("INSECURE: --insecure-no-client-auth: anyone who can reach this "
                           "webhook may send it admission reviews, and the audit ledger records "
                           "whatever identity they claim")
        kubeconfig = str(settings.kubeconfig) if settings.kubeconfig else None
        self._api = api = await KubeApi.from_kubeconfig(kubeconfig)
        self.directory = TenantDirectory(api, lookup_timeout=settings.lookup_timeout)
        ingress_hosts = IngressHosts(api, lookup_timeout=settings.lookup_timeout)
        self._tasks.append(asyncio.create_task(ingress_hosts.run()))  # stop() cancels it
        if settings.ledger_dsn:
            self.ledger = ledger_client.LedgerClient(settings.ledger_dsn)
            self.decisions = ledger_recorder.Recorder(Spool(settings.ledger_spool),
                                                     settings.ledger_dsn, actor="admission")
            self.decisions.start()
            self.recorder.add(LedgerSink(self.decisions))
        self.recorder.add(metrics.MetricsSink())
        table = routes.build_routes(routes.HandlerContext(
            tenants=self.directory, recorder=self.recorder,
            operator_namespace=settings.namespace, ledger=self.ledger,
            ledger_fail_closed=settings.ledger_fail_closed,
            operator_user=settings.operator_user, ingress_hosts=ingress_hosts))

        def desired_configuration(ca_bundle: bytes) -> dict[str, Any]:
            return configuration.webhook_configuration(
                table, endpoint=settings.endpoint, ca_bundle=ca_bundle,
                failure_policy=settings.failure_policy,
                timeout_seconds=settings.timeout_seconds, name=settings.configuration_name)

        desired_configuration(b"-")  # refuse bad settings before touching the cluster
        names = configuration.serving_names(settings.endpoint, settings.extra_names)
        self.keeper = keeper = tls.CertKeeper(
            api, namespace=settings.namespace, secret_name=settings.secret_name, names=names,
            cert_dir=settings.cert_dir, policy=settings.cert_policy,
            configuration=desired_configuration, client_ca_file=settings.client_ca_file)
        state = await keeper.start()
        self.directory.start()
        directory = self.directory
        app = server.make_app(table, ready=lambda: directory.synced, clients=clients)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, settings.listen_host, settings.listen_port,
                           ssl_context=keeper.context, shutdown_timeout=5.0)
        await site.start()
        logger.info("webhook listening on https://%s:%d (%s); %s", settings.listen_host,
                    settings.listen_port, ", ".join(f"{r.path} -> {r.name}" for r in table),
                    clients.describe())
        try:
            await asyncio.wait_for(directory.wait_synced(), SYNC_TIMEOUT)
        except TimeoutError:
            logger.warning("caches not synced after %.0fs: serving with GET fallbacks meanwhile",
                           SYNC_TIMEOUT)
        await keeper.publish(state)
        # After the caBundle, as in every resync: the operator may judge a rotation from these.
        # Not fatal: admission does not depend on them, and every resync tries again.
        try:
            await keeper.publish_facts(state)
        except ApiError as error:
            logger.warning("publishing the rotation facts in ConfigMap %s/%s failed (%s %s): "
                           "retrying at the next resync", settings.namespace,
                           certs.ROTATION_CONFIGMAP, error.status, error.reason)
        logger.info("ValidatingWebhookConfiguration %s is current; calls go to %s",
                    settings.configuration_name,
                    settings.endpoint.client_config(table[0].path))
        self._tasks.append(asyncio.create_task(keeper.run(settings.resync_interval)))

    async def stop(self) -> None:
        await aio.cancel_all(self._tasks)
        if self._runner is not None:
            await self._runner.cleanup()
        if self.directory is not None:
            await self.directory.stop()
        if self._api is not None:
            await self._api.close()
        if self.ledger is not None:
            await self.ledger.close()
        if self.decisions is not None:
            await self.decisions.close()


async def serve(settings: Settings) -> None:
    """Run the webhook until SIGTERM or SIGINT."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    webhook = Webhook(settings)
    try:
        await webhook.start()
        await stop.wait()
        logger.info("stopping (the webhook configuration stays: tenant namespaces fail closed)")
    finally:
        await webhook.stop()


def loop_factory() -> tuple[Callable[[], asyncio.AbstractEventLoop], str]:
    """The event loop the server runs on, and its name: uvloop's when installed, else asyncio's.

    Every review is a TLS read, a little Python and a TLS write; on asyncio's own loop a good
    part of the webhook's CPU per review goes to the loop and its pure-Python TLS layer
    (sslproto). uvloop (libuv, with TLS in Cython) runs aiohttp unchanged and cheaper: a trivial
    handler on the same TLS server cost ~115-130 us of CPU a request instead of ~135-165, the
    workloads route ~280-340 instead of ~330-420 (one client, sequential). It is a dependency;
    where it is missing, the webhook still serves, on asyncio's loop.
    """
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop, "asyncio"
    return uvloop.new_event_loop, "uvloop"


def run(settings: Settings, *, verbose: bool = False) -> int:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not verbose:
        logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    factory, name = loop_factory()
    if name != "uvloop":
        logger.warning("uvloop is not installed: serving on asyncio's event loop, which costs "
                       "more CPU per review (pip install 'uvloop>=0.21,<1')")
    try:
        with asyncio.Runner(loop_factory=factory) as runner:
            runner.run(serve(settings))
    except (ApiError, OSError, clientauth.ClientAuthError) as error:
        # RBAC, a missing namespace, a port in use, an unusable client CA: say what, without a
        # traceback.
        logger.error("the webhook cannot run: %s", error)
        return 1
    return 0
