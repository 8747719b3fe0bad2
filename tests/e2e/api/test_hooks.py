"""`POST /v1/hooks/rotate/{tenant}`: a pipeline's signed request rotates a RotationPolicy, over
real HTTP to a real `tenantry api run` (with `--hook-secrets-dir`), the real apiserver and
PostgreSQL (idempotency keys).

The seeds' inbound webhook controls, each attacked the way someone holding a captured or
forged delivery would: a bad signature, a timestamp too old or too far ahead, a replay (the
same key, and the same signed request under a fresh key), a missing idempotency key, another
content type, an oversize body, a tenant without a hook and one that does not exist. After
every refusal the policy's trigger is unchanged.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import httpx
import pytest
from kubernetes import client

from tenantry.api import hooks
from tests.e2e.api.conftest import ApiDatabase, ApiServer, TenantMaker
from tests.e2e.api.test_rotation_trigger import PolicyMaker, ledger_entry, policies, read_policy
from tests.helpers import eventually


@pytest.fixture(scope="module")
def secrets_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("hook-secrets")


@pytest.fixture(scope="module")
def hook_api(api_db: ApiDatabase, signing_key: Path, api_kubeconfig: Path, secrets_dir: Path,
             tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServer]:
    server = ApiServer(api_db, signing_key, tmp_path_factory.mktemp("hook-api") / "api.log",
                       ["--hook-secrets-dir", str(secrets_dir)], kubeconfig=api_kubeconfig)
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


@pytest.fixture
def policy(admin_api: client.ApiClient) -> Iterator[PolicyMaker]:
    yield from policies(admin_api)


@pytest.fixture
def http(hook_api: ApiServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=hook_api.url, timeout=30) as session:
        yield session


class Pipeline:
    """A sender holding one tenant's hook secret."""

    def __init__(self, http: httpx.Client, tenant_name: str, secret: bytes) -> None:
        self.http, self.tenant, self.secret = http, tenant_name, secret

    def headers(self, body: bytes, *, timestamp: int | None = None,
                key: str | None = None) -> dict[str, str]:
        stamp = str(int(time.time()) if timestamp is None else timestamp)
        return {"Content-Type": "application/json",
                hooks.TIMESTAMP_HEADER: stamp,
                hooks.SIGNATURE_HEADER: hooks.sign(self.secret, stamp, body),
                hooks.IDEMPOTENCY_HEADER: key or f"deploy-{uuid.uuid4().hex}"}

    def send(self, body: bytes, headers: dict[str, str],
             tenant_name: str | None = None) -> httpx.Response:
        return self.http.post(f"/v1/hooks/rotate/{tenant_name or self.tenant}", content=body,
                              headers=headers)

    def rotate(self, reference: str, **signing: object) -> httpx.Response:
        body = json.dumps({"policy": reference}).encode()
        return self.send(body, self.headers(body, **signing))  # type: ignore[arg-type]


@pytest.fixture
def pipeline(http: httpx.Client, hook_api: ApiServer, secrets_dir: Path, tenant: TenantMaker,
             policy: PolicyMaker) -> tuple[Pipeline, str]:
    """A tenant with a hook secret and a RotationPolicy, seen by the hook API's Tenant watch."""
    name = tenant({})
    secret = secrets.token_urlsafe(32).encode()
    (secrets_dir / name).write_bytes(secret + b"\n")
    reference = policy(name)
    sender = Pipeline(http, name, secret)
    wait_known(sender)
    return sender, reference


def wait_known(sender: Pipeline) -> None:
    """The hook API learns of a tenant through its watch; until then it is unknown (404)."""
    eventually(lambda: "RotationPolicy" in sender.rotate(f"{sender.tenant}-ns/absent").text,
               timeout=20, what=f"the hook API sees tenant {sender.tenant}")


def unchanged(admin_api: client.ApiClient, reference: str) -> bool:
    return bool(read_policy(admin_api, reference)["spec"]["trigger"] == "initial")


def test_a_signed_delivery_rotates_once_and_a_retry_is_a_replay(
        pipeline: tuple[Pipeline, str], admin_api: client.ApiClient,
        api_db: ApiDatabase) -> None:
    sender, reference = pipeline
    body = json.dumps({"policy": reference}).encode()
    headers = sender.headers(body, key="release-2026.12.01:build-7")
    first = sender.send(body, headers)
    assert first.status_code == 202, first.text
    answer = first.json()
    assert answer["replayed"] is False and answer["trigger"].startswith("hook:")
    assert read_policy(admin_api, reference)["spec"]["trigger"] == answer["trigger"]

    # The same delivery again, and a retry signed afresh with the same key: nothing happens.
    for retry in (headers, sender.headers(body, key="release-2026.12.01:build-7")):
        again = sender.send(body, retry)
        assert again.status_code == 200, again.text
        assert again.json() == {**answer, "replayed": True}
    assert read_policy(admin_api, reference)["spec"]["trigger"] == answer["trigger"]
    entries = ledger_entry(api_db, sender.tenant, "rotation.trigger.requested")
    assert len(entries) == 1
    assert entries[0]["actor"] == f"hook:{sender.tenant}"
    assert "release-2026.12.01:build-7" in entries[0]["identity"]


def test_a_bad_signature_is_refused(pipeline: tuple[Pipeline, str],
                                    admin_api: client.ApiClient, api_db: ApiDatabase) -> None:
    sender, reference = pipeline
    body = json.dumps({"policy": reference}).encode()
    forged = Pipeline(sender.http, sender.tenant, secrets.token_urlsafe(32).encode())
    cases = {
        "wrong secret": (body, forged.headers(body)),
        "body changed after signing": (body.replace(b"}", b" }"), sender.headers(body)),
        "no signature": (body, {k: v for k, v in sender.headers(body).items()
                                if k != hooks.SIGNATURE_HEADER}),
        "not hex": (body, {**sender.headers(body), hooks.SIGNATURE_HEADER: "sha256=" + "g" * 64}),
    }
    for case, (sent, headers) in cases.items():
        response = sender.send(sent, headers)
        assert response.status_code == 401, (case, response.text)
        assert hooks.SIGNATURE_HEADER in response.json()["detail"], case
    assert unchanged(admin_api, reference)
    refused = ledger_entry(api_db, sender.tenant, "rotation.hook.refused")
    assert refused[0]["actor"] == f"hook:{sender.tenant}"


@pytest.mark.parametrize(("offset", "words"), [(-301, "old"), (-3600, "old"),
                                               (301, "future"), (86400, "future")])
def test_a_timestamp_more_than_five_minutes_off_is_refused(
        pipeline: tuple[Pipeline, str], admin_api: client.ApiClient, offset: int,
        words: str) -> None:
    sender, reference = pipeline
    response = sender.rotate(reference, timestamp=int(time.time()) + offset)
    assert response.status_code == 401, response.text
    assert hooks.TIMESTAMP_HEADER in response.json()["detail"] and words in response.text
    assert unchanged(admin_api, reference)


def test_a_captured_delivery_replayed_under_a_fresh_key_is_refused(
        pipeline: tuple[Pipeline, str], admin_api: client.ApiClient) -> None:
    sender, reference = pipeline
    body = json.dumps({"policy": reference}).encode()
    headers = sender.headers(body)
    assert sender.send(body, headers).status_code == 202
    rotated = read_policy(admin_api, reference)["spec"]["trigger"]
    replayed = sender.send(body, {**headers, hooks.IDEMPOTENCY_HEADER: "attacker-fresh-key"})
    assert replayed.status_code == 409, replayed.text
    assert "already received" in replayed.json()["detail"]
    assert read_policy(admin_api, reference)["spec"]["trigger"] == rotated


def test_a_key_reused_for_another_body_is_refused(
        pipeline: tuple[Pipeline, str], admin_api: client.ApiClient, policy: PolicyMaker) -> None:
    sender, reference = pipeline
    assert sender.rotate(reference, key="one-key-per-request").status_code == 202
    other = policy(sender.tenant)
    response = sender.rotate(other, key="one-key-per-request")
    assert response.status_code == 409 and "different body" in response.text
    assert unchanged(admin_api, other)


@pytest.mark.parametrize("key", [None, "", "short", "with spaces in it", "k" * 129, "k" * 300])
def test_a_missing_or_malformed_idempotency_key_is_refused(
        pipeline: tuple[Pipeline, str], admin_api: client.ApiClient, key: str | None) -> None:
    sender, reference = pipeline
    body = json.dumps({"policy": reference}).encode()
    headers = sender.headers(body)
    if key is None:
        del headers[hooks.IDEMPOTENCY_HEADER]
    else:
        headers[hooks.IDEMPOTENCY_HEADER] = key
    response = sender.send(body, headers)
    assert response.status_code == 400, response.text
    assert hooks.IDEMPOTENCY_HEADER in response.json()["detail"]
    assert unchanged(admin_api, reference)


@pytest.mark.parametrize("content_type", [None, "text/plain", "application/x-www-form-urlencoded",
                                          "application/json-patch+json", "application/jsonp"])
def test_another_content_type_is_refused(pipeline: tuple[Pipeline, str],
                                         admin_api: client.ApiClient,
                                         content_type: str | None) -> None:
    sender, reference = pipeline
    body = json.dumps({"policy": reference}).encode()
    headers = sender.headers(body)
    if content_type is None:
        del headers["Content-Type"]
    else:
        headers["Content-Type"] = content_type
    response = sender.send(body, headers)
    assert response.status_code == 415, response.text
    assert "Content-Type" in response.json()["detail"]
    assert unchanged(admin_api, reference)


def test_an_oversize_body_is_refused_even_when_signed(pipeline: tuple[Pipeline, str],
                                                      admin_api: client.ApiClient) -> None:
    sender, reference = pipeline
    body = json.dumps({"policy": reference, "padding": "x" * hooks.MAX_BODY}).encode()
    response = sender.send(body, sender.headers(body))
    assert response.status_code == 413, response.text
    assert unchanged(admin_api, reference)


def test_signed_bodies_that_are_not_a_rotation_request_are_refused_with_422(
        pipeline: tuple[Pipeline, str], admin_api: client.ApiClient) -> None:
    sender, reference = pipeline
    for body in (b"not json", b"[]", json.dumps({"policy": reference, "x": 1}).encode(),
                 json.dumps({"policy": "../../etc"}).encode()):
        response = sender.send(body, sender.headers(body))
        assert response.status_code == 422, (body, response.text)
    assert unchanged(admin_api, reference)


def test_tenants_without_a_hook_and_unknown_tenants_are_404(
        pipeline: tuple[Pipeline, str], http: httpx.Client, secrets_dir: Path,
        tenant: TenantMaker, policy: PolicyMaker, admin_api: client.ApiClient) -> None:
    sender, reference = pipeline
    no_hook = tenant({})
    its_policy = policy(no_hook)
    ghost = f"ghost-{uuid.uuid4().hex[:6]}"
    (secrets_dir / ghost).write_bytes(secrets.token_urlsafe(32).encode())  # no such Tenant
    weak = tenant({})
    (secrets_dir / weak).write_bytes(secrets.token_urlsafe(32).encode())
    wait_known(Pipeline(http, weak, (secrets_dir / weak).read_bytes()))
    (secrets_dir / weak).write_bytes(b"password")  # too short to be a secret: the hook is off
    body = json.dumps({"policy": reference}).encode()
    for name in (no_hook, ghost, weak, "..", "..data", sender.tenant.upper()):
        response = sender.send(body, sender.headers(body), tenant_name=name)
        assert response.status_code == 404, (name, response.text)
    # A tenant's secret signs for that tenant only, and only for its own namespaces.
    foreign = json.dumps({"policy": its_policy}).encode()
    response = sender.send(foreign, sender.headers(foreign))
    assert response.status_code == 404 and "RotationPolicy" in response.text
    assert unchanged(admin_api, its_policy) and unchanged(admin_api, reference)


def test_the_hook_secret_never_reaches_the_log(pipeline: tuple[Pipeline, str],
                                               hook_api: ApiServer) -> None:
    sender, reference = pipeline
    body = json.dumps({"policy": reference}).encode()
    accepted, stale = sender.headers(body), sender.headers(body, timestamp=0)
    assert sender.send(body, accepted).status_code == 202
    assert sender.send(body, stale).status_code == 401
    log = hook_api.log()
    assert sender.tenant in log  # the log is there, and names the tenant
    for value in (sender.secret.decode(), accepted[hooks.SIGNATURE_HEADER][7:],
                  stale[hooks.SIGNATURE_HEADER][7:]):
        assert value not in log


def test_deliveries_are_kept_by_digest_behind_row_level_security(
        pipeline: tuple[Pipeline, str], api_db: ApiDatabase) -> None:
    sender, reference = pipeline
    body = json.dumps({"policy": reference}).encode()
    headers = sender.headers(body, key="rls-check-key-1")
    assert sender.send(body, headers).status_code == 202

    async def counts() -> tuple[int, int, int]:
        conn = await asyncpg.connect(api_db.app_dsn)  # the API's own role
        try:
            forgot = await conn.fetchval("SELECT count(*) FROM api.hook_deliveries")
            async with conn.transaction():
                await conn.execute("SELECT set_config('tenantry.tenant', $1, true)",
                                   sender.tenant)
                own = await conn.fetchval("SELECT count(*) FROM api.hook_deliveries")
            async with conn.transaction():
                await conn.execute("SELECT set_config('tenantry.tenant', 'someone-else', true)")
                other = await conn.fetchval("SELECT count(*) FROM api.hook_deliveries "
                                            "WHERE tenant = $1", sender.tenant)
            return forgot, own, other
        finally:
            await conn.close()

    assert asyncio.run(counts()) == (0, 1, 0)
    (row,) = api_db.fetch("SELECT * FROM api.hook_deliveries WHERE tenant = $1", sender.tenant)
    stored = " ".join(str(value) for value in row.values())
    assert sender.secret.decode() not in stored
    assert headers[hooks.SIGNATURE_HEADER][7:] not in stored and reference in stored
    assert bytes(row["body_hash"]) == hooks.body_digest(body)
