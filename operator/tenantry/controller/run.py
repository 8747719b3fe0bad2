"""`tenantry operator run`: start kopf with Tenantry's handlers."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import kopf

from tenantry.controller.audit import LedgerOptions


def run(*, kubeconfig: Path | None, standalone: bool, priority: int,
        liveness: str | None, peering: str, verbose: bool = False,
        ledger: LedgerOptions | None = None) -> None:
    if kubeconfig is not None:
        # kopf's login and our own client both read it from here.
        os.environ["KUBECONFIG"] = str(kubeconfig)
    from tenantry.controller import operator  # noqa: F401 - registers the handlers

    kopf.configure(verbose=verbose, log_format=kopf.LogFormat.FULL)
    settings = kopf.OperatorSettings()
    settings.peering.standalone = standalone
    settings.peering.clusterwide = True
    settings.peering.name = peering
    settings.peering.priority = priority
    settings.peering.mandatory = not standalone
    asyncio.run(kopf.operator(
        clusterwide=True,
        settings=settings,
        memo=kopf.Memo(ledger_options=ledger),
        liveness_endpoint=liveness,
    ))
