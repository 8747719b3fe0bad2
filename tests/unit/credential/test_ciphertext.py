"""The ciphertext Secret: only envelopes, bound to their context; any change is detected."""

from __future__ import annotations

import base64
import copy
import json
from typing import Any

import pytest

from tenantry.controller.credential import ciphertext
from tenantry.controller.credential.plaintext import Plaintext
from tenantry.crypto import keyring
from tenantry.model import credential
from tests.unit.credential.conftest import OTHER_PLAINTEXT, OTHER_TENANT_UID, PLAINTEXT
from tests.unit.crypto.conftest import format_1_envelope

FIELDS = {"token": Plaintext(PLAINTEXT), "user": Plaintext(OTHER_PLAINTEXT)}
State = ciphertext.State


def _stored(ring: keyring.Keyring, owner: ciphertext.Owner, tenant: ciphertext.TenantRef,
            generation: int = 3, fields: dict[str, Plaintext] | None = None) -> dict[str, Any]:
    sealed = ciphertext.encrypt(ring, owner, tenant.uid, generation, fields or FIELDS)
    return ciphertext.manifest(owner, tenant, sealed, "sealed")


def _verify(secret: dict[str, Any] | None, ring: keyring.Keyring, owner: ciphertext.Owner,
            tenant: ciphertext.TenantRef, generation: int | None = 3,
            fields: tuple[str, ...] = ("token", "user")) -> ciphertext.Verdict:
    return ciphertext.verify(secret, ring=ring, owner=owner, tenant=tenant,
                             status_generation=generation, expected_fields=fields)


def test_names_fit_kubernetes_limits() -> None:
    assert ciphertext.secret_name("payments-api") == "tenantry-credential-payments-api"
    long = "a" * 250
    assert len(ciphertext.secret_name(long)) <= 253
    assert ciphertext.secret_name(long) != ciphertext.secret_name(long[:-1] + "b")
    assert ciphertext.label_value("payments-api") == "payments-api"
    assert len(ciphertext.label_value(long)) <= 63


def test_manifest_holds_only_envelopes_and_public_bookkeeping(
        ring: keyring.Keyring, owner: ciphertext.Owner, tenant: ciphertext.TenantRef) -> None:
    secret = _stored(ring, owner, tenant)

    assert secret["type"] == credential.ENCRYPTED_SECRET_TYPE == "tenantry.dev/encrypted"
    meta = secret["metadata"]
    assert meta["name"] == "tenantry-credential-payments-api"
    assert meta["labels"] == {"tenantry.dev/tenant": "acme",
                              "app.kubernetes.io/managed-by": "tenantry",
                              "tenantry.dev/credential": "payments-api"}
    assert meta["ownerReferences"] == [{
        "apiVersion": "tenantry.dev/v1alpha1", "kind": "Credential", "name": "payments-api",
        "uid": owner.uid, "controller": True, "blockOwnerDeletion": True}]
    key_id = meta["annotations"]["tenantry.dev/key-id"]
    assert key_id.startswith("v1.")
    assert meta["annotations"]["tenantry.dev/encryption-generation"] == "3"
    assert sorted(secret["data"]) == ["token", "user"]
    text = json.dumps(secret)
    for value in (PLAINTEXT, OTHER_PLAINTEXT):
        assert value.decode() not in text
        assert base64.b64encode(value).decode() not in text
    for value in secret["data"].values():
        assert base64.b64decode(value).startswith(b"TE\x02")


def test_what_was_written_verifies(ring: keyring.Keyring, owner: ciphertext.Owner,
                                   tenant: ciphertext.TenantRef) -> None:
    verdict = _verify(_stored(ring, owner, tenant), ring, owner, tenant)

    assert verdict.state is State.INTACT
    assert verdict.stored is not None
    assert verdict.stored.fields == FIELDS
    assert verdict.stored.generation == 3
    assert verdict.stored.master_versions == {"v1"}
    assert verdict.stored.source == "sealed"


def _flip_byte(secret: dict[str, Any]) -> None:
    raw = bytearray(base64.b64decode(secret["data"]["token"]))
    raw[-1] ^= 1
    secret["data"]["token"] = base64.b64encode(bytes(raw)).decode()


def _swap_fields(secret: dict[str, Any]) -> None:
    data = secret["data"]
    data["token"], data["user"] = data["user"], data["token"]


def _add_field(secret: dict[str, Any]) -> None:
    secret["data"]["extra"] = base64.b64encode(b"x").decode()


def _remove_field(secret: dict[str, Any]) -> None:
    del secret["data"]["user"]


def _plaintext_instead(secret: dict[str, Any]) -> None:
    secret["data"]["token"] = base64.b64encode(b"plain value").decode()


def _not_base64(secret: dict[str, Any]) -> None:
    secret["data"]["token"] = "%%%"


def _truncate(secret: dict[str, Any]) -> None:
    secret["data"]["token"] = secret["data"]["token"][:24]


def _empty(secret: dict[str, Any]) -> None:
    secret["data"] = {}


@pytest.mark.parametrize("tamper", [_flip_byte, _swap_fields, _add_field, _remove_field,
                                    _plaintext_instead, _not_base64, _truncate, _empty])
def test_edits_are_detected(ring: keyring.Keyring, owner: ciphertext.Owner,
                            tenant: ciphertext.TenantRef, tamper: Any) -> None:
    secret = _stored(ring, owner, tenant)
    secret["metadata"]["managedFields"] = [
        {"manager": "kubectl-edit", "operation": "Update", "time": "2026-01-01T00:00:00Z"}]
    tamper(secret)

    verdict = _verify(secret, ring, owner, tenant)

    assert verdict.state is State.TAMPERED
    assert "kubectl-edit" in verdict.detail
    assert PLAINTEXT.decode() not in verdict.detail


def test_envelopes_replayed_from_an_older_generation_are_detected(
        ring: keyring.Keyring, owner: ciphertext.Owner, tenant: ciphertext.TenantRef) -> None:
    # The whole older Secret, annotation included: status (generation 4) is what counts.
    old = _stored(ring, owner, tenant, generation=3)

    assert _verify(old, ring, owner, tenant, generation=4).state is State.TAMPERED


def test_a_secret_one_write_ahead_of_status_is_the_operators_own(
        ring: keyring.Keyring, owner: ciphertext.Owner, tenant: ciphertext.TenantRef) -> None:
    # The operator writes the Secret, then status; stopped in between, status lags one write.
    ahead = _stored(ring, owner, tenant, generation=5)

    verdict = _verify(ahead, ring, owner, tenant, generation=4, fields=())
    assert verdict.state is State.INTACT
    assert verdict.stored is not None and verdict.stored.generation == 5
    # A forged annotation does not help: the envelopes must authenticate at that generation.
    forged = _stored(ring, owner, tenant, generation=3)
    forged["metadata"]["annotations"]["tenantry.dev/encryption-generation"] = "9"
    assert _verify(forged, ring, owner, tenant, generation=4).state is State.TAMPERED


def test_envelopes_of_another_credential_or_tenant_are_detected(
        ring: keyring.Keyring, owner: ciphertext.Owner, tenant: ciphertext.TenantRef) -> None:
    secret = _stored(ring, owner, tenant)
    other_name = _stored(ring, ciphertext.Owner(owner.namespace, "billing-api", owner.uid),
                         tenant)
    other_tenant = _stored(ring, owner, ciphertext.TenantRef("globex", OTHER_TENANT_UID))
    other_ring = _stored(keyring.generate(), owner, tenant)

    for donor in (other_name, other_tenant, other_ring):
        copied = copy.deepcopy(secret)
        copied["data"] = donor["data"]
        verdict = _verify(copied, ring, owner, tenant)
        assert verdict.state is State.TAMPERED, donor
    copied = copy.deepcopy(secret)
    copied["data"] = other_tenant["data"]
    assert "another tenant's key" in _verify(copied, ring, owner, tenant).detail


def test_a_retired_master_version_is_not_tampering(
        ring: keyring.Keyring, owner: ciphertext.Owner, tenant: ciphertext.TenantRef) -> None:
    secret = _stored(ring, owner, tenant)
    rotated = keyring.retire(keyring.promote(keyring.add_version(ring), "v2"), "v1")

    verdict = _verify(secret, rotated, owner, tenant)

    assert verdict.state is State.KEY_UNAVAILABLE
    assert "'v1'" in verdict.detail


def test_a_re_created_tenant_cannot_read_its_predecessors_secret(
        ring: keyring.Keyring, owner: ciphertext.Owner, tenant: ciphertext.TenantRef) -> None:
    secret = _stored(ring, owner, tenant)

    verdict = _verify(secret, ring, owner, ciphertext.TenantRef("acme", OTHER_TENANT_UID))

    assert verdict.state is State.TENANT_CHANGED
    assert OTHER_TENANT_UID in verdict.detail


def test_ownership(ring: keyring.Keyring, owner: ciphertext.Owner,
                   tenant: ciphertext.TenantRef) -> None:
    secret = _stored(ring, owner, tenant)
    absent = _verify(None, ring, owner, tenant)
    assert absent.state is State.ABSENT

    predecessor = copy.deepcopy(secret)
    predecessor["metadata"]["ownerReferences"][0]["uid"] = "older-uid"
    assert _verify(predecessor, ring, owner, tenant).state is State.PREDECESSOR

    unowned = {"type": "Opaque", "metadata": {"name": secret["metadata"]["name"]},
               "data": {"token": "eA=="}}
    assert _verify(unowned, ring, owner, tenant).state is State.FOREIGN

    # An admin removed the owner reference: labels and type still say it is ours.
    orphaned = copy.deepcopy(secret)
    del orphaned["metadata"]["ownerReferences"]
    assert _verify(orphaned, ring, owner, tenant).state is State.INTACT
    assert not ciphertext.metadata_matches(orphaned, secret)


def test_metadata_drift(ring: keyring.Keyring, owner: ciphertext.Owner,
                        tenant: ciphertext.TenantRef) -> None:
    secret = _stored(ring, owner, tenant)
    assert ciphertext.metadata_matches(secret, secret)

    extra = copy.deepcopy(secret)
    extra["metadata"]["labels"]["team"] = "payments"
    assert ciphertext.metadata_matches(extra, secret)

    for part, key in (("labels", "tenantry.dev/tenant"),
                      ("annotations", "tenantry.dev/key-id")):
        changed = copy.deepcopy(secret)
        changed["metadata"][part][key] = "something-else"
        assert not ciphertext.metadata_matches(changed, secret)


def test_snapshots_restore_only_what_still_authenticates(
        ring: keyring.Keyring, owner: ciphertext.Owner, tenant: ciphertext.TenantRef) -> None:
    sealed = ciphertext.encrypt(ring, owner, tenant.uid, 3, FIELDS)
    snapshot = ciphertext.Snapshot(tenant.uid, 3, sealed.envelopes, "secret/plain")

    assert ciphertext.open_snapshot(ring, owner, tenant.uid, snapshot) == FIELDS
    assert ciphertext.open_snapshot(ring, owner, OTHER_TENANT_UID, snapshot) is None
    assert ciphertext.open_snapshot(keyring.generate(), owner, tenant.uid, snapshot) is None
    wrong_generation = ciphertext.Snapshot(tenant.uid, 4, sealed.envelopes, "secret/plain")
    assert ciphertext.open_snapshot(ring, owner, tenant.uid, wrong_generation) is None


def test_an_interrupted_write_may_change_the_fields(
        ring: keyring.Keyring, owner: ciphertext.Owner, tenant: ciphertext.TenantRef) -> None:
    # Status (generation 3) lists token and user; the write of generation 4 kept only token.
    ahead = _stored(ring, owner, tenant, generation=4, fields={"token": Plaintext(PLAINTEXT)})

    verdict = _verify(ahead, ring, owner, tenant, generation=3, fields=("token", "user"))

    assert verdict.state is State.INTACT
    assert verdict.stored is not None and list(verdict.stored.fields) == ["token"]
    # At the generation status names, the same change is tampering.
    same_generation = _stored(ring, owner, tenant, generation=3,
                              fields={"token": Plaintext(PLAINTEXT)})
    verdict = _verify(same_generation, ring, owner, tenant, generation=3,
                      fields=("token", "user"))
    assert verdict.state is State.TAMPERED
    assert "field(s) user removed" in verdict.detail


def _recreated(owner: ciphertext.Owner) -> ciphertext.Owner:
    return ciphertext.Owner(owner.namespace, owner.name, "d4c3b2a1-0f9e-4d8c-b7a6-5f4e3d2c1b0a")


def test_a_predecessors_envelopes_restored_for_a_recreated_credential_do_not_open(
        ring: keyring.Keyring, owner: ciphertext.Owner, tenant: ciphertext.TenantRef) -> None:
    # The old Credential's Secret, restored with its owner re-pointed at the new Credential
    # (same namespace and name, new UID): everything but the envelopes' binding says "ours".
    successor = _recreated(owner)
    restored = _stored(ring, owner, tenant)
    restored["metadata"]["ownerReferences"][0]["uid"] = successor.uid

    for status_generation in (None, 3):  # whatever status the new object has, or lacks
        verdict = _verify(restored, ring, successor, tenant, generation=status_generation)
        assert verdict.state is State.TAMPERED, verdict
        assert verdict.stored is None
        assert "does not authenticate" in verdict.detail
        assert PLAINTEXT.decode() not in verdict.detail


def _as_format_1(secret: dict[str, Any], ring: keyring.Keyring, owner: ciphertext.Owner,
                 tenant: ciphertext.TenantRef, generation: int = 3) -> dict[str, Any]:
    """The Secret as an operator before Credential UIDs were bound would have written it."""
    legacy = copy.deepcopy(secret)
    for field, value in FIELDS.items():
        old = ciphertext.context(owner, tenant.uid, field, generation)
        raw = format_1_envelope(ring, old, value.reveal())
        legacy["data"][field] = base64.b64encode(raw).decode()
    return legacy


def test_format_1_envelopes_are_trusted_only_for_the_credential_whose_status_has_them(
        ring: keyring.Keyring, owner: ciphertext.Owner, tenant: ciphertext.TenantRef) -> None:
    legacy = _as_format_1(_stored(ring, owner, tenant), ring, owner, tenant)

    # The Credential that has them in its status (it existed when they were written): opened,
    # and marked for re-encryption under the UID.
    verdict = _verify(legacy, ring, owner, tenant, generation=3)
    assert verdict.state is State.INTACT
    assert verdict.stored is not None and verdict.stored.unbound
    assert verdict.stored.fields == FIELDS
    # A Credential without status (re-created under the same name, Secret restored): refused.
    successor = _recreated(owner)
    legacy["metadata"]["ownerReferences"][0]["uid"] = successor.uid
    refused = _verify(legacy, ring, successor, tenant, generation=None)
    assert refused.state is State.TAMPERED
    assert "not bound to this Credential's UID" in refused.detail
