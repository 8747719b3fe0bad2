"""Small helpers shared by e2e tests."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any, TypeVar

from kubernetes import client

T = TypeVar("T")

GROUP, VERSION = "tenantry.dev", "v1alpha1"


def eventually(check: Callable[[], T | None], *, timeout: float = 30.0, interval: float = 0.25,
               what: str = "the condition") -> T:
    """Poll `check` until it returns something truthy; return that."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
        except client.ApiException as error:
            last = error
        else:
            if last:
                return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}; last: {last!r}")


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


def conditions_of(obj: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["type"]: c for c in (obj.get("status") or {}).get("conditions") or []}


def forbidden(call: Callable[[], object]) -> bool:
    """True when the API refuses `call` with 403 (RBAC) or 422/400 (admission)."""
    try:
        call()
    except client.ApiException as error:
        return error.status in (403, 422, 400)
    return False
