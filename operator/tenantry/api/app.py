"""The ASGI application: FastAPI with the routes, the hardening middleware and a lifespan.

`create_app(settings, dsn)` returns the app; the lifespan opens the asyncpg pool (refusing to
start when the API's schema is not current), runs housekeeping every few minutes, and closes
the pool on shutdown. OpenAPI 3.1 is served at `/openapi.json`; the interactive docs pages are
off (no debug endpoints by default, and the CSP allows no scripts). Validation errors are
answered 422 without echoing the input back (FastAPI's default would repeat a password).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from tenantry import __version__
from tenantry.api import deps, middleware, passwords, store
from tenantry.api.oauth import clients as oauth_clients
from tenantry.api.routes import auth, health, me, oidc, wellknown

log = logging.getLogger("tenantry.api")
HOUSEKEEPING_SECONDS = 300.0


async def _housekeeping(pool: Any) -> None:
    while True:
        await asyncio.sleep(HOUSEKEEPING_SECONDS)
        try:
            await store.purge_expired(pool)
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
        pool = await store.create_pool(dsn)
        clients = oauth_clients.Clients(settings.oauth)
        try:
            async with pool.acquire() as conn:
                await store.require_schema(conn)
            app.state.services = deps.Services(
                settings=settings, pool=pool, passwords=passwords.Passwords(),
                hashing=asyncio.Semaphore(settings.password_workers), oidc=clients)
            task = asyncio.create_task(_housekeeping(pool))
            log.info("tenantry api ready (issuer %s, key %s)", settings.policy.issuer,
                     settings.keys.kid)
            try:
                yield
            finally:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        finally:
            await clients.aclose()
            await pool.close()

    app = FastAPI(title="Tenantry API", version=__version__, lifespan=lifespan,
                  docs_url=None, redoc_url=None, openapi_url="/openapi.json")
    app.add_exception_handler(RequestValidationError, _validation_error)
    for router in (health.router, wellknown.router, auth.router, oidc.router, me.router):
        app.include_router(router)
    return middleware.Hardening(app, max_body=settings.max_body,
                                trusted_proxies=settings.trusted_proxies)
