"""The webhook's Prometheus metrics, served at `/metrics` on its port (beside /healthz).

- `tenantry_webhook_reviews_total{webhook,operation,verdict}` and
  `tenantry_webhook_review_duration_seconds{webhook}`: every AdmissionReview answered
  (verdict `allowed`, `denied` or `error`); `webhook` is one of Tenantry's own webhook names.
- `tenantry_webhook_decisions_total{kind,operation,mode,verdict}` and
  `tenantry_webhook_violations_total{rule}`: the hardening policy's decisions (mode `Enforce`,
  `Warn` or `Audit`) and the rule ids it found broken.
- `tenantry_webhook_ledger_record_duration_seconds` and
  `tenantry_webhook_ledger_record_failures_total`: the record-before-admit path.
- `tenantry_webhook_certificate_expiry_timestamp_seconds`: when the serving certificate in
  use expires (alert well before it).

Labels are bounded: kinds are the resources the webhook's rules select, rule ids are the
hardening rules', and no tenant, namespace, user or object name is ever a label.
"""

from __future__ import annotations

import prometheus_client
from aiohttp import web

from tenantry.webhook.records import AdmissionRecord

REGISTRY = prometheus_client.CollectorRegistry()
prometheus_client.ProcessCollector(registry=REGISTRY)
prometheus_client.PlatformCollector(registry=REGISTRY)

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)

REVIEWS = prometheus_client.Counter(
    "tenantry_webhook_reviews", "AdmissionReviews answered, by webhook, operation and verdict.",
    ["webhook", "operation", "verdict"], registry=REGISTRY)
REVIEW_DURATION = prometheus_client.Histogram(
    "tenantry_webhook_review_duration_seconds", "Time to answer an AdmissionReview.",
    ["webhook"], buckets=LATENCY_BUCKETS, registry=REGISTRY)
DECISIONS = prometheus_client.Counter(
    "tenantry_webhook_decisions", "Hardening decisions, by kind, operation, tenant mode and "
    "verdict.", ["kind", "operation", "mode", "verdict"], registry=REGISTRY)
VIOLATIONS = prometheus_client.Counter(
    "tenantry_webhook_violations", "Hardening rules found broken, by rule id (whatever the "
    "mode did with them).", ["rule"], registry=REGISTRY)
LEDGER_RECORD_DURATION = prometheus_client.Histogram(
    "tenantry_webhook_ledger_record_duration_seconds",
    "Time to commit an admitted change's ledger entry before admitting it.",
    buckets=LATENCY_BUCKETS, registry=REGISTRY)
LEDGER_RECORD_FAILURES = prometheus_client.Counter(
    "tenantry_webhook_ledger_record_failures",
    "Changes whose ledger entry could not be written (refused, or admitted unrecorded with "
    "--ledger-failure allow).", registry=REGISTRY)
CERTIFICATE_EXPIRY = prometheus_client.Gauge(
    "tenantry_webhook_certificate_expiry_timestamp_seconds",
    "Unix time at which the serving certificate in use expires.", registry=REGISTRY)

_OPERATIONS = frozenset({"CREATE", "UPDATE", "DELETE", "CONNECT"})


def operation(value: str) -> str:
    return value if value in _OPERATIONS else "other"


class MetricsSink:
    """A decision sink (`records.Recorder`) that counts decisions and violations."""

    def record(self, record: AdmissionRecord) -> None:
        if record.dry_run:
            return
        DECISIONS.labels(record.kind, operation(record.operation), record.mode or "none",
                         "allowed" if record.allowed else "denied").inc()
        for violation in record.violations:
            VIOLATIONS.labels(violation.rule_id).inc()


async def serve_metrics(_: web.Request) -> web.Response:
    body = prometheus_client.generate_latest(REGISTRY)
    return web.Response(body=body, headers={"Content-Type": prometheus_client.CONTENT_TYPE_LATEST})
