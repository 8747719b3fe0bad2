"""The API pod's tables as versioned migrations, run by the ledger's migration runner.

Everything lives in schema `api`, owned by the NOLOGIN role `tenantry_api_owner`; the API
connects as `tenantry_api`, which gets exactly `COMPONENT.table_grants` and nothing on the
ledger's schema (`tenantry db migrate` runs both components; see `tenantry.ledger.migrations`).

What is stored, and why it is safe to store:

- `users`: a password hash only (Argon2id, or an imported bcrypt hash until the next login),
  never a password. `username` is the normalised login name (see `passwords.normalise`).
- `refresh_families` / `refresh_tokens`: one family per login (a session); each opaque refresh
  token is kept as its SHA-256 only (a 256-bit random value needs no slow hash), with the
  family, its generation and when it was used (RFC 9700 section 4.14.2 rotation).
- `revoked_jtis`: access-token ids revoked before they expire; a row is useless after
  `expires_at`, so the API deletes expired rows.
- `login_throttle`: consecutive failures per (login name, client IP), for `throttle`.
- `rate_buckets`: token buckets (`ratelimit`), shared by every replica.
- `api_keys`: SHA-256 of the key, its public prefix for listings; bound to one tenant.
- `oauth_states` (v2): a started external sign-in, keyed by the SHA-256 of its `state`, with its
  nonce, PKCE verifier and the SHA-256 of the browser-binding cookie; deleted when used (single
  use) and useless after `expires_at` (10 minutes). The verifier alone redeems nothing: it needs
  the code, which only the provider's redirect carries.
- `user_identities` (v2): (provider, sub) -> user, at most one identity per provider per user.

No DELETE on users or families for the app role: revocation is a state, not a deletion.
"""

from __future__ import annotations

from tenantry.ledger import migrations
from tenantry.ledger.schema import Migration

SCHEMA = "api"

_V1 = r"""
REVOKE ALL ON SCHEMA api FROM PUBLIC;

CREATE TABLE api.users (
    id              uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    username        text NOT NULL UNIQUE
                    CHECK (username = lower(username) AND length(username) BETWEEN 1 AND 254),
    password_hash   text CHECK (password_hash ~ '^\$(argon2id\$|2[aby]\$)'),
    disabled        boolean NOT NULL DEFAULT false,
    created_at      timestamptz NOT NULL DEFAULT clock_timestamp(),
    updated_at      timestamptz NOT NULL DEFAULT clock_timestamp()
);

CREATE TABLE api.refresh_families (
    id              uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id         uuid NOT NULL REFERENCES api.users (id),
    generation      integer NOT NULL DEFAULT 1 CHECK (generation >= 1),
    created_at      timestamptz NOT NULL DEFAULT clock_timestamp(),
    revoked_at      timestamptz,
    revoked_reason  text CHECK (revoked_reason IN ('logout', 'reuse', 'admin', 'disabled')),
    CHECK ((revoked_at IS NULL) = (revoked_reason IS NULL))
);
CREATE INDEX refresh_families_user ON api.refresh_families (user_id);

CREATE TABLE api.refresh_tokens (
    token_hash      bytea PRIMARY KEY CHECK (length(token_hash) = 32),
    family_id       uuid NOT NULL REFERENCES api.refresh_families (id),
    generation      integer NOT NULL CHECK (generation >= 1),
    issued_at       timestamptz NOT NULL DEFAULT clock_timestamp(),
    expires_at      timestamptz NOT NULL,
    used_at         timestamptz,
    grace_used      boolean NOT NULL DEFAULT false,
    UNIQUE (family_id, generation, token_hash)
);
CREATE INDEX refresh_tokens_family ON api.refresh_tokens (family_id);

CREATE TABLE api.revoked_jtis (
    jti             text PRIMARY KEY CHECK (length(jti) BETWEEN 1 AND 128),
    expires_at      timestamptz NOT NULL,
    revoked_at      timestamptz NOT NULL DEFAULT clock_timestamp(),
    reason          text NOT NULL
);
CREATE INDEX revoked_jtis_expiry ON api.revoked_jtis (expires_at);

CREATE TABLE api.login_throttle (
    username        text NOT NULL,
    client_ip       inet NOT NULL,
    failures        integer NOT NULL CHECK (failures >= 0),
    last_failure_at timestamptz NOT NULL,
    locked_until    timestamptz,
    PRIMARY KEY (username, client_ip)
);

CREATE TABLE api.rate_buckets (
    key             text PRIMARY KEY CHECK (length(key) BETWEEN 1 AND 300),
    tokens          double precision NOT NULL,
    updated_at      timestamptz NOT NULL,
    allowed         boolean NOT NULL
);

CREATE TABLE api.api_keys (
    id              uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    prefix          text NOT NULL UNIQUE CHECK (prefix ~ '^tnt_[A-Za-z0-9]{8}$'),
    key_hash        bytea NOT NULL UNIQUE CHECK (length(key_hash) = 32),
    tenant          text NOT NULL CHECK (tenant <> ''),
    role            text NOT NULL CHECK (role IN ('owner', 'admin', 'member', 'viewer')),
    name            text NOT NULL DEFAULT '',
    created_by      uuid NOT NULL REFERENCES api.users (id),
    created_at      timestamptz NOT NULL DEFAULT clock_timestamp(),
    expires_at      timestamptz,
    last_used_at    timestamptz,
    revoked_at      timestamptz
);
CREATE INDEX api_keys_tenant ON api.api_keys (tenant);
"""

_V2 = r"""
CREATE TABLE api.oauth_states (
    state_hash      bytea PRIMARY KEY CHECK (length(state_hash) = 32),
    provider        text NOT NULL CHECK (length(provider) BETWEEN 1 AND 32),
    browser_hash    bytea NOT NULL CHECK (length(browser_hash) = 32),
    nonce           text NOT NULL CHECK (length(nonce) BETWEEN 22 AND 128),
    code_verifier   text NOT NULL CHECK (length(code_verifier) BETWEEN 43 AND 128),
    created_at      timestamptz NOT NULL DEFAULT clock_timestamp(),
    expires_at      timestamptz NOT NULL
);
CREATE INDEX oauth_states_expiry ON api.oauth_states (expires_at);

CREATE TABLE api.user_identities (
    provider        text NOT NULL CHECK (length(provider) BETWEEN 1 AND 32),
    subject         text NOT NULL CHECK (length(subject) BETWEEN 1 AND 255),
    user_id         uuid NOT NULL REFERENCES api.users (id),
    created_at      timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (provider, subject),
    UNIQUE (provider, user_id)
);
"""

MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "api: users, refresh families and tokens, revoked jtis, throttle, rate "
                 "buckets, api keys", _V1),
    Migration(2, "api: external sign-in (OIDC) states and linked identities", _V2),
)

#: Exactly what the API's app role may do; `migrations` revokes everything else on every run.
APP_TABLE_GRANTS: tuple[tuple[str, str], ...] = (
    ("SELECT", "api.schema_migrations"),
    ("SELECT, INSERT, UPDATE", "api.users"),
    ("SELECT, INSERT, UPDATE", "api.refresh_families"),
    ("SELECT, INSERT, UPDATE, DELETE", "api.refresh_tokens"),
    ("SELECT, INSERT, DELETE", "api.revoked_jtis"),
    ("SELECT, INSERT, UPDATE, DELETE", "api.login_throttle"),
    ("SELECT, INSERT, UPDATE, DELETE", "api.rate_buckets"),
    ("SELECT, INSERT, UPDATE", "api.api_keys"),
    ("SELECT, INSERT, DELETE", "api.oauth_states"),
    ("SELECT, INSERT", "api.user_identities"),
)

COMPONENT = migrations.Component(
    name="api", schema=SCHEMA, migrations=MIGRATIONS, table_grants=APP_TABLE_GRANTS,
    function_grants=(), default_owner_role="tenantry_api_owner",
    default_app_role="tenantry_api", command="tenantry db migrate")
