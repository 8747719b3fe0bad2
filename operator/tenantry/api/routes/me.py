"""`GET /v1/me`: who the access token says you are (any signed-in user)."""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field

from tenantry.api import deps

router = APIRouter(prefix="/v1", tags=["identity"])


class Me(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    user: str
    platform_admin: bool = Field(alias="platformAdmin", serialization_alias="platformAdmin")


@router.get("/me", response_model=Me, response_model_by_alias=True,
            responses={401: {"description": "no valid access token"}})
async def me(who: deps.CurrentCaller, svc: deps.CurrentServices) -> Me:
    return Me(user=who.user.username,
              platform_admin=who.user.username in svc.settings.platform_admins)
