"""Two API replicas on one database, as the Deployment runs them: what one decides, the other
enforces at once.

Two `tenantry api run` processes (A and B) on the same PostgreSQL database and signing key,
each behind the same trusted proxy (each test's clients send their own X-Forwarded-For, so
tests never share a rate-limit bucket). Proven over real HTTP, each by attacking the other
replica with what the first one refused:

- revocation (logout, and one jti revoked by a platform admin) on A: the very next request on
  B is refused. The seeds ask for "within a second"; every request checks revocation in the
  database (`store.session_user`), so there is no window at all;
- the auth rate limit (configured here as 10/hour, so no token refills during a test) is one
  bucket for both replicas and both auth endpoints: requests alternated between them are
  refused from the 11th on, by either replica, with Retry-After and RateLimit-* headers;
- a refresh token rotated on A and replayed on B is reuse: B refuses it and the whole family
  dies on both replicas, the one-retry grace for a client racing itself included.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest

from tests.e2e.api.conftest import ApiDatabase, ApiServer
from tests.e2e.api.test_auth_wire import me, refresh, tokens

pytestmark = pytest.mark.postgres

AUTH_LIMIT = 10
ADMIN = "replica-admin@acme.example"
_addresses = (f"198.51.100.{n}" for n in itertools.count(1))


@pytest.fixture(scope="module")
def replicas(api_db: ApiDatabase, signing_key: Path, api_kubeconfig: Path,
             tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ApiServer, ApiServer]]:
    """Replicas A and B: same database, key, proxy, admins and a 10/hour auth limit."""
    flags = ["--trusted-proxy", "127.0.0.1/32", "--platform-admin", ADMIN,
             "--auth-rate-limit", f"{AUTH_LIMIT}/hour"]
    servers = [ApiServer(api_db, signing_key,
                         tmp_path_factory.mktemp(f"replica-{name}") / "api.log", flags,
                         kubeconfig=api_kubeconfig)
               for name in "ab"]
    try:
        for server in servers:
            server.wait_ready()
        yield servers[0], servers[1]
    finally:
        for server in servers:
            server.stop()


@pytest.fixture
def pair(replicas: tuple[ApiServer, ApiServer]) -> Iterator[tuple[httpx.Client, httpx.Client]]:
    """A client of A and a client of B, both from one address of this test's own."""
    address = next(_addresses)
    with httpx.Client(base_url=replicas[0].url, timeout=30,
                      headers={"X-Forwarded-For": address}) as a, \
            httpx.Client(base_url=replicas[1].url, timeout=30,
                         headers={"X-Forwarded-For": address}) as b:
        yield a, b


def _bearer(access: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {access}"}


def _admin_access(client: httpx.Client, api_db: ApiDatabase) -> str:
    if not api_db.fetch("SELECT 1 FROM api.users WHERE username = $1", ADMIN):
        api_db.add_user(ADMIN)
    access: str = tokens(client, ADMIN)["access_token"]
    return access


def _family_revoked_reason(api_db: ApiDatabase, refresh_token: str) -> Any:
    [row] = api_db.fetch("SELECT f.revoked_reason FROM api.refresh_families f JOIN "
                         "api.refresh_tokens t ON t.family_id = f.id "
                         "WHERE t.token_hash = sha256(convert_to($1, 'UTF8'))", refresh_token)
    return row["revoked_reason"]


# -- revocation ----------------------------------------------------------------------------------

def test_logout_on_a_is_refused_by_b_on_the_next_request(
        pair: tuple[httpx.Client, httpx.Client], api_db: ApiDatabase) -> None:
    a, b = pair
    session = tokens(a, api_db.add_user())
    assert me(b, session["access_token"]).status_code == 200  # B accepts (and has verified)
    assert a.post("/v1/auth/logout", headers=_bearer(session["access_token"])).status_code == 204
    refused = me(b, session["access_token"])
    assert refused.status_code == 401
    assert 'error="invalid_token"' in refused.headers["www-authenticate"]
    assert refresh(b, session["refresh_token"]).status_code == 401
    assert _family_revoked_reason(api_db, session["refresh_token"]) == "logout"


def test_a_jti_revoked_on_a_is_refused_by_b_and_only_that_token(
        pair: tuple[httpx.Client, httpx.Client], api_db: ApiDatabase) -> None:
    a, b = pair
    session = tokens(a, api_db.add_user())
    # A second access token of the same session: revoking one jti must not end the session.
    sibling = refresh(a, session["refresh_token"]).json()
    assert me(b, session["access_token"]).status_code == 200
    jti = jwt.decode(session["access_token"], options={"verify_signature": False})["jti"]
    revoked = a.post("/v1/tokens/revoke", json={"jti": jti},
                     headers=_bearer(_admin_access(a, api_db)))
    assert revoked.is_success, revoked.text
    # B verified this token a moment ago (and remembers the signature check): revocation is
    # not a property of the token, and B refuses it on the very next request.
    assert me(b, session["access_token"]).status_code == 401
    assert me(a, session["access_token"]).status_code == 401
    assert me(b, sibling["access_token"]).status_code == 200
    assert refresh(b, sibling["refresh_token"]).status_code == 200


def test_a_user_cannot_revoke_on_a_what_b_then_refuses(
        pair: tuple[httpx.Client, httpx.Client], api_db: ApiDatabase) -> None:
    """The attacker's side of jti revocation: a signed-in user without a role over the victim
    revokes the victim's token on A; refused as if no such token existed (jtis cannot be
    probed), and the victim's token keeps working on B."""
    a, b = pair
    victim = tokens(a, api_db.add_user())
    attacker = tokens(a, api_db.add_user())
    jti = jwt.decode(victim["access_token"], options={"verify_signature": False})["jti"]
    refused = a.post("/v1/tokens/revoke", json={"jti": jti},
                     headers=_bearer(attacker["access_token"]))
    assert refused.status_code == 404
    assert refused.json() == a.post("/v1/tokens/revoke", json={"jti": "never-issued"},
                                    headers=_bearer(attacker["access_token"])).json()
    assert me(b, victim["access_token"]).status_code == 200
    assert me(a, victim["access_token"]).status_code == 200


# -- the shared rate limit -----------------------------------------------------------------------

def test_the_auth_limit_is_one_bucket_for_both_replicas_and_both_endpoints(
        pair: tuple[httpx.Client, httpx.Client], replicas: tuple[ApiServer, ApiServer]) -> None:
    a, b = pair
    answers = []
    for n in range(AUTH_LIMIT + 4):
        if n % 2:  # odd: a refresh on B; even: a login on A (a new name each: no throttle)
            answers.append(refresh(b, "tntr_" + "A" * 43))
        else:
            answers.append(a.post("/v1/auth/login", json={"username": f"r{n}@acme.example",
                                                          "password": "wrong password"}))
    statuses = [answer.status_code for answer in answers]
    # 10 per hour refills one token every 6 minutes: the limit is exact here.
    assert statuses == [401] * AUTH_LIMIT + [429] * 4
    remaining = [int(answer.headers["RateLimit-Remaining"]) for answer in answers[:AUTH_LIMIT]]
    assert remaining == list(range(AUTH_LIMIT - 1, -1, -1))  # one count, whichever replica
    for limited in answers[AUTH_LIMIT:]:  # refused by A and by B alike
        assert limited.json() == {"detail": "too many requests"}
        assert 1 <= int(limited.headers["Retry-After"]) <= 3600 // AUTH_LIMIT
        assert limited.headers["RateLimit-Limit"] == str(AUTH_LIMIT)
        assert limited.headers["RateLimit-Remaining"] == "0"
        assert int(limited.headers["RateLimit-Reset"]) >= int(limited.headers["Retry-After"])
    # Another address has its own bucket on both replicas.
    for server in replicas:
        with httpx.Client(base_url=server.url, headers={"X-Forwarded-For": next(_addresses)}
                          ) as other:
            assert refresh(other, "tntr_" + "A" * 43).status_code == 401


# -- refresh reuse across replicas ---------------------------------------------------------------

def test_a_token_rotated_on_a_and_replayed_on_b_revokes_the_family(
        pair: tuple[httpx.Client, httpx.Client], api_db: ApiDatabase) -> None:
    a, b = pair
    start = tokens(a, api_db.add_user())
    one = refresh(a, start["refresh_token"]).json()
    two = refresh(a, one["refresh_token"]).json()
    # Two generations back is never a racing client: reuse, at once.
    replayed = refresh(b, start["refresh_token"])
    assert replayed.status_code == 401
    assert replayed.json() == {"detail": "invalid refresh token"}
    assert _family_revoked_reason(api_db, start["refresh_token"]) == "reuse"
    assert refresh(a, two["refresh_token"]).status_code == 401  # the legitimate newest, too
    for access in (start["access_token"], one["access_token"], two["access_token"]):
        assert me(a, access).status_code == 401
        assert me(b, access).status_code == 401


def test_grace_retry_on_b_is_allowed_once_then_reuse_kills_the_family_on_a(
        pair: tuple[httpx.Client, httpx.Client], api_db: ApiDatabase) -> None:
    """A client that lost A's response may retry the just-used token once on B (grace, 10 s by
    default); the next replay is reuse, seen by B, and A refuses every token of the family."""
    a, b = pair
    start = tokens(a, api_db.add_user())
    rotated = refresh(a, start["refresh_token"])
    assert rotated.status_code == 200
    retried = refresh(b, start["refresh_token"])
    assert retried.status_code == 200
    assert refresh(b, start["refresh_token"]).status_code == 401
    assert _family_revoked_reason(api_db, start["refresh_token"]) == "reuse"
    for pair_ in (rotated.json(), retried.json()):
        assert refresh(a, pair_["refresh_token"]).status_code == 401
        assert me(a, pair_["access_token"]).status_code == 401
