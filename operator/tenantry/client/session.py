"""Talking to the API as a signed-in user (or with an API key), refreshing silently.

`Api.call` sends one request with `Authorization: Bearer <access token>`:

- before sending, an access token that has expired (or expires within 30 s) is refreshed;
- a 401 on a token that looked valid (revoked jti, clock skew, a new signing key) is refreshed
  once and the request retried once;
- every refresh stores the new pair at once: the API rotates refresh tokens, so the old one
  has just stopped working. Refreshing holds the token file's lock and re-reads the file
  first, so a second command that already refreshed is followed rather than raced.

A refresh the API refuses means the session is over (signed out, revoked, expired after 7
days, or a reuse was detected): the stored tokens are forgotten and `NotSignedIn` says to run
`tenantry login`. With an API key (`$TENANTRY_API_KEY` or `--api-key-file`) nothing is stored
or refreshed. Errors never contain a token.
"""

from __future__ import annotations

from typing import Any

import httpx2

from tenantry.client import tokens

USER_AGENT = "tenantry-cli"
TIMEOUT = 30.0


class ClientError(Exception):
    """Something the user should read: `exit_code` 1 for a refusal, 2 for everything else."""

    exit_code = 2


class NotSignedIn(ClientError):
    exit_code = 1


class Refused(ClientError):
    """The API answered an error: its status and `detail`."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(f"{status}: {detail}")
        self.status, self.detail = status, detail
        self.exit_code = 1 if status in (401, 403, 404, 409) else 2


def detail_of(response: httpx2.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.reason_phrase or "error"
    detail = body.get("detail") if isinstance(body, dict) else None
    if isinstance(detail, list):  # a validation error: where and why, never the input
        return "; ".join(f"{'.'.join(str(p) for p in item.get('loc', []))}: {item.get('msg')}"
                         for item in detail if isinstance(item, dict))
    return str(detail) if detail else response.reason_phrase or "error"


class Api:
    """One API at `url`, as the session in `token_file` (or with `api_key`)."""

    def __init__(self, url: str, *, token_file: tokens.TokenFile | None = None,
                 api_key: str | None = None, transport: Any = None) -> None:
        if not url.startswith(("http://", "https://")):
            raise ClientError(f"--api-url {url!r}: expected http(s)://HOST[:PORT]")
        self.url = url.rstrip("/")
        self.token_file = token_file or tokens.TokenFile()
        self.api_key = api_key
        self.http = httpx2.Client(base_url=self.url, timeout=TIMEOUT, transport=transport,
                                  headers={"User-Agent": USER_AGENT}, follow_redirects=False)

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> Api:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    # -- signing in and out ---------------------------------------------------------------------

    def login(self, username: str, password: str) -> tokens.Session:
        response = self._send("POST", "/v1/auth/login",
                              json={"username": username, "password": password})
        if response.status_code != 200:
            raise Refused(response.status_code, detail_of(response))
        session = tokens.Session.issued(username, response.json())
        self.token_file.save(self.url, session)
        return session

    def login_with_code(self, code: str, verifier: str) -> tokens.Session:
        """Redeem a command-line sign-in code (`loopback`) for a session."""
        response = self._send("POST", "/v1/auth/oidc/cli/token",
                              json={"code": code, "code_verifier": verifier})
        if response.status_code != 200:
            raise Refused(response.status_code, detail_of(response))
        answer = response.json()
        me = self._send("GET", "/v1/me", headers=_bearer(answer["access_token"]))
        user = me.json().get("user", "?") if me.status_code == 200 else "?"
        session = tokens.Session.issued(str(user), answer)
        self.token_file.save(self.url, session)
        return session

    def logout(self) -> bool:
        """End the session at the API (best effort) and forget it here; False if there was
        none."""
        session = self.token_file.load(self.url)
        if session is None:
            return False
        try:
            if session.expired():
                session = self._refresh(session)
            self._send("POST", "/v1/auth/logout", headers=_bearer(session.access_token))
        finally:
            self.token_file.save(self.url, None)
        return True

    # -- calls ----------------------------------------------------------------------------------

    def call(self, method: str, path: str, *, params: dict[str, Any] | None = None,
             json: Any = None, ok: tuple[int, ...] = (200,)) -> Any:
        """One authenticated request; its JSON body (None for 204), or Refused."""
        if params:
            params = {key: value for key, value in params.items() if value is not None}
        if self.api_key is not None:
            response = self._send(method, path, params=params, json=json,
                                  headers=_bearer(self.api_key))
        else:
            session = self._session()
            response = self._send(method, path, params=params, json=json,
                                  headers=_bearer(session.access_token))
            if response.status_code == 401:
                session = self._refresh(session)
                response = self._send(method, path, params=params, json=json,
                                      headers=_bearer(session.access_token))
        if response.status_code not in ok:
            raise Refused(response.status_code, detail_of(response))
        return None if response.status_code == 204 or not response.content else response.json()

    def _send(self, method: str, path: str, **kwargs: Any) -> httpx2.Response:
        try:
            return self.http.request(method, path, **kwargs)
        except httpx2.HTTPError as error:
            raise ClientError(f"cannot reach the API at {self.url}: "
                              f"{type(error).__name__}") from None

    def _session(self) -> tokens.Session:
        session = self.token_file.load(self.url)
        if session is None:
            raise NotSignedIn(f"not signed in to {self.url}: run `tenantry login`")
        return self._refresh(session) if session.expired() else session

    def _refresh(self, stale: tokens.Session) -> tokens.Session:
        with tokens.locked(self.token_file):
            current = self.token_file.load(self.url)
            if current is None:
                raise NotSignedIn(f"not signed in to {self.url}: run `tenantry login`")
            if current.refresh_token != stale.refresh_token and not current.expired():
                return current  # another command refreshed meanwhile
            response = self._send("POST", "/v1/auth/refresh",
                                  json={"refresh_token": current.refresh_token})
            if response.status_code == 200:
                session = tokens.Session.issued(current.user, response.json())
                self.token_file.save(self.url, session)
                return session
            if response.status_code in (400, 401):
                self.token_file.save(self.url, None)
                raise NotSignedIn(f"the session at {self.url} has ended "
                                  f"({detail_of(response)}): run `tenantry login`")
            raise Refused(response.status_code, detail_of(response))


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}
