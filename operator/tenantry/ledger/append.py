"""Append audit events to the ledger through `ledger.append_rows` (asyncpg).

The application never inserts rows itself: it hands events to the SECURITY DEFINER function,
which assigns each its chain position, server time and hash under the chain's head lock. One
call is one SQL statement, hence atomic: a batch lands whole or not at all, even if the caller
dies mid-way, and concurrent callers on the same chain queue on the head row instead of racing.

The events travel as one array a member (binary text arrays, no JSON document to take apart),
with `identity` and `changes` already in their RFC 8785 form (`hashing.canonical_json`): the
database hashes that text as given instead of canonicalising JSON in SQL, which was most of the
cost of an append (see `schema`, version 2).

Works with a connection (joining its transaction, if one is open) or a pool.
"""

from __future__ import annotations

import dataclasses
import datetime
from collections.abc import Sequence

import asyncpg

from tenantry.ledger import hashing, migrations
from tenantry.ledger.events import AuditEvent

# What "the ledger cannot be written right now" looks like to a writer (connection refused or
# lost, timeout, server error, schema not migrated); anything else is a bug and should surface.
UNAVAILABLE = (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError,
               migrations.MigrationError)

_APPEND_SQL = ("SELECT ord, chain, seq, event_time, hash FROM ledger.append_rows("
               "$1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], "
               "$7::text[], $8::text[], $9::text[], $10::text[], $11::text[], $12::text[])")


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
    rows = await conn_or_pool.fetch(_APPEND_SQL, *_columns(events))
    by_position = {row["ord"]: row for row in rows}
    if len(by_position) != len(events):
        raise RuntimeError(f"ledger.append_rows returned {len(by_position)} results for "
                           f"{len(events)} events")
    return [
        Appended(chain=row["chain"], seq=row["seq"], event_time=row["event_time"],
                 hash=row["hash"])
        for row in (by_position[position] for position in range(1, len(events) + 1))
    ]


def _columns(events: Sequence[AuditEvent]) -> list[list[str | None]]:
    """The twelve argument arrays of `ledger.append_rows`, in its parameter order."""
    return [
        [event.tenant for event in events],
        [event.actor for event in events],
        [event.actor_kind.value for event in events],
        [hashing.canonical_json(event.identity).decode() for event in events],
        [event.action for event in events],
        [event.resource_kind for event in events],
        [event.resource_namespace for event in events],
        [event.resource_name for event in events],
        [hashing.canonical_json(event.changes).decode() for event in events],
        [event.source_ip for event in events],
        [event.request_id for event in events],
        [event.component for event in events],
    ]
