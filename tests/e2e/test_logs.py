"""The operator's log, as a log collector reads it: JSON lines by default, each naming the
component, and a reconciliation's lines naming its tenant, object, reconcile id and outcome."""

from __future__ import annotations

import json
from typing import Any

from tests.conftest import OperatorProcess
from tests.e2e.conftest import TenantFactory, owner
from tests.helpers import eventually, unique


def json_lines(log: str) -> list[dict[str, Any]]:
    """Every line of `log` as JSON (a line that is not fails the test, naming it)."""
    records = []
    for number, line in enumerate(log.splitlines(), 1):
        try:
            records.append(json.loads(line))
        except ValueError:
            raise AssertionError(f"line {number} of the operator's log is not JSON: "
                                 f"{line[:300]!r}") from None
    return records


def test_the_operator_logs_json_lines_with_reconcile_fields(operator: OperatorProcess,
                                                            tenants: TenantFactory) -> None:
    name = unique("logs")
    tenants(name, [name], [owner(f"{name}-alice")])

    def reconciled() -> list[dict[str, Any]]:
        return [r for r in json_lines(operator.log())
                if r.get("tenant") == name and r.get("outcome") == "succeeded"]

    [done, *_] = eventually(reconciled, what=f"a 'succeeded' line for tenant {name}")
    assert done["object"] == f"Tenant/{name}"
    assert done["component"] == "operator" and done["logger"].startswith("kopf")
    assert len(done["reconcile_id"]) == 16

    records = json_lines(operator.log())
    assert records, "the operator logged nothing"
    for record in records:
        assert {"time", "level", "component", "logger", "message"} <= set(record), record
        assert record["component"] == "operator"
    # Other tenants' lines never carry this reconciliation's id.
    assert all(r.get("tenant") in (name, None) for r in records
               if r.get("reconcile_id") == done["reconcile_id"])
