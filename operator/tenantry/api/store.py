"""The API's data access: every SQL statement the API runs, on an asyncpg pool or connection.

Nothing else in `tenantry.api` talks to PostgreSQL. Functions take a connection (or pool) and
plain values and return plain values; the rules they apply live in the pure modules
(`tokens.rfc9700.decide`, `throttle.lock_after`, `ratelimit.Limit`). Times are the database's
(`clock_timestamp()` / `statement_timestamp()`), so replicas agree without synchronised clocks.
"""

from __future__ import annotations

import dataclasses
import datetime
import uuid
from typing import Any

import asyncpg

from tenantry.api import ratelimit, schema, throttle
from tenantry.api.tokens import rfc9700
from tenantry.ledger import migrations

Conn = Any  # asyncpg.Connection or asyncpg.Pool (asyncpg ships no type hints)


async def create_pool(dsn: str, *, min_size: int = 1, max_size: int = 10) -> Any:
    """A pool whose connections all run with a bounded statement time."""
    return await asyncpg.create_pool(
        dsn, min_size=min_size, max_size=max_size,
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

async def start_family(conn: Conn, user_id: uuid.UUID, token_hash: bytes) -> uuid.UUID:
    """A new session (refresh family) for the user, with its first refresh token."""
    async with _acquire(conn) as c, c.transaction():
        family = await c.fetchval(
            "INSERT INTO api.refresh_families (user_id) VALUES ($1) RETURNING id", user_id)
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
            "u.id AS user_id, u.username, u.password_hash, u.disabled, clock_timestamp() AS now "
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
            return Rotation(outcome, family_id=family, user=user)
        await c.execute(
            "INSERT INTO api.refresh_tokens (token_hash, family_id, generation, expires_at) "
            "VALUES ($1, $2, $3, clock_timestamp() + $4::interval)",
            new_hash, family, generation, rfc9700.LIFETIME)
    return Rotation(outcome, family_id=family, user=user)


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


async def session_user(conn: Conn, user_id: uuid.UUID, family_id: uuid.UUID,
                       jti: str) -> User | None:
    """The user of a verified access token, or None when the token is revoked (its jti, or its
    session), the session is not the user's, or the user is disabled. One query per request."""
    row = await conn.fetchrow(
        "SELECT u.id, u.username, u.password_hash, u.disabled FROM api.refresh_families f "
        "JOIN api.users u ON u.id = f.user_id WHERE f.id = $1 AND u.id = $2 "
        "AND f.revoked_at IS NULL AND NOT u.disabled "
        "AND NOT EXISTS (SELECT 1 FROM api.revoked_jtis r WHERE r.jti = $3)",
        family_id, user_id, jti)
    return _user(row)


# -- external sign-in (OIDC) ---------------------------------------------------------------------

async def oauth_begin(conn: Conn, *, state_hash: bytes, provider: str, browser_hash: bytes,
                      nonce: str, code_verifier: str, ttl: datetime.timedelta) -> None:
    await conn.execute(
        "INSERT INTO api.oauth_states (state_hash, provider, browser_hash, nonce, "
        "code_verifier, expires_at) VALUES ($1, $2, $3, $4, $5, clock_timestamp() + $6)",
        state_hash, provider, browser_hash, nonce, code_verifier, ttl)


@dataclasses.dataclass(frozen=True)
class OAuthState:
    browser_hash: bytes
    nonce: str
    code_verifier: str = dataclasses.field(repr=False)
    live: bool


async def oauth_consume(conn: Conn, state_hash: bytes, provider: str) -> OAuthState | None:
    """Take a started sign-in by its state, once: the row is deleted whatever happens next, so
    a replayed state finds nothing. `live` is false when it expired."""
    row = await conn.fetchrow(
        "DELETE FROM api.oauth_states WHERE state_hash = $1 AND provider = $2 "
        "RETURNING browser_hash, nonce, code_verifier, expires_at > clock_timestamp() AS live",
        state_hash, provider)
    if row is None:
        return None
    return OAuthState(browser_hash=row["browser_hash"], nonce=row["nonce"],
                      code_verifier=row["code_verifier"], live=row["live"])


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
