"""Sealing for GitOps: round trip, target binding, wrong key, tamper, key import/export."""

from __future__ import annotations

import base64
import dataclasses

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, x25519

from tenantry.crypto import errors, sealing
from tenantry.model import credential

SECRET = b"s3cr3t-api-token"


@pytest.fixture
def operator_key() -> x25519.X25519PrivateKey:
    return sealing.generate_private_key()


@pytest.fixture
def target() -> sealing.Target:
    return sealing.Target(namespace="team-a", name="billing-db", field="password")


def test_round_trip(operator_key: x25519.X25519PrivateKey, target: sealing.Target) -> None:
    sealed = sealing.seal(operator_key.public_key(), target, SECRET)

    assert sealing.unseal(operator_key, target, sealed) == SECRET
    assert SECRET not in base64.b64decode(sealed)


def test_sealed_value_is_accepted_by_the_credential_schema(
        operator_key: x25519.X25519PrivateKey, target: sealing.Target) -> None:
    sealed = sealing.seal(operator_key.public_key(), target, b"")

    spec = credential.Sealed.model_validate({"encryptedData": {target.field: sealed}})

    assert spec.encrypted_data[target.field] == sealed


def test_largest_value_fits_the_credential_schema_and_one_more_byte_is_refused(
        operator_key: x25519.X25519PrivateKey, target: sealing.Target) -> None:
    largest = sealing.seal(operator_key.public_key(), target, bytes(sealing.MAX_PLAINTEXT))

    credential.Sealed.model_validate({"encryptedData": {target.field: largest}})
    with pytest.raises(errors.ValueTooLargeError, match="at most"):
        sealing.seal(operator_key.public_key(), target, bytes(sealing.MAX_PLAINTEXT + 1))


@pytest.mark.parametrize("change", [
    {"namespace": "team-b"},
    {"name": "payments-db"},
    {"field": "username"},
])
def test_applied_under_another_namespace_name_or_field_does_not_open(
        operator_key: x25519.X25519PrivateKey, target: sealing.Target,
        change: dict[str, str]) -> None:
    sealed = sealing.seal(operator_key.public_key(), target, SECRET)
    elsewhere = dataclasses.replace(target, **change)

    with pytest.raises(errors.AuthenticationError, match="sealed for another namespace"):
        sealing.unseal(operator_key, elsewhere, sealed)


def test_target_encoding_is_unambiguous(operator_key: x25519.X25519PrivateKey) -> None:
    sealed = sealing.seal(operator_key.public_key(), sealing.Target("team-a", "b", "f"), SECRET)

    with pytest.raises(errors.AuthenticationError):
        sealing.unseal(operator_key, sealing.Target("team-", "ab", "f"), sealed)


def test_another_operator_key_is_refused_naming_this_keys_fingerprint(
        operator_key: x25519.X25519PrivateKey, target: sealing.Target) -> None:
    other_cluster = sealing.generate_private_key()
    sealed = sealing.seal(other_cluster.public_key(), target, SECRET)

    with pytest.raises(errors.KeyMismatchError) as caught:
        sealing.unseal(operator_key, target, sealed)

    assert sealing.fingerprint(operator_key) in str(caught.value)
    assert sealing.recipient_hint(sealed) in str(caught.value)


def test_every_single_bit_flip_is_detected(
        operator_key: x25519.X25519PrivateKey, target: sealing.Target) -> None:
    raw = base64.b64decode(sealing.seal(operator_key.public_key(), target, SECRET))

    for bit in range(len(raw) * 8):
        tampered = bytearray(raw)
        tampered[bit // 8] ^= 1 << (bit % 8)
        with pytest.raises(errors.DecryptionError):
            sealing.unseal(operator_key, target, base64.b64encode(tampered).decode())


def test_every_truncation_is_detected(
        operator_key: x25519.X25519PrivateKey, target: sealing.Target) -> None:
    raw = base64.b64decode(sealing.seal(operator_key.public_key(), target, SECRET))

    for length in range(len(raw)):
        with pytest.raises(errors.DecryptionError):
            sealing.unseal(operator_key, target, base64.b64encode(raw[:length]).decode())


def test_non_canonical_base64_is_refused(
        operator_key: x25519.X25519PrivateKey, target: sealing.Target) -> None:
    # 59 bytes of overhead + 17 = 76 bytes, one more than a multiple of 3: the text ends in "=="
    # and the character before the padding carries 4 unused bits. Setting one of them changes
    # no decoded byte, and still the edited text must not be accepted.
    sealed = sealing.seal(operator_key.public_key(), target, b"x" * 17)
    assert sealed.endswith("==")
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    edited = sealed[:-3] + alphabet[alphabet.index(sealed[-3]) ^ 1] + "=="
    assert edited != sealed
    assert base64.b64decode(edited) == base64.b64decode(sealed)

    with pytest.raises(errors.MalformedCiphertextError, match="standard padded base64"):
        sealing.unseal(operator_key, target, edited)


@pytest.mark.parametrize("text", ["", "not base64!", "dGVzdA", "-_-_"])
def test_garbage_is_refused_as_malformed(
        operator_key: x25519.X25519PrivateKey, target: sealing.Target, text: str) -> None:
    with pytest.raises(errors.MalformedCiphertextError):
        sealing.unseal(operator_key, target, text)


def test_unknown_format_version_is_refused_clearly(
        operator_key: x25519.X25519PrivateKey, target: sealing.Target) -> None:
    raw = bytearray(base64.b64decode(sealing.seal(operator_key.public_key(), target, SECRET)))
    raw[2] = 9

    with pytest.raises(errors.UnsupportedFormatError, match="format version 9"):
        sealing.unseal(operator_key, target, base64.b64encode(raw).decode())


def test_low_order_ephemeral_key_is_refused(
        operator_key: x25519.X25519PrivateKey, target: sealing.Target) -> None:
    raw = bytearray(base64.b64decode(sealing.seal(operator_key.public_key(), target, SECRET)))
    raw[11:43] = bytes(32)  # the all-zero point: X25519 with it gives an all-zero secret

    with pytest.raises(errors.MalformedCiphertextError, match="invalid ephemeral key"):
        sealing.unseal(operator_key, target, base64.b64encode(raw).decode())


# -- keys --------------------------------------------------------------------------------------

def test_public_key_travels_as_pem_or_base64(
        operator_key: x25519.X25519PrivateKey, target: sealing.Target) -> None:
    pem = sealing.public_key_to_pem(operator_key.public_key())
    one_line = sealing.public_key_to_base64(operator_key.public_key())

    for exported in (pem, pem.decode(), one_line):
        imported = sealing.load_public_key(exported)
        assert sealing.fingerprint(imported) == sealing.fingerprint(operator_key)
        assert sealing.unseal(operator_key, target, sealing.seal(imported, target, SECRET)) \
            == SECRET


def test_private_key_round_trips_through_pem(
        operator_key: x25519.X25519PrivateKey, target: sealing.Target) -> None:
    sealed = sealing.seal(operator_key.public_key(), target, SECRET)

    reloaded = sealing.load_private_key(sealing.private_key_to_pem(operator_key))

    assert sealing.unseal(reloaded, target, sealed) == SECRET


def test_fingerprints_tell_keys_apart_and_hints_match_them(
        operator_key: x25519.X25519PrivateKey, target: sealing.Target) -> None:
    other = sealing.generate_private_key()
    sealed = sealing.seal(operator_key.public_key(), target, SECRET)

    assert sealing.fingerprint(operator_key) != sealing.fingerprint(other)
    assert sealing.fingerprint(operator_key) == sealing.fingerprint(operator_key.public_key())
    assert sealing.fingerprint(operator_key).startswith("sha256:" + sealing.recipient_hint(sealed))


def test_a_non_x25519_key_is_refused() -> None:
    p256 = ec.generate_private_key(ec.SECP256R1())
    public_pem = p256.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    private_pem = p256.private_bytes(serialization.Encoding.PEM,
                                     serialization.PrivateFormat.PKCS8,
                                     serialization.NoEncryption())

    with pytest.raises(errors.SealingKeyError, match="X25519"):
        sealing.load_public_key(public_pem)
    with pytest.raises(errors.SealingKeyError, match="X25519"):
        sealing.load_private_key(private_pem)


@pytest.mark.parametrize("text", ["", "hello", base64.b64encode(bytes(31)).decode(),
                                  "-----BEGIN PUBLIC KEY-----\nbroken\n-----END PUBLIC KEY-----"])
def test_malformed_public_key_is_refused(text: str) -> None:
    with pytest.raises(errors.SealingKeyError):
        sealing.load_public_key(text)
