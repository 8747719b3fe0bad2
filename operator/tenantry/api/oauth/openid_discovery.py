"""OpenID Connect Discovery 1.0: the provider's metadata, fetched from its issuer and checked.

`{issuer}/.well-known/openid-configuration` must name the same `issuer`, exactly (section 4.3:
otherwise a document served for one issuer could point us at another's endpoints), and give the
authorization, token and JWKS endpoints as https URLs (http only on loopback, as for issuers).
PKCE S256 is always sent; a provider that lists `code_challenge_methods_supported` without
S256 is refused at discovery, since it would ignore the challenge and with it the protection.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from tenantry.api.oauth import providers


class DiscoveryError(ValueError):
    pass


@dataclasses.dataclass(frozen=True)
class Metadata:
    issuer: str
    authorization_endpoint: str
    token_endpoint: str
    jwks_uri: str
    iss_parameter: bool = False
    """RFC 9207: the provider puts `iss` in its authorization responses (mix-up defence)."""


def url(issuer: str) -> str:
    return f"{issuer}/.well-known/openid-configuration"


def parse(document: Mapping[str, Any], issuer: str) -> Metadata:
    if document.get("issuer") != issuer:
        raise DiscoveryError(f"discovery issuer {document.get('issuer')!r} is not {issuer!r}")

    def endpoint(name: str) -> str:
        try:
            return providers.check_url(document.get(name), name)
        except providers.ConfigError as error:
            raise DiscoveryError(f"discovery: {error}") from None

    methods = document.get("code_challenge_methods_supported")
    if methods is not None and "S256" not in methods:
        raise DiscoveryError("discovery: the provider does not support PKCE S256")
    return Metadata(issuer=issuer, authorization_endpoint=endpoint("authorization_endpoint"),
                    token_endpoint=endpoint("token_endpoint"), jwks_uri=endpoint("jwks_uri"),
                    iss_parameter=document.get(
                        "authorization_response_iss_parameter_supported") is True)
