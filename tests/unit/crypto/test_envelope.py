"""The envelope: round trip, context binding, tamper and truncation detection, key versions."""

from __future__ import annotations

import dataclasses

import pytest

from tenantry.crypto import envelope, errors, keyring, tenant_keys
from tests.unit.crypto.conftest import CREDENTIAL_UID, format_1_envelope

OTHER_UID = "a1b2c3d4-e5f6-4a7b-8c9d-0e1f2a3b4c5d"
SECRET = b"correct horse battery staple"


def test_round_trip(ring: keyring.Keyring, context: envelope.Context) -> None:
    sealed = envelope.seal_value(ring, context, SECRET)

    assert envelope.open_value(ring, context, sealed) == SECRET
    assert SECRET not in sealed


@pytest.mark.parametrize("plaintext", [b"", b"x", bytes(range(256)) * 40])
def test_round_trip_of_any_length(
        ring: keyring.Keyring, context: envelope.Context, plaintext: bytes) -> None:
    assert envelope.open_value(ring, context, envelope.seal_value(ring, context, plaintext)) \
        == plaintext


def test_sealing_twice_gives_different_envelopes(
        ring: keyring.Keyring, context: envelope.Context) -> None:
    first = envelope.seal_value(ring, context, SECRET)
    second = envelope.seal_value(ring, context, SECRET)

    assert first != second
    assert envelope.parse_header(first).nonce != envelope.parse_header(second).nonce


def test_header_is_readable_without_a_key(
        ring: keyring.Keyring, context: envelope.Context) -> None:
    sealed = envelope.seal_value(ring, context, SECRET)

    header = envelope.parse_header(sealed)

    assert header.format_version == envelope.FORMAT_V2
    assert header.master_version == "v1"
    assert header.key_id == tenant_keys.derive(ring, context.tenant_uid).key_id
    assert len(header.nonce) == 12
    assert len(sealed) == header.size + len(SECRET) + envelope.TAG_SIZE


@pytest.mark.parametrize(("change", "expected"), [
    ({"tenant_uid": OTHER_UID}, errors.KeyMismatchError),
    ({"namespace": "team-b"}, errors.AuthenticationError),
    ({"credential": "payments-db"}, errors.AuthenticationError),
    ({"field": "username"}, errors.AuthenticationError),
    ({"generation": 2}, errors.AuthenticationError),  # replay of an older generation
    ({"generation": 4}, errors.AuthenticationError),
    # A Credential deleted and re-created under the same name has a new UID.
    ({"credential_uid": OTHER_UID}, errors.AuthenticationError),
])
def test_envelope_moved_to_another_context_does_not_open(
        ring: keyring.Keyring, context: envelope.Context,
        change: dict[str, object], expected: type[errors.DecryptionError]) -> None:
    sealed = envelope.seal_value(ring, context, SECRET)
    elsewhere = dataclasses.replace(context, **change)  # type: ignore[arg-type]

    with pytest.raises(expected) as caught:
        envelope.open_value(ring, elsewhere, sealed)

    assert isinstance(caught.value, errors.DecryptionError)
    assert SECRET.decode() not in str(caught.value)


def test_context_encoding_is_unambiguous(ring: keyring.Keyring,
                                         context: envelope.Context) -> None:
    # With plain concatenation "team-a" + "b" and "team-" + "ab" would authenticate the same.
    one = dataclasses.replace(context, namespace="team-a", credential="b")
    two = dataclasses.replace(context, namespace="team-", credential="ab")
    sealed = envelope.seal_value(ring, one, SECRET)

    assert one.encoded != two.encoded
    with pytest.raises(errors.AuthenticationError):
        envelope.open_value(ring, two, sealed)


def test_every_single_bit_flip_is_detected(
        ring: keyring.Keyring, context: envelope.Context) -> None:
    sealed = envelope.seal_value(ring, context, SECRET)

    # Header (magic, format, version, key id), nonce, ciphertext and tag: every bit of each.
    for bit in range(len(sealed) * 8):
        tampered = bytearray(sealed)
        tampered[bit // 8] ^= 1 << (bit % 8)
        with pytest.raises(errors.DecryptionError) as caught:
            envelope.open_value(ring, context, bytes(tampered))
        assert SECRET.decode() not in str(caught.value), f"bit {bit}"


def test_every_truncation_is_detected(ring: keyring.Keyring, context: envelope.Context) -> None:
    sealed = envelope.seal_value(ring, context, SECRET)

    for length in range(len(sealed)):
        with pytest.raises(errors.DecryptionError):
            envelope.open_value(ring, context, sealed[:length])


def test_appended_bytes_are_detected(ring: keyring.Keyring, context: envelope.Context) -> None:
    sealed = envelope.seal_value(ring, context, SECRET)

    with pytest.raises(errors.AuthenticationError):
        envelope.open_value(ring, context, sealed + b"\x00")


def test_unknown_format_version_is_refused_clearly(
        ring: keyring.Keyring, context: envelope.Context) -> None:
    future = bytearray(envelope.seal_value(ring, context, SECRET))
    future[2] = 3

    with pytest.raises(errors.UnsupportedFormatError, match="format version 3 is not supported"):
        envelope.open_value(ring, context, bytes(future))
    with pytest.raises(errors.UnsupportedFormatError):
        envelope.parse_header(bytes(future))


def test_something_else_is_not_taken_for_an_envelope(
        ring: keyring.Keyring, context: envelope.Context) -> None:
    with pytest.raises(errors.MalformedCiphertextError, match="not a Tenantry envelope"):
        envelope.open_value(ring, context, b'{"password": "hunter2"}')


def test_older_master_version_still_opens_after_rotation(
        ring: keyring.Keyring, context: envelope.Context) -> None:
    old = envelope.seal_value(ring, context, SECRET)
    rotated = keyring.promote(keyring.add_version(ring), "v2")

    assert envelope.open_value(rotated, context, old) == SECRET
    assert envelope.parse_header(old).master_version == "v1"
    assert envelope.parse_header(envelope.seal_value(rotated, context, SECRET)).master_version \
        == "v2"


def test_removed_master_version_fails_naming_the_version(
        ring: keyring.Keyring, context: envelope.Context) -> None:
    old = envelope.seal_value(ring, context, SECRET)
    retired = keyring.retire(keyring.promote(keyring.add_version(ring), "v2"), "v1")

    with pytest.raises(errors.KeyVersionUnavailableError, match="'v1'") as caught:
        envelope.open_value(retired, context, old)

    assert caught.value.version == "v1"
    assert isinstance(caught.value, errors.DecryptionError)


def test_same_version_name_from_another_keyring_is_a_key_mismatch(
        ring: keyring.Keyring, context: envelope.Context) -> None:
    sealed = envelope.seal_value(ring, context, SECRET)

    with pytest.raises(errors.KeyMismatchError, match="different keyring"):
        envelope.open_value(keyring.generate(), context, sealed)


def test_reencrypt_moves_to_the_primary_version_and_the_new_generation(
        ring: keyring.Keyring, context: envelope.Context) -> None:
    old = envelope.seal_value(ring, context, SECRET)
    rotated = keyring.promote(keyring.add_version(ring), "v2")
    bumped = dataclasses.replace(context, generation=context.generation + 1)

    new = envelope.reencrypt(rotated, context, bumped, old)

    assert envelope.parse_header(new).master_version == "v2"
    assert envelope.open_value(rotated, bumped, new) == SECRET
    # Once the generation moves on, the old envelope is a stale replay, and vice versa.
    with pytest.raises(errors.AuthenticationError):
        envelope.open_value(rotated, bumped, old)
    with pytest.raises(errors.AuthenticationError):
        envelope.open_value(rotated, context, new)
    # v1 can now be retired without losing the value.
    assert envelope.open_value(keyring.retire(rotated, "v1"), bumped, new) == SECRET


def test_reencrypt_refuses_an_envelope_that_does_not_open(
        ring: keyring.Keyring, context: envelope.Context) -> None:
    sealed = envelope.seal_value(ring, context, SECRET)
    wrong = dataclasses.replace(context, field="username")

    with pytest.raises(errors.AuthenticationError):
        envelope.reencrypt(ring, wrong, context, sealed)


@pytest.mark.parametrize("change", [
    {"tenant_uid": "team-a"},
    {"credential_uid": "billing-db"},
    {"namespace": ""},
    {"credential": "x" * 254},
    {"generation": -1},
    {"generation": True},
])
def test_invalid_context_is_refused_at_construction(
        context: envelope.Context, change: dict[str, object]) -> None:
    with pytest.raises(errors.InvalidContextError):
        dataclasses.replace(context, **change)  # type: ignore[arg-type]


def test_text_plaintext_is_refused(ring: keyring.Keyring, context: envelope.Context) -> None:
    with pytest.raises(TypeError, match="bytes"):
        envelope.seal_value(ring, context, "hunter2")  # type: ignore[arg-type]


def test_a_context_without_the_credential_uid_cannot_seal(
        ring: keyring.Keyring, context: envelope.Context) -> None:
    unbound = dataclasses.replace(context, credential_uid=None)

    with pytest.raises(errors.InvalidContextError, match=r"Credential's metadata\.uid"):
        envelope.seal_value(ring, unbound, SECRET)
    # Nor open a bound envelope: the UID is part of what authenticates it.
    with pytest.raises(errors.InvalidContextError):
        envelope.open_value(ring, unbound, envelope.seal_value(ring, context, SECRET))


def test_format_1_envelopes_open_only_when_the_caller_vouches_for_them(
        ring: keyring.Keyring, context: envelope.Context) -> None:
    legacy = format_1_envelope(ring, context, SECRET)

    with pytest.raises(errors.UnboundEnvelopeError, match="not bound to a Credential UID") as no:
        envelope.open_value(ring, context, legacy)
    assert isinstance(no.value, errors.AuthenticationError)
    assert envelope.open_value(ring, context, legacy, allow_unbound=True) == SECRET
    # Re-encryption binds it: the new envelope is format 2 and opens only under this UID.
    bumped = dataclasses.replace(context, generation=context.generation + 1)
    bound = envelope.reencrypt(ring, context, bumped, legacy, allow_unbound=True)
    assert envelope.parse_header(bound).format_version == envelope.FORMAT_V2
    assert envelope.open_value(ring, bumped, bound) == SECRET
    with pytest.raises(errors.AuthenticationError):
        envelope.open_value(ring, dataclasses.replace(bumped, credential_uid=OTHER_UID), bound)


def test_a_bound_envelope_relabelled_as_format_1_does_not_open(
        ring: keyring.Keyring, context: envelope.Context) -> None:
    downgraded = bytearray(envelope.seal_value(ring, context, SECRET))
    downgraded[2] = envelope.FORMAT_V1

    with pytest.raises(errors.AuthenticationError):
        envelope.open_value(ring, context, bytes(downgraded), allow_unbound=True)


def test_the_credential_uid_is_in_the_aad_unambiguously(context: envelope.Context) -> None:
    assert CREDENTIAL_UID.encode() in context.encoded_v2
    assert CREDENTIAL_UID.encode() not in context.encoded
    assert context.encoded_v2.startswith(envelope.AAD_LABEL_V2)
