"""`/v1/tenants/{tenant}/api-keys`: API keys for automation, bound to one tenant.

Tenant admins and owners (and platform admins) create, list and revoke a tenant's keys; only a
signed-in user can, never an API key (a leaked key must not mint more). A key's role is at most
its creator's role in the tenant when it is created, and when it is used it acts with the lower
of its role and what its creator still holds there: removing the creator from the Tenant
disables their keys on the next request. The key itself is in the one response that creates it
(`Cache-Control: no-store`); listings show its public prefix only. Keys expire (default 90
days, at most 366); revocation is immediate on every replica (checked on every request).
"""

from __future__ import annotations

import datetime
import logging
import uuid
from typing import Annotated

from fastapi import APIRouter, HTTPException, Request, Response
from fastapi import Path as PathParam
from pydantic import BaseModel, ConfigDict, Field

from tenantry.api import apikeys, audit, deps, memberships, metrics, store
from tenantry.model.tenant import Role

router = APIRouter(prefix="/v1/tenants/{tenant}/api-keys", tags=["api-keys"])
log = logging.getLogger("tenantry.api.apikeys")

DEFAULT_EXPIRY = 90 * 86400
MAX_EXPIRY = 366 * 86400
ADMIN = deps.tenant_role(Role.ADMIN)

_ERRORS: dict[int | str, dict[str, str]] = {
    401: {"description": "no valid access token"},
    403: {"description": "not an admin of this tenant, or called with an API key"},
    429: {"description": "the tenant's request quota is used up"}}


class CreateKey(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    name: str = Field(default="", max_length=100, pattern=r"^[^\x00-\x1f\x7f]*$",
                      description="What the key is for (shown in listings).")
    role: Role = Field(description="At most the creator's own role in the tenant.")
    expires_in: int = Field(default=DEFAULT_EXPIRY, ge=60, le=MAX_EXPIRY, alias="expiresIn",
                            description="Seconds until the key expires (default 90 days).")


class KeyInfo(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    id: uuid.UUID
    prefix: str = Field(description="The key's public prefix, e.g. `tnt_AbCd1234…`.")
    tenant: str
    name: str
    role: Role
    created_by: str = Field(serialization_alias="createdBy")
    created_at: datetime.datetime = Field(serialization_alias="createdAt")
    expires_at: datetime.datetime | None = Field(serialization_alias="expiresAt")
    last_used_at: datetime.datetime | None = Field(serialization_alias="lastUsedAt")
    revoked_at: datetime.datetime | None = Field(serialization_alias="revokedAt")

    @classmethod
    def of(cls, key: store.ApiKey) -> KeyInfo:
        return cls(id=key.id, prefix=apikeys.masked(key.prefix), tenant=key.tenant,
                   name=key.name, role=Role(key.role), created_by=key.created_by,
                   created_at=key.created_at, expires_at=key.expires_at,
                   last_used_at=key.last_used_at, revoked_at=key.revoked_at)


class CreatedKey(KeyInfo):
    key: str = Field(description="The API key. Shown once: store it now.")


class KeyList(BaseModel):
    items: list[KeyInfo]


def _session(access: deps.TenantAccess) -> deps.Caller:
    if access.caller.key is not None:
        raise HTTPException(status_code=403, detail="an API key cannot manage API keys; sign in")
    return access.caller


@router.post("", status_code=201, response_model=CreatedKey, response_model_by_alias=True,
             responses=_ERRORS)
async def create(body: CreateKey, request: Request, response: Response,
                 access: Annotated[deps.TenantAccess, ADMIN],
                 svc: deps.CurrentServices) -> CreatedKey:
    """Create an API key for this tenant; the response is the only place the key appears."""
    who = _session(access)
    if not memberships.at_least(access.role, body.role):
        raise HTTPException(status_code=403, detail=(
            f"role: {body.role.value} is above your own role in the tenant "
            f"({access.role.value}); a key can have at most its creator's role"))
    new = apikeys.new_key()
    key = await store.create_api_key(
        svc.pool, tenant=access.tenant, prefix=new.prefix, key_hash=new.hash,
        role=body.role.value, name=body.name, created_by=who.user.id,
        created_by_groups=who.groups, expires_in=datetime.timedelta(seconds=body.expires_in))
    log.info("api key %s created in tenant %s by %s (role %s, request %s)", new.prefix,
             access.tenant, who.name, body.role.value, deps.request_id(request))
    await svc.ledger.record(audit.event(
        actor=who.name, identity=who.ledger_identity(), action=audit.API_KEY_CREATED,
        kind="ApiKey", name=new.prefix, tenant=access.tenant,
        changes={"role": body.role.value, "expiresIn": body.expires_in, "id": str(key.id)},
        source_ip=deps.client_address(request), request_id=deps.request_id(request)))
    response.headers["Cache-Control"] = "no-store"
    return CreatedKey(**KeyInfo.of(key).model_dump(), key=new.key)


@router.get("", response_model=KeyList, response_model_by_alias=True, responses=_ERRORS)
async def list_keys(access: Annotated[deps.TenantAccess, ADMIN],
                    svc: deps.CurrentServices) -> KeyList:
    """The tenant's API keys (live, expired and revoked), by prefix only."""
    _session(access)
    return KeyList(items=[KeyInfo.of(key) for key in await store.list_api_keys(svc.pool,
                                                                               access.tenant)])


@router.delete("/{key_id}", status_code=204, response_class=Response,
               responses={**_ERRORS, 404: {"description": "no such key in this tenant"}})
async def revoke(key_id: Annotated[uuid.UUID, PathParam()], request: Request,
                 access: Annotated[deps.TenantAccess, ADMIN],
                 svc: deps.CurrentServices) -> Response:
    """Revoke an API key now (idempotent); it stops working on every replica at once."""
    who = _session(access)
    key = await store.revoke_api_key(svc.pool, access.tenant, key_id, who.user.id)
    if key is None:
        raise HTTPException(status_code=404, detail="no such API key in this tenant")
    metrics.REVOCATIONS.labels("api_key").inc()
    log.info("api key %s revoked in tenant %s by %s (request %s)", key.prefix, access.tenant,
             who.name, deps.request_id(request))
    await svc.ledger.record(audit.event(
        actor=who.name, identity=who.ledger_identity(), action=audit.API_KEY_REVOKED,
        kind="ApiKey", name=key.prefix, tenant=access.tenant, changes={"id": str(key.id)},
        source_ip=deps.client_address(request), request_id=deps.request_id(request)))
    return Response(status_code=204)
