"""What every route needs, resolved in one place: the services, who the caller is, and what
the caller may do in a tenant.

`services(request)` is the app's state (configuration, pool, password hasher, Tenant watch,
auth ledger). `caller` is the one dependency that turns `Authorization: Bearer ...` into a
`Caller`, or a 401 (RFC 6750 section 3: `WWW-Authenticate: Bearer ... error="invalid_token"`):

- an access token must verify (`tokens.rfc9068`), and then, on every request, its jti must not
  be revoked, its session (refresh family) must be live and the user must exist and be enabled
  (`store.session_user`, one query), so a revocation on any replica holds on every replica at
  the next request;
- an API key (`tnt_...`, `apikeys`) must be well formed (checked before any lookup), live and
  not expired (`store.authenticate_api_key`); it acts in its one tenant only.

`tenant_role(minimum)` is how a route under `/v1/tenants/{tenant}` declares the least role it
needs: the caller's role in that tenant comes from the Tenant's `spec.members`
(`memberships`, watched live), so removing a member takes effect on their next request.
Platform admins (configured users or groups) hold `owner` in every tenant. An unknown tenant
and a tenant the caller has no role in are the same 403, so tenant names do not leak. Every
tenant route also draws from that tenant's request quota (`ratelimit.TENANT_API`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import pathlib
import uuid
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Path, Request

from tenantry.api import (
    apikeys,
    audit,
    clientip,
    memberships,
    metrics,
    passwords,
    ratelimit,
    store,
    tokenreview,
)
from tenantry.api.oauth import clients as oauth_clients
from tenantry.api.oauth import providers as oauth_providers
from tenantry.api.tokens import rfc7517, rfc9068, scoped
from tenantry.ledger import events
from tenantry.model.tenant import Role

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
    platform_admin_groups: frozenset[str] = frozenset()
    """Groups (as sessions report them) whose members are platform admins."""
    tenant_limit: ratelimit.Limit = ratelimit.TENANT_API
    password_workers: int = 2
    """Argon2 verifications at once (each holds 19 MiB for ~30 ms of CPU)."""
    oauth: oauth_providers.Config | None = None
    """External identity providers (`--oauth-config`); None: password login only."""
    kubeconfig: pathlib.Path | None = None
    """Where Tenants are read from (None: in-cluster ServiceAccount, else ~/.kube/config)."""
    watch_tenants: bool = True
    """False only for tests of routes that need no tenant (the directory is then empty)."""
    ledger_dsn: str | None = dataclasses.field(default=None, repr=False)
    """The audit ledger's app-role DSN; None only with --no-ledger (explicit)."""
    ledger_spool: pathlib.Path | None = None
    checkpoint_keys: tuple[Any, ...] = ()
    """Ed25519 public keys that sign ledger checkpoints (`--checkpoint-public-key`)."""
    hook_secrets_dir: pathlib.Path | None = None
    """One file per tenant name holding its rotation hook's secret (`--hook-secrets-dir`)."""
    tenantry_namespace: str = "tenantry-system"
    """Tenantry's own namespace: its ServiceAccounts alone may use platform-scoped Credentials."""
    keyring: pathlib.Path | None = None
    """The master keyring (file or mounted Secret directory) Credentials are decrypted with."""
    exchange_limit: ratelimit.Limit = ratelimit.EXCHANGE_PER_SERVICE_ACCOUNT
    token_review_cache: bool = True
    max_token_lifetime: int = tokenreview.MAX_LIFETIME
    """Seconds: the exchange refuses ServiceAccount tokens that live longer (`tokenreview`)."""
    signing_keyring: pathlib.Path | None = None
    """The mounted signing keyring (`--signing-keyring`), re-read on change (`api.signing`);
    None: `keys` came from `--signing-key-file` and never change."""
    replica: str = ""
    """This replica's name in its identity Lease (default: `signing.replica_id()`)."""


@dataclasses.dataclass
class Services:
    settings: Settings
    pool: Any
    passwords: passwords.Passwords
    hashing: asyncio.Semaphore
    oidc: oauth_clients.Clients = dataclasses.field(
        default_factory=lambda: oauth_clients.Clients(None))
    tenants: Any = None
    """`tenants.TenantWatch` (anything with a `directory` and `synced`)."""
    ledger: audit.AuthLedger = dataclasses.field(default_factory=lambda: audit.AuthLedger(None))
    ledger_pool: Any = None
    """The audit ledger (its app role), for reading it; None with --no-ledger."""
    kube: Any = None
    """The API's kubernetes_asyncio ApiClient (its own identity); None without a Tenant watch."""
    hub: Any = None
    """`stream.Hub`: the process's LISTEN on the ledger, for WebSocket subscribers."""
    kube_api: Any = None
    """`tenantry.kubeapi.KubeApi` over `kube`: reads Credentials, Secrets, Namespaces."""
    credentials: Any = None
    """`credential_cache.CredentialCache`: Credentials, tenant namespaces, ciphertext."""
    reviewer: Any = None
    """`tokenreview.TokenReviewer` (ServiceAccount tokens, cached)."""
    keys: Any = None
    """`crypto.reloading.Reloading[Keyring]`: the mounted keyring, re-read when it changes."""

    @property
    def directory(self) -> memberships.Directory:
        if self.tenants is None:
            return memberships.Directory()
        found: memberships.Directory = self.tenants.directory
        return found


async def services(request: Request) -> Services:
    # async: FastAPI runs a plain `def` dependency in its thread pool, on every request.
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
    """Who is calling: a signed-in user (`claims`, `groups`) or an API key (`key`)."""

    user: store.User
    """The user, or for an API key its creator."""
    claims: rfc9068.AccessClaims | None = None
    groups: tuple[str, ...] = ()
    key: store.KeyGrant | None = None

    @property
    def identity(self) -> memberships.Identity:
        groups = self.key.creator_groups if self.key else self.groups
        return memberships.Identity(username=self.user.username, groups=frozenset(groups))

    @property
    def name(self) -> str:
        """How the caller is named in responses and the ledger (an API key by its prefix)."""
        return f"api-key:{self.key.prefix}" if self.key else self.user.username

    def ledger_identity(self) -> dict[str, str]:
        if self.key is not None:
            return events.api_key_identity(self.key.prefix)
        assert self.claims is not None
        return events.token_identity(self.claims.jti)

    def is_platform_admin(self, settings: Settings) -> bool:
        if self.key is not None:  # a key is bound to one tenant: never cross-tenant
            return False
        return (self.user.username in settings.platform_admins
                or not settings.platform_admin_groups.isdisjoint(self.groups))

    def role_in(self, tenant: str, svc: Services) -> Role | None:
        """The caller's role in `tenant` now (None: none)."""
        directory = svc.directory
        if not directory.exists(tenant):
            return None
        if self.key is not None:
            if self.key.tenant != tenant:
                return None
            creator = Caller(user=self.user, groups=self.key.creator_groups)
            return memberships.lower(Role(self.key.role), creator.role_in(tenant, svc))
        if self.is_platform_admin(svc.settings):
            return Role.OWNER
        return directory.role(tenant, self.identity)


def _unauthorized(error: str | None, description: str) -> HTTPException:
    challenge = 'Bearer realm="tenantry"'
    if error:
        challenge += f', error="{error}", error_description="{description}"'
    return HTTPException(status_code=401, detail=description,
                         headers={"WWW-Authenticate": challenge})


async def _api_key_caller(request: Request, svc: Services, token: str) -> Caller:
    if not apikeys.well_formed(token):
        log.info("API key refused: malformed (request %s)", request_id(request))
        raise _unauthorized("invalid_token", "invalid API key")
    grant = await store.authenticate_api_key(svc.pool, apikeys.key_hash(token))
    if grant is None:
        log.info("API key refused: unknown, revoked or expired (request %s)",
                 request_id(request))
        raise _unauthorized("invalid_token", "invalid API key")
    creator = store.User(id=grant.creator_id, username=grant.creator, password_hash=None,
                         disabled=False)
    return Caller(user=creator, key=grant)


async def caller(request: Request,
                 svc: Annotated[Services, Depends(services)]) -> Caller:
    header = request.headers.get("authorization")
    if not header:
        raise _unauthorized(None, "authentication required")
    scheme, _, token = header.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise _unauthorized("invalid_request", "expected Authorization: Bearer <token>")
    if apikeys.looks_like_key(token):
        return await _api_key_caller(request, svc, token)
    if scoped.kind_of(token) == scoped.PARTICIPANT:
        try:
            scoped.verify(token, svc.settings.keys.verification_keys(), svc.settings.policy,
                          scoped.PARTICIPANT)
        except rfc9068.TokenInvalid:
            raise _unauthorized("invalid_token", "invalid participant token") from None
        raise HTTPException(status_code=403, detail=PARTICIPANT_ONLY)
    try:
        claims = rfc9068.verify(token, svc.settings.keys.verification_keys(),
                                svc.settings.policy)
        user_id, session = uuid.UUID(claims.subject), uuid.UUID(claims.session_id)
    except rfc9068.TokenInvalid as invalid:
        log.info("access token refused: %s (request %s)", invalid.reason, request_id(request))
        raise _unauthorized("invalid_token", "invalid access token") from None
    except ValueError:
        raise _unauthorized("invalid_token", "invalid access token") from None
    live = await store.session_user(svc.pool, user_id, session, claims.jti)
    if live is None:
        log.info("access token refused: revoked or user disabled (request %s)",
                 request_id(request))
        raise _unauthorized("invalid_token", "invalid access token")
    return Caller(user=live.user, claims=claims, groups=live.groups)


PARTICIPANT_ONLY = ("a participant token can only read (or, for a participant-scoped "
                    "Credential, exchange) the one resource it was issued for")

CurrentCaller = Annotated[Caller, Depends(caller)]
CurrentServices = Annotated[Services, Depends(services)]


async def user_session(who: CurrentCaller) -> Caller:
    """Only a signed-in user (not an API key): for what a key must not do to itself (sign
    out, mint or revoke keys)."""
    if who.key is not None:
        raise HTTPException(status_code=403, detail="an API key cannot do this; sign in")
    return who


SessionCaller = Annotated[Caller, Depends(user_session)]


@dataclasses.dataclass(frozen=True)
class TenantAccess:
    """A caller allowed into one tenant, with the role they hold there now."""

    tenant: str
    role: Role
    caller: Caller


def tenant_role(minimum: Role) -> Any:
    """The dependency of a route under `/v1/tenants/{tenant}` that needs at least `minimum`."""

    async def check(tenant: Annotated[str, Path(min_length=1, max_length=253,
                                                pattern=TENANT_NAME)],
                    request: Request, who: CurrentCaller,
                    svc: CurrentServices) -> TenantAccess:
        return await require_role(tenant, minimum, request, who, svc)

    return Depends(check)


async def require_role(tenant: str, minimum: Role, request: Request, who: Caller,
                       svc: Services) -> TenantAccess:
    """`who` in `tenant` with at least `minimum` (403 otherwise), drawing from the tenant's
    request quota (429 when it is used up)."""
    role = who.role_in(tenant, svc)
    if not memberships.at_least(role, minimum):
        log.info("refused: %s holds %s in tenant %s, the route needs %s (request %s)",
                 who.name, role.value if role else "no role", tenant, minimum.value,
                 request_id(request))
        raise HTTPException(status_code=403,
                            detail=f"this needs the {minimum.value} role in the tenant")
    assert role is not None
    decision = await store.take_token(svc.pool, f"tenant:{tenant}",
                                      svc.settings.tenant_limit)
    add_response_headers(request, decision.headers())
    if not decision.allowed:
        metrics.RATE_LIMITED.labels("tenant").inc()
        await svc.ledger.rate_limited(f"tenant:{tenant}", audit.event(
            actor=who.name, identity=who.ledger_identity(), action=audit.RATE_LIMITED,
            kind="RateLimit", name="tenant", tenant=tenant,
            source_ip=client_address(request), request_id=request_id(request)))
        raise HTTPException(status_code=429, detail="tenant request quota exceeded",
                            headers=decision.headers())
    return TenantAccess(tenant=tenant, role=role, caller=who)


TENANT_NAME = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"
