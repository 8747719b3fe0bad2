"""The ledger client for writers that wait on their entry: concurrent appends share a round trip.

Why: the admission webhook records every change to a Tenantry resource before it admits it, one
entry per review, and each review waits until its entry is committed. Sent one by one, every
entry is a round trip and a transaction of its own, and concurrent ones queue on the chain's
head lock inside PostgreSQL, one commit after the other. Here they queue in the writer instead
(group commit): while one `append_batch` is in flight, the appends that arrive wait, and all of
them go in the next one, one statement and one transaction for the lot. With one caller at a
time nothing waits: a lone append goes at once, as before.

What each caller is promised, as with a plain `append.append`:

- `append` returns only once the batch holding its event has committed, with that event's own
  place in its chain: a review is never admitted before its entry is durable;
- a batch is one statement, so it lands whole or not at all: when it fails, every append in it
  raises (the webhook then refuses each of those reviews, fail closed) and none of them was
  written;
- order: one batch in flight at a time, events in arrival order within it, and `append_batch`
  keeps each chain's events in their order, so per chain entries land in the order `append` was
  called;
- a caller that gives up (cancelled, e.g. by its timeout) before its batch was sent is taken out
  of the queue and never written. Once sent, the statement runs to its end: the entry may then be
  committed although its caller stopped waiting, as with any database write whose answer is lost.

`GroupCommit` is the queueing alone, over any batch function (tests give it a counting one);
`LedgerClient` adds the connection: a small asyncpg pool made on first use and dropped when the
database becomes unreachable, so the next append reconnects.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence

import asyncpg

from tenantry.ledger import append as append_module
from tenantry.ledger.events import AuditEvent

# One statement's worth: bounds the arrays sent and the time one batch holds the head locks.
MAX_BATCH = 100

BatchAppend = Callable[[Sequence[AuditEvent]], Awaitable[list[append_module.Appended]]]
"""Appends events atomically and returns their places in `events` order (`append_batch`)."""


class GroupCommit:
    """Coalesces concurrent `append` calls into `batch_append` calls, one in flight at a time."""

    def __init__(self, batch_append: BatchAppend, *, max_batch: int = MAX_BATCH) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be at least 1, not {max_batch}")
        self._batch_append = batch_append
        self._max_batch = max_batch
        self._queue: list[tuple[AuditEvent, asyncio.Future[append_module.Appended]]] = []
        self._sender: asyncio.Task[None] | None = None

    async def append(self, event: AuditEvent) -> append_module.Appended:
        """Append `event`; returns its place once the batch holding it has committed."""
        placed: asyncio.Future[append_module.Appended] = \
            asyncio.get_running_loop().create_future()
        entry = (event, placed)
        self._queue.append(entry)
        if self._sender is None:
            self._sender = asyncio.create_task(self._send_all())
        try:
            return await asyncio.shield(placed)
        except asyncio.CancelledError:
            # Not sent yet: never write it. Sent: the batch's outcome no longer concerns us
            # (retrieved here, so that a failure nobody awaits is not logged as lost).
            self._queue = [queued for queued in self._queue if queued is not entry]
            placed.add_done_callback(_retrieve)
            raise

    async def _send_all(self) -> None:
        """Send batches until the queue is empty (runs as the one sender task)."""
        try:
            while self._queue:
                batch = self._queue[:self._max_batch]
                del self._queue[:len(batch)]
                try:
                    placed = await self._batch_append([event for event, _ in batch])
                    if len(placed) != len(batch):
                        raise RuntimeError(f"the ledger placed {len(placed)} of {len(batch)} "
                                           "events")
                except BaseException as error:
                    for _, future in batch:
                        if not future.done():
                            future.set_exception(error)
                    if not isinstance(error, Exception):
                        raise  # cancellation of the sender itself (close)
                    continue
                for (_, future), where in zip(batch, placed, strict=True):
                    if not future.done():
                        future.set_result(where)
        finally:
            self._sender = None
            for _, future in self._queue:  # only when the sender was cancelled
                if not future.done():
                    future.set_exception(RuntimeError("the ledger client was closed"))
            self._queue.clear()

    async def close(self) -> None:
        """Stop sending; appends still queued fail."""
        sender = self._sender
        if sender is not None:
            sender.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sender


def _retrieve(future: asyncio.Future[append_module.Appended]) -> None:
    if not future.cancelled():
        future.exception()


class LedgerClient:
    """Appends events over a lazily (re)connected pool, concurrent appends in one round trip."""

    def __init__(self, dsn: str, *, max_batch: int = MAX_BATCH,
                 command_timeout: float = 3.0) -> None:
        self._dsn = dsn
        self._command_timeout = command_timeout
        self._pool: asyncpg.Pool | None = None
        self._connecting = asyncio.Lock()
        self._group = GroupCommit(self._append_batch, max_batch=max_batch)

    async def append(self, event: AuditEvent) -> append_module.Appended:
        """Append one event; raises one of `append.UNAVAILABLE` when the ledger cannot take it."""
        return await self._group.append(event)

    async def _append_batch(self, events: Sequence[AuditEvent]) -> list[append_module.Appended]:
        async with self._connecting:
            if self._pool is None:
                self._pool = await asyncpg.create_pool(
                    self._dsn, min_size=1, max_size=2, timeout=5.0,
                    command_timeout=self._command_timeout)
            pool = self._pool
        try:
            return await append_module.append_batch(pool, events)
        except append_module.UNAVAILABLE:
            # Reconnect on the next batch rather than retry on a connection that failed.
            if self._pool is pool:
                self._pool = None
                pool.terminate()
            raise

    async def close(self) -> None:
        await self._group.close()
        if self._pool is not None:
            pool, self._pool = self._pool, None
            await pool.close()
