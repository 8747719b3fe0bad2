"""Probes: `/healthz` (the process serves), `/readyz` (its database schema is current and the
first list of Tenants is in, so no role is ever decided on an empty directory)."""

from __future__ import annotations

import logging

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from tenantry.api import deps, store

router = APIRouter(tags=["health"])
log = logging.getLogger("tenantry.api")


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """Liveness: no dependencies checked."""
    return {"status": "ok"}


@router.get("/readyz", responses={503: {"description": "database unreachable or not migrated, "
                                                       "or Tenants not listed yet"}})
async def readyz(svc: deps.CurrentServices) -> JSONResponse:
    """Readiness: PostgreSQL answers, the API's schema is at this version, Tenants are known."""
    if svc.tenants is not None and not svc.tenants.synced:
        return JSONResponse({"status": "unavailable", "reason": "tenants not listed yet"},
                            status_code=503)
    if svc.credentials is not None and not svc.credentials.synced:
        return JSONResponse({"status": "unavailable", "reason": "credentials not listed yet"},
                            status_code=503)
    try:
        async with svc.pool.acquire() as conn:
            await store.require_schema(conn)
    except Exception as error:  # any failure means not ready
        log.warning("not ready: %s", type(error).__name__)
        return JSONResponse({"status": "unavailable"}, status_code=503)
    return JSONResponse({"status": "ok"})
