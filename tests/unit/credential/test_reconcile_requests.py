"""What one Credential reconciliation sends, and why a copy kept in memory is safe to use.

A rotation's re-encryption through a kept copy of the ciphertext Secret and the watch-fed
directory sends one request (the write), and that write names the version verified: a Secret
changed since (the copy out of date) is refused by the store, read afresh and verified, so a
tampered Secret is reported and restored, never silently written over. A first encryption
where the watch lists no Secret writes it with a create, so one that is there after all (a
foreign Secret of that name) is read and refused, not taken over. The directory is trusted
only to say yes. The resync (one task, not a kopf timer and its finalizer per Credential)
verifies every Credential with a fresh read, round after round. The stand-in API below keeps
Secrets with resourceVersions and refuses an apply whose resourceVersion is not the current
one, as the apiserver does (409 Conflict).
"""

from __future__ import annotations

import asyncio
import base64
import copy
from typing import Any, cast

import kopf
import pytest

from tenantry.controller.credential import ciphertext, handlers, reconcile, watches
from tenantry.crypto import cli as crypto_cli
from tenantry.crypto import custody, keyring
from tenantry.kubeapi import ApiError, KubeApi
from tenantry.model import common
from tests.unit.credential.conftest import PLAINTEXT, TENANT_UID

NAMESPACE, NAME, UID = "acme-prod", "payments-api", "0b7c6e2a-5f3d-4c1e-9a8b-2d4f6e8a0c1b"
SECRET = ciphertext.secret_name(NAME)
NAMESPACE_OBJ: dict[str, Any] = {"metadata": {"name": NAMESPACE, "labels": {
    common.TENANT_LABEL: "acme", common.MANAGED_BY_LABEL: "tenantry"}}}
TENANT_OBJ: dict[str, Any] = {"metadata": {"name": "acme", "uid": TENANT_UID},
              "spec": {"namespaces": [{"name": NAMESPACE}]}}


class Store:
    """Secrets with resourceVersions; applies over another version are refused (409)."""

    def __init__(self) -> None:
        self.secrets: dict[str, dict[str, Any]] = {}
        self.version = 0
        self.sent: list[tuple[str, str, str | None]] = []
        """(verb, kind, resourceVersion the write was bound to)."""

    def _stored(self, obj: dict[str, Any]) -> dict[str, Any]:
        self.version += 1
        stored = copy.deepcopy(obj)
        stored["metadata"]["resourceVersion"] = str(self.version)
        self.secrets[obj["metadata"]["name"]] = stored
        return copy.deepcopy(stored)

    async def get(self, api_version: str, kind: str, name: str,
                  namespace: str | None = None) -> dict[str, Any] | None:
        self.sent.append(("get", kind, None))
        found: dict[str, Any] | None = {"Namespace": NAMESPACE_OBJ,
                                        "Tenant": TENANT_OBJ}.get(kind) or self.secrets.get(name)
        return copy.deepcopy(found)

    async def apply(self, obj: dict[str, Any], **_: Any) -> dict[str, Any]:
        wanted = obj["metadata"].get("resourceVersion")
        self.sent.append(("apply", obj["kind"], wanted))
        current = self.secrets.get(obj["metadata"]["name"])
        if wanted is not None and (current or {}).get("metadata", {}).get(
                "resourceVersion") != wanted:
            raise ApiError(409, "Conflict", "the object has been modified")
        return self._stored(obj)

    async def create(self, obj: dict[str, Any], **_: Any) -> dict[str, Any]:
        self.sent.append(("create", obj["kind"], None))
        if obj["metadata"]["name"] in self.secrets:
            raise ApiError(409, "AlreadyExists", "already exists")
        return self._stored(obj)

    def tamper(self) -> None:
        """Someone edits the Secret's ciphertext behind the operator's back."""
        secret = copy.deepcopy(self.secrets[SECRET])
        secret["data"] = {"token": base64.b64encode(b"not an envelope at all").decode()}
        self._stored(secret)

    def writes(self) -> list[tuple[str, str, str | None]]:
        return [sent for sent in self.sent if sent[0] == "apply"]


class Keys:
    """The operator's keys, as `custody.KeySource` hands them out."""

    def __init__(self, ring: keyring.Keyring, sealing_keys: custody.SealingKeys) -> None:
        self.ring, self.sealing = ring, sealing_keys

    def keyring(self) -> keyring.Keyring:
        return self.ring

    def sealing_keys(self) -> custody.SealingKeys:
        return self.sealing


def _rotated(ring: keyring.Keyring) -> keyring.Keyring:
    keys = {version: ring.key(version) for version in ring.versions}
    return keyring.Keyring("v2", {**keys, "v2": keyring.new_key()})


def _body(sealing_keys: custody.SealingKeys, status: dict[str, Any]) -> dict[str, Any]:
    sealed = crypto_cli.seal_values(sealing_keys.primary.public_key(), NAMESPACE, NAME,
                                    {"token": PLAINTEXT})
    return {"apiVersion": "tenantry.dev/v1alpha1", "kind": "Credential",
            "metadata": {"namespace": NAMESPACE, "name": NAME, "uid": UID, "generation": 1},
            "spec": {"scope": "caller", "allowedServiceAccounts": ["app"],
                     "sealed": {"encryptedData": sealed}},
            "status": status}


def _directory() -> watches.Directory:
    directory = watches.Directory()
    directory.update_namespace("ADDED", NAMESPACE_OBJ)
    directory.update_tenant("ADDED", TENANT_OBJ)
    return directory


async def _encrypted(store: Store, keys: Keys,
                     sealing_keys: custody.SealingKeys) -> tuple[dict[str, Any],
                                                                 reconcile.Outcome]:
    """A Credential encrypted once (under the ring's v1), with its status as written."""
    body = _body(sealing_keys, {})
    first = await reconcile.reconcile(cast(KubeApi, store), cast(custody.KeySource, keys), body)
    assert first.problem is None and first.secret is not None
    body["status"] = reconcile.status_of(first, 1, {})
    store.sent.clear()
    return body, first


async def test_a_reencryption_from_the_kept_copy_sends_one_write_bound_to_its_version(
        ring: keyring.Keyring, sealing_keys: custody.SealingKeys) -> None:
    store, keys = Store(), Keys(ring, sealing_keys)
    body, first = await _encrypted(store, keys, sealing_keys)
    assert first.secret is not None
    verified = first.secret["metadata"]["resourceVersion"]
    keys.ring = _rotated(ring)

    outcome = await reconcile.reconcile(
        cast(KubeApi, store), cast(custody.KeySource, keys), body, first.snapshot,
        directory=_directory(), cached=first.secret)

    assert store.sent == [("apply", "Secret", verified)]  # no read of anything
    assert outcome.problem is None and outcome.action == reconcile.REENCRYPT
    assert outcome.stored is not None and outcome.stored.key_id.startswith("v2.")
    assert outcome.secret == store.secrets[SECRET]
    assert PLAINTEXT not in repr(store.secrets).encode()


async def test_a_secret_changed_since_it_was_kept_is_read_verified_and_restored_not_overwritten(
        ring: keyring.Keyring, sealing_keys: custody.SealingKeys) -> None:
    store, keys = Store(), Keys(ring, sealing_keys)
    body, first = await _encrypted(store, keys, sealing_keys)
    assert first.secret is not None
    kept_version = first.secret["metadata"]["resourceVersion"]
    store.tamper()  # the watch has not reported it yet: the kept copy is out of date
    tampered_version = store.secrets[SECRET]["metadata"]["resourceVersion"]
    keys.ring = _rotated(ring)

    outcome = await reconcile.reconcile(
        cast(KubeApi, store), cast(custody.KeySource, keys), body, first.snapshot,
        directory=_directory(), cached=first.secret)

    # The write over the kept version is refused; the Secret is read and found tampered; the
    # restore is bound to the tampered version it verified.
    assert store.sent == [("apply", "Secret", kept_version), ("get", "Secret", None),
                          ("apply", "Secret", tampered_version)]
    assert outcome.tamper is not None and outcome.restored
    assert reconcile.TAMPER_DETECTED in [action for action, _ in
                                         reconcile.audit_entries(outcome)]
    assert ("Warning", "TamperDetected") in [(t, r) for t, r, _ in
                                             reconcile.events(outcome, body["status"])]
    assert outcome.stored is not None and outcome.stored.key_id.startswith("v2.")


async def test_a_secret_changed_twice_while_being_written_is_a_retryable_problem(
        ring: keyring.Keyring, sealing_keys: custody.SealingKeys) -> None:
    store, keys = Store(), Keys(ring, sealing_keys)
    body, first = await _encrypted(store, keys, sealing_keys)
    keys.ring = _rotated(ring)
    real_apply = store.apply

    async def always_changed(obj: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        store.tamper()  # someone writes just before every write of the operator
        return await real_apply(obj, **kwargs)

    store.apply = always_changed  # type: ignore[method-assign]
    outcome = await reconcile.reconcile(
        cast(KubeApi, store), cast(custody.KeySource, keys), body, first.snapshot,
        cached=first.secret)

    assert outcome.problem is not None and outcome.problem.retry
    assert outcome.problem.reason == "ApplyFailed" and "changed" in outcome.problem.message
    assert outcome.secret is None and outcome.action is None


async def test_a_first_encryption_where_the_watch_lists_no_secret_is_one_create(
        ring: keyring.Keyring, sealing_keys: custody.SealingKeys) -> None:
    store, keys = Store(), Keys(ring, sealing_keys)
    outcome = await reconcile.reconcile(
        cast(KubeApi, store), cast(custody.KeySource, keys), _body(sealing_keys, {}),
        directory=_directory(), absent=True)
    assert store.sent == [("create", "Secret", None)]
    assert outcome.problem is None and outcome.action == reconcile.ENCRYPT
    assert outcome.secret == store.secrets[SECRET]


async def test_a_secret_there_after_all_is_read_and_never_taken_over(
        ring: keyring.Keyring, sealing_keys: custody.SealingKeys) -> None:
    store, keys = Store(), Keys(ring, sealing_keys)
    foreign = {"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
               "metadata": {"name": SECRET, "namespace": NAMESPACE},
               "data": {"token": base64.b64encode(b"someone else's").decode()}}
    store._stored(foreign)  # created a moment ago: the watch has not reported it yet
    outcome = await reconcile.reconcile(
        cast(KubeApi, store), cast(custody.KeySource, keys), _body(sealing_keys, {}),
        directory=_directory(), absent=True)
    assert store.sent == [("create", "Secret", None), ("get", "Secret", None)]
    assert outcome.problem is not None and outcome.problem.reason == "SecretConflict"
    assert store.secrets[SECRET]["data"] == foreign["data"]


async def test_the_directory_is_trusted_to_say_yes_and_asked_again_otherwise() -> None:
    store = Store()
    found = await reconcile.find_tenant(cast(KubeApi, store), NAMESPACE, _directory())
    assert found == ciphertext.TenantRef("acme", TENANT_UID) and store.sent == []

    # A directory that has not seen the Tenant yet, or one whose copy no longer lists the
    # namespace, is not the last word: the API is.
    for directory in (watches.Directory(), _directory()):
        directory.update_tenant("MODIFIED", {**TENANT_OBJ, "spec": {"namespaces": []}})
        store.sent.clear()
        found = await reconcile.find_tenant(cast(KubeApi, store), NAMESPACE, directory)
        assert found == ciphertext.TenantRef("acme", TENANT_UID)
        assert [kind for _, kind, _ in store.sent] == ["Namespace", "Tenant"]


def test_the_directory_keeps_only_tenant_namespaces_and_what_a_reconcile_reads() -> None:
    directory = _directory()
    directory.update_namespace("ADDED", {"metadata": {"name": "kube-system", "labels": {
        common.TENANT_LABEL: "acme"}}})  # labelled by someone, not made by the operator
    assert directory.lookup("kube-system") == (None, None)
    directory.update_tenant("MODIFIED", {**TENANT_OBJ, "spec": {
        **TENANT_OBJ["spec"], "members": [{"kind": "User", "name": "alice"}]}})
    namespace_obj, tenant_obj = directory.lookup(NAMESPACE)
    assert namespace_obj is not None and tenant_obj is not None
    assert set(tenant_obj["spec"]) == {"namespaces"}
    directory.update_tenant("DELETED", TENANT_OBJ)
    assert directory.lookup(NAMESPACE)[1] is None
    directory.update_namespace("DELETED", NAMESPACE_OBJ)
    assert directory.lookup(NAMESPACE) == (None, None)


def _outcome(action: str, *, restored: bool = False) -> reconcile.Outcome:
    outcome = reconcile.Outcome(ciphertext.Owner(NAMESPACE, NAME, UID), action=action,
                                restored=restored, why="primary master key version is now v2")
    outcome.stored = reconcile.StoredRef(SECRET, "v2.abc", 2, ("token",))
    return outcome


def test_a_rotation_posts_no_event_per_routine_reencryption_but_every_restore() -> None:
    routine = _outcome(reconcile.REENCRYPT)
    assert [r for _, r, _ in reconcile.events(routine, {})] == ["Reencrypted"]
    assert reconcile.events(routine, {}, announce_reencryption=False) == []
    # Still in the ledger, one entry per Credential.
    assert [a for a, _ in reconcile.audit_entries(routine)] == [reconcile.REENCRYPT]
    restored = _outcome(reconcile.REENCRYPT, restored=True)
    restored.tamper = "the ciphertext Secret was deleted"
    assert [r for _, r, _ in reconcile.events(restored, {}, announce_reencryption=False)] == [
        "TamperDetected", "Restored"]
    encrypted = _outcome(reconcile.ENCRYPT)
    assert [r for _, r, _ in reconcile.events(encrypted, {}, announce_reencryption=False)] == [
        "Encrypted"]


def test_a_status_that_merges_to_what_is_there_is_not_sent() -> None:
    outcome = _outcome(reconcile.ENCRYPT)
    outcome.action = None  # verified in place: nothing written
    status = reconcile.status_of(outcome, 1, {})
    assert reconcile.status_unchanged(status, {**status, "other": "kept"})
    assert not reconcile.status_unchanged(status, {})
    assert not reconcile.status_unchanged(status, {**status, "encryptionGeneration": 1})


async def test_the_resync_verifies_every_known_credential_afresh_and_skips_deleted_ones(
        monkeypatch: pytest.MonkeyPatch, ring: keyring.Keyring,
        sealing_keys: custody.SealingKeys) -> None:
    state = handlers.CredentialState(keys=cast(custody.KeySource, Keys(ring, sealing_keys)))
    for number, deleting in ((1, False), (2, True), (3, False)):
        state.bodies[f"uid-{number}"] = {"metadata": {
            "namespace": NAMESPACE, "name": f"cred-{number}", "uid": f"uid-{number}",
            **({"deletionTimestamp": "2026-12-01T00:00:00Z"} if deleting else {})}}
    memo = kopf.Memo()
    memo.api = Store()
    resynced: list[tuple[str, bool]] = []
    two_rounds = asyncio.Event()

    async def reconcile_now(memo: kopf.Memo, found: dict[str, Any], *, fresh: bool = False,
                            announce: bool = True) -> None:
        resynced.append((found["metadata"]["name"], fresh))
        if len(resynced) == 4:
            two_rounds.set()

    monkeypatch.setattr(handlers, "RESYNC_INTERVAL", 0.01)
    monkeypatch.setattr(handlers, "reconcile_now", reconcile_now)
    task = asyncio.create_task(handlers._resync_forever(memo, state))
    try:
        await asyncio.wait_for(two_rounds.wait(), timeout=5)
    finally:
        task.cancel()
    assert set(resynced) == {("cred-1", True), ("cred-3", True)}
