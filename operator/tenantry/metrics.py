"""The operator's Prometheus metrics, served at `/metrics` on its health port.

Names follow Prometheus' conventions: a `tenantry_` prefix, base units (`_seconds`), `_total`
on counters, histograms for durations. Labels are bounded and never carry a secret, a token or
anything a tenant chooses (names of tenants, users or objects are not labels): `kind` is one of
Tenantry's three kinds (or, for children, one of the kinds a Tenant is made of), `result` one of
`succeeded`, `retrying`, `failed`, `target` one of a RotationPolicy's four targets.

- `reconciliation(kind)` wraps a kopf handler: counts it by result and times it;
- `DRIFT_CORRECTIONS`, `LEADER`, `LEADER_TRANSITIONS` are set where those happen;
- `watch_ledger(recorder)` makes the audit spool's depth, oldest entry age, dead letters and the
  flusher's counts readable at scrape time (read from the spool then, never cached).

One registry per process (`REGISTRY`, with the process and platform collectors), so tests and
other components can have their own without colliding with this one.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import ParamSpec, TypeVar

import kopf
import prometheus_client
from prometheus_client import core as prometheus_core
from prometheus_client import registry as prometheus_registry

from tenantry.ledger import spool as ledger_spool
from tenantry.ledger.recorder import Recorder

REGISTRY = prometheus_client.CollectorRegistry()
prometheus_client.ProcessCollector(registry=REGISTRY)
prometheus_client.PlatformCollector(registry=REGISTRY)

SUCCEEDED, RETRYING, FAILED = "succeeded", "retrying", "failed"
# Reconciliations take milliseconds to tens of seconds (a rotation batch, a slow apiserver).
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)

RECONCILIATIONS = prometheus_client.Counter(
    "tenantry_operator_reconciliations", "Handler runs of the operator, by kind and result "
    "(retrying: kopf will run it again; failed: it will not until the object changes).",
    ["kind", "result"], registry=REGISTRY)
RECONCILE_DURATION = prometheus_client.Histogram(
    "tenantry_operator_reconcile_duration_seconds", "How long one handler run took, by kind.",
    ["kind"], buckets=DURATION_BUCKETS, registry=REGISTRY)
DRIFT_CORRECTIONS = prometheus_client.Counter(
    "tenantry_operator_drift_corrections",
    "Tenants re-applied because one of their children was changed or deleted by someone else.",
    registry=REGISTRY)
CHILDREN_APPLIED = prometheus_client.Counter(
    "tenantry_operator_children_applied",
    "Objects a Tenant's reconciliation server-side applied, by kind (Namespace, "
    "NetworkPolicy, RoleBinding, ...); an apply skipped because nothing would change is "
    "not counted.", ["kind"], registry=REGISTRY)
CHILDREN_PRUNED = prometheus_client.Counter(
    "tenantry_operator_children_pruned",
    "Objects a Tenant's reconciliation deleted because its spec no longer asks for them, "
    "by kind.", ["kind"], registry=REGISTRY)
LEADER = prometheus_client.Gauge(
    "tenantry_operator_leader",
    "1 while this replica acts (it holds the Lease, or runs without leader election).",
    registry=REGISTRY)
LEADER_TRANSITIONS = prometheus_client.Counter(
    "tenantry_operator_leader_transitions",
    "Times this replica became the acting one or stopped being it.", registry=REGISTRY)

P = ParamSpec("P")
R = TypeVar("R")


def reconciliation(kind: str) -> Callable[[Callable[P, Awaitable[R]]],
                                          Callable[P, Awaitable[R]]]:
    """Decorate an async kopf handler (below kopf's decorators): count and time each run."""
    def decorate(handler: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R]]:
        @functools.wraps(handler)
        async def counted(*args: P.args, **kwargs: P.kwargs) -> R:
            started = time.perf_counter()
            result = FAILED
            try:
                value = await handler(*args, **kwargs)
                result = SUCCEEDED
                return value
            except kopf.PermanentError:
                raise
            except Exception:
                result = RETRYING  # kopf retries TemporaryError and any other exception
                raise
            finally:
                RECONCILIATIONS.labels(kind=kind, result=result).inc()
                RECONCILE_DURATION.labels(kind=kind).observe(time.perf_counter() - started)

        return counted

    return decorate


_acting = False


def set_leader(acting: bool) -> None:
    """This replica starts or stops acting."""
    global _acting
    if acting != _acting:
        LEADER_TRANSITIONS.inc()
    _acting = acting
    LEADER.set(1 if acting else 0)


class LedgerCollector(prometheus_registry.Collector):
    """The audit recorder's spool and flusher, read at scrape time."""

    def __init__(self, recorder: Recorder) -> None:
        self.recorder = recorder

    def collect(self) -> Iterator[prometheus_core.Metric]:
        spool = self.recorder.spool
        mtimes = [path.stat().st_mtime
                  for path in spool.directory.glob(f"*{ledger_spool._SUFFIX}")]
        yield prometheus_core.GaugeMetricFamily(
            "tenantry_ledger_spool_entries",
            "Audit events waiting in the spool for the ledger.", value=len(mtimes))
        yield prometheus_core.GaugeMetricFamily(
            "tenantry_ledger_spool_oldest_entry_age_seconds",
            "Age of the oldest audit event not yet in the ledger (0 when none waits).",
            value=max(0.0, time.time() - min(mtimes)) if mtimes else 0.0)
        yield prometheus_core.GaugeMetricFamily(
            "tenantry_ledger_spool_dead_letters",
            "Audit events the ledger refused, set aside for a person to look at.",
            value=spool.dead_letter_count())
        yield prometheus_core.CounterMetricFamily(
            "tenantry_ledger_flushed_events", "Audit events appended to the ledger.",
            value=self.recorder.flushed)
        yield prometheus_core.CounterMetricFamily(
            "tenantry_ledger_flush_errors",
            "Unexpected errors the ledger flusher survived (each logged).",
            value=self.recorder.flush_errors)

    def describe(self) -> Iterator[prometheus_core.Metric]:
        return iter(())  # collected at scrape time only


_ledger_collector: LedgerCollector | None = None


def watch_ledger(recorder: Recorder) -> None:
    """Expose `recorder`'s spool and flusher (replacing a recorder watched before)."""
    global _ledger_collector
    if _ledger_collector is not None:
        REGISTRY.unregister(_ledger_collector)
    _ledger_collector = LedgerCollector(recorder)
    REGISTRY.register(_ledger_collector)


# -- rotation and keys -------------------------------------------------------------------------

ROTATION_STEPS = prometheus_client.Counter(
    "tenantry_rotation_steps", "Rotation steps taken, by what they did (the ledger action: "
    "rotation.started, .key-added, .promoted, .batch, .completed, .retired, ...).",
    ["action"], registry=REGISTRY)
ROTATION_WARNINGS = prometheus_client.Counter(
    "tenantry_rotation_warnings", "Warning Events of rotations, by reason (failed "
    "Credentials, keyring writes refused, invalid policies).", ["reason"], registry=REGISTRY)
ROTATION_STEP_DURATION = prometheus_client.Histogram(
    "tenantry_rotation_step_duration_seconds",
    "How long one rotation step took (decide, record, write status, then its keyring write or "
    "its batch of re-encryptions), by target.", ["target"], buckets=DURATION_BUCKETS,
    registry=REGISTRY)
KEY_VERSION_CREDENTIALS = prometheus_client.Gauge(
    "tenantry_key_version_credentials", "Credentials encrypted under each master key version, "
    "as the MasterKey policy last counted them.", ["version"], registry=REGISTRY)

_rotations: dict[str, tuple[str, float]] = {}
"""policy (namespace/name) -> (target, when its rotation in progress started)."""


def rotation_progress(policy: str, target: str | None, started: float | None) -> None:
    """Record that `policy` has a rotation of `target` in progress since `started` (Unix
    time), or none (`started` None)."""
    if target is None or started is None:
        _rotations.pop(policy, None)
    else:
        _rotations[policy] = (target, started)


class RotationCollector(prometheus_registry.Collector):
    """How long the oldest rotation of each target has been in progress, at scrape time."""

    def collect(self) -> Iterator[prometheus_core.Metric]:
        family = prometheus_core.GaugeMetricFamily(
            "tenantry_rotation_in_progress_seconds",
            "Seconds the oldest rotation in progress of each target has been running (0: "
            "none); a rotation waiting for a backup confirmation counts.", labels=["target"])
        now = time.time()
        oldest: dict[str, float] = {}
        for target, started in _rotations.values():
            oldest[target] = max(oldest.get(target, 0.0), now - started)
        for target in ("MasterKey", "Credentials", "ApiSigningKeys", "WebhookCertificates"):
            family.add_metric([target], oldest.get(target, 0.0))
        yield family

    def describe(self) -> Iterator[prometheus_core.Metric]:
        return iter(())


REGISTRY.register(RotationCollector())


_credentials: dict[str, tuple[str, str]] = {}
"""Credential UID -> (Ready status, reason) as this replica last reconciled it."""


def credential_state(uid: str, ready: bool | None, reason: str = "") -> None:
    """Record a Credential's Ready condition (None: it is gone)."""
    if ready is None:
        _credentials.pop(uid, None)
    else:
        _credentials[uid] = ("True" if ready else "False", reason)


class CredentialCollector(prometheus_registry.Collector):
    """Credentials by their Ready condition and reason, at scrape time."""

    def collect(self) -> Iterator[prometheus_core.Metric]:
        family = prometheus_core.GaugeMetricFamily(
            "tenantry_credentials", "Credentials this replica reconciled, by Ready status and "
            "reason (Encrypted, TamperDetected, KeyringUnavailable, ...).",
            labels=["ready", "reason"])
        counts: dict[tuple[str, str], int] = {}
        for state in _credentials.values():
            counts[state] = counts.get(state, 0) + 1
        for (ready, reason), count in sorted(counts.items()):
            family.add_metric([ready, reason], count)
        yield family

    def describe(self) -> Iterator[prometheus_core.Metric]:
        return iter(())


REGISTRY.register(CredentialCollector())


def exposition(registry: prometheus_registry.CollectorRegistry = REGISTRY) -> tuple[bytes, str]:
    """The body and Content-Type of a `/metrics` answer (the Prometheus text format)."""
    return prometheus_client.generate_latest(registry), prometheus_client.CONTENT_TYPE_LATEST
