"""What a RotationPolicy should do next (pure): given its spec and status, the Credentials of its
namespace with their key versions, the other policies there and the keyring's primary version.

One call of `decide` is one step, the way cert-manager splits issuance into small controllers
that meet only in status: validate the policy; fold the results of the batch just done into the
checkpoint; start a rotation if the trigger changed or the schedule is due; pick the next batch;
or complete. Everything a step decides is in the returned status, so an operator killed at any
point and restarted resumes from that status alone:

- Credentials are handled in name order and `status.rotation.checkpoint` is the last name a
  finished batch covered; a batch interrupted midway is simply picked again.
- A Credential already under the target version is skipped, never rewritten: that is what makes
  repeating a batch (or a whole rotation) harmless, and what `progress.skipped` counts.
- A Credential that fails is reported by name (`status.failures`, a Warning Event) and the rest
  go on; the rotation then completes with `Ready=False` reason `CredentialsFailed`.

A trigger is handled once per distinct value (`status.lastHandledTrigger`); a policy that is not
valid (platform target outside Tenantry's namespace, conflict, nothing selected...) rotates
nothing and keeps a new trigger pending until it is fixed. `suspend` stops scheduled rotations
only: a rotation in progress finishes, and a trigger still rotates.
"""

from __future__ import annotations

import dataclasses
import datetime
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

from tenantry.controller import conditions
from tenantry.controller.rotation import schedule
from tenantry.model import common, rotation

BATCH_SIZE = 25
TIMER_INTERVAL = 5.0
"""Seconds between the operator's timer rounds of each RotationPolicy (when a schedule falls
due, a paused or interrupted rotation goes on, a grace period or an overlap is looked at
again): the default of `tenantry operator run --rotation-interval`."""
HISTORY_LIMIT = 10
MAX_FAILURES = 50
MAX_LISTED = 10
PLATFORM_TARGETS = frozenset({rotation.Target.MASTER_KEY, rotation.Target.API_SIGNING_KEYS,
                              rotation.Target.WEBHOOK_CERTIFICATES})

# Ready / Rotating reasons.
IDLE = "Idle"
SUCCEEDED = "RotationSucceeded"
CREDENTIALS_FAILED = "CredentialsFailed"
IN_PROGRESS = "InProgress"
PAUSED = "Paused"
TARGET_NOT_ALLOWED = "TargetNotAllowed"
TARGET_NOT_IMPLEMENTED = "TargetNotImplemented"
INVALID_SCHEDULE = "InvalidSchedule"
CONFLICT = "Conflict"
NOTHING_SELECTED = "NothingSelected"
KEYRING_UNAVAILABLE = "KeyringUnavailable"
INVALID_SPEC = "InvalidSpec"

# Ledger actions.
STARTED = "rotation.started"
BATCH = "rotation.batch"
COMPLETED = "rotation.completed"


@dataclasses.dataclass(frozen=True)
class CredentialInfo:
    """One Credential of the namespace, as the planner needs it (public facts only)."""

    name: str
    labels: Mapping[str, str]
    key_version: str | None
    """The master key version of `status.secretRef.keyId`; None before its first encryption."""


def key_version(key_id: object) -> str | None:
    """`v2` of a key id `v2.0123456789abcdef`."""
    if not isinstance(key_id, str) or "." not in key_id:
        return None
    return key_id.split(".", 1)[0] or None


@dataclasses.dataclass(frozen=True)
class OtherPolicy:
    """Another RotationPolicy of the same namespace, for conflict detection."""

    name: str
    created: str
    targets: frozenset[str]
    match_labels: Mapping[str, str] | None


@dataclasses.dataclass(frozen=True)
class KeyringSecret:
    """The keyring Secret as read (MasterKey target): public facts only, never key bytes."""

    resource_version: str
    primary: str
    versions: tuple[str, ...]
    """Oldest first (natural order: v2 before v10)."""
    check_values: Mapping[str, str]
    """version -> key check value (`keyring.check_value`)."""


@dataclasses.dataclass(frozen=True)
class KeyChange:
    """One write to the keyring Secret, made only if it is still at `resource_version`."""

    action: str
    """"add" (a new random key), "promote" or "retire"."""
    version: str
    resource_version: str


@dataclasses.dataclass(frozen=True)
class World:
    """Everything one step looks at."""

    namespace: str
    name: str
    generation: int | None
    created: str
    spec: rotation.RotationPolicySpec
    status: rotation.RotationPolicyStatus
    credentials: Sequence[CredentialInfo]
    others: Sequence[OtherPolicy]
    primary: str | None
    """The keyring's primary version; None when the keyring is unavailable."""
    now: datetime.datetime
    operator_namespace: str
    keyring_problem: str = ""
    annotations: Mapping[str, str] = dataclasses.field(default_factory=dict)
    keyring_secret: KeyringSecret | None = None
    """MasterKey target: the keyring Secret; None when it cannot be read."""
    keyring_secret_problem: str = ""
    mounted_versions: tuple[str, ...] = ()
    """The versions of the keyring this operator has mounted (and uses)."""


@dataclasses.dataclass(frozen=True)
class Result:
    """What re-encrypting one Credential of a batch came to."""

    name: str
    key_version: str | None
    """The version it is under afterwards (None if unknown)."""
    reason: str | None = None
    """Why it failed (a Credential condition reason), None when it did not."""
    message: str = ""
    gone: bool = False
    """Deleted meanwhile: nothing to re-encrypt, counted as skipped."""


@dataclasses.dataclass(frozen=True)
class Batch:
    """Credentials to re-encrypt now, within a window of the name order."""

    names: tuple[str, ...]
    """Those needing work."""
    window: tuple[str, ...]
    """Every name the batch covers (the others are already under the target version)."""
    to_version: str


@dataclasses.dataclass
class Decision:
    """What the handler writes and posts."""

    status: rotation.RotationPolicyStatus
    events: list[tuple[str, str, str]] = dataclasses.field(default_factory=list)
    audit: list[tuple[str, dict[str, Any]]] = dataclasses.field(default_factory=list)
    batch: Batch | None = None
    key_change: KeyChange | None = None
    """MasterKey target: the keyring Secret write to make before the next step."""
    previous: dict[str, Any] = dataclasses.field(default_factory=dict)
    """The status as it was read (wire form): what the merge patch must turn into `status`."""

    def status_patch(self) -> dict[str, Any]:
        """A JSON merge patch (RFC 7386) from the status read to the one decided: maps are
        merged key by key, so whatever is gone (a version no longer in use, the checkpoint of
        a finished rotation) must be sent as null."""
        return merge_patch(self.previous, self.status.wire())


def merge_patch(old: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, Any]:
    """The smallest RFC 7386 merge patch that turns `old` into `new` (empty: nothing changed,
    so a step that changes nothing writes nothing)."""
    patch: dict[str, Any] = {key: None for key in old if key not in new}
    for key, value in new.items():
        before = old.get(key)
        if isinstance(value, Mapping) and isinstance(before, Mapping):
            if nested := merge_patch(before, value):
                patch[key] = nested
        elif key not in old or before != value:
            patch[key] = value
    return patch


# -- selection and validity ------------------------------------------------------------------

def selects(match_labels: Mapping[str, str] | None, labels: Mapping[str, str]) -> bool:
    return match_labels is None or all(labels.get(k) == v for k, v in match_labels.items())


def selected(world: World) -> list[CredentialInfo]:
    """The Credentials this policy rotates, in name order."""
    wanted = world.spec.credential_selector
    labels = wanted.match_labels if wanted is not None else None
    return sorted((c for c in world.credentials if selects(labels, c.labels)),
                  key=lambda c: c.name)


def listed(names: Sequence[str]) -> str:
    shown = ", ".join(names[:MAX_LISTED])
    return shown + (f" and {len(names) - MAX_LISTED} more" if len(names) > MAX_LISTED else "")


def _selector_text(world: World) -> str:
    wanted = world.spec.credential_selector
    if wanted is None:
        return "every Credential"
    return "spec.credentialSelector.matchLabels " + ", ".join(
        f"{k}={v}" for k, v in sorted(wanted.match_labels.items()))


def problem(world: World, chosen: Sequence[CredentialInfo]) -> tuple[str, str] | None:
    """(reason, message) of what makes the policy unusable, or None."""
    targets = set(world.spec.targets)
    platform = sorted(t.value for t in targets & PLATFORM_TARGETS)
    if platform and world.namespace != world.operator_namespace:
        return TARGET_NOT_ALLOWED, (
            f"spec.targets names {', '.join(platform)}: platform-wide targets may be rotated "
            f"only by a RotationPolicy in Tenantry's namespace {world.operator_namespace}, not "
            f"in {world.namespace}; keep only Credentials here")
    if platform:
        return TARGET_NOT_IMPLEMENTED, (
            f"spec.targets names {', '.join(platform)}: this operator rotates only the "
            "Credentials, MasterKey, ApiSigningKeys and WebhookCertificates targets so far "
            "(MasterKey, ApiSigningKeys and WebhookCertificates each in a policy of its own); "
            "remove the others from spec.targets")
    if world.spec.schedule is not None and (why := schedule.problem(world.spec.schedule)):
        return INVALID_SCHEDULE, why
    if world.primary is None:
        return KEYRING_UNAVAILABLE, (
            f"the operator has no usable keyring, so nothing can be re-encrypted: "
            f"{world.keyring_problem}")
    if rotation.Target.CREDENTIALS in targets:
        mine = {c.name for c in chosen}
        for other in sorted(world.others, key=lambda o: (o.created, o.name)):
            if (other.created, other.name) >= (world.created, world.name):
                continue  # the older policy keeps the target; only the younger reports it
            if rotation.Target.CREDENTIALS.value not in other.targets:
                continue
            theirs = {c.name for c in world.credentials if selects(other.match_labels, c.labels)}
            both = sorted(mine & theirs)
            if both:
                return CONFLICT, (
                    f"RotationPolicy {world.namespace}/{other.name} (older) already rotates "
                    f"Credential(s) {listed(both)}: two policies may not rotate the same "
                    "target; narrow spec.credentialSelector or delete one of them")
        if not chosen:
            return NOTHING_SELECTED, (
                f"{_selector_text(world)} matches none of the {len(world.credentials)} "
                f"Credential(s) in namespace {world.namespace}")
    return None


# -- the step ----------------------------------------------------------------------------------

def platform_namespace_problem(world: World, target: rotation.Target) -> tuple[str, str] | None:
    """A platform target (MasterKey, ApiSigningKeys, WebhookCertificates) named by a policy
    outside Tenantry's own namespace: refused, naming where it may be."""
    if world.namespace == world.operator_namespace:
        return None
    return TARGET_NOT_ALLOWED, (
        f"spec.targets names {target.value}: platform-wide targets may be rotated only by a "
        f"RotationPolicy in Tenantry's namespace {world.operator_namespace}, not in "
        f"{world.namespace}; keep only Credentials here")


def schedule_or_older_policy_problem(world: World, target: rotation.Target,
                                     what: str) -> tuple[str, str] | None:
    """A platform target's schedule that does not parse, or an older policy (by creation time,
    then name) rotating the same `target` (`what` names it in the message): the older wins."""
    if world.spec.schedule is not None and (why := schedule.problem(world.spec.schedule)):
        return INVALID_SCHEDULE, why
    for other in sorted(world.others, key=lambda o: (o.created, o.name)):
        if (other.created, other.name) < (world.created, world.name) \
                and target.value in other.targets:
            return CONFLICT, (
                f"RotationPolicy {world.namespace}/{other.name} (older) already rotates "
                f"{what}: two policies may not rotate the same target; delete one of them")
    return None


def _usage(chosen: Sequence[CredentialInfo]) -> dict[str, int]:
    return dict(sorted(Counter(c.key_version or "none" for c in chosen).items()))


def _ready_reason(status: rotation.RotationPolicyStatus) -> str | None:
    for condition in status.conditions:
        if condition.type == "Ready":
            return condition.reason
    return None


def merged_conditions(world: World, updates: Sequence[dict[str, Any]]) -> list[common.Condition]:
    existing = [c.wire() for c in world.status.conditions]
    merged = conditions.merge(existing, updates, timestamp=common.format_time(world.now))
    return [common.Condition.model_validate(c) for c in merged]


def start(world: World, status: rotation.RotationPolicyStatus, chosen: Sequence[CredentialInfo],
          cause: str, id_: str, decision: Decision, *,
          target: rotation.Target = rotation.Target.CREDENTIALS, action: str = STARTED,
          reason: str = "RotationStarted") -> None:
    """Begin re-encrypting `chosen` under the primary version (checkpoint at the start)."""
    assert world.primary is not None
    from_versions = sorted({c.key_version for c in chosen if c.key_version} - {world.primary})
    status.rotation = rotation.ActiveRotation(
        id=id_[:192], target=target,
        started_time=common.format_time(world.now), to_version=world.primary,
        from_versions=from_versions)
    status.progress = rotation.Progress(total=len(chosen))
    status.failures = []
    decision.events.append(("Normal", reason, (
        f"{cause}: re-encrypting {len(chosen)} Credential(s) under key version "
        f"{world.primary} (now under: {', '.join(from_versions) or world.primary})")))
    decision.audit.append((action, {
        "rotation": status.rotation.id, "cause": cause, "target": target.value,
        "toVersion": world.primary, "fromVersions": from_versions,
        "versionsInUse": _usage(chosen), "total": len(chosen)}))


def _fold(world: World, status: rotation.RotationPolicyStatus, done: Batch,
          results: Sequence[Result], decision: Decision) -> None:
    """Record a finished batch: counts, failures, checkpoint."""
    active, progress = status.rotation, status.progress or rotation.Progress()
    assert active is not None
    by_name = {r.name: r for r in results}
    reencrypted, failed = 0, []
    for name in done.window:
        result = by_name.get(name)
        if name not in done.names or (result is not None and result.gone):
            progress.skipped += 1
        elif result is None or result.reason is not None:
            failed.append(rotation.CredentialFailure(
                name=name, reason=(result.reason if result else None) or "NotReencrypted",
                message=(result.message if result else "no result")[:1024]))
        elif result.key_version != done.to_version:
            failed.append(rotation.CredentialFailure(
                name=name, reason="NotReencrypted", message=(
                    f"still under key version {result.key_version or 'none'}, not "
                    f"{done.to_version}")))
        else:
            reencrypted += 1
    progress.reencrypted += reencrypted
    progress.failed += len(failed)
    status.progress = progress
    status.failures = (list(status.failures) + failed)[:MAX_FAILURES]
    active.checkpoint = done.window[-1] if done.window else active.checkpoint
    progress_text = f"{progress.reencrypted}/{progress.total}"
    if reencrypted:
        decision.events.append(("Normal", "Reencrypted", (
            f"{reencrypted} Credential(s) re-encrypted under key version {done.to_version} "
            f"({progress_text}, {progress.skipped} already current)")))
    for failure in failed:
        decision.events.append(("Warning", "CredentialFailed", (
            f"Credential {failure.name} was not re-encrypted under {done.to_version}: "
            f"{failure.reason}: {failure.message}")))
    decision.audit.append((BATCH, {
        "rotation": active.id, "toVersion": done.to_version,
        "fromVersions": list(active.from_versions), "reencrypted": reencrypted,
        "skipped": len(done.window) - len(done.names) + sum(r.gone for r in results),
        "failed": [f.name for f in failed], "checkpoint": active.checkpoint,
        "progress": progress_text}))


def _next_window(active: rotation.ActiveRotation,
                 chosen: Sequence[CredentialInfo]) -> Batch:
    remaining = [c for c in chosen if active.checkpoint is None or c.name > active.checkpoint]
    window: list[str] = []
    names: list[str] = []
    for credential in remaining:
        if credential.key_version != active.to_version:
            if len(names) == BATCH_SIZE:
                break
            names.append(credential.name)
        window.append(credential.name)
    return Batch(tuple(names), tuple(window), active.to_version)


def _complete(world: World, status: rotation.RotationPolicyStatus, decision: Decision) -> None:
    active, progress = status.rotation, status.progress or rotation.Progress()
    assert active is not None
    result = "Succeeded" if not progress.failed else "Failed"
    summary = (f"{progress.reencrypted}/{progress.total} re-encrypted under key version "
               f"{active.to_version}, {progress.skipped} already current, "
               f"{progress.failed} failed")
    record = rotation.RotationRecord(
        time=common.format_time(world.now), target=active.target,
        from_version=",".join(active.from_versions)[:128] or None, to_version=active.to_version,
        result=result, reencrypted=progress.reencrypted, message=summary)
    status.history = [record, *status.history][:HISTORY_LIMIT]
    status.last_rotation_time = record.time
    status.current_versions = {active.target.value: active.to_version}
    decision.events.append(("Normal" if result == "Succeeded" else "Warning",
                            "RotationCompleted" if result == "Succeeded" else "RotationFailed",
                            f"rotation {active.id}: {summary}"))
    decision.audit.append((COMPLETED, {
        "rotation": active.id, "result": result, "toVersion": active.to_version,
        "fromVersions": list(active.from_versions), "reencrypted": progress.reencrypted,
        "skipped": progress.skipped, "failed": [f.name for f in status.failures],
        "total": progress.total}))
    status.rotation = None


def opening(world: World, chosen: Sequence[CredentialInfo], done: Batch | None,
            results: Sequence[Result]) -> tuple[Decision, bool]:
    """The first part of every step: a copy of status to decide on, the batch just done folded
    in, the schedule moved on. Returns the decision so far and whether a scheduled slot is due."""
    status = world.status.model_copy(deep=True)
    decision = Decision(status, previous=world.status.wire())
    generation = world.generation
    status.observed_generation = generation
    status.versions_in_use = _usage(chosen)

    if done is not None and status.rotation is not None:
        _fold(world, status, done, results, decision)

    # The schedule: the next time after now, recomputed when the spec changed.
    due = False
    next_time = common.parse_time(status.next_rotation_time)
    spec_changed = world.status.observed_generation != generation
    if (world.spec.schedule is None or world.spec.suspend
            or schedule.problem(world.spec.schedule)):
        status.next_rotation_time = None
    else:
        if next_time is not None and next_time <= world.now:
            due = True
        elif next_time is None or spec_changed:
            status.next_rotation_time = common.format_time(
                schedule.next_time(world.spec.schedule, world.now))
    return decision, due


def refuse(world: World, decision: Decision, trouble: tuple[str, str], due: bool) -> Decision:
    """A policy that cannot rotate: Ready=False with the reason, a rotation in progress paused."""
    status, generation = decision.status, world.generation
    reason, message = trouble
    if world.spec.trigger is not None and world.spec.trigger != status.last_handled_trigger:
        message += f"; trigger {world.spec.trigger!r} waits until this is fixed"
    busy = status.rotation is not None or (
        status.master_key is not None and status.master_key.rotation is not None) or (
        status.signing_keys is not None and status.signing_keys.rotation is not None) or (
        status.webhook_certificates is not None
        and status.webhook_certificates.rotation is not None)
    updates = [
        conditions.condition("Ready", "False", reason, message, generation=generation),
        conditions.condition("Rotating", "False", PAUSED if busy else reason,
                             f"paused: {message}" if busy else "no rotation in progress",
                             generation=generation)]
    if reason != _ready_reason(world.status):
        decision.events.append(("Warning", reason, message))
    if due and world.spec.schedule is not None:  # a due slot is not kept for later
        status.next_rotation_time = common.format_time(
            schedule.next_time(world.spec.schedule, world.now))
    status.conditions = merged_conditions(world, updates)
    return decision


def due_start(world: World, decision: Decision, due: bool) -> tuple[str, str] | None:
    """(cause, id) of the rotation to start now (a new trigger, or a due slot), or None; marks
    the trigger handled and moves the schedule on. Only when no rotation is in progress."""
    status = decision.status
    found: tuple[str, str] | None = None
    trigger = world.spec.trigger
    if trigger is not None and trigger != status.last_handled_trigger:
        status.last_handled_trigger = trigger
        found = f"trigger {trigger!r}", f"trigger:{trigger}"
    elif due and world.spec.schedule is not None:
        slot = status.next_rotation_time or common.format_time(world.now)
        found = f"schedule {world.spec.schedule!r} due at {slot}", f"schedule:{slot}"
    if due and world.spec.schedule is not None and found is not None \
            and found[1].startswith("schedule:"):
        status.next_rotation_time = common.format_time(
            schedule.next_time(world.spec.schedule, world.now))
    return found


def skip_due_slot(world: World, decision: Decision, due: bool) -> None:
    """A slot that falls due while a rotation runs is covered by that rotation."""
    if due and world.spec.schedule is not None:
        decision.status.next_rotation_time = common.format_time(
            schedule.next_time(world.spec.schedule, world.now))


def advance(world: World, chosen: Sequence[CredentialInfo], decision: Decision) -> None:
    """The re-encryption in progress: the next batch, or its completion."""
    status = decision.status
    active = status.rotation
    if active is None:
        return
    if active.to_version != world.primary:
        assert world.primary is not None
        # The primary moved on mid-rotation: go round again for the new one.
        decision.events.append(("Normal", "TargetVersionChanged", (
            f"primary key version is now {world.primary} (was {active.to_version}): "
            "re-encrypting from the start")))
        active.to_version, active.checkpoint = world.primary, None
    batch = _next_window(active, chosen)
    if status.progress is not None:
        # Credentials created or deleted meanwhile change the total: handled + remaining.
        handled = status.progress.reencrypted + status.progress.skipped \
            + status.progress.failed
        status.progress.total = handled + sum(
            1 for c in chosen if active.checkpoint is None or c.name > active.checkpoint)
    if batch.names:
        decision.batch = batch
    else:
        if batch.window:
            _fold(world, status, batch, (), decision)
        _complete(world, status, decision)


def rotation_conditions(world: World, status: rotation.RotationPolicyStatus
                        ) -> list[dict[str, Any]]:
    """Ready and Rotating for a policy that is valid: re-encrypting, or idle."""
    generation = world.generation
    updates: list[dict[str, Any]] = []
    progress = status.progress
    if status.rotation is not None and progress is not None:
        updates.append(conditions.condition("Ready", "False", IN_PROGRESS, (
            f"rotating: {progress.reencrypted}/{progress.total} re-encrypted under "
            f"{status.rotation.to_version}"), generation=generation))
        updates.append(conditions.condition("Rotating", "True", IN_PROGRESS, (
            f"rotation {status.rotation.id}: {progress.reencrypted}/{progress.total} "
            f"re-encrypted, {progress.skipped} already current, {progress.failed} failed"),
            generation=generation))
        return updates
    if status.failures:
        names = [f.name for f in status.failures]
        updates.append(conditions.condition("Ready", "False", CREDENTIALS_FAILED, (
            f"the last rotation could not re-encrypt Credential(s) {listed(names)}; see "
            "status.failures and their own conditions, then trigger again"),
            generation=generation))
    else:
        last = status.history[0].message if status.history else "no rotation yet"
        reason = SUCCEEDED if status.history else IDLE
        when = (f"; next scheduled at {status.next_rotation_time}"
                if status.next_rotation_time else
                "; schedule suspended" if world.spec.suspend and world.spec.schedule
                else "")
        updates.append(conditions.condition("Ready", "True", reason, f"{last}{when}",
                                            generation=generation))
    updates.append(conditions.condition("Rotating", "False", IDLE,
                                        "no rotation in progress", generation=generation))
    return updates


def decide(world: World, done: Batch | None = None,
           results: Sequence[Result] = ()) -> Decision:
    """The next step; `done` and `results`: the batch the previous step asked for, finished."""
    chosen = selected(world)
    decision, due = opening(world, chosen, done, results)
    status = decision.status
    trouble = problem(world, chosen)
    if trouble is not None:
        return refuse(world, decision, trouble, due)

    assert world.primary is not None
    if status.rotation is None:
        if (found := due_start(world, decision, due)) is not None:
            start(world, status, chosen, found[0], found[1], decision)
    else:
        skip_due_slot(world, decision, due)
    advance(world, chosen, decision)
    status.conditions = merged_conditions(world, rotation_conditions(world, status))
    return decision
