"""Sign-in with OpenID Connect over real HTTP: `tenantry api run --oauth-config` on loopback,
real PostgreSQL, and a real OIDC provider process (panva's `oidc-provider`, `oidc_provider`);
the GitHub preset against `github_loopback`, a loopback server speaking GitHub's documented
OAuth and REST endpoints (github.com is not reachable from here).

The browser is an httpx client: it follows the redirects and fills the provider's login and
consent forms. Every control of the flow is attacked the way a client would attack it: a wrong,
replayed or foreign state, a code injected into another sign-in (the provider refuses the PKCE
verifier), a code without a verifier, a forged `iss`, an unverified e-mail aimed at an existing
account, and a provider key rollover that the API's JWKS cache must follow with one refetch.
The ID token rules that this provider cannot be made to break (wrong nonce or audience, expiry,
alg none, HS256 with the public key) are proved with locally signed tokens in
tests/unit/api/test_oidc.py.
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import json
import os
import secrets
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml
from kubernetes import client as kube_client

from tenantry.devcluster.process import ManagedProcess, free_port, wait_until
from tests.conftest import REPO_ROOT
from tests.e2e.api import oidc_provider
from tests.e2e.api.conftest import PASSWORD, ApiDatabase, ApiServer, tenantry
from tests.e2e.api.oidc_provider import OidcProvider, query, sign_in_at_provider, with_query
from tests.helpers import GROUP, VERSION, eventually

pytestmark = pytest.mark.postgres

SECRET = "a client secret that is long enough, 2026"


class GitHub:
    """`github_loopback` as a child process; `add_user` writes its users file."""

    def __init__(self, state: Path, redirect_uri: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.config_path = state / "github.json"
        self.config = {"client_id": "Iv1.tenantry", "client_secret": SECRET,
                       "redirect_uri": redirect_uri, "users": {}}
        self.config_path.write_text(json.dumps(self.config))
        self.process = ManagedProcess(
            "github-loopback", [sys.executable, "-m", "tests.e2e.api.github_loopback",
                                str(self.port), str(self.config_path)],
            state / "github.log", cwd=REPO_ROOT)
        wait_until(lambda: httpx.get(f"{self.url}/nothing", timeout=2).status_code == 404,
                   timeout=30, what="the GitHub loopback server", process=self.process)

    def add_user(self, login: str, *, email: str | None, verified: bool,
                 public_email: str | None = None) -> None:
        emails = [{"email": email, "primary": True, "verified": verified}] if email else []
        users: dict[str, object] = self.config["users"]  # type: ignore[assignment]
        users[login] = {"id": 10_000 + len(users), "email": public_email, "emails": emails}
        self.config_path.write_text(json.dumps(self.config))


@pytest.fixture(scope="module")
def idp_and_api(api_db: ApiDatabase, signing_key: Path, api_kubeconfig: Path,
                tmp_path_factory: pytest.TempPathFactory
                ) -> Iterator[tuple[OidcProvider, ApiServer, GitHub]]:
    state = tmp_path_factory.mktemp("oidc")
    home = oidc_provider.install()
    api_port = free_port()
    api_url = f"http://127.0.0.1:{api_port}"
    github = GitHub(state, f"{api_url}/v1/auth/oidc/github/callback")
    clients = [{"client_id": client_id, "client_secret": SECRET,
                "redirect_uris": [f"{api_url}/v1/auth/oidc/{name}/callback"],
                "grant_types": ["authorization_code"], "response_types": ["code"],
                "token_endpoint_auth_method": "client_secret_basic"}
               for name, client_id in (("local", "tenantry"), ("local-sub", "tenantry-sub"),
                                       ("local-groups", "tenantry-groups"))]
    idp = OidcProvider(home, clients, state)
    (state / "client-secret").write_text(SECRET + "\n")
    config = {"publicUrl": api_url, "providers": [
        {"name": "local", "issuer": idp.issuer, "clientId": "tenantry",
         "clientSecretFile": "client-secret", "scopes": ["openid", "email"]},
        {"name": "local-sub", "issuer": idp.issuer, "clientId": "tenantry-sub",
         "clientSecretFile": "client-secret", "scopes": ["openid", "email"], "users": "sub"},
        {"name": "local-groups", "issuer": idp.issuer, "clientId": "tenantry-groups",
         "clientSecretFile": "client-secret", "scopes": ["openid", "email", "groups"],
         "groupsPrefix": "oidc:"},
        {"name": "github", "preset": "github", "baseUrl": github.url,
         "apiUrl": f"{github.url}/api/v3", "clientId": "Iv1.tenantry",
         "clientSecretFile": "client-secret"}]}
    (state / "oauth.yaml").write_text(yaml.safe_dump(config))
    api = ApiServer(api_db, signing_key, state / "api.log",
                    ["--trusted-proxy", "127.0.0.1/32", "--oauth-config",
                     str(state / "oauth.yaml"), "--platform-admin-group", "oidc:platform-team"],
                    port=api_port, kubeconfig=api_kubeconfig)
    try:
        api.wait_ready()
        yield idp, api, github
    finally:
        api.stop()
        idp.stop()
        github.process.stop()


Stack = tuple[OidcProvider, ApiServer, GitHub]


@pytest.fixture
def idp(idp_and_api: Stack) -> OidcProvider:
    return idp_and_api[0]


@pytest.fixture
def oidc_api(idp_and_api: Stack) -> ApiServer:
    return idp_and_api[1]


@pytest.fixture
def github(idp_and_api: Stack) -> GitHub:
    return idp_and_api[2]


_addresses = (f"198.19.{i // 250}.{i % 250 + 1}" for i in itertools.count())


def new_browser(api: ApiServer) -> httpx.Client:
    """A browser of its own (cookie jar, client address via the trusted loopback proxy)."""
    return httpx.Client(base_url=api.url, timeout=30,
                        headers={"X-Forwarded-For": next(_addresses)})


@pytest.fixture
def browser(oidc_api: ApiServer) -> Iterator[httpx.Client]:
    with new_browser(oidc_api) as client:
        yield client


def start(browser: httpx.Client, provider: str = "local") -> str:
    response = browser.get(f"/v1/auth/oidc/{provider}/start")
    assert response.status_code == 302, response.text
    location: str = response.headers["location"]
    return location


def callback_url(browser: httpx.Client, api: ApiServer, login: str,
                 provider: str = "local") -> str:
    """A started and consented sign-in's callback URL, not yet delivered to the API."""
    return sign_in_at_provider(browser, start(browser, provider), login, api.url)


def sign_in(browser: httpx.Client, api: ApiServer, login: str,
            provider: str = "local") -> httpx.Response:
    return browser.get(callback_url(browser, api, login, provider))


def me(browser: httpx.Client, access: str) -> httpx.Response:
    return browser.get("/v1/me", headers={"Authorization": f"Bearer {access}"})


def email() -> str:
    return f"oidc-{uuid.uuid4().hex[:10]}@acme.example"


# -- the flow ------------------------------------------------------------------------------------

def test_sign_in_issues_the_same_tokens_as_password_login(browser: httpx.Client,
                                                          oidc_api: ApiServer) -> None:
    user = email()
    response = sign_in(browser, oidc_api, user)
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"access_token", "refresh_token", "token_type", "expires_in"}
    assert body["token_type"] == "Bearer" and body["expires_in"] == 900
    assert me(browser, body["access_token"]).json() == {"user": user, "tenants": [],
                                                        "platformAdmin": False}
    refreshed = browser.post("/v1/auth/refresh", json={"refresh_token": body["refresh_token"]})
    assert refreshed.status_code == 200
    assert me(browser, refreshed.json()["access_token"]).status_code == 200


def test_signing_in_again_finds_the_same_user(browser: httpx.Client, oidc_api: ApiServer,
                                              api_db: ApiDatabase) -> None:
    user = email()
    for _ in range(2):
        assert sign_in(browser, oidc_api, user).status_code == 200
    rows = api_db.fetch("SELECT u.username FROM api.user_identities i JOIN api.users u "
                        "ON u.id = i.user_id WHERE i.provider = 'local' AND i.subject = $1", user)
    assert [r["username"] for r in rows] == [user]


def test_start_sends_pkce_s256_state_and_nonce(browser: httpx.Client, idp: OidcProvider,
                                               oidc_api: ApiServer, api_db: ApiDatabase) -> None:
    response = browser.get("/v1/auth/oidc/local/start")
    assert response.status_code == 302
    location = response.headers["location"]
    assert location.startswith(f"{idp.issuer}/auth?")
    params = query(location)
    assert params["response_type"] == "code" and params["client_id"] == "tenantry"
    assert params["code_challenge_method"] == "S256" and len(params["code_challenge"]) == 43
    assert params["redirect_uri"] == f"{oidc_api.url}/v1/auth/oidc/local/callback"
    assert len(params["state"]) >= 43 and len(params["nonce"]) >= 43
    assert params["state"] != params["nonce"]
    cookie = response.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=lax" in cookie
    assert "path=/v1/auth/oidc/local/callback" in cookie
    # Stored server-side, by its SHA-256 only, with a short expiry.
    rows = api_db.fetch("SELECT expires_at - created_at AS ttl, nonce FROM api.oauth_states "
                        "WHERE state_hash = sha256(convert_to($1, 'UTF8'))", params["state"])
    assert len(rows) == 1 and rows[0]["nonce"] == params["nonce"]
    assert rows[0]["ttl"].total_seconds() == pytest.approx(600, abs=1)


def test_unknown_provider_is_404(browser: httpx.Client) -> None:
    assert browser.get("/v1/auth/oidc/nope/start").status_code == 404
    assert browser.get("/v1/auth/oidc/nope/callback?state=x&code=y").status_code == 404


# -- state ---------------------------------------------------------------------------------------

def test_wrong_state_is_refused(browser: httpx.Client, oidc_api: ApiServer) -> None:
    url = callback_url(browser, oidc_api, email())
    forged = browser.get(with_query(url, state=secrets.token_urlsafe(32)))
    assert forged.status_code == 400
    assert forged.json() == {"detail": "invalid or expired state"}
    assert "access_token" not in forged.text
    missing = browser.get(with_query(url, state=None))
    assert missing.status_code == 400


def test_replayed_state_is_refused(browser: httpx.Client, oidc_api: ApiServer) -> None:
    url = callback_url(browser, oidc_api, email())
    assert browser.get(url).status_code == 200
    replay = browser.get(url)
    assert replay.status_code == 400
    assert replay.json() == {"detail": "invalid or expired state"}


def test_callback_in_another_browser_is_refused(browser: httpx.Client,
                                                oidc_api: ApiServer) -> None:
    """Login CSRF: the attacker's own callback URL, opened by a victim's browser."""
    url = callback_url(browser, oidc_api, email())
    with new_browser(oidc_api) as victim:
        response = victim.get(url)
    assert response.status_code == 400
    assert response.json() == {"detail": "sign-in was not started by this browser"}


def test_provider_error_response_is_refused_and_uses_up_the_state(
        browser: httpx.Client) -> None:
    state = query(start(browser))["state"]
    denied = browser.get("/v1/auth/oidc/local/callback",
                         params={"state": state, "error": "access_denied"})
    assert denied.status_code == 401
    assert browser.get("/v1/auth/oidc/local/callback",
                       params={"state": state, "code": "x"}).status_code == 400


def test_authorization_response_from_another_issuer_is_refused(browser: httpx.Client,
                                                               oidc_api: ApiServer) -> None:
    """RFC 9207: the provider names itself in `iss`; a mixed-up response names another."""
    url = callback_url(browser, oidc_api, email())
    assert query(url)["iss"].startswith("http://127.0.0.1:")
    response = browser.get(with_query(url, iss="https://attacker.example"))
    assert response.status_code == 400
    assert response.json() == {"detail": "authorization response from the wrong issuer"}


def test_authorization_response_without_iss_is_refused(browser: httpx.Client,
                                                       oidc_api: ApiServer) -> None:
    """This provider advertises RFC 9207 support: a response lacking `iss` is not its own."""
    url = callback_url(browser, oidc_api, email())
    assert browser.get(with_query(url, iss=None)).status_code == 400


def test_expired_state_is_refused(browser: httpx.Client, oidc_api: ApiServer,
                                  api_db: ApiDatabase) -> None:
    url = callback_url(browser, oidc_api, email())
    api_db.fetch("UPDATE api.oauth_states SET expires_at = now() - interval '1 s' "
                 "WHERE state_hash = sha256(convert_to($1, 'UTF8'))", query(url)["state"])
    response = browser.get(url)
    assert response.status_code == 400
    assert response.json() == {"detail": "invalid or expired state"}


# -- PKCE ----------------------------------------------------------------------------------------

def test_code_injected_into_another_sign_in_is_refused_by_pkce(oidc_api: ApiServer) -> None:
    """A code stolen from the attacker's own sign-in, replayed into the victim's: the API
    redeems it with the victim's verifier, which does not match the code's challenge."""
    with new_browser(oidc_api) as attacker, new_browser(oidc_api) as victim:
        stolen = query(callback_url(attacker, oidc_api, email()))
        victims = query(callback_url(victim, oidc_api, email()))
        response = victim.get("/v1/auth/oidc/local/callback",
                              params={**victims, "code": stolen["code"]})
    assert response.status_code == 401
    assert response.json() == {"detail": "the identity provider refused the sign-in"}
    assert "invalid_grant" in oidc_api.log()


def test_provider_refuses_a_code_without_or_with_a_wrong_verifier(
        browser: httpx.Client, idp: OidcProvider, oidc_api: ApiServer) -> None:
    code = query(callback_url(browser, oidc_api, email()))["code"]
    redirect_uri = f"{oidc_api.url}/v1/auth/oidc/local/callback"
    for verifier in (None, secrets.token_urlsafe(48)):
        data = {"grant_type": "authorization_code", "code": code, "redirect_uri": redirect_uri}
        if verifier:
            data["code_verifier"] = verifier
        response = httpx.post(f"{idp.issuer}/token", data=data, auth=("tenantry", SECRET),
                              timeout=10)
        assert response.status_code == 400, response.text
        assert response.json()["error"] in ("invalid_grant", "invalid_request")


# -- who signs in --------------------------------------------------------------------------------

def test_verified_email_links_the_existing_password_user(browser: httpx.Client,
                                                         oidc_api: ApiServer,
                                                         api_db: ApiDatabase) -> None:
    user = api_db.add_user(email())
    body = sign_in(browser, oidc_api, user).json()
    assert me(browser, body["access_token"]).json()["user"] == user
    password = browser.post("/v1/auth/login", json={"username": user, "password": PASSWORD})
    assert password.status_code == 200


def test_unverified_email_never_links_to_an_existing_account(browser: httpx.Client,
                                                            oidc_api: ApiServer,
                                                            api_db: ApiDatabase) -> None:
    victim = api_db.add_user(email())
    response = sign_in(browser, oidc_api, f"unverified:{victim}")
    assert response.status_code == 403
    assert "access_token" not in response.text
    assert not api_db.fetch("SELECT 1 FROM api.user_identities i JOIN api.users u ON "
                            "u.id = i.user_id WHERE u.username = $1", victim)


def test_no_email_is_refused_when_users_are_matched_by_email(browser: httpx.Client,
                                                             oidc_api: ApiServer) -> None:
    assert sign_in(browser, oidc_api, f"noemail:{uuid.uuid4().hex}").status_code == 403


def test_users_by_sub_make_a_separate_account_even_for_a_known_email(
        browser: httpx.Client, oidc_api: ApiServer, api_db: ApiDatabase) -> None:
    existing = api_db.add_user(email())
    body = sign_in(browser, oidc_api, existing, provider="local-sub").json()
    assert me(browser, body["access_token"]).json()["user"] == f"local-sub:{existing}"


def test_second_identity_for_a_linked_user_is_refused(browser: httpx.Client,
                                                      oidc_api: ApiServer,
                                                      api_db: ApiDatabase) -> None:
    """A user already linked to one `sub` is not taken over by another `sub` presenting the
    same verified address (a recycled mailbox at the provider)."""
    user = email()
    assert sign_in(browser, oidc_api, user).status_code == 200
    api_db.fetch("UPDATE api.user_identities SET subject = 'an-older-sub-' || subject "
                 "WHERE provider = 'local' AND subject = $1", user)
    response = sign_in(browser, oidc_api, user)
    assert response.status_code == 403


# -- JWKS ----------------------------------------------------------------------------------------

def test_provider_key_rollover_costs_exactly_one_jwks_refetch(idp: OidcProvider,
                                                              oidc_api: ApiServer) -> None:
    with new_browser(oidc_api) as browser:
        assert sign_in(browser, oidc_api, email()).status_code == 200
        before = idp.jwks_fetches()
        assert before >= 1
        idp.restart()  # a new signing key with a new kid, on the same port
        assert sign_in(browser, oidc_api, email()).status_code == 200
        assert idp.jwks_fetches() == before + 1
        assert sign_in(browser, oidc_api, email()).status_code == 200
        assert idp.jwks_fetches() == before + 1  # the new key is cached


def test_process_log_keeps_codes_states_and_secrets_out(idp_and_api: Stack) -> None:
    _, api, _ = idp_and_api
    with new_browser(api) as browser:
        url = callback_url(browser, api, email())
        assert browser.get(url).status_code == 200
    params, log = query(url), api.log()
    assert params["code"] not in log and params["state"] not in log
    assert SECRET not in log


# -- the GitHub preset ---------------------------------------------------------------------------

def github_callback(browser: httpx.Client, login: str) -> str:
    """The callback URL GitHub redirects to once `login` authorized the app."""
    authorize = start(browser, "github")
    response = browser.get(with_query(authorize, login=login))
    assert response.status_code == 302, response.text
    location: str = response.headers["location"]
    return location


def test_github_sign_in_by_verified_primary_email(browser: httpx.Client, github: GitHub,
                                                  oidc_api: ApiServer) -> None:
    user = email()
    github.add_user("octocat-" + user[5:15], email=user, verified=True)
    authorize = start(browser, "github")
    assert authorize.startswith(f"{github.url}/login/oauth/authorize?")
    params = query(authorize)
    assert params["scope"] == "read:user user:email"
    assert params["code_challenge_method"] == "S256"
    response = browser.get(github_callback(browser, "octocat-" + user[5:15]))
    assert response.status_code == 200, response.text
    assert me(browser, response.json()["access_token"]).json()["user"] == user


def test_github_public_email_is_not_trusted(browser: httpx.Client, github: GitHub,
                                            api_db: ApiDatabase) -> None:
    """Anyone can set /user's public e-mail to any address; only a verified primary counts."""
    victim = api_db.add_user(email())
    login = f"mallory-{uuid.uuid4().hex[:8]}"
    github.add_user(login, email=f"{login}@mallory.example", verified=False,
                    public_email=victim)
    response = browser.get(github_callback(browser, login))
    assert response.status_code == 403
    assert not api_db.fetch("SELECT 1 FROM api.user_identities WHERE provider = 'github' "
                            "AND subject IN (SELECT subject FROM api.user_identities "
                            "JOIN api.users u ON u.id = user_id WHERE u.username = $1)", victim)


def test_github_code_injected_into_another_sign_in_is_refused(github: GitHub,
                                                              oidc_api: ApiServer) -> None:
    login = f"octo-{uuid.uuid4().hex[:8]}"
    github.add_user(login, email=f"{login}@acme.example", verified=True)
    with new_browser(oidc_api) as attacker, new_browser(oidc_api) as victim:
        stolen = query(github_callback(attacker, login))
        victims = query(github_callback(victim, login))
        response = victim.get("/v1/auth/oidc/github/callback",
                              params={**victims, "code": stolen["code"]})
    assert response.status_code == 401
    assert response.json() == {"detail": "the identity provider refused the sign-in"}


def test_api_run_refuses_a_config_allowing_alg_none(api_db: ApiDatabase, signing_key: Path,
                                                    tmp_path: Path) -> None:
    (tmp_path / "secret").write_text(SECRET + "\n")
    (tmp_path / "oauth.yaml").write_text(yaml.safe_dump({
        "publicUrl": "https://api.example", "providers": [
            {"name": "corp", "issuer": "https://login.corp.example", "clientId": "tenantry",
             "clientSecretFile": "secret", "algorithms": ["RS256", "none"]}]}))
    result = tenantry("api", "run", "--dsn-file", str(api_db.app_dsn_file), "--signing-key-file",
                      str(signing_key), "--oauth-config", str(tmp_path / "oauth.yaml"))
    assert result.returncode == 2, result.stderr
    assert "providers[0].algorithms: 'none' refused" in result.stderr
    assert SECRET not in result.stderr


# -- groups ----------------------------------------------------------------------------------------

def test_groups_claim_gives_tenant_roles_and_platform_admin(
        browser: httpx.Client, oidc_api: ApiServer, admin_api: kube_client.ApiClient,
        crds: None) -> None:
    """A Tenant member of kind Group matches the provider's groups (with its prefix); the same
    user signed in without the groups scope holds nothing."""
    tenant_name = f"oidc-{uuid.uuid4().hex[:8]}"
    custom = kube_client.CustomObjectsApi(admin_api)
    custom.create_cluster_custom_object(GROUP, VERSION, "tenants", {
        "apiVersion": f"{GROUP}/{VERSION}", "kind": "Tenant", "metadata": {"name": tenant_name},
        "spec": {"namespaces": [{"name": f"{tenant_name}-ns"}], "members": [
            {"kind": "User", "name": "keeper@acme.example", "role": "owner"},
            {"kind": "Group", "name": "oidc:acme-devs", "role": "admin"},
            {"kind": "Group", "name": "acme-devs", "role": "viewer"}]}})
    try:
        user = email()
        grouped = sign_in(browser, oidc_api, f"groups=acme-devs,platform-team:{user}",
                          "local-groups")
        assert grouped.status_code == 200, grouped.text
        access = grouped.json()["access_token"]

        def roles() -> dict[str, object] | None:
            body = me(browser, access).json()
            return body if {"name": tenant_name, "role": "admin"} in body["tenants"] else None

        body = eventually(roles, timeout=20, what="the group's role through the API")
        assert body["platformAdmin"] is True
        # The prefix is the provider's: the unprefixed group (another source's) does not match.
        assert {"name": tenant_name, "role": "viewer"} not in body["tenants"]
        with new_browser(oidc_api) as other:
            plain = sign_in(other, oidc_api, user, "local")
            assert plain.status_code == 200, plain.text
            alone = me(other, plain.json()["access_token"]).json()
            assert alone["platformAdmin"] is False
            assert tenant_name not in {t["name"] for t in alone["tenants"]}
    finally:
        custom.delete_cluster_custom_object(GROUP, VERSION, "tenants", tenant_name)


# -- tenantry login --oidc (a browser, a loopback redirect to the command) ----------------------

def test_the_command_line_signs_in_through_a_browser_and_a_loopback_redirect(
        browser: httpx.Client, oidc_api: ApiServer, tmp_path: Path) -> None:
    user = email()
    env = {**os.environ, "XDG_CONFIG_HOME": str(tmp_path / "config")}
    command = subprocess.Popen(
        [sys.executable, "-m", "tenantry", "login", "--oidc", "local", "--no-browser",
         "--timeout", "60", "--api-url", oidc_api.url, "--output", "json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=REPO_ROOT)
    try:
        assert command.stderr is not None and command.stdout is not None
        command.stderr.readline()  # "open this address in a browser ..."
        start_url = command.stderr.readline().strip()
        assert query(start_url)["cli_redirect"].startswith("http://127.0.0.1:")
        at_provider = browser.get(start_url)
        assert at_provider.status_code == 302, at_provider.text
        callback = sign_in_at_provider(browser, at_provider.headers["location"], user,
                                       oidc_api.url)
        back = browser.get(callback)
        # No token in the browser: a redirect to the command with a one-time code.
        assert back.status_code == 302 and "access_token" not in back.text
        loopback_url = back.headers["location"]
        assert loopback_url.startswith(query(start_url)["cli_redirect"] + "?code=")
        assert httpx.get(loopback_url, timeout=10).status_code == 200
        out, err = command.communicate(timeout=60)
    finally:
        if command.poll() is None:
            command.kill()
    assert command.returncode == 0, err
    assert json.loads(out)["user"] == user
    token_file = next((tmp_path / "config" / "tenantry").glob("*.json"))
    assert oct(token_file.stat().st_mode & 0o777) == "0o600"
    saved = json.loads(token_file.read_text())["sessions"][oidc_api.url]
    assert saved["user"] == user
    assert me(browser, saved["accessToken"]).json()["user"] == user
    # The code was single use: redeeming it again (even with a verifier) is refused.
    code = query(loopback_url)["code"]
    again = browser.post("/v1/auth/oidc/cli/token",
                         json={"code": code, "code_verifier": "v" * 43})
    assert again.status_code == 400


def test_a_stolen_command_line_code_is_useless_without_the_verifier(
        browser: httpx.Client, oidc_api: ApiServer) -> None:
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(
        hashlib.sha256(verifier.encode()).digest()).decode().rstrip("=")
    redirect = "http://127.0.0.1:9/callback"
    start_url = (f"/v1/auth/oidc/local/start?cli_redirect={redirect}"
                 f"&cli_challenge={challenge}")
    at_provider = browser.get(start_url)
    assert at_provider.status_code == 302
    callback = sign_in_at_provider(browser, at_provider.headers["location"], email(),
                                   oidc_api.url)
    code = query(browser.get(callback).headers["location"])["code"]
    wrong = browser.post("/v1/auth/oidc/cli/token",
                         json={"code": code, "code_verifier": secrets.token_urlsafe(48)})
    assert wrong.status_code == 400
    # ... and the attempt used it up: the right verifier now fails too.
    right = browser.post("/v1/auth/oidc/cli/token",
                         json={"code": code, "code_verifier": verifier})
    assert right.status_code == 400


@pytest.mark.parametrize("redirect", ["https://evil.example/callback",
                                      "http://127.0.0.1.evil.example/callback",
                                      "http://127.0.0.1:8080/elsewhere",
                                      "http://localhost:8080/callback"])
def test_the_loopback_redirect_must_be_loopback(browser: httpx.Client, redirect: str) -> None:
    response = browser.get("/v1/auth/oidc/local/start",
                           params={"cli_redirect": redirect, "cli_challenge": "a" * 43})
    assert response.status_code == 422
