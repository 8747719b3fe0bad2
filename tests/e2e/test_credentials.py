"""Credentials through the real operator on the real control plane: sealed and imported values
end up only as envelopes under the tenant's key; replays, edits and a missing keyring are
refused or reported; and no plaintext is left anywhere a person or a log could see it.

Every plaintext here is random and registered in `PLAINTEXTS`; the last test scans the whole
cluster, the operator's log, the audit ledger and every error text for them.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import asyncpg
import kopf
import pytest
import yaml
from cryptography.hazmat.primitives.asymmetric import x25519
from kubernetes import client

from tenantry import kube
from tenantry.controller import diffbase
from tenantry.crypto import custody, envelope, keyring, sealing
from tenantry.devcluster.cluster import LocalControlPlane
from tenantry.devcluster.devenv import install_crds
from tests import logscan
from tests.conftest import (
    OPERATOR_GROUPS,
    OPERATOR_USER,
    REPO_ROOT,
    Ledger,
    OperatorProcess,
    UserApi,
    api_message,
)
from tests.e2e.conftest import TenantFactory, owner
from tests.helpers import GROUP, VERSION, conditions_of, eventually, forbidden, unique

PLURAL = "credentials"
ENCRYPTED = "tenantry.dev/encrypted"
PLAINTEXTS: list[str] = []


def plaintext(tag: str) -> str:
    """A distinctive random value, remembered for the leakage scan."""
    value = f"PLAINTEXT-{tag}-{secrets.token_hex(12)}"
    PLAINTEXTS.append(value)
    logscan.remember(value, f"Credential plaintext {tag}")
    return value


def _option(options: list[str], name: str) -> Path:
    return Path(options[options.index(name) + 1])


@pytest.fixture(scope="module")
def ring(operator_options: list[str]) -> keyring.Keyring:
    """The operator's keyring (the test reads the same file, to check what it wrote)."""
    return keyring.load(_option(operator_options, "--keyring"))


@pytest.fixture(scope="module")
def public_key(admin_api: client.ApiClient,
               operator: OperatorProcess) -> x25519.X25519PublicKey:
    """The sealing public key as the operator publishes it."""
    core = client.CoreV1Api(admin_api)
    configmap = eventually(
        lambda: core.read_namespaced_config_map(custody.PUBLIC_KEY_CONFIGMAP, "tenantry-system"),
        what="the sealing public key ConfigMap")
    return custody.public_key_from_configmap(admin_api.sanitize_for_serialization(configmap))


def _seal(key: x25519.X25519PublicKey, namespace: str, name: str,
          values: dict[str, str]) -> dict[str, str]:
    return {field: sealing.seal(key, sealing.Target(namespace, name, field), value.encode())
            for field, value in values.items()}


def _credential(namespace: str, name: str, *, sealed: dict[str, str] | None = None,
                from_secret: dict[str, Any] | None = None, scope: str = "caller",
                accounts: list[str] | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {"scope": scope}
    if scope == "caller":
        spec["allowedServiceAccounts"] = accounts or ["app"]
    elif accounts:
        spec["allowedServiceAccounts"] = accounts
    if sealed is not None:
        spec["sealed"] = {"encryptedData": sealed}
    if from_secret is not None:
        spec["fromSecret"] = from_secret
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "Credential",
            "metadata": {"name": name, "namespace": namespace}, "spec": spec}


def _create(api: client.ApiClient, body: dict[str, Any]) -> None:
    client.CustomObjectsApi(api).create_namespaced_custom_object(
        GROUP, VERSION, body["metadata"]["namespace"], PLURAL, body)


def _get(api: client.ApiClient, namespace: str, name: str) -> dict[str, Any]:
    return cast(dict[str, Any], client.CustomObjectsApi(api).get_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, name))


def _ready(api: client.ApiClient, namespace: str, name: str, *, status: str = "True",
           reason: str | None = None, generation: int | None = None,
           timeout: float = 30.0) -> dict[str, Any]:
    """The Credential once its Ready condition (for its current spec) says so."""
    seen: list[dict[str, Any]] = []

    def check() -> dict[str, Any] | None:
        obj = _get(api, namespace, name)
        seen[:] = [obj.get("status") or {}]
        ready = conditions_of(obj).get("Ready", {})
        current = ready.get("observedGeneration") == obj["metadata"]["generation"]
        if not current or ready.get("status") != status:
            return None
        if reason is not None and ready.get("reason") != reason:
            return None
        got = (obj.get("status") or {}).get("encryptionGeneration")
        if generation is not None and got != generation:
            return None
        return obj

    try:
        return eventually(check, timeout=timeout,
                          what=f"Credential {namespace}/{name} Ready={status} {reason or ''}")
    except AssertionError as error:
        raise AssertionError(f"{error}; its status: {seen}") from None


def _events(api: client.ApiClient, namespace: str, name: str) -> list[tuple[str, str, str]]:
    items = client.CoreV1Api(api).list_namespaced_event(
        namespace, field_selector=f"involvedObject.name={name}").items
    return [(e.type, e.reason, e.message or "") for e in items
            if e.involved_object.kind == "Credential"]


def _posted(api: client.ApiClient, namespace: str, name: str, reason: str,
            containing: str = "") -> list[tuple[str, str, str]]:
    """The Credential's Events once one with `reason` (and `containing` in its message) is
    among them: the operator posts Events in the background, just after the status they go
    with, so a test that has seen the status may list them a moment too early."""
    def found() -> list[tuple[str, str, str]] | None:
        events = _events(api, namespace, name)
        return events if any(r == reason and containing in m for _, r, m in events) else None

    return eventually(found, what=f"Event {reason} on Credential {namespace}/{name}")


def _ciphertext(api: client.ApiClient, namespace: str, name: str) -> client.V1Secret:
    return client.CoreV1Api(api).read_namespaced_secret(f"tenantry-credential-{name}", namespace)


def _open(api: client.ApiClient, ring: keyring.Keyring, tenant_uid: str, namespace: str,
          name: str, field: str, generation: int, stored: str) -> bytes:
    """Open an envelope the operator wrote, under its full context: that includes the UID of
    the Credential as it exists now."""
    context = envelope.Context(tenant_uid=tenant_uid, namespace=namespace, credential=name,
                               field=field, generation=generation,
                               credential_uid=_get(api, namespace, name)["metadata"]["uid"])
    return envelope.open_value(ring, context, base64.b64decode(stored))


def _tenant_uid(tenant: dict[str, Any]) -> str:
    return str(tenant["metadata"]["uid"])


# -- sealed ----------------------------------------------------------------------------------------

def test_sealed_credential_is_stored_only_as_ciphertext_under_the_tenants_key(
        admin_api: client.ApiClient, tenants: TenantFactory, as_user: UserApi,
        ring: keyring.Keyring, ledger: Ledger, control_plane: LocalControlPlane) -> None:
    name = unique("sealed")
    namespace = f"{name}-prod"
    tenant = tenants(name, [namespace], [owner(f"{name}-alice")])
    alice = as_user(f"{name}-alice")
    token = plaintext("sealed-token")

    # The tenant's owner fetches the public key with their own kubeconfig and seals offline.
    alice_config = str(control_plane.kubeconfig_for(f"{name}-alice"))
    sealed = subprocess.run(
        [sys.executable, "-m", "tenantry", "seal", "--fetch-key", "--kubeconfig", alice_config,
         "--namespace", namespace, "--name", "payments-api", "--field", "token",
         "--service-account", "checkout"],
        input=(token + "\n").encode(), capture_output=True, cwd=REPO_ROOT, check=True)
    assert token not in sealed.stdout.decode() + sealed.stderr.decode()
    manifest = yaml.safe_load(sealed.stdout)
    _create(alice, manifest)

    obj = _ready(admin_api, namespace, "payments-api", reason="Encrypted")
    status = obj["status"]
    key_id = status["secretRef"]["keyId"]
    assert status["secretRef"] == {"name": "tenantry-credential-payments-api", "keyId": key_id}
    assert key_id.startswith(f"{ring.primary}.")
    assert (status["keys"], status["encryptionGeneration"]) == (["token"], 1)
    assert "1 field(s) (token) stored encrypted" in conditions_of(obj)["Ready"]["message"]
    # No finalizer: deleting a Credential never waits for the operator (its Secret goes with
    # it, by garbage collection).
    assert not obj["metadata"].get("finalizers")
    # kopf's record of what it handled rides in the status write (no write of its own: no
    # annotations, no marker), never in an annotation tenants could forge.
    assert not [key for key in obj["metadata"].get("annotations") or {}
                if key.startswith(f"{GROUP}/")]
    assert [(m["manager"], m.get("subresource")) for m in obj["metadata"]["managedFields"]
            if m["manager"] == "kopf"] == [("kopf", "status")]
    assert json.loads(status["handledConfiguration"])["spec"]["sealed"] == manifest["spec"][
        "sealed"]
    # ... which only the operator writes: the tenant's owner cannot forge it.
    assert forbidden(lambda: client.CustomObjectsApi(alice).patch_namespaced_custom_object_status(
        GROUP, VERSION, namespace, PLURAL, "payments-api",
        {"status": {"handledConfiguration": "{}"}}))

    secret = _ciphertext(admin_api, namespace, "payments-api")
    assert secret.type == ENCRYPTED
    assert secret.metadata.labels["tenantry.dev/tenant"] == name
    [ref] = secret.metadata.owner_references
    assert (ref.kind, ref.name, ref.uid, ref.controller) == (
        "Credential", "payments-api", obj["metadata"]["uid"], True)
    assert list(secret.data) == ["token"]
    assert _open(admin_api, ring, _tenant_uid(tenant), namespace, "payments-api", "token", 1,
                 secret.data["token"]) == token.encode()  # the trailing newline was dropped
    assert token not in json.dumps(admin_api.sanitize_for_serialization(secret))
    assert ("Normal", "Encrypted") in [(t, r) for t, r, _ in
                                       _posted(admin_api, namespace, "payments-api",
                                               "Encrypted")]

    # Tenants can use Credentials, but never touch the operator's ciphertext Secret.
    core = client.CoreV1Api(alice)
    assert forbidden(lambda: core.patch_namespaced_secret(
        secret.metadata.name, namespace, {"data": {"token": "eA=="}}))
    assert forbidden(lambda: core.delete_namespaced_secret(secret.metadata.name, namespace))
    assert forbidden(lambda: core.create_namespaced_secret(namespace, client.V1Secret(
        metadata=client.V1ObjectMeta(name="tenantry-credential-shadow"),
        string_data={"token": "x"})))

    # A new value: a new generation; the old envelope no longer opens.
    rotated = plaintext("sealed-token-2")
    client.CustomObjectsApi(alice).patch_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, "payments-api",
        {"spec": {"sealed": {"encryptedData": _seal(
            custody.public_key_from_configmap(_published(admin_api)), namespace,
            "payments-api", {"token": rotated})}}})
    _ready(admin_api, namespace, "payments-api", reason="Encrypted", generation=2)
    new = _ciphertext(admin_api, namespace, "payments-api")
    assert _open(admin_api, ring, _tenant_uid(tenant), namespace, "payments-api", "token", 2,
                 new.data["token"]) == rotated.encode()
    with pytest.raises(Exception, match="does not authenticate"):
        _open(admin_api, ring, _tenant_uid(tenant), namespace, "payments-api", "token", 2,
              secret.data["token"])

    actions = eventually(lambda: [e for e in ledger.entries(name)
                                  if e["action"] == "credential.encrypt"] or None,
                         what="credential.encrypt in the audit ledger")
    assert actions[0]["changes"]["fields"] == ["token"]
    assert actions[0]["changes"]["keyId"] == key_id
    assert (actions[0]["resource_kind"], actions[0]["resource_name"]) == (
        "Credential", "payments-api")


def test_a_credential_created_with_a_forged_handled_record_is_still_encrypted(
        admin_api: client.ApiClient, tenants: TenantFactory, as_user: UserApi,
        public_key: x25519.X25519PublicKey) -> None:
    """A tenant's owner creates a Credential whose annotation, kopf's old place for its record
    of what it handled, claims this very body was handled already. That record is only the
    operator's in the status; an annotation on a new object is nobody's word, so the create is
    handled at once (not left to the resync, two minutes later)."""
    name = unique("forged")
    namespace = f"{name}-prod"
    tenants(name, [namespace], [owner(f"{name}-alice")])
    alice = client.CustomObjectsApi(as_user(f"{name}-alice"))
    body = _credential(namespace, "claimed", sealed=_seal(
        public_key, namespace, "claimed", {"token": plaintext("forged-record")}))
    # The body as the apiserver would store it (defaults filled in), and kopf's record of it.
    stored = eventually(lambda: alice.create_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, body, dry_run="All"),
        what="the owner's access to Credentials")
    claimed = json.dumps(diffbase.DiffBase().build(body=kopf.Body(stored)))
    body["metadata"]["annotations"] = {f"{GROUP}/{diffbase.KEY}": claimed + "\n"}
    alice.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, body)
    obj = _ready(admin_api, namespace, "claimed", reason="Encrypted", timeout=30.0)
    assert obj["status"]["encryptionGeneration"] == 1
    assert json.loads(obj["status"]["handledConfiguration"])["spec"] == obj["spec"]
    assert _ciphertext(admin_api, namespace, "claimed").type == ENCRYPTED


def _published(api: client.ApiClient) -> dict[str, Any]:
    configmap = client.CoreV1Api(api).read_namespaced_config_map(
        custody.PUBLIC_KEY_CONFIGMAP, "tenantry-system")
    return cast(dict[str, Any], api.sanitize_for_serialization(configmap))


# -- imported from a Secret ------------------------------------------------------------------------

def _plain_secret(api: client.ApiClient, namespace: str, name: str,
                  values: dict[str, str]) -> None:
    client.CoreV1Api(api).create_namespaced_secret(namespace, client.V1Secret(
        metadata=client.V1ObjectMeta(name=name), string_data=values))


def _secret_or_none(api: client.ApiClient, namespace: str, name: str) -> client.V1Secret | None:
    try:
        return client.CoreV1Api(api).read_namespaced_secret(name, namespace)
    except client.ApiException as error:
        if error.status == 404:
            return None
        raise


def test_imported_secret_is_encrypted_then_deleted_or_emptied(
        admin_api: client.ApiClient, tenants: TenantFactory, as_user: UserApi,
        ring: keyring.Keyring, ledger: Ledger) -> None:
    name = unique("import")
    namespace = f"{name}-app"
    tenant = tenants(name, [namespace], [owner(f"{name}-alice")])
    alice = as_user(f"{name}-alice")
    smtp_user, smtp_password = plaintext("smtp-user"), plaintext("smtp-password")
    db_password, keep = plaintext("db-password"), f"not-imported-{secrets.token_hex(4)}"

    # sourcePolicy Delete (the default): the whole source goes once encrypted.
    _plain_secret(alice, namespace, "smtp-plain", {"username": smtp_user,
                                                  "password": smtp_password})
    _create(alice, _credential(namespace, "smtp", scope="platform",
                               from_secret={"name": "smtp-plain"}))
    obj = _ready(admin_api, namespace, "smtp", reason="Encrypted")
    assert obj["status"]["keys"] == ["password", "username"]
    eventually(lambda: _secret_or_none(admin_api, namespace, "smtp-plain") is None,
               what="the source Secret to be deleted")
    stored = _ciphertext(admin_api, namespace, "smtp").data
    assert _open(admin_api, ring, _tenant_uid(tenant), namespace, "smtp", "password", 1,
                 stored["password"]) == smtp_password.encode()
    reasons = [r for _, r, _ in _posted(admin_api, namespace, "smtp", "SourceSecretDeleted")]
    assert "Encrypted" in reasons and "SourceSecretDeleted" in reasons

    # sourcePolicy Empty with keys: only the imported key is removed from the source.
    _plain_secret(alice, namespace, "db-plain", {"password": db_password, "host": keep})
    _create(alice, _credential(namespace, "db", from_secret={
        "name": "db-plain", "keys": ["password"], "sourcePolicy": "Empty"}))
    obj = _ready(admin_api, namespace, "db", reason="Encrypted")
    assert obj["status"]["keys"] == ["password"]
    source = eventually(lambda: (lambda s: s if s and "password" not in (s.data or {}) else None)(
        _secret_or_none(admin_api, namespace, "db-plain")), what="the source to be emptied")
    assert set(source.data) == {"host"}
    # Said by the Event (Ready's message is the latest pass's: a verification right after the
    # import rewrites it without the emptying, which that pass did not do).
    assert _posted(admin_api, namespace, "db", "SourceSecretEmptied", containing="db-plain")

    # A new value in the emptied source is imported at the next resync, or at once when the
    # Credential is touched: a new generation, and the source emptied again.
    new_password = plaintext("db-password-2")
    client.CoreV1Api(alice).patch_namespaced_secret(
        "db-plain", namespace, {"stringData": {"password": new_password}})
    client.CustomObjectsApi(alice).patch_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, "db",
        {"metadata": {"annotations": {"credentials.tenantry.dev/refresh": "1"}}})
    _ready(admin_api, namespace, "db", reason="Encrypted", generation=2, timeout=60)
    stored = _ciphertext(admin_api, namespace, "db").data
    assert _open(admin_api, ring, _tenant_uid(tenant), namespace, "db", "password", 2,
                 stored["password"]) == new_password.encode()
    eventually(lambda: "password" not in (_secret_or_none(admin_api, namespace,
                                                          "db-plain").data or {}),
               what="the refilled source to be emptied again")

    entries = eventually(lambda: (lambda es: es if {"credential.source-secret-deleted",
                                                    "credential.source-secret-emptied"}
                                  <= {e["action"] for e in es} else None)(
        ledger.entries(name)), what="source removals in the audit ledger")
    deleted = next(e for e in entries if e["action"] == "credential.source-secret-deleted")
    assert deleted["changes"] == {"source": "secret/smtp-plain",
                                  "fields": ["password", "username"]}


def test_missing_source_and_refused_sources(admin_api: client.ApiClient,
                                            tenants: TenantFactory, as_user: UserApi) -> None:
    name = unique("src")
    namespace = f"{name}-app"
    tenants(name, [namespace], [owner(f"{name}-alice")])
    alice = as_user(f"{name}-alice")

    # The Credential first, its source later (kubectl apply -f dir/ applies in name order).
    _create(alice, _credential(namespace, "late", from_secret={"name": "late-plain"}))
    obj = _ready(admin_api, namespace, "late", status="False", reason="SourceSecretMissing")
    assert f"Secret {namespace}/late-plain" in conditions_of(obj)["Ready"]["message"]
    _plain_secret(alice, namespace, "late-plain", {"key": plaintext("late")})
    _ready(admin_api, namespace, "late", reason="Encrypted", timeout=60)

    # A ServiceAccount token is not the author's to give away (importing would delete it).
    core = client.CoreV1Api(admin_api)
    core.create_namespaced_service_account(namespace, client.V1ServiceAccount(
        metadata=client.V1ObjectMeta(name="robot")))
    core.create_namespaced_secret(namespace, client.V1Secret(
        metadata=client.V1ObjectMeta(name="robot-token",
                                     annotations={"kubernetes.io/service-account.name": "robot"}),
        type="kubernetes.io/service-account-token"))
    _create(alice, _credential(namespace, "robot", from_secret={"name": "robot-token"}))
    obj = _ready(admin_api, namespace, "robot", status="False", reason="SourceSecretRefused")
    assert "ServiceAccount token" in conditions_of(obj)["Ready"]["message"]
    assert core.read_namespaced_secret("robot-token", namespace)  # still there

    # Scope platform is for Tenantry itself: listing ServiceAccounts there is a mistake.
    _create(alice, _credential(namespace, "odd", scope="platform", accounts=["checkout"],
                               from_secret={"name": "nothing"}))
    obj = _ready(admin_api, namespace, "odd", status="False", reason="InvalidScope")
    assert "scope platform" in conditions_of(obj)["Ready"]["message"]


# -- replays ---------------------------------------------------------------------------------------

def test_sealed_values_replayed_elsewhere_are_refused(
        admin_api: client.ApiClient, tenants: TenantFactory, as_user: UserApi,
        public_key: x25519.X25519PublicKey) -> None:
    a, b = unique("ra"), unique("rb")
    tenants(a, [f"{a}-one", f"{a}-two"], [owner(f"{a}-alice")])
    tenants(b, [f"{b}-one"], [owner(f"{b}-bob")])
    alice, bob = as_user(f"{a}-alice"), as_user(f"{b}-bob")
    sealed = _seal(public_key, f"{a}-one", "api", {"token": plaintext("replayed")})
    _create(alice, _credential(f"{a}-one", "api", sealed=sealed))
    _ready(admin_api, f"{a}-one", "api", reason="Encrypted")

    for api, namespace, credential_name in (
            (alice, f"{a}-two", "api"),    # another namespace of the same tenant
            (bob, f"{b}-one", "api"),      # another tenant's namespace
            (alice, f"{a}-one", "api2"),   # another Credential of the same namespace
    ):
        _create(api, _credential(namespace, credential_name, sealed=sealed))
        obj = _ready(admin_api, namespace, credential_name, status="False",
                     reason="SealTargetMismatch")
        message = conditions_of(obj)["Ready"]["message"]
        assert f"does not open as field 'token' of Credential {namespace}/{credential_name}" \
            in message
        assert f"tenantry seal --namespace {namespace} --name {credential_name}" in message
        assert _secret_or_none(admin_api, namespace, f"tenantry-credential-{credential_name}") \
            is None
        assert ("Warning", "SealTargetMismatch") in [
            (t, r) for t, r, _ in _events(admin_api, namespace, credential_name)]

    # Sealed for another cluster's key.
    foreign = sealing.generate_private_key().public_key()
    _create(alice, _credential(f"{a}-one", "foreign", sealed=_seal(
        foreign, f"{a}-one", "foreign", {"token": plaintext("foreign")})))
    obj = _ready(admin_api, f"{a}-one", "foreign", status="False", reason="BadSeal")
    assert "sealed for another key" in conditions_of(obj)["Ready"]["message"]


def test_ciphertext_copied_from_another_tenant_is_detected_and_restored(
        admin_api: client.ApiClient, tenants: TenantFactory, as_user: UserApi,
        ring: keyring.Keyring, public_key: x25519.X25519PublicKey) -> None:
    a, b = unique("ca"), unique("cb")
    tenants(a, [a], [owner(f"{a}-alice")])
    tenant_b = tenants(b, [b], [owner(f"{b}-bob")])
    for tenant_name, user in ((a, f"{a}-alice"), (b, f"{b}-bob")):
        _create(as_user(user), _credential(tenant_name, "api", sealed=_seal(
            public_key, tenant_name, "api", {"token": plaintext(f"copy-{tenant_name}")})))
        _ready(admin_api, tenant_name, "api", reason="Encrypted")

    # A cluster admin (nobody else may) copies A's envelope over B's.
    core = client.CoreV1Api(admin_api)
    stolen = _ciphertext(admin_api, a, "api").data["token"]
    core.patch_namespaced_secret("tenantry-credential-api", b, {"data": {"token": stolen}})

    obj = _ready(admin_api, b, "api", reason="Restored", generation=2)
    message = conditions_of(obj)["Ready"]["message"]
    assert "restored after tampering" in message and "another tenant's key" in message
    warnings = [m for t, r, m in _posted(admin_api, b, "api", "TamperDetected")
                if r == "TamperDetected"]
    assert warnings and "field 'token' is under another tenant's key" in warnings[0]
    restored = _ciphertext(admin_api, b, "api").data["token"]
    assert restored != stolen
    assert _open(admin_api, ring, _tenant_uid(tenant_b), b, "api", "token", 2, restored).startswith(
        b"PLAINTEXT-copy-")


# -- tampering -------------------------------------------------------------------------------------

def _flip_last_byte(value: str) -> str:
    raw = bytearray(base64.b64decode(value))
    raw[-1] ^= 0x01
    return base64.b64encode(bytes(raw)).decode()


def test_edited_or_deleted_ciphertext_is_detected_reported_and_restored(
        admin_api: client.ApiClient, tenants: TenantFactory, as_user: UserApi,
        ring: keyring.Keyring, public_key: x25519.X25519PublicKey, ledger: Ledger) -> None:
    name = unique("tamper")
    tenant = tenants(name, [name], [owner(f"{name}-alice")])
    alice = as_user(f"{name}-alice")
    core = client.CoreV1Api(admin_api)
    token, imported = plaintext("tamper-sealed"), plaintext("tamper-imported")
    _create(alice, _credential(name, "sealed", sealed=_seal(public_key, name, "sealed",
                                                            {"token": token})))
    _plain_secret(alice, name, "plain", {"token": imported})
    _create(alice, _credential(name, "imported", from_secret={"name": "plain"}))
    for credential_name in ("sealed", "imported"):
        _ready(admin_api, name, credential_name, reason="Encrypted")
    eventually(lambda: _secret_or_none(admin_api, name, "plain") is None,
               what="the imported source to be deleted")

    # One byte of the sealed Credential's envelope: restored from spec.sealed.
    secret = "tenantry-credential-sealed"
    edited = _flip_last_byte(_ciphertext(admin_api, name, "sealed").data["token"])
    core.patch_namespaced_secret(secret, name, {"data": {"token": edited}})
    obj = _ready(admin_api, name, "sealed", reason="Restored", generation=2)
    assert "field 'token' does not authenticate" in conditions_of(obj)["Ready"]["message"]
    assert _open(admin_api, ring, _tenant_uid(tenant), name, "sealed", "token", 2,
                 _ciphertext(admin_api, name, "sealed").data["token"]) == token.encode()

    # The imported one, whose source is gone: an added field, restored from the last intact
    # copy the operator holds (ciphertext only).
    core.patch_namespaced_secret("tenantry-credential-imported", name,
                                 {"data": {"extra": base64.b64encode(b"x").decode()}})
    obj = _ready(admin_api, name, "imported", reason="Restored", generation=2)
    assert "field(s) extra added" in conditions_of(obj)["Ready"]["message"]
    data = _ciphertext(admin_api, name, "imported").data
    assert list(data) == ["token"]
    assert _open(admin_api, ring, _tenant_uid(tenant), name, "imported", "token", 2,
                 data["token"]) == imported.encode()

    # Deleted outright.
    core.delete_namespaced_secret(secret, name)
    _ready(admin_api, name, "sealed", reason="Restored", generation=3)
    assert _ciphertext(admin_api, name, "sealed").data

    warnings = [m for t, r, m in _posted(admin_api, name, "sealed", "TamperDetected",
                                         "was deleted") if r == "TamperDetected"]
    assert any("was deleted" in m for m in warnings)
    assert any("does not authenticate" in m and "last written by" in m for m in warnings)
    entries = eventually(lambda: (lambda es: es if len(es) >= 3 else None)(
        [e for e in ledger.entries(name)
         if e["action"] == "credential.tamper-detected"]),
        what="the tampering in the audit ledger")
    assert {e["resource_name"] for e in entries} == {"sealed", "imported"}


def test_a_recreated_credential_cannot_open_its_predecessors_envelopes(
        admin_api: client.ApiClient, tenants: TenantFactory, as_user: UserApi,
        ring: keyring.Keyring) -> None:
    """Delete a Credential, restore its ciphertext Secret (owner re-pointed, as a backup
    restore would) under a new Credential of the same name: the old envelopes are refused as
    tampered, never opened, because they are bound to the old Credential's UID."""
    name = unique("reborn")
    tenant = tenants(name, [name], [owner(f"{name}-alice")])
    alice = as_user(f"{name}-alice")
    core, custom = client.CoreV1Api(admin_api), client.CustomObjectsApi(admin_api)
    value = plaintext("reborn")
    _plain_secret(alice, name, "plain", {"token": value})
    _create(alice, _credential(name, "db", from_secret={"name": "plain"}))
    first = _ready(admin_api, name, "db", reason="Encrypted")
    eventually(lambda: _secret_or_none(admin_api, name, "plain") is None,
               what="the imported source to be deleted")
    old = _ciphertext(admin_api, name, "db")
    assert _open(admin_api, ring, _tenant_uid(tenant), name, "db", "token", 1,
                 old.data["token"]) == value.encode()

    custom.delete_namespaced_custom_object(GROUP, VERSION, name, PLURAL, "db")
    eventually(lambda: not custom.list_namespaced_custom_object(
        GROUP, VERSION, name, PLURAL)["items"], what="the Credential to be gone")
    # Garbage collection takes the Secret with it; not waiting for that, clear it by hand.
    with contextlib.suppress(client.ApiException):
        core.delete_namespaced_secret(old.metadata.name, name)
    eventually(lambda: _secret_or_none(admin_api, name, old.metadata.name) is None,
               what="the old ciphertext Secret to be gone")

    # Same namespace, same name, same source name (now absent): only the UID differs.
    _create(alice, _credential(name, "db", from_secret={"name": "plain"}))
    second = _get(admin_api, name, "db")
    assert second["metadata"]["uid"] != first["metadata"]["uid"]
    core.create_namespaced_secret(name, {
        "metadata": {"name": old.metadata.name, "labels": old.metadata.labels,
                     "annotations": old.metadata.annotations,
                     "ownerReferences": [{
                         "apiVersion": f"{GROUP}/{VERSION}", "kind": "Credential",
                         "name": "db", "uid": second["metadata"]["uid"],
                         "controller": True, "blockOwnerDeletion": True}]},
        "type": ENCRYPTED, "data": old.data})
    custom.patch_namespaced_custom_object(
        GROUP, VERSION, name, PLURAL, "db",
        {"metadata": {"annotations": {"credentials.tenantry.dev/refresh": "1"}}})

    refused = _ready(admin_api, name, "db", status="False", reason="TamperDetected",
                     timeout=60)
    message = conditions_of(refused)["Ready"]["message"]
    assert "field 'token' does not authenticate" in message
    assert "secretRef" not in (refused.get("status") or {})  # never adopted as its own
    warnings = [m for t, r, m in _posted(admin_api, name, "db", "TamperDetected")
                if r == "TamperDetected"]
    assert any("does not authenticate" in m for m in warnings)
    assert value not in json.dumps(refused)


# -- refusals --------------------------------------------------------------------------------------

def test_credential_in_a_namespace_no_tenant_owns_is_refused(
        admin_api: client.ApiClient, namespace: str, operator: OperatorProcess,
        public_key: x25519.X25519PublicKey) -> None:
    body = _credential(namespace, "orphan", sealed=_seal(public_key, namespace, "orphan",
                                                         {"token": plaintext("orphan")}))
    refused: client.ApiException | None = None
    try:
        _create(admin_api, body)
    except client.ApiException as error:
        refused = error
    if refused is not None:
        # The admission webhook, when installed, refuses it before the operator sees it.
        assert refused.status in (400, 403, 422)
        assert "tenant" in api_message(refused).lower()
        return
    obj = _ready(admin_api, namespace, "orphan", status="False", reason="NamespaceNotOwned")
    assert f"namespace {namespace} belongs to no Tenant" in conditions_of(obj)["Ready"]["message"]
    assert _secret_or_none(admin_api, namespace, "tenantry-credential-orphan") is None


@contextlib.contextmanager
def _keyring_replaced(path: Path, content: str | None) -> Iterator[None]:
    """The operator's keyring file gone (None) or replaced, restored afterwards."""
    original = path.read_bytes()
    moved = path.with_suffix(".away")
    path.rename(moved)
    try:
        if content is not None:
            path.write_text(content)
        yield
    finally:
        path.unlink(missing_ok=True)
        moved.rename(path)
        path.write_bytes(original)


def test_without_a_keyring_credentials_fail_closed_and_recover(
        admin_api: client.ApiClient, tenants: TenantFactory, as_user: UserApi,
        operator_options: list[str], public_key: x25519.X25519PublicKey) -> None:
    name = unique("nokeys")
    tenants(name, [name], [owner(f"{name}-alice")])
    alice = as_user(f"{name}-alice")
    path = _option(operator_options, "--keyring")
    garbage = f"GARBAGE-KEYRING-{secrets.token_hex(8)}"

    with _keyring_replaced(path, None):
        _create(alice, _credential(name, "missing", sealed=_seal(
            public_key, name, "missing", {"token": plaintext("nokeys-1")})))
        obj = _ready(admin_api, name, "missing", status="False", reason="KeyringUnavailable")
        message = conditions_of(obj)["Ready"]["message"]
        assert f"keyring file {path}: does not exist" in message
        assert "secretRef" not in obj["status"]
        assert _secret_or_none(admin_api, name, "tenantry-credential-missing") is None
    with _keyring_replaced(path, f'{{"primary": "v1", "keys": {{"v1": "{garbage}"}}}}'):
        _create(alice, _credential(name, "malformed", sealed=_seal(
            public_key, name, "malformed", {"token": plaintext("nokeys-2")})))
        obj = _ready(admin_api, name, "malformed", status="False", reason="KeyringUnavailable")
        message = conditions_of(obj)["Ready"]["message"]
        assert "key 'v1' is not valid base64" in message and garbage not in message

    # The keyring is back: both are encrypted on their next retry, no restart needed.
    for credential_name in ("missing", "malformed"):
        _ready(admin_api, name, credential_name, reason="Encrypted", timeout=90)


def test_an_operator_started_without_keys_serves_tenants_and_refuses_credentials(
        operator_options: list[str], tmp_path: Path) -> None:
    """On a control plane of its own: no keyring, no sealing key at start."""
    with LocalControlPlane() as plane:
        install_crds(plane.admin_kubeconfig)
        admin = kube.api_client(plane.admin_kubeconfig)
        kube.apply(admin, kube.load_manifests([REPO_ROOT / "manifests" / "namespace.yaml",
                                               REPO_ROOT / "manifests" / "operator" / "rbac.yaml"]))
        ledger_options = [operator_options[operator_options.index("--ledger-dsn-file")],
                          operator_options[operator_options.index("--ledger-dsn-file") + 1],
                          "--ledger-spool", str(tmp_path / "spool")]
        process = OperatorProcess(plane.kubeconfig_for(OPERATOR_USER, OPERATOR_GROUPS),
                                  tmp_path / "operator.log", extra_args=ledger_options)
        try:
            process.wait_ready()
            custom = client.CustomObjectsApi(admin)
            name = unique("keyless")
            custom.create_cluster_custom_object(GROUP, VERSION, "tenants", {
                "apiVersion": f"{GROUP}/{VERSION}", "kind": "Tenant", "metadata": {"name": name},
                "spec": {"members": [owner(f"{name}-alice")], "namespaces": [{"name": name}]}})
            eventually(lambda: conditions_of(custom.get_cluster_custom_object(
                GROUP, VERSION, "tenants", name)).get("Ready", {}).get("status") == "True",
                what="the Tenant to be Ready all the same")

            value = plaintext("keyless")
            _plain_secret(admin, name, "plain", {"token": value})
            _create(admin, _credential(name, "imported", from_secret={"name": "plain"}))
            _create(admin, _credential(name, "sealed", sealed=_seal(
                sealing.generate_private_key().public_key(), name, "sealed",
                {"token": plaintext("keyless-sealed")})))
            for credential_name in ("imported", "sealed"):
                obj = _ready(admin, name, credential_name, status="False",
                             reason="KeyringUnavailable")
                assert "no keyring configured: start the operator with --keyring FILE" \
                    in conditions_of(obj)["Ready"]["message"]
            # Fail closed: nothing written, and the plaintext source is not destroyed either.
            core = client.CoreV1Api(admin)
            assert _secret_or_none(admin, name, "tenantry-credential-imported") is None
            assert core.read_namespaced_secret("plain", name).data["token"] == \
                base64.b64encode(value.encode()).decode()
            with pytest.raises(client.ApiException) as absent:
                core.read_namespaced_config_map(custody.PUBLIC_KEY_CONFIGMAP, "tenantry-system")
            assert absent.value.status == 404
            log = process.log()
            assert "keyring unavailable, every Credential will report KeyringUnavailable" in log
            assert "sealing key unavailable" in log
            assert not _hits(log, PLAINTEXTS)
        finally:
            process.stop()
            admin.close()

# -- leakage ---------------------------------------------------------------------------------------

def _get_json(api: client.ApiClient, path: str) -> Any:
    response = api.call_api("GET", api.configuration.host + path,
                            header_params={"Accept": "application/json"})
    if not 200 <= response.status < 300:
        raise client.ApiException(status=response.status, reason=response.reason)
    return json.loads(response.read())


def _list_paths(api: client.ApiClient) -> list[str]:
    """The cluster-wide list path of every resource the API server can list."""
    versions = ["/api/v1"] + [
        f"/apis/{group['preferredVersion']['groupVersion']}"
        for group in _get_json(api, "/apis")["groups"]]
    paths = []
    for version in versions:
        for resource in _get_json(api, version)["resources"]:
            if "/" not in resource["name"] and "list" in resource.get("verbs", []):
                paths.append(f"{version}/{resource['name']}")
    return paths


def _forms(value: str) -> set[str]:
    """How a value could show up in JSON text: as is, and base64 as Secret data holds it."""
    raw = value.encode()
    return {value, base64.b64encode(raw).decode(), base64.urlsafe_b64encode(raw).decode()}


def _hits(text: str, values: list[str]) -> list[str]:
    return [value for value in values for form in _forms(value) if form in text]


def _ledger_dump(ledger: Ledger) -> str:
    async def fetch() -> str:
        conn = await asyncpg.connect(ledger.app_dsn)
        try:
            rows = await conn.fetch("SELECT row_to_json(a)::text AS row FROM ledger.audit_log a")
        finally:
            await conn.close()
        return "\n".join(row["row"] for row in rows)

    return asyncio.run(fetch())


def test_no_plaintext_anywhere_after_a_full_run(
        admin_api: client.ApiClient, tenants: TenantFactory, as_user: UserApi,
        public_key: x25519.X25519PublicKey, operator: OperatorProcess, ledger: Ledger,
        tmp_path: Path) -> None:
    """Everything a Credential goes through, then every object of every kind, every Event and
    status, the operator's log, the audit ledger and the error texts: no plaintext."""
    name = unique("leak")
    a, b = f"{name}-a", f"{name}-b"
    tenants(name, [a, b], [owner(f"{name}-alice")])
    alice = as_user(f"{name}-alice")
    core = client.CoreV1Api(admin_api)
    sealed_value, deleted_value, emptied_value = (
        plaintext("leak-sealed"), plaintext("leak-deleted"), plaintext("leak-emptied"))

    # Sealed, with the CLI, value on standard input.
    key_file = tmp_path / "public.pem"
    key_file.write_bytes(sealing.public_key_to_pem(public_key))
    cli = subprocess.run(
        [sys.executable, "-m", "tenantry", "seal", "--public-key", str(key_file),
         "--namespace", a, "--name", "sealed", "--field", "token", "--scope", "platform"],
        input=sealed_value.encode(), capture_output=True, cwd=REPO_ROOT, check=True)
    _create(alice, yaml.safe_load(cli.stdout))
    # Imported: source deleted, and source emptied.
    _plain_secret(alice, a, "deleted-plain", {"token": deleted_value})
    _create(alice, _credential(a, "deleted", from_secret={"name": "deleted-plain"}))
    _plain_secret(alice, a, "emptied-plain", {"token": emptied_value})
    _create(alice, _credential(a, "emptied", from_secret={"name": "emptied-plain",
                                                          "sourcePolicy": "Empty"}))
    for credential_name in ("sealed", "deleted", "emptied"):
        _ready(admin_api, a, credential_name, reason="Encrypted")
    # Replayed into the tenant's other namespace; tampered with and restored.
    replay = _credential(b, "sealed", scope="platform",
                         sealed=yaml.safe_load(cli.stdout)["spec"]["sealed"]["encryptedData"])
    _create(alice, replay)
    _ready(admin_api, b, "sealed", status="False", reason="SealTargetMismatch")
    for credential_name in ("sealed", "emptied"):
        stored = _ciphertext(admin_api, a, credential_name).data["token"]
        core.patch_namespaced_secret(f"tenantry-credential-{credential_name}", a,
                                     {"data": {"token": _flip_last_byte(stored)}})
        _ready(admin_api, a, credential_name, reason="Restored", generation=2)
    eventually(lambda: _secret_or_none(admin_api, a, "deleted-plain") is None,
               what="the imported source to be deleted")

    # Error texts: the CLI refusing, the crypto core refusing, the schema refusing.
    errors_seen = []
    refused = subprocess.run(
        [sys.executable, "-m", "tenantry", "seal", "--public-key", str(key_file),
         "--namespace", a, "--name", "x", "--field", "token", "--scope", "platform",
         "--fingerprint", "sha256:00"],
        input=sealed_value.encode(), capture_output=True, cwd=REPO_ROOT, check=False)
    assert refused.returncode == 2
    errors_seen.append(cli.stderr.decode() + refused.stdout.decode() + refused.stderr.decode())
    private = sealing.generate_private_key()
    for attempt in (
        lambda: sealing.unseal(private, sealing.Target(a, "x", "token"), sealing.seal(
            private.public_key(), sealing.Target(b, "x", "token"), sealed_value.encode())),
        lambda: envelope.open_value(keyring.generate(), envelope.Context(
            _tenant_uid(tenants.wait_for(name)), a, "x", "token", 1),  # type: ignore[attr-defined]
            base64.b64decode(_ciphertext(admin_api, a, "sealed").data["token"])),
    ):
        with pytest.raises(Exception) as raised:  # noqa: PT011 - any refusal; its text matters
            attempt()
        errors_seen.append(f"{raised.value!r} {raised.value}")
    with pytest.raises(client.ApiException) as plain_in_spec:
        _create(alice, {**_credential(a, "plain", scope="platform",
                                      sealed={"token": "A" * 16}),
                        "spec": {"scope": "platform", "password": sealed_value,
                                 "sealed": {"encryptedData": {"token": "A" * 16}}}})
    assert plain_in_spec.value.status == 422
    errors_seen.append(str(plain_in_spec.value.body))
    assert "plaintext is never accepted" in errors_seen[-1]

    # A positive control: a value left in a plain Secret on purpose must be found.
    canary = f"CANARY-{secrets.token_hex(12)}"
    _plain_secret(alice, b, "canary", {"value": canary})
    values = [*PLAINTEXTS, canary]
    assert {sealed_value, deleted_value, emptied_value} <= set(values)
    found: dict[str, list[str]] = {}
    scanned = 0
    paths = _list_paths(admin_api)
    for path in paths:
        try:
            listing = _get_json(admin_api, path)
        except client.ApiException:
            continue
        scanned += len(listing.get("items") or [])
        hits = _hits(json.dumps(listing), values)
        if hits:
            found[path] = hits
        if path == "/api/v1/secrets":
            # The ciphertext check: operator Secrets hold envelopes and nothing else.
            for item in listing["items"]:
                if item.get("type") == ENCRYPTED:
                    assert all(base64.b64decode(v).startswith(b"TE\x02")
                               for v in (item.get("data") or {}).values()), item["metadata"]
    for where, text in (("operator log", operator.log()), ("audit ledger", _ledger_dump(ledger)),
                        ("error texts", "\n".join(errors_seen))):
        hits = _hits(text, values)
        if hits:
            found[where] = hits
    assert scanned > 100
    assert {"/api/v1/events", "/apis/events.k8s.io/v1/events", "/api/v1/secrets",
            "/apis/tenantry.dev/v1alpha1/credentials"} <= set(paths)
    assert found.pop("/api/v1/secrets", None) == [canary], "the scan does not see Secret data"
    assert not found, f"plaintext found: {found}"
