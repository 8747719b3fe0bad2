"""The RotationPolicy planner, step by step: trigger, schedule, batches with a checkpoint, resume
after a crash, failures that block nobody, bad policies; each status round-tripped through its
wire form, as the apiserver stores it."""

from __future__ import annotations

import dataclasses
import datetime
import json
from collections.abc import Callable, Sequence
from typing import Any

import pytest

from tenantry.controller.rotation import plan
from tenantry.model import rotation

UTC = datetime.UTC
NOW = datetime.datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
NAMESPACE = "acme-prod"
CREATED = "2026-11-01T00:00:00Z"


def _spec(**fields: Any) -> rotation.RotationPolicySpec:
    fields.setdefault("targets", ["Credentials"])
    if "schedule" not in fields:
        fields.setdefault("trigger", None)
    return rotation.RotationPolicySpec.model_validate(fields)


@dataclasses.dataclass
class Cluster:
    """Credentials (name -> key version, labels) and a policy's stored status."""

    versions: dict[str, str | None]
    labels: dict[str, dict[str, str]] = dataclasses.field(default_factory=dict)
    status: rotation.RotationPolicyStatus = dataclasses.field(
        default_factory=rotation.RotationPolicyStatus)
    primary: str | None = "v2"
    writes: list[str] = dataclasses.field(default_factory=list)
    failing: set[str] = dataclasses.field(default_factory=set)

    def credentials(self) -> list[plan.CredentialInfo]:
        return [plan.CredentialInfo(name, self.labels.get(name, {}), version)
                for name, version in self.versions.items()]

    def world(self, spec: rotation.RotationPolicySpec, *, now: datetime.datetime = NOW,
              generation: int = 1, namespace: str = NAMESPACE, name: str = "rotate",
              created: str = CREATED, others: Sequence[plan.OtherPolicy] = ()) -> plan.World:
        return plan.World(namespace=namespace, name=name, generation=generation,
                          created=created, spec=spec, status=self.status,
                          credentials=self.credentials(), others=others,
                          primary=self.primary, now=now, operator_namespace="tenantry-system",
                          keyring_problem="keyring file /keys/ring.json: does not exist")

    def reencrypt(self, batch: plan.Batch) -> list[plan.Result]:
        results = []
        for name in batch.names:
            if name in self.failing:
                results.append(plan.Result(name, self.versions[name], "TamperDetected",
                                           "Secret tenantry-credential-x: field 'token' ..."))
                continue
            self.writes.append(name)
            self.versions[name] = batch.to_version
            results.append(plan.Result(name, batch.to_version))
        return results

    def store(self, decision: plan.Decision) -> None:
        """Keep the status as the apiserver would: the stored JSON with the decision's merge
        patch applied (RFC 7386), parsed back."""
        stored = json.loads(json.dumps(self.status.wire()))
        wire = _apply_merge_patch(stored, json.loads(json.dumps(decision.status_patch())))
        self.status = rotation.RotationPolicyStatus.model_validate(wire)
        assert self.status == decision.status


def _apply_merge_patch(target: Any, patch: Any) -> Any:
    if not isinstance(patch, dict):
        return patch
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = _apply_merge_patch(result.get(key), value)
    return result


Step = Callable[[], plan.World]


def run(cluster: Cluster, world: Step, *, crash_in_batch: int | None = None,
        limit: int = 100) -> list[plan.Decision]:
    """Steps as the handler runs them, until one asks for no batch. `crash_in_batch`: the
    operator dies while that batch (1-based) is being written: its writes happen, its results
    are never recorded."""
    decisions: list[plan.Decision] = []
    done: plan.Batch | None = None
    results: Sequence[plan.Result] = ()
    for _ in range(limit):
        decision = plan.decide(world(), done, results)
        cluster.store(decision)
        decisions.append(decision)
        if decision.batch is None:
            return decisions
        results = cluster.reencrypt(decision.batch)
        done = decision.batch
        if crash_in_batch is not None and sum(d.batch is not None for d in decisions) \
                == crash_in_batch:
            # Restart: nothing in memory survives; the next step starts from stored status.
            done, results, crash_in_batch = None, (), None
    raise AssertionError("the planner never settled")


def _conditions(status: rotation.RotationPolicyStatus) -> dict[str, Any]:
    return {c.type: c for c in status.conditions}


def _events(decisions: Sequence[plan.Decision]) -> list[tuple[str, str, str]]:
    return [event for d in decisions for event in d.events]


def _actions(decisions: Sequence[plan.Decision]) -> list[str]:
    return [action for d in decisions for action, _ in d.audit]


def _many(count: int, version: str | None = "v1") -> dict[str, str | None]:
    return {f"cred-{i:03d}": version for i in range(count)}


# -- trigger -------------------------------------------------------------------------------------

def test_a_new_trigger_reencrypts_every_selected_credential_in_batches() -> None:
    cluster = Cluster(_many(60))
    spec = _spec(trigger="2026-12-01T09:00")
    decisions = run(cluster, lambda: cluster.world(spec))

    assert sorted(cluster.writes) == sorted(cluster.versions)  # each exactly once
    assert set(cluster.versions.values()) == {"v2"}
    batches = [d.batch for d in decisions if d.batch is not None]
    assert [len(b.names) for b in batches] == [25, 25, 10]
    status = cluster.status
    assert status.rotation is None
    assert status.progress == rotation.Progress(reencrypted=60, total=60, failed=0, skipped=0)
    assert status.last_handled_trigger == "2026-12-01T09:00"
    assert status.versions_in_use == {"v2": 60}
    assert status.current_versions == {"Credentials": "v2"}
    [record] = status.history
    assert (record.result, record.from_version, record.to_version, record.reencrypted) == (
        "Succeeded", "v1", "v2", 60)
    conditions = _conditions(status)
    assert (conditions["Ready"].status, conditions["Ready"].reason) == ("True", plan.SUCCEEDED)
    assert (conditions["Rotating"].status, conditions["Rotating"].reason) == ("False", plan.IDLE)
    assert conditions["Ready"].observed_generation == 1
    reasons = [reason for _, reason, _ in _events(decisions)]
    assert reasons == ["RotationStarted", "Reencrypted", "Reencrypted", "Reencrypted",
                       "RotationCompleted"]
    assert _actions(decisions) == [plan.STARTED, plan.BATCH, plan.BATCH, plan.BATCH,
                                   plan.COMPLETED]


def test_progress_and_rotating_are_visible_between_batches() -> None:
    cluster = Cluster(_many(30))
    decision = plan.decide(cluster.world(_spec(trigger="one")))
    cluster.store(decision)
    conditions = _conditions(cluster.status)
    assert (conditions["Rotating"].status, conditions["Ready"].reason) == ("True",
                                                                           plan.IN_PROGRESS)
    assert "0/30 re-encrypted under v2" in conditions["Ready"].message
    assert cluster.status.rotation is not None
    assert cluster.status.rotation.checkpoint is None
    assert decision.batch is not None
    second = plan.decide(cluster.world(_spec(trigger="one")), decision.batch,
                         cluster.reencrypt(decision.batch))
    cluster.store(second)
    assert cluster.status.progress is not None
    assert (cluster.status.progress.reencrypted, cluster.status.progress.total) == (25, 30)
    assert cluster.status.rotation is not None
    assert cluster.status.rotation.checkpoint == "cred-024"
    assert "25/30" in _conditions(cluster.status)["Rotating"].message


def test_the_same_trigger_again_does_nothing() -> None:
    cluster = Cluster(_many(3))
    spec = _spec(trigger="once")
    run(cluster, lambda: cluster.world(spec))
    cluster.versions["cred-000"] = "v1"  # even with work to do: the trigger was handled
    writes = list(cluster.writes)

    decisions = run(cluster, lambda: cluster.world(spec, generation=2))
    assert cluster.writes == writes
    assert _events(decisions) == []
    assert _actions(decisions) == []
    assert len(cluster.status.history) == 1


def test_a_credential_already_under_the_target_version_is_not_rewritten() -> None:
    cluster = Cluster({"a": "v1", "b": "v2", "c": "v1", "d": "v2"})
    decisions = run(cluster, lambda: cluster.world(_spec(trigger="t")))
    assert cluster.writes == ["a", "c"]
    assert cluster.status.progress == rotation.Progress(reencrypted=2, total=4, skipped=2)
    started = next(c for a, c in decisions[0].audit if a == plan.STARTED)
    assert started["fromVersions"] == ["v1"]
    assert started["versionsInUse"] == {"v1": 2, "v2": 2}


def test_nothing_to_do_completes_at_once() -> None:
    cluster = Cluster({"a": "v2"})
    decisions = run(cluster, lambda: cluster.world(_spec(trigger="t")))
    assert cluster.writes == []
    assert len(decisions) == 1
    assert cluster.status.history[0].result == "Succeeded"
    assert cluster.status.progress == rotation.Progress(total=1, skipped=1)


# -- resumable and idempotent ----------------------------------------------------------------------

@pytest.mark.parametrize("crash_in_batch", [1, 2, 3])
def test_a_crash_mid_batch_resumes_without_rewriting_anything(crash_in_batch: int) -> None:
    cluster = Cluster(_many(70))
    spec = _spec(trigger="t")
    run(cluster, lambda: cluster.world(spec), crash_in_batch=crash_in_batch)

    assert sorted(cluster.writes) == sorted(cluster.versions)  # none encrypted twice
    assert set(cluster.versions.values()) == {"v2"}
    progress = cluster.status.progress
    assert progress is not None
    # The interrupted batch's Credentials were already current when it was picked again.
    assert (progress.reencrypted + progress.skipped, progress.failed) == (70, 0)
    assert progress.skipped == (25 if crash_in_batch < 3 else 20)
    assert cluster.status.history[0].result == "Succeeded"


def test_status_alone_is_enough_to_resume() -> None:
    cluster = Cluster(_many(40))
    spec = _spec(trigger="t")
    first = plan.decide(cluster.world(spec))
    cluster.store(first)
    assert first.batch is not None
    second = plan.decide(cluster.world(spec), first.batch, cluster.reencrypt(first.batch))
    cluster.store(second)
    # A new operator: no batch in memory, only the stored status.
    resumed = plan.decide(cluster.world(spec))
    assert resumed.batch is not None
    assert resumed.batch.names == tuple(f"cred-{i:03d}" for i in range(25, 40))
    assert [e for e in resumed.events if e[1] == "RotationStarted"] == []


# -- failures --------------------------------------------------------------------------------------

def test_a_failing_credential_is_reported_by_name_and_blocks_nobody() -> None:
    cluster = Cluster(_many(30), failing={"cred-003"})
    decisions = run(cluster, lambda: cluster.world(_spec(trigger="t")))

    assert cluster.versions["cred-003"] == "v1"
    assert sum(v == "v2" for v in cluster.versions.values()) == 29
    status = cluster.status
    assert [(f.name, f.reason) for f in status.failures] == [("cred-003", "TamperDetected")]
    assert status.progress == rotation.Progress(reencrypted=29, total=30, failed=1)
    ready = _conditions(status)["Ready"]
    assert (ready.status, ready.reason) == ("False", plan.CREDENTIALS_FAILED)
    assert "cred-003" in ready.message
    assert status.history[0].result == "Failed"
    warnings = [(r, m) for t, r, m in _events(decisions) if t == "Warning"]
    assert ("CredentialFailed", warnings[0][1]) == warnings[0]
    assert "Credential cred-003 was not re-encrypted under v2: TamperDetected" in warnings[0][1]
    assert warnings[-1][0] == "RotationFailed"
    completed = next(c for d in decisions for a, c in d.audit if a == plan.COMPLETED)
    assert completed["failed"] == ["cred-003"]
    # A later trigger tries it again (and clears the report once it works).
    cluster.failing.clear()
    run(cluster, lambda: cluster.world(_spec(trigger="t2"), generation=2))
    assert cluster.status.failures == []
    assert _conditions(cluster.status)["Ready"].status == "True"


def test_a_credential_deleted_mid_rotation_is_skipped() -> None:
    cluster = Cluster(_many(3))
    first = plan.decide(cluster.world(_spec(trigger="t")))
    cluster.store(first)
    assert first.batch is not None
    results = [plan.Result(n, None, gone=True) if n == "cred-001" else plan.Result(n, "v2")
               for n in first.batch.names]
    del cluster.versions["cred-001"]
    for name in ("cred-000", "cred-002"):
        cluster.versions[name] = "v2"
    cluster.store(plan.decide(cluster.world(_spec(trigger="t")), first.batch, results))
    assert cluster.status.failures == []
    assert cluster.status.progress == rotation.Progress(reencrypted=2, total=3, skipped=1)


# -- schedule -------------------------------------------------------------------------------------

def test_a_schedule_sets_next_rotation_time_and_rotates_when_due() -> None:
    cluster = Cluster(_many(2))
    spec = _spec(schedule="*/30 * * * *")
    run(cluster, lambda: cluster.world(spec, now=NOW + datetime.timedelta(minutes=1)))
    assert cluster.status.next_rotation_time == "2026-12-01T09:30:00Z"
    assert cluster.writes == []
    assert _conditions(cluster.status)["Ready"].reason == plan.IDLE
    assert "next scheduled at 2026-12-01T09:30:00Z" in _conditions(cluster.status)["Ready"].message

    later = NOW + datetime.timedelta(minutes=30, seconds=4)
    decisions = run(cluster, lambda: cluster.world(spec, now=later))
    assert sorted(cluster.writes) == ["cred-000", "cred-001"]
    assert cluster.status.next_rotation_time == "2026-12-01T10:00:00Z"
    assert cluster.status.history[0].result == "Succeeded"
    started = next(c for a, c in decisions[0].audit if a == plan.STARTED)
    assert started["rotation"] == "schedule:2026-12-01T09:30:00Z"
    # Not again until the next slot.
    soon = later + datetime.timedelta(minutes=10)
    decisions = run(cluster, lambda: cluster.world(spec, now=soon))
    assert _actions(decisions) == []


def test_suspend_pauses_the_schedule_but_not_a_trigger() -> None:
    cluster = Cluster(_many(2))
    run(cluster, lambda: cluster.world(_spec(schedule="@hourly")))
    assert cluster.status.next_rotation_time == "2026-12-01T10:00:00Z"
    suspended = _spec(schedule="@hourly", suspend=True)
    run(cluster, lambda: cluster.world(suspended, generation=2,
                                       now=NOW + datetime.timedelta(hours=2)))
    assert cluster.status.next_rotation_time is None
    assert cluster.writes == []
    assert "schedule suspended" in _conditions(cluster.status)["Ready"].message

    with_trigger = _spec(schedule="@hourly", suspend=True, trigger="now")
    run(cluster, lambda: cluster.world(with_trigger, generation=3))
    assert sorted(cluster.writes) == ["cred-000", "cred-001"]


def test_suspend_does_not_stop_a_rotation_in_progress() -> None:
    cluster = Cluster(_many(40))
    first = plan.decide(cluster.world(_spec(trigger="t")))
    cluster.store(first)
    assert first.batch is not None
    done = cluster.reencrypt(first.batch)
    suspended = _spec(trigger="t", schedule="@daily", suspend=True)
    decisions = [plan.decide(cluster.world(suspended, generation=2), first.batch, done)]
    cluster.store(decisions[0])
    decisions += run(cluster, lambda: cluster.world(suspended, generation=2))
    assert set(cluster.versions.values()) == {"v2"}
    assert cluster.status.history[0].result == "Succeeded"


def test_a_schedule_croniter_refuses_is_reported() -> None:
    cluster = Cluster(_many(1))
    decisions = run(cluster, lambda: cluster.world(_spec(schedule="61 * * * *")))
    ready = _conditions(cluster.status)["Ready"]
    assert (ready.status, ready.reason) == ("False", plan.INVALID_SCHEDULE)
    assert "spec.schedule '61 * * * *'" in ready.message
    assert cluster.status.next_rotation_time is None
    assert [r for _, r, _ in _events(decisions)] == [plan.INVALID_SCHEDULE]


# -- bad policies ----------------------------------------------------------------------------------

@pytest.mark.parametrize("target", ["MasterKey", "ApiSigningKeys", "WebhookCertificates"])
def test_a_platform_target_outside_tenantrys_namespace_is_refused(target: str) -> None:
    cluster = Cluster(_many(2))
    decisions = run(cluster, lambda: cluster.world(_spec(targets=["Credentials", target],
                                                         trigger="t")))
    ready = _conditions(cluster.status)["Ready"]
    assert (ready.status, ready.reason) == ("False", plan.TARGET_NOT_ALLOWED)
    assert f"spec.targets names {target}" in ready.message
    assert "only by a RotationPolicy in Tenantry's namespace tenantry-system" in ready.message
    assert "trigger 't' waits until this is fixed" in ready.message
    assert cluster.writes == []
    assert cluster.status.last_handled_trigger is None
    assert [(t, r) for t, r, _ in _events(decisions)] == [("Warning", plan.TARGET_NOT_ALLOWED)]
    # Reported once, not at every step.
    assert _events(run(cluster, lambda: cluster.world(_spec(targets=["Credentials", target],
                                                            trigger="t")))) == []
    # Fixed: the pending trigger is handled.
    run(cluster, lambda: cluster.world(_spec(trigger="t"), generation=2))
    assert sorted(cluster.writes) == ["cred-000", "cred-001"]


@pytest.mark.parametrize("target", ["ApiSigningKeys", "WebhookCertificates"])
def test_platform_targets_in_tenantrys_namespace_are_not_implemented_yet(target: str) -> None:
    cluster = Cluster(_many(1))
    run(cluster, lambda: cluster.world(_spec(targets=[target], trigger="t"),
                                       namespace="tenantry-system"))
    ready = _conditions(cluster.status)["Ready"]
    assert (ready.status, ready.reason) == ("False", plan.TARGET_NOT_IMPLEMENTED)
    assert cluster.writes == []


def test_two_policies_on_the_same_credentials_the_younger_reports_a_conflict() -> None:
    cluster = Cluster({"a": "v1", "b": "v1"}, labels={"a": {"team": "x"}})
    older = plan.OtherPolicy("first", "2026-10-01T00:00:00Z", frozenset({"Credentials"}),
                             {"team": "x"})
    run(cluster, lambda: cluster.world(_spec(trigger="t"), others=[older]))
    ready = _conditions(cluster.status)["Ready"]
    assert (ready.status, ready.reason) == ("False", plan.CONFLICT)
    assert "RotationPolicy acme-prod/first (older) already rotates Credential(s) a" in \
        ready.message
    assert cluster.writes == []

    # The older one, seeing the younger, goes ahead.
    younger = plan.OtherPolicy("rotate", CREATED, frozenset({"Credentials"}), None)
    older_cluster = Cluster({"a": "v1", "b": "v1"}, labels={"a": {"team": "x"}})
    run(older_cluster, lambda: older_cluster.world(
        _spec(trigger="t", credentialSelector={"matchLabels": {"team": "x"}}),
        name="first", created="2026-10-01T00:00:00Z", others=[younger]))
    assert older_cluster.writes == ["a"]

    # Disjoint selections do not conflict.
    run(cluster, lambda: cluster.world(
        _spec(trigger="t", credentialSelector={"matchLabels": {"team": "y"}}),
        others=[older]))
    assert _conditions(cluster.status)["Ready"].reason == plan.NOTHING_SELECTED


def test_a_selector_matching_nothing_is_reported() -> None:
    cluster = Cluster(_many(3))
    run(cluster, lambda: cluster.world(
        _spec(trigger="t", credentialSelector={"matchLabels": {"app": "ghost"}})))
    ready = _conditions(cluster.status)["Ready"]
    assert (ready.status, ready.reason) == ("False", plan.NOTHING_SELECTED)
    assert ready.message.startswith("spec.credentialSelector.matchLabels app=ghost matches "
                                    "none of the 3 Credential(s) in namespace acme-prod")


def test_no_keyring_pauses_a_rotation_which_resumes_when_it_is_back() -> None:
    cluster = Cluster(_many(30))
    spec = _spec(trigger="t")
    first = plan.decide(cluster.world(spec))
    cluster.store(first)
    assert first.batch is not None
    done = cluster.reencrypt(first.batch)
    cluster.primary = None
    paused = plan.decide(cluster.world(spec), first.batch, done)
    cluster.store(paused)
    assert paused.batch is None
    conditions = _conditions(cluster.status)
    assert (conditions["Rotating"].status, conditions["Rotating"].reason) == ("False",
                                                                              plan.PAUSED)
    assert "does not exist" in conditions["Ready"].message
    assert cluster.status.rotation is not None
    assert cluster.status.rotation.checkpoint == "cred-024"  # the batch was still recorded

    cluster.primary = "v2"
    run(cluster, lambda: cluster.world(spec))
    assert sorted(cluster.writes) == sorted(cluster.versions)
    assert cluster.status.history[0].result == "Succeeded"


def test_a_primary_changing_mid_rotation_starts_over_for_the_new_one() -> None:
    cluster = Cluster(_many(30))
    spec = _spec(trigger="t")
    first = plan.decide(cluster.world(spec))
    cluster.store(first)
    assert first.batch is not None
    done = cluster.reencrypt(first.batch)
    cluster.primary = "v3"
    step = plan.decide(cluster.world(spec), first.batch, done)
    cluster.store(step)
    decisions = [step, *run(cluster, lambda: cluster.world(spec))]
    assert set(cluster.versions.values()) == {"v3"}
    assert "TargetVersionChanged" in [r for _, r, _ in _events(decisions)]
    assert cluster.status.history[0].to_version == "v3"


def test_history_is_bounded_and_newest_first() -> None:
    cluster = Cluster(_many(1))
    for number in range(plan.HISTORY_LIMIT + 3):
        cluster.primary = f"v{number + 2}"
        run(cluster, lambda n=number: cluster.world(_spec(trigger=f"t{n}"), generation=n + 1))
    assert len(cluster.status.history) == plan.HISTORY_LIMIT
    assert cluster.status.history[0].to_version == f"v{plan.HISTORY_LIMIT + 4}"


def test_nothing_secret_goes_into_status_events_or_audit() -> None:
    cluster = Cluster(_many(3), failing={"cred-001"})
    decisions = run(cluster, lambda: cluster.world(_spec(trigger="t")))
    # Only names, versions and counts: no key ids (fingerprints), no envelopes, no values.
    for _, changes in (entry for d in decisions for entry in d.audit):
        assert set(changes) <= {"rotation", "cause", "target", "toVersion", "fromVersions",
                                "versionsInUse", "total", "reencrypted", "skipped", "failed",
                                "checkpoint", "progress", "result"}


def test_the_status_patch_is_minimal_and_removes_what_is_gone() -> None:
    assert plan.merge_patch({"a": 1, "m": {"v1": 2, "v2": 3}, "gone": "x"},
                            {"a": 1, "m": {"v2": 5}}) == {"m": {"v1": None, "v2": 5},
                                                          "gone": None}
    cluster = Cluster(_many(2))
    spec = _spec(schedule="@daily")
    run(cluster, lambda: cluster.world(spec))
    # A step that changes nothing writes nothing (the timer runs every few seconds).
    assert plan.decide(cluster.world(spec)).status_patch() == {}
