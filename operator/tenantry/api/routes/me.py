"""`GET /v1/me`: who the caller is, the tenants they hold a role in, and whether they are a
platform admin. Roles come from the Tenants' `spec.members`, live (`memberships`)."""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field

from tenantry.api import deps
from tenantry.model.tenant import Role

router = APIRouter(prefix="/v1", tags=["identity"])


class TenantRole(BaseModel):
    name: str
    role: Role


class Me(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    user: str = Field(description="The login name, or `api-key:<prefix>` for an API key.")
    tenants: list[TenantRole] = Field(description="Tenants the caller holds a role in.")
    platform_admin: bool = Field(alias="platformAdmin", serialization_alias="platformAdmin")


@router.get("/me", response_model=Me, response_model_by_alias=True,
            responses={401: {"description": "no valid access token or API key"}})
async def me(who: deps.CurrentCaller, svc: deps.CurrentServices) -> Me:
    if who.key is not None:
        role = who.role_in(who.key.tenant, svc)
        tenants = [TenantRole(name=who.key.tenant, role=role)] if role else []
    else:
        tenants = [TenantRole(name=m.tenant, role=m.role)
                   for m in svc.directory.memberships(who.identity)]
    return Me(user=who.name, tenants=tenants, platform_admin=who.is_platform_admin(svc.settings))
