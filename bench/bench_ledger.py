"""Benchmark the audit ledger: hash-chained appends against plain INSERTs, and verification.

Starts its own throwaway PostgreSQL (`tenantry.devcluster.postgres.LocalPostgres`, fsync off as in
the tests, so the figures measure the ledger's CPU and locking cost rather than the disk), runs
every scenario twice in the same run — through `ledger.append_rows` (head lock, link check,
SHA-256 of the entry's document in SQL, the head guard and NOTIFY triggers) and as plain INSERTs
of the same events into an unchained table with the same columns, as the same application role —
and prints the ratio, with the server's CPU per event on each side (from /proc: unlike the
rates, not moved by other work on a shared machine). Since ledger migration 5 a head move
notifies only chains somebody follows (`ledger.watch`), so the rows above send no NOTIFY; two
rows repeat the 16-chain scenarios with every chain followed as the live stream follows it (a
LISTEN, and on each notification the chain armed again and its new entries read: the
followers' queries count in the chained side's server CPU), to show what following costs.
Then measures
verification: walking the chain from the database, and offline over a JSON-lines export, each
against simply reading the same rows.

Each phase runs for a fixed time (``--seconds``, default 2.5), so the whole run stays under a
minute. Usage: ``.venv/bin/python bench/bench_ledger.py [--seconds S] [--json]``; with ``--json``
the figures go to standard output as one JSON object (the table then goes to standard error):
``{"appends": {title: {"chained", "plain", "ratio", "server_cpu_us_per_event": {"chained",
"plain"}}}, "verification": {title: {"verify",
"read", "ratio", "verify_per_cpu_second"}}, ...}``, rates in events per second.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import json
import os
import secrets
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, TextIO

import asyncpg

from tenantry.devcluster.postgres import LocalPostgres
from tenantry.ledger import append, client, events, export, migrations, verify

APP_ROLE, OWNER_ROLE = "bench_app", "bench_owner"
TENANTS = [f"tenant-{i:02d}" for i in range(16)]
BATCH = 100
POOL = 1000  # prebuilt events per chain (a multiple of BATCH)

_PLAIN_TABLE = """
CREATE TABLE public.plain_log (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_time timestamptz NOT NULL DEFAULT clock_timestamp(),
    tenant text, actor text NOT NULL, actor_kind text NOT NULL, identity jsonb NOT NULL,
    action text NOT NULL, resource_kind text NOT NULL, resource_namespace text,
    resource_name text, changes jsonb NOT NULL, source_ip text, request_id text,
    component text NOT NULL
)"""
_PLAIN_ONE = """
INSERT INTO public.plain_log (tenant, actor, actor_kind, identity, action, resource_kind,
                              resource_namespace, resource_name, changes, source_ip, request_id,
                              component)
VALUES ($1, $2, $3, $4::jsonb, $5, $6, $7, $8, $9::jsonb, $10, $11, $12)"""
# The plain batch parses the very JSON payload append_batch gets, so only the chain differs.
_PLAIN_BATCH = """
INSERT INTO public.plain_log (tenant, actor, actor_kind, identity, action, resource_kind,
                              resource_namespace, resource_name, changes, source_ip, request_id,
                              component)
SELECT e ->> 'tenant', e ->> 'actor', e ->> 'actor_kind', e -> 'identity', e ->> 'action',
       e ->> 'resource_kind', e ->> 'resource_namespace', e ->> 'resource_name', e -> 'changes',
       e ->> 'source_ip', e ->> 'request_id', e ->> 'component'
  FROM jsonb_array_elements($1::jsonb) AS e"""


def make_event(n: int, tenant: str) -> events.AuditEvent:
    """A typical admission event: a Kubernetes user updating a Tenant."""
    return events.AuditEvent(
        tenant=tenant, actor="alice", actor_kind=events.ActorKind.USER,
        identity=events.kubernetes_identity("alice", ["team-a", "system:authenticated"]),
        action="tenant.update", resource_kind="Tenant", resource_name=tenant,
        changes={"spec.quotas.cpu": {"from": "4", "to": "8"}, "spec.egress[2].cidr":
                 {"from": None, "to": "203.0.113.0/24"}, "generation": n},
        source_ip="10.0.3.7", request_id=f"req-{n:08d}", component="admission")


def plain_args(event: events.AuditEvent) -> list[object]:
    p = event.payload()
    return [p["tenant"], p["actor"], p["actor_kind"], json.dumps(p["identity"]), p["action"],
            p["resource_kind"], p["resource_namespace"], p["resource_name"],
            json.dumps(p["changes"]), p["source_ip"], p["request_id"], p["component"]]


class Prebuilt:
    """Events built (validated, redacted) before timing starts: both paths then measure the
    database round trip, not pydantic. Cycled through; repeats do not matter to the ledger."""

    def __init__(self, tenant: str) -> None:
        self.events = [make_event(i, tenant) for i in range(POOL)]
        self.plain = [plain_args(event) for event in self.events]
        self.batch_payloads = [
            json.dumps([e.payload() for e in self.events[i:i + BATCH]], separators=(",", ":"))
            for i in range(0, POOL, BATCH)]
        self.batches = [self.events[i:i + BATCH] for i in range(0, POOL, BATCH)]


Op = Callable[[asyncpg.Connection, int], Awaitable[int]]
"""One unit of work on a connection (given a counter); returns how many events it wrote."""


async def timed(conns: list[asyncpg.Connection], op: Op, seconds: float) -> float:
    """Run `op` in a loop on every connection at once for `seconds`; events per second."""
    deadline = time.perf_counter() + seconds
    started = time.perf_counter()

    async def worker(index: int, conn: asyncpg.Connection) -> int:
        done, n = 0, index * 10_000_000
        while time.perf_counter() < deadline:
            done += await op(conn, n)
            n += 1
        return done

    counts = await asyncio.gather(*(worker(i, c) for i, c in enumerate(conns)))
    return sum(counts) / (time.perf_counter() - started)


def chained_one(events_of: Callable[[asyncpg.Connection], Prebuilt]) -> Op:
    async def op(conn: asyncpg.Connection, n: int) -> int:
        await append.append(conn, events_of(conn).events[n % POOL])
        return 1
    return op


def coalesced_one(ledger: client.LedgerClient,
                  events_of: Callable[[asyncpg.Connection], Prebuilt]) -> Op:
    """A single append through the group-commit client (the webhook's path): concurrent
    writers' appends share round trips; each still waits for its own commit."""
    async def op(conn: asyncpg.Connection, n: int) -> int:
        await ledger.append(events_of(conn).events[n % POOL])
        return 1
    return op


def plain_one(events_of: Callable[[asyncpg.Connection], Prebuilt]) -> Op:
    async def op(conn: asyncpg.Connection, n: int) -> int:
        await conn.execute(_PLAIN_ONE, *events_of(conn).plain[n % POOL])
        return 1
    return op


def chained_batch(prebuilt: Prebuilt) -> Op:
    async def op(conn: asyncpg.Connection, n: int) -> int:
        await append.append_batch(conn, prebuilt.batches[n % len(prebuilt.batches)])
        return BATCH
    return op


def plain_batch(prebuilt: Prebuilt) -> Op:
    async def op(conn: asyncpg.Connection, n: int) -> int:
        await conn.execute(_PLAIN_BATCH,
                           prebuilt.batch_payloads[n % len(prebuilt.batch_payloads)])
        return BATCH
    return op


async def bench_verification(conn: asyncpg.Connection,
                             chain: str) -> list[tuple[str, float, float, float]]:
    """(what, verified events/s, read-only events/s, verified events per CPU second of this
    process) for the database walk and offline. The last is what the machine's load does not
    move: offline verification runs entirely in this process (the walk's server side does not
    count there)."""
    started = time.perf_counter()
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        count = sum([1 async for _ in export.iter_rows(conn, chain)])
    read_rate = count / (time.perf_counter() - started)
    started, cpu_started = time.perf_counter(), time.process_time()
    result = await verify.verify_chain(conn, chain)
    verify_rate = result.checked / (time.perf_counter() - started)
    verify_cpu_rate = result.checked / (time.process_time() - cpu_started)
    assert result.ok and result.checked == count, result.describe()

    buffer = io.StringIO()
    await export.export_rows(conn, buffer, [chain])
    lines = buffer.getvalue().splitlines()
    started = time.perf_counter()
    rows = list(export.read_rows(lines))
    parse_rate = len(rows) / (time.perf_counter() - started)
    started, cpu_started = time.perf_counter(), time.process_time()
    (offline,) = verify.verify_export(rows)
    offline_rate = offline.checked / (time.perf_counter() - started)
    offline_cpu_rate = offline.checked / (time.process_time() - cpu_started)
    assert offline.ok
    return [(f"database walk of {count} entries (stream + verify)", verify_rate, read_rate,
             verify_cpu_rate),
            (f"offline export of {len(rows)} entries (verify parsed rows)", offline_rate,
             parse_rate, offline_cpu_rate)]


class ServerCpu:
    """CPU seconds used so far by the PostgreSQL server (the postmaster and every process it
    started), from /proc: per event, what the machine's load does not move, unlike the rates
    (other work on a shared machine slows both sides of a ratio, but not evenly)."""

    def __init__(self, postmaster_pid: int) -> None:
        self._pid = postmaster_pid
        self._tick = os.sysconf("SC_CLK_TCK")

    def seconds(self) -> float:
        total = 0
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                pid, rest = stat.read_text().split(" ", 1)
            except OSError:  # the process ended meanwhile
                continue
            fields = rest.rsplit(")", 1)[1].split()
            if int(pid) == self._pid or int(fields[1]) == self._pid:  # ppid
                total += int(fields[11]) + int(fields[12])  # utime, stime
        return total / self._tick


async def measure_appends(figures: dict[str, Any], title: str, group: list[asyncpg.Connection],
                          chained: Op, plain: Op, seconds: float, out: TextIO,
                          server: ServerCpu | None) -> None:
    """One row of the appends table: both sides, their ratio, and (on Linux) the server's CPU
    per event of each, into `figures` and `out`."""
    row: dict[str, Any] = {}
    for side, op in (("chained", chained), ("plain", plain)):
        started, cpu_started = time.perf_counter(), server.seconds() if server else 0.0
        rate = row[side] = await timed(group, op, seconds)
        if server is not None:
            events = rate * (time.perf_counter() - started)
            row.setdefault("server_cpu_us_per_event", {})[side] = (
                (server.seconds() - cpu_started) / events * 1e6)
    row["ratio"] = row["chained"] / row["plain"]
    figures["appends"][title] = row
    cpu = row.get("server_cpu_us_per_event")
    print(f"{title:<64}{row['chained']:>10.0f}{row['plain']:>10.0f}{row['ratio']:>15.2f}"
          + (f"{cpu['chained']:>22.0f}{cpu['plain']:>8.0f}" if cpu else ""), file=out)


def server_cpu(data_directory: str) -> ServerCpu | None:
    """The server's CPU meter, when it runs on this (Linux) machine, as LocalPostgres does."""
    try:
        pid = int((Path(data_directory) / "postmaster.pid").read_text().split()[0])
    except (OSError, ValueError):
        return None
    return ServerCpu(pid) if Path(f"/proc/{pid}/stat").exists() else None


@contextlib.asynccontextmanager
async def followed(dsn_app: str, chains: list[str]) -> AsyncIterator[None]:
    """Every chain in `chains` followed for the block as `api.routes.stream` follows one: one
    LISTEN connection, and on each notification (and once at the start) the chain armed with
    `ledger.watch` and its entries after the last one read, on a second connection."""
    listen, read = await asyncpg.connect(dsn_app), await asyncpg.connect(dsn_app)
    woken: asyncio.Queue[str] = asyncio.Queue()
    for chain in chains:
        woken.put_nowait(chain)
    last = dict.fromkeys(chains, 0)

    async def follow() -> None:
        while True:
            chain = await woken.get()
            await read.execute("SELECT ledger.watch($1)", chain)
            rows = await read.fetch("SELECT * FROM ledger.audit_log WHERE chain = $1 AND seq > $2 "
                                    "ORDER BY seq LIMIT 100", chain, last[chain])
            if rows:
                last[chain] = rows[-1]["seq"]
                if len(rows) == 100:
                    woken.put_nowait(chain)

    await listen.add_listener("tenantry_ledger", lambda _c, _p, _ch, payload: (
        woken.put_nowait(payload.partition(" ")[0])
        if payload.partition(" ")[0] in last else None))
    follower = asyncio.create_task(follow())
    try:
        yield
    finally:
        follower.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await follower
        await listen.close()
        await read.close()


async def run(dsn_admin: str, dsn_app: str, password: str, seconds: float,
              out: TextIO = sys.stdout) -> dict[str, Any]:
    """Run every scenario, print the table to `out`; returns the figures."""
    await migrations.migrate(dsn_admin, app_role=APP_ROLE, app_password=password,
                             owner_role=OWNER_ROLE)
    admin = await asyncpg.connect(dsn_admin)
    await admin.execute(_PLAIN_TABLE)
    await admin.execute(f"GRANT SELECT, INSERT ON public.plain_log TO {APP_ROLE}")
    version = await admin.fetchval("SHOW server_version")
    server = server_cpu(await admin.fetchval("SHOW data_directory"))
    await admin.close()

    conns = [await asyncpg.connect(dsn_app) for _ in range(16)]
    prebuilt = {tenant: Prebuilt(tenant) for tenant in ["acme", "shared", *TENANTS]}
    own = {id(conn): prebuilt[tenant] for conn, tenant in zip(conns, TENANTS, strict=True)}

    def acme(_: asyncpg.Connection) -> Prebuilt:
        return prebuilt["acme"]

    def shared(_: asyncpg.Connection) -> Prebuilt:
        return prebuilt["shared"]

    def own_tenant(conn: asyncpg.Connection) -> Prebuilt:
        return own[id(conn)]

    ledger = client.LedgerClient(dsn_app)
    try:
        scenarios: list[tuple[str, list[asyncpg.Connection], Op, Op]] = [
            ("single appends, 1 chain, 1 connection", conns[:1],
             chained_one(acme), plain_one(acme)),
            ("single appends, 16 tenant chains, 16 connections", conns,
             chained_one(own_tenant), plain_one(own_tenant)),
            ("single appends, 1 chain, 16 connections", conns,
             chained_one(shared), plain_one(shared)),
            (f"batches of {BATCH}, 1 chain, 1 connection", conns[:1],
             chained_batch(prebuilt["acme"]), plain_batch(prebuilt["acme"])),
            # The same single appends from 16 concurrent writers, through ledger.client (one
            # pool, group commit) on the chained side; plain: 16 connections as above.
            ("ledger.client, 16 tenant chains, 16 writers", conns,
             coalesced_one(ledger, own_tenant), plain_one(own_tenant)),
            ("ledger.client, 1 chain, 16 writers", conns,
             coalesced_one(ledger, shared), plain_one(shared)),
        ]
        figures: dict[str, Any] = {"postgres": version, "seconds": seconds, "appends": {},
                                   "verification": {}}
        print(f"tenantry ledger benchmark - PostgreSQL {version}, fsync off, "
              f"{seconds:g} s per measurement", file=out)
        print(f"{'appends (events/s)':<64}{'chained':>10}{'plain':>10}{'chained/plain':>15}"
              f"{'server CPU us/event: chained':>30}{'plain':>7}", file=out)
        for title, group, chained, plain in scenarios:
            await measure_appends(figures, title, group, chained, plain, seconds, out,
                                  server)
        # What following costs: a NOTIFY is delivered at commit, under a lock every
        # notifying transaction of the cluster takes in turn; since migration 5 only moves of
        # followed chains notify. The 16-chain rows again, every chain followed.
        async with followed(dsn_app, TENANTS):
            for title, group, chained, plain in scenarios[1:2] + scenarios[4:5]:
                await measure_appends(figures, f"{title}, followed", group, chained, plain,
                                      seconds, out, server)

        print(f"\n{'verification (events/s)':<62}{'verify':>10}{'read':>10}{'verify/read':>13}"
              f"{'verify/CPU s':>14}", file=out)
        for title, verify_rate, read_rate, cpu_rate in await bench_verification(conns[0],
                                                                                "acme"):
            figures["verification"][title] = {"verify": verify_rate, "read": read_rate,
                                              "ratio": verify_rate / read_rate,
                                              "verify_per_cpu_second": cpu_rate}
            print(f"{title:<62}{verify_rate:>10.0f}{read_rate:>10.0f}"
                  f"{verify_rate / read_rate:>13.2f}{cpu_rate:>14.0f}", file=out)
        results = await verify.verify_all(conns[0])
        assert all(r.ok for r in results), [r.describe() for r in results if not r.ok]
        figures["verified_chains"] = len(results)
        figures["verified_entries"] = sum(r.checked for r in results)
        print(f"\nall {len(results)} chains verified after the run "
              f"({figures['verified_entries']} entries)", file=out)
        return figures
    finally:
        await ledger.close()
        for conn in conns:
            await conn.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--seconds", type=float, default=2.5, help="duration of each phase")
    parser.add_argument("--json", action="store_true",
                        help="print the figures as JSON on stdout (the table on stderr)")
    args = parser.parse_args()
    started = time.perf_counter()
    password = secrets.token_urlsafe(18)
    table = sys.stderr if args.json else sys.stdout
    with LocalPostgres() as server:
        figures = asyncio.run(run(server.dsn(), server.dsn(user=APP_ROLE, password=password),
                                  password, args.seconds, table))
    figures["total_seconds"] = time.perf_counter() - started
    print(f"total {figures['total_seconds']:.1f} s", file=table)
    if args.json:
        json.dump(figures, sys.stdout, indent=2)
        print()


if __name__ == "__main__":
    main()
