"""Events as `kubectl describe` selects them (involvedObject name, namespace, kind, uid)."""

from __future__ import annotations

import datetime

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
