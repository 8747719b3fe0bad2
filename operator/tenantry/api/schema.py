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
- `refresh_families.groups` (v3): the identity provider's groups of the session, as the sign-in
  reported them (prefixed per provider); Tenant members of kind Group match against them.
- `access_tokens` (v3): each issued access token's jti with its user, session and expiry (no
  token), so `/v1/tokens/revoke` can tell whose token a jti is; purged after expiry.
- `api_keys` (v3) is a tenant table behind row-level security: a statement sees and writes
  only rows of the tenant its transaction names (`SET LOCAL tenantry.tenant`), so a query that
  forgets its tenant returns nothing. The one cross-tenant read, authenticating a presented key
  by its hash, is the SECURITY DEFINER function `api.authenticate_api_key`. `created_by_groups`
  keeps the creator's groups at creation: a key never outranks what its creator still holds.
- `hook_deliveries` (v4): each accepted delivery of a pipeline's signed rotation hook, by
  (tenant, Idempotency-Key), with the SHA-256 of its body and of its signature (no secret, no
  body) and the answer it was given, so a replay does nothing and says what the first delivery
  did. A tenant table behind row-level security like `api_keys`; rows older than a day are
  dropped (`api.purge_hook_deliveries`, the one cross-tenant statement): by then any replay is
  refused by its timestamp anyway.
- `oauth_states.cli_*`, `cli_codes` (v6): a sign-in started by `tenantry login --oidc`: the
  command's loopback redirect and its PKCE challenge; after the provider's redirect, a one-time
  code (kept as its SHA-256, 60 seconds) that only the holder of the matching verifier redeems.
- `participant_tokens` (v5): each participant token's jti, tenant, resource and role (never the
  token), so it can be revoked and each use checked; a tenant table behind row-level security,
  with `api.participant_token_tenant` as the one cross-tenant lookup (by jti). `issuer_groups`
  and `issued_with_key` (v7): the issuer's groups as their role was judged at issue, and the API
  key they used; each use judges the issuer (and the key) again.

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

_V3 = r"""
ALTER TABLE api.refresh_families
    ADD COLUMN groups text[] NOT NULL DEFAULT '{}' CHECK (cardinality(groups) <= 256);

CREATE TABLE api.access_tokens (
    jti             text PRIMARY KEY CHECK (length(jti) BETWEEN 1 AND 128),
    user_id         uuid NOT NULL REFERENCES api.users (id),
    family_id       uuid NOT NULL REFERENCES api.refresh_families (id),
    expires_at      timestamptz NOT NULL
);
CREATE INDEX access_tokens_expiry ON api.access_tokens (expires_at);

ALTER TABLE api.api_keys
    ADD COLUMN created_by_groups text[] NOT NULL DEFAULT '{}',
    ADD COLUMN revoked_by uuid REFERENCES api.users (id),
    ADD CONSTRAINT api_keys_name_length CHECK (length(name) <= 100);

ALTER TABLE api.api_keys ENABLE ROW LEVEL SECURITY;
CREATE POLICY api_keys_of_tenant ON api.api_keys
    USING (tenant = current_setting('tenantry.tenant', true))
    WITH CHECK (tenant = current_setting('tenantry.tenant', true));

-- The one read across tenants: a presented key, by its hash. Runs as the owner (who is not
-- subject to the policy), returns only a live key's grant, and marks it used (at most once a
-- minute, so authentication is not a write per request).
CREATE FUNCTION api.authenticate_api_key(presented bytea)
RETURNS TABLE (id uuid, prefix text, tenant text, role text, created_by uuid,
               creator text, creator_groups text[])
LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, api AS $$
    WITH live AS (
        SELECT k.id, k.prefix, k.tenant, k.role, k.created_by, u.username AS creator,
               k.created_by_groups AS creator_groups, k.last_used_at
        FROM api.api_keys k JOIN api.users u ON u.id = k.created_by
        WHERE k.key_hash = presented AND k.revoked_at IS NULL AND NOT u.disabled
          AND (k.expires_at IS NULL OR k.expires_at > clock_timestamp())
    ), touched AS (
        UPDATE api.api_keys k SET last_used_at = clock_timestamp() FROM live
        WHERE k.id = live.id AND (live.last_used_at IS NULL
                                  OR live.last_used_at < clock_timestamp() - interval '1 min')
    )
    SELECT id, prefix, tenant, role, created_by, creator, creator_groups FROM live
$$;
REVOKE ALL ON FUNCTION api.authenticate_api_key(bytea) FROM PUBLIC;
"""

_V4 = r"""
CREATE TABLE api.hook_deliveries (
    tenant          text NOT NULL CHECK (length(tenant) BETWEEN 1 AND 253),
    idempotency_key text NOT NULL CHECK (idempotency_key ~ '^[A-Za-z0-9._:-]{8,128}$'),
    body_hash       bytea NOT NULL CHECK (length(body_hash) = 32),
    signature_hash  bytea NOT NULL UNIQUE CHECK (length(signature_hash) = 32),
    policy          text NOT NULL CHECK (length(policy) BETWEEN 3 AND 317),
    received_at     timestamptz NOT NULL DEFAULT clock_timestamp(),
    outcome         jsonb,
    PRIMARY KEY (tenant, idempotency_key)
);
CREATE INDEX hook_deliveries_received ON api.hook_deliveries (received_at);

ALTER TABLE api.hook_deliveries ENABLE ROW LEVEL SECURITY;
CREATE POLICY hook_deliveries_of_tenant ON api.hook_deliveries
    USING (tenant = current_setting('tenantry.tenant', true))
    WITH CHECK (tenant = current_setting('tenantry.tenant', true));

-- Housekeeping across tenants: drop deliveries older than `age` (owner rights, nothing else).
CREATE FUNCTION api.purge_hook_deliveries(age interval) RETURNS bigint
LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, api AS $$
    WITH gone AS (DELETE FROM api.hook_deliveries
                  WHERE received_at < clock_timestamp() - greatest(age, interval '1 hour')
                  RETURNING 1)
    SELECT count(*) FROM gone
$$;
REVOKE ALL ON FUNCTION api.purge_hook_deliveries(interval) FROM PUBLIC;
"""

_V5 = r"""
CREATE TABLE api.participant_tokens (
    jti             text PRIMARY KEY CHECK (length(jti) BETWEEN 1 AND 128),
    tenant          text NOT NULL CHECK (tenant <> ''),
    resource        text NOT NULL CHECK (length(resource) BETWEEN 1 AND 400),
    role            text NOT NULL CHECK (role IN ('viewer', 'member')),
    issued_by       uuid NOT NULL REFERENCES api.users (id),
    issued_at       timestamptz NOT NULL DEFAULT clock_timestamp(),
    expires_at      timestamptz NOT NULL,
    revoked_at      timestamptz,
    revoked_by      uuid REFERENCES api.users (id)
);
CREATE INDEX participant_tokens_expiry ON api.participant_tokens (expires_at);
ALTER TABLE api.participant_tokens ENABLE ROW LEVEL SECURITY;
CREATE POLICY participant_tokens_of_tenant ON api.participant_tokens
    USING (tenant = current_setting('tenantry.tenant', true))
    WITH CHECK (tenant = current_setting('tenantry.tenant', true));

-- The one read across tenants: which tenant a participant token's jti belongs to, for
-- /v1/tokens/revoke (the caller is then checked against that tenant).
CREATE FUNCTION api.participant_token_tenant(token_id text) RETURNS text
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, api AS $$
    SELECT tenant FROM api.participant_tokens WHERE jti = token_id
$$;
REVOKE ALL ON FUNCTION api.participant_token_tenant(text) FROM PUBLIC;

CREATE FUNCTION api.purge_participant_tokens() RETURNS bigint
LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, api AS $$
    WITH gone AS (DELETE FROM api.participant_tokens
                  WHERE expires_at < clock_timestamp() - interval '1 day' RETURNING 1)
    SELECT count(*) FROM gone
$$;
REVOKE ALL ON FUNCTION api.purge_participant_tokens() FROM PUBLIC;
"""

_V6 = r"""
ALTER TABLE api.oauth_states
    ADD COLUMN cli_redirect text CHECK (cli_redirect ~ '^http://(127\.0\.0\.1|\[::1\]):[0-9]{1,5}/callback$'),
    ADD COLUMN cli_challenge text CHECK (cli_challenge ~ '^[A-Za-z0-9_-]{43}$'),
    ADD CONSTRAINT oauth_states_cli_both CHECK ((cli_redirect IS NULL) = (cli_challenge IS NULL));

CREATE TABLE api.cli_codes (
    code_hash       bytea PRIMARY KEY CHECK (length(code_hash) = 32),
    user_id         uuid NOT NULL REFERENCES api.users (id),
    groups          text[] NOT NULL DEFAULT '{}',
    provider        text NOT NULL CHECK (length(provider) BETWEEN 1 AND 32),
    challenge       text NOT NULL CHECK (challenge ~ '^[A-Za-z0-9_-]{43}$'),
    expires_at      timestamptz NOT NULL
);
CREATE INDEX cli_codes_expiry ON api.cli_codes (expires_at);
"""

# The issuer's groups as their role was judged at issue, and the API key they issued with (if
# any): each use judges the issuer again with them, so a token dies with its issuer's admin
# role (removed from the Tenant, or demoted) and with the key (revoked or expired). Tokens
# issued before carry no groups: an issuer who was admin through a group loses them (fail
# closed; they live an hour at most).
_V7 = r"""
ALTER TABLE api.participant_tokens
    ADD COLUMN issuer_groups text[] NOT NULL DEFAULT '{}',
    ADD COLUMN issued_with_key uuid REFERENCES api.api_keys (id);
"""

MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "api: users, refresh families and tokens, revoked jtis, throttle, rate "
                 "buckets, api keys", _V1),
    Migration(2, "api: external sign-in (OIDC) states and linked identities", _V2),
    Migration(3, "api: session groups, issued access tokens, API keys behind row-level "
                 "security", _V3),
    Migration(4, "api: deliveries of the signed rotation hook (idempotency keys)", _V4),
    Migration(5, "api: participant tokens (one resource, one role) behind row-level security",
              _V5),
    Migration(6, "api: external sign-in for the command line (loopback redirect, PKCE codes)",
              _V6),
    Migration(7, "api: participant tokens keep their issuer's groups (each use re-judges the "
                 "issuer)", _V7),
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
    ("SELECT, INSERT, DELETE", "api.access_tokens"),
    ("SELECT, INSERT, UPDATE, DELETE", "api.hook_deliveries"),
    ("SELECT, INSERT, UPDATE", "api.participant_tokens"),
    ("SELECT, INSERT, DELETE", "api.cli_codes"),
)

#: Functions the app role may call (everything else on the schema's functions is revoked).
APP_FUNCTION_GRANTS: tuple[str, ...] = ("api.authenticate_api_key(bytea)",
                                        "api.purge_hook_deliveries(interval)",
                                        "api.participant_token_tenant(text)",
                                        "api.purge_participant_tokens()")

COMPONENT = migrations.Component(
    name="api", schema=SCHEMA, migrations=MIGRATIONS, table_grants=APP_TABLE_GRANTS,
    function_grants=APP_FUNCTION_GRANTS, default_owner_role="tenantry_api_owner",
    default_app_role="tenantry_api", command="tenantry db migrate")
