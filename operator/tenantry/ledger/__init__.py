"""The audit ledger: append-only, hash-chained per tenant, in PostgreSQL (asyncpg).

Every Tenantry mutation and every admitted change to a Tenantry resource is recorded here as an
`events.AuditEvent`. PostgreSQL holds the guarantees: the application role can only call
`ledger.append_rows`, which gives each entry its sequence number, server time and SHA-256 hash
linking it to the previous entry of its chain; updates, deletes and truncation are refused even
for the owning role. Signed checkpoints, exported outside the database, catch the one actor the
database cannot stop: a superuser rewriting history.

Modules, pure ones first:

- `hashing`: the canonical encoding and hash of an entry (the reference, pure Python);
- `redact`: scrubs secret-looking values from change summaries;
- `events`: the `AuditEvent` model and identity helpers;
- `schema`: the SQL migrations (tables, triggers, hashing in SQL, the append function);
- `migrations`: applies them and sets up the owner and application roles;
- `append`: `append` / `append_batch`;
- `client`: `LedgerClient`, for writers that wait on each entry (the webhook): concurrent
  appends committed together in one round trip (group commit);
- `export`: streams rows out of the database, reads and writes JSON lines;
- `verify`: walks chains and reports the first broken entry;
- `checkpoints`: Ed25519-signed chain heads and verification against them;
- `cli`: the `tenantry ledger ...` commands.
"""
