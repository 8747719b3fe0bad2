"""The operator's own audit trail: every change it makes goes to the ledger, durably.

Handlers call `record(memo, ...)`, which hands the event to the operator's
`tenantry.ledger.recorder.Recorder` (spool first, flushed to the ledger in the background), so
`record` never fails because of the database; it fails only if the spool itself cannot be
written, which is loud (the handler errors and kopf retries it).

The ledger is on by default: `tenantry operator run` refuses to start without a ledger DSN
unless `--no-ledger` says, explicitly, to run without an audit trail.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import kopf

from tenantry.ledger.recorder import Recorder

COMPONENT = "operator"


@dataclasses.dataclass(frozen=True)
class LedgerOptions:
    """How the operator reaches the ledger (from `tenantry operator run`)."""

    dsn: str | None
    """None: --no-ledger, nothing is recorded."""
    spool: Path


async def record(memo: kopf.Memo, *, tenant: str | None, action: str, kind: str,
                 namespace: str | None, name: str | None,
                 changes: Mapping[str, Any] | None = None) -> None:
    """Record one change the operator made. `changes`: field names, counts, references, ids;
    never secret values (secret-looking ones are redacted anyway)."""
    recorder: Recorder | None = memo.get("ledger")
    if recorder is None:  # --no-ledger
        return
    await recorder.record(recorder.event(tenant=tenant, action=action, kind=kind,
                                         namespace=namespace, name=name, changes=changes))
