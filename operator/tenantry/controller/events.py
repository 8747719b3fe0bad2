"""Kubernetes Events on Tenantry's objects, where `kubectl describe` finds them.

Why not `kopf.event`: kopf writes a namespace into every Event's `involvedObject`, "default" for
a cluster-scoped object, while `kubectl describe tenant NAME` looks for Events whose
`involvedObject.namespace` is empty (a cluster-scoped object has none), so it listed
`Events: <none>` for every Tenant. Here the reference is exactly the object's own (no namespace
for a Tenant) and the Event itself lives in the object's namespace, or in "default" for a
cluster-scoped object, as client-go's recorder does for Nodes.

Every handler posts through `post`: it builds the Events (`event_for`, pure) and creates them
in the background through the operator's `KubeApi`, so a reconciliation never waits for them.
Events are best effort, as in Kubernetes: one the API refuses is logged and dropped, never
failing the reconciliation (status and the audit ledger are the record). Messages are the
handlers' own, which never hold secret values; they are cut to the size Kubernetes tooling
expects.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import time
from collections.abc import Iterable, Mapping
from typing import Any

from tenantry.controller import kubeapi
from tenantry.controller.kubeapi import KubeApi

logger = logging.getLogger(__name__)

# Where Events about cluster-scoped objects go (client-go's recorder uses the same).
CLUSTER_SCOPED_EVENT_NAMESPACE = "default"
SOURCE_COMPONENT = "tenantry-operator"  # the "From" column of `kubectl describe`
MAX_MESSAGE = 1024
MAX_NAME_PREFIX = 200  # Event names are at most 253 characters

NORMAL, WARNING = "Normal", "Warning"

# (type, reason, message), as the pure reconcilers return them.
Posted = tuple[str, str, str]


def normal(reason: str, message: str) -> Posted:
    return (NORMAL, reason, message)


def warning(reason: str, message: str) -> Posted:
    return (WARNING, reason, message)


def involved_object(obj: Mapping[str, Any]) -> dict[str, str]:
    """The reference `kubectl describe` selects by: no namespace for a cluster-scoped object."""
    meta = obj["metadata"]
    reference = {"apiVersion": str(obj["apiVersion"]), "kind": str(obj["kind"]),
                 "name": str(meta["name"])}
    if meta.get("uid"):
        reference["uid"] = str(meta["uid"])
    if meta.get("namespace"):
        reference["namespace"] = str(meta["namespace"])
    return reference


def event_for(obj: Mapping[str, Any], posted: Posted, *, now: datetime.datetime,
              unique: int) -> dict[str, Any]:
    """A core/v1 Event about `obj` (pure; `unique` makes its name distinct, as client-go's
    `<name>.<nanoseconds in hex>`)."""
    type_, reason, message = posted
    reference = involved_object(obj)
    timestamp = now.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {
        "apiVersion": "v1", "kind": "Event",
        "metadata": {
            "name": f"{reference['name'][:MAX_NAME_PREFIX]}.{unique:x}",
            "namespace": reference.get("namespace", CLUSTER_SCOPED_EVENT_NAMESPACE),
        },
        "involvedObject": reference,
        "type": type_, "reason": reason, "message": message[:MAX_MESSAGE],
        "source": {"component": SOURCE_COMPONENT},
        "firstTimestamp": timestamp, "lastTimestamp": timestamp, "count": 1,
    }


async def post(api: KubeApi, obj: Mapping[str, Any], posted: Iterable[Posted]) -> None:
    """Create the Events about `obj` in the background (as kopf did: a reconciliation never
    waits for its Events); a refused one is logged, without its message, and dropped."""
    now = datetime.datetime.now(datetime.UTC)
    base = time.time_ns()
    bodies = [event_for(obj, item, now=now, unique=base + offset)
              for offset, item in enumerate(posted)]
    if not bodies:
        return
    task = asyncio.create_task(_create(api, bodies), name="tenantry-events")
    _pending.add(task)
    task.add_done_callback(_pending.discard)


# Posting tasks still running, kept referenced until done (`drain` waits for them at shutdown).
_pending: set[asyncio.Task[None]] = set()


async def _create(api: KubeApi, bodies: list[dict[str, Any]]) -> None:
    results = await asyncio.gather(*(api.create(body) for body in bodies),
                                   return_exceptions=True)
    for body, result in zip(bodies, results, strict=True):
        if isinstance(result, Exception):
            reference = body["involvedObject"]
            why = (f"{result.status} {result.reason}" if isinstance(result, kubeapi.ApiError)
                   else type(result).__name__)
            logger.warning("could not post Event %s on %s %s: %s", body["reason"],
                           reference["kind"], reference["name"], why)
        elif isinstance(result, BaseException):
            raise result  # cancelled: the operator is stopping


DRAIN_TIMEOUT = 5.0


async def drain() -> None:
    """Wait (a bounded time) for the Events being posted, before the API client closes."""
    if _pending:
        await asyncio.wait(set(_pending), timeout=DRAIN_TIMEOUT)
