"""The authorization-code flow with PKCE against one provider, through Authlib.

`start()` builds the authorization request (RFC 6749 section 4.1.1 with OpenID Connect's
`nonce`, RFC 7636 S256 `code_challenge`) and returns what must be remembered server-side for the
callback: `state`, `nonce` and the `code_verifier`, each 256+ bits of randomness from
`secrets`. `finish()` redeems the code at the token endpoint (client authentication
`client_secret_basic`, the verifier sent, no redirects followed) and verifies the ID token
(`id_token`) with the provider's key (`jwks`). Protocol code is Authlib's; the checks that
decide who signs in are ours and pure.

The provider's metadata is discovered on first use and kept for an hour, so the API starts (and
password login works) while an identity provider is down.
"""

from __future__ import annotations

import dataclasses
import secrets
import time
from collections.abc import Mapping
from typing import Any

import httpx2
from authlib.integrations.httpx_client import (  # type: ignore[import-untyped]
    AsyncOAuth2Client,
    OAuthError,
)

from tenantry.api.oauth import id_token, jwks, openid_discovery
from tenantry.api.oauth.providers import Provider

DISCOVERY_MAX_AGE = 3600.0
TIMEOUT = 10.0
MAX_DOCUMENT_BYTES = 512 * 1024


class IdpError(Exception):
    """The provider could not be used or its answer was refused; `reason` is for the log."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class CodeRefused(IdpError):
    """The token endpoint answered an OAuth error: it will not redeem this code (expired,
    used, or a code_verifier that does not match its challenge)."""


@dataclasses.dataclass(frozen=True)
class Pending:
    """One started sign-in: the URL to send the browser to, and what the callback needs."""

    url: str
    state: str
    nonce: str
    code_verifier: str = dataclasses.field(repr=False)


class CodeFlowClient:
    """What every provider kind shares: the authorization request, Authlib's client, GETs."""

    token_endpoint_auth_method = "client_secret_basic"  # noqa: S105 - RFC 7591 method name

    def __init__(self, provider: Provider, redirect_uri: str) -> None:
        self.provider = provider
        self.redirect_uri = redirect_uri
        self._http = httpx2.AsyncClient(timeout=TIMEOUT, follow_redirects=False)

    async def aclose(self) -> None:
        await self._http.aclose()

    def _oauth(self) -> AsyncOAuth2Client:
        return AsyncOAuth2Client(
            client_id=self.provider.client_id, client_secret=self.provider.client_secret,
            token_endpoint_auth_method=self.token_endpoint_auth_method,
            scope=" ".join(self.provider.scopes), redirect_uri=self.redirect_uri,
            code_challenge_method="S256", timeout=TIMEOUT, follow_redirects=False)

    async def authorization_endpoint(self) -> str:
        raise NotImplementedError

    async def check_response_issuer(self, iss: str | None) -> bool:
        """RFC 9207: whether the authorization response's `iss` (if any) is this provider."""
        return iss is None or iss == self.provider.issuer

    async def start(self) -> Pending:
        endpoint = await self.authorization_endpoint()
        state, nonce = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
        verifier = secrets.token_urlsafe(48)  # 64 characters of the RFC 7636 alphabet
        async with self._oauth() as oauth:
            url, _ = oauth.create_authorization_url(endpoint, state=state,
                                                    code_verifier=verifier, nonce=nonce)
        return Pending(url=str(url), state=state, nonce=nonce, code_verifier=verifier)

    async def finish(self, code: str, code_verifier: str, nonce: str) -> id_token.Identity:
        raise NotImplementedError

    async def _redeem(self, oauth: AsyncOAuth2Client, token_endpoint: str, code: str,
                      code_verifier: str) -> Mapping[str, Any]:
        try:
            token: Mapping[str, Any] = await oauth.fetch_token(
                token_endpoint, grant_type="authorization_code", code=code,
                code_verifier=code_verifier)
        except OAuthError as error:
            raise CodeRefused(f"token endpoint refused the code: {error.error}") from None
        except (httpx2.HTTPError, ValueError) as error:
            raise IdpError(f"token endpoint: {type(error).__name__}") from None
        return token

    async def _get_json(self, url: str, http: httpx2.AsyncClient | None = None,
                        headers: Mapping[str, str] | None = None) -> Any:
        try:
            response = await (http or self._http).get(
                url, headers={"Accept": "application/json", **(headers or {})})
        except httpx2.HTTPError as error:
            raise IdpError(f"GET {url}: {type(error).__name__}") from None
        if response.status_code != 200 or len(response.content) > MAX_DOCUMENT_BYTES:
            raise IdpError(f"GET {url}: HTTP {response.status_code}")
        try:
            return response.json()
        except ValueError:
            raise IdpError(f"GET {url}: not JSON") from None


class OidcClient(CodeFlowClient):
    """A generic OpenID Connect provider (and the Google preset)."""

    def __init__(self, provider: Provider, redirect_uri: str, *,
                 jwks_min_refetch: float = 60.0) -> None:
        super().__init__(provider, redirect_uri)
        self._metadata: openid_discovery.Metadata | None = None
        self._metadata_at = 0.0
        self.jwks = jwks.JwksCache(self._fetch_jwks, min_refetch_interval=jwks_min_refetch)

    async def _get_object(self, url: str) -> Mapping[str, Any]:
        document = await self._get_json(url)
        if not isinstance(document, dict):
            raise IdpError(f"GET {url}: not a JSON object")
        return document

    async def metadata(self) -> openid_discovery.Metadata:
        if self._metadata is None or time.monotonic() - self._metadata_at > DISCOVERY_MAX_AGE:
            document = await self._get_object(openid_discovery.url(self.provider.issuer))
            try:
                self._metadata = openid_discovery.parse(document, self.provider.issuer)
            except openid_discovery.DiscoveryError as error:
                raise IdpError(str(error)) from None
            self._metadata_at = time.monotonic()
        return self._metadata

    async def _fetch_jwks(self) -> Mapping[str, Any]:
        return await self._get_object((await self.metadata()).jwks_uri)

    async def authorization_endpoint(self) -> str:
        return (await self.metadata()).authorization_endpoint

    async def check_response_issuer(self, iss: str | None) -> bool:
        metadata = await self.metadata()
        return iss == metadata.issuer if (iss is not None or metadata.iss_parameter) else True

    async def finish(self, code: str, code_verifier: str, nonce: str) -> id_token.Identity:
        """Redeem the code and return the verified identity (IdTokenInvalid, IdpError)."""
        metadata = await self.metadata()
        async with self._oauth() as oauth:
            token = await self._redeem(oauth, metadata.token_endpoint, code, code_verifier)
        raw = token.get("id_token")
        if not isinstance(raw, str):
            raise IdpError("token response has no id_token")
        expected = id_token.Expected(
            issuers=self.provider.issuers, client_id=self.provider.client_id, nonce=nonce,
            algorithms=self.provider.algorithms, groups_claim=self.provider.groups_claim,
            groups_prefix=self.provider.groups_prefix)
        header = id_token.read_header(raw, expected.algorithms)
        try:
            key = await self.jwks.key(header.kid, header.alg)
        except ValueError as error:  # a JWKS document without keys
            raise IdpError(f"jwks: {error}") from None
        return id_token.verify(raw, key, expected, int(time.time()))
