"""The API's Prometheus metrics, served on a port of their own (`--metrics-listen`).

Not on the API's public port: request and login counters say something about who is being
attacked, which is for the platform's Prometheus, not for anyone who can reach the API. The
NetworkPolicy opens the metrics port to the monitoring namespace only (manifests/api).

Labels are bounded: `route` is the route *template* (`/v1/tenants/{tenant}/api-keys`, never
the raw path, so tenant names and ids never become label values; `unmatched` for anything no
route matched), `method`, `status` (the HTTP code), and small fixed sets elsewhere. No user
name, address, token or key is ever a label.
"""

from __future__ import annotations

import time
from collections.abc import MutableMapping
from typing import Any

import prometheus_client

REGISTRY = prometheus_client.CollectorRegistry()
prometheus_client.ProcessCollector(registry=REGISTRY)
prometheus_client.PlatformCollector(registry=REGISTRY)

METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)

REQUESTS = prometheus_client.Counter(
    "tenantry_api_requests", "HTTP requests, by route template, method and status.",
    ["route", "method", "status"], registry=REGISTRY)
REQUEST_DURATION = prometheus_client.Histogram(
    "tenantry_api_request_duration_seconds", "Time to answer a request, by route template.",
    ["route"], buckets=LATENCY_BUCKETS, registry=REGISTRY)
LOGINS = prometheus_client.Counter(
    "tenantry_api_logins", "Sign-in attempts, by method (password, oidc) and result "
    "(succeeded, failed, throttled).", ["method", "result"], registry=REGISTRY)
TOKENS_ISSUED = prometheus_client.Counter(
    "tenantry_api_tokens_issued", "Access tokens issued, by grant (login, refresh).",
    ["grant"], registry=REGISTRY)
REFRESH_REUSE = prometheus_client.Counter(
    "tenantry_api_refresh_reuse_detections",
    "Refresh tokens presented again after use (the session was revoked).", registry=REGISTRY)
REVOCATIONS = prometheus_client.Counter(
    "tenantry_api_revocations", "Revocations, by what (session, token, api_key).", ["kind"],
    registry=REGISTRY)
RATE_LIMITED = prometheus_client.Counter(
    "tenantry_api_rate_limited", "Requests refused by a rate limit, by bucket kind (auth, "
    "tenant, exchange).", ["bucket"], registry=REGISTRY)
EXCHANGES = prometheus_client.Counter(
    "tenantry_api_credential_exchanges", "Credential exchanges, by result (allowed, refused, "
    "error).", ["result"], registry=REGISTRY)
STREAM_SUBSCRIBERS = prometheus_client.Gauge(
    "tenantry_api_stream_subscribers", "Open WebSocket subscriptions to the audit stream.",
    registry=REGISTRY)


class Instrumented:
    """ASGI wrapper counting and timing every HTTP request by its route template."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: MutableMapping[str, Any], receive: Any, send: Any) -> None:
        if scope.get("type") != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = {"code": 500}

        async def sending(message: MutableMapping[str, Any]) -> None:
            if message.get("type") == "http.response.start":
                status["code"] = int(message.get("status", 500))
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            route = scope.get("route")
            template = str(getattr(route, "path", "")) or "unmatched"
            method = str(scope.get("method", ""))
            REQUESTS.labels(template, method if method in METHODS else "other",
                            str(status["code"])).inc()
            REQUEST_DURATION.labels(template).observe(time.perf_counter() - started)


def serve(host: str, port: int) -> None:
    """Serve `/metrics` of `REGISTRY` on (host, port) from a daemon thread."""
    prometheus_client.start_http_server(port, addr=host, registry=REGISTRY)
