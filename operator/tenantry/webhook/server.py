"""The aiohttp application: one POST endpoint per route, plus health, readiness and metrics.

Each endpoint first checks the peer (`clientauth`): only the apiserver, proven by its client
certificate, may send reviews; anyone else gets HTTP 401 or 403 before the body is read, so a
forged review never reaches a handler (nor the audit ledger). Health and readiness need no
certificate: kubelet probes present none. Then each endpoint parses the AdmissionReview (a
malformed one is answered HTTP 400 with the reason, as a metav1.Status), runs the route's
handler and wraps its verdict. A handler that raises is a
bug, but never a 500 and never an admission: the request is refused with an internal-error
message (fail closed) and the traceback goes to the log.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from aiohttp import web

from tenantry import logs
from tenantry.webhook import clientauth, metrics, review
from tenantry.webhook.routes import WebhookRoute

logger = logging.getLogger(__name__)

# An AdmissionReview carries the object and, for updates, the old object; etcd caps objects at
# 1.5 MiB, so two of them plus the envelope fit with room to spare.
MAX_BODY = 8 * 1024 * 1024
# Slower than this and the apiserver (timeoutSeconds <= 5) is getting close to giving up.
SLOW_REVIEW = 1.0


def peer_certificate(request: web.Request) -> dict[str, Any] | None:
    """The peer's verified client certificate (`getpeercert()`), or None."""
    transport = request.transport
    peercert = transport.get_extra_info("peercert") if transport is not None else None
    return peercert if isinstance(peercert, dict) else None


def endpoint(route: WebhookRoute, clients: clientauth.ClientPolicy,
             ) -> Callable[[web.Request], Awaitable[web.Response]]:
    """The aiohttp handler serving `route` to the peers `clients` allows."""
    # The route's metric children, looked up at their first review rather than at each one
    # (`labels` takes a lock and builds the key every time). `parse_review` bounds the
    # operation to four values, so there are at most twelve.
    children: dict[tuple[str, str], tuple[Any, Any]] = {}

    async def serve(request: web.Request) -> web.Response:
        started = time.perf_counter()
        refusal = clientauth.check_peer(peer_certificate(request), clients)
        if refusal is not None:
            logger.warning("%s: refused a review from %s (HTTP %d): %s", route.path,
                           request.remote, refusal.status, refusal.reason)
            return web.json_response(refusal.body(), status=refusal.status)
        body = await request.read()
        try:
            admission = review.parse_review(body, request.headers.get("Content-Type"))
        except review.MalformedReview as error:
            logger.warning("%s: malformed AdmissionReview from %s: %s", route.path,
                           request.remote, error)
            return web.json_response(review.bad_request(str(error)), status=400)
        # The review's uid: the apiserver's audit log, this log and the ledger entry (its
        # request_id) name the same request.
        logs.bind(request_id=admission.uid or None)
        outcome = "error"
        try:
            verdict = await route.handler(admission)
            outcome = "allowed" if verdict.allowed else "denied"
        except Exception:
            logger.exception("%s: handler failed for %s %s %s/%s; refusing", route.name,
                             admission.operation, admission.kind, admission.namespace,
                             admission.display_name)
            verdict = review.Verdict.deny(
                f"{route.name}: internal error while judging this request; refusing "
                "(fail closed). Try again; if it persists, see the webhook's log", code=500)
        elapsed = time.perf_counter() - started
        child = children.get((admission.operation, outcome))
        if child is None:
            child = children[(admission.operation, outcome)] = (
                metrics.REVIEWS.labels(route.name, metrics.operation(admission.operation),
                                       outcome),
                metrics.REVIEW_DURATION.labels(route.name))
        child[0].inc()
        child[1].observe(elapsed)
        if elapsed > SLOW_REVIEW:
            logger.warning("%s: slow review (%.2fs) for %s %s/%s", route.name, elapsed,
                           admission.kind, admission.namespace, admission.display_name)
        return web.Response(body=review.encode_review(review.review_response(admission.uid,
                                                                             verdict)),
                            content_type="application/json")

    return serve


def make_app(routes: Sequence[WebhookRoute], *, ready: Callable[[], bool],
             clients: clientauth.ClientPolicy) -> web.Application:
    """The application serving `routes` to the peers `clients` allows; `ready()` answers
    /readyz."""
    paths = [route.path for route in routes]
    if len(set(paths)) != len(paths):
        raise ValueError(f"route paths must be unique: {paths}")
    app = web.Application(client_max_size=MAX_BODY)
    for route in routes:
        app.router.add_post(route.path, endpoint(route, clients))

    async def healthz(_: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def readyz(_: web.Request) -> web.Response:
        if ready():
            return web.Response(text="ok")
        return web.Response(text="not ready: caches not synced", status=503)

    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics.serve_metrics)
    return app
