"""The GitHub preset: OAuth 2.0 (authorization code + PKCE S256) and GitHub's REST API.

GitHub signs users in with plain OAuth 2.0, not OpenID Connect: there is no discovery, no ID
token and so no nonce to check (the nonce is still minted and stored, and simply unused). The
endpoints are GitHub's documented ones, under a configurable base (GitHub Enterprise Server):

- `{baseUrl}/login/oauth/authorize` and `{baseUrl}/login/oauth/access_token` (the code is
  redeemed with client_id and client_secret as form fields, and the PKCE verifier; GitHub
  answers errors with HTTP 200 and an `error` field, which Authlib turns into `OAuthError`);
- `GET {apiUrl}/user`: the numeric `id` is the subject (immutable; the `login` can be renamed
  and then taken by someone else, so it is never the key);
- `GET {apiUrl}/user/emails`: the e-mail is the entry marked `primary`, and it counts as
  verified only when that entry says `verified: true` (`identity_from`, pure). The public
  `email` of `/user` is ignored: a user can set it to any address without verifying it.

The access token serves those two requests and is dropped: never stored, never logged.
"""

from __future__ import annotations

from typing import Any

from tenantry.api.oauth.client import CodeFlowClient, IdpError
from tenantry.api.oauth.id_token import Identity

API_HEADERS = {"Accept": "application/vnd.github+json", "X-GitHub-Api-Version": "2022-11-28"}


def identity_from(user: Any, emails: Any, issuer: str) -> Identity:
    """Who signed in, from `/user` and `/user/emails` (IdpError when they make no sense)."""
    if not isinstance(user, dict) or isinstance(user.get("id"), bool) \
            or not isinstance(user.get("id"), int):
        raise IdpError("GitHub /user has no numeric id")
    if not isinstance(emails, list):
        raise IdpError("GitHub /user/emails is not a list")
    primary = next((e for e in emails if isinstance(e, dict) and e.get("primary") is True
                    and isinstance(e.get("email"), str) and e["email"]), None)
    if primary is None:
        return Identity(issuer=issuer, subject=str(user["id"]), email=None, email_verified=False)
    return Identity(issuer=issuer, subject=str(user["id"]), email=primary["email"],
                    email_verified=primary.get("verified") is True)


class GitHubClient(CodeFlowClient):
    token_endpoint_auth_method = "client_secret_post"  # noqa: S105 - GitHub's documented form
    async def authorization_endpoint(self) -> str:
        return f"{self.provider.issuer}/login/oauth/authorize"

    async def finish(self, code: str, code_verifier: str, nonce: str) -> Identity:
        async with self._oauth() as oauth:
            token = await self._redeem(oauth, f"{self.provider.issuer}/login/oauth/access_token",
                                       code, code_verifier)
            access = token.get("access_token")
            if not isinstance(access, str) or not access:
                raise IdpError("GitHub token response has no access_token")
            headers = {**API_HEADERS, "Authorization": f"Bearer {access}"}
            user = await self._get_json(f"{self.provider.api_url}/user", headers=headers)
            emails = await self._get_json(f"{self.provider.api_url}/user/emails",
                                          headers=headers)
        return identity_from(user, emails, self.provider.issuer)
