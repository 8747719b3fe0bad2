"""The durable spool of audit events: what was put survives a restart, in order, nothing lost."""

from __future__ import annotations

from pathlib import Path

import pytest

from tenantry.ledger.events import ActorKind, AuditEvent
from tenantry.ledger.spool import Spool, SpoolError


def _event(action: str, **extra: object) -> AuditEvent:
    return AuditEvent(tenant="acme", actor="system:serviceaccount:tenantry-system:op",
                      actor_kind=ActorKind.SERVICEACCOUNT, action=action,
                      resource_kind="Tenant", resource_name="acme", component="operator",
                      **extra)  # type: ignore[arg-type]


def test_events_come_back_in_order_after_a_restart(tmp_path: Path) -> None:
    first = Spool(tmp_path / "spool")
    stored = [first.put(_event(f"tenant.step-{i}")) for i in range(5)]
    # A new process opening the same directory sees every event, oldest first.
    again = Spool(tmp_path / "spool")
    pending = again.pending()
    assert [event.action for _, event in pending] == [f"tenant.step-{i}" for i in range(5)]
    assert [event for _, event in pending] == stored
    assert again.count() == 5


def test_each_event_gets_a_spool_request_id_unless_it_has_one(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    tagged = spool.put(_event("a"))
    kept = spool.put(_event("b", request_id="req-1"))
    assert tagged.request_id is not None and tagged.request_id.startswith("spool:")
    assert kept.request_id == "req-1"


def test_done_removes_only_the_delivered_events(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    for i in range(4):
        spool.put(_event(f"e{i}"))
    batch = spool.pending(limit=2)
    assert [e.action for _, e in batch] == ["e0", "e1"]
    spool.done([path for path, _ in batch])
    assert [e.action for _, e in spool.pending()] == ["e2", "e3"]


def test_half_written_and_corrupt_files_never_pass_as_events(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    spool.put(_event("good"))
    # A crash mid-write leaves a hidden partial file: not an event.
    (tmp_path / ".0001-dead.partial").write_bytes(b'{"tenant": "ac')
    # A damaged event file is set aside, not dropped and not appended.
    (tmp_path / "00000000000000000001-bad.event.json").write_bytes(b"{not json")
    assert [e.action for _, e in spool.pending()] == ["good"]
    assert (tmp_path / "rejected" / "00000000000000000001-bad.event.json").exists()


def test_secret_looking_changes_are_redacted_before_they_reach_the_disk(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    spool.put(_event("credential.encrypt", changes={"password": "hunter2-very-secret"}))
    on_disk = b"".join(p.read_bytes() for p in tmp_path.glob("*.event.json"))
    assert b"hunter2-very-secret" not in on_disk


def test_an_unusable_directory_is_a_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(SpoolError, match="ledger spool"):
        Spool(blocker / "spool")
