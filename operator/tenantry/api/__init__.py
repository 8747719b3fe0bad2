"""The API pod: identity, sessions, tokens and rate limits in front of what the API serves.

Layers, one way: `tokens/` (RFC 7517 keys, RFC 9068 access tokens, RFC 9700 refresh rotation),
`passwords`, `throttle`, `ratelimit` and `clientip` are pure rules (no I/O, unit-tested rule by
rule); `schema` is the API's migrations (run by the ledger's runner, `tenantry db migrate`);
`store` is the only module that talks to PostgreSQL; `deps` resolves the caller for every
route; `routes/` are thin; `middleware` hardens every request; `app` assembles them; `cli` is
the `tenantry api` / `tenantry db` shell.
"""
