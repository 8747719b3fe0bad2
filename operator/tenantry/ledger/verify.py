"""Walk a hash chain and report the first entry that does not hold up.

`ChainVerifier` is the pure core, fed one row at a time in sequence order; `verify_rows` and
`verify_export` run it over rows from anywhere (an export read with `export.read_rows`), and
`verify_chain` / `verify_all` over the database, streaming, inside one snapshot.

For each row it checks, in this order:

- the sequence number is the next one expected (a jump means rows were deleted: ``missing``;
  a repeat or a step back means rows were reordered or duplicated: ``order``);
- the stored hash equals the hash recomputed from the row's content (``changed``: any field,
  including seq or prev_hash, was altered; rows swapped between positions fail here too,
  because seq is hashed);
- `prev_hash` equals the previous entry's hash (``link``: an entry was rewritten and rehashed,
  so its successor no longer points at it, or the successor was forged).

Against the database it also compares the chain's head row (``head``): entries cut off the end
leave the head pointing past the last row. A superuser who rewrites a whole chain, or its tail,
and fixes the head too produces a chain that verifies: only signed checkpoints kept outside the
database catch that (`checkpoints`).
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Iterable

import asyncpg

from tenantry.ledger import export, hashing


class BreakKind(enum.StrEnum):
    """Why verification stopped."""

    CHANGED = "changed"
    MISSING = "missing"
    ORDER = "order"
    LINK = "link"
    HEAD = "head"


@dataclasses.dataclass(frozen=True)
class ChainHead:
    """Where a chain ends: its last sequence number and that entry's hash (0 and genesis)."""

    chain: str
    seq: int
    hash: str


@dataclasses.dataclass(frozen=True)
class VerifyResult:
    """The outcome of walking one chain."""

    chain: str
    ok: bool
    checked: int
    """Entries that verified before the first break (all of them when ok)."""
    first_broken_seq: int | None = None
    """The sequence number where the chain stops holding up (None when ok)."""
    reason: str | None = None
    kind: BreakKind | None = None
    last_seq: int = 0
    """The last verified entry's seq (0 for an empty chain)."""
    last_hash: str = hashing.GENESIS_HASH

    def describe(self) -> str:
        """One line for humans."""
        if self.ok:
            return (f"chain {self.chain}: ok, {self.checked} entries, head {self.last_seq} "
                    f"{self.last_hash[:16]}")
        return (f"chain {self.chain}: BROKEN at seq {self.first_broken_seq} ({self.kind}): "
                f"{self.reason}")


class ChainVerifier:
    """Incremental verification of one chain: `feed` rows in order, then `finish`."""

    def __init__(self, chain: str) -> None:
        self.chain = chain
        self.checked = 0
        self._expected_seq = 1
        self._prev_hash = hashing.GENESIS_HASH
        self._broken: VerifyResult | None = None

    @property
    def broken(self) -> bool:
        return self._broken is not None

    def _break(self, seq: int, kind: BreakKind, reason: str) -> bool:
        self._broken = VerifyResult(
            chain=self.chain, ok=False, checked=self.checked, first_broken_seq=seq,
            reason=reason, kind=kind, last_seq=self._expected_seq - 1,
            last_hash=self._prev_hash)
        return False

    def feed(self, row: hashing.LedgerRow) -> bool:
        """Check the next row; False once the chain is broken (further rows are ignored)."""
        if self._broken is not None:
            return False
        expected = self._expected_seq
        if row.chain != self.chain:
            return self._break(expected, BreakKind.ORDER,
                               f"a row of chain {row.chain!r} appears in chain {self.chain!r}")
        if row.seq > expected:
            return self._break(expected, BreakKind.MISSING,
                               f"entry {expected} is missing (deleted?); the next entry present "
                               f"is {row.seq}")
        if row.seq < expected:
            return self._break(row.seq, BreakKind.ORDER,
                               f"entry {row.seq} appears again after entry {expected - 1} "
                               "(reordered or duplicated)")
        try:
            recomputed = row.compute_hash()
        except hashing.HashingError as error:
            return self._break(row.seq, BreakKind.CHANGED,
                               f"entry {row.seq} cannot be encoded canonically: {error}")
        if recomputed != row.hash:
            return self._break(row.seq, BreakKind.CHANGED,
                               f"entry {row.seq} does not match its hash: its content was "
                               "changed (or it was moved from another position)")
        if row.prev_hash != self._prev_hash:
            return self._break(row.seq, BreakKind.LINK,
                               f"entry {row.seq} does not link to entry {row.seq - 1}: one of "
                               "the two was rewritten and rehashed")
        self.checked += 1
        self._expected_seq += 1
        self._prev_hash = row.hash
        return True

    def finish(self) -> VerifyResult:
        """The result over the rows fed so far, without a head to compare with."""
        if self._broken is not None:
            return self._broken
        return VerifyResult(chain=self.chain, ok=True, checked=self.checked,
                            last_seq=self._expected_seq - 1, last_hash=self._prev_hash)

    def finish_with_head(self, head: ChainHead | None) -> VerifyResult:
        """The result, also requiring the rows to end exactly where the stored head says."""
        result = self.finish()
        problem = _head_problem(result, head) if result.ok else None
        if problem is None:
            return result
        self._break(*problem)
        return self.finish()


def _head_problem(result: VerifyResult,
                  head: ChainHead | None) -> tuple[int, BreakKind, str] | None:
    last = result.last_seq
    if head is None:
        if last == 0:
            return None
        return 1, BreakKind.HEAD, f"chain has {last} entries but no head row (head deleted?)"
    if head.seq > last:
        return (last + 1, BreakKind.HEAD,
                f"head is at entry {head.seq} but the chain ends at entry {last}: entries were "
                "cut off the end")
    if head.seq < last:
        return (head.seq + 1, BreakKind.HEAD,
                f"chain continues to entry {last} past its head at entry {head.seq}")
    if head.hash != result.last_hash:
        return last, BreakKind.HEAD, f"head hash differs from the hash of entry {last}"
    return None


def verify_rows(rows: Iterable[hashing.LedgerRow], chain: str | None = None) -> VerifyResult:
    """Verify one chain's rows (in sequence order); the chain defaults to the first row's."""
    verifier: ChainVerifier | None = None if chain is None else ChainVerifier(chain)
    for row in rows:
        if verifier is None:
            verifier = ChainVerifier(row.chain)
        if not verifier.feed(row):
            break
    if verifier is None:
        return VerifyResult(chain=chain or "", ok=True, checked=0)
    return verifier.finish()


def verify_export(rows: Iterable[hashing.LedgerRow]) -> list[VerifyResult]:
    """Verify every chain in an export (rows of a chain in order; chains may interleave)."""
    verifiers: dict[str, ChainVerifier] = {}
    for row in rows:
        verifier = verifiers.get(row.chain)
        if verifier is None:
            verifier = verifiers[row.chain] = ChainVerifier(row.chain)
        verifier.feed(row)
    return [verifiers[chain].finish() for chain in sorted(verifiers)]


async def read_head(conn: asyncpg.Connection, chain: str) -> ChainHead | None:
    """The stored head row of a chain, or None."""
    row = await conn.fetchrow("SELECT seq, hash FROM ledger.chain_heads WHERE chain = $1", chain)
    return None if row is None else ChainHead(chain=chain, seq=row["seq"], hash=row["hash"])


async def _verify_in_snapshot(conn: asyncpg.Connection, chain: str) -> VerifyResult:
    verifier = ChainVerifier(chain)
    head = await read_head(conn, chain)
    async for row in export.iter_rows(conn, chain):
        if not verifier.feed(row):
            break
    return verifier.finish_with_head(head)


async def verify_chain(conn_or_pool: asyncpg.Connection | asyncpg.Pool,
                       chain: str) -> VerifyResult:
    """Walk one chain in the database (a tenant's name, or `hashing.PLATFORM_CHAIN`)."""
    async with export.connection(conn_or_pool) as conn, export.snapshot(conn):
        return await _verify_in_snapshot(conn, chain)


async def verify_all(conn_or_pool: asyncpg.Connection | asyncpg.Pool) -> list[VerifyResult]:
    """Walk every chain in the database, all in one snapshot."""
    async with export.connection(conn_or_pool) as conn, export.snapshot(conn):
        return [await _verify_in_snapshot(conn, chain)
                for chain in await export.list_chains(conn)]
