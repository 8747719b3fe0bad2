"""The rotation in progress, as the TenantryRotationStuck alert sees it, for every target: the
re-encryption in `status.rotation`, and the key, signing-key and certificate steps kept under
their own target's status (a rotation waiting for a backup or for API replicas counts)."""

from __future__ import annotations

import datetime

import pytest

from tenantry.controller.rotation import handlers

STARTED = "2026-12-01T10:00:00Z"
UNIX = datetime.datetime(2026, 12, 1, 10, tzinfo=datetime.UTC).timestamp()


@pytest.mark.parametrize(("status", "target"), [
    ({"rotation": {"target": "Credentials", "startedTime": STARTED}}, "Credentials"),
    ({"masterKey": {"rotation": {"step": "AwaitingBackup", "startedTime": STARTED}}},
     "MasterKey"),
    ({"signingKeys": {"rotation": {"step": "Promoting", "startedTime": STARTED}}},
     "ApiSigningKeys"),
    ({"webhookCertificates": {"rotation": {"step": "Requested", "startedTime": STARTED}}},
     "WebhookCertificates"),
])
def test_every_targets_rotation_in_progress_is_seen(status: dict, target: str) -> None:
    assert handlers._in_progress(status) == (target, UNIX)


@pytest.mark.parametrize("status", [
    {}, {"rotation": None}, {"masterKey": {"primary": "v2"}},
    {"signingKeys": {"rotation": {"startedTime": "not a time"}}},
])
def test_no_rotation_in_progress(status: dict) -> None:
    assert handlers._in_progress(status) == (None, None)
