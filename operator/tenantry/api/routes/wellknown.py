"""Discovery: `/.well-known/jwks.json` (the keys that verify our access tokens) and
`/.well-known/oauth-authorization-server` (RFC 8414 metadata about this server).

The metadata says only what is true of this server, so a client that believes it is not misled:

- `issuer` is exactly the `iss` of our access tokens (`--issuer`), and `jwks_uri` serves the
  keys that verify them, current key first;
- tokens are obtained by a password grant (`/v1/auth/login`) and rotated with a refresh-token
  grant (`/v1/auth/refresh`), both by public clients (`token_endpoint_auth_methods_supported`
  `none`: no client secret exists). These endpoints take JSON bodies, not the form encoding of
  RFC 6749 section 4.3 (`tenantry_token_request_content_type` says so), which is why the
  refresh, logout and jti revocation endpoints are published under `tenantry_` names rather
  than as RFC 6749 / RFC 7009 endpoints;
- there is no authorization endpoint: sign-in through an identity provider is delegated
  (`/v1/auth/oidc/...`), so `response_types_supported` is empty and nothing about PKCE or
  scopes is claimed. (Omitting `grant_types_supported` would mean the RFC's default,
  authorization code and implicit, neither of which we serve.)

Absolute URLs are built from a configured base: the OAuth configuration's public URL, else the
issuer when it is an http(s) URL, else the URL this request reached. The last depends on the
client's Host header; it is only ever served back to that client (responses are `no-store`),
and a deployment sets `--issuer` to its public URL as RFC 8414 section 2 asks.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from fastapi import APIRouter, Request

from tenantry.api import deps
from tenantry.api.tokens import rfc9068

router = APIRouter(tags=["discovery"])

JWKS_PATH = "/.well-known/jwks.json"
METADATA_PATH = "/.well-known/oauth-authorization-server"


@router.get(JWKS_PATH)
async def jwks(svc: deps.CurrentServices) -> dict[str, Any]:
    return svc.settings.keys.jwks()


def base_url(settings: deps.Settings, request_base: str) -> str:
    """Where clients reach this API (see module doc), without a trailing slash."""
    if settings.oauth is not None:
        return settings.oauth.public_url.rstrip("/")
    issuer = urlsplit(settings.policy.issuer)
    if issuer.scheme in ("http", "https") and issuer.netloc and not issuer.query \
            and not issuer.fragment:
        return settings.policy.issuer.rstrip("/")
    return request_base.rstrip("/")


def metadata(settings: deps.Settings, base: str) -> dict[str, Any]:
    """The RFC 8414 document for `settings`, with endpoints under `base`."""
    return {
        "issuer": settings.policy.issuer,
        "jwks_uri": base + JWKS_PATH,
        "token_endpoint": base + "/v1/auth/login",
        "grant_types_supported": ["password", "refresh_token"],
        "token_endpoint_auth_methods_supported": ["none"],
        "response_types_supported": [],
        "tenantry_token_request_content_type": "application/json",
        "tenantry_refresh_endpoint": base + "/v1/auth/refresh",
        "tenantry_logout_endpoint": base + "/v1/auth/logout",
        "tenantry_revocation_endpoint": base + "/v1/tokens/revoke",
        "tenantry_access_token_type": rfc9068.TYPE,
        "tenantry_access_token_audience": settings.policy.audience,
        "tenantry_access_token_signing_alg_values_supported": list(rfc9068.ALGORITHMS),
        "tenantry_access_token_lifetime_seconds": settings.policy.lifetime,
    }


@router.get(METADATA_PATH)
async def authorization_server_metadata(request: Request,
                                        svc: deps.CurrentServices) -> dict[str, Any]:
    """RFC 8414 authorization server metadata (see the module doc for what each member means
    here)."""
    return metadata(svc.settings, base_url(svc.settings, str(request.base_url)))
