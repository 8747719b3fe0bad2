"""Fixtures for the crypto core's unit tests: a keyring and an envelope context."""

from __future__ import annotations

import pytest

from tenantry.crypto import envelope, keyring

TENANT_UID = "3f2b8c1e-7a4d-4e2f-9b1c-5d6e7f8a9b0c"


@pytest.fixture
def ring() -> keyring.Keyring:
    """A fresh one-version keyring (v1 primary)."""
    return keyring.generate()


@pytest.fixture
def context() -> envelope.Context:
    return envelope.Context(tenant_uid=TENANT_UID, namespace="team-a", credential="billing-db",
                            field="password", generation=3)
