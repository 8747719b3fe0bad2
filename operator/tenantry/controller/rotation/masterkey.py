"""The MasterKey target (pure): add a keyring version, wait for its backup, promote it, re-encrypt
every Credential under it, retire old versions nothing uses any more.

One call of `decide` is one step, like `plan.decide`, whose pieces it reuses: the re-encryption
is the Credentials target's own batches and checkpoint (`status.rotation`), over every Credential
of the cluster (named `namespace/name`, so the name order is namespace by namespace). The key
steps before it live in `status.masterKey.rotation`:

1. **Adding**: the new version's name is chosen and written to status first, then the handler
   adds a random key under that name to the keyring Secret (resourceVersion precondition). A
   crash in between finds the name in status and the Secret without it, and adds it then.
2. **AwaitingBackup**: the version is in the Secret, not primary. Nothing is encrypted under it
   until someone confirms the keyring is backed up: annotation `tenantry.dev/backup-confirmed`
   set to `<version>:<check value>` (what `tenantry keyring confirm-backup` writes after
   checking a backup against the check values in status). The condition names the command.
3. **Promoting**: once this operator's mounted keyring holds the version, it is made primary in
   the Secret; once the mounted copy says so too, the re-encryption starts.

Retirement runs whenever nothing else does: an old version (not primary, not among the
`spec.retainPrevious` newest old ones) is removed from the Secret only when no Credential's
status names it (`status.versionsInUse` is zero for it) and `spec.gracePeriod` has passed since it
was first seen not primary. Each is reported in `status.masterKey.retiring` until then.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping, Sequence
from typing import Any

from tenantry.controller import conditions
from tenantry.controller.rotation import plan, schedule
from tenantry.crypto import custody, errors, keyring
from tenantry.model import common, rotation

KEYRING_SECRET_UNAVAILABLE = "KeyringSecretUnavailable"  # noqa: S105 - a reason
TARGETS_OVERLAP = "TargetsOverlap"
AWAITING_BACKUP = "AwaitingBackup"
BACKUP_NOT_CONFIRMED = "BackupNotConfirmed"
BACKUP_CONFIRMED = "BackupConfirmed"
NO_NEW_VERSION = "NoNewVersion"
ADDING = "AddingKeyVersion"
PROMOTING = "Promoting"
WAITING_FOR_KEYRING = "WaitingForMountedKeyring"
RETIREMENT_PENDING = "RetirementPending"
NOTHING_TO_RETIRE = "NothingToRetire"

# Ledger actions of the key steps (the re-encryption has plan's rotation.batch/.completed).
KEY_ADDED = "rotation.key-added"
BACKUP_CONFIRMED_ACTION = "rotation.backup-confirmed"
PROMOTED = "rotation.promoted"
REENCRYPT_STARTED = "rotation.reencrypt-started"
RETIRED = "rotation.retired"


def applies(spec: rotation.RotationPolicySpec) -> bool:
    """Whether a policy is a MasterKey policy (decided here rather than by `plan`)."""
    return rotation.Target.MASTER_KEY in spec.targets


def credential_key(namespace: str, name: str) -> str:
    """A Credential's name in a MasterKey rotation: namespace/name (sorts by namespace)."""
    return f"{namespace}/{name}"


def backup_command(namespace: str, name: str) -> str:
    """The exact commands that back the keyring up and confirm it."""
    return (f"kubectl -n {namespace} get secret {custody.KEYRING_SECRET} -o yaml "
            f"> keyring-backup.yaml && tenantry keyring confirm-backup {namespace}/{name} "
            "--backup keyring-backup.yaml")


def confirmation(version: str, check_value: str) -> str:
    """The value of the backup annotation that confirms `version`."""
    return f"{version}:{check_value}"


def keyring_facts(secret: Mapping[str, Any]) -> plan.KeyringSecret:
    """The public facts of the keyring Secret as the API returns it (`data` base64-encoded):
    versions, primary, check values. `KeyringError` if it is not a valid keyring."""
    data = secret.get("data") or {}
    try:
        decoded = {str(k): base64.b64decode(str(v), validate=True).decode("ascii")
                   for k, v in data.items()}
    except (binascii.Error, ValueError):
        raise errors.KeyringError("a value of its data is not base64 text") from None
    ring = keyring.from_secret_data(decoded)
    return plan.KeyringSecret(
        resource_version=str((secret.get("metadata") or {}).get("resourceVersion") or ""),
        primary=ring.primary, versions=ring.versions, check_values=keyring.check_values(ring))


def keyring_patch(change: plan.KeyChange, key: bytes | None = None) -> dict[str, Any]:
    """The JSON merge patch of the keyring Secret for `change` (`key`: the new key bytes for
    "add"), with its resourceVersion precondition: a Secret changed meanwhile is not written."""
    def encoded(text: str) -> str:
        return base64.b64encode(text.encode("ascii")).decode("ascii")

    value: str | None
    if change.action == "add":
        if key is None:
            raise ValueError("adding a version needs its key")
        field, value = change.version, encoded(base64.b64encode(key).decode("ascii"))
    elif change.action == "promote":
        field, value = keyring.PRIMARY_FILE, encoded(change.version)
    elif change.action == "retire":
        field, value = change.version, None
    else:
        raise ValueError(f"unknown keyring change {change.action!r}")
    return {"metadata": {"resourceVersion": change.resource_version}, "data": {field: value}}


def problem(world: plan.World) -> tuple[str, str] | None:
    """(reason, message) of what keeps a MasterKey policy from rotating, or None."""
    others = sorted(t.value for t in world.spec.targets if t is not rotation.Target.MASTER_KEY)
    if outside := plan.platform_namespace_problem(world, rotation.Target.MASTER_KEY):
        return outside
    if rotation.Target.CREDENTIALS.value in others:
        return TARGETS_OVERLAP, (
            "spec.targets names MasterKey and Credentials: a MasterKey rotation re-encrypts "
            "every Credential of every tenant already; list MasterKey alone")
    if others:
        return plan.TARGET_NOT_IMPLEMENTED, (
            f"spec.targets names {', '.join(others)} next to MasterKey: this operator does not "
            "rotate those yet; list MasterKey alone")
    if trouble := plan.schedule_or_older_policy_problem(world, rotation.Target.MASTER_KEY,
                                                        "the master key"):
        return trouble
    if world.keyring_secret is None:
        return KEYRING_SECRET_UNAVAILABLE, (
            f"the keyring Secret cannot be read, so no version can be added, promoted or "
            f"retired: {world.keyring_secret_problem}")
    if world.primary is None:
        return plan.KEYRING_UNAVAILABLE, (
            f"the operator has no usable keyring, so nothing can be re-encrypted: "
            f"{world.keyring_problem}")
    return None


def _chosen(world: plan.World) -> list[plan.CredentialInfo]:
    """Every Credential that holds ciphertext (a key version), in name order."""
    return sorted((c for c in world.credentials if c.key_version), key=lambda c: c.name)


def _usage(secret: plan.KeyringSecret, chosen: Sequence[plan.CredentialInfo]) -> dict[str, int]:
    """Credentials per version: every version of the keyring (0 when unused), and any other
    version a Credential names (one the keyring lost)."""
    usage = dict.fromkeys(secret.versions, 0)
    for credential in chosen:
        assert credential.key_version is not None
        usage[credential.key_version] = usage.get(credential.key_version, 0) + 1
    return dict(sorted(usage.items()))


def _record_keyring(world: plan.World, secret: plan.KeyringSecret,
                    master: rotation.MasterKeyStatus, usage: Mapping[str, int],
                    decision: plan.Decision) -> None:
    """Versions, check values and demotion times as the Secret shows them now; versions gone
    since the last step are reported (retired by this policy, or removed by hand)."""
    now = common.format_time(world.now)
    for gone in [v for v in master.versions if v not in secret.versions]:
        in_use = usage.get(gone, 0)
        decision.events.append(("Warning" if in_use else "Normal", "KeyVersionRetired", (
            f"key version {gone} is no longer in the keyring"
            + (f"; {in_use} Credential(s) still name it and can no longer be opened"
               if in_use else ""))))
        decision.audit.append((RETIRED, {"version": gone, "primary": secret.primary,
                                         "versions": list(secret.versions),
                                         "credentialsUsingIt": in_use}))
        decision.status.history = [rotation.RotationRecord(
            time=now, target=rotation.Target.MASTER_KEY, from_version=gone,
            result="Retired", message=f"key version {gone} removed from the keyring"),
            *decision.status.history][:plan.HISTORY_LIMIT]
    master.primary = secret.primary
    master.versions = list(secret.versions)
    master.check_values = dict(secret.check_values)
    master.demoted = {v: master.demoted.get(v, now) for v in secret.versions
                      if v != secret.primary}


def _key_steps(world: plan.World, secret: plan.KeyringSecret, master: rotation.MasterKeyStatus,
               chosen: Sequence[plan.CredentialInfo], decision: plan.Decision
               ) -> tuple[str, str, str] | None:
    """Carry the key steps on; (Rotating reason, message, AwaitingBackup status) while they
    run, None once the re-encryption has started (or none runs)."""
    key = master.rotation
    if key is None:
        return None
    status = decision.status
    new = key.new_version
    if key.step is rotation.KeyStep.ADDING:
        if new not in secret.versions:
            decision.key_change = plan.KeyChange("add", new, secret.resource_version)
            return ADDING, f"adding key version {new} to the keyring Secret", "False"
        key.step, key.check_value = rotation.KeyStep.AWAITING_BACKUP, secret.check_values[new]
        decision.events.append(("Normal", "KeyVersionAdded", (
            f"key version {new} (check value {key.check_value}) added to the keyring; it is "
            "promoted once the keyring's backup is confirmed")))
        decision.audit.append((KEY_ADDED, {"rotation": key.id, "version": new,
                                           "checkValue": key.check_value,
                                           "versions": list(secret.versions)}))
    if key.step is rotation.KeyStep.AWAITING_BACKUP:
        if new not in secret.versions:
            # Removed by hand before it was used: add a new one under the same name.
            key.step, key.check_value = rotation.KeyStep.ADDING, None
            decision.events.append(("Warning", "KeyVersionLost", (
                f"key version {new} left the keyring before its backup was confirmed; adding "
                "a new key under that name (confirm its backup again)")))
            decision.key_change = plan.KeyChange("add", new, secret.resource_version)
            return ADDING, f"adding key version {new} to the keyring Secret again", "False"
        key.check_value = secret.check_values[new]
        wanted = confirmation(new, key.check_value)
        given = world.annotations.get(rotation.BACKUP_ANNOTATION)
        if given != wanted:
            command = backup_command(world.namespace, world.name)
            seen = (f"; annotation {rotation.BACKUP_ANNOTATION} is {given!r}, which confirms "
                    "another key" if given else "")
            return AWAITING_BACKUP, (
                f"key version {new} (check value {key.check_value}) is in Secret "
                f"{world.operator_namespace}/{custody.KEYRING_SECRET} but is not promoted "
                f"until the keyring is backed up: run `{command}` "
                f"and keep keyring-backup.yaml offline, as safe as the keys it holds{seen}"), \
                "True"
        key.step = rotation.KeyStep.PROMOTING
        decision.events.append(("Normal", BACKUP_CONFIRMED, (
            f"backup of key version {new} (check value {key.check_value}) confirmed")))
        decision.audit.append((BACKUP_CONFIRMED_ACTION, {"rotation": key.id, "version": new,
                                                         "checkValue": key.check_value}))
    # PROMOTING: every step below is safe to repeat.
    if new not in world.mounted_versions:
        return WAITING_FOR_KEYRING, (
            f"waiting for the operator's mounted keyring to hold key version {new} (the "
            "kubelet refreshes mounted Secrets within a minute or so) before promoting it"), \
            "False"
    if secret.primary != new:
        decision.key_change = plan.KeyChange("promote", new, secret.resource_version)
        return PROMOTING, f"making key version {new} primary in the keyring Secret", "False"
    if world.primary != new:
        return WAITING_FOR_KEYRING, (
            f"key version {new} is primary in the keyring Secret; waiting for the operator's "
            "mounted keyring to say so before re-encrypting"), "False"
    decision.events.append(("Normal", "KeyVersionPromoted", (
        f"key version {new} is primary (was {key.from_version}); every new ciphertext is "
        "encrypted under it")))
    decision.audit.append((PROMOTED, {"rotation": key.id, "fromVersion": key.from_version,
                                      "toVersion": new}))
    master.rotation = None
    plan.start(world, status, chosen, f"key version {new} promoted", key.id, decision,
               target=rotation.Target.MASTER_KEY, action=REENCRYPT_STARTED,
               reason="ReencryptionStarted")
    return None


def _begin(world: plan.World, secret: plan.KeyringSecret, master: rotation.MasterKeyStatus,
           cause: str, id_: str, decision: plan.Decision) -> None:
    new = keyring.version_after(secret.versions)
    master.rotation = rotation.KeyRotation(
        id=id_[:192], step=rotation.KeyStep.ADDING,
        started_time=common.format_time(world.now), from_version=secret.primary,
        new_version=new)
    decision.status.progress = None
    decision.status.failures = []
    decision.events.append(("Normal", "RotationStarted", (
        f"{cause}: adding master key version {new} (primary now: {secret.primary})")))
    decision.audit.append((plan.STARTED, {"rotation": master.rotation.id, "cause": cause,
                                          "target": rotation.Target.MASTER_KEY.value,
                                          "fromVersion": secret.primary, "newVersion": new,
                                          "versions": list(secret.versions)}))


def retirement(world: plan.World, secret: plan.KeyringSecret, master: rotation.MasterKeyStatus,
               chosen: Sequence[plan.CredentialInfo], usage: Mapping[str, int]
               ) -> tuple[str | None, dict[str, str]]:
    """(the version to retire now or None, old version -> why it is not retired yet). Pure.

    A version is retired only when it is not primary (in the Secret or the mounted copy), not
    among the `retainPrevious` newest old versions, no Credential names it, and the grace
    period has passed since it was first seen not primary."""
    grace = schedule.parse_duration(world.spec.grace_period)
    old = [v for v in secret.versions if v not in (secret.primary, world.primary)]
    kept = set(old[len(old) - world.spec.retain_previous:]) if world.spec.retain_previous else set()
    waiting: dict[str, str] = {}
    ready: str | None = None
    for version in old:
        users = [c.name for c in chosen if c.key_version == version]
        since = common.parse_time(master.demoted.get(version)) or world.now
        if version in kept:
            waiting[version] = (f"kept: one of the {world.spec.retain_previous} newest old "
                                "version(s) (spec.retainPrevious)")
        elif usage.get(version, 0) or users:
            waiting[version] = (f"{len(users)} Credential(s) still use it: "
                                f"{plan.listed(users)}"[:256])
        elif since + grace > world.now:
            waiting[version] = (f"unused; grace period (spec.gracePeriod {world.spec.grace_period}"
                                f") ends at {common.format_time(since + grace)}")
        elif ready is None:
            ready = version
            waiting[version] = "unused and past its grace period: retired once no rotation runs"
        else:
            waiting[version] = "unused and past its grace period: retired after the others"
    return ready, waiting


def decide(world: plan.World, done: plan.Batch | None = None,
           results: Sequence[plan.Result] = ()) -> plan.Decision:
    """The next step of a MasterKey policy; `done`/`results` as for `plan.decide`."""
    chosen = _chosen(world)
    decision, due = plan.opening(world, chosen, done, results)
    status = decision.status
    trouble = problem(world)
    if trouble is not None:
        return plan.refuse(world, decision, trouble, due)
    secret = world.keyring_secret
    assert secret is not None and world.primary is not None
    generation = world.generation
    usage = _usage(secret, chosen)
    status.versions_in_use = usage
    master = status.master_key = (status.master_key or rotation.MasterKeyStatus()).model_copy(
        deep=True)
    _record_keyring(world, secret, master, usage, decision)

    if master.rotation is None and status.rotation is None:
        if (found := plan.due_start(world, decision, due)) is not None:
            _begin(world, secret, master, found[0], found[1], decision)
    else:
        plan.skip_due_slot(world, decision, due)

    updates: list[dict[str, Any]] = []
    waiting = _key_steps(world, secret, master, chosen, decision)
    if waiting is not None:
        reason, message, awaiting = waiting
        assert master.rotation is not None
        updates += [
            conditions.condition("Ready", "False", AWAITING_BACKUP if awaiting == "True"
                                 else plan.IN_PROGRESS, message, generation=generation),
            conditions.condition("Rotating", "True", reason, (
                f"rotation {master.rotation.id}: {message}"), generation=generation),
            conditions.condition("AwaitingBackup", "True" if awaiting == "True" else "False",
                                 BACKUP_NOT_CONFIRMED if awaiting == "True" else reason,
                                 message if awaiting == "True" else (
                                     f"backup of key version {master.rotation.new_version} "
                                     "confirmed" if master.rotation.step
                                     is rotation.KeyStep.PROMOTING else "not yet: " + message),
                                 generation=generation)]
    else:
        plan.advance(world, chosen, decision)
        updates += plan.rotation_conditions(world, status)
        last = next((r for r in status.history if r.target is rotation.Target.MASTER_KEY
                     and r.to_version), None)
        updates.append(conditions.condition(
            "AwaitingBackup", "False", BACKUP_CONFIRMED if last else NO_NEW_VERSION,
            f"key version {last.to_version} was backed up before it was promoted" if last
            else "no new key version waits for a backup", generation=generation))

    idle = master.rotation is None and status.rotation is None
    ready, master.retiring = retirement(world, secret, master, chosen, usage)
    if ready is not None and idle and decision.key_change is None:
        decision.key_change = plan.KeyChange("retire", ready, secret.resource_version)
    pending = {v: why for v, why in master.retiring.items() if not why.startswith("kept:")}
    if pending:
        updates.append(conditions.condition("Retiring", "True", RETIREMENT_PENDING, "; ".join(
            f"{v}: {why}" for v, why in pending.items()), generation=generation))
    else:
        kept = ", ".join(master.retiring) or "none"
        updates.append(conditions.condition("Retiring", "False", NOTHING_TO_RETIRE, (
            f"no old key version to retire (old versions kept by spec.retainPrevious: "
            f"{kept})"), generation=generation))
    status.conditions = plan.merged_conditions(world, updates)
    return decision
