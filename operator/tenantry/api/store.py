"""The API's data access: every SQL statement the API runs, on an asyncpg pool or connection.

Nothing else in `tenantry.api` talks to PostgreSQL. Functions take a connection (or pool) and
plain values and return plain values; the rules they apply live in the pure modules
(`tokens.rfc9700.decide`, `throttle.lock_after`, `ratelimit.Limit`). Times are the database's
(`clock_timestamp()` / `statement_timestamp()`), so replicas agree without synchronised clocks.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import json
import uuid
from collections.abc import AsyncIterator, Sequence
from typing import Any

import asyncpg

from tenantry.api import ratelimit, schema, throttle
from tenantry.api.tokens import rfc9700
from tenantry.ledger import migrations

Conn = Any  # asyncpg.Connection or asyncpg.Pool (asyncpg ships no type hints)


async def _reset(conn: Any) -> None:
    """What a connection needs when it returns to the pool: nothing, unless a transaction was
    left open. asyncpg's default reset is a round trip per request (`RESET ALL`, unlisten,
    ...); the API changes no session state (only `SET LOCAL`, which ends with its
    transaction) and never LISTENs on pooled connections."""
    if conn.is_in_transaction():
        await conn.execute("ROLLBACK")


async def create_pool(dsn: str, *, min_size: int = 1, max_size: int = 10) -> Any:
    """A pool whose connections all run with a bounded statement time."""
    return await asyncpg.create_pool(
        dsn, min_size=min_size, max_size=max_size, reset=_reset,
        server_settings={"application_name": "tenantry-api", "statement_timeout": "5000",
                         "idle_in_transaction_session_timeout": "10000"})


async def require_schema(conn: Conn) -> None:
    """MigrationError unless the API's schema is current (`tenantry db migrate`)."""
    await migrations.require_current(conn, schema.COMPONENT)


# -- users ---------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class User:
    id: uuid.UUID
    username: str
    password_hash: str | None
    disabled: bool


def _user(row: Any) -> User | None:
    if row is None:
        return None
    return User(id=row["id"], username=row["username"], password_hash=row["password_hash"],
                disabled=row["disabled"])


async def find_user(conn: Conn, username: str) -> User | None:
    return _user(await conn.fetchrow(
        "SELECT id, username, password_hash, disabled FROM api.users WHERE username = $1",
        username))


async def get_user(conn: Conn, user_id: uuid.UUID) -> User | None:
    return _user(await conn.fetchrow(
        "SELECT id, username, password_hash, disabled FROM api.users WHERE id = $1", user_id))


async def upsert_password_user(conn: Conn, username: str, password_hash: str, *,
                               replace: bool) -> tuple[uuid.UUID, bool]:
    """Create the user (or, with `replace`, set an existing user's password); returns
    (id, created). Without `replace`, an existing user raises UniqueViolationError."""
    if replace:
        row = await conn.fetchrow(
            "INSERT INTO api.users (username, password_hash) VALUES ($1, $2) "
            "ON CONFLICT (username) DO UPDATE SET password_hash = EXCLUDED.password_hash, "
            "updated_at = clock_timestamp() RETURNING id, (xmax = 0) AS created",
            username, password_hash)
    else:
        row = await conn.fetchrow(
            "INSERT INTO api.users (username, password_hash) VALUES ($1, $2) "
            "RETURNING id, true AS created", username, password_hash)
    return row["id"], row["created"]


async def set_password_hash(conn: Conn, user_id: uuid.UUID, old_hash: str,
                            new_hash: str) -> None:
    """Replace the hash if it is still `old_hash` (a concurrent change wins)."""
    await conn.execute(
        "UPDATE api.users SET password_hash = $3, updated_at = clock_timestamp() "
        "WHERE id = $1 AND password_hash = $2", user_id, old_hash, new_hash)


# -- login throttle ------------------------------------------------------------------------------

async def throttle_wait(conn: Conn, username: str, client_ip: str) -> float:
    """Seconds the (name, IP) pair is still locked for (0: not locked)."""
    wait = await conn.fetchval(
        "SELECT extract(epoch FROM locked_until - clock_timestamp())::float8 "
        "FROM api.login_throttle WHERE username = $1 AND client_ip = $2::inet "
        "AND locked_until > clock_timestamp()", username, client_ip)
    return float(wait or 0.0)


async def throttle_failure(conn: Conn, username: str, client_ip: str) -> int:
    """Count a failure; lock the pair per `throttle.lock_after`. Returns the failure count."""
    async with _acquire(conn) as c, c.transaction():
        failures = await c.fetchval(
            "INSERT INTO api.login_throttle AS t (username, client_ip, failures, "
            "last_failure_at) VALUES ($1, $2::inet, 1, clock_timestamp()) "
            "ON CONFLICT (username, client_ip) DO UPDATE SET "
            "failures = CASE WHEN t.last_failure_at < clock_timestamp() - $3::interval "
            "THEN 1 ELSE t.failures + 1 END, last_failure_at = clock_timestamp() "
            "RETURNING failures", username, client_ip, throttle.FORGET_AFTER)
        lock = throttle.lock_after(failures)
        if lock:
            await c.execute(
                "UPDATE api.login_throttle SET locked_until = clock_timestamp() + $3::interval "
                "WHERE username = $1 AND client_ip = $2::inet", username, client_ip, lock)
    return int(failures)


async def throttle_clear(conn: Conn, username: str, client_ip: str) -> None:
    await conn.execute("DELETE FROM api.login_throttle WHERE username = $1 "
                       "AND client_ip = $2::inet", username, client_ip)


class _Same:
    """`async with` over an already acquired connection."""

    def __init__(self, conn: Conn) -> None:
        self.conn = conn

    async def __aenter__(self) -> Conn:
        return self.conn

    async def __aexit__(self, *exc: object) -> None:
        return None


def _acquire(conn: Conn) -> Any:
    return conn.acquire() if hasattr(conn, "acquire") else _Same(conn)


# -- refresh families ----------------------------------------------------------------------------

async def start_family(conn: Conn, user_id: uuid.UUID, token_hash: bytes,
                       groups: tuple[str, ...] = ()) -> uuid.UUID:
    """A new session (refresh family) for the user, with its first refresh token and the
    identity provider's groups of this sign-in (none for a password login)."""
    async with _acquire(conn) as c, c.transaction():
        family = await c.fetchval(
            "INSERT INTO api.refresh_families (user_id, groups) VALUES ($1, $2) RETURNING id",
            user_id, list(groups))
        await c.execute(
            "INSERT INTO api.refresh_tokens (token_hash, family_id, generation, expires_at) "
            "VALUES ($1, $2, 1, clock_timestamp() + $3::interval)",
            token_hash, family, rfc9700.LIFETIME)
    return uuid.UUID(str(family))


@dataclasses.dataclass(frozen=True)
class Rotation:
    outcome: rfc9700.Outcome
    family_id: uuid.UUID | None = None
    user: User | None = None
    groups: tuple[str, ...] = ()


async def rotate(conn: Conn, token_hash: bytes, new_hash: bytes,
                 grace: datetime.timedelta) -> Rotation:
    """Present a refresh token: rotate it, or refuse it, revoking the family on reuse.

    The token's and family's rows are locked for the decision, so two concurrent uses of one
    token are decided one after the other (the second sees the first's use).
    """
    async with _acquire(conn) as c, c.transaction():
        row = await c.fetchrow(
            "SELECT t.family_id, t.generation, t.expires_at, t.used_at, t.grace_used, "
            "f.generation AS family_generation, f.revoked_at IS NOT NULL AS family_revoked, "
            "f.groups, u.id AS user_id, u.username, u.password_hash, u.disabled, "
            "clock_timestamp() AS now "
            "FROM api.refresh_tokens t JOIN api.refresh_families f ON f.id = t.family_id "
            "JOIN api.users u ON u.id = f.user_id WHERE t.token_hash = $1 "
            "FOR UPDATE OF t, f", token_hash)
        if row is None:
            return Rotation(rfc9700.Outcome.UNKNOWN)
        stored = rfc9700.Stored(
            generation=row["generation"], expires_at=row["expires_at"], used_at=row["used_at"],
            grace_used=row["grace_used"], family_generation=row["family_generation"],
            family_revoked=row["family_revoked"] or row["disabled"])
        outcome = rfc9700.decide(stored, row["now"], grace)
        family = row["family_id"]
        user = User(id=row["user_id"], username=row["username"],
                    password_hash=row["password_hash"], disabled=row["disabled"])
        if outcome is rfc9700.Outcome.ROTATE:
            generation = row["family_generation"] + 1
            await c.execute("UPDATE api.refresh_tokens SET used_at = clock_timestamp() "
                            "WHERE token_hash = $1", token_hash)
            await c.execute("UPDATE api.refresh_families SET generation = $2 WHERE id = $1",
                            family, generation)
        elif outcome is rfc9700.Outcome.GRACE:
            generation = row["family_generation"]
            await c.execute("UPDATE api.refresh_tokens SET grace_used = true "
                            "WHERE token_hash = $1", token_hash)
        else:
            if outcome is rfc9700.Outcome.REUSED:
                await _revoke_family(c, family, "reuse")
            return Rotation(outcome, family_id=family, user=user, groups=tuple(row["groups"]))
        await c.execute(
            "INSERT INTO api.refresh_tokens (token_hash, family_id, generation, expires_at) "
            "VALUES ($1, $2, $3, clock_timestamp() + $4::interval)",
            new_hash, family, generation, rfc9700.LIFETIME)
    return Rotation(outcome, family_id=family, user=user, groups=tuple(row["groups"]))


async def _revoke_family(conn: Conn, family_id: uuid.UUID, reason: str) -> bool:
    status = await conn.execute(
        "UPDATE api.refresh_families SET revoked_at = clock_timestamp(), revoked_reason = $2 "
        "WHERE id = $1 AND revoked_at IS NULL", family_id, reason)
    return bool(status != "UPDATE 0")


async def revoke_session(conn: Conn, family_id: uuid.UUID, jti: str, jti_expires_at: int,
                         reason: str) -> None:
    """Logout: the family (so every refresh token and access token of the session) and the
    presented access token's jti."""
    async with _acquire(conn) as c, c.transaction():
        await _revoke_family(c, family_id, reason)
        await revoke_jti(c, jti, jti_expires_at, reason)


async def revoke_jti(conn: Conn, jti: str, expires_at: int, reason: str) -> None:
    await conn.execute(
        "INSERT INTO api.revoked_jtis (jti, expires_at, reason) "
        "VALUES ($1, to_timestamp($2), $3) ON CONFLICT (jti) DO NOTHING",
        jti, expires_at, reason)


@dataclasses.dataclass(frozen=True)
class Session:
    """A live session's user and the groups its sign-in reported."""

    user: User
    groups: tuple[str, ...]


async def session_user(conn: Conn, user_id: uuid.UUID, family_id: uuid.UUID,
                       jti: str) -> Session | None:
    """The session of a verified access token, or None when the token is revoked (its jti, or
    its session), the session is not the user's, or the user is disabled. One query per
    request: revocation on any replica is seen by every replica at the next request."""
    row = await conn.fetchrow(
        "SELECT u.id, u.username, u.password_hash, u.disabled, f.groups "
        "FROM api.refresh_families f "
        "JOIN api.users u ON u.id = f.user_id WHERE f.id = $1 AND u.id = $2 "
        "AND f.revoked_at IS NULL AND NOT u.disabled "
        "AND NOT EXISTS (SELECT 1 FROM api.revoked_jtis r WHERE r.jti = $3)",
        family_id, user_id, jti)
    user = _user(row)
    return None if user is None else Session(user=user, groups=tuple(row["groups"]))


async def remember_access_token(conn: Conn, jti: str, user_id: uuid.UUID,
                                family_id: uuid.UUID, expires_at: int) -> None:
    """Note an issued access token's jti (never the token), for `/v1/tokens/revoke`."""
    await conn.execute(
        "INSERT INTO api.access_tokens (jti, user_id, family_id, expires_at) "
        "VALUES ($1, $2, $3, to_timestamp($4))", jti, user_id, family_id, expires_at)


@dataclasses.dataclass(frozen=True)
class IssuedToken:
    jti: str
    user: User
    groups: tuple[str, ...]
    expires_at: int
    revoked: bool


async def issued_token(conn: Conn, jti: str) -> IssuedToken | None:
    """Whose access token `jti` is (None: never issued here, or purged after expiry)."""
    row = await conn.fetchrow(
        "SELECT u.id, u.username, u.password_hash, u.disabled, f.groups, "
        "extract(epoch FROM a.expires_at)::bigint AS expires_at, "
        "EXISTS (SELECT 1 FROM api.revoked_jtis r WHERE r.jti = a.jti) AS revoked "
        "FROM api.access_tokens a JOIN api.users u ON u.id = a.user_id "
        "JOIN api.refresh_families f ON f.id = a.family_id WHERE a.jti = $1", jti)
    user = _user(row)
    if user is None:
        return None
    return IssuedToken(jti=jti, user=user, groups=tuple(row["groups"]),
                       expires_at=int(row["expires_at"]), revoked=row["revoked"])


# -- external sign-in (OIDC) ---------------------------------------------------------------------

async def oauth_begin(conn: Conn, *, state_hash: bytes, provider: str, browser_hash: bytes,
                      nonce: str, code_verifier: str, ttl: datetime.timedelta,
                      cli_redirect: str | None = None,
                      cli_challenge: str | None = None) -> None:
    await conn.execute(
        "INSERT INTO api.oauth_states (state_hash, provider, browser_hash, nonce, "
        "code_verifier, expires_at, cli_redirect, cli_challenge) "
        "VALUES ($1, $2, $3, $4, $5, clock_timestamp() + $6, $7, $8)",
        state_hash, provider, browser_hash, nonce, code_verifier, ttl, cli_redirect,
        cli_challenge)


@dataclasses.dataclass(frozen=True)
class OAuthState:
    browser_hash: bytes
    nonce: str
    code_verifier: str = dataclasses.field(repr=False)
    live: bool
    cli_redirect: str | None = None
    cli_challenge: str | None = None


async def oauth_consume(conn: Conn, state_hash: bytes, provider: str) -> OAuthState | None:
    """Take a started sign-in by its state, once: the row is deleted whatever happens next, so
    a replayed state finds nothing. `live` is false when it expired."""
    row = await conn.fetchrow(
        "DELETE FROM api.oauth_states WHERE state_hash = $1 AND provider = $2 "
        "RETURNING browser_hash, nonce, code_verifier, expires_at > clock_timestamp() AS live, "
        "cli_redirect, cli_challenge", state_hash, provider)
    if row is None:
        return None
    return OAuthState(browser_hash=row["browser_hash"], nonce=row["nonce"],
                      code_verifier=row["code_verifier"], live=row["live"],
                      cli_redirect=row["cli_redirect"], cli_challenge=row["cli_challenge"])


async def cli_code_issue(conn: Conn, *, code_hash: bytes, user_id: uuid.UUID,
                         groups: tuple[str, ...], provider: str, challenge: str,
                         ttl: datetime.timedelta) -> None:
    await conn.execute(
        "INSERT INTO api.cli_codes (code_hash, user_id, groups, provider, challenge, "
        "expires_at) VALUES ($1, $2, $3, $4, $5, clock_timestamp() + $6)",
        code_hash, user_id, list(groups), provider, challenge, ttl)


@dataclasses.dataclass(frozen=True)
class CliCode:
    user: User
    groups: tuple[str, ...]
    provider: str
    challenge: str
    live: bool


async def cli_code_redeem(conn: Conn, code_hash: bytes) -> CliCode | None:
    """Take a command-line sign-in code, once (deleted whatever happens next)."""
    row = await conn.fetchrow(
        "WITH taken AS (DELETE FROM api.cli_codes WHERE code_hash = $1 RETURNING *) "
        "SELECT u.id, u.username, u.password_hash, u.disabled, t.groups, t.provider, "
        "t.challenge, t.expires_at > clock_timestamp() AS live "
        "FROM taken t JOIN api.users u ON u.id = t.user_id", code_hash)
    user = _user(row)
    if user is None:
        return None
    return CliCode(user=user, groups=tuple(row["groups"]), provider=row["provider"],
                   challenge=row["challenge"], live=row["live"])


class IdentityConflict(Exception):
    """The user already holds another identity at this provider."""


async def oauth_user(conn: Conn, provider: str, subject: str, username: str) -> User:
    """The user of identity (provider, subject): the linked one, or else the user named
    `username` (created without a password if absent), linked now (see `oauth.linking`)."""
    lookup = ("SELECT u.id, u.username, u.password_hash, u.disabled FROM api.user_identities i "
              "JOIN api.users u ON u.id = i.user_id WHERE i.provider = $1 AND i.subject = $2")
    async with _acquire(conn) as c, c.transaction():
        linked = _user(await c.fetchrow(lookup, provider, subject))
        if linked is not None:
            return linked
        row = await c.fetchrow(
            "INSERT INTO api.users (username) VALUES ($1) ON CONFLICT (username) "
            "DO UPDATE SET username = EXCLUDED.username "
            "RETURNING id, username, password_hash, disabled", username)
        await c.execute(
            "INSERT INTO api.user_identities (provider, subject, user_id) VALUES ($1, $2, $3) "
            "ON CONFLICT DO NOTHING", provider, subject, row["id"])
        linked = _user(await c.fetchrow(lookup, provider, subject))
    if linked is None:
        raise IdentityConflict(f"user {username} already has another {provider} identity")
    return linked


# -- API keys (a tenant table: row-level security) ------------------------------------------------

@contextlib.asynccontextmanager
async def tenant_scope(conn: Conn, tenant: str) -> AsyncIterator[Any]:
    """A transaction whose statements see only `tenant`'s rows of tenant tables (the RLS policy
    reads `tenantry.tenant`; without it they see nothing)."""
    async with _acquire(conn) as c, c.transaction():
        await c.execute("SELECT set_config('tenantry.tenant', $1, true)", tenant)
        yield c


@dataclasses.dataclass(frozen=True)
class ApiKey:
    id: uuid.UUID
    prefix: str
    tenant: str
    role: str
    name: str
    created_by: str
    created_at: datetime.datetime
    expires_at: datetime.datetime | None
    last_used_at: datetime.datetime | None
    revoked_at: datetime.datetime | None


_KEY_COLUMNS = ("k.id, k.prefix, k.tenant, k.role, k.name, u.username AS created_by, "
                "k.created_at, k.expires_at, k.last_used_at, k.revoked_at")


def _api_key(row: Any) -> ApiKey:
    return ApiKey(**{field.name: row[field.name] for field in dataclasses.fields(ApiKey)})


async def create_api_key(conn: Conn, *, tenant: str, prefix: str, key_hash: bytes, role: str,
                         name: str, created_by: uuid.UUID, created_by_groups: tuple[str, ...],
                         expires_in: datetime.timedelta | None) -> ApiKey:
    async with tenant_scope(conn, tenant) as c:
        key_id = await c.fetchval(
            "INSERT INTO api.api_keys (prefix, key_hash, tenant, role, name, created_by, "
            "created_by_groups, expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7, "
            "clock_timestamp() + $8::interval) RETURNING id",
            prefix, key_hash, tenant, role, name, created_by, list(created_by_groups),
            expires_in)
        row = await c.fetchrow(f"SELECT {_KEY_COLUMNS} FROM api.api_keys k "  # noqa: S608
                               "JOIN api.users u ON u.id = k.created_by WHERE k.id = $1", key_id)
    return _api_key(row)


async def list_api_keys(conn: Conn, tenant: str) -> list[ApiKey]:
    async with tenant_scope(conn, tenant) as c:
        rows = await c.fetch(f"SELECT {_KEY_COLUMNS} FROM api.api_keys k "  # noqa: S608
                             "JOIN api.users u ON u.id = k.created_by "
                             "ORDER BY k.created_at, k.id")
    return [_api_key(row) for row in rows]


async def revoke_api_key(conn: Conn, tenant: str, key_id: uuid.UUID,
                         by: uuid.UUID) -> ApiKey | None:
    """Revoke a key of `tenant` (idempotent); None when the tenant has no such key."""
    async with tenant_scope(conn, tenant) as c:
        await c.execute("UPDATE api.api_keys SET revoked_at = clock_timestamp(), revoked_by = $2 "
                        "WHERE id = $1 AND revoked_at IS NULL", key_id, by)
        row = await c.fetchrow(f"SELECT {_KEY_COLUMNS} FROM api.api_keys k "  # noqa: S608
                               "JOIN api.users u ON u.id = k.created_by WHERE k.id = $1", key_id)
    return None if row is None else _api_key(row)


@dataclasses.dataclass(frozen=True)
class KeyGrant:
    """What a presented, live API key grants: one tenant, at most `role`, limited by what its
    creator (`creator`, with the groups of the session that created it) still holds."""

    id: uuid.UUID
    prefix: str
    tenant: str
    role: str
    creator_id: uuid.UUID
    creator: str
    creator_groups: tuple[str, ...]


async def authenticate_api_key(conn: Conn, key_hash: bytes) -> KeyGrant | None:
    row = await conn.fetchrow("SELECT * FROM api.authenticate_api_key($1)", key_hash)
    if row is None:
        return None
    return KeyGrant(id=row["id"], prefix=row["prefix"], tenant=row["tenant"], role=row["role"],
                    creator_id=row["created_by"], creator=row["creator"],
                    creator_groups=tuple(row["creator_groups"]))


# -- rate limits ---------------------------------------------------------------------------------

_TAKE = """
INSERT INTO api.rate_buckets AS b (key, tokens, updated_at, allowed)
VALUES ($1, $2::float8 - 1, statement_timestamp(), true)
ON CONFLICT (key) DO UPDATE SET
    allowed = least($2::float8, b.tokens + $3::float8 * greatest(0, extract(epoch FROM
        statement_timestamp() - b.updated_at)::float8)) >= 1,
    tokens = least($2::float8, b.tokens + $3::float8 * greatest(0, extract(epoch FROM
        statement_timestamp() - b.updated_at)::float8))
        - CASE WHEN least($2::float8, b.tokens + $3::float8 * greatest(0, extract(epoch FROM
              statement_timestamp() - b.updated_at)::float8)) >= 1 THEN 1 ELSE 0 END,
    updated_at = greatest(b.updated_at, statement_timestamp())
RETURNING allowed, tokens
"""


async def take_token(conn: Conn, key: str, limit: ratelimit.Limit) -> ratelimit.Decision:
    """One request against bucket `key`: refill, take a token if there is one (one statement)."""
    row = await conn.fetchrow(_TAKE, key, float(limit.capacity), limit.rate)
    return ratelimit.Decision(allowed=row["allowed"], limit=limit, tokens=row["tokens"])


# -- housekeeping --------------------------------------------------------------------------------

async def purge_expired(conn: Conn) -> None:
    """Drop rows that can no longer matter: revoked jtis past their token's expiry (plus the
    maximum skew), refresh tokens a day past expiry, full idle buckets, old throttle rows,
    expired external sign-in states."""
    await conn.execute(
        "DELETE FROM api.revoked_jtis WHERE expires_at < clock_timestamp() - interval '5 min'")
    await conn.execute(
        "DELETE FROM api.refresh_tokens WHERE expires_at < clock_timestamp() - interval '1 day'")
    await conn.execute(
        "DELETE FROM api.rate_buckets WHERE updated_at < clock_timestamp() - interval '1 day'")
    await conn.execute("DELETE FROM api.login_throttle WHERE last_failure_at < "
                       "clock_timestamp() - $1::interval", throttle.FORGET_AFTER)
    await conn.execute("DELETE FROM api.oauth_states WHERE expires_at < clock_timestamp()")
    await conn.execute("DELETE FROM api.cli_codes WHERE expires_at < clock_timestamp()")
    await conn.execute(
        "DELETE FROM api.access_tokens WHERE expires_at < clock_timestamp() - interval '5 min'")
    await conn.execute("SELECT api.purge_participant_tokens()")


# -- the audit ledger, read-only (through the ledger's own app role and pool) -------------------

_ENTRY_COLUMNS = ("seq, event_time, actor, actor_kind, identity::text AS identity, action, "
                  "resource_kind, resource_namespace, resource_name, changes::text AS changes, "
                  "source_ip, request_id, component, prev_hash, hash")


async def ledger_entries(conn: Conn, chain: str, *, after: int | None, before: int | None,
                         newest_first: bool, limit: int, action: str | None,
                         actor: str | None) -> list[Any]:
    """One page of a chain's entries, by sequence number, optionally filtered (exact action or
    an action prefix ending in `.`, exact actor)."""
    clauses = ["chain = $1"]
    values: list[Any] = [chain]
    for clause, value in (("seq > ${}", after), ("seq < ${}", before), ("actor = ${}", actor)):
        if value is not None:
            values.append(value)
            clauses.append(clause.format(len(values)))
    if action is not None:
        values.append(action)
        clauses.append(f"(action = ${len(values)} OR (right(${len(values)}, 1) = '.' AND "
                       f"starts_with(action, ${len(values)})))")
    values.append(limit)
    order = "DESC" if newest_first else "ASC"
    return list(await conn.fetch(
        f"SELECT {_ENTRY_COLUMNS} FROM ledger.audit_log WHERE {' AND '.join(clauses)} "  # noqa: S608
        f"ORDER BY seq {order} LIMIT ${len(values)}", *values))



async def last_exchanges(conn: Conn, chain: str, action: str) -> list[Any]:
    """When each Credential of a tenant was last exchanged (from its ledger chain)."""
    return list(await conn.fetch(
        "SELECT resource_namespace AS namespace, resource_name AS name, max(event_time) AS at "
        "FROM ledger.audit_log WHERE chain = $1 AND action = $2 "
        "GROUP BY resource_namespace, resource_name", chain, action))


# -- deliveries of the signed rotation hook (a tenant table: row-level security) -----------------

@dataclasses.dataclass(frozen=True)
class HookDelivery:
    """An earlier delivery with the same Idempotency-Key: what it carried and was answered."""

    body_hash: bytes
    outcome: dict[str, Any] | None
    """The answer it was given; None while that delivery is still being acted on."""
    received_at: datetime.datetime


class SignatureReused(Exception):
    """A delivery whose signature an earlier one (under another Idempotency-Key) carried."""


async def claim_hook_delivery(conn: Conn, *, tenant: str, idempotency_key: str,
                              body_hash: bytes, signature_hash: bytes,
                              policy: str) -> HookDelivery | None:
    """Remember a delivery before acting on it: None when it is new (the caller acts, then
    `complete_hook_delivery` or `release_hook_delivery`), else the earlier delivery with this
    key; SignatureReused when only its signature was seen before."""
    async with tenant_scope(conn, tenant) as c:
        claimed = await c.fetchval(
            "INSERT INTO api.hook_deliveries (tenant, idempotency_key, body_hash, "
            "signature_hash, policy) VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING "
            "RETURNING true", tenant, idempotency_key, body_hash, signature_hash, policy)
        if claimed:
            return None
        row = await c.fetchrow(
            "SELECT body_hash, outcome::text AS outcome, received_at FROM api.hook_deliveries "
            "WHERE tenant = $1 AND idempotency_key = $2", tenant, idempotency_key)
    if row is None:
        raise SignatureReused()
    return HookDelivery(body_hash=bytes(row["body_hash"]),
                        outcome=None if row["outcome"] is None else json.loads(row["outcome"]),
                        received_at=row["received_at"])


async def complete_hook_delivery(conn: Conn, *, tenant: str, idempotency_key: str,
                                 outcome: dict[str, Any]) -> None:
    async with tenant_scope(conn, tenant) as c:
        await c.execute("UPDATE api.hook_deliveries SET outcome = $3::jsonb "
                        "WHERE tenant = $1 AND idempotency_key = $2", tenant, idempotency_key,
                        json.dumps(outcome))


async def release_hook_delivery(conn: Conn, *, tenant: str, idempotency_key: str) -> None:
    """Forget a delivery that was not acted on (refused or failed), so a retry may be."""
    async with tenant_scope(conn, tenant) as c:
        await c.execute("DELETE FROM api.hook_deliveries WHERE tenant = $1 AND "
                        "idempotency_key = $2 AND outcome IS NULL", tenant, idempotency_key)


HOOK_DELIVERY_RETENTION = datetime.timedelta(days=1)


async def purge_hook_deliveries(conn: Conn) -> int:
    """Drop deliveries past the retention (any replay of them fails its timestamp check)."""
    return int(await conn.fetchval("SELECT api.purge_hook_deliveries($1)",
                                   HOOK_DELIVERY_RETENTION))


# -- participant tokens and tickets --------------------------------------------------------------

async def record_participant_token(conn: Conn, *, jti: str, tenant: str, resource: str,
                                   role: str, issued_by: uuid.UUID, issuer_groups: Sequence[str],
                                   issued_with_key: uuid.UUID | None, expires_at: int) -> None:
    async with tenant_scope(conn, tenant) as c:
        await c.execute(
            "INSERT INTO api.participant_tokens (jti, tenant, resource, role, issued_by, "
            "issuer_groups, issued_with_key, expires_at) "
            "VALUES ($1, $2, $3, $4, $5, $6, $7, to_timestamp($8))",
            jti, tenant, resource, role, issued_by, list(issuer_groups), issued_with_key,
            expires_at)


@dataclasses.dataclass(frozen=True)
class ParticipantIssuer:
    """Who issued a live participant token: the user, the groups their role was judged with,
    and the API key they issued it with (None: signed in; revoked or expired: `key_live`)."""

    user: User
    groups: tuple[str, ...]
    key: KeyGrant | None = None
    key_live: bool = True


async def live_participant_token(conn: Conn, tenant: str, jti: str) -> ParticipantIssuer | None:
    """The issuer of participant token `jti` of `tenant` when it is recorded, unexpired and
    unrevoked; None otherwise."""
    async with tenant_scope(conn, tenant) as c:
        row = await c.fetchrow(
            "SELECT u.id, u.username, u.password_hash, u.disabled, t.issuer_groups, "
            "k.id AS key_id, k.prefix, k.role AS key_role, k.created_by_groups, "
            "k.id IS NOT NULL AND k.revoked_at IS NULL "
            "AND (k.expires_at IS NULL OR k.expires_at > clock_timestamp()) AS key_live "
            "FROM api.participant_tokens AS t JOIN api.users AS u ON u.id = t.issued_by "
            "LEFT JOIN api.api_keys AS k ON k.id = t.issued_with_key "
            "WHERE t.jti = $1 AND t.revoked_at IS NULL AND t.expires_at > clock_timestamp()",
            jti)
    user = _user(row)
    if user is None:
        return None
    groups = tuple(row["issuer_groups"])
    if row["key_id"] is None:
        return ParticipantIssuer(user, groups)
    key = KeyGrant(id=row["key_id"], prefix=row["prefix"], tenant=tenant, role=row["key_role"],
                   creator_id=user.id, creator=user.username,
                   creator_groups=tuple(row["created_by_groups"]))
    return ParticipantIssuer(user, groups, key=key, key_live=bool(row["key_live"]))


async def participant_token_tenant(conn: Conn, jti: str) -> str | None:
    found = await conn.fetchval("SELECT api.participant_token_tenant($1)", jti)
    return None if found is None else str(found)


async def revoke_participant_token(conn: Conn, tenant: str, jti: str,
                                   by: uuid.UUID) -> bool:
    """Revoke (idempotent); False when the tenant has no such token."""
    async with tenant_scope(conn, tenant) as c:
        found = await c.fetchval(
            "UPDATE api.participant_tokens SET revoked_at = coalesce(revoked_at, "
            "clock_timestamp()), revoked_by = coalesce(revoked_by, $2) WHERE jti = $1 "
            "RETURNING jti", jti, by)
    return found is not None


async def spend_jti(conn: Conn, jti: str, expires_at: int, reason: str) -> bool:
    """Use up a single-use token's jti: True the first time, False ever after (until purged,
    after the token expired anyway)."""
    spent = await conn.fetchval(
        "INSERT INTO api.revoked_jtis (jti, expires_at, reason) "
        "VALUES ($1, to_timestamp($2), $3) ON CONFLICT (jti) DO NOTHING RETURNING jti",
        jti, expires_at, reason)
    return spent is not None
