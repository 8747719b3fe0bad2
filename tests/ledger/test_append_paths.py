"""Version 4's two append paths: one statement for a single entry, two for a batch.

What each must keep: the database alone picks seq, prev_hash, time and hash under the head lock,
so a writer that waits on a lock links to whatever the head is once it has the lock (not to the
head it saw when its statement began); a new chain starts at the genesis whichever path creates
it; the stored hash is the RFC 8785 reference's; and a row tampered with after it was sealed is
found by verification, from the database and offline.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import itertools

import asyncpg
import pytest
import rfc8785

from tenantry.ledger import append, export, hashing, verify
from tests.ledger.ledger_helpers import Database, make_event, read_chain, read_head, tamper

pytestmark = pytest.mark.postgres

_APPEND_ROWS = ("SELECT * FROM ledger.append_rows($1::text[], $2::text[], $3::text[], "
                "$4::text[], $5::text[], $6::text[], $7::text[], $8::text[], $9::text[], "
                "$10::text[], $11::text[], $12::text[])")


def _reference_hash(row: hashing.LedgerRow) -> str:
    return hashlib.sha256(rfc8785.dumps(row.document())).hexdigest()


async def test_both_paths_start_new_chains_at_the_genesis_and_hash_as_the_reference(
        app_conn: asyncpg.Connection) -> None:
    singles = [await append.append(app_conn, make_event(1)),              # new chain
               await append.append(app_conn, make_event(2)),              # existing chain
               await append.append(app_conn, make_event(3, tenant=None))]  # the platform's
    # A batch over an existing chain, two new ones and the platform chain, interleaved.
    batch = await append.append_batch(app_conn, [
        make_event(4, tenant="gamma"), make_event(5), make_event(6, tenant="beta"),
        make_event(7, tenant="gamma"), make_event(8, tenant=None)])
    assert [(a.chain, a.seq) for a in singles] == [
        ("acme", 1), ("acme", 2), (hashing.PLATFORM_CHAIN, 1)]
    assert [(a.chain, a.seq) for a in batch] == [
        ("gamma", 1), ("acme", 3), ("beta", 1), ("gamma", 2), (hashing.PLATFORM_CHAIN, 2)]
    for chain, length in (("acme", 3), ("beta", 1), ("gamma", 2), (hashing.PLATFORM_CHAIN, 2)):
        rows = await read_chain(app_conn, chain)
        assert [row.seq for row in rows] == list(range(1, length + 1))
        assert rows[0].prev_hash == hashing.GENESIS_HASH
        assert all(row.hash == _reference_hash(row) for row in rows)
        assert all(later.prev_hash == earlier.hash for earlier, later in itertools.pairwise(rows))
        assert await read_head(app_conn, chain) == (length, rows[-1].hash)
    returned = {(a.chain, a.seq): a.hash for a in singles + batch}
    stored = {(row.chain, row.seq): row.hash
              for chain in ("acme", "beta", "gamma", hashing.PLATFORM_CHAIN)
              for row in await read_chain(app_conn, chain)}
    assert returned == stored


@pytest.mark.parametrize("size", [1, 3], ids=["single", "batch"])
async def test_a_writer_waiting_on_the_head_lock_links_to_the_head_it_then_finds(
        ledger_db: Database, app_conn: asyncpg.Connection, size: int) -> None:
    """The head is read under the lock: a writer whose statement began before another's commit
    still links to that commit's entry, not to the head its statement first saw."""
    await append.append(app_conn, make_event(0))
    holder = await asyncpg.connect(ledger_db.app_dsn)
    try:
        async with holder.transaction():
            held = await append.append(holder, make_event(1))
            waiting = asyncio.create_task(
                append.append_batch(app_conn, [make_event(10 + i) for i in range(size)]))
            await asyncio.sleep(0.3)
            assert not waiting.done()  # queued on the head row, not racing past it
        landed = await asyncio.wait_for(waiting, timeout=10)
    finally:
        await holder.close()
    assert held.seq == 2
    assert [a.seq for a in landed] == list(range(3, 3 + size))
    rows = await read_chain(app_conn, "acme")
    assert rows[2].prev_hash == held.hash
    result = await verify.verify_chain(app_conn, "acme")
    assert (result.ok, result.checked) == (True, 2 + size)


@pytest.mark.parametrize("size", [1, 2], ids=["single", "batch"])
async def test_arrays_not_indexed_from_one_are_refused(app_conn: asyncpg.Connection,
                                                       size: int) -> None:
    """An SQL caller may build arrays with other bounds; the function refuses rather than read
    past them (asyncpg always sends arrays from 1)."""
    columns = append._columns([make_event(i) for i in range(size)])
    # The actors, as the same array indexed from 0: '[0:n-1]={...}'.
    from_zero = ("(('[0:' || (cardinality($2::text[]) - 1) || ']=' || $2::text[]::text)"
                 "::text[])")
    with pytest.raises(asyncpg.InvalidParameterValueError, match="indexed from 1"):
        await app_conn.fetch(_APPEND_ROWS.replace("$2::text[]", from_zero), *columns)
    assert await app_conn.fetchval("SELECT count(*) FROM ledger.audit_log") == 0


@pytest.mark.parametrize("size", [1, 4], ids=["single", "batch"])
async def test_a_row_sealed_by_either_path_then_changed_is_found_online_and_offline(
        app_conn: asyncpg.Connection, admin_conn: asyncpg.Connection, size: int) -> None:
    for i in range(3):
        await append.append_batch(app_conn, [make_event(10 * i + j) for j in range(size)])
    target = size + 1  # the first entry of the second call
    await tamper(admin_conn, "UPDATE ledger.audit_log SET actor = 'mallory' "
                             "WHERE chain = 'acme' AND seq = $1", target)

    online = await verify.verify_chain(app_conn, "acme")
    assert (online.ok, online.first_broken_seq, online.kind) == (
        False, target, verify.BreakKind.CHANGED)
    buffer = io.StringIO()
    await export.export_rows(app_conn, buffer)
    (offline,) = verify.verify_export(export.read_rows(buffer.getvalue().splitlines()))
    assert (offline.ok, offline.first_broken_seq, offline.kind) == (
        False, target, verify.BreakKind.CHANGED)
