"""The MasterKey planner, step by step against a simulated keyring Secret, its mounted copy
(which lags behind, as the kubelet's does) and the cluster's Credentials: add, the backup gate,
promote, re-encrypt, retire; crashes between any two writes; every refusal."""

from __future__ import annotations

import base64
import dataclasses
import datetime
import json
from collections.abc import Sequence
from typing import Any

import pytest

from tenantry.controller.rotation import masterkey, plan
from tenantry.crypto import errors, keyring
from tenantry.model import rotation
from tests.unit.rotation.test_plan import _apply_merge_patch

UTC = datetime.UTC
NOW = datetime.datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
NAMESPACE = "tenantry-system"
NAME = "master"


def _spec(**fields: Any) -> rotation.RotationPolicySpec:
    fields.setdefault("targets", ["MasterKey"])
    fields.setdefault("trigger", "2026-12")
    fields.setdefault("retainPrevious", 0)
    fields.setdefault("gracePeriod", "1h")
    return rotation.RotationPolicySpec.model_validate(fields)


@dataclasses.dataclass
class KeyCluster:
    """The keyring Secret, the operator's mounted copy of it, and every Credential."""

    credentials: dict[str, str | None]
    secret: dict[str, str] = dataclasses.field(default_factory=lambda: {"v1": "cv-v1-0"})
    primary: str = "v1"
    resource_version: int = 1
    mounted: tuple[str, tuple[str, ...]] = ("v1", ("v1",))
    status: rotation.RotationPolicyStatus = dataclasses.field(
        default_factory=rotation.RotationPolicyStatus)
    annotations: dict[str, str] = dataclasses.field(default_factory=dict)
    failing: set[str] = dataclasses.field(default_factory=set)
    writes: list[str] = dataclasses.field(default_factory=list)
    changes: list[tuple[str, str]] = dataclasses.field(default_factory=list)
    secret_readable: bool = True

    def world(self, spec: rotation.RotationPolicySpec, *, now: datetime.datetime = NOW,
              namespace: str = NAMESPACE, name: str = NAME, generation: int = 1,
              others: Sequence[plan.OtherPolicy] = ()) -> plan.World:
        secret = plan.KeyringSecret(str(self.resource_version), self.primary,
                                    tuple(sorted(self.secret)), dict(self.secret)) \
            if self.secret_readable else None
        return plan.World(
            namespace=namespace, name=name, generation=generation, created="2026-11-01T00:00:00Z",
            spec=spec, status=self.status,
            credentials=[plan.CredentialInfo(n, {}, v) for n, v in self.credentials.items()],
            others=others, primary=self.mounted[0], now=now, operator_namespace=NAMESPACE,
            annotations=dict(self.annotations), keyring_secret=secret,
            keyring_secret_problem="reading Secret tenantry-system/tenantry-keyring: 403",
            mounted_versions=self.mounted[1])

    def sync_mount(self) -> None:
        """What the kubelet does, some time after each Secret change."""
        self.mounted = (self.primary, tuple(sorted(self.secret)))

    def apply(self, change: plan.KeyChange) -> bool:
        """The apiserver's merge patch with a resourceVersion precondition."""
        if change.resource_version != str(self.resource_version):
            return False  # 409 Conflict
        if change.action == "add":
            self.secret[change.version] = f"cv-{change.version}-{len(self.changes)}"
        elif change.action == "promote":
            self.primary = change.version
        elif change.action == "retire":
            del self.secret[change.version]
        self.changes.append((change.action, change.version))
        self.resource_version += 1
        return True

    def reencrypt(self, batch: plan.Batch) -> list[plan.Result]:
        results = []
        for name in batch.names:
            if name in self.failing:
                results.append(plan.Result(name, self.credentials[name], "InvalidScope", "x"))
                continue
            self.writes.append(name)
            self.credentials[name] = batch.to_version
            results.append(plan.Result(name, batch.to_version))
        return results

    def store(self, decision: plan.Decision) -> None:
        stored = json.loads(json.dumps(self.status.wire()))
        wire = _apply_merge_patch(stored, json.loads(json.dumps(decision.status_patch())))
        self.status = rotation.RotationPolicyStatus.model_validate(wire)
        assert self.status == decision.status

    def run(self, spec: rotation.RotationPolicySpec, *, now: datetime.datetime = NOW,
            mount_follows: bool = True, limit: int = 200, **world: Any) -> list[plan.Decision]:
        """Steps as the handler runs them, until one asks for nothing more."""
        decisions: list[plan.Decision] = []
        done: plan.Batch | None = None
        results: Sequence[plan.Result] = ()
        for _ in range(limit):
            decision = masterkey.decide(self.world(spec, now=now, **world), done, results)
            self.store(decision)
            decisions.append(decision)
            done, results = None, ()
            if decision.key_change is not None:
                self.apply(decision.key_change)
                if mount_follows:
                    self.sync_mount()
                continue
            if decision.batch is None:
                return decisions
            results = self.reencrypt(decision.batch)
            done = decision.batch
        raise AssertionError("the planner never settled")

    def confirm_backup(self) -> None:
        key = self.status.master_key.rotation if self.status.master_key else None
        assert key is not None and key.check_value is not None
        self.annotations[rotation.BACKUP_ANNOTATION] = masterkey.confirmation(
            key.new_version, key.check_value)


def _many(count: int, version: str | None = "v1") -> dict[str, str | None]:
    return {f"acme-{i % 3}/cred-{i:03d}": version for i in range(count)}


def _conditions(status: rotation.RotationPolicyStatus) -> dict[str, Any]:
    return {c.type: c for c in status.conditions}


def _events(decisions: Sequence[plan.Decision]) -> list[str]:
    return [reason for d in decisions for _, reason, _ in d.events]


def _actions(decisions: Sequence[plan.Decision]) -> list[str]:
    return [action for d in decisions for action, _ in d.audit]


# -- the backup gate ------------------------------------------------------------------------------

def test_a_trigger_adds_a_version_and_waits_for_its_backup_without_promoting_it() -> None:
    cluster = KeyCluster(_many(7))
    decisions = cluster.run(_spec())

    assert cluster.changes == [("add", "v2")]
    assert cluster.primary == "v1" and cluster.writes == []
    master = cluster.status.master_key
    assert master is not None and master.rotation is not None
    assert (master.rotation.step, master.rotation.new_version, master.rotation.from_version) \
        == (rotation.KeyStep.AWAITING_BACKUP, "v2", "v1")
    assert master.rotation.check_value == cluster.secret["v2"]
    conditions = _conditions(cluster.status)
    awaiting = conditions["AwaitingBackup"]
    assert (awaiting.status, awaiting.reason) == ("True", masterkey.BACKUP_NOT_CONFIRMED)
    assert ("kubectl -n tenantry-system get secret tenantry-keyring -o yaml > "
            "keyring-backup.yaml && tenantry keyring confirm-backup tenantry-system/master "
            "--backup keyring-backup.yaml") in awaiting.message
    assert (conditions["Ready"].status, conditions["Ready"].reason) == (
        "False", masterkey.AWAITING_BACKUP)
    assert conditions["Rotating"].status == "True"
    assert _events(decisions) == ["RotationStarted", "KeyVersionAdded"]
    assert _actions(decisions) == [plan.STARTED, masterkey.KEY_ADDED]
    assert cluster.status.versions_in_use == {"v1": 7, "v2": 0}

    # Waiting changes nothing, however often it is asked, and writes nothing more.
    again = cluster.run(_spec(), now=NOW + datetime.timedelta(days=3))
    assert cluster.changes == [("add", "v2")] and cluster.primary == "v1"
    assert _events(again) == [] and all(d.status_patch() == {} for d in again[1:])


@pytest.mark.parametrize("annotation", [
    "v2", "v2:", "v1:cv-v1-0", "v2:0000000000000000", "yes", "v3:cv-v2-0"])
def test_no_promotion_without_the_confirmation_of_this_very_key(annotation: str) -> None:
    cluster = KeyCluster(_many(3))
    cluster.run(_spec())
    cluster.annotations[rotation.BACKUP_ANNOTATION] = annotation
    cluster.run(_spec(), now=NOW + datetime.timedelta(hours=1))
    assert cluster.primary == "v1" and cluster.changes == [("add", "v2")]
    awaiting = _conditions(cluster.status)["AwaitingBackup"]
    assert awaiting.status == "True"
    assert f"annotation tenantry.dev/backup-confirmed is {annotation!r}" in awaiting.message


def test_a_confirmation_made_for_a_key_that_was_replaced_does_not_count() -> None:
    cluster = KeyCluster(_many(3))
    cluster.run(_spec())
    cluster.confirm_backup()
    cluster.secret["v2"] = "cv-v2-replaced"  # someone put another key under the same name
    cluster.resource_version += 1
    cluster.run(_spec())
    assert cluster.primary == "v1"
    assert _conditions(cluster.status)["AwaitingBackup"].status == "True"
    assert cluster.status.master_key is not None
    assert cluster.status.master_key.rotation is not None
    assert cluster.status.master_key.rotation.check_value == "cv-v2-replaced"


def test_confirmed_it_promotes_reencrypts_every_credential_and_retires_after_grace() -> None:
    cluster = KeyCluster(_many(60))
    cluster.run(_spec())
    cluster.confirm_backup()
    decisions = cluster.run(_spec())

    assert cluster.changes == [("add", "v2"), ("promote", "v2")]
    assert sorted(cluster.writes) == sorted(cluster.credentials)  # each exactly once
    assert set(cluster.credentials.values()) == {"v2"}
    status = cluster.status
    assert status.rotation is None and status.master_key is not None
    assert status.master_key.rotation is None
    assert status.progress == rotation.Progress(reencrypted=60, total=60)
    assert status.versions_in_use == {"v1": 0, "v2": 60}
    assert status.current_versions == {"MasterKey": "v2"}
    assert status.history[0].target is rotation.Target.MASTER_KEY
    assert (status.history[0].from_version, status.history[0].to_version) == ("v1", "v2")
    assert _events(decisions)[:3] == ["BackupConfirmed", "KeyVersionPromoted",
                                      "ReencryptionStarted"]
    assert "RotationCompleted" in _events(decisions)
    assert _actions(decisions)[:3] == [masterkey.BACKUP_CONFIRMED_ACTION, masterkey.PROMOTED,
                                       masterkey.REENCRYPT_STARTED]
    conditions = _conditions(status)
    assert (conditions["Ready"].status, conditions["Ready"].reason) == (
        "True", plan.SUCCEEDED)
    assert (conditions["AwaitingBackup"].status,
            conditions["AwaitingBackup"].reason) == ("False", masterkey.BACKUP_CONFIRMED)
    # v1 is unused, but its grace period (1h from its demotion) has not passed.
    retiring = conditions["Retiring"]
    assert (retiring.status, retiring.reason) == ("True", masterkey.RETIREMENT_PENDING)
    assert "v1: unused; grace period (spec.gracePeriod 1h) ends at 2026-12-01T10:00:00Z" \
        in retiring.message
    assert "v1" in cluster.secret

    later = cluster.run(_spec(), now=NOW + datetime.timedelta(minutes=59))
    assert "v1" in cluster.secret and _events(later) == []
    retired = cluster.run(_spec(), now=NOW + datetime.timedelta(hours=1, seconds=1))
    assert cluster.changes[-1] == ("retire", "v1") and sorted(cluster.secret) == ["v2"]
    assert "KeyVersionRetired" in _events(retired)
    assert masterkey.RETIRED in _actions(retired)
    assert cluster.status.history[0].result == "Retired"
    assert cluster.status.versions_in_use == {"v2": 60}
    assert _conditions(cluster.status)["Retiring"].reason == masterkey.NOTHING_TO_RETIRE


def test_promotion_waits_for_the_mounted_keyring_to_hold_the_new_version() -> None:
    cluster = KeyCluster(_many(5))
    cluster.run(_spec(), mount_follows=False)
    cluster.confirm_backup()
    cluster.run(_spec(), mount_follows=False)
    assert cluster.primary == "v1", "promoted before this operator could decrypt under v2"
    rotating = _conditions(cluster.status)["Rotating"]
    assert rotating.reason == masterkey.WAITING_FOR_KEYRING
    cluster.sync_mount()  # the kubelet catches up: now it holds v2
    cluster.run(_spec(), mount_follows=False)
    assert cluster.primary == "v2" and cluster.writes == []  # mounted primary is still v1
    assert _conditions(cluster.status)["Rotating"].reason == masterkey.WAITING_FOR_KEYRING
    cluster.sync_mount()
    cluster.run(_spec(), mount_follows=False)
    assert set(cluster.credentials.values()) == {"v2"}


# -- retirement ------------------------------------------------------------------------------------

def test_a_version_a_credential_still_uses_is_never_retired() -> None:
    cluster = KeyCluster(_many(10))
    stuck = "acme-1/cred-004"
    cluster.failing.add(stuck)
    cluster.run(_spec())
    cluster.confirm_backup()
    cluster.run(_spec())
    assert cluster.credentials[stuck] == "v1"
    assert [f.name for f in cluster.status.failures] == [stuck]

    for days in (1, 30, 365):
        cluster.run(_spec(), now=NOW + datetime.timedelta(days=days))
        assert "v1" in cluster.secret
        assert ("retire", "v1") not in cluster.changes
    retiring = _conditions(cluster.status)["Retiring"]
    assert (retiring.status, retiring.reason) == ("True", masterkey.RETIREMENT_PENDING)
    assert f"v1: 1 Credential(s) still use it: {stuck}" in retiring.message
    assert cluster.status.versions_in_use == {"v1": 1, "v2": 9}

    # Re-encrypted by other means (its own reconcile once fixed): now it goes.
    cluster.credentials[stuck] = "v2"
    cluster.run(_spec(), now=NOW + datetime.timedelta(days=366))
    assert "v1" not in cluster.secret


def test_retain_previous_keeps_the_newest_old_versions() -> None:
    cluster = KeyCluster(_many(2), secret={"v1": "a", "v2": "b", "v3": "c"}, primary="v3",
                         mounted=("v3", ("v1", "v2", "v3")))
    cluster.credentials = dict.fromkeys(cluster.credentials, "v3")
    cluster.run(_spec(trigger=None, schedule="@yearly", retainPrevious=1))
    cluster.run(_spec(trigger=None, schedule="@yearly", retainPrevious=1),
                now=NOW + datetime.timedelta(hours=2))
    assert sorted(cluster.secret) == ["v2", "v3"]
    master = cluster.status.master_key
    assert master is not None
    assert master.retiring == {"v2": "kept: one of the 1 newest old version(s) "
                                     "(spec.retainPrevious)"}
    assert _conditions(cluster.status)["Retiring"].status == "False"


def test_nothing_is_retired_while_a_rotation_runs() -> None:
    cluster = KeyCluster(_many(3), secret={"v0": "z", "v1": "a"}, mounted=("v1", ("v0", "v1")))
    cluster.run(_spec(trigger=None, schedule="@yearly"))  # v0: seen demoted now
    cluster.run(_spec(), now=NOW + datetime.timedelta(hours=2))  # trigger: adds v2, waits
    assert "v0" in cluster.secret
    assert cluster.status.master_key is not None
    assert cluster.status.master_key.rotation is not None


# -- crashes and concurrent writers ------------------------------------------------------------

def test_a_crash_before_the_key_is_written_adds_it_once_under_the_chosen_name() -> None:
    cluster = KeyCluster(_many(2))
    first = masterkey.decide(cluster.world(_spec()))
    cluster.store(first)  # status written, then the operator dies before patching the Secret
    assert first.key_change == plan.KeyChange("add", "v2", "1")
    cluster.run(_spec())
    assert cluster.changes == [("add", "v2")]
    assert cluster.status.master_key is not None
    assert cluster.status.master_key.rotation is not None
    assert cluster.status.master_key.rotation.step is rotation.KeyStep.AWAITING_BACKUP


def test_a_crash_after_each_write_resumes_from_status_alone() -> None:
    cluster = KeyCluster(_many(30))
    spec = _spec()
    for _ in range(200):
        decision = masterkey.decide(cluster.world(spec))
        cluster.store(decision)
        if decision.key_change is not None:
            cluster.apply(decision.key_change)
            cluster.sync_mount()
        elif decision.batch is not None:
            cluster.reencrypt(decision.batch)  # and dies: its results are never recorded
        elif rotation.BACKUP_ANNOTATION not in cluster.annotations \
                and cluster.status.master_key and cluster.status.master_key.rotation:
            cluster.confirm_backup()
        else:
            break
    assert cluster.changes == [("add", "v2"), ("promote", "v2")]
    assert set(cluster.credentials.values()) == {"v2"}
    assert len(cluster.writes) == 30  # none twice


def test_a_secret_changed_meanwhile_is_not_overwritten() -> None:
    cluster = KeyCluster(_many(2))
    decision = masterkey.decide(cluster.world(_spec()))
    cluster.store(decision)
    cluster.secret["v9"] = "by-hand"
    cluster.resource_version += 1  # someone else wrote the Secret in between
    assert decision.key_change is not None and not cluster.apply(decision.key_change)
    cluster.run(_spec())
    assert cluster.changes == [("add", "v2")]  # decided anew on the version read


# -- refusals --------------------------------------------------------------------------------------

def test_a_masterkey_policy_outside_tenantrys_namespace_is_refused() -> None:
    cluster = KeyCluster(_many(2))
    decisions = cluster.run(_spec(), namespace="acme-prod")
    ready = _conditions(cluster.status)["Ready"]
    assert (ready.status, ready.reason) == ("False", plan.TARGET_NOT_ALLOWED)
    assert "only by a RotationPolicy in Tenantry's namespace tenantry-system, not in " \
           "acme-prod" in ready.message
    assert cluster.changes == [] and cluster.writes == []
    assert cluster.status.last_handled_trigger is None
    assert _events(decisions) == [plan.TARGET_NOT_ALLOWED]


@pytest.mark.parametrize(("targets", "reason"), [
    (["MasterKey", "Credentials"], masterkey.TARGETS_OVERLAP),
    (["MasterKey", "ApiSigningKeys"], plan.TARGET_NOT_IMPLEMENTED)])
def test_masterkey_is_rotated_by_a_policy_of_its_own(targets: list[str], reason: str) -> None:
    cluster = KeyCluster(_many(2))
    cluster.run(_spec(targets=targets))
    assert _conditions(cluster.status)["Ready"].reason == reason
    assert cluster.changes == []


def test_a_second_masterkey_policy_reports_a_conflict() -> None:
    cluster = KeyCluster(_many(2))
    older = plan.OtherPolicy("first", "2026-10-01T00:00:00Z", frozenset({"MasterKey"}), None)
    cluster.run(_spec(), others=[older])
    ready = _conditions(cluster.status)["Ready"]
    assert (ready.reason, cluster.changes) == (plan.CONFLICT, [])
    assert "RotationPolicy tenantry-system/first (older) already rotates the master key" \
        in ready.message


def test_an_unreadable_keyring_secret_is_reported_and_changes_nothing() -> None:
    cluster = KeyCluster(_many(2), secret_readable=False)
    cluster.run(_spec())
    ready = _conditions(cluster.status)["Ready"]
    assert ready.reason == masterkey.KEYRING_SECRET_UNAVAILABLE
    assert "reading Secret tenantry-system/tenantry-keyring: 403" in ready.message
    assert cluster.changes == []


# -- the Secret, as bytes --------------------------------------------------------------------------

def _secret_of(ring: keyring.Keyring, resource_version: str = "42") -> dict[str, Any]:
    data = {k: base64.b64encode(v.encode()).decode() for k, v in
            keyring.to_secret_data(ring).items()}
    return {"metadata": {"resourceVersion": resource_version}, "data": data}


def test_keyring_facts_are_versions_and_check_values_never_keys() -> None:
    ring = keyring.add_version(keyring.generate("v1"))
    facts = masterkey.keyring_facts(_secret_of(ring))
    assert (facts.resource_version, facts.primary, facts.versions) == ("42", "v1", ("v1", "v2"))
    assert facts.check_values == keyring.check_values(ring)
    shown = repr(facts)
    for version in ring.versions:
        assert keyring.to_secret_data(ring)[version] not in shown
        assert ring.key(version).hex() not in shown
    with pytest.raises(errors.KeyringError, match="no 'primary' key"):
        masterkey.keyring_facts({"data": {"v1": _secret_of(ring)["data"]["v1"]}})


def test_each_keyring_patch_carries_the_resource_version_it_was_decided_on() -> None:
    ring = keyring.generate("v1")
    key = keyring.new_key()
    add = masterkey.keyring_patch(plan.KeyChange("add", "v2", "7"), key)
    assert add["metadata"] == {"resourceVersion": "7"}
    patched = _secret_of(ring)
    patched["data"].update(add["data"])
    assert _ring_of(patched).key("v2") == key
    promote = masterkey.keyring_patch(plan.KeyChange("promote", "v2", "8"))
    patched["data"].update(promote["data"])
    assert _ring_of(patched).primary == "v2"
    retire = masterkey.keyring_patch(plan.KeyChange("retire", "v1", "9"))
    assert retire["data"] == {"v1": None} and retire["metadata"] == {"resourceVersion": "9"}


def _ring_of(secret: dict[str, Any]) -> keyring.Keyring:
    return keyring.from_secret_data({k: base64.b64decode(v).decode()
                                     for k, v in secret["data"].items()})


def test_check_values_identify_a_key_without_revealing_it() -> None:
    ring = keyring.add_version(keyring.generate("v1"))
    values = keyring.check_values(ring)
    assert len(set(values.values())) == 2
    assert all(len(v) == keyring.CHECK_VALUE_HEX and int(v, 16) >= 0 for v in values.values())
    assert keyring.check_value(ring, "v1") == keyring.check_value(
        keyring.from_document(keyring.to_document(ring)), "v1")
