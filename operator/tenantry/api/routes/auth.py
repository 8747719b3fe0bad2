"""`/v1/auth/login`, `/v1/auth/refresh`, `/v1/auth/logout`: sign in, stay signed in, sign out.

Login and refresh are rate limited per client address (`ratelimit`, shared bucket); login is
also throttled per (login name, address) after repeated failures (`throttle`). Wrong
credentials are one answer, 401 "invalid username or password", whether the user exists, is
disabled, or the password is wrong, in the same time (`passwords.Passwords.verify`). A refresh
token is rotated on every use; a reused one revokes its session (`tokens.rfc9700`).
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import math
import time
import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from tenantry.api import audit, deps, metrics, passwords, store
from tenantry.api.tokens import rfc9068, rfc9700
from tenantry.ledger import events

router = APIRouter(prefix="/v1/auth", tags=["auth"])
log = logging.getLogger("tenantry.api.auth")

INVALID_LOGIN = "invalid username or password"
INVALID_REFRESH = "invalid refresh token"


class LoginRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    username: str = Field(min_length=1, max_length=254, pattern=r"^[^\x00-\x1f\x7f]+$",
                          description="A login name: no control characters (a NUL would "
                                      "reach PostgreSQL, which refuses it in text).")
    password: str = Field(min_length=1, max_length=passwords.MAX_PASSWORD_BYTES)


class RefreshRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    refresh_token: str = Field(min_length=1, max_length=128)


class TokenPair(BaseModel):
    access_token: str
    refresh_token: str
    token_type: str = "Bearer"  # noqa: S105 - the RFC 6750 scheme name
    expires_in: int


_LIMITED: dict[int | str, dict[str, Any]] = {
    429: {"description": "rate limited or throttled; see Retry-After"}}


async def auth_rate_limit(request: Request, svc: deps.CurrentServices) -> None:
    """The per-address bucket of the auth endpoints (default 10/min); its RateLimit-* headers
    go on whatever the route answers, 401s included."""
    decision = await store.take_token(svc.pool, f"auth-ip:{deps.client_address(request)}",
                                      svc.settings.auth_limit)
    deps.add_response_headers(request, decision.headers())
    if not decision.allowed:
        client = deps.client_address(request)
        log.warning("rate limit tripped: auth, client %s (request %s)", client,
                    deps.request_id(request))
        metrics.RATE_LIMITED.labels("auth").inc()
        await svc.ledger.rate_limited(f"auth-ip:{client}", audit.event(
            actor="anonymous", identity={"kind": "anonymous"}, action=audit.RATE_LIMITED,
            kind="RateLimit", name="auth", changes={"path": request.url.path},
            source_ip=client, request_id=deps.request_id(request)))
        raise HTTPException(status_code=429, detail="too many requests")


RateLimited = Annotated[None, Depends(auth_rate_limit)]


async def token_pair(svc: deps.Services, user: store.User, session: uuid.UUID,
                     refresh: str, *, grant: str = "login") -> TokenPair:
    """A new access token for the session (its jti noted, for revocation) and `refresh`."""
    access, claims = rfc9068.issue(svc.settings.keys, svc.settings.policy,
                                   subject=str(user.id), username=user.username,
                                   session_id=str(session), now=int(time.time()))
    await store.remember_access_token(svc.pool, claims.jti, user.id, session, claims.expires_at)
    metrics.TOKENS_ISSUED.labels(grant).inc()
    return TokenPair(access_token=access, refresh_token=refresh,
                     expires_in=claims.expires_at - claims.issued_at)


def session_event(request: Request, *, actor: str, action: str, session: object | None,
                  method: str, changes: dict[str, Any] | None = None) -> events.AuditEvent:
    """An auth event about a session (login, refresh, logout), platform chain."""
    return audit.event(
        actor=actor, identity={"kind": "login", "method": method}, action=action,
        kind="Session", name=str(session) if session else None, changes=changes,
        source_ip=deps.client_address(request), request_id=deps.request_id(request))


@router.post("/login", response_model=TokenPair,
             responses={401: {"description": INVALID_LOGIN}, **_LIMITED})
async def login(body: LoginRequest, request: Request, _: RateLimited,
                svc: deps.CurrentServices) -> TokenPair:
    """Password login: a 15-minute access token and a 7-day refresh token."""
    client = deps.client_address(request)
    username = passwords.normalise_username(body.username)
    wait = await store.throttle_wait(svc.pool, username, client)
    if wait > 0:
        metrics.LOGINS.labels("password", "throttled").inc()
        raise HTTPException(status_code=429, detail="too many failed logins; retry later",
                            headers={"Retry-After": str(max(1, math.ceil(wait)))})
    user = await store.find_user(svc.pool, username)
    stored = user.password_hash if user is not None and not user.disabled else None
    async with svc.hashing:
        verdict = await asyncio.to_thread(svc.passwords.verify, stored, body.password)
    if user is None or stored is None or not verdict.ok:
        failures = await store.throttle_failure(svc.pool, username, client)
        log.info("login failed: client %s, consecutive failures %d (request %s)", client,
                 failures, deps.request_id(request))
        metrics.LOGINS.labels("password", "failed").inc()
        await svc.ledger.record(session_event(
            request, actor=username, action=audit.LOGIN_FAILED, session=None,
            method="password", changes={"consecutiveFailures": failures}))
        raise HTTPException(status_code=401, detail=INVALID_LOGIN)
    await store.throttle_clear(svc.pool, username, client)
    if verdict.rehash:
        async with svc.hashing:
            new_hash = await asyncio.to_thread(svc.passwords.rehash, body.password)
        await store.set_password_hash(svc.pool, user.id, stored, new_hash)
        log.info("password hash of %s upgraded to Argon2id", user.username)
    refresh = rfc9700.new_token()
    session = await store.start_family(svc.pool, user.id, rfc9700.token_hash(refresh))
    log.info("login: user %s, session %s, client %s (request %s)", user.username, session,
             client, deps.request_id(request))
    metrics.LOGINS.labels("password", "succeeded").inc()
    await svc.ledger.record(session_event(request, actor=user.username,
                                          action=audit.LOGIN_SUCCEEDED, session=session,
                                          method="password"))
    return await token_pair(svc, user, session, refresh)


@router.post("/refresh", response_model=TokenPair,
             responses={401: {"description": INVALID_REFRESH}, **_LIMITED})
async def refresh(body: RefreshRequest, request: Request, _: RateLimited,
                  svc: deps.CurrentServices) -> TokenPair:
    """Rotate a refresh token: a new pair; the presented token is used up."""
    if not rfc9700.well_formed(body.refresh_token):
        raise HTTPException(status_code=401, detail=INVALID_REFRESH)
    new = rfc9700.new_token()
    grace = datetime.timedelta(seconds=svc.settings.refresh_grace_seconds)
    rotation = await store.rotate(svc.pool, rfc9700.token_hash(body.refresh_token),
                                  rfc9700.token_hash(new), grace)
    if rotation.outcome is rfc9700.Outcome.REUSED:
        metrics.REFRESH_REUSE.inc()
        log.warning("refresh token reuse: session %s revoked, client %s (request %s)",
                    rotation.family_id, deps.client_address(request),
                    deps.request_id(request))
        await svc.ledger.record(session_event(
            request, actor=rotation.user.username if rotation.user else "anonymous",
            action=audit.REFRESH_REUSE, session=rotation.family_id, method="refresh",
            changes={"familyRevoked": True}))
    if (not rotation.outcome.issues_token or rotation.user is None
            or rotation.family_id is None):
        raise HTTPException(status_code=401, detail=INVALID_REFRESH)
    log.info("refresh (%s): session %s (request %s)", rotation.outcome.value,
             rotation.family_id, deps.request_id(request))
    await svc.ledger.record(session_event(
        request, actor=rotation.user.username, action=audit.REFRESH,
        session=rotation.family_id, method="refresh",
        changes={"outcome": rotation.outcome.value}))
    return await token_pair(svc, rotation.user, rotation.family_id, new, grant="refresh")


@router.post("/logout", status_code=204, response_class=Response,
             responses={401: {"description": "no valid access token"}})
async def logout(who: deps.SessionCaller, request: Request,
                 svc: deps.CurrentServices) -> Response:
    """Revoke the session: its refresh family and (already by that) its access tokens, and the
    presented access token's jti on its own. (An API key is revoked with DELETE instead.)"""
    claims = who.claims
    assert claims is not None
    await store.revoke_session(svc.pool, uuid.UUID(claims.session_id), claims.jti,
                               claims.expires_at, "logout")
    metrics.REVOCATIONS.labels("session").inc()
    log.info("logout: user %s, session %s (request %s)", who.user.username,
             claims.session_id, deps.request_id(request))
    await svc.ledger.record(session_event(request, actor=who.user.username,
                                          action=audit.LOGOUT, session=claims.session_id,
                                          method="token"))
    return Response(status_code=204)
