"""Leader election decisions (pure): who may take, keep or must wait for the Lease."""

from __future__ import annotations

import datetime

from tenantry.controller.leader import Step, Timing, claimed, format_time, next_step

NOW = datetime.datetime(2026, 11, 23, 12, 0, 0, tzinfo=datetime.UTC)


def _held_by(holder: str, seconds_ago: float, duration: int = 15) -> dict[str, object]:
    return {"holderIdentity": holder, "leaseDurationSeconds": duration,
            "renewTime": format_time(NOW - datetime.timedelta(seconds=seconds_ago))}


def test_a_free_or_missing_lease_is_taken() -> None:
    assert next_step(None, "a", NOW) is Step.ACQUIRE
    assert next_step({"holderIdentity": None}, "a", NOW) is Step.ACQUIRE


def test_a_live_lease_of_another_replica_is_waited_for() -> None:
    assert next_step(_held_by("b", 3), "a", NOW) is Step.WAIT
    assert next_step(_held_by("b", 14.9), "a", NOW) is Step.WAIT


def test_an_expired_lease_is_taken_over() -> None:
    assert next_step(_held_by("b", 15), "a", NOW) is Step.ACQUIRE
    assert next_step({"holderIdentity": "b"}, "a", NOW) is Step.ACQUIRE  # never renewed


def test_the_holder_renews() -> None:
    assert next_step(_held_by("a", 100), "a", NOW) is Step.RENEW


def test_claiming_counts_transitions_and_stamps_times() -> None:
    timing = Timing.for_lease(6)
    taken = claimed(_held_by("b", 20), "a", NOW, timing)
    assert taken["holderIdentity"] == "a"
    assert taken["leaseTransitions"] == 1
    assert taken["acquireTime"] == taken["renewTime"] == "2026-11-23T12:00:00.000000Z"
    assert taken["leaseDurationSeconds"] == 6
    later = NOW + datetime.timedelta(seconds=2)
    renewed = claimed(taken, "a", later, timing)
    assert renewed["acquireTime"] == taken["acquireTime"]
    assert renewed["renewTime"] == "2026-11-23T12:00:02.000000Z"
    assert renewed["leaseTransitions"] == 1
    assert claimed(None, "a", NOW, timing)["leaseTransitions"] == 0


def test_timing_keeps_client_go_proportions() -> None:
    timing = Timing.for_lease(15)
    assert (timing.lease_duration, timing.renew_deadline, timing.retry_period) == (15, 10, 2)
