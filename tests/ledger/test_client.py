"""The group-commit ledger client (`tenantry.ledger.client`) against a real PostgreSQL.

Concurrent appends share one `append_batch` round trip and keep their order per chain; each
caller gets its own entry back only once it is committed; a batch the database refuses fails
every append in it and writes none; a caller that gives up before its batch was sent is never
written. And through the webhook's audit handler: a review is not admitted while its entry
cannot commit, and every review of a failed batch is refused (fail closed).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Sequence

import asyncpg
import pytest

from tenantry.ledger import append, client, verify
from tenantry.ledger.events import AuditEvent
from tenantry.webhook import audit, routes
from tenantry.webhook.review import AdmissionRequest, parse_review
from tests.ledger.ledger_helpers import Database, make_event, read_chain
from tests.unit.webhook.webhook_unit_helpers import Tenants


class CountingBatches:
    """`append.append_batch` on a real pool, remembering each round trip's events; a batch can
    be held at the door (`hold`) to let others queue behind it."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool
        self.batches: list[list[str | None]] = []
        self.hold: asyncio.Event | None = None
        self.entered = asyncio.Event()

    async def __call__(self, events: Sequence[AuditEvent]) -> list[append.Appended]:
        self.batches.append([event.request_id for event in events])
        self.entered.set()
        if self.hold is not None:
            await self.hold.wait()
        return await append.append_batch(self.pool, events)


@pytest.fixture
async def pool(ledger_db: Database) -> AsyncIterator[asyncpg.Pool]:
    opened = await asyncpg.create_pool(ledger_db.app_dsn, min_size=1, max_size=2)
    yield opened
    await opened.close()


async def test_concurrent_appends_land_in_one_round_trip_in_call_order_per_chain(
        pool: asyncpg.Pool, app_conn: asyncpg.Connection) -> None:
    batches = CountingBatches(pool)
    group = client.GroupCommit(batches)
    chains = ["acme", "globex", "initech"]
    events = [make_event(n, tenant=chains[n % 3], request_id=f"req-{n}") for n in range(30)]

    placed = await asyncio.gather(*(group.append(event) for event in events))

    assert len(batches.batches) == 1, batches.batches  # thirty appends, one statement
    for chain in chains:
        rows = await read_chain(app_conn, chain)
        assert [row.request_id for row in rows] == \
            [e.request_id for e in events if e.tenant == chain]  # the order of the calls
        assert (await verify.verify_chain(app_conn, chain)).ok
    # Every caller got its own entry's place, not a neighbour's.
    by_place = {(row.chain, row.seq): row.request_id
                for chain in chains for row in await read_chain(app_conn, chain)}
    assert [by_place[(p.chain, p.seq)] for p in placed] == [e.request_id for e in events]


async def test_appends_arriving_while_a_batch_is_in_flight_go_together_in_the_next(
        pool: asyncpg.Pool, app_conn: asyncpg.Connection) -> None:
    batches = CountingBatches(pool)
    batches.hold = asyncio.Event()
    group = client.GroupCommit(batches)
    first = asyncio.create_task(group.append(make_event(0, request_id="first")))
    await batches.entered.wait()
    later = [asyncio.create_task(group.append(make_event(n, request_id=f"later-{n}")))
             for n in range(1, 11)]
    await asyncio.sleep(0.05)
    assert not first.done()  # its batch has not committed yet
    batches.hold.set()
    await asyncio.gather(first, *later)

    assert batches.batches == [["first"], [f"later-{n}" for n in range(1, 11)]]
    rows = await read_chain(app_conn, "acme")
    assert [row.request_id for row in rows] == ["first", *(f"later-{n}" for n in range(1, 11))]


async def test_batches_are_cut_at_max_batch(pool: asyncpg.Pool,
                                           app_conn: asyncpg.Connection) -> None:
    batches = CountingBatches(pool)
    group = client.GroupCommit(batches, max_batch=4)
    await asyncio.gather(*(group.append(make_event(n, request_id=f"r{n}")) for n in range(10)))
    assert [len(b) for b in batches.batches] == [4, 4, 2]
    assert [row.request_id for row in await read_chain(app_conn, "acme")] == \
        [f"r{n}" for n in range(10)]


async def test_a_batch_the_database_refuses_fails_every_append_in_it_and_writes_none(
        pool: asyncpg.Pool, app_conn: asyncpg.Connection) -> None:
    batches = CountingBatches(pool)
    group = client.GroupCommit(batches)
    # An address the database cannot parse (built past the model's validation): PostgreSQL
    # refuses the whole statement, so the good events next to it are not written either.
    bad = make_event(99, request_id="bad").model_copy(update={"source_ip": "not-an-address"})
    events = [make_event(0, request_id="good-0"), bad, make_event(1, request_id="good-1")]

    outcomes = await asyncio.gather(*(group.append(e) for e in events), return_exceptions=True)

    assert len(batches.batches) == 1
    assert all(isinstance(outcome, asyncpg.PostgresError) for outcome in outcomes), outcomes
    assert await read_chain(app_conn, "acme") == []
    # The next batch is not poisoned by the failed one.
    placed = await group.append(make_event(2, request_id="after"))
    assert (placed.chain, placed.seq) == ("acme", 1)


async def test_an_append_cancelled_before_its_batch_was_sent_is_never_written(
        pool: asyncpg.Pool, app_conn: asyncpg.Connection) -> None:
    batches = CountingBatches(pool)
    batches.hold = asyncio.Event()
    group = client.GroupCommit(batches)
    first = asyncio.create_task(group.append(make_event(0, request_id="first")))
    await batches.entered.wait()
    gave_up = asyncio.create_task(group.append(make_event(1, request_id="gave-up")))
    kept = asyncio.create_task(group.append(make_event(2, request_id="kept")))
    await asyncio.sleep(0)
    gave_up.cancel()
    batches.hold.set()
    await asyncio.gather(first, kept)
    with pytest.raises(asyncio.CancelledError):
        await gave_up

    assert batches.batches == [["first"], ["kept"]]
    assert [row.request_id for row in await read_chain(app_conn, "acme")] == ["first", "kept"]


def _tenant_create(name: str, uid: str) -> AdmissionRequest:
    request = {"uid": uid,
               "kind": {"group": "tenantry.dev", "version": "v1alpha1", "kind": "Tenant"},
               "resource": {"group": "tenantry.dev", "version": "v1alpha1",
                            "resource": "tenants"},
               "operation": "CREATE", "name": name,
               "userInfo": {"username": "alice", "groups": ["devs"], "uid": "u-1"},
               "object": {"metadata": {"name": name, "generation": 1},
                          "spec": {"namespaces": [{"name": name}]}}}
    return parse_review(json.dumps({"apiVersion": "admission.k8s.io/v1",
                                    "kind": "AdmissionReview", "request": request}).encode())


async def _entries(dsn: str, chain: str) -> list[str | None]:
    """The chain's request ids as a connection of its own sees them (committed rows only)."""
    conn = await asyncpg.connect(dsn)
    try:
        return [row.request_id for row in await read_chain(conn, chain)]
    finally:
        await conn.close()


async def test_a_review_is_not_admitted_before_its_entry_is_committed(
        ledger_db: Database, admin_conn: asyncpg.Connection) -> None:
    ledger = client.LedgerClient(ledger_db.app_dsn)
    handle = audit.handler(routes.AUDIT, Tenants({}), ledger)
    try:
        assert (await handle(_tenant_create("acme", "uid-0"))).allowed
        # Someone holds acme's head row: no entry of acme can commit until they let go.
        locker = admin_conn.transaction()
        await locker.start()
        await admin_conn.execute(
            "SELECT 1 FROM ledger.chain_heads WHERE chain = 'acme' FOR UPDATE")
        reviews = [asyncio.create_task(handle(_tenant_create("acme", f"uid-{n}")))
                   for n in range(1, 6)]
        await asyncio.sleep(0.5)
        assert not any(review.done() for review in reviews)  # nobody admitted yet
        assert await _entries(ledger_db.app_dsn, "acme") == ["uid-0"]
        await locker.commit()
        verdicts = await asyncio.gather(*reviews)
        # Admitted, and at that moment every entry is there for anyone to read.
        assert all(verdict.allowed for verdict in verdicts)
        assert await _entries(ledger_db.app_dsn, "acme") == [f"uid-{n}" for n in range(6)]
    finally:
        await ledger.close()


async def test_every_review_of_a_batch_that_fails_is_refused(ledger_db: Database) -> None:
    # A ledger that cannot be reached: the batch holding these reviews fails, and each of them
    # is refused with the reason, none admitted unrecorded.
    ledger = client.LedgerClient(ledger_db.app_dsn.replace(
        f":{ledger_db.server.port}/", ":1/"))
    handle = audit.handler(routes.AUDIT, Tenants({}), ledger)
    try:
        verdicts = await asyncio.gather(*(handle(_tenant_create("acme", f"uid-{n}"))
                                          for n in range(5)))
    finally:
        await ledger.close()
    assert [verdict.allowed for verdict in verdicts] == [False] * 5
    assert all("audit ledger is unavailable" in verdict.message for verdict in verdicts)
    assert all(verdict.code == 503 for verdict in verdicts)
