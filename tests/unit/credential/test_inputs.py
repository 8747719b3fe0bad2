"""Inputs: sealed values open only where they were sealed for; the source Secret is classified."""

from __future__ import annotations

import base64
from typing import Any

import pytest

from tenantry.controller.credential import inputs
from tenantry.controller.credential.plaintext import Plaintext
from tenantry.controller.credential.problems import Problem, Reason
from tenantry.crypto import custody, sealing
from tenantry.model import credential
from tests.unit.credential.conftest import OTHER_PLAINTEXT, PLAINTEXT


def _seal(keys: custody.SealingKeys, namespace: str, name: str, field: str,
          value: bytes = PLAINTEXT) -> str:
    return sealing.seal(keys.primary.public_key(), sealing.Target(namespace, name, field), value)


def test_sealed_values_open_in_memory(sealing_keys: custody.SealingKeys) -> None:
    opened = inputs.unseal(sealing_keys, "acme-prod", "payments-api", {
        "token": _seal(sealing_keys, "acme-prod", "payments-api", "token"),
        "user": _seal(sealing_keys, "acme-prod", "payments-api", "user", OTHER_PLAINTEXT),
    })

    assert opened == {"token": Plaintext(PLAINTEXT), "user": Plaintext(OTHER_PLAINTEXT)}


@pytest.mark.parametrize(("namespace", "name", "field"), [
    ("other-tenant-ns", "payments-api", "token"),   # replayed into another namespace/tenant
    ("acme-prod", "billing-api", "token"),          # another Credential
    ("acme-prod", "payments-api", "password"),      # another field
])
def test_replayed_elsewhere_it_is_a_target_mismatch(sealing_keys: custody.SealingKeys,
                                                     namespace: str, name: str,
                                                     field: str) -> None:
    sealed = _seal(sealing_keys, namespace, name, field)

    problem = inputs.unseal(sealing_keys, "acme-prod", "payments-api", {"token": sealed})

    assert isinstance(problem, Problem)
    assert problem.reason is Reason.SEAL_TARGET_MISMATCH
    assert "acme-prod/payments-api" in problem.message
    assert "tenantry seal --namespace acme-prod --name payments-api --field token" \
        in problem.message
    assert PLAINTEXT.decode() not in problem.message


def test_sealed_for_another_key_is_a_bad_seal(sealing_keys: custody.SealingKeys) -> None:
    other = custody.SealingKeys((sealing.generate_private_key(),))

    problem = inputs.unseal(sealing_keys, "acme-prod", "payments-api",
                            {"token": _seal(other, "acme-prod", "payments-api", "token")})

    assert isinstance(problem, Problem)
    assert problem.reason is Reason.BAD_SEAL
    assert sealing_keys.fingerprint in problem.message
    assert "--fetch-key" in problem.message


@pytest.mark.parametrize("sealed", [
    "AQAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA==",  # the old placeholder
    "not base64!",
    base64.b64encode(b"TS\x01" + b"\x00" * 10).decode(),  # truncated
])
def test_not_a_sealed_value_is_a_bad_seal(sealing_keys: custody.SealingKeys,
                                          sealed: str) -> None:
    problem = inputs.unseal(sealing_keys, "acme-prod", "payments-api", {"token": sealed})

    assert isinstance(problem, Problem)
    assert problem.reason is Reason.BAD_SEAL
    assert "field 'token'" in problem.message


def test_every_failing_field_is_named(sealing_keys: custody.SealingKeys) -> None:
    problem = inputs.unseal(sealing_keys, "acme-prod", "payments-api", {
        "a": _seal(sealing_keys, "elsewhere", "payments-api", "a"),
        "b": "AAAAAAAAAAAAAAAAAAAAAAAA",
        "c": _seal(sealing_keys, "acme-prod", "payments-api", "c"),
    })

    assert isinstance(problem, Problem)
    assert "field 'a'" in problem.message and "field 'b'" in problem.message
    assert "field 'c'" not in problem.message


# -- the fromSecret source -----------------------------------------------------------------------

def _secret(data: dict[str, bytes] | None, *, type_: str = "Opaque",
            labels: dict[str, str] | None = None) -> dict[str, Any]:
    secret: dict[str, Any] = {
        "type": type_, "metadata": {"name": "plain", "namespace": "acme-prod",
                                    "uid": "u-1", "resourceVersion": "42",
                                    "labels": labels or {}}}
    if data is not None:
        secret["data"] = {k: base64.b64encode(v).decode() for k, v in data.items()}
    return secret


def _from(keys: list[str] | None = None) -> credential.FromSecret:
    return credential.FromSecret(name="plain", keys=keys or [])


def test_fresh_source_takes_the_wanted_keys_only() -> None:
    source = inputs.read_source(_secret({"user": b"u", "password": PLAINTEXT, "extra": b"x"}),
                                _from(["user", "password"]), "acme-prod")

    assert source.state is inputs.SourceState.FRESH
    assert source.fields == {"user": Plaintext(b"u"), "password": Plaintext(PLAINTEXT)}
    assert (source.uid, source.resource_version) == ("u-1", "42")


def test_fresh_source_without_keys_takes_everything() -> None:
    source = inputs.read_source(_secret({"a": b"1", "b": b"2"}), _from(), "acme-prod")

    assert sorted(source.fields) == ["a", "b"]


def test_absent_source() -> None:
    source = inputs.read_source(None, _from(), "acme-prod")

    assert source.state is inputs.SourceState.ABSENT
    assert source.problem is not None and source.problem.reason is Reason.SOURCE_SECRET_MISSING
    assert "acme-prod/plain" in source.problem.message


def test_emptied_and_incomplete_sources() -> None:
    emptied = inputs.read_source(_secret(None), _from(["user"]), "acme-prod")
    incomplete = inputs.read_source(_secret({"user": b"u"}), _from(["user", "password"]),
                                    "acme-prod")

    assert emptied.state is inputs.SourceState.EMPTY
    assert incomplete.state is inputs.SourceState.INCOMPLETE
    assert incomplete.problem is not None
    assert incomplete.problem.reason is Reason.SOURCE_KEY_MISSING
    assert "password" in incomplete.problem.message
    assert not incomplete.fields


@pytest.mark.parametrize(("type_", "labels", "why"), [
    (credential.ENCRYPTED_SECRET_TYPE, {}, "Tenantry ciphertext Secret"),
    ("kubernetes.io/service-account-token", {}, "ServiceAccount token"),
    ("bootstrap.kubernetes.io/token", {}, "bootstrap token"),
    ("Opaque", {"tenantry.dev/tenant": "acme"}, "managed by Tenantry"),
    ("Opaque", {"app.kubernetes.io/managed-by": "tenantry"}, "managed by Tenantry"),
])
def test_secrets_that_are_not_the_users_to_give_are_refused(
        type_: str, labels: dict[str, str], why: str) -> None:
    source = inputs.read_source(_secret({"token": PLAINTEXT}, type_=type_, labels=labels),
                                _from(), "acme-prod")

    assert source.state is inputs.SourceState.REFUSED
    assert source.problem is not None
    assert source.problem.reason is Reason.SOURCE_SECRET_REFUSED
    assert why in source.problem.message
    assert not source.fields
