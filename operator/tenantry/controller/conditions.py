"""Status conditions by the Kubernetes API conventions (pure).

`lastTransitionTime` changes only when a condition's status flips; every write carries the
generation it describes, so a reader can tell stale status from current.
"""

from __future__ import annotations

import datetime
from collections.abc import Iterable, Sequence
from typing import Any, Literal

Status = Literal["True", "False", "Unknown"]


def now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def condition(type_: str, status: Status, reason: str, message: str = "", *,
              generation: int | None = None) -> dict[str, Any]:
    entry: dict[str, Any] = {"type": type_, "status": status, "reason": reason,
                             "message": message[:32768]}
    if generation is not None:
        entry["observedGeneration"] = generation
    return entry


def merge(existing: Sequence[dict[str, Any]] | None, updates: Iterable[dict[str, Any]],
          *, timestamp: str | None = None) -> list[dict[str, Any]]:
    """Existing conditions with `updates` applied, keeping transition times of unchanged ones."""
    stamp = timestamp or now()
    by_type = {c["type"]: dict(c) for c in existing or ()}
    for update in updates:
        previous = by_type.get(update["type"])
        merged = dict(update)
        if previous is not None and previous.get("status") == update["status"]:
            merged["lastTransitionTime"] = previous.get("lastTransitionTime", stamp)
        else:
            merged["lastTransitionTime"] = stamp
        by_type[update["type"]] = merged
    return sorted(by_type.values(), key=lambda c: (c["type"] != "Ready", c["type"]))


def summarize(parts: Sequence[dict[str, Any]], *, generation: int | None = None,
              ready_reason: str = "Reconciled") -> dict[str, Any]:
    """A Ready condition from the part conditions: True only when every part is True."""
    failing = [c for c in parts if c["status"] != "True"]
    if not failing:
        return condition("Ready", "True", ready_reason, "all parts reconciled",
                         generation=generation)
    first = failing[0]
    status: Status = "Unknown" if all(c["status"] == "Unknown" for c in failing) else "False"
    message = "; ".join(f"{c['type']}: {c['message'] or c['reason']}" for c in failing)
    return condition("Ready", status, first["reason"], message, generation=generation)
