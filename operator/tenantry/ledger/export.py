"""Read ledger rows out of PostgreSQL, and to and from JSON lines.

An export is one canonical JSON object per line (`hashing.LedgerRow.to_json_line`), ordered by
chain and sequence number: everything a third party needs, with the signed checkpoints and the
public key, to verify the ledger offline (`verify.verify_export`,
`checkpoints.verify_against_checkpoints`).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterable, Iterator, Sequence
from typing import Any, TextIO

import asyncpg

from tenantry.ledger import hashing

ROW_COLUMNS = ", ".join((*hashing.ENTRY_FIELDS, "hash"))
# Built from constant column names only; the values are bind parameters.
_ROWS_QUERY = (f"SELECT {ROW_COLUMNS} FROM ledger.audit_log "  # noqa: S608
               "WHERE chain = $1 AND seq > $2 ORDER BY seq")


@contextlib.asynccontextmanager
async def connection(conn_or_pool: asyncpg.Connection | asyncpg.Pool) -> AsyncIterator[Any]:
    """A connection: the one given, or one borrowed from the pool for the block."""
    if isinstance(conn_or_pool, asyncpg.Pool):
        async with conn_or_pool.acquire() as conn:
            yield conn
    else:
        yield conn_or_pool


@contextlib.asynccontextmanager
async def snapshot(conn: Any) -> AsyncIterator[None]:
    """A read-only REPEATABLE READ transaction: heads and rows read from one instant.

    Without it, an append landing between reading a chain's rows and its head would look like a
    head mismatch. Inside a caller's transaction, that transaction's snapshot is used.
    """
    if conn.is_in_transaction():
        async with conn.transaction():
            yield
    else:
        async with conn.transaction(isolation="repeatable_read", readonly=True):
            yield


async def list_chains(conn: Any) -> list[str]:
    """Every chain that has a head or any row, in byte order of the name."""
    rows = await conn.fetch(
        "SELECT chain FROM (SELECT chain FROM ledger.chain_heads "
        "UNION SELECT chain FROM ledger.audit_log) AS chains "
        'ORDER BY chain COLLATE "C"')
    return [row["chain"] for row in rows]


async def iter_rows(conn: Any, chain: str, *, after_seq: int = 0,
                    prefetch: int = 2000) -> AsyncIterator[hashing.LedgerRow]:
    """Rows of one chain in sequence order, streamed by a cursor (needs an open transaction)."""
    async for record in conn.cursor(_ROWS_QUERY, chain, after_seq, prefetch=prefetch):
        yield hashing.LedgerRow.from_record(record)


async def export_rows(conn_or_pool: asyncpg.Connection | asyncpg.Pool, out: TextIO,
                      chains: Sequence[str] | None = None) -> int:
    """Write the rows of `chains` (default: all) as JSON lines to `out`; returns the count."""
    count = 0
    async with connection(conn_or_pool) as conn, snapshot(conn):
        for chain in chains if chains is not None else await list_chains(conn):
            async for row in iter_rows(conn, chain):
                out.write(row.to_json_line())
                out.write("\n")
                count += 1
    return count


def read_rows(lines: Iterable[str]) -> Iterator[hashing.LedgerRow]:
    """Parse an export; raises HashingError naming the first malformed line."""
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            yield hashing.LedgerRow.from_json_line(line)
        except (ValueError, TypeError) as error:
            raise hashing.HashingError(f"export line {number}: {error}") from None
