"""The API's front door over real HTTP: `tenantry api run` on loopback, real PostgreSQL.

Login, refresh rotation and reuse detection, logout, revocation across replicas, the rate limit
and the login throttle, body limit, request ids, headers, and the process log kept free of
passwords and tokens. Every control is attacked here the way a client would attack it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import bcrypt
import httpx
import pytest

from tests.e2e.api.conftest import PASSWORD, ApiDatabase, ApiServer

pytestmark = pytest.mark.postgres


def login(client: httpx.Client, username: str, password: str = PASSWORD) -> httpx.Response:
    return client.post("/v1/auth/login", json={"username": username, "password": password})


def tokens(client: httpx.Client, username: str) -> dict[str, Any]:
    response = login(client, username)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def me(client: httpx.Client, access: str, base: str | None = None) -> httpx.Response:
    url = f"{base}/v1/me" if base else "/v1/me"
    return client.get(url, headers={"Authorization": f"Bearer {access}"})


def refresh(client: httpx.Client, token: str) -> httpx.Response:
    return client.post("/v1/auth/refresh", json={"refresh_token": token})


# -- login ---------------------------------------------------------------------------------------

def test_login_returns_a_pair_that_opens_me(client: httpx.Client, api_db: ApiDatabase) -> None:
    user = api_db.add_user()
    body = tokens(client, user.upper())  # login names are case-insensitive
    assert set(body) == {"access_token", "refresh_token", "token_type", "expires_in"}
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == 900
    assert body["refresh_token"].startswith("tntr_")
    response = me(client, body["access_token"])
    assert response.status_code == 200
    assert response.json() == {"user": user, "tenants": [], "platformAdmin": False}


def test_platform_admin_comes_from_configuration(client: httpx.Client,
                                                 api_db: ApiDatabase) -> None:
    api_db.add_user("root@acme.example")
    assert me(client, tokens(client, "root@acme.example")["access_token"]).json() == {
        "user": "root@acme.example", "tenants": [], "platformAdmin": True}


def test_unknown_user_and_wrong_password_get_the_same_answer(client: httpx.Client,
                                                             api_db: ApiDatabase) -> None:
    user = api_db.add_user()
    wrong = login(client, user, "not the password at all")
    unknown = login(client, "nobody-here@acme.example", "not the password at all")
    assert wrong.status_code == unknown.status_code == 401
    assert wrong.json() == unknown.json() == {"detail": "invalid username or password"}
    assert wrong.headers.get("www-authenticate") == unknown.headers.get("www-authenticate")


def test_disabled_user_cannot_log_in_and_its_tokens_stop(client: httpx.Client,
                                                        api_db: ApiDatabase) -> None:
    user = api_db.add_user()
    body = tokens(client, user)
    api_db.fetch("UPDATE api.users SET disabled = true WHERE username = $1", user)
    assert login(client, user).status_code == 401
    assert me(client, body["access_token"]).status_code == 401
    assert refresh(client, body["refresh_token"]).status_code == 401


def test_imported_bcrypt_user_logs_in_and_is_rehashed_to_argon2id(
        client: httpx.Client, api_db: ApiDatabase) -> None:
    hashed = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=4)).decode()
    user = api_db.add_user(password_hash=hashed)
    tokens(client, user)
    [row] = api_db.fetch("SELECT password_hash FROM api.users WHERE username = $1", user)
    assert row["password_hash"].startswith("$argon2id$")
    tokens(client, user)


def test_bcrypt_user_with_a_password_over_72_bytes_is_refused(client: httpx.Client,
                                                             api_db: ApiDatabase) -> None:
    """A truncating importer hashed only the first 72 bytes; we do not accept byte 73 on."""
    first72 = "p" * 72
    user = api_db.add_user(password_hash=bcrypt.hashpw(first72.encode(),
                                                       bcrypt.gensalt(rounds=4)).decode())
    assert login(client, user, first72 + "whatever").status_code == 401
    assert login(client, user, first72).status_code == 200


def test_login_with_unknown_fields_is_refused_without_echoing_the_password(
        client: httpx.Client, api_db: ApiDatabase) -> None:
    response = client.post("/v1/auth/login", json={"username": "a@acme.example",
                                                   "password": PASSWORD, "admin": True})
    assert response.status_code == 422
    assert "admin" in response.text
    assert PASSWORD not in response.text


@pytest.mark.parametrize("body", [b"not json", b"[]", b'{"username": 1}', b"{}",
                                  b'{"username": "a", "password": ""}'])
def test_bad_login_bodies_are_4xx_never_5xx(client: httpx.Client, body: bytes) -> None:
    response = client.post("/v1/auth/login", content=body,
                           headers={"Content-Type": "application/json"})
    assert response.status_code == 422


# -- refresh rotation ----------------------------------------------------------------------------

def test_refresh_rotates_every_use(client: httpx.Client, api_db: ApiDatabase) -> None:
    first = tokens(client, api_db.add_user())
    second = refresh(client, first["refresh_token"])
    assert second.status_code == 200
    pair = second.json()
    assert pair["refresh_token"] != first["refresh_token"]
    assert me(client, pair["access_token"]).status_code == 200
    third = refresh(client, pair["refresh_token"])
    assert third.status_code == 200


def test_reused_refresh_token_revokes_the_whole_family(client: httpx.Client,
                                                       api_db: ApiDatabase) -> None:
    start = tokens(client, api_db.add_user())
    rotated = refresh(client, start["refresh_token"]).json()
    # One retry of the just-used token is a client racing itself (grace, 10 s): allowed once.
    retried = refresh(client, start["refresh_token"])
    assert retried.status_code == 200
    # A second presentation is reuse: someone else holds a copy. Everything of the family dies.
    reused = refresh(client, start["refresh_token"])
    assert reused.status_code == 401
    assert reused.json() == {"detail": "invalid refresh token"}
    for pair in (rotated, retried.json()):
        assert refresh(client, pair["refresh_token"]).status_code == 401
        assert me(client, pair["access_token"]).status_code == 401
    assert me(client, start["access_token"]).status_code == 401
    [family] = api_db.fetch("SELECT revoked_reason FROM api.refresh_families f JOIN "
                            "api.refresh_tokens t ON t.family_id = f.id "
                            "WHERE t.token_hash = sha256(convert_to($1, 'UTF8'))",
                            start["refresh_token"])
    assert family["revoked_reason"] == "reuse"


def test_reuse_of_an_older_token_is_caught_at_once(client: httpx.Client,
                                                   api_db: ApiDatabase) -> None:
    start = tokens(client, api_db.add_user())
    one = refresh(client, start["refresh_token"]).json()
    two = refresh(client, one["refresh_token"]).json()
    assert refresh(client, start["refresh_token"]).status_code == 401  # two generations back
    assert refresh(client, two["refresh_token"]).status_code == 401


@pytest.mark.parametrize("token", ["", "tntr_" + "A" * 43, "x" * 200, "tntr_../../etc"])
def test_unknown_or_malformed_refresh_tokens_are_401_or_422(client: httpx.Client,
                                                            token: str) -> None:
    assert refresh(client, token).status_code in (401, 422)


# -- logout and revocation -----------------------------------------------------------------------

def test_logout_revokes_the_access_token_and_the_refresh_family(
        client: httpx.Client, api_db: ApiDatabase) -> None:
    user = api_db.add_user()
    session, other = tokens(client, user), tokens(client, user)
    response = client.post("/v1/auth/logout",
                           headers={"Authorization": f"Bearer {session['access_token']}"})
    assert response.status_code == 204
    assert me(client, session["access_token"]).status_code == 401
    assert refresh(client, session["refresh_token"]).status_code == 401
    # Only that session: the user's other session lives on.
    assert me(client, other["access_token"]).status_code == 200


def test_logout_and_me_without_a_token_are_401_with_a_bearer_challenge(
        client: httpx.Client) -> None:
    for response in (client.post("/v1/auth/logout"), client.get("/v1/me")):
        assert response.status_code == 401
        assert response.headers["www-authenticate"].startswith('Bearer realm="tenantry"')
    bad = client.get("/v1/me", headers={"Authorization": "Bearer not-a-jwt"})
    assert bad.status_code == 401
    assert 'error="invalid_token"' in bad.headers["www-authenticate"]
    basic = client.get("/v1/me", headers={"Authorization": "Basic YWxpY2U6cHc="})
    assert basic.status_code == 401


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def test_forged_tokens_are_refused_on_the_wire(client: httpx.Client,
                                               api_db: ApiDatabase) -> None:
    """alg none and HS256 keyed with the published JWK, carrying a real session's claims."""
    real = tokens(client, api_db.add_user())
    _, payload, _ = real["access_token"].split(".")
    jwk = client.get("/.well-known/jwks.json").json()["keys"][0]
    none = _b64(json.dumps({"alg": "none", "typ": "at+jwt", "kid": jwk["kid"]}).encode())
    assert me(client, f"{none}.{payload}.").status_code == 401
    header = _b64(json.dumps({"alg": "HS256", "typ": "at+jwt", "kid": jwk["kid"]}).encode())
    for secret in (json.dumps(jwk).encode(), base64.urlsafe_b64decode(jwk["x"] + "=")):
        mac = hmac.new(secret, f"{header}.{payload}".encode(), hashlib.sha256).digest()
        assert me(client, f"{header}.{payload}.{_b64(mac)}").status_code == 401
    assert me(client, real["access_token"]).status_code == 200


def test_jwks_publishes_the_key_that_signs(client: httpx.Client, api_db: ApiDatabase) -> None:
    keys = client.get("/.well-known/jwks.json").json()["keys"]
    header = json.loads(base64.urlsafe_b64decode(
        tokens(client, api_db.add_user())["access_token"].split(".")[0] + "=="))
    assert header["kid"] == keys[0]["kid"]
    assert keys[0]["kty"] == "OKP" and keys[0]["alg"] == "EdDSA"
    assert "d" not in keys[0]


# -- replicas ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def replica(api_db: ApiDatabase, signing_key: Path, api_kubeconfig: Path,
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServer]:
    """A second replica on the same database and key, trusting the same proxy."""
    server = ApiServer(api_db, signing_key, tmp_path_factory.mktemp("replica") / "api.log",
                       ["--trusted-proxy", "127.0.0.1/32"], kubeconfig=api_kubeconfig)
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


def test_logout_on_one_replica_revokes_on_the_other(client: httpx.Client, api_db: ApiDatabase,
                                                    replica: ApiServer) -> None:
    session = tokens(client, api_db.add_user())
    assert me(client, session["access_token"], replica.url).status_code == 200
    client.post("/v1/auth/logout", headers={"Authorization": f"Bearer {session['access_token']}"})
    assert me(client, session["access_token"], replica.url).status_code == 401


def test_rate_limit_is_shared_by_replicas(client: httpx.Client, replica: ApiServer) -> None:
    """10/min from one address, alternating replicas: the 11th request is refused (a token
    comes back every 6 s, so a slow machine may let one or two more through, never 15)."""
    statuses = []
    for n in range(15):
        base = replica.url if n % 2 else ""
        statuses.append(client.post(f"{base}/v1/auth/login",
                                    json={"username": f"x{n}@acme.example", "password": "nope"}
                                    ).status_code)
    assert statuses[:10] == [401] * 10
    assert 429 in statuses[10:13]


# -- abuse ---------------------------------------------------------------------------------------

def test_login_rate_limit_answers_429_with_retry_after(client: httpx.Client,
                                                       api: ApiServer) -> None:
    answers = [login(client, f"u{n}@acme.example", "wrong password") for n in range(13)]
    assert [a.status_code for a in answers[:10]] == [401] * 10
    assert answers[0].headers["RateLimit-Limit"] == "10"
    assert answers[0].headers["RateLimit-Remaining"] == "9"
    # A token comes back every 6 s: on a slow machine one more may pass before the refusal.
    limited = next(a for a in answers[10:] if a.status_code == 429)
    assert 1 <= int(limited.headers["Retry-After"]) <= 6
    assert limited.headers["RateLimit-Remaining"] == "0"
    # Another address is not affected.
    with httpx.Client(base_url=api.url, headers={"X-Forwarded-For": "203.0.113.77"}) as other:
        assert login(other, "u@acme.example", "wrong password").status_code == 401


def test_forwarded_for_from_an_untrusted_peer_cannot_dodge_the_limit(
        api_db: ApiDatabase, signing_key: Path, api_kubeconfig: Path, tmp_path: Path) -> None:
    server = ApiServer(api_db, signing_key, tmp_path / "api.log", ["--auth-rate-limit", "3/min"],
                       kubeconfig=api_kubeconfig)
    try:
        server.wait_ready()
        with httpx.Client(base_url=server.url) as http:
            statuses = [http.post("/v1/auth/login",
                                  json={"username": f"x{n}@acme.example", "password": "nope"},
                                  headers={"X-Forwarded-For": f"192.0.2.{n}"}).status_code
                        for n in range(4)]
    finally:
        server.stop()
    assert statuses == [401, 401, 401, 429]


def test_repeated_failures_throttle_that_address_not_the_victim(
        client: httpx.Client, api: ApiServer, api_db: ApiDatabase) -> None:
    victim = api_db.add_user()
    for _ in range(5):
        assert login(client, victim, "guess guess guess").status_code == 401
    locked = login(client, victim)  # even the right password: the attacker learns nothing
    assert locked.status_code == 429
    assert int(locked.headers["Retry-After"]) >= 1
    with httpx.Client(base_url=api.url, headers={"X-Forwarded-For": "203.0.113.200"}) as own:
        assert login(own, victim).status_code == 200
    time.sleep(int(locked.headers["Retry-After"]) + 0.2)
    assert login(client, victim).status_code == 200  # the lock was 1 s and has passed


def test_oversized_body_is_413(client: httpx.Client) -> None:
    big = b'{"username": "a", "password": "' + b"x" * (1024 * 1024) + b'"}'
    response = client.post("/v1/auth/login", content=big,
                           headers={"Content-Type": "application/json"})
    assert response.status_code == 413

    def chunks() -> Iterator[bytes]:  # no Content-Length: cut off while streaming
        for _ in range(20):
            yield b"x" * 65536

    streamed = client.post("/v1/auth/login", content=chunks(),
                           headers={"Content-Type": "application/json"})
    assert streamed.status_code == 413


# -- hardening -----------------------------------------------------------------------------------

def test_request_id_is_kept_or_minted_and_returned(client: httpx.Client) -> None:
    assert client.get("/healthz", headers={"X-Request-ID": "abc-123"}).headers[
        "x-request-id"] == "abc-123"
    minted = client.get("/healthz").headers["x-request-id"]
    assert len(minted) == 32
    injected = client.get("/healthz", headers={"X-Request-ID": "evil\tid{}"})
    assert injected.headers["x-request-id"] != "evil\tid{}"


def test_security_headers_on_every_response(client: httpx.Client) -> None:
    for response in (client.get("/healthz"), client.get("/v1/me"), client.get("/nowhere")):
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.headers["x-frame-options"] == "DENY"
        assert response.headers["cache-control"] == "no-store"
        assert response.headers["content-security-policy"].startswith("default-src 'none'")
        assert "server" not in response.headers


def test_probes_and_openapi(client: httpx.Client) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/readyz").json() == {"status": "ok"}
    spec = client.get("/openapi.json").json()
    assert spec["openapi"].startswith("3.1")
    assert {"/v1/auth/login", "/v1/auth/refresh", "/v1/auth/logout", "/v1/me", "/healthz",
            "/readyz", "/.well-known/jwks.json"} <= set(spec["paths"])
    schemas = spec["components"]["schemas"]
    assert schemas["LoginRequest"]["additionalProperties"] is False
    assert schemas["RefreshRequest"]["additionalProperties"] is False
    assert client.get("/docs").status_code == 404


def test_the_process_log_never_contains_a_password_or_token(
        client: httpx.Client, api: ApiServer, api_db: ApiDatabase) -> None:
    secret = "log-me-not: " + "s3cr3t " * 3
    user = api_db.add_user(password=secret)
    body = login(client, user, secret).json()
    rotated = refresh(client, body["refresh_token"]).json()
    me(client, rotated["access_token"])
    login(client, user, secret + " wrong")
    client.post("/v1/auth/login", json={"username": user, "password": secret, "x": 1})
    client.get("/v1/me?access_token=" + rotated["access_token"],
               headers={"X-Request-ID": "log-check-1"})
    client.post("/v1/auth/logout", headers={"Authorization": f"Bearer {rotated['access_token']}"})
    time.sleep(0.3)
    log = api.log()
    assert "log-check-1" in log  # the requests were logged
    for leaked in (secret, "s3cr3t", body["access_token"], body["refresh_token"],
                   rotated["access_token"], rotated["refresh_token"],
                   rotated["access_token"].split(".")[2], rotated["refresh_token"][5:]):
        assert leaked not in log
    for line in log.splitlines():
        record = json.loads(line)  # every line is structured
        assert "time" in record and "level" in record
