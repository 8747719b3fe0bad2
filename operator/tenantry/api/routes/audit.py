"""The audit ledger over HTTP: a tenant's chain, paginated, and its verification.

- `GET /v1/tenants/{tenant}/audit?after=SEQ&limit=N&action=&actor=&order=asc|desc` (tenant
  admin and up): entries of the tenant's chain by sequence number; `next` is the cursor of the
  following page (`after` ascending, `before` descending). `action` matches exactly, or as a
  prefix when it ends in `.` (`auth.`).
- `GET /v1/tenants/{tenant}/audit/verify[?checkpoint=ID]`: the seeds' verify-chain, computed by
  the code behind `tenantry ledger verify` (`tenantry.ledger.verify`): `{"valid", "entries",
  "head", "firstBreak"?}`; with `checkpoint`, also checked against that signed checkpoint with
  the API's `--checkpoint-public-key`.
- `/v1/platform/audit` and `/v1/platform/audit/verify`: the same for the platform chain, for
  platform admins.

The API reads the ledger with the ledger's app role (`--ledger-dsn-file`), which may read and
append but never change an entry; a viewer or member of a tenant is refused (the ledger names
people and addresses: it is an administrator's record).
"""

from __future__ import annotations

import json
import logging
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Query
from pydantic import BaseModel, ConfigDict, Field

from tenantry.api import deps, store
from tenantry.ledger import checkpoints, hashing, verify
from tenantry.model.tenant import Role

router = APIRouter(tags=["audit"])
log = logging.getLogger("tenantry.api.audit")

ADMIN = deps.tenant_role(Role.ADMIN)
MAX_LIMIT = 500

_ERRORS: dict[int | str, dict[str, str]] = {
    401: {"description": "no valid access token or API key"},
    403: {"description": "not an admin of this tenant (or not a platform admin)"},
    503: {"description": "the API runs without the audit ledger (--no-ledger)"}}


class Resource(BaseModel):
    kind: str
    namespace: str | None = None
    name: str | None = None


class Entry(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    seq: int
    time: str
    actor: str
    actor_kind: str = Field(serialization_alias="actorKind")
    identity: dict[str, Any]
    action: str
    resource: Resource
    changes: dict[str, Any]
    source_ip: str | None = Field(serialization_alias="sourceIp")
    request_id: str | None = Field(serialization_alias="requestId")
    component: str
    prev_hash: str = Field(serialization_alias="prevHash")
    hash: str

    @classmethod
    def of(cls, row: Any) -> Entry:
        return cls(seq=row["seq"], time=row["event_time"].isoformat(), actor=row["actor"],
                   actor_kind=row["actor_kind"], identity=json.loads(row["identity"]),
                   action=row["action"],
                   resource=Resource(kind=row["resource_kind"],
                                     namespace=row["resource_namespace"],
                                     name=row["resource_name"]),
                   changes=json.loads(row["changes"]), source_ip=row["source_ip"],
                   request_id=row["request_id"], component=row["component"],
                   prev_hash=row["prev_hash"], hash=row["hash"])


class Page(BaseModel):
    chain: str
    items: list[Entry]
    next: int | None = Field(description="Pass as `after` (ascending) or `before` "
                                         "(descending) for the next page; null at the end.")


class Head(BaseModel):
    seq: int
    hash: str


class Break(BaseModel):
    seq: int | None
    kind: str | None
    reason: str | None


class CheckpointCheck(BaseModel):
    id: int
    valid: bool
    failures: list[str]


class Verification(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    chain: str
    valid: bool
    entries: int = Field(description="Entries that verified (all of them when valid).")
    head: Head
    first_break: Break | None = Field(default=None, serialization_alias="firstBreak")
    checkpoint: CheckpointCheck | None = None


def _ledger(svc: deps.Services) -> Any:
    if svc.ledger_pool is None:
        raise HTTPException(status_code=503, detail="the audit ledger is not configured")
    return svc.ledger_pool


class PageQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    after: int | None = Field(default=None, ge=0, le=2**53)
    before: int | None = Field(default=None, ge=1, le=2**53)
    limit: int = Field(default=100, ge=1, le=MAX_LIMIT)
    order: Literal["asc", "desc"] = "asc"
    action: str | None = Field(default=None, min_length=1, max_length=128,
                               pattern=r"^[A-Za-z0-9._:-]+$")
    actor: str | None = Field(default=None, min_length=1, max_length=254,
                              pattern=r"^[^\x00-\x1f\x7f]+$")


async def _page(svc: deps.Services, chain: str, query: PageQuery) -> Page:
    rows = await store.ledger_entries(
        _ledger(svc), chain, after=query.after, before=query.before,
        newest_first=query.order == "desc", limit=query.limit, action=query.action,
        actor=query.actor)
    items = [Entry.of(row) for row in rows]
    return Page(chain=chain, items=items,
                next=items[-1].seq if len(items) == query.limit else None)


async def _verify(svc: deps.Services, chain: str, checkpoint_id: int | None) -> Verification:
    pool = _ledger(svc)
    result = await verify.verify_chain(pool, chain)
    answer = Verification(
        chain=chain, valid=result.ok, entries=result.checked,
        head=Head(seq=result.last_seq, hash=result.last_hash),
        first_break=None if result.ok else Break(
            seq=result.first_broken_seq, kind=result.kind.value if result.kind else None,
            reason=result.reason))
    if checkpoint_id is None:
        return answer
    keys = svc.settings.checkpoint_keys
    if not keys:
        raise HTTPException(status_code=409, detail=(
            "checkpoint: this API has no checkpoint public key (--checkpoint-public-key)"))
    found = [cp for cp in await checkpoints.load_checkpoints(pool) if cp.id == checkpoint_id]
    if not found:
        raise HTTPException(status_code=404, detail=f"checkpoint: no checkpoint {checkpoint_id}")
    report = await checkpoints.verify_db_against_checkpoints(pool, found, list(keys),
                                                             chains=[chain])
    answer.checkpoint = CheckpointCheck(id=checkpoint_id, valid=report.ok,
                                        failures=[f.reason for f in report.failures])
    answer.valid = answer.valid and report.ok
    return answer


CheckpointId = Annotated[int | None, Query(ge=1, description="A checkpoint's id to check "
                                                             "the chain against.")]


@router.get("/v1/tenants/{tenant}/audit", response_model=Page, response_model_by_alias=True,
            responses=_ERRORS)
async def tenant_audit(access: Annotated[deps.TenantAccess, ADMIN],
                       query: Annotated[PageQuery, Query()],
                       svc: deps.CurrentServices) -> Page:
    """A page of the tenant's audit chain."""
    return await _page(svc, access.tenant, query)


@router.get("/v1/tenants/{tenant}/audit/verify", response_model=Verification,
            response_model_by_alias=True, response_model_exclude_none=True,
            responses={**_ERRORS, 404: {"description": "no such checkpoint"},
                       409: {"description": "no checkpoint public key configured"}})
async def tenant_verify(access: Annotated[deps.TenantAccess, ADMIN],
                        svc: deps.CurrentServices,
                        checkpoint: CheckpointId = None) -> Verification:
    """Verify the tenant's chain (hashes and links), optionally against a checkpoint."""
    return await _verify(svc, access.tenant, checkpoint)


async def platform_admin(who: deps.CurrentCaller, svc: deps.CurrentServices) -> deps.Caller:
    if not who.is_platform_admin(svc.settings):
        raise HTTPException(status_code=403, detail="this needs the platform-admin role")
    return who


PlatformAdmin = Annotated[deps.Caller, Depends(platform_admin)]


@router.get("/v1/platform/audit", response_model=Page, response_model_by_alias=True,
            responses=_ERRORS)
async def platform_audit(_: PlatformAdmin, query: Annotated[PageQuery, Query()],
                         svc: deps.CurrentServices) -> Page:
    """A page of the platform chain (events of no one tenant: sign-ins, the operator's own)."""
    return await _page(svc, hashing.PLATFORM_CHAIN, query)


@router.get("/v1/platform/audit/verify", response_model=Verification,
            response_model_by_alias=True, response_model_exclude_none=True,
            responses={**_ERRORS, 404: {"description": "no such checkpoint"},
                       409: {"description": "no checkpoint public key configured"}})
async def platform_verify(_: PlatformAdmin, svc: deps.CurrentServices,
                          checkpoint: CheckpointId = None) -> Verification:
    """Verify the platform chain, optionally against a checkpoint."""
    return await _verify(svc, hashing.PLATFORM_CHAIN, checkpoint)
