"""Fixtures for the crypto core's unit tests: a keyring and an envelope context."""

from __future__ import annotations

import pytest

from tenantry.crypto import envelope, keyring, tenant_keys

TENANT_UID = "3f2b8c1e-7a4d-4e2f-9b1c-5d6e7f8a9b0c"
CREDENTIAL_UID = "6c1d2e3f-4a5b-4c6d-8e7f-901a2b3c4d5e"


@pytest.fixture
def ring() -> keyring.Keyring:
    """A fresh one-version keyring (v1 primary)."""
    return keyring.generate()


@pytest.fixture
def context() -> envelope.Context:
    return envelope.Context(tenant_uid=TENANT_UID, namespace="team-a", credential="billing-db",
                            field="password", generation=3, credential_uid=CREDENTIAL_UID)


def format_1_envelope(ring: keyring.Keyring, context: envelope.Context, plaintext: bytes) -> bytes:
    """An envelope as Tenantry wrote them before Credential UIDs were bound (format 1)."""
    key = tenant_keys.derive(ring, context.tenant_uid)
    nonce = bytes(envelope.NONCE_SIZE)
    name = key.master_version.encode()
    header = envelope.MAGIC + bytes((envelope.FORMAT_V1, len(name))) + name \
        + key.fingerprint + nonce
    return header + key.aead.encrypt(nonce, plaintext, header + context.encoded)
