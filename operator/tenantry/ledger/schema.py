"""The ledger's schema as versioned migrations: tables, hashing functions, guards, append API.

Everything lives in the `ledger` schema, owned by a NOLOGIN owner role; `migrations` runs each
migration as that owner (``SET LOCAL ROLE``) inside one transaction. Never edit a migration that
has shipped: `migrations` refuses to run when an applied migration's checksum changed. Add a new
`Migration` instead.

Who can do what (the point of the design):

- The application role has SELECT on the tables, INSERT on `checkpoints`, and EXECUTE on
  `ledger.append` / `ledger.append_batch`, nothing else. It cannot INSERT into `audit_log` or
  touch `chain_heads` directly, so it cannot choose a sequence number, a time or a hash.
- `ledger.append_batch` is SECURITY DEFINER (runs as the owner). It locks each chain's head row
  FOR UPDATE, once per chain per call, in chain-name order (so concurrent batches never
  deadlock), inserts the entries, and moves the head.
- A BEFORE INSERT trigger seals every entry, whoever inserts it: the event time becomes the
  server's clock, the entry must link to an existing predecessor (seq-1 with the hash it names,
  so the chain can have no gap), and the hash is computed here, in SQL.
- UPDATE, DELETE and TRUNCATE of `audit_log` and `checkpoints` raise errors from triggers, even
  for the owner; statement-level triggers fire even when no row matches, so a refused statement is
  never a silent no-op. `chain_heads` may only move forward, to an entry that exists.

The SQL hash must equal `hashing.entry_hash` byte for byte: `ledger.jcs` is RFC 8785 for jsonb
(numbers as IEEE doubles, keys in UTF-16 order), `ledger.entry_canonical` writes the document's
members in sorted order, and `tests/ledger` checks both against the Python reference.
"""

from __future__ import annotations

import dataclasses
import hashlib

SCHEMA = "ledger"


@dataclasses.dataclass(frozen=True)
class Migration:
    """One schema version: SQL run as the owner role in a single transaction."""

    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        """SHA-256 of the SQL: an applied migration must never change."""
        return hashlib.sha256(self.sql.encode()).hexdigest()


# How ledger.jcs encodes one member `value` of an object or array (see there).
_MEMBER = """CASE jsonb_typeof(value)
            WHEN 'string' THEN value::text
            WHEN 'object' THEN ledger.jcs(value)
            WHEN 'array' THEN ledger.jcs(value)
            WHEN 'number' THEN CASE
                WHEN value::numeric = trunc(value::numeric)
                     AND abs(value::numeric) <= 9007199254740991
                THEN trunc(value::numeric)::text
                ELSE ledger.jcs_number(value::numeric) END
            WHEN 'boolean' THEN value::text
            ELSE 'null' END"""

_V1 = r"""
-- Only the owner creates objects here; the app gets exactly the grants `migrations` gives.
REVOKE ALL ON SCHEMA ledger FROM PUBLIC;
-- Functions are executable by PUBLIC by default; not the owner's (per-schema defaults cannot
-- revoke a global default, hence no IN SCHEMA). Each function below is granted explicitly.
ALTER DEFAULT PRIVILEGES REVOKE EXECUTE ON FUNCTIONS FROM PUBLIC;

CREATE TABLE ledger.chain_heads (
    chain       text PRIMARY KEY,
    seq         bigint NOT NULL CHECK (seq >= 0),
    hash        text NOT NULL CHECK (hash ~ '^[0-9a-f]{64}$'),
    updated_at  timestamptz NOT NULL DEFAULT clock_timestamp()
);

CREATE TABLE ledger.audit_log (
    chain               text NOT NULL,
    seq                 bigint NOT NULL CHECK (seq BETWEEN 1 AND 9007199254740991),
    event_time          timestamptz NOT NULL DEFAULT clock_timestamp(),
    tenant              text CHECK (tenant <> '' AND left(tenant, 1) <> '_'),
    actor               text NOT NULL CHECK (actor <> ''),
    actor_kind          text NOT NULL CHECK (actor_kind IN ('user', 'serviceaccount', 'system')),
    identity            jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(identity) = 'object'),
    action              text NOT NULL CHECK (action <> ''),
    resource_kind       text NOT NULL CHECK (resource_kind <> ''),
    resource_namespace  text,
    resource_name       text,
    changes             jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(changes) = 'object'),
    source_ip           text,
    request_id          text,
    component           text NOT NULL CHECK (component <> ''),
    prev_hash           text NOT NULL CHECK (prev_hash ~ '^[0-9a-f]{64}$'),
    hash                text NOT NULL CHECK (hash ~ '^[0-9a-f]{64}$'),
    PRIMARY KEY (chain, seq),
    CHECK (chain = coalesce(tenant, '_platform'))
);
COMMENT ON TABLE ledger.audit_log IS
    'Tenantry audit ledger: append-only, hash-chained per tenant (see tenantry.ledger.hashing)';

CREATE TABLE ledger.checkpoints (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    created_at  timestamptz NOT NULL DEFAULT clock_timestamp(),
    key_id      text NOT NULL,
    payload     jsonb NOT NULL CHECK (jsonb_typeof(payload) = 'object'),
    signature   text NOT NULL
);

-- RFC 8785 number: integers within the double's exact range as themselves, everything else as
-- the nearest double in ECMAScript Number-to-String form. float8 text output is the shortest
-- round-trip representation only when extra_float_digits > 0, hence the SET clause.
CREATE FUNCTION ledger.jcs_number(n numeric) RETURNS text
LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE
SET extra_float_digits = 1
AS $$
DECLARE
    m text[];
    digits text;
    stripped text;
    point integer;  -- position of the decimal point relative to the start of `digits`
    k integer;
    e integer;
    body text;
BEGIN
    IF n = trunc(n) AND abs(n) <= 9007199254740991 THEN
        RETURN trunc(n)::text;
    END IF;
    m := regexp_match(n::float8::text, '^(-?)([0-9]+)(?:\.([0-9]+))?(?:e([-+]?[0-9]+))?$');
    IF m IS NULL THEN
        RAISE EXCEPTION 'ledger: number % has no canonical JSON form', n
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    digits := m[2] || coalesce(m[3], '');
    point := length(m[2]) + coalesce(m[4]::integer, 0);
    stripped := ltrim(digits, '0');
    point := point - (length(digits) - length(stripped));
    digits := rtrim(stripped, '0');
    k := length(digits);
    IF k = 0 THEN
        RETURN '0';
    ELSIF k <= point AND point <= 21 THEN
        body := digits || repeat('0', point - k);
    ELSIF 0 < point AND point <= 21 THEN
        body := left(digits, point) || '.' || substr(digits, point + 1);
    ELSIF -6 < point AND point <= 0 THEN
        body := '0.' || repeat('0', -point) || digits;
    ELSE
        e := point - 1;
        body := left(digits, 1)
            || CASE WHEN k > 1 THEN '.' || substr(digits, 2) ELSE '' END
            || 'e' || CASE WHEN e >= 0 THEN '+' ELSE '-' END || abs(e)::text;
    END IF;
    RETURN CASE WHEN m[1] = '-' THEN '-' || body ELSE body END;
END
$$;

-- Object keys are ordered by UTF-16 code units. For keys without characters U+E000..U+FFFF that
-- equals code point order (COLLATE "C" on UTF-8); otherwise this spells out the UTF-16 units.
CREATE FUNCTION ledger.utf16_sort_key(s text) RETURNS bytea
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
AS $$
    SELECT coalesce(decode(string_agg(
        CASE WHEN cp < 65536 THEN lpad(to_hex(cp), 4, '0')
             ELSE to_hex(55296 + ((cp - 65536) >> 10)) || to_hex(56320 + ((cp - 65536) & 1023))
        END, '' ORDER BY i), 'hex'), '\x'::bytea)
    FROM (SELECT ascii(c) AS cp, i
          FROM regexp_split_to_table(s, '') WITH ORDINALITY AS chars(c, i)) AS units
$$;

-- RFC 8785 canonical JSON of a jsonb value. Strings reuse PostgreSQL's JSON string escaping,
-- which is exactly RFC 8785's: \" \\ \b \f \n \r \t, other controls as \u00xx, the rest as is.
-- Members of objects and arrays are encoded by an inline expression, recursing only into nested
-- containers: one query per object or array, not one function call per value (a helper
-- function, even inlined by the planner, measured 3x slower here).
CREATE FUNCTION ledger.jcs(v jsonb) RETURNS text
LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE
AS $$
DECLARE
    kind text := jsonb_typeof(v);
    body text;
    beyond_surrogates boolean;
BEGIN
    IF kind = 'object' THEN
        SELECT string_agg(to_json(key)::text || ':' || @MEMBER@, ',' ORDER BY key COLLATE "C"),
               bool_or(key ~ '[\uE000-\uFFFF]')
          INTO body, beyond_surrogates FROM jsonb_each(v);
        IF beyond_surrogates THEN
            SELECT string_agg(to_json(key)::text || ':' || @MEMBER@, ','
                              ORDER BY ledger.utf16_sort_key(key))
              INTO body FROM jsonb_each(v);
        END IF;
        RETURN '{' || coalesce(body, '') || '}';
    ELSIF kind = 'array' THEN
        SELECT string_agg(@MEMBER@, ',' ORDER BY i)
          INTO body FROM jsonb_array_elements(v) WITH ORDINALITY AS items(value, i);
        RETURN '[' || coalesce(body, '') || ']';
    ELSIF kind = 'number' THEN
        RETURN ledger.jcs_number(v::numeric);
    ELSIF kind IN ('string', 'boolean') THEN
        RETURN v::text;
    END IF;
    RETURN 'null';
END
$$;

-- The hashed document of an entry (tenantry.ledger.hashing), members in sorted key order.
CREATE FUNCTION ledger.entry_canonical(e ledger.audit_log) RETURNS text
LANGUAGE sql STABLE PARALLEL SAFE
AS $$
    SELECT '{"action":' || to_json(e.action)::text
        || ',"actor":' || to_json(e.actor)::text
        || ',"actor_kind":' || to_json(e.actor_kind)::text
        || ',"chain":' || to_json(e.chain)::text
        || ',"changes":' || ledger.jcs(e.changes)
        || ',"component":' || to_json(e.component)::text
        || ',"event_time":"'
        || to_char(e.event_time AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') || '"'
        || ',"identity":' || ledger.jcs(e.identity)
        || ',"prev_hash":' || to_json(e.prev_hash)::text
        || ',"request_id":' || coalesce(to_json(e.request_id)::text, 'null')
        || ',"resource_kind":' || to_json(e.resource_kind)::text
        || ',"resource_name":' || coalesce(to_json(e.resource_name)::text, 'null')
        || ',"resource_namespace":' || coalesce(to_json(e.resource_namespace)::text, 'null')
        || ',"seq":' || e.seq::text
        || ',"source_ip":' || coalesce(to_json(e.source_ip)::text, 'null')
        || ',"tenant":' || coalesce(to_json(e.tenant)::text, 'null')
        || ',"v":1}'
$$;

CREATE FUNCTION ledger.entry_hash(e ledger.audit_log) RETURNS text
LANGUAGE sql STABLE PARALLEL SAFE
AS $$
    SELECT encode(sha256(convert_to(ledger.entry_canonical(e), 'UTF8')), 'hex')
$$;

-- Seals every new entry, whoever inserts it (the append function, or an owner by hand).
-- No SET search_path here, unlike the other functions: it runs once per entry and a SET clause
-- costs a GUC save/restore per call. It is safe without: only the owner (through
-- append_batch, which pins search_path) or a superuser can insert, every ledger object is
-- schema-qualified, and built-ins resolve in pg_catalog first.
CREATE FUNCTION ledger.seal_entry() RETURNS trigger
LANGUAGE plpgsql
AS $$
DECLARE
    predecessor text;
BEGIN
    -- The server's clock, whatever the inserter supplied: the column default alone would still
    -- let an inserter choose the time.
    NEW.event_time := clock_timestamp();
    IF NEW.source_ip IS NOT NULL THEN
        NEW.source_ip := host(NEW.source_ip::inet);
    END IF;
    IF NEW.seq = 1 THEN
        predecessor := repeat('0', 64);
    ELSE
        SELECT a.hash INTO predecessor
          FROM ledger.audit_log AS a WHERE a.chain = NEW.chain AND a.seq = NEW.seq - 1;
    END IF;
    IF predecessor IS NULL OR NEW.prev_hash IS DISTINCT FROM predecessor THEN
        RAISE EXCEPTION 'ledger: entry % of chain % does not extend the chain', NEW.seq, NEW.chain
            USING ERRCODE = 'integrity_constraint_violation',
                  HINT = 'Append through ledger.append_batch(), which assigns seq and prev_hash.';
    END IF;
    NEW.hash := ledger.entry_hash(NEW);
    RETURN NEW;
END
$$;

CREATE TRIGGER audit_log_seal BEFORE INSERT ON ledger.audit_log
    FOR EACH ROW EXECUTE FUNCTION ledger.seal_entry();

CREATE FUNCTION ledger.refuse_change() RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RAISE EXCEPTION 'ledger: %.% is append-only; % refused', TG_TABLE_SCHEMA, TG_TABLE_NAME, TG_OP
        USING ERRCODE = 'insufficient_privilege';
END
$$;

-- Statement-level triggers fire even when no row matches: a refused statement is always loud.
-- Row-level twins cover paths that fire only row triggers. TRUNCATE has no row triggers (and
-- rules cannot see it), so its statement trigger is the only guard besides privileges.
CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON ledger.audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION ledger.refuse_change();
CREATE TRIGGER audit_log_no_update_row BEFORE UPDATE ON ledger.audit_log
    FOR EACH ROW EXECUTE FUNCTION ledger.refuse_change();
CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON ledger.audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION ledger.refuse_change();
CREATE TRIGGER audit_log_no_delete_row BEFORE DELETE ON ledger.audit_log
    FOR EACH ROW EXECUTE FUNCTION ledger.refuse_change();
CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON ledger.audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION ledger.refuse_change();

CREATE TRIGGER checkpoints_no_update BEFORE UPDATE ON ledger.checkpoints
    FOR EACH STATEMENT EXECUTE FUNCTION ledger.refuse_change();
CREATE TRIGGER checkpoints_no_delete BEFORE DELETE ON ledger.checkpoints
    FOR EACH STATEMENT EXECUTE FUNCTION ledger.refuse_change();
CREATE TRIGGER checkpoints_no_truncate BEFORE TRUNCATE ON ledger.checkpoints
    FOR EACH STATEMENT EXECUTE FUNCTION ledger.refuse_change();

CREATE TRIGGER chain_heads_no_delete BEFORE DELETE ON ledger.chain_heads
    FOR EACH STATEMENT EXECUTE FUNCTION ledger.refuse_change();
CREATE TRIGGER chain_heads_no_truncate BEFORE TRUNCATE ON ledger.chain_heads
    FOR EACH STATEMENT EXECUTE FUNCTION ledger.refuse_change();

-- A head starts at the genesis and only ever moves forward, onto an entry that exists.
CREATE FUNCTION ledger.guard_head() RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        IF NEW.seq <> 0 OR NEW.hash <> repeat('0', 64) THEN
            RAISE EXCEPTION 'ledger: a new chain head must start at the genesis (seq 0)'
                USING ERRCODE = 'integrity_constraint_violation';
        END IF;
        RETURN NEW;
    END IF;
    IF NEW.chain <> OLD.chain OR NEW.seq < OLD.seq OR NOT EXISTS (
        SELECT 1 FROM ledger.audit_log AS a
         WHERE a.chain = NEW.chain AND a.seq = NEW.seq AND a.hash = NEW.hash
    ) THEN
        RAISE EXCEPTION 'ledger: head of chain % may only move forward to an existing entry',
            OLD.chain USING ERRCODE = 'integrity_constraint_violation';
    END IF;
    NEW.updated_at := clock_timestamp();
    RETURN NEW;
END
$$;

CREATE TRIGGER chain_heads_guard BEFORE INSERT OR UPDATE ON ledger.chain_heads
    FOR EACH ROW EXECUTE FUNCTION ledger.guard_head();

-- The append API. One call = one statement = atomic: all events or none. Events are processed
-- grouped by chain in chain-name order (each chain's head locked once, and always in the same
-- order, so concurrent batches cannot deadlock), in input order within a chain.
CREATE FUNCTION ledger.append_batch(events jsonb)
RETURNS TABLE (ord bigint, chain text, seq bigint, event_time timestamptz, hash text)
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
DECLARE
    allowed constant text[] := ARRAY['tenant', 'actor', 'actor_kind', 'identity', 'action',
        'resource_kind', 'resource_namespace', 'resource_name', 'changes', 'source_ip',
        'request_id', 'component'];
    item record;
    cur_chain text;
    cur_seq bigint;
    cur_hash text;
    sealed record;
BEGIN
    IF events IS NULL OR jsonb_typeof(events) <> 'array' THEN
        RAISE EXCEPTION 'ledger.append_batch expects a JSON array of events'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    FOR item IN
        SELECT x.value AS ev, x.i AS i, coalesce(x.value ->> 'tenant', '_platform') AS c
          FROM jsonb_array_elements(events) WITH ORDINALITY AS x(value, i)
         ORDER BY coalesce(x.value ->> 'tenant', '_platform') COLLATE "C", x.i
    LOOP
        IF jsonb_typeof(item.ev) <> 'object' THEN
            RAISE EXCEPTION 'ledger: event % is not a JSON object', item.i
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
        IF EXISTS (SELECT 1 FROM jsonb_object_keys(item.ev) AS k WHERE k <> ALL (allowed)) THEN
            RAISE EXCEPTION 'ledger: event % has unknown members (allowed: %)', item.i, allowed
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
        IF cur_chain IS DISTINCT FROM item.c THEN
            IF cur_chain IS NOT NULL THEN
                UPDATE ledger.chain_heads AS h SET seq = cur_seq, hash = cur_hash
                 WHERE h.chain = cur_chain;
            END IF;
            cur_chain := item.c;
            SELECT h.seq, h.hash INTO cur_seq, cur_hash
              FROM ledger.chain_heads AS h WHERE h.chain = cur_chain FOR UPDATE;
            IF NOT FOUND THEN
                INSERT INTO ledger.chain_heads AS h (chain, seq, hash)
                     VALUES (cur_chain, 0, repeat('0', 64)) ON CONFLICT (chain) DO NOTHING;
                SELECT h.seq, h.hash INTO cur_seq, cur_hash
                  FROM ledger.chain_heads AS h WHERE h.chain = cur_chain FOR UPDATE;
            END IF;
        END IF;
        cur_seq := cur_seq + 1;
        INSERT INTO ledger.audit_log AS a (
            chain, seq, tenant, actor, actor_kind, identity, action, resource_kind,
            resource_namespace, resource_name, changes, source_ip, request_id, component,
            prev_hash)
        VALUES (
            cur_chain, cur_seq, item.ev ->> 'tenant', item.ev ->> 'actor',
            item.ev ->> 'actor_kind', coalesce(item.ev -> 'identity', '{}'),
            item.ev ->> 'action', item.ev ->> 'resource_kind',
            item.ev ->> 'resource_namespace', item.ev ->> 'resource_name',
            coalesce(item.ev -> 'changes', '{}'), item.ev ->> 'source_ip',
            item.ev ->> 'request_id', item.ev ->> 'component', cur_hash)
        RETURNING a.hash, a.event_time INTO sealed;
        cur_hash := sealed.hash;
        ord := item.i;
        chain := cur_chain;
        seq := cur_seq;
        event_time := sealed.event_time;
        hash := sealed.hash;
        RETURN NEXT;
    END LOOP;
    IF cur_chain IS NOT NULL THEN
        UPDATE ledger.chain_heads AS h SET seq = cur_seq, hash = cur_hash
         WHERE h.chain = cur_chain;
    END IF;
END
$$;

-- One event with typed arguments, for SQL callers; same path as append_batch.
CREATE FUNCTION ledger.append(
    tenant text, actor text, actor_kind text, action text, resource_kind text, component text,
    identity jsonb DEFAULT '{}', resource_namespace text DEFAULT NULL,
    resource_name text DEFAULT NULL, changes jsonb DEFAULT '{}', source_ip text DEFAULT NULL,
    request_id text DEFAULT NULL)
RETURNS TABLE (chain text, seq bigint, event_time timestamptz, hash text)
LANGUAGE sql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT b.chain, b.seq, b.event_time, b.hash
      FROM ledger.append_batch(jsonb_build_array(jsonb_build_object(
          'tenant', tenant, 'actor', actor, 'actor_kind', actor_kind, 'action', action,
          'resource_kind', resource_kind, 'component', component, 'identity', identity,
          'resource_namespace', resource_namespace, 'resource_name', resource_name,
          'changes', changes, 'source_ip', source_ip, 'request_id', request_id))) AS b
$$;

REVOKE ALL ON ALL FUNCTIONS IN SCHEMA ledger FROM PUBLIC;
"""

MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "audit ledger: hash-chained append-only audit_log, chain heads, checkpoints",
              _V1.replace("@MEMBER@", _MEMBER)),
)

#: What the application role may use after migrating to the latest version; `migrations`
#: revokes everything else from it on every run.
APP_TABLE_GRANTS: tuple[tuple[str, str], ...] = (
    ("SELECT", "ledger.audit_log"),
    ("SELECT", "ledger.chain_heads"),
    ("SELECT, INSERT", "ledger.checkpoints"),
    ("SELECT", "ledger.schema_migrations"),
)
APP_FUNCTION_GRANTS: tuple[str, ...] = (
    "ledger.append_batch(jsonb)",
    "ledger.append(text, text, text, text, text, text, jsonb, text, text, jsonb, text, text)",
)
