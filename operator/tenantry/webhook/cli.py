"""`tenantry webhook run`: the command line of the admission webhook.

`register(subparsers)` adds the `webhook` command to the main `tenantry` parser.
"""

from __future__ import annotations

import argparse
import datetime
import os
import re
import sys
import tempfile
from pathlib import Path
from typing import Any

from tenantry import logs
from tenantry.webhook import certs, clientauth, configuration

DEFAULT_NAMESPACE = "tenantry-system"
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)(s|m|h|d)?$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, None: 1}


def duration(text: str) -> datetime.timedelta:
    """"90d", "12h", "30m", "45s" or plain seconds."""
    match = _DURATION.match(text.strip())
    if not match:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration such as 90d, 12h, 30m, 45s")
    return datetime.timedelta(seconds=float(match.group(1)) * _UNITS[match.group(2)])


def listen_address(text: str) -> tuple[str, int]:
    """"HOST:PORT" (IPv6 as "[::]:8443") -> (host, port)."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise argparse.ArgumentTypeError(f"{text!r} is not HOST:PORT")
    return host.strip("[]") or "0.0.0.0", int(port)  # noqa: S104 - the usual pod default


def service_ref(text: str) -> tuple[str, str]:
    namespace, sep, name = text.partition("/")
    if not sep or not namespace or not name:
        raise argparse.ArgumentTypeError(f"{text!r} is not NAMESPACE/NAME")
    return namespace, name


def register(subparsers: Any) -> argparse.ArgumentParser:
    """Add the `webhook` command to an argparse subparsers object (`add_subparsers()`)."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "webhook", help="the admission webhook server",
        description="Tenantry's validating admission webhook.")
    commands = parser.add_subparsers(dest="webhook_command", metavar="WEBHOOK_COMMAND",
                                     required=True)
    run = commands.add_parser(
        "run", help="serve admission reviews until stopped",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="""\
Serve Tenantry's validating admission webhook over TLS, and keep its ValidatingWebhookConfiguration
(default: tenantry-admission) current by server-side apply:

  POST /validate/workloads    Pods (and ephemeral containers), Deployments, StatefulSets,
                              DaemonSets, ReplicaSets, ReplicationControllers, Jobs, CronJobs,
                              PodTemplates and Services in tenant namespaces: the tenant's
                              podSecurity mode (Deny/Warn/Audit), exemptions and quota.
  POST /validate/credentials  Credentials: must live in a namespace of their tenant.
  GET  /healthz, /readyz      liveness; readiness (caches synced).

Only namespaces labelled tenantry.dev/tenant are selected for workloads, never kube-system,
kube-public, kube-node-lease or Tenantry's own namespace: with failurePolicy Fail, a webhook that
is down refuses tenants' pods (fail closed) and blocks nothing else.

Certificates: a CA and a serving certificate made by Tenantry, shared by all replicas through the
Secret --secret in --namespace, renewed before expiry (CA rotation keeps the old and new CA in the
caBundle during the overlap) and reloaded without a restart.

Client authentication: only the apiserver may send reviews. Configure it to present a client
certificate to webhooks (an AdmissionConfiguration naming a kubeconfig; see the README) and give
the CA that signed it as --client-ca-file (and its CN as --client-cn). Admission POSTs without a
certificate that CA verifies get HTTP 401 (403 for another CN); /healthz and /readyz need none.
The file is re-read at each resync: a new CA is trusted at once, a removed one until restart.
Without --client-ca-file the webhook refuses to start, unless --insecure-no-client-auth.""",
        epilog="""\
examples:
  in a cluster:      tenantry webhook run --service tenantry-system/tenantry-webhook
  local control plane (no Services; the apiserver calls a URL):
                     tenantry webhook run --kubeconfig admin.kubeconfig \\
                         --listen 127.0.0.1:9443 --url https://127.0.0.1:9443 \\
                         --client-ca-file webhook-client-ca.crt \\
                         --client-cn kube-apiserver-webhook-client""")
    run.add_argument("--kubeconfig", metavar="FILE",
                     help="cluster to use (default: in-cluster, then KUBECONFIG)")
    where = run.add_mutually_exclusive_group(required=True)
    where.add_argument("--url", metavar="https://HOST:PORT",
                       help="base URL the apiserver calls (local development, no Services); "
                            "route paths are appended; HOST goes into the certificate")
    where.add_argument("--service", metavar="NAMESPACE/NAME", type=service_ref,
                       help="Service the apiserver calls (in a cluster)")
    run.add_argument("--service-port", type=int, default=443, metavar="PORT",
                     help="port of --service (default: 443)")
    run.add_argument("--listen", metavar="HOST:PORT", type=listen_address,
                     default=("0.0.0.0", 8443),  # noqa: S104 - the usual pod default
                     help="address to serve TLS on (default: 0.0.0.0:8443)")
    run.add_argument("--failure-policy", choices=configuration.FAILURE_POLICIES, default="Fail",
                     help="what the apiserver does when the webhook is unreachable "
                          "(default: Fail: tenant namespaces fail closed)")
    run.add_argument("--timeout-seconds", type=int, default=configuration.MAX_TIMEOUT_SECONDS,
                     choices=range(1, configuration.MAX_TIMEOUT_SECONDS + 1), metavar="1-5",
                     help="how long the apiserver waits for an answer (default: 5)")
    run.add_argument("--namespace", default=os.environ.get("TENANTRY_NAMESPACE",
                                                           DEFAULT_NAMESPACE),
                     help="Tenantry's namespace: holds the TLS Secret and is never selected "
                          "(default: $TENANTRY_NAMESPACE or tenantry-system)")
    run.add_argument("--secret", default="tenantry-webhook-tls", metavar="NAME",
                     help="Secret the replicas share certificates through "
                          "(default: tenantry-webhook-tls)")
    run.add_argument("--configuration-name", default=configuration.NAME, metavar="NAME",
                     help="ValidatingWebhookConfiguration to write "
                          f"(default: {configuration.NAME})")
    run.add_argument("--cert-dir", type=Path, metavar="DIR",
                     help="private directory the serving certificate is written to for the TLS "
                          "server, plus ca.crt for local clients (default: a new temporary one)")
    run.add_argument("--tls-san", action="append", default=[], metavar="NAME",
                     help="extra DNS name or IP for the serving certificate (repeatable)")
    defaults = certs.CertPolicy()
    run.add_argument("--ca-validity", type=duration, metavar="DURATION",
                     default=defaults.ca_validity,
                     help="lifetime of a new CA (default: 365d)")
    run.add_argument("--cert-validity", type=duration, metavar="DURATION",
                     default=defaults.cert_validity,
                     help="lifetime of a serving certificate (default: 90d)")
    run.add_argument("--ca-propagation", type=duration, metavar="DURATION",
                     default=defaults.ca_propagation,
                     help="how long a new CA is in the caBundle before certificates it signed "
                          "are served (default: 5m)")
    run.add_argument("--resync", type=duration, metavar="DURATION",
                     default=datetime.timedelta(seconds=60),
                     help="interval of certificate and configuration checks (default: 60s)")
    run.add_argument("--lookup-timeout", type=duration, metavar="DURATION",
                     default=datetime.timedelta(seconds=2),
                     help="limit on a namespace/Tenant GET on a cache miss (default: 2s)")
    run.add_argument("--ledger-dsn-file", metavar="FILE",
                     help="file holding the audit ledger's PostgreSQL DSN (app role): every "
                          "change to Tenants, Credentials and RotationPolicies is recorded "
                          "there before it is admitted (default: $TENANTRY_LEDGER_DSN)")
    run.add_argument("--ledger-failure", choices=("deny", "allow"), default="deny",
                     help="when the ledger cannot be written: deny the change (default, fail "
                          "closed) or allow it unrecorded")
    run.add_argument("--ledger-spool", metavar="DIR", type=Path,
                     default=Path(os.environ.get("TENANTRY_LEDGER_SPOOL", "")
                                  or Path(tempfile.gettempdir()) / "tenantry-webhook-spool"),
                     help="durable queue of refused, warned, audited and exempted decisions on "
                          "their way to the ledger (default: $TENANTRY_LEDGER_SPOOL or "
                          "%(default)s)")
    run.add_argument("--no-ledger", action="store_true",
                     help="do not record changes to Tenantry resources (explicit opt-out)")
    run.add_argument("--operator-user", metavar="USER",
                     help="the operator's user name, whose own writes the operator records "
                          "(default: system:serviceaccount:NAMESPACE:tenantry-operator)")
    peers = run.add_mutually_exclusive_group()
    peers.add_argument("--client-ca-file", type=Path, metavar="FILE",
                       help="PEM CA bundle that signs the apiserver's client certificate for "
                            "webhooks: admission POSTs without a certificate it verifies are "
                            "refused (required unless --insecure-no-client-auth)")
    peers.add_argument("--insecure-no-client-auth", action="store_true",
                       help="INSECURE: accept admission reviews from anyone who can reach the "
                            "webhook; forged reviews then reach the audit ledger (explicit "
                            "opt-out, for clusters whose apiserver cannot be configured)")
    run.add_argument("--client-cn", action="append", default=[], metavar="NAME",
                     help="CN the apiserver's client certificate must have (repeatable; "
                          "default: any the CA verifies). Set it whenever the CA signs other "
                          "certificates too")
    run.add_argument("--verbose", action="store_true", help="debug logging")
    logs.add_argument(run)
    run.set_defaults(func=run_command)
    return parser


def settings_from(args: argparse.Namespace) -> Any:
    from tenantry.webhook.run import Settings

    endpoint: configuration.Endpoint
    if args.url:
        endpoint = configuration.UrlEndpoint(args.url)
    else:
        namespace, name = args.service
        endpoint = configuration.ServiceEndpoint(namespace, name, args.service_port)
    clients = clientauth.ClientPolicy(args.client_ca_file, frozenset(args.client_cn),
                                      insecure=args.insecure_no_client_auth)
    if clients.ca_file is not None:
        clientauth.read_ca_bundle(clients.ca_file)  # a missing or empty file: refuse now
    cert_dir = args.cert_dir or Path(tempfile.mkdtemp(prefix="tenantry-webhook-"))
    host, port = args.listen
    return Settings(
        endpoint=endpoint,
        cert_dir=cert_dir,
        kubeconfig=Path(args.kubeconfig) if args.kubeconfig else None,
        listen_host=host,
        listen_port=port,
        namespace=args.namespace,
        secret_name=args.secret,
        configuration_name=args.configuration_name,
        failure_policy=args.failure_policy,
        timeout_seconds=args.timeout_seconds,
        extra_names=tuple(args.tls_san),
        cert_policy=certs.CertPolicy(ca_validity=args.ca_validity,
                                     cert_validity=args.cert_validity,
                                     ca_propagation=args.ca_propagation),
        resync_interval=args.resync.total_seconds(),
        lookup_timeout=args.lookup_timeout.total_seconds(),
        ledger_dsn=_ledger_dsn(args),
        ledger_fail_closed=args.ledger_failure == "deny",
        ledger_spool=args.ledger_spool,
        operator_user=args.operator_user
        or f"system:serviceaccount:{args.namespace}:tenantry-operator",
        client_ca_file=clients.ca_file,
        client_common_names=tuple(sorted(clients.common_names)),
        insecure_no_client_auth=clients.insecure,
    )


def _ledger_dsn(args: argparse.Namespace) -> str | None:
    from tenantry.ledger import recorder

    return recorder.ledger_dsn(args.ledger_dsn_file, disabled=args.no_ledger)


def run_command(args: argparse.Namespace) -> int:
    from tenantry.webhook import run

    try:
        settings = settings_from(args)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    logs.configure("webhook", args.log_format, verbose=args.verbose)
    return run.run(settings, verbose=args.verbose)
