"""RFC 8414 metadata as data: which base URL the endpoints are built on, and that the issuer is
the tokens' own."""

from __future__ import annotations

import jwt
import pytest

from tenantry.api import deps
from tenantry.api.oauth import providers
from tenantry.api.routes import wellknown
from tenantry.api.tokens import rfc7517, rfc9068

KEYS = rfc7517.KeySet(signing=rfc7517.generate())


def _settings(issuer: str = "tenantry-api", public_url: str | None = None) -> deps.Settings:
    oauth = providers.Config(public_url=public_url, providers={}) if public_url else None
    return deps.Settings(keys=KEYS, policy=rfc9068.Policy(issuer=issuer, audience="aud"),
                         oauth=oauth)


def test_configured_public_url_wins_over_the_request() -> None:
    settings = _settings(issuer="https://issuer.example", public_url="https://api.example/")
    assert wellknown.base_url(settings, "http://evil.example/") == "https://api.example"


def test_an_http_issuer_is_the_base_when_nothing_else_is_configured() -> None:
    settings = _settings(issuer="https://api.tenantry.example/")
    assert wellknown.base_url(settings, "http://evil.example/") == \
        "https://api.tenantry.example"


@pytest.mark.parametrize("issuer", ["tenantry-api", "https://a.example/?x=1",
                                    "https://a.example/#f", "ftp://a.example"])
def test_an_issuer_that_is_no_usable_url_falls_back_to_the_request(issuer: str) -> None:
    assert wellknown.base_url(_settings(issuer=issuer), "http://127.0.0.1:9/") == \
        "http://127.0.0.1:9"


def test_metadata_issuer_is_the_tokens_iss_and_names_only_served_paths() -> None:
    settings = _settings(issuer="https://api.example")
    doc = wellknown.metadata(settings, "https://api.example")
    token, _ = rfc9068.issue(KEYS, settings.policy, subject="s", username="u",
                             session_id="sid", now=1_800_000_000)
    assert jwt.decode(token, options={"verify_signature": False})["iss"] == doc["issuer"]
    assert doc["jwks_uri"] == "https://api.example/.well-known/jwks.json"
    assert doc["tenantry_access_token_signing_alg_values_supported"] == ["EdDSA"]
    assert doc["response_types_supported"] == []
    assert doc["grant_types_supported"] == ["password", "refresh_token"]
