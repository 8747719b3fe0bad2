"""The operator's metrics: how a handler run is counted, and what the exposition looks like."""

from __future__ import annotations

from pathlib import Path

import kopf
import pytest
from prometheus_client import parser

from tenantry import metrics
from tenantry.ledger import recorder as ledger_recorder
from tenantry.ledger.spool import Spool


def reconciliations(kind: str, result: str) -> float:
    value = metrics.REGISTRY.get_sample_value("tenantry_operator_reconciliations_total",
                                              {"kind": kind, "result": result})
    return value or 0.0


async def test_a_handler_run_is_counted_by_its_result() -> None:
    @metrics.reconciliation("UnitKind")
    async def handler(outcome: str, **_: object) -> str:
        if outcome == "temporary":
            raise kopf.TemporaryError("later", delay=1)
        if outcome == "permanent":
            raise kopf.PermanentError("never")
        if outcome == "bug":
            raise KeyError("x")
        return "done"

    assert await handler(outcome="ok") == "done"
    for outcome in ("temporary", "bug", "permanent"):
        with pytest.raises((kopf.TemporaryError, kopf.PermanentError, KeyError)):
            await handler(outcome=outcome)
    assert reconciliations("UnitKind", "succeeded") == 1
    assert reconciliations("UnitKind", "retrying") == 2  # kopf retries both
    assert reconciliations("UnitKind", "failed") == 1
    count = metrics.REGISTRY.get_sample_value(
        "tenantry_operator_reconcile_duration_seconds_count", {"kind": "UnitKind"})
    assert count == 4


def test_the_wrapped_handler_keeps_its_kopf_id() -> None:
    """kopf names a handler by its qualified name in objects' progress annotations: wrapping
    must not rename it, or every existing object would run its handlers again."""
    async def reconcile_tenant(**_: object) -> None:
        return None

    wrapped = metrics.reconciliation("Tenant")(reconcile_tenant)
    assert (wrapped.__name__, wrapped.__qualname__, wrapped.__module__) == (
        reconcile_tenant.__name__, reconcile_tenant.__qualname__, reconcile_tenant.__module__)


def test_leader_transitions_count_changes_only() -> None:
    transitions = "tenantry_operator_leader_transitions_total"
    before = metrics.REGISTRY.get_sample_value(transitions) or 0.0
    metrics.set_leader(True)
    metrics.set_leader(True)
    assert metrics.REGISTRY.get_sample_value("tenantry_operator_leader") == 1
    metrics.set_leader(False)
    assert metrics.REGISTRY.get_sample_value(transitions) == before + 2
    assert metrics.REGISTRY.get_sample_value("tenantry_operator_leader") == 0


def test_the_spool_is_read_at_scrape_time(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool")
    recorder = ledger_recorder.Recorder(spool, "postgresql://unused", "unit")
    metrics.watch_ledger(recorder)
    assert metrics.REGISTRY.get_sample_value("tenantry_ledger_spool_entries") == 0
    (spool.directory / "0001.event.json").write_text("{}")
    assert metrics.REGISTRY.get_sample_value("tenantry_ledger_spool_entries") == 1
    age = metrics.REGISTRY.get_sample_value("tenantry_ledger_spool_oldest_entry_age_seconds")
    assert age is not None and age >= 0


def test_the_exposition_parses_and_names_follow_the_conventions() -> None:
    body, content_type = metrics.exposition()
    assert content_type.startswith("text/plain")
    families = {f.name: f for f in parser.text_string_to_metric_families(body.decode())}
    ours = {name: f for name, f in families.items() if name.startswith("tenantry_")}
    assert ours
    for name, family in ours.items():
        assert not name.endswith("_total")  # the parser strips it from counters...
        if family.type == "counter":  # ...and every counter sample carries it
            assert all(s.name.endswith(("_total", "_created")) for s in family.samples), name
        if family.type == "histogram":
            assert name.endswith("_seconds"), name


def test_credentials_are_counted_by_ready_and_reason_and_leave_when_deleted() -> None:
    from tenantry import metrics

    metrics.credential_state("uid-a", True, "Encrypted")
    metrics.credential_state("uid-b", False, "TamperDetected")
    metrics.credential_state("uid-c", False, "TamperDetected")
    metrics.credential_state("uid-c", None)

    def counts() -> dict[tuple[str, str], float]:
        (family,) = metrics.CredentialCollector().collect()
        return {(s.labels["ready"], s.labels["reason"]): s.value for s in family.samples}

    found = counts()
    assert found[("True", "Encrypted")] >= 1 and found[("False", "TamperDetected")] == 1
    metrics.credential_state("uid-a", None)
    metrics.credential_state("uid-b", None)
    assert ("False", "TamperDetected") not in counts()
