"""The AuditEvent model (pure): what a writer may and may not put into the ledger."""

from __future__ import annotations

import json
from typing import Any

import pydantic
import pytest

from tenantry.ledger import events, hashing
from tenantry.ledger.redact import REDACTED
from tests.ledger.ledger_helpers import make_event


def test_changes_and_identity_are_redacted_when_the_event_is_built() -> None:
    event = make_event(changes={"spec": {"password": "hunter2", "replicas": 2}},
                       identity={"kind": "token", "token_id": "jti-1", "token": "eyJ..."})
    assert event.changes == {"spec": {"password": REDACTED, "replicas": 2}}
    assert event.identity == {"kind": "token", "token_id": "jti-1", "token": REDACTED}


def test_payload_is_exactly_what_append_batch_accepts() -> None:
    payload = make_event(3).payload()
    assert set(payload) == {"tenant", "actor", "actor_kind", "identity", "action",
                            "resource_kind", "resource_namespace", "resource_name", "changes",
                            "source_ip", "request_id", "component"}
    assert payload["actor_kind"] == "user"
    json.dumps(payload, allow_nan=False)


@pytest.mark.parametrize("fields", [
    {"changes": {"ratio": float("nan")}},
    {"changes": {"n": 2**60}},
    {"changes": {"big": "x" * (events.MAX_JSON_BYTES + 1)}},
    {"identity": {"name": "a\x00b"}},
    {"actor": "ali\x00ce"},
    {"actor": ""},
    {"actor_kind": "robot"},
    {"tenant": "_platform"},
    {"tenant": "Acme"},
    {"tenant": ""},
    {"source_ip": "10.0.0.300"},
    {"source_ip": "fe80::1%eth0"},
    {"seq": 5},
    {"event_time": "2020-01-01T00:00:00Z"},
    {"hash": "00" * 32},
])
def test_events_the_ledger_cannot_hash_or_must_not_accept_are_refused(
        fields: dict[str, Any]) -> None:
    with pytest.raises(pydantic.ValidationError):
        make_event(**fields)


def test_validation_errors_do_not_echo_the_input() -> None:
    with pytest.raises(pydantic.ValidationError) as caught:
        make_event(actor="topsecret\x00value")
    assert "topsecret" not in str(caught.value)


def test_events_are_immutable() -> None:
    event = make_event()
    with pytest.raises(pydantic.ValidationError):
        event.actor = "mallory"  # type: ignore[misc]


def test_chain_follows_the_tenant() -> None:
    assert make_event(tenant="acme").chain == "acme"
    assert make_event(tenant=None).chain == hashing.PLATFORM_CHAIN


def test_identity_helpers_never_carry_secret_material() -> None:
    assert events.token_identity("jti-1") == {"kind": "token", "token_id": "jti-1"}
    assert events.api_key_identity("tnt_ab12") == {"kind": "api_key", "key_prefix": "tnt_ab12"}
    assert events.kubernetes_identity("alice", ["g1"], uid="u-1") == {
        "kind": "kubernetes", "username": "alice", "groups": ["g1"], "uid": "u-1"}
    assert events.system_identity("operator") == {"kind": "system", "component": "operator"}
    for identity in (events.token_identity("t"), events.api_key_identity("p")):
        assert make_event(identity=identity).identity == identity  # nothing redacted away
