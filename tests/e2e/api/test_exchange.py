"""Credentials reach workloads: a pod's ServiceAccount token for a Credential's value, through
the real API process, the real apiserver (TokenRequest, TokenReview) and the real operator
(which encrypts the Credential and binds the API's read-only Secret role in the namespace).

Each refusal is tried as an attacker would: a ServiceAccount not on the list, one of another
namespace or tenant naming itself, a token for another audience, a deleted ServiceAccount's
token, a user's access token, no token, a participant- or platform-scoped Credential.
"""

from __future__ import annotations

import base64
import contextlib
import json
import signal
import stat
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import x25519
from kubernetes import client as kube

from tenantry.devcluster.cluster import LocalControlPlane
from tests.conftest import UserApi
from tests.e2e.api.conftest import PASSWORD, ApiDatabase, ApiServer
from tests.e2e.conftest import TenantFactory, owner
from tests.e2e.test_credentials import _create, _credential, _ready, _seal, public_key
from tests.helpers import GROUP, VERSION, conditions_of, eventually

__all__ = ["public_key"]  # the sealing key fixture, shared with the credentials tests

VALUES = {"username": "svc-reporting", "password": f"exchange-{uuid.uuid4().hex}"}


def mint(admin_api: kube.ApiClient, namespace: str, account: str,
         audience: str = "tenantry-api") -> str:
    """A projected-style token from the TokenRequest API, as the kubelet would mount it."""
    request = kube.AuthenticationV1TokenRequest(
        spec=kube.V1TokenRequestSpec(audiences=[audience], expiration_seconds=600))
    answer = kube.CoreV1Api(admin_api).create_namespaced_service_account_token(
        account, namespace, request)
    return str(answer.status.token)


def add_account(admin_api: kube.ApiClient, namespace: str, name: str) -> None:
    kube.CoreV1Api(admin_api).create_namespaced_service_account(
        namespace, kube.V1ServiceAccount(metadata=kube.V1ObjectMeta(name=name)))


def exchange(http: httpx.Client, token: str | None, namespace: str, name: str,
             field: str | None = None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    body: dict[str, Any] = {"namespace": namespace, "name": name}
    if field:
        body["field"] = field
    return http.post("/v1/credentials/exchange", json=body, headers=headers)


@pytest.fixture(scope="module")
def world(admin_api: kube.ApiClient, tenants_module: TenantFactory,
          public_key: x25519.X25519PublicKey) -> dict[str, str]:
    """Tenant A (namespace with SAs app, other, and Credentials), tenant B (an SA named app)."""
    suffix = uuid.uuid4().hex[:6]
    a, b = f"xa-{suffix}", f"xb-{suffix}"
    tenants_module(a, [a], [owner("alice@acme.example")])
    tenants_module(b, [b], [owner("bob@acme.example")])
    for namespace, account in ((a, "app"), (a, "other"), (a, "doomed"), (b, "app")):
        add_account(admin_api, namespace, account)
    for name, scope, accounts in (("db", "caller", ["app"]), ("shared", "participant", None),
                                  ("platform", "platform", None)):
        _create(admin_api, _credential(a, name, sealed=_seal(public_key, a, name, VALUES),
                                       scope=scope, accounts=accounts))
        _ready(admin_api, a, name)
    return {"a": a, "b": b}


@pytest.fixture(scope="module")
def tenants_module(admin_api: kube.ApiClient, operator: Any) -> Iterator[TenantFactory]:
    """Tenants for this module's shared world, Ready through the operator, deleted after."""
    custom = kube.CustomObjectsApi(admin_api)
    created: list[str] = []

    def make(name: str, namespaces: list[str], members: list[dict[str, Any]]) -> dict[str, Any]:
        custom.create_cluster_custom_object(GROUP, VERSION, "tenants", {
            "apiVersion": f"{GROUP}/{VERSION}", "kind": "Tenant", "metadata": {"name": name},
            "spec": {"members": members, "namespaces": [{"name": n} for n in namespaces]}})
        created.append(name)
        return eventually(lambda: (lambda obj: obj if conditions_of(obj).get(
            "Ready", {}).get("status") == "True" else None)(
            custom.get_cluster_custom_object(GROUP, VERSION, "tenants", name)),
            timeout=60, what=f"tenant {name} Ready")

    yield make
    for name in created:
        with contextlib.suppress(kube.ApiException):
            custom.patch_cluster_custom_object(GROUP, VERSION, "tenants", name,
                                               {"spec": {"deletionPolicy": "Delete"}})
            custom.delete_cluster_custom_object(GROUP, VERSION, "tenants", name)


def test_an_allowed_service_account_gets_the_values_once_the_operator_binds_the_api(
        client: httpx.Client, admin_api: kube.ApiClient, world: dict[str, str],
        api: ApiServer) -> None:
    a = world["a"]
    token = mint(admin_api, a, "app")
    # The operator binds the API's read role in the namespace with its fences; until then the
    # API cannot read the ciphertext (and says so), never anything else.
    response = eventually(lambda: (lambda r: r if r.status_code == 200 else None)(
        exchange(client, token, a, "db")), timeout=30, what="the exchange to succeed")
    assert response.headers["Cache-Control"] == "no-store"
    body = response.json()
    assert body["data"] == VALUES
    assert body["keyId"].startswith("v") and body["generation"] >= 1
    one = exchange(client, token, a, "db", "password").json()
    assert one["data"] == {"password": VALUES["password"]}
    missing = exchange(client, token, a, "db", "nope")
    assert missing.status_code == 404 and "nope" in missing.json()["detail"]
    assert exchange(client, token, a, "no-such-credential").status_code == 404
    assert VALUES["password"] not in api.log()
    assert token not in api.log()


def test_every_other_identity_is_refused(client: httpx.Client, admin_api: kube.ApiClient,
                                         api_db: ApiDatabase, world: dict[str, str]) -> None:
    a, b = world["a"], world["b"]
    refusals: list[tuple[str, httpx.Response]] = [
        ("not on the list", exchange(client, mint(admin_api, a, "other"), a, "db")),
        ("same name, another tenant", exchange(client, mint(admin_api, b, "app"), a, "db")),
        ("another audience", exchange(client, mint(admin_api, a, "app", "https://kubernetes"),
                                      a, "db")),
        ("participant-scoped", exchange(client, mint(admin_api, a, "app"), a, "shared")),
        ("platform-scoped", exchange(client, mint(admin_api, a, "app"), a, "platform")),
        ("garbage", exchange(client, "not-a-token", a, "db")),
        ("no token", exchange(client, None, a, "db")),
    ]
    doomed = mint(admin_api, a, "doomed")
    kube.CoreV1Api(admin_api).delete_namespaced_service_account("doomed", a)
    # The apiserver's TokenReview looks the ServiceAccount up in its informer cache, which
    # learns of the deletion a moment later; until then the token is still a valid identity
    # (not on the list: 403). Never a value, and 401 once the deletion is known.
    answers: list[int] = []

    def refused_as_unknown() -> Any:
        response = exchange(client, doomed, a, "db")
        answers.append(response.status_code)
        return response if response.status_code == 401 else None

    refusals.append(("deleted ServiceAccount",
                     eventually(refused_as_unknown, timeout=15,
                                what="the deleted ServiceAccount's token to be unknown")))
    assert set(answers) <= {401, 403}, answers
    user = api_db.add_user()
    access = client.post("/v1/auth/login", json={"username": user, "password": PASSWORD})
    refusals.append(("a user's access token",
                     exchange(client, access.json()["access_token"], a, "db")))
    expected = {"not on the list": 403, "same name, another tenant": 403,
                "another audience": 401, "participant-scoped": 403, "platform-scoped": 403,
                "garbage": 401, "no token": 401, "deleted ServiceAccount": 401,
                "a user's access token": 401}
    got = {what: response.status_code for what, response in refusals}
    assert got == expected
    for what, response in refusals:
        assert VALUES["password"] not in response.text, what
        assert "data" not in response.json(), what
    assert "participant token" in dict(refusals)["participant-scoped"].json()["detail"]


def test_a_token_minted_to_outlive_its_holders_access_is_refused(
        client: httpx.Client, admin_api: kube.ApiClient, as_user: UserApi,
        world: dict[str, str], api_db: ApiDatabase) -> None:
    """The attack: a tenant admin (alice, who may create ServiceAccount tokens) mints, for the
    allowed ServiceAccount, a token for audience tenantry-api that lives ten years. Taken off
    the Tenant tomorrow, she would still read the Credential, and each new value it is rotated
    to, until the ServiceAccount itself is deleted. The exchange takes only tokens that live at
    most --max-token-lifetime (a day by default; the kubelet's projected tokens live an hour)."""
    a = world["a"]
    decade = kube.CoreV1Api(as_user("alice@acme.example")).create_namespaced_service_account_token(
        "app", a, kube.AuthenticationV1TokenRequest(spec=kube.V1TokenRequestSpec(
            audiences=["tenantry-api"], expiration_seconds=10 * 365 * 24 * 3600)))
    token = str(decade.status.token)
    claims = jwt.decode(token, options={"verify_signature": False})
    assert claims["exp"] - claims["iat"] > 24 * 3600  # the apiserver granted the decade
    refused = exchange(client, token, a, "db")
    assert refused.status_code == 401, refused.text
    assert "lives 315360000 s" in refused.json()["detail"], refused.text
    assert VALUES["password"] not in refused.text
    # Within the limit the same ServiceAccount is served as before.
    assert eventually(lambda: exchange(client, mint(admin_api, a, "app"), a, "db")
                      .status_code == 200, timeout=30, what="a short-lived token to be served")


def test_each_exchange_is_a_ledger_entry_without_the_value(
        client: httpx.Client, admin_api: kube.ApiClient, api_db: ApiDatabase,
        world: dict[str, str]) -> None:
    a = world["a"]
    assert exchange(client, mint(admin_api, a, "app"), a, "db").status_code == 200
    assert exchange(client, mint(admin_api, a, "other"), a, "db").status_code == 403

    def entries() -> list[Any] | None:
        rows = api_db.fetch("SELECT action, actor, actor_kind, changes::text AS changes, "
                            "identity::text AS identity FROM ledger.audit_log WHERE chain = $1 "
                            "AND action LIKE 'credential.exchange.%'", a)
        actions = {row["action"] for row in rows}
        wanted = {"credential.exchange.allowed", "credential.exchange.refused"}
        return rows if wanted <= actions else None

    rows = eventually(entries, timeout=30, what="exchange entries on the tenant's chain")
    allowed = [r for r in rows if r["action"] == "credential.exchange.allowed"]
    refused = [r for r in rows if r["action"] == "credential.exchange.refused"]
    assert allowed[0]["actor"] == f"system:serviceaccount:{a}:app"
    assert allowed[0]["actor_kind"] == "serviceaccount"
    assert any(r["actor"] == f"system:serviceaccount:{a}:other" for r in refused)
    dump = " ".join(f"{r['changes']} {r['identity']}" for r in rows)
    for value in VALUES.values():
        assert value not in dump
        assert base64.b64encode(value.encode()).decode() not in dump


def test_metadata_for_tenant_members_never_values(
        client: httpx.Client, admin_api: kube.ApiClient, api_db: ApiDatabase,
        world: dict[str, str]) -> None:
    a, b = world["a"], world["b"]
    assert exchange(client, mint(admin_api, a, "app"), a, "db").status_code == 200
    if not api_db.fetch("SELECT 1 FROM api.users WHERE username = 'alice@acme.example'"):
        api_db.add_user("alice@acme.example")
    if not api_db.fetch("SELECT 1 FROM api.users WHERE username = 'bob@acme.example'"):
        api_db.add_user("bob@acme.example")

    def token(user: str) -> str:
        return str(client.post("/v1/auth/login", json={
            "username": user, "password": PASSWORD}).json()["access_token"])

    alice, bob = token("alice@acme.example"), token("bob@acme.example")

    def listed() -> dict[str, Any] | None:
        response = client.get(f"/v1/tenants/{a}/credentials",
                              headers={"Authorization": f"Bearer {alice}"})
        if response.status_code != 200:
            return None
        items = {item["name"]: item for item in response.json()["items"]}
        db = items.get("db")
        return items if db and db["lastExchangeTime"] else None

    items = eventually(listed, timeout=30, what="the Credential metadata with its last exchange")
    db = items["db"]
    assert db["fields"] == sorted(VALUES) and db["scope"] == "caller" and db["ready"] is True
    assert db["allowedServiceAccounts"] == ["app"] and db["keyId"]
    one = client.get(f"/v1/tenants/{a}/credentials/{a}/db",
                     headers={"Authorization": f"Bearer {alice}"})
    assert one.status_code == 200 and one.json()["name"] == "db"
    for response in (one,):
        for value in VALUES.values():
            assert value not in response.text
    # Another tenant's owner sees nothing of it, by list or by name.
    assert client.get(f"/v1/tenants/{a}/credentials",
                      headers={"Authorization": f"Bearer {bob}"}).status_code == 403
    assert client.get(f"/v1/tenants/{b}/credentials/{a}/db",
                      headers={"Authorization": f"Bearer {bob}"}).status_code == 404


# -- tenantry credentials fetch ---------------------------------------------------------------

def fetch(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "tenantry", "credentials", "fetch", *args],
                          capture_output=True, text=True, timeout=timeout, check=False)


def test_fetch_writes_0400_files_and_exits_with_codes_a_shell_can_check(
        admin_api: kube.ApiClient, api: ApiServer, world: dict[str, str],
        tmp_path: Path) -> None:
    a = world["a"]
    token_file = tmp_path / "token"
    token_file.write_text(mint(admin_api, a, "app"))
    out = tmp_path / "secrets"
    done = fetch(f"{a}/db", "--dir", str(out), "--api-url", api.url,
                 "--token-file", str(token_file))
    assert done.returncode == 0, done.stderr
    assert {p.name for p in out.iterdir()} == {*VALUES, ".tenantry.json"}
    for field, value in VALUES.items():
        assert (out / field).read_text() == value
        assert stat.S_IMODE((out / field).stat().st_mode) == 0o400
    assert json.loads((out / ".tenantry.json").read_text())["fields"] == sorted(VALUES)
    for value in VALUES.values():
        assert value not in done.stderr + done.stdout

    token_file.write_text(mint(admin_api, a, "other"))
    refused = fetch(f"{a}/db", "--dir", str(tmp_path / "x"), "--api-url", api.url,
                    "--token-file", str(token_file))
    assert refused.returncode == 1 and "403" in refused.stderr
    unreachable = fetch(f"{a}/db", "--dir", str(tmp_path / "y"), "--api-url",
                        "http://127.0.0.1:9", "--token-file", str(token_file), "--retries", "0")
    assert unreachable.returncode == 3
    usage = fetch("no-slash", "--dir", str(tmp_path / "z"), "--api-url", api.url,
                  "--token-file", str(token_file))
    assert usage.returncode == 2 and "NAMESPACE/NAME" in usage.stderr
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


def test_fetch_watch_swaps_the_files_when_the_credential_changes(
        admin_api: kube.ApiClient, api: ApiServer, world: dict[str, str],
        public_key: x25519.X25519PublicKey, tmp_path: Path) -> None:
    a = world["a"]
    name = f"rotating-{uuid.uuid4().hex[:6]}"
    old, new = f"old-{uuid.uuid4().hex}", f"new-{uuid.uuid4().hex}"
    _create(admin_api, _credential(a, name, sealed=_seal(public_key, a, name, {"token": old}),
                                   accounts=["app"]))
    first = _ready(admin_api, a, name)
    token_file = tmp_path / "token"
    token_file.write_text(mint(admin_api, a, "app"))
    out, log = tmp_path / "live", tmp_path / "sidecar.log"
    with log.open("w") as log_file:
        sidecar = subprocess.Popen(
            [sys.executable, "-m", "tenantry", "credentials", "fetch", f"{a}/{name}", "--dir",
             str(out), "--api-url", api.url, "--token-file", str(token_file), "--watch",
             "--interval", "0.5"], stdout=subprocess.DEVNULL, stderr=log_file)
        try:
            eventually(lambda: (out / "token").exists() and (out / "token").read_text() == old,
                       timeout=30, what="the first value on disk")
            kube.CustomObjectsApi(admin_api).patch_namespaced_custom_object(
                GROUP, VERSION, a, "credentials", name,
                {"spec": {"sealed": {"encryptedData": _seal(public_key, a, name,
                                                            {"token": new})}}})
            _ready(admin_api, a, name,
                   generation=first["status"]["encryptionGeneration"] + 1)
            eventually(lambda: (out / "token").read_text() == new, timeout=30,
                       what="the sidecar to swap in the new value without a restart")
            assert sidecar.poll() is None
        finally:
            sidecar.send_signal(signal.SIGTERM)
            code = sidecar.wait(20)
    assert code == 0, log.read_text()
    assert old not in log.read_text() and new not in log.read_text()


def test_no_value_in_api_logs_ledger_or_responses_but_the_exchange(
        client: httpx.Client, admin_api: kube.ApiClient, api: ApiServer, api_db: ApiDatabase,
        world: dict[str, str]) -> None:
    """The leakage scan of the credentials tests, extended to the API: its log, every ledger
    row, the metadata and refusal responses. The one exchange response is the positive
    control: the scan finds the values there."""
    a = world["a"]
    answer = exchange(client, mint(admin_api, a, "app"), a, "db")
    refusal = exchange(client, mint(admin_api, a, "other"), a, "db")
    forms = [form for value in VALUES.values()
             for form in (value, base64.b64encode(value.encode()).decode())]
    assert all(value in answer.text for value in VALUES.values())  # the scan can find them
    ledger = " ".join(str(dict(row)) for row in api_db.fetch("SELECT * FROM ledger.audit_log"))
    haystacks = {"api log": api.log(), "ledger": ledger, "refusal": refusal.text}
    for where, text in haystacks.items():
        for form in forms:
            assert form not in text, f"a Credential value in the {where}"


# -- participant tokens ---------------------------------------------------------------------------

def login_as(http: httpx.Client, api_db: ApiDatabase, user: str) -> str:
    if not api_db.fetch("SELECT 1 FROM api.users WHERE username = $1", user):
        api_db.add_user(user)
    response = http.post("/v1/auth/login", json={"username": user, "password": PASSWORD})
    assert response.status_code == 200, response.text
    return str(response.json()["access_token"])


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def participant(http: httpx.Client, token: str, tenant: str, resource: str, role: str,
                **extra: Any) -> httpx.Response:
    return http.post(f"/v1/tenants/{tenant}/participant-tokens",
                     json={"resource": resource, "role": role, **extra},
                     headers=bearer(token))


def test_a_participant_token_does_exactly_one_thing(
        client: httpx.Client, api_db: ApiDatabase, world: dict[str, str]) -> None:
    a = world["a"]
    alice = login_as(client, api_db, "alice@acme.example")
    issued = eventually(lambda: (lambda r: r if r.status_code == 201 else None)(
        participant(client, alice, a, f"credentials/{a}/shared", "member", ttl=600)),
        timeout=20, what="alice's owner role to be seen")
    assert issued.headers["Cache-Control"] == "no-store"
    token = issued.json()["token"]
    assert issued.json()["expires_in"] == 600
    # Its one thing: the participant-scoped Credential, exchanged and read.
    got = exchange(client, token, a, "shared")
    assert got.status_code == 200 and got.json()["data"] == VALUES
    meta = client.get(f"/v1/tenants/{a}/credentials/{a}/shared", headers=bearer(token))
    assert meta.status_code == 200 and meta.json()["scope"] == "participant"
    # Everything else: 403.
    for method, path in (("GET", "/v1/me"), ("GET", f"/v1/tenants/{a}/credentials"),
                         ("GET", f"/v1/tenants/{a}/credentials/{a}/db"),
                         ("GET", f"/v1/tenants/{a}/api-keys"),
                         ("GET", f"/v1/tenants/{a}/audit"), ("POST", "/v1/auth/logout")):
        response = client.request(method, path, headers=bearer(token))
        assert response.status_code == 403, (path, response.text)
    assert exchange(client, token, a, "db").status_code == 403
    # A forged one (signature flipped) is not a participant token at all.
    forged = token[:-2] + ("AA" if not token.endswith("AA") else "BB")
    assert exchange(client, forged, a, "shared").status_code == 401
    assert client.get("/v1/me", headers=bearer(forged)).status_code == 401

    # A viewer token reads, never exchanges; a member token for a caller-scoped Credential
    # cannot exchange it either.
    viewer = participant(client, alice, a, f"credentials/{a}/shared", "viewer").json()["token"]
    assert client.get(f"/v1/tenants/{a}/credentials/{a}/shared",
                      headers=bearer(viewer)).status_code == 200
    assert exchange(client, viewer, a, "shared").status_code == 403
    caller_scoped = participant(client, alice, a, f"credentials/{a}/db", "member").json()
    refused = exchange(client, caller_scoped["token"], a, "db")
    assert refused.status_code == 403 and "participant-scoped" in refused.json()["detail"]

    # Revoked by jti: stops at once, by DELETE or by /v1/tokens/revoke.
    jti = issued.json()["jti"]
    assert client.delete(f"/v1/tenants/{a}/participant-tokens/{jti}",
                         headers=bearer(alice)).status_code == 204
    assert exchange(client, token, a, "shared").status_code == 401
    assert client.post("/v1/tokens/revoke", json={"jti": caller_scoped["jti"]},
                       headers=bearer(alice)).status_code == 204
    assert client.get(f"/v1/tenants/{a}/credentials/{a}/db",
                      headers=bearer(caller_scoped["token"])).status_code == 401


def test_participant_tokens_only_for_admins_of_the_tenant_and_its_own_credentials(
        client: httpx.Client, api_db: ApiDatabase, world: dict[str, str]) -> None:
    a, b = world["a"], world["b"]
    alice = login_as(client, api_db, "alice@acme.example")
    bob = login_as(client, api_db, "bob@acme.example")
    assert participant(client, bob, a, f"credentials/{a}/shared",
                       "member").status_code == 403
    eventually(lambda: participant(client, bob, b, f"credentials/{b}/none",
                                   "member").status_code == 404,
               timeout=20, what="bob's role in his tenant")
    # A namespace of another tenant, named in one's own tenant's path: not found.
    assert participant(client, bob, b, f"credentials/{a}/shared",
                       "member").status_code == 404
    too_long = participant(client, alice, a, f"credentials/{a}/shared", "member", ttl=3601)
    assert too_long.status_code == 422 and too_long.json()["detail"][0]["loc"] == [
        "body", "ttl"]
    assert participant(client, alice, a, f"credentials/{a}/shared",
                       "owner").status_code == 422
    assert participant(client, alice, a, "secrets/x/y", "member").status_code == 422
    # Another tenant's admin cannot revoke alice's tokens.
    jti = participant(client, alice, a, f"credentials/{a}/shared", "viewer").json()["jti"]
    assert client.post("/v1/tokens/revoke", json={"jti": jti},
                       headers=bearer(bob)).status_code == 404
    assert client.delete(f"/v1/tenants/{b}/participant-tokens/{jti}",
                         headers=bearer(bob)).status_code == 404


def test_a_participant_token_dies_with_its_issuers_admin_role(
        client: httpx.Client, admin_api: kube.ApiClient, api_db: ApiDatabase,
        world: dict[str, str]) -> None:
    """An admin issues a token for an hour, then is demoted in the Tenant: the token stops
    working (on the API's next view of the Tenant), though nobody revoked it."""
    a = world["a"]
    custom = kube.CustomObjectsApi(admin_api)
    spec = custom.get_cluster_custom_object(GROUP, VERSION, "tenants", a)["spec"]
    dora = "dora@acme.example"
    members = [*spec["members"], {"kind": "User", "name": dora, "role": "admin"}]
    custom.patch_cluster_custom_object(GROUP, VERSION, "tenants", a,
                                       {"spec": {"members": members}})
    try:
        token = login_as(client, api_db, dora)
        issued = eventually(lambda: (lambda r: r if r.status_code == 201 else None)(
            participant(client, token, a, f"credentials/{a}/shared", "member", ttl=3600)),
            timeout=20, what="dora's admin role to be seen").json()
        assert exchange(client, issued["token"], a, "shared").status_code == 200
        demoted = [*spec["members"], {"kind": "User", "name": dora, "role": "member"}]
        custom.patch_cluster_custom_object(GROUP, VERSION, "tenants", a,
                                           {"spec": {"members": demoted}})
        refused = eventually(lambda: (lambda r: r if r.status_code == 401 else None)(
            exchange(client, issued["token"], a, "shared")), timeout=20,
            what="the demoted issuer's token to stop working")
        assert "issuer no longer holds the admin role" in refused.json()["detail"]
        # Promoted again: a token of the same issuer works again (nothing was revoked).
        custom.patch_cluster_custom_object(GROUP, VERSION, "tenants", a,
                                           {"spec": {"members": members}})
        eventually(lambda: exchange(client, issued["token"], a, "shared").status_code == 200,
                   timeout=20, what="the issuer's admin role back")
    finally:
        custom.patch_cluster_custom_object(GROUP, VERSION, "tenants", a,
                                           {"spec": {"members": spec["members"]}})


def test_a_participant_token_issued_with_an_api_key_dies_with_the_key(
        client: httpx.Client, api_db: ApiDatabase, world: dict[str, str]) -> None:
    a = world["a"]
    alice = login_as(client, api_db, "alice@acme.example")
    key = eventually(lambda: (lambda r: r.json() if r.status_code == 201 else None)(
        client.post(f"/v1/tenants/{a}/api-keys", json={"role": "admin", "name": "ci"},
                    headers=bearer(alice))), timeout=20, what="alice's owner role")
    issued = participant(client, key["key"], a, f"credentials/{a}/shared", "member")
    assert issued.status_code == 201, issued.text
    token = issued.json()["token"]
    assert exchange(client, token, a, "shared").status_code == 200
    assert client.delete(f"/v1/tenants/{a}/api-keys/{key['id']}",
                         headers=bearer(alice)).status_code == 204
    refused = exchange(client, token, a, "shared")
    assert refused.status_code == 401, refused.text
    assert "API key that is revoked or expired" in refused.json()["detail"]


def test_issuing_and_using_participant_tokens_are_ledger_entries(
        client: httpx.Client, api_db: ApiDatabase, world: dict[str, str]) -> None:
    a = world["a"]
    alice = login_as(client, api_db, "alice@acme.example")
    issued = eventually(lambda: (lambda r: r if r.status_code == 201 else None)(
        participant(client, alice, a, f"credentials/{a}/shared", "member")),
        timeout=20, what="a participant token").json()
    assert exchange(client, issued["token"], a, "shared").status_code == 200

    def entries() -> dict[str, Any] | None:
        rows = api_db.fetch("SELECT action, actor, changes::text AS changes FROM "
                            "ledger.audit_log WHERE chain = $1 AND resource_name IN ($2, $3)",
                            a, issued["jti"], "shared")
        found = {row["action"]: row for row in rows}
        return found if {"participant.token.issued", "participant.token.used"} <= set(
            found) else None

    found = eventually(entries, timeout=30, what="participant entries in the ledger")
    assert found["participant.token.issued"]["actor"] == "alice@acme.example"
    assert found["participant.token.used"]["actor"] == f"participant:{issued['jti']}"
    assert issued["token"] not in str(found)


def test_an_expired_service_account_token_is_refused(
        client: httpx.Client, admin_api: kube.ApiClient, control_plane: LocalControlPlane,
        world: dict[str, str]) -> None:
    """A token the cluster really issued, for the right audience and an allowed account, but
    past its exp (re-signed here with the control plane's ServiceAccount signing key, since
    TokenRequest issues nothing shorter than ten minutes): the apiserver refuses it, so does
    the API."""
    a = world["a"]
    real = mint(admin_api, a, "app")
    header = jwt.get_unverified_header(real)
    claims = jwt.decode(real, options={"verify_signature": False})
    now = int(time.time())
    expired = {**claims, "iat": now - 3600, "nbf": now - 3600, "exp": now - 1800}
    key = serialization.load_pem_private_key(
        (control_plane.workdir / "sa.key").read_bytes(), password=None)
    forged = jwt.encode(expired, key, algorithm=header["alg"], headers={"kid": header["kid"]})
    # The same claims, unexpired and signed the same way, are accepted: only exp differs.
    fresh = jwt.encode({**claims, "iat": now, "nbf": now, "exp": now + 600}, key,
                       algorithm=header["alg"], headers={"kid": header["kid"]})
    assert exchange(client, fresh, a, "db").status_code == 200
    refused = exchange(client, forged, a, "db")
    assert refused.status_code == 401 and VALUES["password"] not in refused.text
