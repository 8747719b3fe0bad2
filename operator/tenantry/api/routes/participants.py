"""`/v1/tenants/{tenant}/participant-tokens`: tokens that can do exactly one thing.

`POST` `{"resource": "credentials/NS/NAME", "role": "viewer"|"member", "ttl"}` (tenant admin
and up; ttl in seconds, at most 3600, default 900) answers `{"token", "expires_in", "jti"}`
once (`Cache-Control: no-store`). The token reads that Credential's metadata
(`GET /v1/tenants/{tenant}/credentials/{NS}/{NAME}`), and with role `member` exchanges it when
the Credential is participant-scoped; every other route refuses it with 403. `DELETE
.../participant-tokens/{jti}` revokes it (so does `/v1/tokens/revoke`). Issuing, each use and
revoking are ledger entries on the tenant's chain.
"""

from __future__ import annotations

import logging
import time
from typing import Annotated

from fastapi import APIRouter, HTTPException, Request, Response
from fastapi import Path as PathParam
from pydantic import BaseModel, ConfigDict, Field

from tenantry.api import audit, deps, participants, store
from tenantry.api.tokens import scoped
from tenantry.model import credential
from tenantry.model.tenant import Role

router = APIRouter(prefix="/v1/tenants/{tenant}/participant-tokens", tags=["participants"])
log = logging.getLogger("tenantry.api.participants")

ADMIN = deps.tenant_role(Role.ADMIN)
ISSUED = "participant.token.issued"
USED = "participant.token.used"
REVOKED = "participant.token.revoked"

_ERRORS: dict[int | str, dict[str, str]] = {
    401: {"description": "no valid access token or API key"},
    403: {"description": "not an admin of this tenant"},
    404: {"description": "no such Credential (or token) in this tenant"}}


class IssueRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    resource: str = Field(max_length=400, pattern=participants.RESOURCE.pattern,
                          description="`credentials/NAMESPACE/NAME`, in this tenant.")
    role: str = Field(pattern=r"^(viewer|member)$",
                      description="viewer: read its metadata; member: also exchange it "
                                  "(participant-scoped Credentials only).")
    ttl: int = Field(default=900, ge=1, le=scoped.LIFETIMES[scoped.PARTICIPANT],
                     description="Seconds the token lives (at most 3600).")


class Issued(BaseModel):
    token: str
    expires_in: int
    jti: str


@router.post("", status_code=201, response_model=Issued, responses=_ERRORS)
async def issue(body: IssueRequest, request: Request, response: Response,
                access: Annotated[deps.TenantAccess, ADMIN],
                svc: deps.CurrentServices) -> Issued:
    """A participant token for one Credential of this tenant, in one role."""
    where = participants.parse_resource(body.resource)
    assert where is not None  # the pattern above
    namespace, name = where
    if not await svc.credentials.holds(svc.directory, access.tenant, namespace) or \
            await svc.credentials.credential(namespace, name) is None:
        raise HTTPException(status_code=404, detail=f"resource: no Credential {namespace}/"
                                                    f"{name} in this tenant")
    who = access.caller
    token, jti, expires_at = scoped.issue(
        svc.settings.keys, svc.settings.policy, scoped.PARTICIPANT, subject=str(who.user.id),
        ttl=body.ttl, now=int(time.time()),
        claims={"tenant": access.tenant, "resource": body.resource, "role": body.role})
    await store.record_participant_token(svc.pool, jti=jti, tenant=access.tenant,
                                         resource=body.resource, role=body.role,
                                         issued_by=who.user.id,
                                         issuer_groups=sorted(who.identity.groups),
                                         issued_with_key=who.key.id if who.key else None,
                                         expires_at=expires_at)
    await svc.ledger.record(audit.event(
        actor=who.name, identity=who.ledger_identity(), action=ISSUED, kind="ParticipantToken",
        name=jti, tenant=access.tenant,
        changes={"resource": body.resource, "role": body.role, "ttl": body.ttl},
        source_ip=deps.client_address(request), request_id=deps.request_id(request)))
    log.info("participant token %s issued in %s for %s (%s, %d s) by %s", jti, access.tenant,
             body.resource, body.role, body.ttl, who.name)
    response.headers["Cache-Control"] = "no-store"
    return Issued(token=token, expires_in=body.ttl, jti=jti)


@router.delete("/{jti}", status_code=204, response_class=Response, responses=_ERRORS)
async def revoke(jti: Annotated[str, PathParam(max_length=128, pattern=r"^[A-Za-z0-9_\-]+$")],
                 request: Request, access: Annotated[deps.TenantAccess, ADMIN],
                 svc: deps.CurrentServices) -> Response:
    """Revoke a participant token of this tenant now (idempotent)."""
    who = access.caller
    if not await store.revoke_participant_token(svc.pool, access.tenant, jti, who.user.id):
        raise HTTPException(status_code=404, detail="no such participant token in this tenant")
    await record_revocation(svc, request, who, access.tenant, jti)
    return Response(status_code=204)


async def record_revocation(svc: deps.Services, request: Request, who: deps.Caller,
                            tenant: str, jti: str) -> None:
    await svc.ledger.record(audit.event(
        actor=who.name, identity=who.ledger_identity(), action=REVOKED,
        kind="ParticipantToken", name=jti, tenant=tenant,
        source_ip=deps.client_address(request), request_id=deps.request_id(request)))


async def record_use(svc: deps.Services, request: Request, grant: participants.Grant,
                     what: str) -> None:
    """Each use of a participant token, on its tenant's chain."""
    await svc.ledger.record(audit.event(
        actor=f"participant:{grant.jti}", identity={"kind": "participant", "jti": grant.jti,
                                                     "issuedBy": grant.issued_by},
        action=USED, kind=credential.KIND, name=grant.name, namespace=grant.namespace,
        tenant=grant.tenant, changes={"use": what, "role": grant.role},
        source_ip=deps.client_address(request), request_id=deps.request_id(request)))
