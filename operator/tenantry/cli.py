"""The `tenantry` command: generate CRDs, run the local development environment, and more."""

from __future__ import annotations

import argparse
import math
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tenantry import __version__, logs

DEFAULT_SPOOL = Path.home() / ".local" / "state" / "tenantry" / "ledger-spool"


def _cmd_crds(args: argparse.Namespace) -> int:
    from tenantry.model import crdgen

    out = Path(args.output_dir)
    if args.check:
        stale = crdgen.drift(out)
        if stale:
            print(f"crds out of date in {out}: {', '.join(stale)}; run `tenantry crds`",
                  file=sys.stderr)
            return 1
        print(f"{out}: up to date")
        return 0
    for path in crdgen.write(out):
        print(f"wrote {path}")
    return 0


def _cmd_dev_up(args: argparse.Namespace) -> int:
    from tenantry.devcluster import devenv

    samples = None if args.no_samples else Path(args.samples)
    return devenv.run_until_signalled(
        devenv.configured_kubeconfig(args.kubeconfig),
        with_postgres=not args.no_postgres,
        samples=samples,
        exit_when_ready=args.exit_when_ready,
        with_operator=not args.no_operator,
    )


def _cmd_dev_build(args: argparse.Namespace) -> int:
    from tenantry.devcluster import build

    try:
        binaries = build.ensure_binaries()
        kubectl = build.ensure_kubectl()  # the real client the e2e tests drive
        promtool = build.ensure_promtool()  # checks the alerting rules (manifests/monitoring)
    except build.BuildError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    for path in (*binaries.all(), kubectl, promtool):
        print(path)
    return 0


def _ledger_options(args: argparse.Namespace) -> Any:
    from tenantry.controller import audit
    from tenantry.ledger import recorder

    try:
        dsn = recorder.ledger_dsn(args.ledger_dsn_file, disabled=args.no_ledger)
    except ValueError as error:
        raise SystemExit(f"tenantry operator run: {error}") from None
    return audit.LedgerOptions(dsn=dsn, spool=Path(args.ledger_spool))


def _cmd_operator_run(args: argparse.Namespace) -> int:
    from tenantry.controller import leader, run
    from tenantry.crypto import cli as crypto_cli

    run.run(
        kubeconfig=Path(args.kubeconfig) if args.kubeconfig else None,
        standalone=args.standalone, priority=args.priority, liveness=args.liveness,
        peering=args.peering, verbose=args.verbose, log_format=args.log_format,
        ledger=_ledger_options(args),
        leader_election=run.LeaderElection(
            lease_name=args.lease_name,
            lease_namespace=args.lease_namespace or os.environ.get(
                "TENANTRY_NAMESPACE", "tenantry-system"),
            timing=leader.Timing.for_lease(args.lease_duration),
        ) if args.leader_elect else None,
        keys=crypto_cli.key_options(args),
        rotation_interval=args.rotation_interval,
        tenant_retry_delay=args.tenant_retry_delay,
    )
    return 0


def _cmd_version(args: argparse.Namespace) -> int:
    print(f"tenantry {__version__}")
    return 0


def _positive_seconds(text: str) -> float:
    """An argparse type: a finite number of seconds greater than zero."""
    try:
        seconds = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not (seconds > 0 and math.isfinite(seconds)):
        raise argparse.ArgumentTypeError(f"{text!r} must be a finite number of seconds above 0")
    return seconds


def build_parser() -> argparse.ArgumentParser:
    from tenantry.controller.rotation import plan as rotation_plan

    parser = argparse.ArgumentParser(
        prog="tenantry",
        description="Tenantry: secure multi-tenancy for Kubernetes. Tenants, encrypted "
                    "Credentials and RotationPolicies, enforced by an operator and admission.",
    )
    parser.add_argument("--version", action="version", version=f"tenantry {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    crds = commands.add_parser("crds", help="generate crds/ from the pydantic models",
                               description="Write the CustomResourceDefinitions generated from "
                                           "the models, or check that they are up to date.")
    crds.add_argument("--output-dir", default="crds", help="directory to write (default: crds)")
    crds.add_argument("--check", action="store_true",
                      help="exit 1 if the files differ from the models instead of writing")
    crds.set_defaults(func=_cmd_crds)

    dev = commands.add_parser("dev", help="local development environment")
    dev_commands = dev.add_subparsers(dest="dev_command", metavar="DEV_COMMAND", required=True)
    up = dev_commands.add_parser(
        "up", help="start a local control plane and PostgreSQL, install CRDs and samples",
        description="Without a cluster configured (--kubeconfig or KUBECONFIG), build (first run "
                    "only) and start etcd, kube-apiserver and kube-controller-manager on "
                    "127.0.0.1, plus PostgreSQL; then install the CRDs and the samples. Runs "
                    "until Ctrl-C, then stops everything.")
    up.add_argument("--kubeconfig", help="use this cluster instead of starting one")
    up.add_argument("--no-postgres", action="store_true", help="do not start PostgreSQL")
    up.add_argument("--samples", default="manifests/samples/tenant-acme.yaml",
                    help="file or directory of manifests to apply once ready "
                         "(default: manifests/samples/tenant-acme.yaml)")
    up.add_argument("--no-samples", action="store_true", help="do not apply samples")
    up.add_argument("--no-operator", action="store_true", help="do not start the operator")
    up.add_argument("--exit-when-ready", action="store_true",
                    help="stop everything and exit 0 once ready (a smoke test)")
    up.set_defaults(func=_cmd_dev_up)
    build = dev_commands.add_parser(
        "build", help="build the control plane binaries and kubectl into the cache (first run: "
                      "10-25 min)")
    build.set_defaults(func=_cmd_dev_build)

    operator = commands.add_parser("operator", help="the operator process")
    operator_commands = operator.add_subparsers(dest="operator_command", metavar="OP_COMMAND",
                                                required=True)
    op_run = operator_commands.add_parser(
        "run", help="reconcile Tenants (and more) until stopped",
        description="Run the kopf operator cluster-wide. Several replicas coordinate through "
                    "kopf peering: give each a distinct --priority; the highest is active.")
    op_run.add_argument("--kubeconfig", help="cluster to manage (default: in-cluster, then "
                                             "KUBECONFIG)")
    op_run.add_argument("--standalone", action="store_true",
                        help="no peering: the only replica (development and tests)")
    op_run.add_argument("--priority", type=int, default=0,
                        help="peering priority; the highest running replica is active")
    op_run.add_argument("--peering", default="tenantry", help="peering object name")
    op_run.add_argument("--liveness", metavar="URL",
                        help="serve liveness probes, e.g. http://0.0.0.0:8080/healthz, and "
                             "Prometheus metrics at /metrics on the same port")
    op_run.add_argument("--leader-elect", action="store_true",
                        help="run several replicas: only the holder of a Lease acts, the "
                             "others stand by and take over when it stops renewing")
    op_run.add_argument("--lease-name", default="tenantry-operator",
                        help="Lease for --leader-elect (default: %(default)s)")
    op_run.add_argument("--lease-duration", type=float, default=15.0, metavar="SECONDS",
                        help="how long a silent leader keeps the Lease (default: %(default)s)")
    op_run.add_argument("--lease-namespace",
                        help="namespace of the Lease (default: $TENANTRY_NAMESPACE or "
                             "tenantry-system)")
    op_run.add_argument("--ledger-dsn-file", metavar="FILE",
                        help="file holding the audit ledger's PostgreSQL DSN (app role); "
                             "default: $TENANTRY_LEDGER_DSN")
    op_run.add_argument("--ledger-spool", metavar="DIR",
                        default=os.environ.get("TENANTRY_LEDGER_SPOOL", str(DEFAULT_SPOOL)),
                        help="durable queue of audit events while the ledger is unreachable "
                             "(default: $TENANTRY_LEDGER_SPOOL or %(default)s)")
    op_run.add_argument("--no-ledger", action="store_true",
                        help="run without an audit trail (explicit opt-out; not for production)")
    op_run.add_argument("--rotation-interval", type=_positive_seconds,
                        default=rotation_plan.TIMER_INTERVAL, metavar="SECONDS",
                        help="how often each RotationPolicy is looked at again (schedules due, "
                             "grace periods and overlaps over, a paused or interrupted rotation "
                             "resumed); default: %(default)s")
    op_run.add_argument("--tenant-retry-delay", type=_positive_seconds, metavar="SECONDS",
                        help="how long a Tenant whose reconcile failed in part (a fence "
                             "refused, a namespace taken) waits to be tried again; default: 10")
    op_run.add_argument("--verbose", action="store_true", help="debug logging")
    logs.add_argument(op_run)
    op_run.set_defaults(func=_cmd_operator_run)

    from tenantry.admission import cel as admission_cel
    from tenantry.admission import check as admission_check
    from tenantry.api import cli as api_cli
    from tenantry.client import cli as client_cli
    from tenantry.controller.rotation import cli as rotation_cli
    from tenantry.controller.rotation import reencrypt as reencrypt_cli
    from tenantry.crypto import cli as crypto_cli
    from tenantry.ledger import cli as ledger_cli
    from tenantry.webhook import cli as webhook_cli
    from tenantry.workload import fetch as fetch_cli

    admission_check.register(commands)
    api_cli.register(commands)
    client_cli.register(commands)
    crypto_cli.add_key_options(op_run)
    crypto_cli.register(commands)
    admission_cel.register(commands)
    ledger_cli.register(commands)
    rotation_cli.register(commands)
    reencrypt_cli.register(commands)
    webhook_cli.register(commands)
    fetch_cli.register(commands)

    version = commands.add_parser("version", help="print the version")
    version.set_defaults(func=_cmd_version)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
