"""Per-tenant keys: standard HKDF (RFC 5869 vectors), the documented derivation, UID binding."""

from __future__ import annotations

import hashlib
import hmac
import re

import pytest

from tenantry.crypto import errors, keyring, tenant_keys

UID = "3f2b8c1e-7a4d-4e2f-9b1c-5d6e7f8a9b0c"
OTHER_UID = "a1b2c3d4-e5f6-4a7b-8c9d-0e1f2a3b4c5d"

# RFC 5869, appendix A, test cases 1-3 (SHA-256): ikm, salt, info, length, okm.
RFC5869_SHA256 = [
    pytest.param(
        bytes.fromhex("0b" * 22), bytes.fromhex("000102030405060708090a0b0c"),
        bytes.fromhex("f0f1f2f3f4f5f6f7f8f9"), 42,
        "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf"
        "34007208d5b887185865",
        id="case-1-basic"),
    pytest.param(
        bytes(range(0x00, 0x50)), bytes(range(0x60, 0xb0)), bytes(range(0xb0, 0x100)), 82,
        "b11e398dc80327a1c8e7f78c596a49344f012eda2d4efad8a050cc4c19afa97c"
        "59045a99cac7827271cb41c65e590e09da3275600c2f09b8367793a9aca3db71"
        "cc30c58179ec3e87c14c01d5c1f3434f1d87",
        id="case-2-long-inputs"),
    pytest.param(
        bytes.fromhex("0b" * 22), b"", b"", 42,
        "8da4e775a563c18f715f802a063c5a31b8a11f5c5ee1879ec3454e5f3c738d2d"
        "9d201395faa4b61a96c8",
        id="case-3-empty-salt-and-info"),
]


def _reference_hkdf(ikm: bytes, salt: bytes, info: bytes, length: int) -> bytes:
    """RFC 5869 written out with the standard library: an oracle independent of `cryptography`."""
    prk = hmac.new(salt or bytes(32), ikm, hashlib.sha256).digest()
    okm, block, counter = b"", b"", 1
    while len(okm) < length:
        block = hmac.new(prk, block + info + bytes((counter,)), hashlib.sha256).digest()
        okm, counter = okm + block, counter + 1
    return okm[:length]


@pytest.mark.parametrize(("ikm", "salt", "info", "length", "okm"), RFC5869_SHA256)
def test_hkdf_matches_rfc5869_vectors(
        ikm: bytes, salt: bytes, info: bytes, length: int, okm: str) -> None:
    assert tenant_keys.hkdf_sha256(ikm, salt=salt, info=info, length=length).hex() == okm
    # The oracle used below is checked against the same vectors.
    assert _reference_hkdf(ikm, salt, info, length).hex() == okm


def test_tenant_key_is_hkdf_with_the_documented_salt_and_info() -> None:
    master = bytes(range(32))
    ring = keyring.Keyring("v1", {"v1": master})
    salt = hashlib.sha256(b"tenantry/v1/salt/v1").digest()

    key = tenant_keys.derive(ring, UID)

    assert key.key == _reference_hkdf(master, salt, b"tenantry/tenant-key/v1/" + UID.encode(), 32)
    expected_id = _reference_hkdf(master, salt, b"tenantry/tenant-key-id/v1/" + UID.encode(), 8)
    assert key.key_id == f"v1.{expected_id.hex()}"


def test_derivation_is_pinned_so_stored_ciphertexts_stay_readable() -> None:
    # A known answer: if this changes, every envelope ever written becomes unreadable.
    ring = keyring.Keyring("v1", {"v1": bytes(range(32))})

    key = tenant_keys.derive(ring, "00000000-0000-4000-8000-000000000001")

    assert key.key.hex() == "0509b00481998eefc839a7eab76bbbde508cf3168f08d28455a652e60e56e3ff"
    assert key.key_id == "v1.2bba852a2749efcf"


def test_each_tenant_and_each_master_version_gets_its_own_key() -> None:
    ring = keyring.add_version(keyring.generate())

    keys = {
        tenant_keys.derive(ring, UID, "v1").key,
        tenant_keys.derive(ring, OTHER_UID, "v1").key,
        tenant_keys.derive(ring, UID, "v2").key,
        tenant_keys.derive(ring, OTHER_UID, "v2").key,
    }

    assert len(keys) == 4
    assert all(len(key) == 32 for key in keys)


def test_same_version_name_in_another_keyring_gives_another_key_and_key_id() -> None:
    # Guards the cache too: it must not answer for "v1" by name alone.
    first, second = keyring.generate(), keyring.generate()

    one, two = tenant_keys.derive(first, UID), tenant_keys.derive(second, UID)

    assert one.key != two.key
    assert one.key_id != two.key_id


def test_derive_defaults_to_the_primary_version() -> None:
    ring = keyring.promote(keyring.add_version(keyring.generate()), "v2")

    assert tenant_keys.derive(ring, UID).master_version == "v2"
    assert tenant_keys.derive(ring, UID) == tenant_keys.derive(ring, UID, "v2")


def test_key_id_names_the_version_and_reveals_no_key_bytes() -> None:
    key = tenant_keys.derive(keyring.generate(), UID)

    assert re.fullmatch(r"v1\.[0-9a-f]{16}", key.key_id)
    assert key.fingerprint.hex() not in key.key.hex()


def test_repr_shows_no_key_bytes() -> None:
    key = tenant_keys.derive(keyring.generate(), UID)

    assert key.key.hex() not in repr(key)
    assert repr(key.key) not in repr(key)


@pytest.mark.parametrize("uid", [
    "acme",  # a tenant name: the mistake the UUID check exists for
    "3F2B8C1E-7A4D-4E2F-9B1C-5D6E7F8A9B0C",
    "3f2b8c1e7a4d4e2f9b1c5d6e7f8a9b0c",
    "",
])
def test_tenant_uid_must_be_a_canonical_uuid(uid: str) -> None:
    with pytest.raises(errors.InvalidContextError, match=r"metadata\.uid"):
        tenant_keys.derive(keyring.generate(), uid)


def test_unknown_master_version_is_refused() -> None:
    with pytest.raises(errors.UnknownKeyVersionError, match="'v2'"):
        tenant_keys.derive(keyring.generate(), UID, "v2")
