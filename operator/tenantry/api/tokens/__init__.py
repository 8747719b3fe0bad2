"""Token rules as pure modules, each named for the specification it implements.

- `rfc7517`: the signing keys, their JWK Set and `kid` (the RFC 7638 thumbprint);
- `rfc9068`: JWT access tokens (RFC 9068 profile, RFC 8725 best practices);
- `rfc9700`: opaque refresh tokens, rotated on every use, reuse revokes the family.

No I/O here: `tenantry.api.store` keeps the state these rules decide over.
"""
