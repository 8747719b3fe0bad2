"""RotationPolicy target MasterKey through the real operator on a control plane of its own.

The operator reads its keyring the way it does in a cluster: Secret tenantry-system/tenantry-keyring
mounted as a directory, which a stand-in for the kubelet (`Kubelet`, below) keeps up to date with
the Secret through the same atomic `..data` swap the kubelet uses. The operator writes only that
Secret (its RBAC allows nothing else), and picks each change up from the mounted files without a
restart; so do the readers, which decrypt every Credential continuously with the mounted keyring,
as the API's credential exchange will.

The main test walks one rotation through every step and SIGKILLs the operator twice (waiting for
the backup, and mid-re-encryption): add v2 → AwaitingBackup (a wrong confirmation and a stale
backup are refused; the exact command in the condition, run with the real kubectl, confirms it)
→ promote → re-encrypt every Credential of every tenant → retire v1 after the grace period.
Not one read fails. Another test keeps a version a Credential still uses from being retired.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import datetime
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import pytest
import yaml
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
    operator_ready_plane,
)
from tests.e2e.conftest import owner
from tests.e2e.test_credentials import _create, _credential, _get, _ready, _seal, plaintext
from tests.e2e.test_rotation import PLURAL, Reader, _get_policy, _policy_events, reading
from tests.helpers import GROUP, VERSION, conditions_of, eventually, forbidden, unique
from tests.unit.rotation import kubelet

NAMESPACE = "tenantry-system"
POLICY = "master"
# Credentials re-encrypted by the main test (the zero-downtime run asks for 500).
CREDENTIALS = int(os.environ.get("TENANTRY_E2E_MASTERKEY_CREDENTIALS", "500"))
TENANTS = 2
GRACE = "4s"


class Kubelet(threading.Thread):
    """Keeps a directory in step with the keyring Secret, as the kubelet does a Secret volume
    (within a fraction of a second here; the kubelet takes up to about a minute)."""

    def __init__(self, plane: LocalControlPlane, directory: Path) -> None:
        super().__init__(daemon=True)
        self.api = kube.api_client(plane.admin_kubeconfig)
        self.directory = directory
        self.stop = threading.Event()
        self.synced = ""

    def sync(self) -> None:
        secret = client.CoreV1Api(self.api).read_namespaced_secret(custody.KEYRING_SECRET,
                                                                   NAMESPACE)
        if secret.metadata.resource_version == self.synced:
            return
        kubelet.write(self.directory, {k: base64.b64decode(v).decode()
                                       for k, v in (secret.data or {}).items()})
        self.synced = secret.metadata.resource_version

    def run(self) -> None:
        try:
            while not self.stop.wait(0.2):
                with contextlib.suppress(Exception):
                    self.sync()
        finally:
            self.api.close()


@dataclasses.dataclass
class Environment:
    plane: LocalControlPlane
    api: client.ApiClient
    mount: Path
    options: list[str]
    workdir: Path
    operator: OperatorProcess
    restarts: int = 0

    @property
    def custom(self) -> client.CustomObjectsApi:
        return client.CustomObjectsApi(self.api)

    def kill_and_restart(self) -> None:
        """SIGKILL the operator (no cleanup at all) and start a new one."""
        self.operator.process.kill()
        self.operator.stop()
        self.restarts += 1
        self.operator = OperatorProcess(
            self.plane.kubeconfig_for(OPERATOR_USER, OPERATOR_GROUPS),
            self.workdir / f"operator-{self.restarts}.log", extra_args=self.options)
        self.operator.wait_ready()

    def secret_ring(self) -> keyring.Keyring:
        secret = client.CoreV1Api(self.api).read_namespaced_secret(custody.KEYRING_SECRET,
                                                                   NAMESPACE)
        return keyring.from_secret_manifest(cast(dict[str, Any],
                                                 self.api.sanitize_for_serialization(secret)))

    def policy(self) -> dict[str, Any]:
        return _get_policy(self.api, NAMESPACE, POLICY)


@pytest.fixture(scope="module")
def env(operator_options: list[str], tmp_path_factory: pytest.TempPathFactory
        ) -> Iterator[Environment]:
    workdir = tmp_path_factory.mktemp("masterkey")
    with operator_ready_plane() as plane:
        api = kube.api_client(plane.admin_kubeconfig)
        ring = keyring.generate("v1")
        kube.apply(api, [crypto_cli.secret_manifest(custody.KEYRING_SECRET, NAMESPACE,
                                                    keyring.to_secret_data(ring))])
        mount = workdir / "keyring"
        mounter = Kubelet(plane, mount)
        mounter.sync()
        mounter.start()
        # The session's ledger, a sealing key of its own, the mounted keyring.
        ledger_options = operator_options[:operator_options.index("--ledger-spool") + 2]
        keys = crypto_cli.dev_key_files(workdir)
        keys[keys.index("--keyring") + 1] = str(mount)
        options = ledger_options + keys
        process = OperatorProcess(plane.kubeconfig_for(OPERATOR_USER, OPERATOR_GROUPS),
                                  workdir / "operator-0.log", extra_args=options)
        environment = Environment(plane, api, mount, options, workdir, process)
        try:
            process.wait_ready()
            yield environment
        finally:
            environment.operator.stop()
            mounter.stop.set()
            mounter.join(10)
            api.close()


def _tenant_with_credentials(env: Environment, count: int) -> tuple[str, dict[str, Any],
                                                                     dict[str, str]]:
    """A Tenant with `count` sealed Credentials, all Encrypted."""
    name = unique("mk")
    env.custom.create_cluster_custom_object(GROUP, VERSION, "tenants", {
        "apiVersion": f"{GROUP}/{VERSION}", "kind": "Tenant", "metadata": {"name": name},
        "spec": {"members": [owner(f"{name}-alice")], "namespaces": [{"name": name}],
                 "quota": {"secrets": count + 10}}})

    def tenant_ready() -> dict[str, Any] | None:
        found = cast(dict[str, Any], env.custom.get_cluster_custom_object(
            GROUP, VERSION, "tenants", name))
        return found if conditions_of(found).get("Ready", {}).get("status") == "True" else None

    def published() -> dict[str, Any]:
        return cast(dict[str, Any], env.api.sanitize_for_serialization(
            client.CoreV1Api(env.api).read_namespaced_config_map(
                custody.PUBLIC_KEY_CONFIGMAP, NAMESPACE)))

    tenant = eventually(tenant_ready, timeout=60, what=f"tenant {name}")
    key = custody.public_key_from_configmap(eventually(published, what="the public key"))
    values = {f"cred-{n:03d}": plaintext(f"{name}-{n}") for n in range(count)}
    for credential_name, value in values.items():
        _create(env.api, _credential(name, credential_name, sealed=_seal(
            key, name, credential_name, {"token": value})))
    for credential_name in values:
        _ready(env.api, name, credential_name, reason="Encrypted", timeout=300)
    return name, tenant, values


def _readers(env: Environment, tenants: list[tuple[str, dict[str, Any], dict[str, str]]]
             ) -> list[Reader]:
    return [Reader(env.plane, env.mount, name,
                   ciphertext.TenantRef(name, tenant["metadata"]["uid"]), values)
            for name, tenant, values in tenants]


def _condition(env: Environment, type_: str, status: str, *, reason: str | None = None,
               timeout: float = 120.0, containing: str = "") -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        policy = env.policy()
        found = conditions_of(policy).get(type_, {})
        current = found.get("observedGeneration") == policy["metadata"]["generation"]
        return policy if current and found.get("status") == status and (
            reason is None or found.get("reason") == reason) and \
            containing in found.get("message", "") else None

    return eventually(check, timeout=timeout, interval=0.1,
                      what=f"{type_}={status} {reason or ''} {containing!r} on {POLICY}")


def _trigger(env: Environment, trigger: str) -> None:
    try:
        env.custom.patch_namespaced_custom_object(GROUP, VERSION, NAMESPACE, PLURAL, POLICY,
                                                  {"spec": {"trigger": trigger}})
    except client.ApiException as error:
        if error.status != 404:
            raise
        env.custom.create_namespaced_custom_object(GROUP, VERSION, NAMESPACE, PLURAL, {
            "apiVersion": f"{GROUP}/{VERSION}", "kind": "RotationPolicy",
            "metadata": {"name": POLICY, "namespace": NAMESPACE},
            "spec": {"targets": ["MasterKey"], "trigger": trigger, "retainPrevious": 0,
                     "gracePeriod": GRACE}})


def _confirm(env: Environment, backup: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tenantry", "keyring", "confirm-backup", f"{NAMESPACE}/{POLICY}",
         "--backup", str(backup), "--kubeconfig", str(env.plane.admin_kubeconfig)],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)


def _backup_yaml(env: Environment, path: Path) -> Path:
    secret = client.CoreV1Api(env.api).read_namespaced_secret(custody.KEYRING_SECRET, NAMESPACE)
    path.write_text(yaml.safe_dump(env.api.sanitize_for_serialization(secret)))
    return path


def _run_backup_command(env: Environment, command: str, kubectl_binary: Path,
                        where: Path) -> subprocess.CompletedProcess[str]:
    """The command the AwaitingBackup condition names, as a person would paste it: the real
    kubectl and the installed `tenantry`, nothing else on PATH."""
    path = os.pathsep.join([str(kubectl_binary.parent), str(Path(sys.executable).parent),
                            "/usr/bin", "/bin"])
    return subprocess.run(["bash", "-c", command], cwd=where, capture_output=True, text=True,
                          timeout=120, env={"PATH": path, "HOME": str(where), "KUBERC": "off",
                                            "KUBECONFIG": str(env.plane.admin_kubeconfig)})


def _awaiting_command(policy: dict[str, Any]) -> str:
    message = str(conditions_of(policy)["AwaitingBackup"]["message"])
    return message.split("run `", 1)[1].split("`", 1)[0]


def _versions_of_credentials(env: Environment, tenants: list[tuple[str, dict[str, Any],
                                                                   dict[str, str]]]
                             ) -> dict[str, tuple[str, int]]:
    found = {}
    for name, _, values in tenants:
        for credential_name in values:
            status = _get(env.api, name, credential_name)["status"]
            found[f"{name}/{credential_name}"] = (
                status["secretRef"]["keyId"].split(".", 1)[0], status["encryptionGeneration"])
    return found


def test_a_masterkey_rotation_adds_waits_for_backup_promotes_reencrypts_and_retires(
        env: Environment, ledger: Ledger, kubectl_binary: Path) -> None:
    per_tenant = CREDENTIALS // TENANTS
    tenants = [_tenant_with_credentials(env, per_tenant) for _ in range(TENANTS)]
    stale_backup = _backup_yaml(env, env.workdir / "yesterdays-backup.yaml")  # v1 only
    v1_key = keyring.to_secret_data(env.secret_ring())["v1"]
    readers = _readers(env, tenants)
    with contextlib.ExitStack() as stack:
        for reader in readers:
            stack.enter_context(reading(reader))
        eventually(lambda: all(r.reads >= per_tenant for r in readers), timeout=120,
                   what="the readers' first round")

        # 1. Add: v2 joins the keyring Secret, not as primary, and waits for its backup.
        _trigger(env, "first")
        awaiting = _condition(env, "AwaitingBackup", "True", reason="BackupNotConfirmed")
        ring = env.secret_ring()
        assert (ring.versions, ring.primary) == (("v1", "v2"), "v1")
        master = awaiting["status"]["masterKey"]
        assert master["rotation"]["step"] == "AwaitingBackup"
        assert master["rotation"]["checkValue"] == keyring.check_value(ring, "v2")
        assert master["checkValues"] == keyring.check_values(ring)
        command = _awaiting_command(awaiting)
        assert command == (
            "kubectl -n tenantry-system get secret tenantry-keyring -o yaml > "
            "keyring-backup.yaml && tenantry keyring confirm-backup tenantry-system/master "
            "--backup keyring-backup.yaml")
        ready = conditions_of(awaiting)["Ready"]
        assert (ready["status"], ready["reason"]) == ("False", "AwaitingBackup")

        # Killed while waiting: the new operator waits on; no second version is added.
        env.kill_and_restart()
        env.operator.wait_timer_rounds(NAMESPACE, POLICY)  # the new operator has looked again
        assert env.secret_ring().versions == ("v1", "v2") and env.secret_ring().primary == "v1"
        assert "v2" not in {v for v, _ in _versions_of_credentials(env, tenants).values()}

        # 2. The gate: a confirmation of another key, and a stale backup, promote nothing.
        env.custom.patch_namespaced_custom_object(GROUP, VERSION, NAMESPACE, PLURAL, POLICY, {
            "metadata": {"annotations": {"tenantry.dev/backup-confirmed":
                                         "v2:0000000000000000"}}})
        _condition(env, "AwaitingBackup", "True", containing="which confirms another key")
        stale = _confirm(env, stale_backup)
        assert stale.returncode == 1, stale.stderr
        assert "is not a backup of the keyring" in stale.stderr
        assert "it lacks key version v2" in stale.stderr
        assert env.policy()["metadata"]["annotations"]["tenantry.dev/backup-confirmed"] == \
            "v2:0000000000000000"
        env.operator.wait_timer_rounds(NAMESPACE, POLICY)
        assert env.secret_ring().primary == "v1"

        # 3. The exact command of the condition, with the real kubectl: backed up, confirmed.
        done = _run_backup_command(env, command, kubectl_binary, env.workdir)
        assert done.returncode == 0, done.stderr
        assert "backup of key version v2" in done.stdout
        backup = keyring.load_backup(env.workdir / "keyring-backup.yaml")
        assert backup.versions == ("v1", "v2")

        # 4. Promoted, then re-encrypted; killed mid-way, resumed.
        def midway() -> bool:
            status = env.policy().get("status") or {}
            progress = status.get("progress") or {}
            return bool(status.get("rotation")) and progress.get("reencrypted", 0) >= 25

        eventually(midway, interval=0.02, timeout=180, what="the re-encryption to be under way")
        assert env.secret_ring().primary == "v2"
        env.kill_and_restart()
        assert env.policy()["status"].get("rotation") is not None, "killed too late"
        completed = _condition(env, "Ready", "True", reason="RotationSucceeded", timeout=600)

        # 5. Retired once unused and past the grace period; reads go on without v1.
        eventually(lambda: env.secret_ring().versions == ("v2",), timeout=60,
                   what="v1 to be retired from the keyring Secret")
        eventually(lambda: "v1" not in keyring.load(env.mount), what="the mount without v1")
        reads = [r.reads for r in readers]
        eventually(lambda: all(r.reads >= n + 2 * per_tenant for r, n in zip(readers, reads,
                                                                               strict=True)),
                   timeout=120, what="two more rounds of reads after v1 is gone")
    for reader in readers:
        assert reader.failures == [], reader.failures[:5]
        assert {"v1", "v2"} <= reader.versions_seen

    versions = _versions_of_credentials(env, tenants)
    assert len(versions) == TENANTS * per_tenant
    # Encrypted at creation, re-encrypted once, in spite of two SIGKILLs: never twice.
    assert set(versions.values()) == {("v2", 2)}, {k: v for k, v in versions.items()
                                                  if v != ("v2", 2)}
    status = env.policy()["status"]
    progress = completed["status"]["progress"]
    assert (progress["reencrypted"] + progress["skipped"], progress["failed"]) == (
        TENANTS * per_tenant, 0)
    assert status["versionsInUse"] == {"v2": TENANTS * per_tenant}
    assert status["currentVersions"] == {"MasterKey": "v2"}
    assert [(h["result"], h.get("fromVersion"), h.get("toVersion")) for h in
            status["history"][:2]] == [("Retired", "v1", None), ("Succeeded", "v1", "v2")]
    assert conditions_of(env.policy())["Retiring"]["reason"] == "NothingToRetire"
    events = {reason for _, reason in _policy_events(env.api, NAMESPACE, POLICY)}
    assert {"RotationStarted", "KeyVersionAdded", "BackupConfirmed", "KeyVersionPromoted",
            "ReencryptionStarted", "Reencrypted", "RotationCompleted",
            "KeyVersionRetired"} <= events, events

    def entries() -> list[dict[str, Any]] | None:
        found = [e for e in ledger.entries("_platform") if e["resource_name"] == POLICY
                 and e["action"].startswith("rotation.")]
        return found if found and found[-1]["action"] == "rotation.retired" else None

    actions = [e["action"] for e in eventually(entries, what="the ledger's rotation entries")]
    steps = [a for a in actions if a != "rotation.batch"]
    # Recorded at least once: the step the SIGKILL above interrupted between its ledger entry
    # and its checkpoint in status ran again, entry included. Every step, in order, no other.
    steps = [a for i, a in enumerate(steps) if i == 0 or steps[i - 1] != a]
    assert steps == ["rotation.started", "rotation.key-added", "rotation.backup-confirmed",
                     "rotation.promoted", "rotation.reencrypt-started", "rotation.completed",
                     "rotation.retired"]
    dumped = repr(entries())
    v2_key = keyring.to_secret_data(backup)["v2"]
    assert v1_key not in dumped and v2_key not in dumped
    assert v1_key not in repr(status) and v2_key not in repr(status)
    for process_log in env.workdir.glob("operator-*.log"):
        text = process_log.read_text(errors="replace")
        assert v1_key not in text and v2_key not in text


def test_a_version_a_credential_still_uses_is_not_retired(env: Environment) -> None:
    name, _, values = _tenant_with_credentials(env, 3)
    before = env.secret_ring()
    old = before.primary
    # Credential "cred-001" becomes one the operator refuses to touch (scope names the
    # namespace's default ServiceAccount): it stays under the old version.
    env.custom.patch_namespaced_custom_object(GROUP, VERSION, name, "credentials", "cred-001",
                                              {"spec": {"allowedServiceAccounts": ["default"]}})
    _ready(env.api, name, "cred-001", status="False", reason="InvalidScope")
    _trigger(env, f"stuck-{name}")
    _condition(env, "AwaitingBackup", "True", reason="BackupNotConfirmed")
    confirmed = _confirm(env, _backup_yaml(env, env.workdir / f"backup-{name}.yaml"))
    assert confirmed.returncode == 0, confirmed.stderr
    failed = _condition(env, "Ready", "False", reason="CredentialsFailed", timeout=120)
    new = env.secret_ring().primary
    assert new != old
    assert [f["name"] for f in failed["status"]["failures"]] == [f"{name}/cred-001"]
    assert failed["status"]["versionsInUse"][old] == 1
    retiring = _condition(env, "Retiring", "True", reason="RetirementPending",
                          containing=f"{old}: 1 Credential(s) still use it: {name}/cred-001")
    assert retiring is not None
    # Past the grace period (from the demotion the status records), and looked at again since.
    demoted = retiring["status"]["masterKey"]["demoted"][old]
    over = datetime.datetime.fromisoformat(demoted).timestamp() + float(GRACE.rstrip("s"))
    time.sleep(max(0.0, over - time.time()))
    env.operator.wait_timer_rounds(NAMESPACE, POLICY)
    assert old in env.secret_ring(), "a version still in use was retired"
    stuck = _get(env.api, name, "cred-001")["status"]
    assert stuck["secretRef"]["keyId"].startswith(f"{old}.")

    # Fixed: its own reconcile re-encrypts it under the primary, and only then does the old
    # version go.
    env.custom.patch_namespaced_custom_object(GROUP, VERSION, name, "credentials", "cred-001",
                                              {"spec": {"allowedServiceAccounts": ["app"]}})
    _ready(env.api, name, "cred-001", reason="Encrypted", timeout=60)
    eventually(lambda: old not in env.secret_ring(), timeout=60,
               what=f"{old} to be retired once nothing uses it")
    for credential_name in values:
        key_id = _get(env.api, name, credential_name)["status"]["secretRef"]["keyId"]
        assert key_id.startswith(f"{new}."), (credential_name, key_id)


def test_the_operator_may_write_the_keyring_secret_and_no_other(env: Environment) -> None:
    def may(verb: str, namespace: str, name: str = "") -> bool:
        review = client.V1SubjectAccessReview(spec=client.V1SubjectAccessReviewSpec(
            user=OPERATOR_USER, groups=list(OPERATOR_GROUPS),
            resource_attributes=client.V1ResourceAttributes(
                verb=verb, resource="secrets", namespace=namespace, name=name or None)))
        answer = client.AuthorizationV1Api(env.api).create_subject_access_review(review)
        return bool(answer.status.allowed)

    assert may("get", NAMESPACE, custody.KEYRING_SECRET)
    assert may("patch", NAMESPACE, custody.KEYRING_SECRET)
    for verb in ("update", "delete", "create", "list", "watch", "deletecollection"):
        assert not may(verb, NAMESPACE, custody.KEYRING_SECRET), verb
        assert not may(verb, NAMESPACE), verb
    for other in ("tenantry-sealing-key", "tenantry-api-signing-key", "tenantry-ledger"):
        assert not may("get", NAMESPACE, other) and not may("patch", NAMESPACE, other), other
    assert not may("get", "kube-system", custody.KEYRING_SECRET)
    assert not may("patch", "default", custody.KEYRING_SECRET)
    operator_api = kube.api_client(env.plane.kubeconfig_for(OPERATOR_USER, OPERATOR_GROUPS))
    try:
        assert forbidden(lambda: client.CoreV1Api(operator_api).list_namespaced_secret(NAMESPACE))
        assert forbidden(lambda: client.CoreV1Api(operator_api).delete_namespaced_secret(
            custody.KEYRING_SECRET, NAMESPACE))
    finally:
        operator_api.close()


def test_a_masterkey_policy_outside_tenantrys_namespace_touches_no_key(
        env: Environment) -> None:
    name, _, _ = _tenant_with_credentials(env, 1)
    before = client.CoreV1Api(env.api).read_namespaced_secret(custody.KEYRING_SECRET, NAMESPACE)
    env.custom.create_namespaced_custom_object(GROUP, VERSION, name, PLURAL, {
        "apiVersion": f"{GROUP}/{VERSION}", "kind": "RotationPolicy",
        "metadata": {"name": "rogue", "namespace": name},
        "spec": {"targets": ["MasterKey"], "trigger": "now", "retainPrevious": 0,
                 "gracePeriod": "0s"}})

    def refused() -> dict[str, Any] | None:
        policy = _get_policy(env.api, name, "rogue")
        ready = conditions_of(policy).get("Ready", {})
        return policy if ready.get("reason") == "TargetNotAllowed" else None

    policy = eventually(refused, timeout=60, what="the rogue policy to be refused")
    assert "only by a RotationPolicy in Tenantry's namespace tenantry-system" in \
        conditions_of(policy)["Ready"]["message"]
    assert "masterKey" not in policy["status"] and "lastHandledTrigger" not in policy["status"]
    env.operator.wait_timer_rounds(name, "rogue")
    after = client.CoreV1Api(env.api).read_namespaced_secret(custody.KEYRING_SECRET, NAMESPACE)
    assert after.metadata.resource_version == before.metadata.resource_version


# -- tenantry reencrypt ------------------------------------------------------------------------

def _promote_by_hand(env: Environment) -> str:
    """Add and promote a version in the keyring Secret, as a person would (no policy), and
    wait for the mounted copy to say so."""
    ring = env.secret_ring()
    new = keyring.next_version(ring)
    ring = keyring.promote(keyring.add_version(ring, new), new)
    kube.apply(env.api, [crypto_cli.secret_manifest(custody.KEYRING_SECRET, NAMESPACE,
                                                    keyring.to_secret_data(ring))])
    eventually(lambda: keyring.load(env.mount).primary == new, what=f"the mount to show {new}")
    return new


def _reencrypt(env: Environment, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tenantry", "reencrypt", *args,
         "--kubeconfig", str(env.plane.admin_kubeconfig)],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)


def test_tenantry_reencrypt_offline_dry_run_then_run_then_nothing_to_do(
        env: Environment, ledger: Ledger) -> None:
    name, tenant, values = _tenant_with_credentials(env, 30)
    old = env.secret_ring().primary
    new = _promote_by_hand(env)
    sealing_key = env.options[env.options.index("--sealing-key") + 1]
    offline = ["--keyring", str(env.mount), "--sealing-key", sealing_key]
    dsn_file = env.options[env.options.index("--ledger-dsn-file") + 1]

    dry = _reencrypt(env, "-n", name, *offline, "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert f"would re-encrypt {name}/cred-000: {old} -> {new}" in dry.stdout
    assert (f"dry run: 30 Credential(s) would be re-encrypted under key version {new} (now "
            f"under: {old} 30), 0 already current; nothing written") in dry.stdout
    assert set(_versions_of_credentials(env, [(name, tenant, values)]).values()) == {(old, 1)}

    # A sealed Credential without the sealing key would lose its Ready: refused up front.
    keyless = _reencrypt(env, "-n", name, "--keyring", str(env.mount), "--no-ledger")
    assert keyless.returncode == 2 and "are sealed: give --sealing-key" in keyless.stderr

    reader = _readers(env, [(name, tenant, values)])[0]
    with reading(reader):
        done = _reencrypt(env, "-n", name, *offline, "--ledger-dsn-file", dsn_file,
                          "--ledger-spool", str(env.workdir / f"spool-{name}"))
        assert done.returncode == 0, done.stderr
        eventually(lambda: reader.reads >= 60, what="reads after the re-encryption")
    assert reader.failures == [], reader.failures[:5]
    assert f"30 re-encrypted under key version {new}, 0 already current, 0 failed" \
        in done.stdout
    assert set(_versions_of_credentials(env, [(name, tenant, values)]).values()) == {(new, 2)}
    ready = conditions_of(_get(env.api, name, "cred-007"))["Ready"]
    assert (ready["status"], ready["reason"]) == ("True", "Encrypted")
    entries = [e for e in ledger.entries(name) if e["action"] == "credential.reencrypt"]
    assert len(entries) == 30
    # Recorded as the person who ran it (the kubeconfig's user), by the reencrypt tool.
    assert {e["identity"]["component"] for e in entries} == {"reencrypt"}
    assert len({e["actor"] for e in entries}) == 1
    assert "tenantry-operator" not in entries[0]["actor"]

    again = _reencrypt(env, "-n", name, *offline, "--no-ledger")
    assert again.returncode == 0, again.stderr
    assert f"0 re-encrypted under key version {new}, 30 already current, 0 failed" \
        in again.stdout
    assert set(_versions_of_credentials(env, [(name, tenant, values)]).values()) == {(new, 2)}


def test_tenantry_reencrypt_online_lets_the_operator_do_it(env: Environment) -> None:
    name, tenant, values = _tenant_with_credentials(env, 10)
    env.custom.patch_namespaced_custom_object(GROUP, VERSION, name, "credentials", "cred-003",
                                              {"metadata": {"labels": {"team": "payments"}}})
    time.sleep(2)  # the label is a change the operator reconciles: let that pass first
    # A new primary the operator would otherwise reach only at each Credential's resync (2 min).
    new = _promote_by_hand(env)
    picked = _reencrypt(env, "-l", "team=payments", "--online", "--to-version", new,
                        "--timeout", "60")
    assert picked.returncode == 0, picked.stderr
    assert f"1 re-encrypted under key version {new}, 0 already current, 0 failed" \
        in picked.stdout
    versions = _versions_of_credentials(env, [(name, tenant, values)])
    assert versions[f"{name}/cred-003"][0] == new
    assert sum(v == new for v, _ in versions.values()) == 1  # the selector picked one
    rest = _reencrypt(env, "-n", name, "--online", "--to-version", new, "--timeout", "60")
    assert rest.returncode == 0, rest.stderr
    assert f"9 re-encrypted under key version {new}, 1 already current, 0 failed" in rest.stdout
    assert {v for v, _ in _versions_of_credentials(env, [(name, tenant, values)]).values()} \
        == {new}
