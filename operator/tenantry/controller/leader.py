"""Leader election on a coordination.k8s.io Lease, so several operator replicas never fight.

Only the replica holding the Lease runs kopf's handlers; the others wait on standby (answering
liveness probes) and take over once the holder stops renewing for `lease_duration` seconds, or
at once when the holder releases the Lease on a clean shutdown. A leader that fails to renew
within `renew_deadline` stops handling at once and the process exits, so it can never act on a
stale belief that it still leads: the same contract as client-go's leader election.

`next_step` is the pure decision; `LeaderElector` does the API calls. Writes carry the Lease's
resourceVersion, so two candidates racing for a free Lease cannot both win.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import enum
import logging
from typing import Any

from tenantry.kubeapi import ApiError, KubeApi

logger = logging.getLogger(__name__)

LEASE_API = "coordination.k8s.io/v1"


class Step(enum.Enum):
    ACQUIRE = "acquire"   # the Lease is free or expired: take it
    RENEW = "renew"       # we hold it: renew it
    WAIT = "wait"         # someone else holds a live Lease


@dataclasses.dataclass(frozen=True)
class Timing:
    """client-go's defaults: 15 s lease, 10 s renew deadline, 2 s retry period."""

    lease_duration: float = 15.0
    renew_deadline: float = 10.0
    retry_period: float = 2.0

    @classmethod
    def for_lease(cls, seconds: float) -> Timing:
        """Deadline and retry scaled to a lease duration, in client-go's proportions."""
        return cls(lease_duration=seconds, renew_deadline=seconds * 2 / 3,
                   retry_period=max(seconds / 7.5, 0.2))


def _parse_time(value: str | None) -> datetime.datetime | None:
    if not value:
        return None
    return datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))


def format_time(value: datetime.datetime) -> str:
    """Kubernetes MicroTime: RFC 3339 with microseconds, UTC."""
    return value.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def next_step(spec: dict[str, Any] | None, identity: str, now: datetime.datetime) -> Step:
    """What a candidate should do with the Lease as it stands (pure)."""
    spec = spec or {}
    holder = spec.get("holderIdentity")
    if holder == identity:
        return Step.RENEW
    if not holder:
        return Step.ACQUIRE
    renewed = _parse_time(spec.get("renewTime")) or _parse_time(spec.get("acquireTime"))
    duration = float(spec.get("leaseDurationSeconds") or 0)
    if renewed is None or now >= renewed + datetime.timedelta(seconds=duration):
        return Step.ACQUIRE
    return Step.WAIT


def claimed(spec: dict[str, Any] | None, identity: str, now: datetime.datetime,
            timing: Timing) -> dict[str, Any]:
    """The Lease spec after `identity` acquires or renews it (pure)."""
    spec = dict(spec or {})
    stamp = format_time(now)
    if spec.get("holderIdentity") != identity:
        spec["acquireTime"] = stamp
        spec["leaseTransitions"] = int(spec.get("leaseTransitions") or 0) + (
            1 if spec.get("holderIdentity") else 0)
    spec.update(holderIdentity=identity, renewTime=stamp,
                leaseDurationSeconds=int(timing.lease_duration))
    return spec


class LeaderElector:
    """Acquire, keep and release one Lease for this process."""

    def __init__(self, api: KubeApi, *, name: str, namespace: str, identity: str,
                 timing: Timing | None = None) -> None:
        self.api, self.name, self.namespace, self.identity = api, name, namespace, identity
        self.timing = timing or Timing()
        self.lost = asyncio.Event()

    async def _try(self) -> bool:
        """One attempt to acquire or renew; True when we hold the Lease afterwards."""
        now = datetime.datetime.now(datetime.UTC)
        lease = await self.api.get(LEASE_API, "Lease", self.name, self.namespace)
        if lease is None:
            try:
                await self.api.create({
                    "apiVersion": LEASE_API, "kind": "Lease",
                    "metadata": {"name": self.name, "namespace": self.namespace},
                    "spec": claimed(None, self.identity, now, self.timing)})
            except ApiError as error:
                if error.status == 409:  # another candidate created it first
                    return False
                raise
            return True
        if next_step(lease.get("spec"), self.identity, now) is Step.WAIT:
            return False
        try:
            await self.api.merge_patch(LEASE_API, "Lease", self.name, {
                "metadata": {"resourceVersion": lease["metadata"]["resourceVersion"]},
                "spec": claimed(lease.get("spec"), self.identity, now, self.timing),
            }, namespace=self.namespace)
        except ApiError as error:
            if error.status == 409:  # someone wrote the Lease since we read it
                return False
            raise
        return True

    async def acquire(self) -> None:
        """Block until this process holds the Lease."""
        announced = False
        while True:
            try:
                if await self._try():
                    logger.info("leader election: %s now leads (Lease %s/%s)", self.identity,
                                self.namespace, self.name)
                    return
            except ApiError as error:
                logger.warning("leader election: %s", error)
            if not announced:
                logger.info("leader election: standing by; Lease %s/%s is held by another "
                            "replica", self.namespace, self.name)
                announced = True
            await asyncio.sleep(self.timing.retry_period)

    async def keep(self, stop: asyncio.Event) -> None:
        """Renew until `stop` is set; on failing to renew within the deadline, set `lost` and
        `stop` (the operator must stop acting at once)."""
        loop = asyncio.get_running_loop()
        last_renewed = loop.time()
        while not stop.is_set():
            try:
                await asyncio.wait_for(stop.wait(), self.timing.retry_period)
                return
            except TimeoutError:
                pass
            try:
                if await asyncio.wait_for(self._try(), self.timing.retry_period):
                    last_renewed = loop.time()
                    continue
                reason = "another replica holds the Lease"
            except (ApiError, OSError, TimeoutError) as error:
                reason = f"renewal failed: {type(error).__name__}"
            if reason.startswith("another") or (
                    loop.time() - last_renewed > self.timing.renew_deadline):
                logger.error("leader election: leadership lost (%s); stopping", reason)
                self.lost.set()
                stop.set()
                return

    async def release(self) -> None:
        """Give the Lease up on a clean shutdown, so a standby takes over without waiting."""
        try:
            lease = await self.api.get(LEASE_API, "Lease", self.name, self.namespace)
            if lease is not None and (lease.get("spec") or {}).get("holderIdentity") == \
                    self.identity:
                await self.api.merge_patch(LEASE_API, "Lease", self.name, {
                    "metadata": {"resourceVersion": lease["metadata"]["resourceVersion"]},
                    "spec": {"holderIdentity": None}}, namespace=self.namespace)
        except ApiError as error:
            logger.warning("leader election: could not release the Lease: %s", error)
