"""`tenantry operator run`: start kopf with Tenantry's handlers."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import socket
from pathlib import Path
from typing import Any

import kopf

from tenantry import logs, metrics
from tenantry.controller import health, leader
from tenantry.controller.audit import LedgerOptions
from tenantry.controller.rotation import plan
from tenantry.crypto.custody import KeyOptions
from tenantry.kubeapi import KubeApi
from tenantry.ledger.recorder import Recorder
from tenantry.ledger.spool import Spool


@dataclasses.dataclass(frozen=True)
class LeaderElection:
    """`--leader-elect`: run handlers only while holding this Lease."""

    lease_name: str
    lease_namespace: str
    timing: leader.Timing = dataclasses.field(default_factory=leader.Timing)


def run(*, kubeconfig: Path | None, standalone: bool, priority: int,
        liveness: str | None, peering: str, verbose: bool = False,
        log_format: str = logs.DEFAULT_FORMAT, ledger: LedgerOptions | None = None,
        leader_election: LeaderElection | None = None,
        keys: KeyOptions | None = None,
        rotation_interval: float = plan.TIMER_INTERVAL,
        tenant_retry_delay: float | None = None) -> None:
    """`rotation_interval`: seconds between the RotationPolicy timer's rounds;
    `tenant_retry_delay`: before a Tenant that failed in part is tried again (None: the
    handlers' `RETRY_DELAY`)."""
    if kubeconfig is not None:
        # kopf's login and our own client both read it from here.
        os.environ["KUBECONFIG"] = str(kubeconfig)
    from tenantry.controller import operator  # noqa: F401 - registers the handlers
    from tenantry.controller.rotation import handlers as rotation_handlers

    rotation_handlers.register_timer(rotation_interval)
    kopf.on.cleanup()(_set_stop_flag)

    kopf.configure(verbose=verbose)  # kopf's logger levels; `logs` replaces its handler
    logs.configure("operator", log_format, verbose=verbose)
    settings = kopf.OperatorSettings()
    settings.peering.standalone = standalone
    settings.peering.clusterwide = True
    settings.peering.name = peering
    settings.peering.priority = priority
    settings.peering.mandatory = not standalone
    if leader_election is not None:
        settings.peering.standalone = True  # the Lease, not kopf peering, decides who acts
        settings.peering.mandatory = False
    memo = kopf.Memo(ledger_options=ledger, key_options=keys)
    if tenant_retry_delay is not None:
        memo.tenant_retry_delay = tenant_retry_delay
    lost = asyncio.run(_main(settings, liveness, memo, leader_election))
    if lost:
        # Exit non-zero: the pod restarts and stands by, never acting on stale leadership.
        raise SystemExit(1)


async def _main(settings: kopf.OperatorSettings, liveness: str | None, memo: kopf.Memo,
                election: LeaderElection | None) -> bool:
    """Run kopf (after winning the Lease, with --leader-elect); True if leadership was lost.

    The health port (liveness and /metrics) answers throughout, standby included."""
    stop = memo.stop_flag = asyncio.Event()
    elector = None
    keeper = None
    async with health.serving(liveness) as server:
        if election is not None:
            api = await KubeApi.from_kubeconfig(os.environ.get("KUBECONFIG"))
            identity = os.environ.get("POD_NAME") or f"{socket.gethostname()}-{os.getpid()}"
            elector = leader.LeaderElector(api, name=election.lease_name,
                                           namespace=election.lease_namespace,
                                           identity=identity, timing=election.timing)
            await _deliver_leftover_events(memo.get("ledger_options"))
            await elector.acquire()
            keeper = asyncio.create_task(elector.keep(stop))
        if server is not None:
            server.standby = False
        metrics.set_leader(True)
        try:
            await kopf.operator(clusterwide=True, settings=settings, memo=memo,
                                liveness_endpoint=server.kopf_endpoint if server else None,
                                stop_flag=stop)
        finally:
            metrics.set_leader(False)
            if elector is not None and keeper is not None:
                stop.set()
                await keeper
                if not elector.lost.is_set():
                    await elector.release()
                await elector.api.close()
    return elector is not None and elector.lost.is_set()


async def _set_stop_flag(memo: kopf.Memo, **_: Any) -> None:
    """A cleanup activity: set the stop flag kopf was given, whatever stops the operator.

    Why: stopped by a signal, kopf leaves its own waiter on that flag pending, counts it as a
    hung task and waits 5 s for it before it exits; every shutdown (a rolling update's, a
    leader handing the Lease over) took 5 s longer than its cleanup did."""
    stop: asyncio.Event | None = memo.get("stop_flag")
    if stop is not None:
        stop.set()


async def _deliver_leftover_events(options: LedgerOptions | None) -> None:
    """A replica restarted after a crash may hold spooled events; deliver them even while it
    stands by (the leader would otherwise be the only one to drain its own spool)."""
    if options is None or options.dsn is None:
        return
    recorder = Recorder(Spool(options.spool), options.dsn, actor="standby")
    if recorder.spool.count():
        await recorder.close()  # one bounded attempt; what fails stays for the next start
