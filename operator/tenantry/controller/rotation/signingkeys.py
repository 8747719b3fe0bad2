"""The ApiSigningKeys target (pure): publish a new access-token signing key, let it sign once every
API replica can verify it, drop the old one when no token it signed can still be valid.

A client's next request may land on any replica, so a key that signs before every replica has
it makes tokens some replicas refuse; a key dropped while its tokens live logs their holders
out. The keyring is Secret `tenantry-api-signing-keys` (`rfc7517.SigningKeyring`: one PEM per
version and `signing`, the version that signs), mounted into every API replica, which re-reads
it and reports what it holds in its identity Lease (`api.signing`). The operator never sees a
key: the API publishes the keyring's public facts (`SigningSecret`: versions, kids, the signing
version, the Secret's resourceVersion) and applies the change a step asks for
(`SigningChange`, sent as a request by `apisigning.ask`, see `api.signingstate`). One call of
`decide` is one step, like `masterkey.decide`; status (`status.signingKeys`) is the
checkpoint:

1. **Publishing**: the new version's name is written to status first, then the API is asked to
   add a random Ed25519 key under it to the Secret (it generates the key; resourceVersion
   precondition). It verifies and is in every replica's JWKS once mounted, but signs nothing.
2. **Promoting**: when every fresh identity Lease lists the new kid, the Secret's `signing`
   names the new version. Stale Leases (past their duration: a replica gone) do not count; no
   fresh Lease at all is a wait, not a yes. Once every fresh Lease signs with the new kid, the
   old version's overlap starts (`status.signingKeys.demoted`) and the rotation is complete.

Retirement runs whenever no rotation does: a version that does not sign is removed from the
Secret once `spec.signingKeyOverlap` (default 61m: the longest token the API signs, 1 h, plus
60 s of skew) has passed since it was demoted and no fresh replica signs with it. Each is
reported in `status.signingKeys.retiring` until then. Kids are public; keys never leave the
Secret (not in status, Events, the ledger or logs) and never reach the operator.
"""

from __future__ import annotations

import dataclasses
import datetime
from collections.abc import Mapping, Sequence
from typing import Any

from tenantry.controller import conditions
from tenantry.controller.rotation import plan, schedule
from tenantry.crypto import keyring
from tenantry.model import common, rotation

SECRET = "tenantry-api-signing-keys"  # noqa: S105 - a name (rfc7517.SIGNING_KEYRING_SECRET)
SECRET_UNAVAILABLE = "SigningKeysSecretUnavailable"  # noqa: S105 - a reason
TARGETS_OVERLAP = "TargetsOverlap"
PUBLISHING = "PublishingSigningKey"
NO_REPLICAS = "NoApiReplicas"
WAITING_FOR_REPLICAS = "WaitingForReplicas"
PROMOTING = "PromotingSigningKey"
WAITING_TO_SIGN = "WaitingForReplicasToSign"
RETIREMENT_PENDING = "RetirementPending"
NOTHING_TO_RETIRE = "NothingToRetire"
# Below this, tokens signed by the old key are refused before they expire: the longest-lived
# token the signing key signs (a participant token, 1 h; access tokens live 15 min) plus skew.
LONGEST_TOKEN_LIFETIME_PLUS_SKEW = datetime.timedelta(hours=1, seconds=60)

# Ledger actions (the rotation's start and end are plan's rotation.started/.completed).
KEY_PUBLISHED = "rotation.signing-key-published"
PROMOTED = "rotation.signing-key-promoted"
RETIRED = "rotation.signing-key-retired"


@dataclasses.dataclass(frozen=True)
class SigningSecret:
    """Secret tenantry-api-signing-keys as the API last published it (ConfigMap
    tenantry-api-signing-state): public facts only (versions, kids)."""

    resource_version: str
    signing: str
    kids: Mapping[str, str]
    """version -> kid, oldest version first."""
    retired: Mapping[str, str] = dataclasses.field(default_factory=dict)
    """version -> when the API removed it (its answer to the retire request), if it says."""


@dataclasses.dataclass(frozen=True)
class Replica:
    """One API replica's identity Lease."""

    name: str
    verification: frozenset[str]
    """The kids it verifies with (and publishes in JWKS)."""
    signing: str
    renewed: datetime.datetime | None
    duration: datetime.timedelta

    def fresh(self, now: datetime.datetime) -> bool:
        return self.renewed is not None and self.renewed + self.duration > now


@dataclasses.dataclass(frozen=True)
class SigningChange:
    """One change of the Secret the API is asked for, made only if the Secret is still at
    `resource_version` (else the API answers Stale and the next step asks again)."""

    action: str
    """"add" (a new random key, not signing), "promote" (make it sign) or "retire"."""
    version: str
    resource_version: str


@dataclasses.dataclass(frozen=True)
class SigningWorld:
    """What one step looks at: the policy's world, the Secret and the replicas' Leases."""

    base: plan.World
    secret: SigningSecret | None
    secret_problem: str
    replicas: Sequence[Replica]


def applies(spec: rotation.RotationPolicySpec) -> bool:
    """Whether a policy is an ApiSigningKeys policy (and not a MasterKey one, which refuses
    other targets itself)."""
    return rotation.Target.API_SIGNING_KEYS in spec.targets \
        and rotation.Target.MASTER_KEY not in spec.targets


def problem(world: SigningWorld) -> tuple[str, str] | None:
    """(reason, message) of what keeps an ApiSigningKeys policy from rotating, or None."""
    base = world.base
    others = sorted(t.value for t in base.spec.targets
                    if t is not rotation.Target.API_SIGNING_KEYS)
    if outside := plan.platform_namespace_problem(base, rotation.Target.API_SIGNING_KEYS):
        return outside
    if others:
        return TARGETS_OVERLAP, (
            f"spec.targets names {', '.join(others)} next to ApiSigningKeys: the API's signing "
            "keys rotate in a policy of their own; list ApiSigningKeys alone")
    if trouble := plan.schedule_or_older_policy_problem(
            base, rotation.Target.API_SIGNING_KEYS, "the API signing keys"):
        return trouble
    if world.secret is None:
        return SECRET_UNAVAILABLE, (
            f"the API's signing keyring facts cannot be read, so no key can be added, promoted "
            f"or removed: {world.secret_problem}")
    return None


def _fresh(world: SigningWorld) -> list[Replica]:
    return sorted((r for r in world.replicas if r.fresh(world.base.now)), key=lambda r: r.name)


def _record(world: SigningWorld, secret: SigningSecret, keys: rotation.SigningKeysStatus,
            fresh: Sequence[Replica], decision: plan.Decision) -> None:
    """Versions and kids as the Secret shows them now; versions gone since the last step are
    reported (retired by this policy, or removed by hand)."""
    now = common.format_time(world.base.now)
    for gone in [v for v in keys.kids if v not in secret.kids]:
        kid = keys.kids[gone]
        # When the key really left the Secret (the API applied the request a timer round or
        # so before this step sees it), else now.
        removed = secret.retired.get(gone) or now
        decision.events.append(("Normal", "SigningKeyRetired", (
            f"signing key version {gone} (kid {kid}) removed: it is no longer in JWKS and "
            "tokens it signed are refused")))
        decision.audit.append((RETIRED, {"version": gone, "kid": kid,
                                         "signing": secret.signing,
                                         "versions": list(secret.kids)}))
        decision.status.history = [rotation.RotationRecord(
            time=removed, target=rotation.Target.API_SIGNING_KEYS, from_version=gone,
            result="Retired", message=f"signing key version {gone} (kid {kid}) removed"),
            *decision.status.history][:plan.HISTORY_LIMIT]
    keys.signing = secret.signing
    keys.kids = dict(secret.kids)
    keys.replicas = len(fresh)
    keys.demoted = {v: t for v, t in keys.demoted.items()
                    if v in secret.kids and v != secret.signing}
    if keys.rotation is None:
        # A version that does not sign and has no demotion time (added or demoted by hand, or
        # status lost): its overlap starts now, the safe side.
        for version in secret.kids:
            if version != secret.signing:
                keys.demoted.setdefault(version, now)


def _begin(world: SigningWorld, secret: SigningSecret, keys: rotation.SigningKeysStatus,
           cause: str, id_: str, decision: plan.Decision) -> None:
    new = keyring.version_after(tuple(secret.kids))
    keys.rotation = rotation.SigningRotation(
        id=id_[:192], step=rotation.SigningStep.PUBLISHING,
        started_time=common.format_time(world.base.now), from_version=secret.signing,
        new_version=new)
    decision.events.append(("Normal", "RotationStarted", (
        f"{cause}: publishing signing key version {new} (signing now: {secret.signing}, kid "
        f"{secret.kids[secret.signing]})")))
    decision.audit.append((plan.STARTED, {
        "rotation": keys.rotation.id, "cause": cause,
        "target": rotation.Target.API_SIGNING_KEYS.value, "fromVersion": secret.signing,
        "fromKid": secret.kids[secret.signing], "newVersion": new,
        "versions": list(secret.kids)}))


def _names(replicas: Sequence[Replica]) -> str:
    return plan.listed([r.name for r in replicas])


def _steps(world: SigningWorld, secret: SigningSecret, keys: rotation.SigningKeysStatus,
           fresh: Sequence[Replica], decision: plan.Decision
           ) -> tuple[tuple[str, str] | None, SigningChange | None]:
    """Carry the rotation on: ((Rotating reason, message) while it runs, or None), and the
    Secret write the step asks for."""
    active = keys.rotation
    if active is None:
        return None, None
    new = active.new_version
    if active.step is rotation.SigningStep.PUBLISHING:
        if new not in secret.kids:
            return (PUBLISHING, f"adding signing key version {new} to Secret {SECRET} "
                                "(published in JWKS, not signing)"), \
                SigningChange("add", new, secret.resource_version)
        active.step, active.new_kid = rotation.SigningStep.PROMOTING, secret.kids[new]
        decision.events.append(("Normal", "SigningKeyPublished", (
            f"signing key version {new} (kid {active.new_kid}) added; it signs once every API "
            "replica publishes it")))
        decision.audit.append((KEY_PUBLISHED, {"rotation": active.id, "version": new,
                                               "kid": active.new_kid,
                                               "versions": list(secret.kids)}))
    if new not in secret.kids:
        # Removed by hand before it signed: publish a new one under the same name.
        active.step, active.new_kid = rotation.SigningStep.PUBLISHING, None
        decision.events.append(("Warning", "SigningKeyLost", (
            f"signing key version {new} left Secret {SECRET} before it signed; adding a new "
            "key under that name")))
        return (PUBLISHING, f"adding signing key version {new} to Secret {SECRET} again"), \
            SigningChange("add", new, secret.resource_version)
    kid = active.new_kid = secret.kids[new]
    if not fresh:
        return (NO_REPLICAS, (
            f"signing key version {new} (kid {kid}) is published but signs nothing until every "
            f"API replica has it, and no API replica reports in (no fresh Lease labelled "
            f"tenantry.dev/api-identity in {world.base.operator_namespace}; "
            f"{len(world.replicas)} stale)")), None
    lacking = [r for r in fresh if kid not in r.verification]
    if lacking:
        return (WAITING_FOR_REPLICAS, (
            f"signing key version {new} (kid {kid}) is published; waiting for API replica(s) "
            f"{_names(lacking)} to load it ({len(fresh) - len(lacking)}/{len(fresh)} have it) "
            "before it signs (the kubelet refreshes mounted Secrets within a minute or so)")), \
            None
    if secret.signing != new:
        return (PROMOTING, f"every API replica ({len(fresh)}) has kid {kid}: making signing "
                           f"key version {new} sign"), \
            SigningChange("promote", new, secret.resource_version)
    behind = [r for r in fresh if r.signing != kid]
    if behind:
        return (WAITING_TO_SIGN, (
            f"signing key version {new} (kid {kid}) signs in Secret {SECRET}; waiting for API "
            f"replica(s) {_names(behind)} to sign with it; the old key's overlap starts then")), \
            None
    now = common.format_time(world.base.now)
    for version in secret.kids:
        if version != new:
            keys.demoted.setdefault(version, now)
    old_kid = keys.kids.get(active.from_version)
    decision.events.append(("Normal", "SigningKeyPromoted", (
        f"every API replica ({len(fresh)}) signs with signing key version {new} (kid {kid}); "
        f"version {active.from_version} verifies for spec.signingKeyOverlap "
        f"{world.base.spec.signing_key_overlap}, then is removed")))
    decision.audit.append((PROMOTED, {"rotation": active.id, "fromVersion": active.from_version,
                                      "fromKid": old_kid, "toVersion": new, "toKid": kid,
                                      "replicas": [r.name for r in fresh]}))
    decision.audit.append((plan.COMPLETED, {
        "rotation": active.id, "result": "Succeeded",
        "target": rotation.Target.API_SIGNING_KEYS.value, "fromVersion": active.from_version,
        "toVersion": new, "toKid": kid}))
    status = decision.status
    record = rotation.RotationRecord(
        time=now, target=rotation.Target.API_SIGNING_KEYS, from_version=active.from_version,
        to_version=new, result="Succeeded",
        message=f"signing key version {new} (kid {kid}) signs on {len(fresh)} replica(s)")
    status.history = [record, *status.history][:plan.HISTORY_LIMIT]
    status.last_rotation_time = now
    status.current_versions = {**status.current_versions,
                               rotation.Target.API_SIGNING_KEYS.value: new}
    decision.events.append(("Normal", "RotationCompleted", f"rotation {active.id}: "
                                                           f"{record.message}"))
    keys.rotation = None
    return None, None


def retirement(world: SigningWorld, secret: SigningSecret, keys: rotation.SigningKeysStatus,
               fresh: Sequence[Replica]) -> tuple[str | None, dict[str, str]]:
    """(the version to remove now or None, old version -> why it is not removed yet). Pure.

    A version is removed only when it does not sign (in the Secret, nor on any fresh replica)
    and `spec.signingKeyOverlap` has passed since it was demoted."""
    now = world.base.now
    overlap = schedule.parse_duration(world.base.spec.signing_key_overlap)
    waiting: dict[str, str] = {}
    ready: str | None = None
    new = keys.rotation.new_version if keys.rotation is not None else None
    for version, kid in secret.kids.items():
        if version in (secret.signing, new):
            continue
        since = common.parse_time(keys.demoted.get(version)) or now
        signers = [r for r in fresh if r.signing == kid]
        if signers or (keys.rotation is not None and version == keys.rotation.from_version):
            waiting[version] = ("still signing on replica(s) " + _names(signers) if signers
                                else "signs until the rotation in progress completes")[:256]
        elif since + overlap > now:
            waiting[version] = (f"verifies until {common.format_time(since + overlap)} "
                                f"(spec.signingKeyOverlap {world.base.spec.signing_key_overlap}"
                                " after every replica signed with another key)")
        elif ready is None:
            ready = version
            waiting[version] = "past its overlap: removed now"
        else:
            waiting[version] = "past its overlap: removed after the others"
    return ready, waiting


def decide(world: SigningWorld) -> tuple[plan.Decision, SigningChange | None]:
    """The next step of an ApiSigningKeys policy, and the Secret change it asks the API for."""
    base = world.base
    decision, due = plan.opening(base, (), None, ())
    status = decision.status
    status.versions_in_use = {}
    trouble = problem(world)
    if trouble is not None:
        return plan.refuse(base, decision, trouble, due), None
    secret = world.secret
    assert secret is not None
    generation = base.generation
    fresh = _fresh(world)
    keys = status.signing_keys = (status.signing_keys or rotation.SigningKeysStatus()
                                  ).model_copy(deep=True)
    _record(world, secret, keys, fresh, decision)
    status.current_versions = {**status.current_versions,
                               rotation.Target.API_SIGNING_KEYS.value: secret.signing}

    if keys.rotation is None:
        if (found := plan.due_start(base, decision, due)) is not None:
            _begin(world, secret, keys, found[0], found[1], decision)
    else:
        plan.skip_due_slot(base, decision, due)

    updates: list[dict[str, Any]] = []
    waiting, change = _steps(world, secret, keys, fresh, decision)
    if waiting is not None:
        reason, message = waiting
        assert keys.rotation is not None
        updates += [
            conditions.condition("Ready", "False", plan.IN_PROGRESS, message,
                                 generation=generation),
            conditions.condition("Rotating", "True", reason,
                                 f"rotation {keys.rotation.id}: {message}",
                                 generation=generation)]
    else:
        last = status.history[0].message if status.history else "no rotation yet"
        when = (f"; next scheduled at {status.next_rotation_time}"
                if status.next_rotation_time else "")
        updates += [
            conditions.condition("Ready", "True", plan.SUCCEEDED if status.history
                                 else plan.IDLE,
                                 f"signing with version {secret.signing} (kid "
                                 f"{secret.kids[secret.signing]}) on {len(fresh)} replica(s); "
                                 f"{last}{when}", generation=generation),
            conditions.condition("Rotating", "False", plan.IDLE, "no rotation in progress",
                                 generation=generation)]

    ready, keys.retiring = retirement(world, secret, keys, fresh)
    if ready is not None and change is None and keys.rotation is None:
        change = SigningChange("retire", ready, secret.resource_version)
    if keys.retiring:
        short = ""
        if schedule.parse_duration(base.spec.signing_key_overlap) \
                < LONGEST_TOKEN_LIFETIME_PLUS_SKEW:
            short = (f" (spec.signingKeyOverlap {base.spec.signing_key_overlap} is shorter "
                     "than the longest token lifetime plus skew, 61m: participant tokens "
                     "(1h), and under 16m access tokens too, that an old key signed are "
                     "refused before they expire)")
        updates.append(conditions.condition("Retiring", "True", RETIREMENT_PENDING, "; ".join(
            f"{v}: {why}" for v, why in keys.retiring.items()) + short,
            generation=generation))
    else:
        updates.append(conditions.condition("Retiring", "False", NOTHING_TO_RETIRE,
                                            "no old signing key to remove",
                                            generation=generation))
    status.conditions = plan.merged_conditions(base, updates)
    return decision, change
