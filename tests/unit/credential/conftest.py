"""Fixtures for the Credential controller's pure core: keys, an owner, a tenant, sealed input."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.asymmetric import x25519

from tenantry.controller.credential import ciphertext
from tenantry.crypto import custody, keyring, sealing

TENANT_UID = "3f2b8c1e-7a4d-4e2f-9b1c-5d6e7f8a9b0c"
OTHER_TENANT_UID = "9a8b7c6d-1e2f-4a3b-8c9d-0e1f2a3b4c5d"
# Distinctive values: a test that finds them in a message or manifest has found a leak.
PLAINTEXT = b"PLAINTEXT-unit-7f3a9c-hunter2"
OTHER_PLAINTEXT = b"PLAINTEXT-unit-other-51d2e0"


@pytest.fixture
def ring() -> keyring.Keyring:
    return keyring.generate()


@pytest.fixture
def private_key() -> x25519.X25519PrivateKey:
    return sealing.generate_private_key()


@pytest.fixture
def sealing_keys(private_key: x25519.X25519PrivateKey) -> custody.SealingKeys:
    return custody.SealingKeys((private_key,))


@pytest.fixture
def owner() -> ciphertext.Owner:
    return ciphertext.Owner(namespace="acme-prod", name="payments-api",
                            uid="0b7c6e2a-5f3d-4c1e-9a8b-2d4f6e8a0c1b")


@pytest.fixture
def tenant() -> ciphertext.TenantRef:
    return ciphertext.TenantRef(name="acme", uid=TENANT_UID)
