"""The ASGI application: FastAPI with the routes, the hardening middleware and a lifespan.

`create_app(settings, dsn)` returns the app; the lifespan opens the asyncpg pool (refusing to
start when the API's schema is not current), starts the watch of Tenants (`tenants`) and the
audit ledger's recorder (`audit`), runs housekeeping every few minutes, and on shutdown drains
the ledger spool and closes everything. OpenAPI 3.1 is served at `/openapi.json`; the
interactive docs pages are off (no debug endpoints by default, and the CSP allows no
scripts). Validation errors are answered 422 without echoing the input back (FastAPI's default
would repeat a password).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from tenantry import __version__
from tenantry.api import (
    audit,
    credential_cache,
    deps,
    metrics,
    middleware,
    passwords,
    signing,
    store,
    stream,
    tenants,
    tokenreview,
)
from tenantry.api.oauth import clients as oauth_clients
from tenantry.api.routes import (
    apikeys,
    auth,
    credentials,
    health,
    hooks,
    me,
    oidc,
    participants,
    rotations,
    tokens,
    wellknown,
)
from tenantry.api.routes import audit as audit_routes
from tenantry.api.routes import (
    stream as stream_routes,
)
from tenantry.crypto import errors as crypto_errors
from tenantry.crypto import keyring, reloading
from tenantry.kubeapi import KubeApi
from tenantry.ledger.recorder import Recorder
from tenantry.ledger.spool import Spool

log = logging.getLogger("tenantry.api")
HOUSEKEEPING_SECONDS = 300.0


async def _housekeeping(pool: Any) -> None:
    while True:
        await asyncio.sleep(HOUSEKEEPING_SECONDS)
        try:
            await store.purge_expired(pool)
            await store.purge_hook_deliveries(pool)
        except Exception as error:  # retried next round
            log.warning("housekeeping failed: %s", type(error).__name__)


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    errors = exc.errors() if isinstance(exc, RequestValidationError) else []
    detail = [{"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")}
              for e in errors]
    return JSONResponse({"detail": detail}, status_code=422)


def create_app(settings: deps.Settings, dsn: str) -> Any:
    """The API app (wrapped in `middleware.Hardening`) for `settings`, on database `dsn`."""

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with contextlib.AsyncExitStack() as stack:
            pool = await store.create_pool(dsn)
            stack.push_async_callback(pool.close)
            clients = oauth_clients.Clients(settings.oauth)
            stack.push_async_callback(clients.aclose)
            async with pool.acquire() as conn:
                await store.require_schema(conn)
            watch = None
            if settings.watch_tenants:
                watch = tenants.TenantWatch(await tenants.api_client(settings.kubeconfig))
                stack.push_async_callback(watch.close)
                watch.start()
            recorder = ledger_pool = hub = None
            if settings.ledger_dsn is not None:
                spool = Spool(settings.ledger_spool or Path("/var/lib/tenantry/api-spool"))
                recorder = Recorder(spool, settings.ledger_dsn, actor="tenantry-api",
                                    component=audit.COMPONENT)
                stack.push_async_callback(recorder.close)
                recorder.start()
                ledger_pool = await asyncpg.create_pool(
                    settings.ledger_dsn, min_size=0, max_size=4, timeout=10.0,
                    command_timeout=30.0,
                    server_settings={"application_name": "tenantry-api-ledger-reader"})
                stack.push_async_callback(ledger_pool.close)
                hub = stream.Hub(settings.ledger_dsn)
                stack.push_async_callback(hub.close)
                hub.start()
            else:
                log.warning("audit ledger disabled (--no-ledger): auth events are NOT recorded")
            kube_api = cache = None
            if watch is not None:
                kube_api = KubeApi(watch.api)
                cache = credential_cache.CredentialCache(watch.api, kube_api)
                stack.push_async_callback(cache.close)
                cache.start()
            reviewer = tokenreview.TokenReviewer(kube_api, enabled=settings.token_review_cache)
            keys = reloading.Reloading(
                settings.keyring, keyring.load, crypto_errors.KeyringError,
                "no keyring configured: start the API with --keyring FILE (the operator's)")
            app.state.services = deps.Services(
                settings=settings, pool=pool, passwords=passwords.Passwords(),
                hashing=asyncio.Semaphore(settings.password_workers), oidc=clients,
                tenants=watch, ledger=audit.AuthLedger(recorder), ledger_pool=ledger_pool,
                kube=watch.api if watch is not None else None, kube_api=kube_api,
                reviewer=reviewer, keys=keys, hub=hub, credentials=cache)
            # The signing keyring, re-read on change, and this replica's identity Lease.
            key_watch = signing.KeyWatch(
                app.state.services, settings.signing_keyring, kube_api=kube_api,
                namespace=settings.tenantry_namespace,
                replica=settings.replica or signing.replica_id())
            key_watch.start()
            stack.push_async_callback(key_watch.close)
            task = asyncio.create_task(_housekeeping(pool))
            log.info("tenantry api ready (issuer %s, key %s, replica %s)",
                     settings.policy.issuer, settings.keys.kid, key_watch.replica)
            try:
                yield
            finally:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    app = FastAPI(title="Tenantry API", version=__version__, lifespan=lifespan,
                  docs_url=None, redoc_url=None, openapi_url="/openapi.json",
                  responses=middleware.REFUSALS)
    app.add_exception_handler(RequestValidationError, _validation_error)
    for router in (health.router, wellknown.router, auth.router, oidc.router, me.router,
                   apikeys.router, tokens.router, audit_routes.router, credentials.router,
                   participants.router, rotations.router, hooks.router, stream_routes.router):
        app.include_router(router)
    return middleware.Hardening(metrics.Instrumented(app), max_body=settings.max_body,
                                trusted_proxies=settings.trusted_proxies)
