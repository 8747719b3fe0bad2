"""`POST /v1/tokens/revoke` `{"jti"}`: revoke one access token before it expires.

Anyone may revoke their own tokens; a tenant admin (or owner) those of users who hold a role in
a tenant the admin administers; a platform admin anyone's. The answer is the same 404 for a jti
never issued here (or long expired) and for one the caller may not revoke, so jtis cannot be
probed. Revocation is immediate on every replica: every request checks the revocation list.
"""

from __future__ import annotations

import logging

from fastapi import APIRouter, HTTPException, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from tenantry.api import audit, deps, memberships, metrics, store
from tenantry.api.routes import participants as participant_routes
from tenantry.model.tenant import Role

router = APIRouter(prefix="/v1/tokens", tags=["tokens"])
log = logging.getLogger("tenantry.api.tokens")

NOT_FOUND = "no such token that you may revoke"


class RevokeRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    jti: str = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_\-]+$")


def may_revoke(who: deps.Caller, token: store.IssuedToken, svc: deps.Services) -> bool:
    """Own token, platform admin, or admin of a tenant the token's user is a member of."""
    if who.user.id == token.user.id or who.is_platform_admin(svc.settings):
        return True
    holder = memberships.Identity(username=token.user.username, groups=frozenset(token.groups))
    return any(memberships.at_least(who.role_in(membership.tenant, svc), Role.ADMIN)
               for membership in svc.directory.memberships(holder))


@router.post("/revoke", status_code=204, response_class=Response,
             responses={401: {"description": "no valid access token"},
                        403: {"description": "called with an API key"},
                        404: {"description": NOT_FOUND}})
async def revoke(body: RevokeRequest, request: Request, who: deps.SessionCaller,
                 svc: deps.CurrentServices) -> Response:
    """Revoke the access token (or participant token) with this jti (idempotent)."""
    token = await store.issued_token(svc.pool, body.jti)
    if token is None:
        tenant = await store.participant_token_tenant(svc.pool, body.jti)
        if tenant is None or not memberships.at_least(who.role_in(tenant, svc), Role.ADMIN):
            raise HTTPException(status_code=404, detail=NOT_FOUND)
        await store.revoke_participant_token(svc.pool, tenant, body.jti, who.user.id)
        metrics.REVOCATIONS.labels("participant").inc()
        await participant_routes.record_revocation(svc, request, who, tenant, body.jti)
        return Response(status_code=204)
    if not may_revoke(who, token, svc):
        raise HTTPException(status_code=404, detail=NOT_FOUND)
    if not token.revoked:
        await store.revoke_jti(svc.pool, token.jti, token.expires_at, "admin")
        metrics.REVOCATIONS.labels("token").inc()
        log.info("access token %s of %s revoked by %s (request %s)", token.jti,
                 token.user.username, who.name, deps.request_id(request))
        await svc.ledger.record(audit.event(
            actor=who.name, identity=who.ledger_identity(), action=audit.TOKEN_REVOKED,
            kind="AccessToken", name=token.jti, changes={"user": token.user.username},
            source_ip=deps.client_address(request), request_id=deps.request_id(request)))
    return Response(status_code=204)
