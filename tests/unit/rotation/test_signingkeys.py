"""The ApiSigningKeys planner, step by step against a simulated signing keyring Secret and the
API replicas' identity Leases (each replica loads the Secret when its mount catches up): publish,
wait for every fresh replica, promote, wait until they all sign with it, retire after the
overlap; crashes between steps; every refusal."""

from __future__ import annotations

import dataclasses
import datetime
import json
from typing import Any

import pytest

from tenantry.api import signingstate
from tenantry.controller.rotation import apisigning, plan, signingkeys
from tenantry.model import rotation
from tests.unit.rotation.test_plan import _apply_merge_patch

UTC = datetime.UTC
NOW = datetime.datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
NAMESPACE = "tenantry-system"
NAME = "signing"
LEASE = datetime.timedelta(seconds=30)


def _spec(**fields: Any) -> rotation.RotationPolicySpec:
    fields.setdefault("targets", ["ApiSigningKeys"])
    fields.setdefault("trigger", "2026-12")
    fields.setdefault("signingKeyOverlap", "16m")
    return rotation.RotationPolicySpec.model_validate(fields)


@dataclasses.dataclass
class ReplicaState:
    """An API replica: the Secret as its mount last showed it, and its Lease's last renewal."""

    kids: dict[str, str]
    signing: str
    gone: bool = False
    """Stopped renewing its Lease five minutes ago."""

    def lease(self, name: str, now: datetime.datetime) -> signingkeys.Replica:
        renewed = now - datetime.timedelta(minutes=5) if self.gone else now
        return signingkeys.Replica(name, frozenset(self.kids.values()), self.kids[self.signing],
                                   renewed, LEASE)


@dataclasses.dataclass
class SigningCluster:
    kids: dict[str, str] = dataclasses.field(default_factory=lambda: {"v1": "kid-1"})
    signing: str = "v1"
    resource_version: int = 1
    replicas: dict[str, ReplicaState] = dataclasses.field(default_factory=dict)
    status: rotation.RotationPolicyStatus = dataclasses.field(
        default_factory=rotation.RotationPolicyStatus)
    changes: list[tuple[str, str]] = dataclasses.field(default_factory=list)
    secret_readable: bool = True
    lagging: set[str] = dataclasses.field(default_factory=set)
    """Replicas whose mount does not follow the Secret (the kubelet is late)."""

    def __post_init__(self) -> None:
        for name in ("api-a", "api-b"):
            self.replicas.setdefault(name, ReplicaState(dict(self.kids), self.signing))

    def world(self, spec: rotation.RotationPolicySpec, *, now: datetime.datetime = NOW,
              namespace: str = NAMESPACE, others: tuple[plan.OtherPolicy, ...] = ()
              ) -> signingkeys.SigningWorld:
        base = plan.World(
            namespace=namespace, name=NAME, generation=1, created="2026-11-01T00:00:00Z",
            spec=spec, status=self.status, credentials=[], others=others, primary="v1",
            now=now, operator_namespace=NAMESPACE)
        secret = signingkeys.SigningSecret(str(self.resource_version), self.signing,
                                           dict(self.kids)) if self.secret_readable else None
        return signingkeys.SigningWorld(
            base=base, secret=secret,
            secret_problem="reading Secret tenantry-system/tenantry-api-signing-keys: 403",
            replicas=[r.lease(n, now) for n, r in self.replicas.items()])

    def sync_mounts(self) -> None:
        """What each replica's kubelet and key watch do, some time after a Secret change."""
        for name, replica in self.replicas.items():
            if name not in self.lagging:
                replica.kids, replica.signing = dict(self.kids), self.signing

    def apply(self, change: signingkeys.SigningChange) -> None:
        if change.resource_version != str(self.resource_version):
            return  # 409 Conflict
        if change.action == "add":
            self.kids[change.version] = f"kid-{change.version[1:]}-{len(self.changes)}"
        elif change.action == "promote":
            self.signing = change.version
        elif change.action == "retire":
            del self.kids[change.version]
        self.changes.append((change.action, change.version))
        self.resource_version += 1

    def store(self, decision: plan.Decision) -> None:
        stored = json.loads(json.dumps(self.status.wire()))
        wire = _apply_merge_patch(stored, json.loads(json.dumps(decision.status_patch())))
        self.status = rotation.RotationPolicyStatus.model_validate(wire)
        assert self.status == decision.status

    def run(self, spec: rotation.RotationPolicySpec, *, now: datetime.datetime = NOW,
            limit: int = 20, **world: Any) -> list[plan.Decision]:
        decisions = []
        for _ in range(limit):
            decision, change = signingkeys.decide(self.world(spec, now=now, **world))
            self.store(decision)
            decisions.append(decision)
            if change is None:
                return decisions
            self.apply(change)
            self.sync_mounts()
        raise AssertionError("no quiet step")


def _conditions(status: rotation.RotationPolicyStatus) -> dict[str, Any]:
    return {c.type: c for c in status.conditions}


def _audit(decisions: list[plan.Decision]) -> list[str]:
    return [action for d in decisions for action, _ in d.audit]


def test_a_rotation_publishes_then_signs_then_retires_after_the_overlap() -> None:
    cluster = SigningCluster()
    decisions = cluster.run(_spec())
    # Published and signing at once here: both replicas' mounts follow at once.
    assert cluster.changes == [("add", "v2"), ("promote", "v2")]
    assert cluster.signing == "v2"
    assert _audit(decisions) == [plan.STARTED, signingkeys.KEY_PUBLISHED,
                                 signingkeys.PROMOTED, plan.COMPLETED]
    keys = cluster.status.signing_keys
    assert keys is not None and keys.rotation is None
    assert keys.demoted == {"v1": "2026-12-01T09:00:00Z"}
    assert cluster.status.current_versions == {"ApiSigningKeys": "v2"}
    assert cluster.status.history[0].result == "Succeeded"
    retiring = _conditions(cluster.status)["Retiring"]
    assert retiring.status == "True"
    assert "v1: verifies until 2026-12-01T09:16:00Z" in retiring.message
    # Still there one second before the overlap ends, gone at its end.
    cluster.run(_spec(), now=NOW + datetime.timedelta(minutes=16, seconds=-1))
    assert "v1" in cluster.kids
    decisions = cluster.run(_spec(), now=NOW + datetime.timedelta(minutes=16))
    assert cluster.changes[-1] == ("retire", "v1") and list(cluster.kids) == ["v2"]
    assert signingkeys.RETIRED in _audit(decisions)
    assert _conditions(cluster.status)["Retiring"].status == "False"
    assert cluster.status.history[0].result == "Retired"
    # The trigger was handled once: nothing more happens.
    assert cluster.run(_spec(), now=NOW + datetime.timedelta(hours=1))[-1].audit == []


def test_nothing_signs_with_the_new_key_until_every_fresh_replica_has_it() -> None:
    cluster = SigningCluster(lagging={"api-b"})
    cluster.run(_spec())
    assert cluster.changes == [("add", "v2")]
    rotating = _conditions(cluster.status)["Rotating"]
    assert (rotating.status, rotating.reason) == ("True", signingkeys.WAITING_FOR_REPLICAS)
    assert "waiting for API replica(s) api-b to load it (1/2 have it)" in rotating.message
    # Repeating the step changes nothing while api-b lags.
    cluster.run(_spec(), now=NOW + datetime.timedelta(seconds=5))
    assert cluster.changes == [("add", "v2")] and cluster.signing == "v1"
    cluster.lagging.clear()
    cluster.sync_mounts()
    cluster.run(_spec(), now=NOW + datetime.timedelta(seconds=6))
    assert cluster.changes == [("add", "v2"), ("promote", "v2")]


def test_a_stale_lease_does_not_count_and_no_fresh_lease_means_waiting() -> None:
    cluster = SigningCluster(lagging={"api-b"})
    # api-b stopped renewing a minute ago: it is gone, its missing kid does not hold anyone up.
    cluster.replicas["api-b"].gone = True
    cluster.run(_spec())
    assert cluster.changes == [("add", "v2"), ("promote", "v2")]
    assert cluster.status.signing_keys is not None
    assert cluster.status.signing_keys.replicas == 1

    lonely = SigningCluster()
    for replica in lonely.replicas.values():
        replica.gone = True
    lonely.run(_spec())
    assert lonely.changes == [("add", "v2")]
    rotating = _conditions(lonely.status)["Rotating"]
    assert rotating.reason == signingkeys.NO_REPLICAS
    assert "no API replica reports in" in rotating.message and "2 stale" in rotating.message


def test_the_overlap_starts_only_when_every_replica_signs_with_the_new_key() -> None:
    cluster = SigningCluster()
    # Publish with both mounts following; then api-b's mount lags for the promotion.
    decision, change = signingkeys.decide(cluster.world(_spec()))
    cluster.store(decision)
    assert change is not None and change.action == "add"
    cluster.apply(change)
    cluster.sync_mounts()
    decision, change = signingkeys.decide(cluster.world(_spec()))
    cluster.store(decision)
    assert change is not None and change.action == "promote"
    cluster.apply(change)
    cluster.lagging = {"api-b"}
    cluster.sync_mounts()
    later = NOW + datetime.timedelta(minutes=30)
    cluster.run(_spec(), now=later)
    rotating = _conditions(cluster.status)["Rotating"]
    assert rotating.reason == signingkeys.WAITING_TO_SIGN and "api-b" in rotating.message
    assert "v1" in cluster.kids  # still signing on api-b: never removed
    cluster.lagging.clear()
    cluster.sync_mounts()
    cluster.run(_spec(), now=later)
    assert cluster.status.signing_keys is not None
    assert cluster.status.signing_keys.demoted == {"v1": "2026-12-01T09:30:00Z"}
    cluster.run(_spec(), now=later + datetime.timedelta(minutes=15))
    assert "v1" in cluster.kids
    cluster.run(_spec(), now=later + datetime.timedelta(minutes=16))
    assert "v1" not in cluster.kids


def test_a_crash_after_any_write_resumes_from_status() -> None:
    cluster = SigningCluster()
    # Step 1 decides to add v2 and checkpoints status; the operator dies before writing.
    decision, change = signingkeys.decide(cluster.world(_spec()))
    cluster.store(decision)
    assert change == signingkeys.SigningChange("add", "v2", "1")
    # Restarted: the same version is added (not v3), once.
    cluster.run(_spec())
    assert cluster.changes == [("add", "v2"), ("promote", "v2")]
    assert list(cluster.kids) == ["v1", "v2"]


def test_a_conflicting_write_is_decided_again() -> None:
    cluster = SigningCluster()
    decision, change = signingkeys.decide(cluster.world(_spec()))
    cluster.store(decision)
    cluster.resource_version += 1  # someone else changed the Secret meanwhile
    assert change is not None
    cluster.apply(change)
    assert cluster.changes == []
    cluster.run(_spec())
    assert cluster.changes == [("add", "v2"), ("promote", "v2")]


def test_a_published_key_removed_by_hand_is_published_again() -> None:
    cluster = SigningCluster(lagging={"api-b"})
    cluster.run(_spec())
    del cluster.kids["v2"]
    decisions = cluster.run(_spec())
    assert ("Warning", "SigningKeyLost") in [(t, r) for d in decisions for t, r, _ in d.events]
    assert cluster.changes == [("add", "v2"), ("add", "v2")] and cluster.signing == "v1"


@pytest.mark.parametrize(("namespace", "targets", "reason"), [
    ("acme-prod", ["ApiSigningKeys"], plan.TARGET_NOT_ALLOWED),
    (NAMESPACE, ["ApiSigningKeys", "Credentials"], signingkeys.TARGETS_OVERLAP)])
def test_bad_policies_touch_no_key(namespace: str, targets: list[str], reason: str) -> None:
    cluster = SigningCluster()
    cluster.run(_spec(targets=targets), namespace=namespace)
    ready = _conditions(cluster.status)["Ready"]
    assert (ready.status, ready.reason) == ("False", reason)
    assert cluster.changes == [] and cluster.status.last_handled_trigger is None


def test_a_second_policy_reports_a_conflict_and_an_unreadable_secret_says_how() -> None:
    cluster = SigningCluster()
    older = plan.OtherPolicy("first", "2026-10-01T00:00:00Z", frozenset({"ApiSigningKeys"}),
                             None)
    cluster.run(_spec(), others=(older,))
    assert _conditions(cluster.status)["Ready"].reason == plan.CONFLICT
    cluster = SigningCluster(secret_readable=False)
    cluster.run(_spec())
    ready = _conditions(cluster.status)["Ready"]
    assert ready.reason == signingkeys.SECRET_UNAVAILABLE and "403" in ready.message
    assert cluster.changes == []


@pytest.mark.parametrize("overlap", ["30s", "20m", "60m"])
def test_an_overlap_shorter_than_the_longest_token_lifetime_is_said(overlap: str) -> None:
    """Participant tokens live an hour: 20 minutes cuts them even though it covers access
    tokens."""
    cluster = SigningCluster()
    cluster.run(_spec(signingKeyOverlap=overlap))
    assert "shorter than the longest token lifetime plus skew" in \
        _conditions(cluster.status)["Retiring"].message


def test_the_default_overlap_is_not_called_short() -> None:
    cluster = SigningCluster()
    cluster.run(_spec(signingKeyOverlap="61m"))
    assert "shorter" not in _conditions(cluster.status)["Retiring"].message


def test_no_key_material_reaches_status_events_or_the_ledger() -> None:
    from tenantry.api.tokens import rfc7517

    key = rfc7517.generate()
    pem = rfc7517.private_pem(key)
    patch = signingstate.secret_patch(
        apisigning.request_of(signingkeys.SigningChange("add", "v2", "7")), pem)
    assert patch["metadata"] == {"resourceVersion": "7"}
    cluster = SigningCluster()
    decisions = cluster.run(_spec())
    text = json.dumps([cluster.status.wire(), [d.events for d in decisions],
                       [d.audit for d in decisions]])
    assert "PRIVATE KEY" not in text and patch["data"]["v2.pem"] not in text


def test_identity_leases_are_read_as_replicas() -> None:
    lease = {"metadata": {"name": "tenantry-api-a", "annotations": {
        "tenantry.dev/verification-kids": "k1,k2", "tenantry.dev/signing-kid": "k1"}},
        "spec": {"holderIdentity": "a", "leaseDurationSeconds": 30,
                 "renewTime": "2026-12-01T08:59:50.123456Z"}}
    replica = apisigning.replica(lease)
    assert replica.verification == {"k1", "k2"} and replica.signing == "k1"
    assert replica.fresh(NOW) and not replica.fresh(NOW + datetime.timedelta(seconds=21))
    assert not apisigning.replica({"metadata": {"name": "x"}, "spec": {}}).fresh(NOW)


def test_tenantry_rotate_follows_a_signing_key_rotation_until_it_is_done() -> None:
    from tenantry.controller.rotation import cli

    cluster = SigningCluster(lagging={"api-b"})
    cluster.run(_spec())

    def followed() -> cli.Followed:
        return cli.follow({"metadata": {"generation": 1}, "status": cluster.status.wire()},
                          "2026-12", 1)

    waiting = followed()
    assert waiting.exit_code is None and waiting.line.startswith("Promoting: ")
    assert "waiting for API replica(s) api-b" in waiting.line
    cluster.lagging.clear()
    cluster.sync_mounts()
    cluster.run(_spec())
    assert followed().exit_code == cli.EXIT_OK


def test_a_rotation_paused_by_an_unreadable_secret_says_so_and_goes_on_after() -> None:
    cluster = SigningCluster(lagging={"api-b"})
    cluster.run(_spec())
    cluster.secret_readable = False
    cluster.run(_spec())
    rotating = _conditions(cluster.status)["Rotating"]
    assert (rotating.status, rotating.reason) == ("False", plan.PAUSED)
    cluster.secret_readable = True
    cluster.lagging.clear()
    cluster.sync_mounts()
    cluster.run(_spec())
    assert cluster.changes == [("add", "v2"), ("promote", "v2")]


def test_a_retired_version_is_recorded_at_the_time_the_api_removed_it() -> None:
    cluster = SigningCluster()
    cluster.run(_spec())
    later = NOW + datetime.timedelta(minutes=17)
    decision, change = signingkeys.decide(cluster.world(_spec(), now=later))
    cluster.store(decision)
    assert change == signingkeys.SigningChange("retire", "v1", str(cluster.resource_version))
    cluster.apply(change)
    # The API applied it at 09:17:02; this step sees it at 09:17:30: the record says 09:17:02.
    decision, change = signingkeys.decide(dataclasses.replace(
        cluster.world(_spec(), now=later + datetime.timedelta(seconds=30)),
        secret=signingkeys.SigningSecret(str(cluster.resource_version), cluster.signing,
                                         dict(cluster.kids),
                                         retired={"v1": "2026-12-01T09:17:02Z"})))
    assert change is None
    retired = decision.status.history[0]
    assert (retired.result, retired.from_version, retired.time) == (
        "Retired", "v1", "2026-12-01T09:17:02Z")
