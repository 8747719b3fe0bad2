"""Sign-in through an external identity provider: OAuth 2.0 / OpenID Connect, as a client.

Modules are named for what they implement, pure where they can be:

- `providers`: the provider configuration file (generic OIDC, the Google preset), validated;
- `openid_discovery`: OpenID Connect Discovery 1.0 metadata, fetched and checked (section 4.3);
- `jwks`: the provider's RFC 7517 key set, cached, refetched once on an unknown kid;
- `id_token`: OpenID Connect Core 1.0 section 3.1.3.7 ID token validation (pure);
- `linking`: which local user an external identity signs in as (pure);
- `client`: the authorization-code flow with PKCE (RFC 7636, S256) through Authlib, and the
  generic OIDC client; `github`: the GitHub preset (OAuth 2 + REST API); `clients`: by name.

The routes are `routes/oidc.py`; `state`, `nonce` and the PKCE verifier of a pending sign-in
live server-side (`store.oauth_*`), single-use, for `STATE_TTL`.
"""
