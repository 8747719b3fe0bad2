"""`/v1/auth/oidc/{provider}/start` and `/callback`: sign in through an OpenID Connect provider.

`start` remembers a new sign-in server-side (`store.oauth_begin`: the SHA-256 of `state`, the
`nonce`, the PKCE verifier, for `STATE_TTL`) and answers 302 to the provider's authorization
endpoint. It also sets a short-lived, HttpOnly cookie whose hash is stored with the state,
scoped to the callback path: the callback must come back to the browser that started the
sign-in (RFC 9700 section 4.7.1, login CSRF: an attacker's callback URL opened by a victim
carries the attacker's state but not the victim's cookie).

`callback` takes the state once (`store.oauth_consume` deletes it first, so a replay finds
nothing, even when the rest fails), checks the browser binding, the RFC 9207 `iss` parameter
when the provider sends it (mix-up defence), redeems the code with the stored verifier
(`oauth.client`), verifies the ID token (`oauth.id_token`), finds or links the user
(`oauth.linking`, `store.oauth_user`) and answers exactly as password login does: a token pair.
Both endpoints share the auth endpoints' per-address rate limit.

Refusals: 404 unknown provider; 400 a missing, unknown, expired, replayed or foreign state;
401 the provider refused (an error redirect, a code it will not redeem, e.g. a wrong PKCE
verifier) or the ID token broke a rule (the rule is logged, not told); 403 the identity may not
sign in (unverified e-mail, identity conflict, disabled user); 502 the provider is unreachable.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import hmac
import logging
import re
import secrets
from typing import Annotated

from fastapi import APIRouter, HTTPException, Path, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import RedirectResponse
from pydantic import BaseModel, ConfigDict, Field

from tenantry.api import audit, deps, metrics, store
from tenantry.api.oauth import client as oauth_client
from tenantry.api.oauth import id_token, linking
from tenantry.api.routes.auth import RateLimited, TokenPair, session_event, token_pair
from tenantry.api.tokens import rfc9700

router = APIRouter(prefix="/v1/auth/oidc", tags=["auth"])
log = logging.getLogger("tenantry.api.auth")

STATE_TTL = datetime.timedelta(minutes=10)
CLI_CODE_TTL = datetime.timedelta(seconds=60)
CLI_REDIRECT = r"^http://(127\.0\.0\.1|\[::1\]):[0-9]{1,5}/callback$"
COOKIE = "tenantry_oidc"
_SAFE = re.compile(r"[^A-Za-z0-9_.-]")

ProviderName = Annotated[str, Path(pattern=r"^[a-z0-9-]{1,32}$")]


def _sha256(value: str) -> bytes:
    return hashlib.sha256(value.encode()).digest()


def _client(svc: deps.Services, provider: str) -> oauth_client.CodeFlowClient:
    found = svc.oidc.get(provider)
    if found is None:
        raise HTTPException(status_code=404, detail="unknown identity provider")
    return found


def _callback_path(provider: str) -> str:
    return f"/v1/auth/oidc/{provider}/callback"


@router.get("/{provider}/start", status_code=302, response_class=RedirectResponse,
            responses={302: {"description": "to the identity provider"},
                       404: {"description": "unknown identity provider"},
                       429: {"description": "rate limited"},
                       502: {"description": "identity provider unavailable"}})
async def start(provider: ProviderName, request: Request, _: RateLimited,
                svc: deps.CurrentServices,
                cli_redirect: Annotated[str | None, Query(
                    max_length=64, pattern=CLI_REDIRECT,
                    description="`tenantry login --oidc`: its loopback address, "
                                "http://127.0.0.1:PORT/callback")] = None,
                cli_challenge: Annotated[str | None, Query(
                    pattern=r"^[A-Za-z0-9_-]{43}$",
                    description="... and its PKCE S256 challenge")] = None,
                ) -> RedirectResponse:
    """Begin signing in with `provider`: a redirect to its authorization endpoint."""
    if (cli_redirect is None) != (cli_challenge is None):
        missing = "cli_challenge" if cli_challenge is None else "cli_redirect"
        raise RequestValidationError([{
            "loc": ("query", missing), "type": "missing",
            "msg": "cli_redirect and cli_challenge go together"}])
    client = _client(svc, provider)
    try:
        pending = await client.start()
    except oauth_client.IdpError as error:
        log.warning("oidc %s unavailable: %s (request %s)", provider, error.reason,
                    deps.request_id(request))
        raise HTTPException(status_code=502, detail="identity provider unavailable") from None
    browser = secrets.token_urlsafe(32)
    await store.oauth_begin(svc.pool, state_hash=_sha256(pending.state), provider=provider,
                            browser_hash=_sha256(browser), nonce=pending.nonce,
                            code_verifier=pending.code_verifier, ttl=STATE_TTL,
                            cli_redirect=cli_redirect, cli_challenge=cli_challenge)
    response = RedirectResponse(pending.url, status_code=302)
    response.set_cookie(
        COOKIE, browser, max_age=int(STATE_TTL.total_seconds()), path=_callback_path(provider),
        httponly=True, samesite="lax",
        secure=svc.oidc.config is not None and svc.oidc.config.public_url.startswith("https:"))
    return response


def _refused(status: int, detail: str, provider: str, reason: str, request: Request) -> \
        HTTPException:
    log.info("oidc %s sign-in refused: %s (client %s, request %s)", provider, reason,
             deps.client_address(request), deps.request_id(request))
    return HTTPException(status_code=status, detail=detail)


@router.get("/{provider}/callback", response_model=TokenPair,
            responses={400: {"description": "missing, unknown, expired or replayed state"},
                       401: {"description": "the provider refused, or its ID token is invalid"},
                       403: {"description": "this identity may not sign in"},
                       404: {"description": "unknown identity provider"},
                       429: {"description": "rate limited"},
                       502: {"description": "identity provider unavailable"}})
async def callback(provider: ProviderName, request: Request, response: Response,
                   _: RateLimited, svc: deps.CurrentServices,
                   state: Annotated[str | None, Query(max_length=512)] = None,
                   code: Annotated[str | None, Query(max_length=4096)] = None,
                   error: Annotated[str | None, Query(max_length=256)] = None,
                   iss: Annotated[str | None, Query(max_length=2048)] = None,
                   ) -> TokenPair | RedirectResponse:
    """The provider's redirect back: redeem the code, sign in, answer a token pair."""
    try:
        return await _sign_in(provider, request, response, svc, state, code, error, iss)
    except HTTPException as refused:
        if refused.status_code in (400, 401, 403):
            metrics.LOGINS.labels("oidc", "failed").inc()
            await svc.ledger.record(session_event(
                request, actor="anonymous", action=audit.LOGIN_FAILED, session=None,
                method=f"oidc:{provider}", changes={"reason": str(refused.detail)}))
        raise


async def _sign_in(provider: str, request: Request, response: Response,
                   svc: deps.Services, state: str | None, code: str | None,
                   error: str | None, iss: str | None) -> TokenPair | RedirectResponse:
    client = _client(svc, provider)
    if not state:
        raise _refused(400, "missing state", provider, "no state", request)
    stored = await store.oauth_consume(svc.pool, _sha256(state), provider)
    if stored is None or not stored.live:
        raise _refused(400, "invalid or expired state", provider,
                       "unknown or replayed state" if stored is None else "expired state",
                       request)
    response.delete_cookie(COOKIE, path=_callback_path(provider))
    cookie = request.cookies.get(COOKIE, "")
    if not hmac.compare_digest(_sha256(cookie), stored.browser_hash):
        raise _refused(400, "sign-in was not started by this browser", provider,
                       "browser binding cookie missing or wrong", request)
    if error is not None:
        raise _refused(401, "the identity provider refused the sign-in", provider,
                       f"provider error {_SAFE.sub('', error)[:64]!r}", request)
    try:
        if not await client.check_response_issuer(iss):
            raise _refused(400, "authorization response from the wrong issuer", provider,
                           "RFC 9207 iss mismatch", request)
        if not code:
            raise _refused(400, "missing code", provider, "no code", request)
        identity = await client.finish(code, stored.code_verifier, stored.nonce)
    except id_token.IdTokenInvalid as invalid:
        raise _refused(401, "invalid ID token", provider, f"ID token: {invalid.reason}",
                       request) from None
    except oauth_client.CodeRefused as refused:
        raise _refused(401, "the identity provider refused the sign-in", provider,
                       refused.reason, request) from None
    except oauth_client.IdpError as failed:
        log.warning("oidc %s unavailable: %s (request %s)", provider, failed.reason,
                    deps.request_id(request))
        raise HTTPException(status_code=502, detail="identity provider unavailable") from None
    try:
        plan = linking.plan(client.provider, identity)
        user = await store.oauth_user(svc.pool, plan.provider, plan.subject, plan.username)
    except linking.NotLinkable as not_linkable:
        raise _refused(403, str(not_linkable), provider, str(not_linkable), request) from None
    except store.IdentityConflict:
        raise _refused(403, "this account is linked to another identity at this provider",
                       provider, "identity conflict", request) from None
    if user.disabled:
        raise _refused(403, "account disabled", provider, "user disabled", request)
    if stored.cli_redirect and stored.cli_challenge:
        # `tenantry login --oidc`: no tokens in this browser; a one-time code for the command,
        # redeemable only with the verifier of the challenge it started with.
        code = secrets.token_urlsafe(32)
        await store.cli_code_issue(svc.pool, code_hash=_sha256(code), user_id=user.id,
                                   groups=identity.groups, provider=provider,
                                   challenge=stored.cli_challenge, ttl=CLI_CODE_TTL)
        log.info("oidc %s sign-in for the command line: user %s (request %s)", provider,
                 user.username, deps.request_id(request))
        redirect = RedirectResponse(f"{stored.cli_redirect}?code={code}", status_code=302)
        redirect.delete_cookie(COOKIE, path=_callback_path(provider))
        return redirect
    refresh = rfc9700.new_token()
    session = await store.start_family(svc.pool, user.id, rfc9700.token_hash(refresh),
                                       groups=identity.groups)
    log.info("login (oidc %s): user %s, session %s, %d group(s), client %s (request %s)",
             provider, user.username, session, len(identity.groups),
             deps.client_address(request), deps.request_id(request))
    metrics.LOGINS.labels("oidc", "succeeded").inc()
    await svc.ledger.record(session_event(request, actor=user.username,
                                          action=audit.LOGIN_SUCCEEDED, session=session,
                                          method=f"oidc:{provider}",
                                          changes={"groups": len(identity.groups)}))
    return await token_pair(svc, user, session, refresh)


class CliTokenRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    code: str = Field(min_length=20, max_length=128, pattern=r"^[A-Za-z0-9_-]+$")
    code_verifier: str = Field(min_length=43, max_length=128, pattern=r"^[A-Za-z0-9._~-]+$")


@router.post("/cli/token", response_model=TokenPair,
             responses={400: {"description": "unknown, used or expired code, or wrong verifier"},
                        429: {"description": "rate limited"}})
async def cli_token(body: CliTokenRequest, request: Request, _: RateLimited,
                    svc: deps.CurrentServices) -> TokenPair:
    """`tenantry login --oidc`: the one-time code from the loopback redirect and the command's
    PKCE verifier for a token pair (RFC 8252's native-app pattern, with this API in between)."""
    taken = await store.cli_code_redeem(svc.pool, _sha256(body.code))
    challenge = base64.urlsafe_b64encode(
        hashlib.sha256(body.code_verifier.encode()).digest()).decode().rstrip("=")
    if taken is None or not taken.live or taken.user.disabled or not hmac.compare_digest(
            challenge, taken.challenge):
        await svc.ledger.record(session_event(
            request, actor="anonymous", action=audit.LOGIN_FAILED, session=None,
            method="oidc-cli", changes={"reason": "bad or used command-line code"}))
        raise HTTPException(status_code=400, detail="invalid, used or expired code")
    refresh = rfc9700.new_token()
    session = await store.start_family(svc.pool, taken.user.id, rfc9700.token_hash(refresh),
                                       groups=taken.groups)
    metrics.LOGINS.labels("oidc", "succeeded").inc()
    await svc.ledger.record(session_event(request, actor=taken.user.username,
                                          action=audit.LOGIN_SUCCEEDED, session=session,
                                          method=f"oidc:{taken.provider}+cli"))
    return await token_pair(svc, taken.user, session, refresh)
