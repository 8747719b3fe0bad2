"""Events as `kubectl describe` selects them (involvedObject name, namespace, kind, uid)."""

from __future__ import annotations

import datetime
from typing import Any

import kopf
import pytest

from tenantry import kubeapi
from tenantry.controller import events

NOW = datetime.datetime(2026, 12, 1, 10, 58, 44, tzinfo=datetime.UTC)


def test_a_cluster_scoped_object_has_no_namespace_in_its_reference() -> None:
    tenant = {"apiVersion": "tenantry.dev/v1alpha1", "kind": "Tenant",
              "metadata": {"name": "acme", "uid": "u-1"}}
    event = events.event_for(tenant, events.normal("NamespaceCreated", "acme-prod created"),
                             now=NOW, unique=0x1F)
    assert event["involvedObject"] == {"apiVersion": "tenantry.dev/v1alpha1", "kind": "Tenant",
                                       "name": "acme", "uid": "u-1"}
    assert event["metadata"] == {"name": "acme.1f", "namespace": "default"}
    assert (event["type"], event["reason"]) == ("Normal", "NamespaceCreated")
    assert event["firstTimestamp"] == event["lastTimestamp"] == "2026-12-01T10:58:44Z"
    assert event["source"] == {"component": "tenantry-operator"}


def test_a_namespaced_object_has_its_events_in_its_namespace() -> None:
    credential = {"apiVersion": "tenantry.dev/v1alpha1", "kind": "Credential",
                  "metadata": {"name": "smtp", "namespace": "acme-prod", "uid": "u-2"}}
    event = events.event_for(credential, events.warning("BadSeal", "x" * 5000), now=NOW,
                             unique=1)
    assert event["involvedObject"]["namespace"] == "acme-prod"
    assert event["metadata"]["namespace"] == "acme-prod"
    assert len(event["message"]) == events.MAX_MESSAGE


def test_event_names_stay_within_the_limit() -> None:
    long = {"apiVersion": "tenantry.dev/v1alpha1", "kind": "Credential",
            "metadata": {"name": "n" * 253, "namespace": "ns"}}
    event = events.event_for(long, events.normal("Encrypted", "ok"), now=NOW,
                             unique=2**63)
    assert len(event["metadata"]["name"]) <= 253
    assert "uid" not in event["involvedObject"]


# -- unexpected handler failures ---------------------------------------------------------------

TENANT = {"apiVersion": "tenantry.dev/v1alpha1", "kind": "Tenant",
          "metadata": {"name": "acme", "uid": "u-9"}}


class _RecordingApi:
    """Stands in for KubeApi.create only: `reported` is tested apart from the cluster here;
    tests/e2e/test_kubectl_describe.py shows Events through the real kubectl."""

    def __init__(self) -> None:
        self.created: list[dict[str, Any]] = []

    async def create(self, body: dict[str, Any]) -> dict[str, Any]:
        self.created.append(body)
        return body


def test_a_failure_names_the_handler_and_the_error_type_never_its_message() -> None:
    """A message can quote anything (here a raw value no redaction pattern knows)."""
    value = "hunter2-the-smtp-password"
    type_, reason, message = events.failure(
        "reconcile_credential", ValueError(f"invalid literal for int(): {value!r}"))
    assert (type_, reason) == ("Warning", "ReconcileError")
    assert message.startswith("reconcile_credential failed (retrying): ValueError;")
    assert value not in message
    refused = events.failure("reconcile_tenant", kubeapi.ApiError(
        422, "Invalid", f"spec.x: Invalid value: {value!r}"))
    assert "ApiError 422 Invalid;" in refused[2] and value not in refused[2]
    permanent = events.failure("reconcile_tenant", kopf.PermanentError("bad spec"))
    assert "(not retried): PermanentError;" in permanent[2]


def test_the_same_failure_is_posted_once_per_window() -> None:
    key = ("u-window", "m")
    assert events.should_post(key, 1000.0)
    assert not events.should_post(key, 1000.0 + events.FAILURE_REPEAT - 1)
    assert events.should_post(key, 1000.0 + events.FAILURE_REPEAT)
    assert events.should_post(("u-window", "another message"), 1000.0)


async def test_reported_posts_an_unexpected_exception_and_reraises_it() -> None:
    api = _RecordingApi()

    @events.reported
    async def reconcile_tenant(**_: Any) -> None:
        raise KeyError("children")

    with pytest.raises(KeyError):
        await reconcile_tenant(body=TENANT, memo=kopf.Memo(api=api))
    await events.drain()
    assert [(e["type"], e["reason"], e["involvedObject"].get("namespace"))
            for e in api.created] == [("Warning", "ReconcileError", None)]
    assert "reconcile_tenant failed (retrying): KeyError;" in api.created[0]["message"]


async def test_reported_leaves_temporary_errors_to_the_handlers_own_events() -> None:
    api = _RecordingApi()

    @events.reported
    async def reconcile_credential(**_: Any) -> None:
        raise kopf.TemporaryError("keyring unavailable", delay=1)

    with pytest.raises(kopf.TemporaryError):
        await reconcile_credential(body={**TENANT, "metadata": {"name": "b", "uid": "u-t"}},
                                   memo=kopf.Memo(api=api))
    await events.drain()
    assert api.created == []
