"""A real local control plane: etcd, kube-apiserver and kube-controller-manager on 127.0.0.1.

Everything runs from the cached binaries of `build`, in a temporary directory, on free ports, with
TLS, RBAC, admission webhooks and ValidatingAdmissionPolicy on. There is no kubelet and no
kube-proxy: pods are stored and admitted, never run. Use it as a context manager, or `start()` and
`stop()`; child processes die with us even when we are killed (see `process`).

The apiserver authenticates to admission webhooks the way a real cluster should be configured
(README, "Webhook client authentication"): an AdmissionConfiguration whose webhook plugins name a
kubeconfig holding a client certificate. That certificate is signed by a CA of its own
(`webhook_client_ca`), which signs nothing else: a webhook trusting it trusts the apiserver only,
never the users whose client certificates the cluster CA signs.
"""

from __future__ import annotations

import base64
import dataclasses
import re
import shutil
import ssl
import tempfile
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import yaml

from tenantry.devcluster import build, pki
from tenantry.devcluster.process import ManagedProcess, free_port, wait_until

ADMIN_USER = "tenantry-admin"
ADMIN_GROUPS = ("system:masters",)
SERVICE_CLUSTER_IP_RANGE = "10.0.0.0/24"
WEBHOOK_CLIENT_CN = "kube-apiserver-webhook-client"
"""The CN of the client certificate the apiserver presents to admission webhooks."""

# DenyServiceExternalIPs: nobody may set Service externalIPs (CVE-2020-8554, traffic to any IP
# hijacked by whoever can create a Service); real clusters should enable it too (README).
ADMISSION_PLUGINS = (
    "NamespaceLifecycle", "LimitRanger", "ServiceAccount", "PodSecurity", "ResourceQuota",
    "DefaultStorageClass", "DenyServiceExternalIPs", "MutatingAdmissionWebhook",
    "ValidatingAdmissionWebhook", "ValidatingAdmissionPolicy",
)

# Controllers we need: namespace deletion finishes, owner references cascade, every namespace gets
# its default ServiceAccount and kube-root-ca.crt, built-in admin/edit/view roles are aggregated,
# and ResourceQuota status is computed (quota admission relies on it).
KCM_CONTROLLERS = (
    "namespace-controller",
    "garbage-collector-controller",
    "serviceaccount-controller",
    "serviceaccount-token-controller",
    "clusterrole-aggregation-controller",
    "root-ca-certificate-publisher-controller",
    "resourcequota-controller",
)


@dataclasses.dataclass(frozen=True)
class Timings:
    """Seconds spent in each start-up phase, for the notes and benchmarks."""

    build: float
    etcd: float
    apiserver: float
    controller_manager: float

    @property
    def total(self) -> float:
        return self.build + self.etcd + self.apiserver + self.controller_manager


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def kubeconfig_document(server: str, ca_pem: bytes, client: pki.KeyPair,
                        user: str, context: str = "tenantry-dev") -> dict[str, Any]:
    """A kubeconfig (as a dict) that authenticates with a client certificate."""
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{
            "name": context,
            "cluster": {"server": server, "certificate-authority-data": _b64(ca_pem)},
        }],
        "users": [{
            "name": user,
            "user": {
                "client-certificate-data": _b64(client.cert_pem),
                "client-key-data": _b64(client.key_pem),
            },
        }],
        "contexts": [{"name": context, "context": {"cluster": context, "user": user}}],
        "current-context": context,
    }


def webhook_client_kubeconfig_document(client: pki.KeyPair,
                                       webhook: str = "*") -> dict[str, Any]:
    """The kubeconfig an AdmissionConfiguration names: credentials the apiserver presents to
    webhooks. `webhook` is the host (and port, unless 443) of a webhook's URL or Service DNS
    name, a `*.`-prefixed wildcard of one, or "*" for every webhook. Only `users` is read; no
    current-context, so no other webhook falls back to these credentials unless named."""
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "users": [{
            "name": webhook,
            "user": {
                "client-certificate-data": _b64(client.cert_pem),
                "client-key-data": _b64(client.key_pem),
            },
        }],
    }


def admission_configuration_document(webhook_kubeconfig: Path) -> dict[str, Any]:
    """An AdmissionConfiguration (for --admission-control-config-file) whose validating and
    mutating webhook plugins authenticate with the credentials in `webhook_kubeconfig`."""
    if not webhook_kubeconfig.is_absolute():
        raise ValueError(f"kubeConfigFile must be an absolute path, not {webhook_kubeconfig}")
    plugin = {"apiVersion": "apiserver.config.k8s.io/v1", "kind": "WebhookAdmissionConfiguration",
              "kubeConfigFile": str(webhook_kubeconfig)}
    return {
        "apiVersion": "apiserver.config.k8s.io/v1",
        "kind": "AdmissionConfiguration",
        "plugins": [{"name": name, "configuration": dict(plugin)}
                    for name in ("ValidatingAdmissionWebhook", "MutatingAdmissionWebhook")],
    }


def _safe_file_name(user: str, groups: Sequence[str]) -> str:
    raw = "-".join([user, *groups])
    return re.sub(r"[^A-Za-z0-9_.-]", "_", raw)[:120]


class LocalControlPlane:
    """etcd + kube-apiserver + kube-controller-manager, owned by this process."""

    def __init__(self, workdir: Path | None = None, *,
                 binaries: build.Binaries | None = None,
                 ready_timeout: float = 90.0) -> None:
        self._owns_workdir = workdir is None
        self.workdir = workdir or Path(tempfile.mkdtemp(prefix="tenantry-cp-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._binaries = binaries
        self._ready_timeout = ready_timeout
        self._processes: list[ManagedProcess] = []
        self.port = 0
        self.ca: pki.KeyPair | None = None
        self.admin_kubeconfig = self.workdir / "admin.kubeconfig"
        # The CA a webhook trusts to authenticate the apiserver (its `--client-ca-file`), and
        # the apiserver's client certificate for webhooks (CN `WEBHOOK_CLIENT_CN`), for tests
        # that speak to a webhook as the apiserver does.
        self.webhook_client_ca = self.workdir / "webhook-client-ca.crt"
        self.webhook_client_cert = self.workdir / "webhook-client.crt"
        self.webhook_client_key = self.workdir / "webhook-client.key"
        self.timings: Timings | None = None

    # -- lifecycle -------------------------------------------------------------------------------

    def __enter__(self) -> LocalControlPlane:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    @property
    def server(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def start(self) -> None:
        started = time.monotonic()
        binaries = self._binaries or build.ensure_binaries()
        built = time.monotonic()
        try:
            self._write_pki()
            self._start_etcd(binaries.etcd)
            etcd_ready = time.monotonic()
            self._start_apiserver(binaries.kube_apiserver)
            api_ready = time.monotonic()
            self._start_controller_manager(binaries.kube_controller_manager)
            kcm_ready = time.monotonic()
        except BaseException:
            self.stop()
            raise
        self.timings = Timings(
            build=built - started, etcd=etcd_ready - built,
            apiserver=api_ready - etcd_ready, controller_manager=kcm_ready - api_ready,
        )

    def stop(self) -> None:
        """Stop every child (newest first) and remove the working directory if it is ours."""
        for process in reversed(self._processes):
            process.stop()
        self._processes.clear()
        if self._owns_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def processes(self) -> list[ManagedProcess]:
        return list(self._processes)

    # -- identities --------------------------------------------------------------------------------

    def kubeconfig_for(self, user: str, groups: Sequence[str] = ()) -> Path:
        """A kubeconfig that authenticates as `user` in `groups` (client certificate)."""
        if self.ca is None:
            raise RuntimeError("control plane not started")
        path = self.workdir / "users" / f"{_safe_file_name(user, groups)}.kubeconfig"
        if not path.exists():
            path.parent.mkdir(exist_ok=True)
            client = pki.make_client_cert(self.ca, user, groups)
            document = kubeconfig_document(self.server, self.ca.cert_pem, client, user)
            path.write_text(yaml.safe_dump(document))
            path.chmod(0o600)
        return path

    # -- internals -------------------------------------------------------------------------------

    def _path(self, name: str) -> Path:
        return self.workdir / name

    def _write(self, name: str, data: bytes) -> Path:
        path = self._path(name)
        path.write_bytes(data)
        path.chmod(0o600)
        return path

    def _write_pki(self) -> None:
        self.ca = pki.make_ca()
        self._write("ca.crt", self.ca.cert_pem)
        self._write("ca.key", self.ca.key_pem)
        # The in-cluster service IP (first of the range) lets the `kubernetes` Service validate.
        serving = pki.make_serving_cert(
            self.ca, "kube-apiserver",
            ["127.0.0.1", "localhost", "10.0.0.1", "kubernetes", "kubernetes.default",
             "kubernetes.default.svc", "kubernetes.default.svc.cluster.local"],
        )
        self._write("apiserver.crt", serving.cert_pem)
        self._write("apiserver.key", serving.key_pem)
        sa_private, sa_public = pki.make_service_account_key()
        self._write("sa.key", sa_private)
        self._write("sa.pub", sa_public)
        admin = pki.make_client_cert(self.ca, ADMIN_USER, ADMIN_GROUPS)
        self._write("admin.crt", admin.cert_pem)
        self._write("admin.key", admin.key_pem)
        self._write_webhook_client()

    def _write_webhook_client(self) -> None:
        """The apiserver's credentials for admission webhooks, under a CA of their own."""
        client_ca = pki.make_ca("tenantry-dev-webhook-client-ca")
        self._write(self.webhook_client_ca.name, client_ca.cert_pem)
        self._write("webhook-client-ca.key", client_ca.key_pem)
        client = pki.make_client_cert(client_ca, WEBHOOK_CLIENT_CN)
        self._write(self.webhook_client_cert.name, client.cert_pem)
        self._write(self.webhook_client_key.name, client.key_pem)
        # Ports are free ones, different on every start: one entry for every webhook.
        kubeconfig = self._write("webhook-client.kubeconfig", yaml.safe_dump(
            webhook_client_kubeconfig_document(client)).encode())
        self._write("admission-configuration.yaml", yaml.safe_dump(
            admission_configuration_document(kubeconfig.resolve())).encode())

    def _spawn(self, name: str, argv: list[str]) -> ManagedProcess:
        process = ManagedProcess(name, argv, self._path(f"{name}.log"))
        self._processes.append(process)
        return process

    def _start_etcd(self, binary: Path) -> None:
        client_port, peer_port = free_port(), free_port()
        client_url = f"http://127.0.0.1:{client_port}"
        self.etcd_url = client_url
        process = self._spawn("etcd", [
            str(binary),
            f"--data-dir={self._path('etcd-data')}",
            f"--listen-client-urls={client_url}",
            f"--advertise-client-urls={client_url}",
            f"--listen-peer-urls=http://127.0.0.1:{peer_port}",
            f"--initial-advertise-peer-urls=http://127.0.0.1:{peer_port}",
            f"--initial-cluster=default=http://127.0.0.1:{peer_port}",
            "--unsafe-no-fsync",
            "--log-level=warn",
            "--quota-backend-bytes=4294967296",
        ])

        def healthy() -> bool:
            with urllib.request.urlopen(f"{client_url}/health", timeout=2) as response:  # noqa: S310
                return b'"health":"true"' in response.read()

        wait_until(healthy, timeout=30, what="etcd /health", process=process)

    def _admin_ssl_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=str(self._path("ca.crt")))
        context.load_cert_chain(str(self._path("admin.crt")), str(self._path("admin.key")))
        return context

    def _start_apiserver(self, binary: Path) -> None:
        assert self.ca is not None
        self.port = free_port()
        process = self._spawn("kube-apiserver", [
            str(binary),
            f"--etcd-servers={self.etcd_url}",
            "--bind-address=127.0.0.1",
            "--advertise-address=127.0.0.1",
            f"--secure-port={self.port}",
            f"--cert-dir={self._path('apiserver-certs')}",
            f"--tls-cert-file={self._path('apiserver.crt')}",
            f"--tls-private-key-file={self._path('apiserver.key')}",
            f"--client-ca-file={self._path('ca.crt')}",
            "--authorization-mode=Node,RBAC",
            f"--enable-admission-plugins={','.join(ADMISSION_PLUGINS)}",
            f"--admission-control-config-file={self._path('admission-configuration.yaml')}",
            # Real clusters allow privileged pods at the apiserver and leave refusing them to
            # admission: we must see such pods to prove our webhook refuses them.
            "--allow-privileged=true",
            f"--service-account-issuer={self.server}",
            f"--service-account-key-file={self._path('sa.pub')}",
            f"--service-account-signing-key-file={self._path('sa.key')}",
            f"--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}",
            "--endpoint-reconciler-type=none",
            "--profiling=false",
            "--v=1",
        ])
        context = self._admin_ssl_context()

        def ready() -> bool:
            with urllib.request.urlopen(  # noqa: S310 - fixed https URL we built
                f"{self.server}/readyz", timeout=3, context=context
            ) as response:
                return bool(response.status == 200)

        wait_until(ready, timeout=self._ready_timeout, what="kube-apiserver /readyz",
                   process=process)
        admin = kubeconfig_document(
            self.server, self.ca.cert_pem,
            pki.KeyPair(self._path("admin.crt").read_bytes(), self._path("admin.key").read_bytes()),
            ADMIN_USER,
        )
        self.admin_kubeconfig.write_text(yaml.safe_dump(admin))
        self.admin_kubeconfig.chmod(0o600)

    def _start_controller_manager(self, binary: Path) -> None:
        process = self._spawn("kube-controller-manager", [
            str(binary),
            f"--kubeconfig={self.admin_kubeconfig}",
            f"--authentication-kubeconfig={self.admin_kubeconfig}",
            f"--authorization-kubeconfig={self.admin_kubeconfig}",
            f"--controllers={','.join(KCM_CONTROLLERS)}",
            f"--service-account-private-key-file={self._path('sa.key')}",
            f"--root-ca-file={self._path('ca.crt')}",
            "--use-service-account-credentials=true",
            "--leader-elect=false",
            "--bind-address=127.0.0.1",
            f"--secure-port={free_port()}",
            f"--cert-dir={self._path('kcm-certs')}",
            "--v=1",
        ])
        context = self._admin_ssl_context()

        def default_service_account_exists() -> bool:
            url = f"{self.server}/api/v1/namespaces/default/serviceaccounts/default"
            with urllib.request.urlopen(url, timeout=3, context=context) as response:  # noqa: S310
                return bool(response.status == 200)

        # The default ServiceAccount appears once the controllers are really working.
        wait_until(default_service_account_exists, timeout=60,
                   what="kube-controller-manager to create the default ServiceAccount",
                   process=process)
