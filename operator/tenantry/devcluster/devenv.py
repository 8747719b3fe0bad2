"""`tenantry dev up`: everything a new user needs on one machine, started in order.

Without a configured cluster: a local control plane and PostgreSQL, then the CRDs and the
samples. With a kubeconfig given, that cluster is used instead and no control plane is started.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import FrameType

from tenantry import kube
from tenantry.devcluster.cluster import LocalControlPlane
from tenantry.devcluster.postgres import LocalPostgres
from tenantry.model import crdgen

REPO_ROOT = Path(__file__).resolve().parents[3]


@dataclasses.dataclass
class DevEnvironment:
    kubeconfig: Path
    postgres_dsn: str | None
    control_plane: LocalControlPlane | None


def _say(message: str) -> None:
    print(f"[tenantry dev] {message}", file=sys.stderr, flush=True)


def install_crds(kubeconfig: Path) -> None:
    api = kube.api_client(kubeconfig)
    try:
        kube.apply(api, crdgen.all_crds())
        kube.wait_for_crds(api, [resource.name for resource in crdgen.RESOURCES])
    finally:
        api.close()


@contextlib.contextmanager
def dev_environment(kubeconfig: Path | None, *, with_postgres: bool = True,
                    samples: Path | None = None) -> Iterator[DevEnvironment]:
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
        if with_postgres:
            postgres = stack.enter_context(LocalPostgres())
            dsn = postgres.dsn()
            _say(f"PostgreSQL ready on 127.0.0.1:{postgres.port}")
        install_crds(kubeconfig)
        _say("CRDs installed: " + ", ".join(r.name for r in crdgen.RESOURCES))
        if samples is not None and samples.exists():
            api = kube.api_client(kubeconfig)
            try:
                applied = kube.apply(api, kube.load_manifests([samples]))
            finally:
                api.close()
            _say(f"applied {len(applied)} sample object(s) from {samples}")
        yield DevEnvironment(kubeconfig=kubeconfig, postgres_dsn=dsn,
                             control_plane=control_plane)


def run_until_signalled(kubeconfig: Path | None, *, with_postgres: bool, samples: Path | None,
                        exit_when_ready: bool) -> int:
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    with dev_environment(kubeconfig, with_postgres=with_postgres, samples=samples) as env:
        print(f"export KUBECONFIG={env.kubeconfig}", flush=True)
        if env.postgres_dsn:
            # The DSN carries a password: shown to the user at their terminal, never logged.
            print(f"export TENANTRY_DATABASE_DSN='{env.postgres_dsn}'", flush=True)
        _say("ready. Try: kubectl get tenants,credentials,rotationpolicies -A")
        if exit_when_ready:
            return 0
        _say("press Ctrl-C to stop everything")
        while not stop.wait(1.0):
            if env.control_plane is not None:
                dead = [p.name for p in env.control_plane.processes() if not p.running()]
                if dead:
                    _say(f"{', '.join(dead)} exited; stopping")
                    return 1
    _say("stopped")
    return 0


def configured_kubeconfig(explicit: str | None) -> Path | None:
    """--kubeconfig, else $KUBECONFIG; None means 'start a local control plane'."""
    value = explicit or os.environ.get("KUBECONFIG")
    return Path(value).expanduser() if value else None
