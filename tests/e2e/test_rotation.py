"""RotationPolicy (target Credentials) through the real operator on the real control plane.

A new keyring version is added and promoted the way an operator of Tenantry does it
(`tenantry keyring add-version --promote` on the key file the operator reads); a trigger then
re-encrypts every selected Credential under it, in batches, while a reader decrypts every
Credential's ciphertext Secret as often as it can through the operator's own verification code:
not one read may fail. The same trigger again does nothing; bad policies say what is wrong.

The session operator's keyring is shared: the fixture puts the original primary back afterwards
(keeping the new version, so whatever was written under it still opens).
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import pytest
from cryptography.hazmat.primitives.asymmetric import x25519
from kubernetes import client

from tenantry import kube
from tenantry.controller.credential import ciphertext
from tenantry.crypto import cli as crypto_cli
from tenantry.crypto import custody, keyring
from tenantry.devcluster.cluster import LocalControlPlane
from tests.conftest import (
    OPERATOR_GROUPS,
    OPERATOR_USER,
    REPO_ROOT,
    Ledger,
    OperatorProcess,
    UserApi,
    operator_ready_plane,
)
from tests.e2e.conftest import TenantFactory, owner
from tests.e2e.test_credentials import (
    _create,
    _credential,
    _events,
    _get,
    _ready,
    _seal,
    plaintext,
    public_key,
)
from tests.e2e.test_metrics import scrape, value
from tests.helpers import GROUP, VERSION, conditions_of, eventually, unique

__all__ = ["public_key"]  # the sealing public key fixture, shared with test_credentials

PLURAL = "rotationpolicies"
SELECTED, UNSELECTED = 30, 5


def _keyring_path(operator_options: list[str]) -> Path:
    return Path(operator_options[operator_options.index("--keyring") + 1])


@pytest.fixture
def new_primary(operator_options: list[str]) -> Iterator[str]:
    """Add a keyring version and promote it, with the CLI, on the operator's key file; put the
    original primary back afterwards (the new version stays, able to decrypt)."""
    path = _keyring_path(operator_options)
    original = keyring.load(path).primary
    subprocess.run([sys.executable, "-m", "tenantry", "keyring", "add-version", "--keyring",
                    str(path), "--promote"], cwd=REPO_ROOT, check=True, capture_output=True)
    ring = keyring.load(path)
    assert ring.primary != original and original in ring
    try:
        yield ring.primary
    finally:
        crypto_cli.write_private(path, keyring.dumps(keyring.promote(keyring.load(path),
                                                                     original)), force=True)


def _policy(namespace: str, name: str, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "RotationPolicy",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"targets": ["Credentials"], **spec}}


def _create_policy(api: client.ApiClient, body: dict[str, Any]) -> None:
    client.CustomObjectsApi(api).create_namespaced_custom_object(
        GROUP, VERSION, body["metadata"]["namespace"], PLURAL, body)


def _get_policy(api: client.ApiClient, namespace: str, name: str) -> dict[str, Any]:
    return cast(dict[str, Any], client.CustomObjectsApi(api).get_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, name))


def _policy_ready(api: client.ApiClient, namespace: str, name: str, *, status: str,
                  reason: str, timeout: float = 60.0) -> dict[str, Any]:
    seen: list[Any] = []

    def check() -> dict[str, Any] | None:
        obj = _get_policy(api, namespace, name)
        seen[:] = [obj.get("status")]
        ready = conditions_of(obj).get("Ready", {})
        current = ready.get("observedGeneration") == obj["metadata"]["generation"]
        return obj if current and (ready.get("status"), ready.get("reason")) == (
            status, reason) else None

    try:
        return eventually(check, timeout=timeout, what=f"RotationPolicy {namespace}/{name} "
                                                      f"Ready={status} {reason}")
    except AssertionError as error:
        raise AssertionError(f"{error}; its status: {seen}") from None


def _policy_events(api: client.ApiClient, namespace: str, name: str) -> list[tuple[str, str]]:
    items = client.CoreV1Api(api).list_namespaced_event(
        namespace, field_selector=f"involvedObject.name={name}").items
    return [(e.type, e.reason) for e in items if e.involved_object.kind == "RotationPolicy"]


class Reader(threading.Thread):
    """Decrypts every Credential's ciphertext Secret, round after round, as the operator
    verifies it (`ciphertext.verify`, every envelope opened under its full context), with the
    keyring file the operator reads; counts reads and failures."""

    def __init__(self, control_plane: LocalControlPlane, keyring_path: Path, namespace: str,
                 tenant: ciphertext.TenantRef, expected: dict[str, str]) -> None:
        super().__init__(daemon=True)
        self.api = kube.api_client(control_plane.admin_kubeconfig)
        self.keyring_path, self.namespace, self.tenant = keyring_path, namespace, tenant
        self.expected = expected
        self.stop = threading.Event()
        self.reads = 0
        self.failures: list[str] = []
        self.versions_seen: set[str] = set()

    def read_one(self, name: str) -> None:
        # The Credential first, then its Secret: the operator writes them in the other order.
        obj = _get(self.api, self.namespace, name)
        status = obj.get("status") or {}
        secret = client.CoreV1Api(self.api).read_namespaced_secret(
            ciphertext.secret_name(name), self.namespace)
        verdict = ciphertext.verify(
            self.api.sanitize_for_serialization(secret), ring=keyring.load(self.keyring_path),
            owner=ciphertext.Owner(self.namespace, name, obj["metadata"]["uid"]),
            tenant=self.tenant, status_generation=status.get("encryptionGeneration"),
            expected_fields=status.get("keys") or ())
        self.reads += 1
        if verdict.state is not ciphertext.State.INTACT or verdict.stored is None:
            self.failures.append(f"{name}: {verdict.state} {verdict.detail}")
            return
        self.versions_seen |= verdict.stored.master_versions
        if verdict.stored.fields["token"].reveal() != self.expected[name].encode():
            self.failures.append(f"{name}: wrong value")

    def run(self) -> None:
        try:
            while not self.stop.is_set():
                for name in self.expected:
                    try:
                        self.read_one(name)
                    except Exception as error:  # any failed read counts
                        self.reads += 1
                        self.failures.append(f"{name}: {type(error).__name__}: {error}")
        finally:
            self.api.close()


@contextlib.contextmanager
def reading(reader: Reader) -> Iterator[Reader]:
    reader.start()
    try:
        yield reader
    finally:
        reader.stop.set()
        reader.join(30)


def test_a_trigger_reencrypts_every_selected_credential_with_zero_failed_reads(
        admin_api: client.ApiClient, tenants: TenantFactory, as_user: UserApi,
        control_plane: LocalControlPlane, public_key: x25519.X25519PublicKey,
        operator_options: list[str], ledger: Ledger, request: pytest.FixtureRequest,
        operator: OperatorProcess) -> None:
    name = unique("rot")
    _, metrics_before, _ = scrape(operator)
    tenant = tenants(name, [name], [owner(f"{name}-alice")])
    alice = as_user(f"{name}-alice")
    old_primary = keyring.load(_keyring_path(operator_options)).primary
    values: dict[str, str] = {}
    for number in range(SELECTED + UNSELECTED):
        credential_name = f"cred-{number:03d}"
        values[credential_name] = plaintext(f"rotation-{number}")
        body = _credential(name, credential_name, sealed=_seal(
            public_key, name, credential_name, {"token": values[credential_name]}))
        if number < SELECTED:
            body["metadata"]["labels"] = {"rotate": "yes"}
        _create(alice, body)
    for credential_name in values:
        obj = _ready(admin_api, name, credential_name, reason="Encrypted", timeout=60)
        assert obj["status"]["secretRef"]["keyId"].startswith(f"{old_primary}.")
    selected = sorted(values)[:SELECTED]
    # Another tenant's Credential with the same label: a policy rotates its own namespace only.
    neighbour = f"{name}-nb"
    tenants(neighbour, [neighbour], [owner(f"{neighbour}-bob")])
    elsewhere = _credential(neighbour, "cred-000", sealed=_seal(
        public_key, neighbour, "cred-000", {"token": plaintext("rotation-neighbour")}))
    elsewhere["metadata"]["labels"] = {"rotate": "yes"}
    _create(as_user(f"{neighbour}-bob"), elsewhere)
    _ready(admin_api, neighbour, "cred-000", reason="Encrypted")

    new = request.getfixturevalue("new_primary")
    reader = Reader(control_plane, _keyring_path(operator_options), name,
                    ciphertext.TenantRef(name, tenant["metadata"]["uid"]), values)
    with reading(reader):
        eventually(lambda: reader.reads >= len(values), what="the reader's first round")
        _create_policy(alice, _policy(name, "quarterly", trigger="2026-Q4",
                               credentialSelector={"matchLabels": {"rotate": "yes"}}))
        policy = _policy_ready(admin_api, name, "quarterly", status="True",
                               reason="RotationSucceeded", timeout=120)
        for credential_name in selected:
            key_id = _get(admin_api, name, credential_name)["status"]["secretRef"]["keyId"]
            assert key_id.startswith(f"{new}."), (credential_name, key_id)
        eventually(lambda: reader.reads >= 3 * len(values), what="a few more reads")
    neighbour_status = _get(admin_api, neighbour, "cred-000")["status"]
    assert neighbour_status["secretRef"]["keyId"].startswith(f"{old_primary}.")
    assert neighbour_status["encryptionGeneration"] == 1
    assert reader.failures == [], reader.failures[:5]
    assert reader.reads > 2 * len(values)
    assert {old_primary, new} <= reader.versions_seen

    status = policy["status"]
    assert status["progress"] == {"reencrypted": SELECTED, "total": SELECTED, "failed": 0,
                                  "skipped": 0}
    assert status["lastHandledTrigger"] == "2026-Q4"
    assert status["versionsInUse"] == {new: SELECTED}
    assert status["currentVersions"] == {"Credentials": new}
    assert "rotation" not in status and status.get("failures", []) == []
    [record] = status["history"]
    assert (record["result"], record["fromVersion"], record["toVersion"],
            record["reencrypted"]) == ("Succeeded", old_primary, new, SELECTED)
    rotating = conditions_of(policy)["Rotating"]
    assert (rotating["status"], rotating["reason"]) == ("False", "Idle")
    events = _policy_events(admin_api, name, "quarterly")
    assert ("Normal", "RotationStarted") in events
    assert ("Normal", "Reencrypted") in events
    assert ("Normal", "RotationCompleted") in events

    def rotation_entries() -> list[dict[str, Any]] | None:
        found = [e for e in ledger.entries(name) if e["action"].startswith("rotation.")
                 and e["resource_name"] == "quarterly"]
        return found if found and found[-1]["action"] == "rotation.completed" else None

    entries = eventually(rotation_entries, what="the rotation's entries in the audit ledger")
    actions = [e["action"] for e in entries]
    assert actions[0] == "rotation.started" and actions[-1] == "rotation.completed"
    assert "rotation.batch" in actions
    started = entries[0]["changes"]
    assert (started["toVersion"], started["fromVersions"], started["total"]) == (
        new, [old_primary], SELECTED)
    completed = entries[-1]["changes"]
    assert (completed["result"], completed["reencrypted"]) == ("Succeeded", SELECTED)

    # Every re-encryption is in the ledger, once per Credential, under the new version; the
    # Events are the policy's, one per batch, not one per Credential on each Credential.
    def reencryptions() -> list[dict[str, Any]] | None:
        found = [e for e in ledger.entries(name) if e["action"] == "credential.reencrypt"]
        return found if len(found) >= SELECTED else None

    recorded = eventually(reencryptions, what="a credential.reencrypt entry per Credential")
    assert sorted(e["resource_name"] for e in recorded) == selected
    assert all(e["changes"]["keyId"].startswith(f"{new}.") for e in recorded)
    for credential_name in selected:
        assert ("Normal", "Reencrypted") not in [
            (t, r) for t, r, _ in _events(admin_api, name, credential_name)]
    # The operator's metrics counted the steps, and no rotation is left in progress.
    _, metrics_after, _ = scrape(operator)
    steps = "tenantry_rotation_steps_total"
    for action in ("rotation.started", "rotation.batch", "rotation.completed"):
        assert value(metrics_after, steps, action=action) > value(metrics_before, steps,
                                                                  action=action), action
    assert value(metrics_after, "tenantry_rotation_in_progress_seconds",
                 target="Credentials") == 0
    batches = "tenantry_rotation_step_duration_seconds_count"
    assert value(metrics_after, batches, target="Credentials") > value(
        metrics_before, batches, target="Credentials")
    ring = keyring.load(_keyring_path(operator_options))
    dumped = repr([e["changes"] for e in entries])
    assert not any(keyring.to_secret_data(ring)[v] in dumped for v in ring.versions)

    # The same trigger again (the spec changes otherwise): nothing is rotated.
    custom = client.CustomObjectsApi(alice)
    custom.patch_namespaced_custom_object(GROUP, VERSION, name, PLURAL, "quarterly",
                                          {"spec": {"trigger": "2026-Q4", "suspend": True}})
    again = _policy_ready(admin_api, name, "quarterly", status="True",
                          reason="RotationSucceeded")
    assert len(again["status"]["history"]) == 1
    assert again["status"]["lastRotationTime"] == status["lastRotationTime"]
    assert _policy_events(admin_api, name, "quarterly").count(("Normal", "RotationStarted")) == 1


def test_bad_policies_report_what_is_wrong(admin_api: client.ApiClient, tenants: TenantFactory,
                                           as_user: UserApi,
                                           public_key: x25519.X25519PublicKey) -> None:
    name = unique("rotbad")
    tenants(name, [name], [owner(f"{name}-alice")])
    alice = as_user(f"{name}-alice")
    _create(alice, _credential(name, "only", sealed=_seal(public_key, name, "only",
                                                          {"token": plaintext("rotbad")})))
    _ready(admin_api, name, "only", reason="Encrypted")

    _create_policy(alice, _policy(name, "platform", targets=["MasterKey"], trigger="now"))
    platform = _policy_ready(admin_api, name, "platform", status="False",
                             reason="TargetNotAllowed")
    message = conditions_of(platform)["Ready"]["message"]
    assert "spec.targets names MasterKey" in message
    assert "only by a RotationPolicy in Tenantry's namespace tenantry-system" in message
    assert "lastHandledTrigger" not in platform["status"]
    assert ("Warning", "TargetNotAllowed") in _policy_events(admin_api, name, "platform")

    _create_policy(alice, _policy(name, "ghost", trigger="now",
                           credentialSelector={"matchLabels": {"app": "ghost"}}))
    ghost = _policy_ready(admin_api, name, "ghost", status="False", reason="NothingSelected")
    assert conditions_of(ghost)["Ready"]["message"].startswith(
        f"spec.credentialSelector.matchLabels app=ghost matches none of the 1 Credential(s) "
        f"in namespace {name}")

    _create_policy(alice, _policy(name, "first", schedule="@weekly"))
    first = _policy_ready(admin_api, name, "first", status="True", reason="Idle")
    assert first["status"]["nextRotationTime"].endswith("T00:00:00Z")
    _create_policy(alice, _policy(name, "second", schedule="@daily"))
    second = _policy_ready(admin_api, name, "second", status="False", reason="Conflict")
    assert (f"RotationPolicy {name}/first (older) already rotates Credential(s) only"
            in conditions_of(second)["Ready"]["message"])
    # The older one is unaffected.
    assert conditions_of(_get_policy(admin_api, name, "first"))["Ready"]["status"] == "True"


def test_tenantry_rotate_sets_the_trigger_and_follows_it(
        admin_api: client.ApiClient, tenants: TenantFactory, as_user: UserApi,
        control_plane: LocalControlPlane, public_key: x25519.X25519PublicKey) -> None:
    name = unique("rotcli")
    tenants(name, [name], [owner(f"{name}-alice")])
    tenants(f"{name}-other", [f"{name}-other"], [owner(f"{name}-mallory")])
    alice = as_user(f"{name}-alice")
    for credential_name in ("one", "two"):
        _create(alice, _credential(name, credential_name, sealed=_seal(
            public_key, name, credential_name, {"token": plaintext(f"rotcli-{credential_name}")})))
        _ready(admin_api, name, credential_name, reason="Encrypted")
    _create_policy(alice, _policy(name, "weekly", schedule="@weekly"))
    _policy_ready(admin_api, name, "weekly", status="True", reason="Idle")

    def rotate(user: str, *extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "tenantry", "rotate", f"{name}/weekly", "--kubeconfig",
             str(control_plane.kubeconfig_for(user)), "--timeout", "60", *extra],
            cwd=REPO_ROOT, capture_output=True, text=True, timeout=90)

    done = rotate(f"{name}-alice")
    assert done.returncode == 0, done.stderr
    assert "done: 0/2 re-encrypted, 2 already current, 0 failed" in done.stdout
    trigger = done.stderr.split("spec.trigger set to ", 1)[1].split("\n", 1)[0].strip("'")
    policy = _get_policy(admin_api, name, "weekly")
    assert policy["status"]["lastHandledTrigger"] == trigger
    assert len(policy["status"]["history"]) == 1

    quick = rotate(f"{name}-alice", "--no-wait", "--trigger", "by-hand")
    assert quick.returncode == 0, quick.stderr
    assert "follow it with: kubectl get rotationpolicy" in quick.stderr
    eventually(lambda: _get_policy(admin_api, name, "weekly")["status"].get(
        "lastHandledTrigger") == "by-hand", what="the --no-wait trigger to be handled")

    # Another tenant's owner may not rotate this tenant's policy: RBAC refuses the trigger.
    refused = rotate(f"{name}-mallory", "--trigger", "not-yours")
    assert refused.returncode == 2
    assert "cannot set spec.trigger of RotationPolicy" in refused.stderr
    assert "403" in refused.stderr
    assert _get_policy(admin_api, name, "weekly")["spec"]["trigger"] == "by-hand"

    # --output json: one object on stdout a pipeline can parse, progress on stderr.
    piped = rotate(f"{name}-alice", "--trigger", "piped", "--output", "json")
    assert piped.returncode == 0, piped.stderr
    outcome = json.loads(piped.stdout)
    assert (outcome["policy"], outcome["trigger"], outcome["succeeded"]) == (
        f"{name}/weekly", "piped", True)
    assert outcome["progress"]["skipped"] == 2 and outcome["failures"] == []


# -- SIGKILL mid-rotation --------------------------------------------------------------------------

KILLED = 120


@pytest.fixture(scope="module")
def own_plane() -> Iterator[LocalControlPlane]:
    """A control plane of its own: killing this test's operator never disturbs the session's."""
    with operator_ready_plane() as plane:
        yield plane


def test_an_operator_killed_mid_rotation_resumes_and_encrypts_nothing_twice(
        own_plane: LocalControlPlane, operator_options: list[str], tmp_path: Path) -> None:
    # The ledger of the session, keys of its own (the session's keyring is not touched).
    ledger_options = operator_options[:operator_options.index("--ledger-spool") + 2]
    options = ledger_options + crypto_cli.dev_key_files(tmp_path)
    keyring_path = _keyring_path(options)
    identity = own_plane.kubeconfig_for(OPERATOR_USER, OPERATOR_GROUPS)
    api = kube.api_client(own_plane.admin_kubeconfig)
    custom = client.CustomObjectsApi(api)
    name = unique("rotkill")
    first = OperatorProcess(identity, tmp_path / "first.log", extra_args=options)
    second: OperatorProcess | None = None
    try:
        first.wait_ready()
        custom.create_cluster_custom_object(GROUP, VERSION, "tenants", {
            "apiVersion": f"{GROUP}/{VERSION}", "kind": "Tenant", "metadata": {"name": name},
            "spec": {"members": [owner(f"{name}-alice")], "namespaces": [{"name": name}],
                     "quota": {"secrets": 2 * KILLED}}})

        def tenant_ready() -> dict[str, Any] | None:
            found = cast(dict[str, Any], custom.get_cluster_custom_object(
                GROUP, VERSION, "tenants", name))
            return found if conditions_of(found).get("Ready", {}).get("status") == "True" \
                else None

        def published() -> dict[str, Any]:
            return cast(dict[str, Any], api.sanitize_for_serialization(
                client.CoreV1Api(api).read_namespaced_config_map(
                    custody.PUBLIC_KEY_CONFIGMAP, "tenantry-system")))

        tenant = eventually(tenant_ready, timeout=60, what="the tenant")
        key = custody.public_key_from_configmap(eventually(published, what="the public key"))
        values = {f"cred-{n:03d}": plaintext(f"killed-{n}") for n in range(KILLED)}
        for credential_name, value in values.items():
            _create(api, _credential(name, credential_name, sealed=_seal(
                key, name, credential_name, {"token": value})))
        for credential_name in values:
            _ready(api, name, credential_name, reason="Encrypted", generation=1, timeout=120)

        subprocess.run([sys.executable, "-m", "tenantry", "keyring", "add-version",
                        "--keyring", str(keyring_path), "--promote"], cwd=REPO_ROOT,
                       check=True, capture_output=True)
        new = keyring.load(keyring_path).primary
        reader = Reader(own_plane, keyring_path, name,
                        ciphertext.TenantRef(name, tenant["metadata"]["uid"]), values)
        with reading(reader):
            _create_policy(api, _policy(name, "now", trigger="kill-me"))

            def midway() -> bool:
                progress = (_get_policy(api, name, "now").get("status") or {}).get("progress")
                return bool(progress and progress["reencrypted"] >= 25)

            eventually(midway, interval=0.02, timeout=60, what="the rotation to be under way")
            first.process.kill()  # SIGKILL: no cleanup, a batch cut mid-flight
            first.stop()
            interrupted = _get_policy(api, name, "now")["status"]
            assert interrupted.get("rotation") is not None, "killed too late: nothing to resume"
            assert conditions_of({"status": interrupted})["Rotating"]["status"] == "True"

            second = OperatorProcess(identity, tmp_path / "second.log", extra_args=options)
            second.wait_ready()
            done = _policy_ready(api, name, "now", status="True", reason="RotationSucceeded",
                                 timeout=180)
            eventually(lambda: reader.reads >= 2 * KILLED, timeout=60, what="more reads")
        assert reader.failures == [], reader.failures[:5]

        for credential_name in values:
            status = _get(api, name, credential_name)["status"]
            assert status["secretRef"]["keyId"].startswith(f"{new}."), credential_name
            # Encrypted at creation, re-encrypted once: never twice for nothing.
            assert status["encryptionGeneration"] == 2, (credential_name, status)
        progress = done["status"]["progress"]
        assert (progress["reencrypted"] + progress["skipped"], progress["failed"]) == (KILLED, 0)
        assert progress["total"] == KILLED
        assert done["status"]["history"][0]["result"] == "Succeeded"
    finally:
        for process in (first, second):
            if process is not None:
                process.stop()
        api.close()
