"""Ledger migration 5: a head move notifies only chains somebody armed with `ledger.watch`.

The live stream's promise is that a follower sees every entry, promptly, without polling. Here
followers that do what `api.routes.stream` does (on every wake-up: arm the chain, then read
after the last entry seen) run against concurrent writers, single appends and batches, and must
end with every entry exactly once, although they read only when notified. And a chain nobody
watches must send nothing: that is what keeps its commits off NOTIFY's cluster-wide lock.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import asyncpg
import pytest

from tenantry.ledger import append, verify
from tests.ledger.ledger_helpers import Database, make_event, read_head

pytestmark = pytest.mark.postgres

CHANNEL = "tenantry_ledger"


class Heard:
    """A LISTEN connection's notifications, as (chain, seq) pairs."""

    def __init__(self) -> None:
        self.payloads: list[tuple[str, int]] = []
        self.arrived = asyncio.Event()

    def __call__(self, _conn: object, _pid: int, _channel: str, payload: str) -> None:
        chain, _, seq = payload.partition(" ")
        self.payloads.append((chain, int(seq)))
        self.arrived.set()

    async def quiet(self, seconds: float = 0.3) -> list[tuple[str, int]]:
        """What was heard, once nothing more arrived for `seconds`."""
        while True:
            self.arrived.clear()
            try:
                await asyncio.wait_for(self.arrived.wait(), seconds)
            except TimeoutError:
                return list(self.payloads)


@contextlib.asynccontextmanager
async def listening(dsn: str) -> AsyncIterator[Heard]:
    conn = await asyncpg.connect(dsn)
    heard = Heard()
    await conn.add_listener(CHANNEL, heard)
    try:
        yield heard
    finally:
        await conn.close()


async def test_an_unwatched_chain_sends_nothing_and_an_armed_one_one_notification(
        ledger_db: Database, app_conn: asyncpg.Connection) -> None:
    async with listening(ledger_db.app_dsn) as heard:
        await append.append(app_conn, make_event(1))  # a new chain: its first head notifies
        assert await heard.quiet() == [("acme", 0)]
        heard.payloads.clear()
        for n in range(2, 5):
            await append.append(app_conn, make_event(n))
        assert await heard.quiet() == []  # nobody watches acme

        await app_conn.execute("SELECT ledger.watch('acme')")
        await app_conn.execute("SELECT ledger.watch('acme')")  # already armed: no-op
        await append.append_batch(app_conn, [make_event(5), make_event(6)])
        await append.append(app_conn, make_event(7))  # disarmed by the batch
        assert await heard.quiet() == [("acme", 6)]

        heard.payloads.clear()
        await app_conn.execute("SELECT ledger.watch('acme')")
        await append.append(app_conn, make_event(8))
        assert await heard.quiet() == [("acme", 8)]
    assert (await verify.verify_chain(app_conn, "acme")).ok


async def test_watching_changes_no_head_and_creates_no_chain(
        ledger_db: Database, app_conn: asyncpg.Connection,
        admin_conn: asyncpg.Connection) -> None:
    await append.append(app_conn, make_event(1))
    before = await admin_conn.fetchrow("SELECT * FROM ledger.chain_heads WHERE chain = 'acme'")
    await app_conn.execute("SELECT ledger.watch('acme')")
    await app_conn.execute("SELECT ledger.watch('nobody-writes-here')")
    after = await admin_conn.fetchrow("SELECT * FROM ledger.chain_heads WHERE chain = 'acme'")
    assert {**dict(before), "watched": True} == dict(after)  # updated_at kept too
    assert await read_head(app_conn, "nobody-writes-here") is None
    # Arming is all the app gets: the head itself stays out of its reach.
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        await app_conn.execute("UPDATE ledger.chain_heads SET watched = false")


async def test_an_armed_head_still_only_moves_forward_to_an_existing_entry(
        ledger_db: Database, app_conn: asyncpg.Connection,
        admin_conn: asyncpg.Connection) -> None:
    """The head guard lets a head stay where it is (the arming); every real move is checked."""
    first = await append.append(app_conn, make_event(1))
    await append.append(app_conn, make_event(2))
    await app_conn.execute("SELECT ledger.watch('acme')")
    async with admin_conn.transaction():
        await admin_conn.execute(f'SET LOCAL ROLE "{ledger_db.owner_role}"')
        for sql, args in (("UPDATE ledger.chain_heads SET hash = $1 WHERE chain = 'acme'",
                           (first.hash,)),
                          ("UPDATE ledger.chain_heads SET seq = 1, hash = $1, watched = false "
                           "WHERE chain = 'acme'", (first.hash,))):
            with pytest.raises(asyncpg.IntegrityConstraintViolationError,
                               match="may only move forward"):
                async with admin_conn.transaction():  # a savepoint: the next one runs too
                    await admin_conn.execute(sql, *args)
    assert (await read_head(app_conn, "acme"))[0] == 2  # type: ignore[index]


async def _follow(dsn: str, chain: str, seen: list[int], done: asyncio.Event,
                  progressed: asyncio.Event) -> None:
    """What `api.routes.stream` does: read only when woken, arming before each read."""
    listen, read = await asyncpg.connect(dsn), await asyncpg.connect(dsn)
    wake = asyncio.Event()
    await listen.add_listener(CHANNEL, lambda _c, _p, _ch, payload: (
        wake.set() if payload.partition(" ")[0] == chain else None))
    wake.set()
    try:
        while not done.is_set():
            waiting = asyncio.ensure_future(wake.wait())
            stopping = asyncio.ensure_future(done.wait())
            await asyncio.wait({waiting, stopping}, return_when=asyncio.FIRST_COMPLETED)
            waiting.cancel()
            stopping.cancel()
            if not wake.is_set():
                continue
            wake.clear()
            await read.execute("SELECT ledger.watch($1)", chain)
            after = seen[-1] if seen else 0
            seen.extend(row["seq"] for row in await read.fetch(
                "SELECT seq FROM ledger.audit_log WHERE chain = $1 AND seq > $2 ORDER BY seq",
                chain, after))
            progressed.set()
    finally:
        await listen.close()
        await read.close()


async def test_followers_that_arm_before_reading_see_every_entry_of_concurrent_writers(
        ledger_db: Database, app_conn: asyncpg.Connection) -> None:
    """Eight writers (single appends and batches) on one chain, three followers (two of them
    as two API replicas would be, one joining late): every follower ends with every entry once,
    in order, having read only when notified."""
    await append.append(app_conn, make_event(0))  # the chain exists; its first NOTIFY is spent
    writers, rounds = 8, 40
    done, progressed = asyncio.Event(), asyncio.Event()
    followers: list[list[int]] = [[], [], []]
    tasks = [asyncio.create_task(_follow(ledger_db.app_dsn, "acme", seen, done, progressed))
             for seen in followers[:2]]
    conns = [await asyncpg.connect(ledger_db.app_dsn) for _ in range(writers)]
    try:
        async def write(w: int, conn: asyncpg.Connection) -> None:
            for i in range(rounds):
                if i % 5 == 4:
                    await append.append_batch(conn, [make_event(w * 1000 + i, request_id=f"b{k}")
                                                     for k in range(3)])
                else:
                    await append.append(conn, make_event(w * 1000 + i))
                if w == 0 and i == rounds // 2:
                    tasks.append(asyncio.create_task(
                        _follow(ledger_db.app_dsn, "acme", followers[2], done, progressed)))

        await asyncio.gather(*(write(w, c) for w, c in enumerate(conns)))
    finally:
        for conn in conns:
            await conn.close()
    total = 1 + writers * (rounds // 5 * 4 + rounds // 5 * 3)
    assert await read_head(app_conn, "acme") is not None
    assert (await read_head(app_conn, "acme"))[0] == total  # type: ignore[index]
    try:
        async with asyncio.timeout(10):
            while any(not seen or seen[-1] < total for seen in followers):
                progressed.clear()
                await progressed.wait()
    finally:
        done.set()
        await asyncio.gather(*tasks)
    for seen in followers:
        assert seen == list(range(1, total + 1))
