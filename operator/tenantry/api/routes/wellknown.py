"""`/.well-known/jwks.json`: the public keys that verify our access tokens (current first)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from tenantry.api import deps

router = APIRouter(tags=["discovery"])


@router.get("/.well-known/jwks.json")
async def jwks(svc: deps.CurrentServices) -> dict[str, Any]:
    return svc.settings.keys.jwks()
