"""Append audit events to the ledger through `ledger.append_batch` (asyncpg).

The application never inserts rows itself: it hands events to the SECURITY DEFINER function,
which assigns each its chain position, server time and hash under the chain's head lock. One
call is one SQL statement, hence atomic: a batch lands whole or not at all, even if the caller
dies mid-way, and concurrent callers on the same chain queue on the head row instead of racing.

Works with a connection (joining its transaction, if one is open) or a pool.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
from collections.abc import Sequence

import asyncpg

from tenantry.ledger import migrations
from tenantry.ledger.events import AuditEvent

# What "the ledger cannot be written right now" looks like to a writer (connection refused or
# lost, timeout, server error, schema not migrated); anything else is a bug and should surface.
UNAVAILABLE = (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError,
               migrations.MigrationError)

_APPEND_SQL = "SELECT ord, chain, seq, event_time, hash FROM ledger.append_batch($1::jsonb)"


@dataclasses.dataclass(frozen=True)
class Appended:
    """Where an event landed: its chain, position, server time and hash."""

    chain: str
    seq: int
    event_time: datetime.datetime
    hash: str


async def append(conn_or_pool: asyncpg.Connection | asyncpg.Pool,
                 event: AuditEvent) -> Appended:
    """Append one event; returns its place in the chain."""
    (appended,) = await append_batch(conn_or_pool, [event])
    return appended


async def append_batch(conn_or_pool: asyncpg.Connection | asyncpg.Pool,
                       events: Sequence[AuditEvent]) -> list[Appended]:
    """Append events atomically (one transaction, each chain's head locked once).

    Events of one chain keep their relative order; results are in the order of `events`.
    """
    if not events:
        return []
    payload = json.dumps([event.payload() for event in events], separators=(",", ":"),
                         allow_nan=False)
    rows = await conn_or_pool.fetch(_APPEND_SQL, payload)
    by_position = {row["ord"]: row for row in rows}
    if len(by_position) != len(events):
        raise RuntimeError(f"ledger.append_batch returned {len(by_position)} results for "
                           f"{len(events)} events")
    return [
        Appended(chain=row["chain"], seq=row["seq"], event_time=row["event_time"],
                 hash=row["hash"])
        for row in (by_position[position] for position in range(1, len(events) + 1))
    ]
