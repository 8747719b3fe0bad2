"""What every route needs, resolved in one place: the services, and who the caller is.

`services(request)` is the app's state (configuration, pool, password hasher). `caller` is the
one dependency that turns `Authorization: Bearer <access token>` into a `Caller`, or a 401
(RFC 6750 section 3: `WWW-Authenticate: Bearer ... error="invalid_token"`): the token must
verify (`tokens.rfc9068`), and then, on every request, its jti must not be revoked, its session
(refresh family) must be live and the user must exist and be enabled (`store.session_user`,
one query). Tenant and minimum-role resolution join here when routes have tenants.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import uuid
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Request

from tenantry.api import clientip, passwords, ratelimit, store
from tenantry.api.oauth import clients as oauth_clients
from tenantry.api.oauth import providers as oauth_providers
from tenantry.api.tokens import rfc7517, rfc9068

log = logging.getLogger("tenantry.api.auth")


@dataclasses.dataclass(frozen=True)
class Settings:
    """How the API runs; `cli` builds it from flags."""

    keys: rfc7517.KeySet
    policy: rfc9068.Policy
    refresh_grace_seconds: float = 10.0
    auth_limit: ratelimit.Limit = ratelimit.AUTH_PER_IP
    trusted_proxies: tuple[clientip.Network, ...] = ()
    max_body: int = 1024 * 1024
    platform_admins: frozenset[str] = frozenset()
    """Login names with the platform-admin role (cross-tenant administration)."""
    password_workers: int = 2
    """Argon2 verifications at once (each holds 19 MiB for ~30 ms of CPU)."""
    oauth: oauth_providers.Config | None = None
    """External identity providers (`--oauth-config`); None: password login only."""


@dataclasses.dataclass
class Services:
    settings: Settings
    pool: Any
    passwords: passwords.Passwords
    hashing: asyncio.Semaphore
    oidc: oauth_clients.Clients = dataclasses.field(
        default_factory=lambda: oauth_clients.Clients(None))


def services(request: Request) -> Services:
    found: Services = request.app.state.services
    return found


def request_id(request: Request) -> str:
    return str(request.scope.get("state", {}).get("request_id", ""))


def add_response_headers(request: Request, headers: dict[str, str]) -> None:
    """Headers for the response, whatever it is (set by `middleware.Hardening`)."""
    request.scope.setdefault("state", {}).setdefault("response_headers", {}).update(headers)


def client_address(request: Request) -> str:
    return str(request.scope.get("state", {}).get("client_ip", "unknown"))


@dataclasses.dataclass(frozen=True)
class Caller:
    user: store.User
    claims: rfc9068.AccessClaims


def _unauthorized(error: str | None, description: str) -> HTTPException:
    challenge = 'Bearer realm="tenantry"'
    if error:
        challenge += f', error="{error}", error_description="{description}"'
    return HTTPException(status_code=401, detail=description,
                         headers={"WWW-Authenticate": challenge})


async def caller(request: Request,
                 svc: Annotated[Services, Depends(services)]) -> Caller:
    header = request.headers.get("authorization")
    if not header:
        raise _unauthorized(None, "authentication required")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise _unauthorized("invalid_request", "expected Authorization: Bearer <token>")
    try:
        claims = rfc9068.verify(token.strip(), svc.settings.keys.verification_keys(),
                                svc.settings.policy)
        user_id, session = uuid.UUID(claims.subject), uuid.UUID(claims.session_id)
    except rfc9068.TokenInvalid as invalid:
        log.info("access token refused: %s (request %s)", invalid.reason, request_id(request))
        raise _unauthorized("invalid_token", "invalid access token") from None
    except ValueError:
        raise _unauthorized("invalid_token", "invalid access token") from None
    user = await store.session_user(svc.pool, user_id, session, claims.jti)
    if user is None:
        log.info("access token refused: revoked or user disabled (request %s)",
                 request_id(request))
        raise _unauthorized("invalid_token", "invalid access token")
    return Caller(user=user, claims=claims)


CurrentCaller = Annotated[Caller, Depends(caller)]
CurrentServices = Annotated[Services, Depends(services)]
