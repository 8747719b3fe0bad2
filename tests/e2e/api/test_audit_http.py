"""The audit ledger over HTTP: a tenant's chain page by page, its verification (also against a
signed checkpoint), the platform chain for platform admins, and who is refused.

The entries are the API's own (API keys created in the tenant land on its chain). Tampering
is done the way an attacker with database access would: rewriting a row as the superuser with
the append-only triggers switched off; the API's verification must then name the first broken
entry.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import asyncpg
import httpx
import pytest

from tenantry.ledger import checkpoints
from tests.e2e.api.conftest import PASSWORD, ApiDatabase, ApiServer, TenantMaker
from tests.e2e.api.test_memberships import bearer, create_key, sign_in, wait_role
from tests.helpers import eventually


def audit(http: httpx.Client, token: str, tenant: str, **query: object) -> httpx.Response:
    return http.get(f"/v1/tenants/{tenant}/audit", params=query, headers=bearer(token))


def entries_landed(http: httpx.Client, token: str, tenant: str, count: int) -> list[dict]:
    def enough() -> list[dict] | None:
        items = audit(http, token, tenant, limit=100).json()["items"]
        return items if len(items) >= count else None

    return eventually(enough, timeout=30, what=f"{count} entries on chain {tenant}")


@pytest.fixture
def busy_tenant(client: httpx.Client, api_db: ApiDatabase,
                tenant: TenantMaker) -> tuple[str, dict, dict]:
    """A tenant with an admin, a viewer and three API-key entries on its chain."""
    admin, viewer = sign_in(client, api_db), sign_in(client, api_db)
    name = tenant({admin["username"]: "admin", viewer["username"]: "viewer"})
    wait_role(client, admin["access_token"], name, "admin")
    for role in ("viewer", "member", "viewer"):
        assert create_key(client, admin["access_token"], name, role).status_code == 201
    entries_landed(client, admin["access_token"], name, 3)
    return name, admin, viewer


def test_tenant_admin_pages_through_the_tenant_chain(
        client: httpx.Client, busy_tenant: tuple[str, dict, dict]) -> None:
    name, admin, _ = busy_tenant
    token = admin["access_token"]
    first = audit(client, token, name, limit=2).json()
    assert first["chain"] == name and [e["seq"] for e in first["items"]] == [1, 2]
    assert first["next"] == 2
    rest = audit(client, token, name, limit=2, after=first["next"]).json()
    assert [e["seq"] for e in rest["items"]] == [3] and rest["next"] is None
    newest = audit(client, token, name, order="desc", limit=1).json()
    assert newest["items"][0]["seq"] == 3
    entry = first["items"][0]
    assert entry["action"] == "apikey.created" and entry["actor"] == admin["username"]
    assert entry["resource"]["kind"] == "ApiKey" and entry["component"] == "api"
    assert entry["identity"]["kind"] == "token" and len(entry["hash"]) == 64
    assert "key" not in entry["changes"]
    assert rest["items"][0]["prevHash"] == first["items"][1]["hash"]
    # Filters: an exact action, an action prefix, an actor.
    assert len(audit(client, token, name, action="apikey.").json()["items"]) == 3
    assert audit(client, token, name, action="apikey").json()["items"] == []
    assert audit(client, token, name, actor="someone-else").json()["items"] == []
    # Bad input names the field.
    bad = audit(client, token, name, limit=100000)
    assert bad.status_code == 422 and bad.json()["detail"][0]["loc"] == ["query", "limit"]


def test_viewers_other_tenants_and_strangers_cannot_read_a_chain(
        client: httpx.Client, api_db: ApiDatabase, tenant: TenantMaker,
        busy_tenant: tuple[str, dict, dict]) -> None:
    name, _, viewer = busy_tenant
    stranger = sign_in(client, api_db)
    theirs = tenant({stranger["username"]: "owner"})
    wait_role(client, stranger["access_token"], theirs, "owner")
    for path in (f"/v1/tenants/{name}/audit", f"/v1/tenants/{name}/audit/verify",
                 "/v1/platform/audit", "/v1/platform/audit/verify"):
        for who in (viewer, stranger):
            response = client.get(path, headers=bearer(who["access_token"]))
            assert response.status_code == 403, (path, response.text)
        assert client.get(path).status_code == 401


def test_verify_reports_a_sound_chain_then_the_first_tampered_entry(
        client: httpx.Client, api_db: ApiDatabase,
        busy_tenant: tuple[str, dict, dict]) -> None:
    name, admin, _ = busy_tenant
    token = admin["access_token"]
    sound = client.get(f"/v1/tenants/{name}/audit/verify", headers=bearer(token)).json()
    assert sound["valid"] is True and sound["entries"] == 3 and sound["head"]["seq"] == 3
    assert "firstBreak" not in sound

    with api_db.tampered(name, 2):
        broken = client.get(f"/v1/tenants/{name}/audit/verify", headers=bearer(token)).json()
        assert broken["valid"] is False and broken["entries"] == 1
        assert broken["firstBreak"]["seq"] == 2 and broken["firstBreak"]["kind"]
    restored = client.get(f"/v1/tenants/{name}/audit/verify", headers=bearer(token)).json()
    assert restored["valid"] is True

def test_verify_against_a_signed_checkpoint(
        client: httpx.Client, api_db: ApiDatabase, signing_key: Path, api_kubeconfig: Path,
        tmp_path: Path, busy_tenant: tuple[str, dict, dict]) -> None:
    name, admin, _ = busy_tenant
    private = checkpoints.generate_private_key()
    checkpoints.write_key_pair(private, tmp_path / "cp.key", tmp_path / "cp.pub")

    async def sign() -> int:
        conn = await asyncpg.connect(api_db.ledger_dsn)
        try:
            made = await checkpoints.create_checkpoint(conn, private)
        finally:
            await conn.close()
        assert made.id is not None
        return made.id

    checkpoint_id = asyncio.run(sign())
    server = ApiServer(api_db, signing_key, tmp_path / "api.log",
                       ["--checkpoint-public-key", str(tmp_path / "cp.pub")],
                       kubeconfig=api_kubeconfig)
    try:
        server.wait_ready()
        with httpx.Client(base_url=server.url) as http:
            token = http.post("/v1/auth/login", json={
                "username": admin["username"], "password": PASSWORD}).json()[
                "access_token"]
            wait_role(http, token, name, "admin")
            path = f"/v1/tenants/{name}/audit/verify"
            checked = http.get(path, params={"checkpoint": checkpoint_id},
                               headers=bearer(token)).json()
            assert checked["valid"] is True
            assert checked["checkpoint"] == {"id": checkpoint_id, "valid": True, "failures": []}
            missing = http.get(path, params={"checkpoint": checkpoint_id + 1000},
                               headers=bearer(token))
            assert missing.status_code == 404 and "checkpoint" in missing.json()["detail"]
    finally:
        server.stop()
    # The session's API has no checkpoint key: it says so instead of pretending.
    refused = client.get(f"/v1/tenants/{name}/audit/verify", params={"checkpoint": checkpoint_id},
                         headers=bearer(admin["access_token"]))
    assert refused.status_code == 409 and "--checkpoint-public-key" in refused.json()["detail"]


def test_platform_admin_reads_the_platform_chain(client: httpx.Client,
                                                 api_db: ApiDatabase) -> None:
    if not api_db.fetch("SELECT 1 FROM api.users WHERE username = 'root@acme.example'"):
        api_db.add_user("root@acme.example")
    root = client.post("/v1/auth/login", json={"username": "root@acme.example",
                                               "password": PASSWORD}).json()
    token = root["access_token"]

    def logins() -> list[dict] | None:
        page = client.get("/v1/platform/audit", params={"action": "auth.login.",
                                                        "actor": "root@acme.example",
                                                        "order": "desc"},
                          headers=bearer(token)).json()
        return page["items"] or None

    found = eventually(logins, timeout=30, what="root's login on the platform chain")
    assert found[0]["action"] == "auth.login.succeeded"
    verified = client.get("/v1/platform/audit/verify", headers=bearer(token)).json()
    assert verified["chain"] == "_platform" and verified["valid"] is True
