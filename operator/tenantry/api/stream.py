"""Live audit entries for WebSocket subscribers: one LISTEN per API process, no polling.

The ledger notifies channel `tenantry_ledger` with `"<chain> <seq>"` when a statement appends
to a chain that somebody armed with `ledger.watch(chain)` (`ledger.schema`, versions 3 and 5:
the move that finds the chain armed notifies and disarms it, so unfollowed chains send
nothing). Each subscriber arms its chain before every read (`routes.stream`). `Hub` keeps one
dedicated connection that LISTENs on it (re-connecting with backoff if it drops) and wakes
exactly the subscribers of that chain; each subscriber then arms the chain and reads its
entries after the last one it sent, from the ledger pool, and sends them in order. A subscriber
that falls behind only reads more rows at its next wake-up, never misses one: what it sends is
decided by sequence numbers, not by the notifications, which only say "look again". A reconnect
wakes everyone once, so entries appended while no LISTEN was open are not missed either.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict
from typing import Any

import asyncpg

log = logging.getLogger("tenantry.api.stream")

CHANNEL = "tenantry_ledger"
BACKOFF = (0.5, 1.0, 2.0, 5.0, 10.0)


class Subscription:
    """One subscriber's wake-up signal for one chain."""

    def __init__(self, chain: str) -> None:
        self.chain = chain
        self.wake = asyncio.Event()


class Hub:
    """The process's one LISTEN connection and who is waiting for which chain."""

    def __init__(self, dsn: str) -> None:
        self._dsn = dsn
        self._subscribers: dict[str, set[Subscription]] = defaultdict(set)
        self._task: asyncio.Task[None] | None = None
        self.listening = asyncio.Event()

    def start(self) -> None:
        self._task = asyncio.create_task(self._listen_forever(), name="ledger-listen")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def subscribe(self, chain: str) -> Subscription:
        subscription = Subscription(chain)
        self._subscribers[chain].add(subscription)
        subscription.wake.set()  # read what is already there first
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        chain = self._subscribers.get(subscription.chain)
        if chain is not None:
            chain.discard(subscription)
            if not chain:
                del self._subscribers[subscription.chain]

    @property
    def subscribers(self) -> int:
        return sum(len(s) for s in self._subscribers.values())

    def notify(self, payload: str) -> None:
        chain, _, _ = payload.partition(" ")
        for subscription in self._subscribers.get(chain, ()):
            subscription.wake.set()

    def _wake_all(self) -> None:
        for subscriptions in self._subscribers.values():
            for subscription in subscriptions:
                subscription.wake.set()

    async def _listen_forever(self) -> None:
        failures = 0
        while True:
            conn: Any = None
            try:
                conn = await asyncpg.connect(self._dsn, timeout=10,
                                             server_settings={"application_name":
                                                              "tenantry-api-ledger-listen"})
                await conn.add_listener(CHANNEL, lambda _c, _pid, _ch, payload:
                                        self.notify(payload))
                self.listening.set()
                self._wake_all()
                failures = 0
                while not conn.is_closed():
                    await asyncio.sleep(5)
                    await conn.execute("SELECT 1")  # notices a dead connection
            except asyncio.CancelledError:
                raise
            except Exception as error:  # an outage: keep trying
                delay = BACKOFF[min(failures, len(BACKOFF) - 1)]
                failures += 1
                log.warning("ledger LISTEN connection lost (%s); retrying in %.1fs",
                            type(error).__name__, delay)
                await asyncio.sleep(delay)
            finally:
                self.listening.clear()
                if conn is not None:
                    with contextlib.suppress(Exception):
                        await conn.close(timeout=2)
