"""Operator-wide kopf activities: settings, login, the shared API client; imports every kind.

Importing this module registers all handlers with kopf's default registry (`tenantry operator
run` does that, then registers the RotationPolicy timer with its `--rotation-interval`). Each
resource kind keeps its handlers in its own package (`controller/<kind>/handlers.py`); they
share the API client kopf keeps in `memo.api`.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import kopf

from tenantry import metrics
from tenantry.controller import audit, diffbase, events, protection
from tenantry.controller.credential import handlers as credential_handlers
from tenantry.controller.rotation import handlers as rotation_handlers
from tenantry.controller.tenant import handlers as tenant_handlers
from tenantry.controller.tenant import rbac
from tenantry.kubeapi import KubeApi
from tenantry.ledger.recorder import Recorder
from tenantry.ledger.spool import Spool
from tenantry.model import common

logger = logging.getLogger(__name__)

GROUP = common.GROUP

# Kinds whose handlers are registered by importing them (kept referenced for linters).
KINDS = (tenant_handlers, credential_handlers, rotation_handlers)


@kopf.on.startup()
async def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    settings.persistence.finalizer = f"{GROUP}/finalizer"
    # Annotations, but for Credentials the diff base goes in the status a handler writes anyway
    # and no marker is written: no write of kopf's own per handled change (see `diffbase`).
    settings.persistence.progress_storage = diffbase.Progress()
    settings.persistence.diffbase_storage = diffbase.DiffBase()
    # kopf's own Events are off: `events.reported` posts handler failures where `kubectl
    # describe` finds them (kopf put a cluster-scoped Tenant's in namespace "default").
    settings.posting.enabled = False
    settings.watching.server_timeout = 300
    settings.batching.error_delays = [1, 2, 5, 10, 30]
    memo.api = await KubeApi.from_kubeconfig(os.environ.get("KUBECONFIG"))
    memo.drift_tasks = {}
    identity = await memo.api.whoami()
    memo.ledger = start_ledger(memo.get("ledger_options"), identity)
    # The shared tier roles every tenant's RoleBindings point at.
    for role in rbac.cluster_roles():
        await memo.api.apply(role)
    # Tenants may write NetworkPolicies and RoleBindings, but never ours: exempt only ourselves.
    for obj in protection.protection_policy([identity]):
        await memo.api.apply(obj)


@kopf.on.login()
def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
    """In a pod: the ServiceAccount; elsewhere: $KUBECONFIG (client certificates included)."""
    if os.environ.get("KUBECONFIG"):
        return kopf.login_with_kubeconfig(**kwargs)
    return kopf.login_with_service_account(**kwargs)


def start_ledger(options: audit.LedgerOptions | None, identity: str) -> Recorder | None:
    """The audit recorder, flushing in the background; None only with --no-ledger."""
    if options is None or options.dsn is None:
        logger.warning("audit ledger disabled (--no-ledger): the operator's changes are not "
                       "recorded")
        return None
    recorder = Recorder(Spool(options.spool), options.dsn, identity)
    recorder.start()
    metrics.watch_ledger(recorder)
    return recorder


@kopf.on.cleanup()
async def close(memo: kopf.Memo, **_: Any) -> None:
    for task in list(memo.get("drift_tasks", {}).values()):
        task.cancel()
    if memo.get("ledger") is not None:
        await memo.ledger.close()
    if "api" in memo:
        await events.drain()
        await memo.api.close()
