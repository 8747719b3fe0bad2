"""RFC 8414 metadata over real HTTP: the document agrees with the tokens the server issues.

A client that discovers the server from `/.well-known/oauth-authorization-server` must be able
to trust it: the issuer is the `iss` of a real access token, `jwks_uri` (fetched, not assumed)
serves the key that verifies it and no key that verifies a forgery, and every endpoint the
document names does what it names.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519

from tests.e2e.api.conftest import ApiDatabase, ApiServer
from tests.e2e.api.test_auth_wire import me, tokens

pytestmark = pytest.mark.postgres

METADATA = "/.well-known/oauth-authorization-server"


def _header(token: str) -> dict[str, Any]:
    part = token.split(".")[0]
    decoded: dict[str, Any] = json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))
    return decoded


def _verify_with_published_keys(token: str, jwks: dict[str, Any],
                                doc: dict[str, Any]) -> dict[str, Any]:
    """Verify as an independent resource server would: key chosen by kid from the fetched JWKS,
    algorithm from the document, issuer and audience pinned."""
    by_kid = {key["kid"]: key for key in jwks["keys"]}
    jwk = by_kid[_header(token)["kid"]]
    claims: dict[str, Any] = jwt.decode(
        token, jwt.PyJWK(jwk).key,
        algorithms=doc["tenantry_access_token_signing_alg_values_supported"],
        issuer=doc["issuer"], audience=doc["tenantry_access_token_audience"])
    return claims


def test_metadata_issuer_and_jwks_verify_a_real_token(client: httpx.Client,
                                                      api_db: ApiDatabase) -> None:
    response = client.get(METADATA)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    doc = response.json()
    token = tokens(client, api_db.add_user())["access_token"]
    # jwks_uri is absolute (RFC 8414 section 2) and fetched exactly as published.
    assert doc["jwks_uri"].startswith(("http://", "https://"))
    jwks = httpx.get(doc["jwks_uri"], timeout=10).json()
    claims = _verify_with_published_keys(token, jwks, doc)
    assert claims["iss"] == doc["issuer"]
    assert _header(token)["alg"] in doc["tenantry_access_token_signing_alg_values_supported"]
    assert _header(token)["typ"] == doc["tenantry_access_token_type"] == "at+jwt"
    assert claims["exp"] - claims["iat"] == doc["tenantry_access_token_lifetime_seconds"]
    assert all("d" not in key for key in jwks["keys"])  # public halves only


def test_a_token_signed_by_another_key_does_not_verify_with_the_published_keys(
        client: httpx.Client, api_db: ApiDatabase) -> None:
    """The JWKS does not verify anything: a token with our claims and our kid, signed by a key
    the server does not hold, fails against the published keys (and on the server)."""
    doc = client.get(METADATA).json()
    jwks = httpx.get(doc["jwks_uri"], timeout=10).json()
    real = tokens(client, api_db.add_user())["access_token"]
    claims = jwt.decode(real, options={"verify_signature": False})
    forged = jwt.encode(claims, ed25519.Ed25519PrivateKey.generate(), algorithm="EdDSA",
                        headers={"typ": "at+jwt", "kid": _header(real)["kid"]})
    with pytest.raises(jwt.InvalidSignatureError):
        _verify_with_published_keys(forged, jwks, doc)
    assert me(client, forged).status_code == 401


def test_endpoints_in_the_metadata_do_what_they_say(client: httpx.Client,
                                                    api_db: ApiDatabase) -> None:
    doc = client.get(METADATA).json()
    user = api_db.add_user()
    # token_endpoint: the password grant, by a public client (auth method "none": no client
    # credentials sent), JSON as the document says.
    assert "password" in doc["grant_types_supported"]
    assert doc["token_endpoint_auth_methods_supported"] == ["none"]
    assert doc["tenantry_token_request_content_type"] == "application/json"
    pair = client.post(doc["token_endpoint"],
                       json={"username": user, "password": "a long enough password, 2026"})
    assert pair.status_code == 200, pair.text
    # The refresh-token grant rotates.
    assert "refresh_token" in doc["grant_types_supported"]
    rotated = client.post(doc["tenantry_refresh_endpoint"],
                          json={"refresh_token": pair.json()["refresh_token"]})
    assert rotated.status_code == 200
    access = rotated.json()["access_token"]
    # Logout ends the session.
    out = client.post(doc["tenantry_logout_endpoint"],
                      headers={"Authorization": f"Bearer {access}"})
    assert out.status_code == 204
    assert me(client, access).status_code == 401
    # The revocation endpoint exists (it wants an identity: 401 without one, not 404).
    assert client.post(doc["tenantry_revocation_endpoint"], json={"jti": "x"}).status_code == 401


def test_metadata_claims_nothing_the_server_does_not_serve(client: httpx.Client,
                                                           api: ApiServer) -> None:
    """No authorization endpoint, so no response types, no PKCE, no scopes; and the RFC's
    default grant types (authorization code, implicit) are overridden, not implied."""
    doc = client.get(METADATA).json()
    assert doc["response_types_supported"] == []
    assert "authorization_endpoint" not in doc
    assert "code_challenge_methods_supported" not in doc
    assert "scopes_supported" not in doc
    assert not {"authorization_code", "implicit"} & set(doc["grant_types_supported"])
    # Every advertised URL is on this server.
    for name, value in doc.items():
        if name == "jwks_uri" or name.endswith("_endpoint"):
            assert value.startswith(api.url + "/"), (name, value)
    paths = client.get("/openapi.json").json()["paths"]
    assert METADATA in paths
