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

kopf's own Events ("Handler ... succeeded") are off (`settings.posting.enabled`): they had the
same misplaced reference, and said nothing the handlers' Events do not. What they did say that
matters, a handler failing unexpectedly, `reported` posts instead: a `ReconcileError` Warning
with the exception's type (never its message), once per object and message within
`FAILURE_REPEAT` (kopf retries every few seconds; a retry storm must not become an Event
storm). A `kopf.TemporaryError` is not reported: handlers raise it only after posting Events
and writing status conditions that say why.
"""

from __future__ import annotations

import asyncio
import datetime
import functools
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any, ParamSpec, TypeVar

import kopf

from tenantry import kubeapi
from tenantry.kubeapi import KubeApi

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


# -- unexpected handler failures -------------------------------------------------------------------

RECONCILE_ERROR = "ReconcileError"
FAILURE_REPEAT = 300.0  # seconds before the same failure of the same object is posted again
_failures_posted: dict[tuple[str, str], float] = {}

P = ParamSpec("P")
R = TypeVar("R")


def failure(handler: str, error: BaseException) -> Posted:
    """The Warning for a handler that raised `error` (pure): the exception's type and, for a
    refusal of the Kubernetes API, its HTTP status and reason; never the exception's message.
    Tenants read the Events of their namespaces, and a message can quote any value (a pydantic
    `input_value`, a response body); redaction by pattern would let raw values through. The
    operator's log has the whole story (its exception line is redacted there)."""
    then = "not retried" if isinstance(error, kopf.PermanentError) else "retrying"
    detail = type(error).__name__
    if isinstance(error, kubeapi.ApiError):
        detail += f" {error.status} {error.reason}"
    return warning(RECONCILE_ERROR, f"{handler} failed ({then}): {detail}; the operator's "
                                    "log has the details")


def should_post(key: tuple[str, str], now: float) -> bool:
    """Whether this (object, message) was not posted within `FAILURE_REPEAT`; remembers it."""
    last = _failures_posted.get(key)
    if last is not None and now - last < FAILURE_REPEAT:
        return False
    if len(_failures_posted) > 10_000:  # bounded: forget the oldest half
        for stale in sorted(_failures_posted, key=_failures_posted.__getitem__)[:5_000]:
            del _failures_posted[stale]
    _failures_posted[key] = now
    return True


def reported(handler: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R]]:
    """Decorate a kopf handler (below kopf's decorators): an unexpected exception becomes a
    `ReconcileError` Warning on the object, where `kubectl describe` shows it, then propagates
    to kopf unchanged."""
    @functools.wraps(handler)
    async def handled(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return await handler(*args, **kwargs)
        except kopf.TemporaryError:
            raise
        except Exception as error:
            body, memo = kwargs.get("body"), kwargs.get("memo")
            api = getattr(memo, "api", None) if memo is not None else None
            if isinstance(body, Mapping) and api is not None:
                posted = failure(handler.__name__, error)
                uid = str((body.get("metadata") or {}).get("uid") or "")
                if should_post((uid, posted[2]), time.monotonic()):
                    await post(api, body, [posted])
            raise

    return handled
