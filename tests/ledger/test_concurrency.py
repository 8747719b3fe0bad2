"""Many connections appending at once, and a writer killed mid-batch: no gap, no broken link."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import textwrap
import uuid

import asyncpg
import pytest

from tenantry.ledger import append, verify
from tests.conftest import REPO_ROOT
from tests.ledger.ledger_helpers import Database, make_event, read_chain, read_head

pytestmark = pytest.mark.postgres


async def test_sixteen_connections_appending_to_one_chain_stay_gapless(
        ledger_db: Database) -> None:
    writers, per_writer = 16, 15
    conns = [await asyncpg.connect(ledger_db.app_dsn) for _ in range(writers)]
    try:
        async def write(w: int, conn: asyncpg.Connection) -> list[int]:
            seqs = []
            for i in range(per_writer):
                appended = await append.append(conn, make_event(w * 1000 + i))
                seqs.append(appended.seq)
            return seqs

        per_conn = await asyncio.gather(*(write(w, c) for w, c in enumerate(conns)))
    finally:
        for conn in conns:
            await conn.close()

    total = writers * per_writer
    assert sorted(seq for seqs in per_conn for seq in seqs) == list(range(1, total + 1))
    # Each writer's own events keep their order in the chain.
    assert all(seqs == sorted(seqs) for seqs in per_conn)
    conn = await asyncpg.connect(ledger_db.app_dsn)
    try:
        rows = await read_chain(conn, "acme")
        assert [row.seq for row in rows] == list(range(1, total + 1))
        result = await verify.verify_chain(conn, "acme")
        assert (result.ok, result.checked) == (True, total)
        assert await read_head(conn, "acme") == (total, rows[-1].hash)
    finally:
        await conn.close()


async def test_concurrent_batches_over_overlapping_chains_neither_deadlock_nor_gap(
        ledger_db: Database) -> None:
    """Batches lock heads in chain-name order, so opposite input orders cannot deadlock."""
    tenants = ["acme", "beta", "gamma"]
    async with asyncpg.create_pool(ledger_db.app_dsn, min_size=10, max_size=10) as pool:
        async def write(w: int) -> None:
            order = tenants if w % 2 else list(reversed(tenants))
            for round_ in range(6):
                await append.append_batch(pool, [
                    make_event(w * 100 + round_, tenant=tenant) for tenant in order for _ in "xy"])

        await asyncio.wait_for(asyncio.gather(*(write(w) for w in range(10))), timeout=60)
        results = await verify.verify_all(pool)
    assert [(r.chain, r.ok, r.checked) for r in results] == [
        (tenant, True, 10 * 6 * 2) for tenant in tenants]


# A writer in its own process: appends five events in a transaction, then a big batch, then
# waits. Killing it with SIGKILL at either point must leave the chain exactly as it was.
_WRITER = textwrap.dedent("""
    import asyncio, os, sys
    import asyncpg
    sys.path.insert(0, os.environ["REPO_ROOT"])
    from tests.ledger.ledger_helpers import make_event
    from tenantry.ledger import append

    async def main():
        conn = await asyncpg.connect(os.environ["LEDGER_DSN"], server_settings={
            "application_name": os.environ["LEDGER_APP_NAME"]})
        async with conn.transaction():
            await append.append_batch(conn, [make_event(100 + i) for i in range(5)])
            print("first", flush=True)
            await append.append_batch(conn, [make_event(200 + i) for i in range(20000)])
            print("second", flush=True)
            await asyncio.sleep(3600)

    asyncio.run(main())
""")


@pytest.mark.parametrize("kill_when", ["during-batch", "before-commit"])
async def test_a_writer_killed_mid_transaction_leaves_no_trace(
        ledger_db: Database, kill_when: str) -> None:
    conn = await asyncpg.connect(ledger_db.app_dsn)
    waiter = await asyncpg.connect(ledger_db.app_dsn)
    app_name = f"ledger-writer-{uuid.uuid4().hex[:8]}"
    env = {**os.environ, "LEDGER_DSN": ledger_db.app_dsn, "LEDGER_APP_NAME": app_name,
           "REPO_ROOT": str(REPO_ROOT)}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", _WRITER, env=env, stdout=asyncio.subprocess.PIPE)
    try:
        before = await append.append_batch(conn, [make_event(i) for i in range(3)])
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), timeout=30)
        assert line == b"first\n"
        # Someone else appends meanwhile: it must queue on the head lock held by the writer.
        blocked = asyncio.create_task(append.append(waiter, make_event(999)))
        if kill_when == "during-batch":
            await _wait_until_active(conn, app_name)
        else:
            line = await asyncio.wait_for(proc.stdout.readline(), timeout=60)
            assert line == b"second\n"
        assert not blocked.done()
        os.kill(proc.pid, signal.SIGKILL)
        await proc.wait()

        # The server rolls the writer's transaction back once it notices the dead client;
        # the queued append then takes the next position after the committed entries.
        appended = await asyncio.wait_for(blocked, timeout=60)
        assert appended.seq == len(before) + 1
        rows = await read_chain(conn, "acme")
        assert [row.request_id for row in rows] == ["req-0", "req-1", "req-2", "req-999"]
        result = await verify.verify_chain(conn, "acme")
        assert (result.ok, result.checked) == (True, 4)
        assert (await append.append(conn, make_event(1000))).seq == 5
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        await conn.close()
        await waiter.close()


async def _wait_until_active(conn: asyncpg.Connection, app_name: str) -> None:
    """Until the writer's backend is executing its second (big) batch."""
    for _ in range(600):
        state = await conn.fetchval(
            "SELECT state FROM pg_stat_activity WHERE application_name = $1 "
            "AND query LIKE '%ledger.append_rows%'", app_name)
        if state == "active":
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the writer never started its big batch")
