"""The live audit stream over a real WebSocket: one-time tickets, then entries as they land.

Every refusal happens before the upgrade (the handshake answers HTTP 403): no ticket, a forged
or expired one, one for another path, one used before, an access token in its place, a viewer.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
import websockets
from cryptography.hazmat.primitives import serialization

from tests.e2e.api.conftest import ApiDatabase, ApiServer, TenantMaker
from tests.e2e.api.test_memberships import bearer, create_key, sign_in, wait_role


def ws_url(api: ApiServer, path: str, **query: object) -> str:
    params = "&".join(f"{k}={v}" for k, v in query.items())
    return f"ws://127.0.0.1:{api.port}{path}" + (f"?{params}" if params else "")


def get_ticket(http: httpx.Client, token: str, path: str) -> httpx.Response:
    return http.post("/v1/tickets", json={"path": path}, headers=bearer(token))


async def refused_status(url: str) -> int | None:
    try:
        async with websockets.connect(url, open_timeout=10):
            return None
    except websockets.exceptions.InvalidStatus as refused:
        return int(refused.response.status_code)


@pytest.fixture
def admin_and_tenant(client: httpx.Client, api_db: ApiDatabase,
                     tenant: TenantMaker) -> tuple[dict[str, Any], dict[str, Any], str]:
    admin, viewer = sign_in(client, api_db), sign_in(client, api_db)
    name = tenant({admin["username"]: "admin", viewer["username"]: "viewer"})
    wait_role(client, admin["access_token"], name, "admin")
    return admin, viewer, name


def test_a_ticket_opens_the_stream_once_and_entries_arrive_as_appended(
        client: httpx.Client, api: ApiServer,
        admin_and_tenant: tuple[dict[str, Any], dict[str, Any], str]) -> None:
    admin, _, name = admin_and_tenant
    token = admin["access_token"]
    assert create_key(client, token, name, "viewer").status_code == 201
    path = f"/v1/tenants/{name}/audit/stream"
    issued = get_ticket(client, token, path)
    assert issued.status_code == 200 and issued.json()["expires_in"] == 30
    ticket = issued.json()["ticket"]

    async def follow() -> tuple[list[dict[str, Any]], float]:
        async with websockets.connect(ws_url(api, path, ticket=ticket, after=0),
                                      open_timeout=10) as socket:
            backlog = [json.loads(await asyncio.wait_for(socket.recv(), 15))]
            started = time.monotonic()
            await asyncio.to_thread(create_key, client, token, name, "member")
            live = json.loads(await asyncio.wait_for(socket.recv(), 15))
            return [*backlog, live], time.monotonic() - started

    entries, latency = asyncio.run(follow())
    assert [e["seq"] for e in entries] == [1, 2]
    assert entries[0]["action"] == entries[1]["action"] == "apikey.created"
    assert entries[1]["prevHash"] == entries[0]["hash"]
    # The append reached the subscriber within a second of the API answering (the spool
    # flush and the NOTIFY included).
    assert latency < 1.0, latency
    # Single use: the same ticket again is refused before the upgrade.
    assert asyncio.run(refused_status(ws_url(api, path, ticket=ticket))) == 403


def test_every_bad_ticket_is_refused_before_the_upgrade(
        client: httpx.Client, api: ApiServer, signing_key: Path,
        admin_and_tenant: tuple[dict[str, Any], dict[str, Any], str]) -> None:
    admin, viewer, name = admin_and_tenant
    path = f"/v1/tenants/{name}/audit/stream"
    other = get_ticket(client, admin["access_token"], f"/v1/tenants/{name}x/audit/stream")
    assert other.status_code == 403  # no role in a tenant that does not exist
    good = get_ticket(client, admin["access_token"], path).json()["ticket"]
    key = serialization.load_pem_private_key(signing_key.read_bytes(), password=None)
    header = jwt.get_unverified_header(good)
    claims = jwt.decode(good, options={"verify_signature": False})
    expired = jwt.encode({**claims, "iat": claims["iat"] - 600, "nbf": claims["nbf"] - 600,
                          "exp": claims["exp"] - 600, "jti": "expired-one"}, key,
                         algorithm="EdDSA", headers={"typ": header["typ"],
                                                     "kid": header["kid"]})
    forged = good[:-2] + ("AA" if not good.endswith("AA") else "BB")
    cases = {"no ticket": ws_url(api, path),
             "expired": ws_url(api, path, ticket=expired),
             "forged": ws_url(api, path, ticket=forged),
             "an access token": ws_url(api, path, ticket=admin["access_token"]),
             "another path": ws_url(api, f"/v1/tenants/{name}-other/audit/stream",
                                    ticket=good)}
    for what, url in cases.items():
        assert asyncio.run(refused_status(url)) == 403, what
    # The good ticket was not spent by the attempt on another path.
    assert asyncio.run(refused_status(ws_url(api, path, ticket=good, after=0))) is None
    # Viewers get no ticket; API keys get none either; bad paths are a 422.
    assert get_ticket(client, viewer["access_token"], path).status_code == 403
    key_token = create_key(client, admin["access_token"], name, "admin").json()["key"]
    assert get_ticket(client, key_token, path).status_code == 403
    bad = get_ticket(client, admin["access_token"], "/v1/me")
    assert bad.status_code == 422 and "path" in bad.json()["detail"]


def test_platform_admins_follow_the_platform_chain(client: httpx.Client, api: ApiServer,
                                                   api_db: ApiDatabase) -> None:
    from tests.e2e.api.conftest import PASSWORD

    if not api_db.fetch("SELECT 1 FROM api.users WHERE username = 'root@acme.example'"):
        api_db.add_user("root@acme.example")
    root = client.post("/v1/auth/login", json={"username": "root@acme.example",
                                               "password": PASSWORD}).json()["access_token"]
    ticket = get_ticket(client, root, "/v1/platform/audit/stream").json()["ticket"]

    async def first_login() -> dict[str, Any]:
        async with websockets.connect(ws_url(api, "/v1/platform/audit/stream", ticket=ticket),
                                      open_timeout=10) as socket:
            await asyncio.to_thread(client.post, "/v1/auth/login", json={
                "username": "root@acme.example", "password": PASSWORD})
            while True:
                entry = json.loads(await asyncio.wait_for(socket.recv(), 15))
                if entry["action"] == "auth.login.succeeded":
                    return dict(entry)

    assert asyncio.run(first_login())["actor"] == "root@acme.example"
