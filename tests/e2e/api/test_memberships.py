"""Who may do what in the API: roles from the Tenants' `spec.members` (watched live), minimum
roles at the routes, API keys bound to one tenant, `/v1/tokens/revoke`, row-level security on
the tenant table, the per-tenant quota, and the ledger entries all of it leaves.

Tenants are created straight in the real apiserver (the API reads only their members; whether
the operator reconciles them does not matter here) and deleted afterwards. Every refusal is
tried the way an attacker would: another tenant's routes, a forged or revoked key, a key used
outside its tenant, a key above its creator's role, a query without a tenant.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import jwt
from kubernetes import client

from tenantry.api import apikeys
from tenantry.api.tokens import rfc9700
from tests.e2e.api.conftest import PASSWORD, ApiDatabase, ApiServer, TenantMaker, set_members
from tests.helpers import eventually


def sign_in(http: httpx.Client, api_db: ApiDatabase, name: str | None = None) -> dict[str, Any]:
    username = api_db.add_user(name)
    response = http.post("/v1/auth/login", json={"username": username, "password": PASSWORD})
    assert response.status_code == 200, response.text
    return {"username": username, **response.json()}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def tenants_of(http: httpx.Client, token: str) -> dict[str, str]:
    response = http.get("/v1/me", headers=bearer(token))
    assert response.status_code == 200, response.text
    return {entry["name"]: entry["role"] for entry in response.json()["tenants"]}


def wait_role(http: httpx.Client, token: str, tenant: str, role: str | None) -> None:
    eventually(lambda: tenants_of(http, token).get(tenant) == role, timeout=20,
               what=f"role {role} in {tenant} seen by the API")


# -- memberships -----------------------------------------------------------------------------------

def test_me_lists_the_roles_the_tenant_grants_and_follows_changes_live(
        client: httpx.Client, api_db: ApiDatabase, admin_api: client.ApiClient,
        tenant: TenantMaker) -> None:
    alice = sign_in(client, api_db)
    bob = sign_in(client, api_db)
    acme = tenant({alice["username"]: "admin", bob["username"]: "viewer"})
    other = tenant({alice["username"]: "viewer"})
    wait_role(client, alice["access_token"], acme, "admin")
    assert tenants_of(client, alice["access_token"])[other] == "viewer"
    assert tenants_of(client, bob["access_token"]) == {acme: "viewer"}
    me = client.get("/v1/me", headers=bearer(alice["access_token"])).json()
    assert me["user"] == alice["username"] and me["platformAdmin"] is False

    # Alice's admin routes work now; removing her takes effect on her next request, with the
    # same access token (no re-login, no waiting for expiry).
    keys = f"/v1/tenants/{acme}/api-keys"
    assert client.get(keys, headers=bearer(alice["access_token"])).status_code == 200
    set_members(admin_api, acme, {bob["username"]: "viewer"})
    wait_role(client, alice["access_token"], acme, None)
    assert client.get(keys, headers=bearer(alice["access_token"])).status_code == 403


def test_member_names_match_case_insensitively_like_login_names(
        client: httpx.Client, api_db: ApiDatabase, tenant: TenantMaker) -> None:
    carol = sign_in(client, api_db)
    acme = tenant({carol["username"].upper(): "member"})
    wait_role(client, carol["access_token"], acme, "member")


def test_every_tenant_route_refuses_other_tenants_and_lower_roles(
        client: httpx.Client, api_db: ApiDatabase, tenant: TenantMaker) -> None:
    admin, viewer, member, outsider = (sign_in(client, api_db) for _ in range(4))
    acme = tenant({admin["username"]: "admin", viewer["username"]: "viewer",
                   member["username"]: "member"})
    elsewhere = tenant({outsider["username"]: "owner"})
    wait_role(client, admin["access_token"], acme, "admin")
    wait_role(client, outsider["access_token"], elsewhere, "owner")
    created = client.post(f"/v1/tenants/{acme}/api-keys", json={"role": "viewer"},
                          headers=bearer(admin["access_token"]))
    assert created.status_code == 201, created.text
    key_id = created.json()["id"]
    routes = [("GET", f"/v1/tenants/{acme}/api-keys", None),
              ("POST", f"/v1/tenants/{acme}/api-keys", {"role": "viewer"}),
              ("DELETE", f"/v1/tenants/{acme}/api-keys/{key_id}", None)]
    for method, path, body in routes:
        for who in (viewer, member, outsider):
            response = client.request(method, path, json=body,
                                      headers=bearer(who["access_token"]))
            assert response.status_code == 403, (method, path, who["username"], response.text)
        assert client.request(method, path, json=body).status_code == 401
    # An unknown tenant looks exactly like a tenant one is not in: names do not leak.
    missing = client.get("/v1/tenants/no-such-tenant-here/api-keys",
                         headers=bearer(outsider["access_token"]))
    theirs = client.get(f"/v1/tenants/{acme}/api-keys", headers=bearer(outsider["access_token"]))
    assert (missing.status_code, missing.json()) == (theirs.status_code, theirs.json())
    # Malformed tenant names are a 422 naming the parameter, never a 5xx.
    bad = client.get("/v1/tenants/Not_A..Name/api-keys", headers=bearer(admin["access_token"]))
    assert bad.status_code == 422 and bad.json()["detail"][0]["loc"] == ["path", "tenant"]
    # The key is still there: nothing above changed it.
    listed = client.get(f"/v1/tenants/{acme}/api-keys", headers=bearer(admin["access_token"]))
    assert [k["revokedAt"] for k in listed.json()["items"]] == [None]


def test_platform_admins_administer_every_tenant(
        client: httpx.Client, api_db: ApiDatabase, tenant: TenantMaker) -> None:
    if not api_db.fetch("SELECT 1 FROM api.users WHERE username = 'root@acme.example'"):
        api_db.add_user("root@acme.example")
    response = client.post("/v1/auth/login", json={"username": "root@acme.example",
                                                   "password": PASSWORD})
    assert response.status_code == 200, response.text
    root = response.json()
    acme = tenant({})
    eventually(lambda: client.get(f"/v1/tenants/{acme}/api-keys",
                                  headers=bearer(root["access_token"])).status_code == 200,
               timeout=20, what="the platform admin reaching a tenant it is not a member of")
    me = client.get("/v1/me", headers=bearer(root["access_token"])).json()
    assert me["platformAdmin"] is True and acme not in {t["name"] for t in me["tenants"]}


# -- API keys --------------------------------------------------------------------------------------

def create_key(http: httpx.Client, token: str, tenant_name: str, role: str,
               **extra: Any) -> httpx.Response:
    return http.post(f"/v1/tenants/{tenant_name}/api-keys",
                     json={"role": role, "name": "ci", **extra}, headers=bearer(token))


def test_api_key_is_shown_once_authenticates_in_its_tenant_only_and_revokes(
        client: httpx.Client, api_db: ApiDatabase, api: ApiServer, tenant: TenantMaker) -> None:
    owner = sign_in(client, api_db)
    acme = tenant({owner["username"]: "owner"})
    other = tenant({owner["username"]: "owner"})
    wait_role(client, owner["access_token"], other, "owner")
    created = create_key(client, owner["access_token"], acme, "member")
    assert created.status_code == 201, created.text
    assert created.headers["Cache-Control"] == "no-store"
    body = created.json()
    key = body["key"]
    assert key.startswith("tnt_") and apikeys.well_formed(key)
    assert body["prefix"] == key[:12] + "…" and body["role"] == "member"

    # Listings show the prefix, never the key; the database holds its SHA-256 only.
    listed = client.get(f"/v1/tenants/{acme}/api-keys", headers=bearer(owner["access_token"]))
    assert key not in listed.text and listed.json()["items"][0]["prefix"] == body["prefix"]
    stored = api_db.fetch("SELECT key_hash FROM api.api_keys WHERE id = $1",
                          uuid.UUID(body["id"]))
    assert stored[0]["key_hash"] == apikeys.key_hash(key)
    assert key not in api.log()

    # The key acts in its tenant, with its own role, and nowhere else.
    me = client.get("/v1/me", headers=bearer(key)).json()
    assert me == {"user": f"api-key:{key[:12]}", "tenants": [{"name": acme, "role": "member"}],
                  "platformAdmin": False}
    assert client.get(f"/v1/tenants/{other}/api-keys", headers=bearer(key)).status_code == 403
    # ... and cannot mint keys, nor sign out a session, nor revoke tokens.
    assert create_key(client, key, acme, "viewer").status_code == 403
    assert client.post("/v1/auth/logout", headers=bearer(key)).status_code == 403
    assert client.post("/v1/tokens/revoke", json={"jti": "x"},
                       headers=bearer(key)).status_code == 403

    # Forged keys: a wrong checksum, a right-looking random key, the prefix alone.
    forged = key[:-1] + ("A" if key[-1] != "A" else "B")
    unknown = apikeys.new_key().key
    for attempt in (forged, unknown, key[:-6], key[:12]):
        response = client.get("/v1/me", headers=bearer(attempt))
        assert response.status_code == 401, attempt
        assert 'error="invalid_token"' in response.headers["WWW-Authenticate"]

    revoked = client.delete(f"/v1/tenants/{acme}/api-keys/{body['id']}",
                            headers=bearer(owner["access_token"]))
    assert revoked.status_code == 204
    assert client.get("/v1/me", headers=bearer(key)).status_code == 401
    assert client.delete(f"/v1/tenants/{acme}/api-keys/{uuid.uuid4()}",
                         headers=bearer(owner["access_token"])).status_code == 404
    # Another tenant's admin cannot see or revoke it by id either.
    assert client.delete(f"/v1/tenants/{other}/api-keys/{body['id']}",
                         headers=bearer(owner["access_token"])).status_code == 404


def test_api_key_never_outranks_its_creator(
        client: httpx.Client, api_db: ApiDatabase, admin_api: client.ApiClient,
        tenant: TenantMaker) -> None:
    admin = sign_in(client, api_db)
    acme = tenant({admin["username"]: "admin"})
    wait_role(client, admin["access_token"], acme, "admin")
    refused = create_key(client, admin["access_token"], acme, "owner")
    assert refused.status_code == 403 and "role" in refused.json()["detail"]
    key = create_key(client, admin["access_token"], acme, "admin").json()["key"]
    assert tenants_of(client, key) == {acme: "admin"}
    # The creator is demoted: the key follows down. Removed: the key has no role at all.
    set_members(admin_api, acme, {admin["username"]: "viewer"})
    eventually(lambda: tenants_of(client, key) == {acme: "viewer"}, timeout=20,
               what="the key demoted with its creator")
    set_members(admin_api, acme, {})
    eventually(lambda: tenants_of(client, key) == {}, timeout=20,
               what="the key without a role once its creator left")
    assert client.get(f"/v1/tenants/{acme}/api-keys", headers=bearer(key)).status_code == 403


def test_expired_api_key_is_refused(client: httpx.Client, api_db: ApiDatabase,
                                    tenant: TenantMaker) -> None:
    owner = sign_in(client, api_db)
    acme = tenant({owner["username"]: "owner"})
    wait_role(client, owner["access_token"], acme, "owner")
    assert create_key(client, owner["access_token"], acme, "viewer",
                      expiresIn=30).status_code == 422
    created = create_key(client, owner["access_token"], acme, "viewer", expiresIn=60).json()
    assert client.get("/v1/me", headers=bearer(created["key"])).status_code == 200
    api_db.fetch("UPDATE api.api_keys SET expires_at = now() - interval '1 s' WHERE id = $1",
                 uuid.UUID(created["id"]))
    assert client.get("/v1/me", headers=bearer(created["key"])).status_code == 401


def test_row_level_security_hides_every_tenant_from_a_query_that_names_none(
        client: httpx.Client, api_db: ApiDatabase, tenant: TenantMaker) -> None:
    owner = sign_in(client, api_db)
    acme = tenant({owner["username"]: "owner"})
    other = tenant({owner["username"]: "owner"})
    wait_role(client, owner["access_token"], other, "owner")
    for name in (acme, other):
        assert create_key(client, owner["access_token"], name, "viewer").status_code == 201

    async def as_app_role() -> tuple[int, int, int, str]:
        conn = await asyncpg.connect(api_db.app_dsn)
        try:
            forgot = await conn.fetchval("SELECT count(*) FROM api.api_keys")
            async with conn.transaction():
                await conn.execute("SELECT set_config('tenantry.tenant', $1, true)", acme)
                scoped = await conn.fetchval("SELECT count(*) FROM api.api_keys")
                tenants_seen = await conn.fetchval(
                    "SELECT count(DISTINCT tenant) FROM api.api_keys")
            error = ""
            try:
                async with conn.transaction():
                    await conn.execute("SELECT set_config('tenantry.tenant', $1, true)", acme)
                    await conn.execute(
                        "UPDATE api.api_keys SET tenant = $1 WHERE tenant = $2", other, acme)
            except asyncpg.PostgresError as refused:
                error = type(refused).__name__
            return forgot, scoped, tenants_seen, error
        finally:
            await conn.close()

    forgot, scoped, tenants_seen, error = asyncio.run(as_app_role())
    assert forgot == 0
    assert (scoped, tenants_seen) == (1, 1)
    assert error == "InsufficientPrivilegeError"  # WITH CHECK: no moving rows across tenants


def test_tenant_request_quota_is_per_tenant(
        api_db: ApiDatabase, signing_key: Path, api_kubeconfig: Path, tmp_path: Path,
        tenant: TenantMaker) -> None:
    server = ApiServer(api_db, signing_key, tmp_path / "api.log",
                       ["--tenant-rate-limit", "3/min"], kubeconfig=api_kubeconfig)
    try:
        server.wait_ready()
        with httpx.Client(base_url=server.url) as http:
            owner = sign_in(http, api_db)
            busy = tenant({owner["username"]: "owner"})
            quiet = tenant({owner["username"]: "owner"})
            wait_role(http, owner["access_token"], quiet, "owner")
            path = f"/v1/tenants/{busy}/api-keys"
            codes = [http.get(path, headers=bearer(owner["access_token"])).status_code
                     for _ in range(4)]
            assert codes == [200, 200, 200, 429]
            limited = http.get(path, headers=bearer(owner["access_token"]))
            assert int(limited.headers["Retry-After"]) >= 1
            assert limited.headers["RateLimit-Remaining"] == "0"
            assert http.get(f"/v1/tenants/{quiet}/api-keys",
                            headers=bearer(owner["access_token"])).status_code == 200
    finally:
        server.stop()
    assert api_db.ledger_entries("auth.rate-limited") and any(
        row["tenant"] == busy for row in api_db.ledger_entries("auth.rate-limited"))


# -- /v1/tokens/revoke -----------------------------------------------------------------------------

def jti_of(token: str) -> str:
    return str(jwt.decode(token, options={"verify_signature": False})["jti"])


def test_revoke_a_token_by_jti_own_tenant_admin_and_nobody_else(
        client: httpx.Client, api_db: ApiDatabase, tenant: TenantMaker) -> None:
    admin, member, stranger = (sign_in(client, api_db) for _ in range(3))
    tenant({admin["username"]: "admin", member["username"]: "member"})
    other = tenant({stranger["username"]: "admin"})
    wait_role(client, stranger["access_token"], other, "admin")

    def revoke(who: dict[str, Any], jti: str) -> int:
        return client.post("/v1/tokens/revoke", json={"jti": jti},
                           headers=bearer(who["access_token"])).status_code

    # An admin of another tenant: the same 404 as a jti never issued.
    assert revoke(stranger, jti_of(member["access_token"])) == 404
    assert revoke(stranger, "never-issued") == 404
    assert revoke(member, jti_of(admin["access_token"])) == 404  # a member is not an admin
    assert client.get("/v1/me", headers=bearer(member["access_token"])).status_code == 200
    # The member's tenant admin may; it takes effect at once, and again is harmless.
    assert revoke(admin, jti_of(member["access_token"])) == 204
    assert client.get("/v1/me", headers=bearer(member["access_token"])).status_code == 401
    assert revoke(admin, jti_of(member["access_token"])) == 204
    # Anyone may revoke their own token.
    assert revoke(stranger, jti_of(stranger["access_token"])) == 204
    assert client.get("/v1/me", headers=bearer(stranger["access_token"])).status_code == 401
    # Bad input is a 422 naming the field.
    bad = client.post("/v1/tokens/revoke", json={"jti": "x" * 200},
                      headers=bearer(admin["access_token"]))
    assert bad.status_code == 422 and bad.json()["detail"][0]["loc"] == ["body", "jti"]


# -- the ledger ------------------------------------------------------------------------------------

def test_every_auth_event_reaches_the_ledger_without_secrets(
        client: httpx.Client, api_db: ApiDatabase, tenant: TenantMaker) -> None:
    user = sign_in(client, api_db)
    name = user["username"]
    assert client.post("/v1/auth/login", json={"username": name,
                                               "password": "wrong password!"}).status_code == 401
    refreshed = client.post("/v1/auth/refresh", json={"refresh_token": user["refresh_token"]})
    assert refreshed.status_code == 200
    client.post("/v1/auth/refresh", json={"refresh_token": user["refresh_token"]})  # (grace)
    acme = tenant({name: "owner"})
    token = refreshed.json()["access_token"]
    wait_role(client, token, acme, "owner")
    key = create_key(client, token, acme, "viewer").json()
    client.delete(f"/v1/tenants/{acme}/api-keys/{key['id']}", headers=bearer(token))
    other = sign_in(client, api_db)
    assert client.post("/v1/tokens/revoke", json={"jti": jti_of(other["access_token"])},
                       headers=bearer(other["access_token"])).status_code == 204
    assert client.post("/v1/auth/logout", headers=bearer(token)).status_code == 204

    def actions() -> dict[str, list[Any]]:
        rows = [row for row in api_db.fetch(
            "SELECT action, actor, tenant, changes::text AS changes, identity::text AS identity, "
            "source_ip AS ip FROM ledger.audit_log WHERE component = 'api' "
            "AND (actor = $1 OR actor = $2 OR tenant = $3)", name, other["username"], acme)]
        found: dict[str, list[Any]] = {}
        for row in rows:
            found.setdefault(row["action"], []).append(row)
        return found

    wanted = {"auth.login.succeeded", "auth.login.failed", "auth.refresh", "apikey.created",
              "apikey.revoked", "auth.token.revoked", "auth.logout"}
    found = eventually(lambda: (lambda f: f if wanted <= set(f) else None)(actions()),
                       timeout=30, what="every auth event in the ledger")
    assert found["apikey.created"][0]["tenant"] == acme
    assert found["auth.login.failed"][0]["tenant"] is None
    assert found["auth.login.succeeded"][0]["ip"] is not None
    everything = " ".join(f"{row['changes']} {row['identity']}"
                          for rows in found.values() for row in rows)
    for secret in (PASSWORD, "wrong password!", user["refresh_token"], token, key["key"],
                   refreshed.json()["refresh_token"]):
        assert secret not in everything
    # The chains the API wrote verify.
    assert api_db.fetch("SELECT count(*) AS n FROM ledger.audit_log WHERE component = 'api'")[0][
        "n"] >= len(wanted)


def test_refresh_reuse_is_a_ledger_event(client: httpx.Client, api_db: ApiDatabase,
                                         api: ApiServer) -> None:
    user = sign_in(client, api_db)
    first = client.post("/v1/auth/refresh", json={"refresh_token": user["refresh_token"]})
    second = client.post("/v1/auth/refresh", json={"refresh_token": first.json()["refresh_token"]})
    assert second.status_code == 200
    # The first token again, well after its grace: reuse; the family is revoked.
    api_db.fetch("UPDATE api.refresh_tokens SET used_at = now() - interval '1 hour' "
                 "WHERE used_at IS NOT NULL AND family_id = (SELECT family_id FROM "
                 "api.refresh_tokens WHERE token_hash = $1)",
                 rfc9700.token_hash(user["refresh_token"]))
    assert client.post("/v1/auth/refresh",
                       json={"refresh_token": user["refresh_token"]}).status_code == 401
    eventually(lambda: any(row["actor"] == user["username"]
                           for row in api_db.ledger_entries("auth.refresh.reuse-detected")),
               timeout=30, what="the reuse in the ledger")


def test_one_request_id_in_the_answer_the_log_and_the_ledger(
        client: httpx.Client, api_db: ApiDatabase, api: ApiServer) -> None:
    username = api_db.add_user()
    rid = f"corr-{uuid.uuid4().hex}"
    response = client.post("/v1/auth/login", json={"username": username, "password": PASSWORD},
                           headers={"X-Request-ID": rid})
    assert response.status_code == 200 and response.headers["X-Request-ID"] == rid
    rows = eventually(lambda: api_db.fetch(
        "SELECT action FROM ledger.audit_log WHERE request_id = $1", rid) or None,
        timeout=30, what="the login's ledger entry")
    assert [row["action"] for row in rows] == ["auth.login.succeeded"]
    lines = [json.loads(line) for line in api.log().splitlines() if rid in line]
    assert lines and all(line["request_id"] == rid for line in lines)
    assert {line["component"] for line in lines} == {"api"}
