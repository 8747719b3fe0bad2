"""The durable ledger client: audit events go to an on-disk spool first, then to the ledger.

`Recorder.record` stores the event in the spool (fsync'd), so it survives the ledger being down
and the process being killed; a background flusher appends spooled events to the ledger in
order, in batches, and retries with backoff while PostgreSQL is unreachable. `record` therefore
never fails because of the database; it fails only if the spool itself cannot be written, which
is loud. Every component that records what it did without waiting for the database uses this:
the operator (its changes), the webhook (its decisions) and the API (auth events).

One event PostgreSQL refuses (a data or integrity error, `REJECTED`: not an outage) must not
hold back every event behind it: the batch is retried one event at a time, the refused one is
moved to the spool's dead-letter directory with an ERROR log (its action, resource and SQLSTATE;
no values) and counted in `Recorder.dead_lettered`, and the rest are delivered in order. Nothing
stops the flusher: an unexpected exception is logged with its traceback and retried with the
same backoff as an outage.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import asyncpg

from tenantry.ledger import append, events, migrations
from tenantry.ledger.spool import Spool

logger = logging.getLogger(__name__)

BATCH = 500
RETRY_DELAYS = (1.0, 2.0, 5.0, 10.0, 30.0)
# The flusher also wakes up this often, in case a wake-up was missed.
IDLE_WAKE = 5.0
# Connection and statement time limits, so a hung database never hangs the flusher.
CONNECT_TIMEOUT = 10.0
UNAVAILABLE = append.UNAVAILABLE
# What "PostgreSQL refuses this event" looks like: SQLSTATE classes 22 (data exception) and 23
# (integrity constraint violation). Retrying such an event can never succeed.
REJECTED = (asyncpg.DataError, asyncpg.IntegrityConstraintViolationError)
COMMAND_TIMEOUT = 30.0
# How long a stopping operator tries to empty the spool before leaving it for the next start.
SHUTDOWN_DRAIN = 10.0



class Recorder:
    """Spools events and flushes them to the ledger in the background."""

    def __init__(self, spool: Spool, dsn: str, actor: str, *, component: str = "operator") -> None:
        self.spool = spool
        self.component = component
        self._dsn = dsn
        self.actor = actor
        self._wake = asyncio.Event()
        self._pool: asyncpg.Pool | None = None
        self._task: asyncio.Task[None] | None = None
        self.flushed = 0
        self.dead_lettered = 0
        """Events PostgreSQL refused and that were set aside in the spool's dead-letter dir."""
        self.flush_errors = 0
        """Unexpected exceptions the flusher survived (each logged with its traceback)."""

    def start(self) -> None:
        self._task = asyncio.create_task(self._flush_forever(), name="ledger-flusher")
        self._wake.set()

    async def record(self, event: events.AuditEvent) -> None:
        await asyncio.to_thread(self.spool.put, event)
        self._wake.set()

    def record_now(self, event: events.AuditEvent) -> None:
        """`record` for synchronous callers on the event loop (one small fsync'd write)."""
        self.spool.put(event)
        self._wake.set()

    def event(self, *, tenant: str | None, action: str, kind: str, namespace: str | None,
              name: str | None, changes: Mapping[str, Any] | None) -> events.AuditEvent:
        return events.AuditEvent(
            tenant=tenant, actor=self.actor,
            actor_kind=(events.ActorKind.SERVICEACCOUNT
                        if self.actor.startswith("system:serviceaccount:")
                        else events.ActorKind.SYSTEM),
            identity={**events.system_identity(self.component), "username": self.actor},
            action=action, resource_kind=kind, resource_namespace=namespace,
            resource_name=name, changes=dict(changes or {}), component=self.component)

    async def flush(self) -> int:
        """Append every spooled event now; returns how many were appended."""
        total = 0
        while batch := await asyncio.to_thread(self.spool.pending, BATCH):
            pool = await self._connect()
            try:
                await append.append_batch(pool, [event for _, event in batch])
            except REJECTED:
                # The batch is one statement: find the refused event(s) one at a time.
                total += await self._deliver_singly(pool, batch)
                continue
            await asyncio.to_thread(self.spool.done, [path for path, _ in batch])
            total += len(batch)
            self.flushed += len(batch)
        return total

    async def _deliver_singly(self, pool: asyncpg.Pool,
                              batch: list[tuple[Path, events.AuditEvent]]) -> int:
        delivered = 0
        for path, event in batch:
            try:
                await append.append(pool, event)
            except REJECTED as error:
                await asyncio.to_thread(self._dead_letter, path, event, error)
                continue
            await asyncio.to_thread(self.spool.done, [path])
            delivered += 1
            self.flushed += 1
        return delivered

    def _dead_letter(self, path: Path, event: events.AuditEvent, error: Exception) -> None:
        reason = {"error": type(error).__name__, "sqlstate": str(getattr(error, "sqlstate", "")),
                  "constraint": str(getattr(error, "constraint_name", None) or ""),
                  "action": event.action, "chain": event.chain}
        target = self.spool.dead_letter(path, reason)
        self.dead_lettered += 1
        where = "/".join(part for part in (event.resource_namespace, event.resource_name) if part)
        logger.error("AUDIT EVENT REFUSED BY THE LEDGER (%s%s): %s of %s %s on chain %s was "
                     "moved to %s and is NOT in the ledger; %d dead-lettered so far. Fix the "
                     "cause, then move the file back into %s to deliver it",
                     _describe(error),
                     f", constraint {reason['constraint']}" if reason["constraint"] else "",
                     event.action, event.resource_kind, where or "-", event.chain, target,
                     self.dead_lettered, self.spool.directory)

    async def _connect(self) -> asyncpg.Pool:
        if self._pool is None:
            pool = await asyncpg.create_pool(self._dsn, min_size=1, max_size=2,
                                             timeout=CONNECT_TIMEOUT,
                                             command_timeout=COMMAND_TIMEOUT)
            try:
                async with pool.acquire() as conn:
                    await migrations.require_current(conn)
            except BaseException:
                pool.terminate()
                raise
            self._pool = pool
        return self._pool

    async def _flush_forever(self) -> None:
        failures = 0
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), IDLE_WAKE)
            self._wake.clear()
            try:
                await self.flush()
                if failures:
                    logger.info("audit ledger reachable again; spool drained")
                failures = 0
            except UNAVAILABLE as error:
                await self._drop_pool()
                delay = RETRY_DELAYS[min(failures, len(RETRY_DELAYS) - 1)]
                failures += 1
                logger.warning("audit ledger unavailable (%s); %d event(s) kept in the spool, "
                               "retrying in %.0fs", _describe(error), self.spool.count(), delay)
                await asyncio.sleep(delay)
                self._wake.set()
            except Exception:
                # A bug, not an outage; still never a reason to stop recording. The events stay
                # in the spool (delivered at least once), and the traceback says what broke.
                await self._drop_pool()
                delay = RETRY_DELAYS[min(failures, len(RETRY_DELAYS) - 1)]
                failures += 1
                self.flush_errors += 1
                logger.exception("audit ledger flusher: unexpected error; %d event(s) kept in "
                                 "the spool, retrying in %.0fs", self._pending(), delay)
                await asyncio.sleep(delay)
                self._wake.set()

    def _pending(self) -> int:
        try:
            return self.spool.count()
        except OSError:
            return -1

    async def _drop_pool(self) -> None:
        if self._pool is not None:
            pool, self._pool = self._pool, None
            pool.terminate()

    async def close(self) -> None:
        """Stop the flusher after one last attempt to drain the spool."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        try:
            await asyncio.wait_for(self.flush(), SHUTDOWN_DRAIN)
        except UNAVAILABLE:
            logger.warning("audit ledger unavailable at shutdown; %d event(s) stay in the spool "
                           "for the next start", self.spool.count())
        except Exception:
            logger.exception("audit ledger flusher: unexpected error at shutdown; %d event(s) "
                             "stay in the spool for the next start", self._pending())
        if self._pool is not None:
            await self._pool.close()


def _describe(error: BaseException) -> str:
    """The error's type and SQLSTATE only: connection errors can echo the DSN."""
    if isinstance(error, migrations.MigrationError):
        return str(error)
    if isinstance(error, asyncpg.PostgresError):
        return f"{type(error).__name__} {error.sqlstate}"
    return type(error).__name__


def ledger_dsn(dsn_file: str | None, *, disabled: bool) -> str | None:
    """The ledger DSN a component runs with: from `--ledger-dsn-file`, else $TENANTRY_LEDGER_DSN;
    None only when explicitly `disabled` (--no-ledger). ValueError says what is missing."""
    if disabled:
        return None
    if dsn_file:
        try:
            dsn = Path(dsn_file).read_text().strip()
        except OSError as error:
            raise ValueError(f"--ledger-dsn-file {dsn_file}: {error.strerror or error}") from None
        if not dsn:
            raise ValueError(f"--ledger-dsn-file {dsn_file} is empty")
        return dsn
    dsn = os.environ.get("TENANTRY_LEDGER_DSN", "")
    if not dsn:
        raise ValueError("the audit ledger is required: give --ledger-dsn-file FILE or set "
                         "TENANTRY_LEDGER_DSN (after `tenantry ledger migrate`), or pass "
                         "--no-ledger to record nothing")
    return dsn
