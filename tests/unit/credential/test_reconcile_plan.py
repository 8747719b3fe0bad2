"""The reconciler's pure decisions: tenant, scope, what to write, status, events, audit."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest

from tenantry.controller.credential import ciphertext, reconcile
from tenantry.controller.credential.plaintext import Plaintext
from tenantry.controller.credential.problems import Problem, Reason
from tenantry.model import credential
from tests.unit.credential.conftest import OTHER_PLAINTEXT, PLAINTEXT, TENANT_UID

FRESH = {"token": Plaintext(PLAINTEXT)}
CHANGED = {"token": Plaintext(OTHER_PLAINTEXT)}
State = ciphertext.State


def _intact(fields: dict[str, Plaintext], generation: int = 3,
            versions: frozenset[str] = frozenset({"v1"})) -> ciphertext.Verdict:
    return ciphertext.Verdict(State.INTACT, stored=ciphertext.Stored(
        generation=generation, key_id="v1.0011223344556677", master_versions=versions,
        fields=fields, envelopes={k: b"TE..." for k in fields}, source="sealed"))


def _plan(verdict: ciphertext.Verdict, fresh: dict[str, Plaintext] | None = FRESH,
          **kwargs: Any) -> reconcile.Plan:
    options: dict[str, Any] = {"input_problem": None, "had_secret": True,
                               "status_generation": 3, "primary": "v1"}
    options.update(kwargs)
    return reconcile.plan(verdict, fresh=fresh, **options)


# -- tenant and scope ----------------------------------------------------------------------------

def _namespace(labels: dict[str, str]) -> dict[str, Any]:
    return {"metadata": {"name": "acme-prod", "labels": labels}}


def _tenant(namespaces: list[str], deleting: bool = False) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": "acme", "uid": TENANT_UID}
    if deleting:
        meta["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    return {"metadata": meta, "spec": {"namespaces": [{"name": n} for n in namespaces]}}


def test_the_tenant_listing_the_labelled_namespace_owns_it() -> None:
    found = reconcile.tenant_of("acme-prod", _namespace({"tenantry.dev/tenant": "acme"}),
                                _tenant(["acme-prod", "acme-staging"]))

    assert found == ciphertext.TenantRef("acme", TENANT_UID)


@pytest.mark.parametrize(("namespace", "tenant", "reason", "words"), [
    (_namespace({}), None, Reason.NAMESPACE_NOT_OWNED, "belongs to no Tenant"),
    (None, None, Reason.NAMESPACE_NOT_OWNED, "belongs to no Tenant"),
    (_namespace({"tenantry.dev/tenant": "acme"}), None, Reason.UNKNOWN_TENANT,
     "tenant acme, which does not exist"),
    (_namespace({"tenantry.dev/tenant": "acme"}), _tenant(["acme-prod"], deleting=True),
     Reason.UNKNOWN_TENANT, "being deleted"),
    (_namespace({"tenantry.dev/tenant": "acme"}), _tenant(["acme-staging"]),
     Reason.NAMESPACE_NOT_OWNED, "does not list it"),
])
def test_namespaces_no_tenant_owns_are_refused(namespace: dict[str, Any] | None,
                                               tenant: dict[str, Any] | None, reason: Reason,
                                               words: str) -> None:
    found = reconcile.tenant_of("acme-prod", namespace, tenant)

    assert isinstance(found, Problem)
    assert found.reason is reason
    assert words in found.message
    assert found.retry


def _spec(**fields: Any) -> credential.CredentialSpec:
    return credential.CredentialSpec.model_validate(
        {"sealed": {"encryptedData": {"token": "A" * 16}}, **fields})


def test_scope_and_service_accounts() -> None:
    assert reconcile.scope_problem(_spec(scope="caller",
                                         allowedServiceAccounts=["checkout"])) is None
    assert reconcile.scope_problem(_spec(scope="platform")) is None
    assert reconcile.scope_problem(_spec(scope="participant")) is None
    platform = reconcile.scope_problem(_spec(scope="platform",
                                             allowedServiceAccounts=["checkout"]))
    default = reconcile.scope_problem(_spec(scope="caller", allowedServiceAccounts=["default"]))
    for problem in (platform, default):
        assert problem is not None and problem.reason is Reason.INVALID_SCOPE
        assert not problem.retry


# -- plan ----------------------------------------------------------------------------------------

def test_first_encryption() -> None:
    decided = _plan(ciphertext.Verdict(State.ABSENT), had_secret=False, status_generation=None)

    assert decided.write == FRESH
    assert (decided.generation, decided.action, decided.why) == (
        1, reconcile.ENCRYPT, "first encryption")
    assert decided.tamper is None and decided.consume_source


def test_nothing_to_do_when_stored_matches() -> None:
    decided = _plan(_intact(FRESH))

    assert decided.write is None and decided.problem is None
    assert decided.generation == 3
    assert decided.consume_source  # a refilled source holding the same values is still removed


def test_changed_content_bumps_the_generation() -> None:
    decided = _plan(_intact(FRESH), fresh=CHANGED)

    assert decided.write == CHANGED
    assert (decided.generation, decided.action) == (4, reconcile.ENCRYPT)


def test_envelopes_not_bound_to_the_credential_uid_are_re_encrypted() -> None:
    verdict = _intact(FRESH)
    unbound = ciphertext.Verdict(State.INTACT, stored=dataclasses.replace(
        verdict.stored, unbound=True))  # type: ignore[type-var]
    for fresh in (FRESH, None):
        decided = _plan(unbound, fresh=fresh)
        assert (decided.action, decided.generation, decided.write) == (
            reconcile.REENCRYPT, 4, FRESH)
        assert "Credential's UID" in decided.why


def test_a_new_primary_master_version_re_encrypts() -> None:
    decided = _plan(_intact(FRESH), primary="v2")
    from_stored = _plan(_intact(FRESH), fresh=None, primary="v2")

    for each in (decided, from_stored):
        assert each.write == FRESH
        assert (each.generation, each.action) == (4, reconcile.REENCRYPT)
        assert "v2" in each.why


def test_tampering_is_restored_from_the_input() -> None:
    decided = _plan(ciphertext.Verdict(State.TAMPERED, "Secret x: field 'token' ..."),
                    status_generation=7)

    assert decided.write == FRESH
    assert decided.generation == 8
    assert decided.tamper == "Secret x: field 'token' ..."
    assert decided.restored and decided.problem is None


def test_a_deleted_secret_is_tampering_too() -> None:
    decided = _plan(ciphertext.Verdict(State.ABSENT), had_secret=True)

    assert decided.tamper == "the ciphertext Secret was deleted"
    assert decided.restored


def test_without_input_tampering_is_restored_from_the_last_intact_copy() -> None:
    decided = _plan(ciphertext.Verdict(State.TAMPERED, "edited"), fresh=None, fallback=FRESH)

    assert decided.write == FRESH
    assert decided.action == reconcile.REENCRYPT
    assert decided.restored


def test_without_input_or_copy_tampering_is_only_reported() -> None:
    decided = _plan(ciphertext.Verdict(State.TAMPERED, "edited"), fresh=None,
                    restore_hint="put the values in Secret acme-prod/plain again")

    assert decided.write is None and not decided.restored
    assert decided.problem is not None
    assert decided.problem.reason is Reason.TAMPER_DETECTED
    assert "edited" in decided.problem.message
    assert "acme-prod/plain again" in decided.problem.message
    assert not decided.problem.retry


def test_a_bad_input_keeps_what_is_stored() -> None:
    bad = Problem(Reason.BAD_SEAL, "field 'token' was sealed for another key")

    decided = _plan(_intact(FRESH), fresh=None, input_problem=bad)

    assert decided.write is None
    assert decided.problem == bad
    assert decided.generation == 3


def test_foreign_secret_is_a_conflict_never_overwritten() -> None:
    decided = _plan(ciphertext.Verdict(State.FOREIGN, "Secret x exists"))

    assert decided.write is None
    assert decided.problem == Problem(Reason.SECRET_CONFLICT, "Secret x exists")


def test_key_unavailable_and_tenant_changed() -> None:
    unavailable = ciphertext.Verdict(State.KEY_UNAVAILABLE, "needs v1")
    changed = ciphertext.Verdict(State.TENANT_CHANGED, "written for another tenant")

    assert _plan(unavailable).write == FRESH  # the input can write it afresh
    assert _plan(changed).write == FRESH
    reported = _plan(unavailable, fresh=None)
    assert reported.problem is not None
    assert reported.problem.reason is Reason.KEY_VERSION_UNAVAILABLE
    reported = _plan(changed, fresh=None)
    assert reported.problem is not None and reported.problem.reason is Reason.TENANT_CHANGED


def test_nothing_stored_and_nothing_to_store() -> None:
    missing = Problem(Reason.SOURCE_SECRET_MISSING, "Secret acme-prod/plain does not exist")

    decided = _plan(ciphertext.Verdict(State.ABSENT), fresh=None, input_problem=missing,
                    had_secret=False)

    assert decided.problem == missing and decided.write is None


# -- status, events, audit -----------------------------------------------------------------------

OWNER = ciphertext.Owner("acme-prod", "payments-api", "0b7c6e2a-5f3d-4c1e-9a8b-2d4f6e8a0c1b")


def _written(**changes: Any) -> reconcile.Outcome:
    outcome = reconcile.Outcome(
        OWNER, tenant=ciphertext.TenantRef("acme", TENANT_UID),
        stored=reconcile.StoredRef("tenantry-credential-payments-api", "v1.0011223344556677", 4,
                                   ("token",)),
        action=reconcile.ENCRYPT, why="content changed")
    for name, value in changes.items():
        setattr(outcome, name, value)
    return outcome


def test_status_of_a_written_credential() -> None:
    status = reconcile.status_of(_written(), 2, None)

    assert status["secretRef"] == {"name": "tenantry-credential-payments-api",
                                   "keyId": "v1.0011223344556677"}
    assert status["encryptionGeneration"] == 4
    assert status["keys"] == ["token"]
    assert status["observedGeneration"] == 2
    assert "lastEncryptedTime" in status
    [ready] = status["conditions"]
    assert (ready["type"], ready["status"], ready["reason"]) == ("Ready", "True", "Encrypted")
    assert "under key v1.0011223344556677, generation 4" in ready["message"]
    credential.CredentialStatus.model_validate(status)


def test_status_of_a_problem_keeps_what_it_does_not_know() -> None:
    outcome = reconcile.Outcome(OWNER, problem=Problem(Reason.KEYRING_UNAVAILABLE, "no keyring"))

    status = reconcile.status_of(outcome, 1, None)

    assert set(status) == {"observedGeneration", "conditions"}
    [ready] = status["conditions"]
    assert (ready["status"], ready["reason"], ready["message"]) == (
        "False", "KeyringUnavailable", "no keyring")


def test_a_restore_is_ready_but_says_what_happened() -> None:
    outcome = _written(tamper="Secret x: field 'token' does not authenticate", restored=True)

    [ready] = reconcile.status_of(outcome, 1, None)["conditions"]
    kinds = [(kind, reason) for kind, reason, _ in reconcile.events(outcome, None)]

    assert (ready["status"], ready["reason"]) == ("True", "Restored")
    assert "does not authenticate" in ready["message"]
    assert kinds == [("Warning", "TamperDetected"), ("Normal", "Restored")]


def test_problems_are_posted_once_not_on_every_retry() -> None:
    outcome = reconcile.Outcome(OWNER, problem=Problem(Reason.UNKNOWN_TENANT, "no tenant"))
    first = reconcile.events(outcome, None)
    previous = reconcile.status_of(outcome, 1, None)

    assert first == [("Warning", "UnknownTenant", "no tenant")]
    assert reconcile.events(outcome, previous) == []


def test_audit_entries_name_fields_keys_and_generations_never_values() -> None:
    outcome = _written(tamper="field 'token' edited", restored=True, source="secret/plain",
                       source_removed="deleted", source_fields=("token",))

    entries = dict(reconcile.audit_entries(outcome))

    assert set(entries) == {reconcile.TAMPER_DETECTED, reconcile.ENCRYPT,
                            reconcile.SOURCE_DELETED}
    assert entries[reconcile.ENCRYPT] == {
        "secretName": "tenantry-credential-payments-api", "fields": ["token"],
        "keyId": "v1.0011223344556677", "generation": 4, "source": "secret/plain",
        "reason": "content changed"}
    assert entries[reconcile.SOURCE_DELETED] == {"source": "secret/plain", "fields": ["token"]}
    assert PLAINTEXT.decode() not in json.dumps(entries)
