"""Reconcile one Credential: find its tenant, hold its values in memory, store them encrypted.

The steps, each a pure decision around a little I/O:

1. keys: the keyring must load, or every Credential fails closed (`KeyringUnavailable`);
2. spec: scope and ServiceAccounts make sense (`InvalidScope`);
3. tenant: the namespace's operator-set tenant label names a Tenant that lists the namespace;
   that Tenant's UID is what the key is derived for (`NamespaceNotOwned`, `UnknownTenant`);
4. what is stored: the ciphertext Secret is verified envelope by envelope (`ciphertext.verify`);
5. input: `spec.sealed` is unsealed, or the `spec.fromSecret` Secret read (`inputs`);
6. `plan`: write or not, at which generation, and after tampering restore or only report;
7. carry out: apply the ciphertext Secret, then delete or empty the imported source.

`reconcile` never raises for an API refusal or a bad input: it returns an `Outcome`, from which
`status_of`, `events` and `audit_entries` (pure) derive what the handlers write. Running it again
changes nothing once the Secret is in place, which is what lets kopf retry it and the resync and
the Secret watch re-run it.

Reads it can be spared. The handlers keep, from watches they run anyway, the namespace and its
Tenant (`watches.Directory`) and the ciphertext Secret as the operator last wrote or verified it
(`cached`, offered only while the Secret watch has seen no other version since), and whether
the watch lists no Secret at all for a Credential that never had one (`absent`). Each is only a
shortcut: a directory that cannot say yes is asked again of the API; every write of the Secret
carries the resourceVersion its content was verified at, and the first one is a create, so a
Secret changed since (a cached copy out of date, a change between a read and the write) or
there after all is refused by the apiserver (409) and the reconciliation starts again from a
fresh read; nothing is written over a Secret that was not verified first.

Generations. `status.encryptionGeneration` is bound into every envelope and bumped on each
write, so an envelope from before a change (or a restore) never opens again. The operator writes
the Secret first and its status second; a Secret one generation ahead of status is the operator's
own interrupted write, and accepted because it authenticates at that generation.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping, Sequence
from typing import Any

import pydantic

from tenantry import listwatch
from tenantry.controller import conditions
from tenantry.controller.credential import ciphertext, inputs, watches
from tenantry.controller.credential.plaintext import Fields, same
from tenantry.controller.credential.problems import Problem, Reason
from tenantry.crypto import errors
from tenantry.crypto.custody import KeySource
from tenantry.kubeapi import FIELD_MANAGER, ApiError, KubeApi
from tenantry.model import common, credential, tenant

logger = logging.getLogger(__name__)

# Audit actions (the ledger's `action`); their `changes` name fields, key ids and generations.
ENCRYPT = "credential.encrypt"
REENCRYPT = "credential.reencrypt"
TAMPER_DETECTED = "credential.tamper-detected"
SECRET_REPAIRED = "credential.secret-repaired"  # noqa: S105 - an action name
SOURCE_DELETED = "credential.source-secret-deleted"
SOURCE_EMPTIED = "credential.source-secret-emptied"


# -- pure decisions ------------------------------------------------------------------------------

def scope_problem(spec: credential.CredentialSpec) -> Problem | None:
    """What the schema cannot say about scope and ServiceAccounts.

    The names are of ServiceAccounts in the Credential's own namespace (the schema admits no
    other form); whether they exist is not checked, since they may well be created later.
    """
    accounts = spec.allowed_service_accounts
    if spec.scope is credential.Scope.PLATFORM and accounts:
        return Problem(Reason.INVALID_SCOPE, (
            "scope platform is for Tenantry's own components only, so allowedServiceAccounts "
            f"({', '.join(accounts)}) would never be honoured: remove them, or use scope caller"))
    if "default" in accounts:
        return Problem(Reason.INVALID_SCOPE, (
            "allowedServiceAccounts names 'default', the ServiceAccount of every pod that names "
            "none, which would hand the credential to every workload of the namespace: create "
            "a ServiceAccount for the workloads that need it"))
    return None


def tenant_of(namespace: str, namespace_obj: Mapping[str, Any] | None,
              tenant_obj: Mapping[str, Any] | None) -> ciphertext.TenantRef | Problem:
    """The Tenant owning `namespace`, from the Namespace and the Tenant its label names."""
    labels = ((namespace_obj or {}).get("metadata") or {}).get("labels") or {}
    tenant_name = labels.get(common.TENANT_LABEL)
    if namespace_obj is None or not tenant_name:
        return Problem(Reason.NAMESPACE_NOT_OWNED, (
            f"namespace {namespace} belongs to no Tenant: Credentials are encrypted under their "
            "tenant's key, so they are accepted only in namespaces a Tenant lists in "
            "spec.namespaces"))
    if tenant_obj is None:
        return Problem(Reason.UNKNOWN_TENANT, (
            f"namespace {namespace} is labelled for tenant {tenant_name}, which does not exist"))
    if (tenant_obj.get("metadata") or {}).get("deletionTimestamp"):
        return Problem(Reason.UNKNOWN_TENANT, (
            f"tenant {tenant_name}, owner of namespace {namespace}, is being deleted"))
    listed = [entry.get("name") for entry in (tenant_obj.get("spec") or {}).get("namespaces")
              or [] if isinstance(entry, Mapping)]
    if namespace not in listed:
        return Problem(Reason.NAMESPACE_NOT_OWNED, (
            f"namespace {namespace} is labelled for tenant {tenant_name}, but that Tenant does "
            "not list it in spec.namespaces"))
    return ciphertext.TenantRef(name=str(tenant_name),
                                uid=str(tenant_obj["metadata"]["uid"]))


@dataclasses.dataclass(frozen=True)
class Plan:
    """What to do about the ciphertext Secret."""

    write: Fields | None = None
    """Values to encrypt and store at `generation`; None: leave the Secret as it is."""
    generation: int | None = None
    action: str | None = None
    why: str = ""
    tamper: str | None = None
    """What was found wrong with the stored ciphertext, if anything."""
    restored: bool = False
    problem: Problem | None = None
    consume_source: bool = False
    """Remove the imported source once the write (if any) is done."""


def _stale(stored: ciphertext.Stored, primary: str) -> str | None:
    """Why intact envelopes must be re-encrypted (an old master version, or not bound to the
    Credential UID), or None when they are current."""
    if stored.master_versions != {primary}:
        return f"primary master key version is now {primary}"
    if stored.unbound:
        return "envelopes are now bound to the Credential's UID (format 2)"
    return None


def plan(verdict: ciphertext.Verdict, *, fresh: Fields | None, input_problem: Problem | None,
         had_secret: bool, status_generation: int | None, primary: str,
         fallback: Fields | None = None, restore_hint: str = "") -> Plan:
    """Decide, from what is stored (`verdict`) and what the input offers (`fresh`, or why
    nothing: `input_problem`), what to write and what to report. Pure.

    `fallback`: values from the last copy known to be intact, for restoring a tampered Secret
    when the input cannot give them again (an imported source is gone). `restore_hint` says
    what a person can do when there is nothing to restore from.
    """
    state = verdict.state
    if state is ciphertext.State.FOREIGN:
        return Plan(problem=Problem(Reason.SECRET_CONFLICT, verdict.detail))
    tamper = verdict.detail if state is ciphertext.State.TAMPERED else None
    if state is ciphertext.State.ABSENT and had_secret:
        tamper = "the ciphertext Secret was deleted"
    stored = verdict.stored
    # Above anything ever written: status is trusted, an annotation only once it authenticated.
    next_generation = max(status_generation or 0, stored.generation if stored else 0) + 1

    if fresh is not None:
        if stored is not None:
            if same(stored.fields, fresh):
                if (stale := _stale(stored, primary)) is None:
                    return Plan(generation=stored.generation, consume_source=True)
                return Plan(write=stored.fields, generation=next_generation, action=REENCRYPT,
                            why=stale, consume_source=True)
            return Plan(write=fresh, generation=next_generation, action=ENCRYPT,
                        why="content changed", consume_source=True)
        why = {
            ciphertext.State.KEY_UNAVAILABLE: f"stored ciphertext unreadable ({verdict.detail})",
            ciphertext.State.TENANT_CHANGED: "the namespace's tenant was re-created",
        }.get(state, "restored after tampering" if tamper else "first encryption")
        return Plan(write=fresh, generation=next_generation, action=ENCRYPT, why=why,
                    tamper=tamper, restored=tamper is not None, consume_source=True)

    if stored is not None:
        if (stale := _stale(stored, primary)) is not None:
            return Plan(write=stored.fields, generation=next_generation, action=REENCRYPT,
                        why=stale, problem=input_problem)
        return Plan(generation=stored.generation, problem=input_problem)
    if tamper is not None:
        if fallback is not None:
            return Plan(write=fallback, generation=next_generation, action=REENCRYPT,
                        why="restored after tampering from the last intact copy",
                        tamper=tamper, restored=True, problem=input_problem)
        extra = f"; also: {input_problem.message}" if input_problem else ""
        return Plan(tamper=tamper, problem=Problem(Reason.TAMPER_DETECTED, (
            f"{tamper}; the ciphertext cannot be trusted and there is no intact copy to restore "
            f"it from{': ' + restore_hint if restore_hint else ''}{extra}")))
    if state is ciphertext.State.KEY_UNAVAILABLE:
        return Plan(problem=Problem(Reason.KEY_VERSION_UNAVAILABLE, (
            f"{verdict.detail}{': ' + restore_hint if restore_hint else ''}")))
    if state is ciphertext.State.TENANT_CHANGED:
        return Plan(problem=Problem(Reason.TENANT_CHANGED, (
            f"{verdict.detail}{': ' + restore_hint if restore_hint else ''}")))
    # Nothing stored yet (or only a predecessor's Secret) and nothing to store.
    return Plan(problem=input_problem or Problem(
        Reason.SOURCE_SECRET_MISSING, "nothing to encrypt yet"))


# -- what happened -------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class StoredRef:
    """What the ciphertext Secret holds now (public facts only)."""

    name: str
    key_id: str
    generation: int
    fields: tuple[str, ...]


@dataclasses.dataclass
class Outcome:
    """What one reconciliation found and did, for status, events and the audit ledger."""

    owner: ciphertext.Owner
    source: str = ciphertext.SEALED_SOURCE
    tenant: ciphertext.TenantRef | None = None
    problem: Problem | None = None
    stored: StoredRef | None = None
    action: str | None = None
    why: str = ""
    tamper: str | None = None
    restored: bool = False
    repaired: bool = False
    source_removed: str | None = None
    """"deleted" or "emptied", once the imported source Secret is dealt with."""
    source_fields: tuple[str, ...] = ()
    requeue: bool = False
    snapshot: ciphertext.Snapshot | None = None
    written_version: str | None = None
    """resourceVersion of the ciphertext Secret this reconciliation wrote, if it wrote one."""
    secret: dict[str, Any] | None = None
    """The ciphertext Secret as this reconciliation wrote it or verified it intact (`kept`)."""

    @property
    def retry(self) -> bool:
        """Whether to try again soon (the problem may go away without a spec change)."""
        return self.requeue or (self.problem is not None and self.problem.retry)


def ready_condition(outcome: Outcome, generation: int | None) -> dict[str, Any]:
    if outcome.problem is not None:
        return conditions.condition("Ready", "False", outcome.problem.reason,
                                    outcome.problem.message, generation=generation)
    stored = outcome.stored
    if stored is None:  # pragma: no cover - every problem-free outcome stores something
        return conditions.condition("Ready", "Unknown", "Pending", "", generation=generation)
    message = (f"{len(stored.fields)} field(s) ({', '.join(stored.fields)}) stored encrypted in "
               f"Secret {stored.name} under key {stored.key_id}, generation {stored.generation}")
    if outcome.restored:
        message += f"; restored after tampering ({outcome.tamper})"
    if outcome.source_removed:
        message += f"; source {outcome.source} {outcome.source_removed}"
    reason = Reason.RESTORED if outcome.restored else Reason.ENCRYPTED
    return conditions.condition("Ready", "True", reason, message, generation=generation)


def status_of(outcome: Outcome, generation: int | None,
              previous: Mapping[str, Any] | None) -> dict[str, Any]:
    """The Credential's status after a reconciliation (pure). Fields not known this time (the
    keyring is unavailable, say) are left out, so a merge patch keeps what status had."""
    status: dict[str, Any] = {
        "observedGeneration": generation,
        "conditions": conditions.merge((previous or {}).get("conditions"),
                                       [ready_condition(outcome, generation)]),
    }
    if outcome.stored is not None:
        status["secretRef"] = {"name": outcome.stored.name, "keyId": outcome.stored.key_id}
        status["encryptionGeneration"] = outcome.stored.generation
        status["keys"] = list(outcome.stored.fields)
        if outcome.action is not None:
            status["lastEncryptedTime"] = conditions.now()
    return status


def status_unchanged(status: Mapping[str, Any], previous: Mapping[str, Any] | None) -> bool:
    """Whether merging `status` into `previous` would change nothing, so need not be sent
    (pure): a resync that finds everything in place writes nothing."""
    return all((previous or {}).get(key) == value for key, value in status.items())


def _previous_reason(previous: Mapping[str, Any] | None) -> str | None:
    for condition in (previous or {}).get("conditions") or []:
        if condition.get("type") == "Ready":
            return str(condition.get("reason"))
    return None


def events(outcome: Outcome, previous: Mapping[str, Any] | None, *,
           announce_reencryption: bool = True) -> list[tuple[str, str, str]]:
    """(type, reason, message) of the Kubernetes Events to post (pure). Problems are posted when
    they first appear, not on every retry. `announce_reencryption` False: a routine
    re-encryption (not a restore) gets no Event, for a caller that announces it otherwise (a
    rotation, once per batch on its policy); everything else is posted all the same."""
    posted: list[tuple[str, str, str]] = []
    stored = outcome.stored
    if outcome.tamper is not None:
        posted.append(("Warning", "TamperDetected", outcome.tamper))
    routine = outcome.action == REENCRYPT and not outcome.restored
    if outcome.action is not None and stored is not None and (announce_reencryption
                                                              or not routine):
        reason = ("Restored" if outcome.restored
                  else "Reencrypted" if outcome.action == REENCRYPT else "Encrypted")
        posted.append(("Normal", reason, (
            f"field(s) {', '.join(stored.fields)} stored in Secret {stored.name} under key "
            f"{stored.key_id}, generation {stored.generation} ({outcome.why})")))
    if outcome.repaired and stored is not None:
        posted.append(("Normal", "SecretRepaired",
                       f"labels, annotations or owner of Secret {stored.name} put back"))
    if outcome.source_removed is not None:
        reason = "SourceSecretDeleted" if outcome.source_removed == "deleted" \
            else "SourceSecretEmptied"
        posted.append(("Normal", reason, (
            f"{outcome.source}: key(s) {', '.join(outcome.source_fields)} imported, then the "
            f"source {outcome.source_removed}")))
    problem = outcome.problem
    # TamperDetected went out above; other problems when they first appear (not per retry).
    if (problem is not None and problem.reason != Reason.TAMPER_DETECTED
            and (problem.reason != _previous_reason(previous) or outcome.tamper is not None)):
        posted.append(("Warning", problem.reason, problem.message))
    return posted


def audit_entries(outcome: Outcome) -> list[tuple[str, dict[str, Any]]]:
    """(action, changes) for the audit ledger: names, key ids, generations; never values."""
    entries: list[tuple[str, dict[str, Any]]] = []
    stored = outcome.stored
    secret = {"secretName": stored.name} if stored else {}
    if outcome.tamper is not None:
        entries.append((TAMPER_DETECTED, {**secret, "detail": outcome.tamper,
                                          "restored": outcome.restored}))
    if outcome.action is not None and stored is not None:
        entries.append((outcome.action, {
            **secret, "fields": list(stored.fields), "keyId": stored.key_id,
            "generation": stored.generation, "source": outcome.source, "reason": outcome.why}))
    if outcome.repaired and stored is not None:
        entries.append((SECRET_REPAIRED, {**secret, "generation": stored.generation}))
    if outcome.source_removed is not None:
        entries.append((SOURCE_DELETED if outcome.source_removed == "deleted"
                        else SOURCE_EMPTIED,
                        {"source": outcome.source, "fields": list(outcome.source_fields)}))
    return entries


# -- I/O -----------------------------------------------------------------------------------------

def _validation_problem(error: pydantic.ValidationError) -> Problem:
    # The models hide input values in errors; locations and messages are safe to show.
    details = "; ".join(".".join(map(str, e["loc"])) + ": " + e["msg"]
                        for e in error.errors()[:5])
    return Problem(Reason.INVALID_SPEC, f"spec does not validate: {details}")


async def find_tenant(api: KubeApi, namespace: str, directory: watches.Directory | None = None
                      ) -> ciphertext.TenantRef | Problem:
    """The namespace's Tenant: from `directory` when it knows it, else read from the API (also
    for every problem, so a refusal never rests on a watch that lags)."""
    if directory is not None:
        found = tenant_of(namespace, *directory.lookup(namespace))
        if not isinstance(found, Problem):
            return found
    namespace_obj = await api.get("v1", "Namespace", namespace)
    labels = ((namespace_obj or {}).get("metadata") or {}).get("labels") or {}
    tenant_name = labels.get(common.TENANT_LABEL)
    tenant_obj = (await api.get(common.API_VERSION, tenant.KIND, tenant_name)
                  if tenant_name else None)
    return tenant_of(namespace, namespace_obj, tenant_obj)


class StaleSecret(Exception):
    """The ciphertext Secret changed after it was verified (a write refused with 409)."""


def _at_version(obj: dict[str, Any], version: str | None) -> dict[str, Any]:
    """`obj` to apply only over that resourceVersion (None: whatever is there, or nothing)."""
    if version is None:
        return obj
    return {**obj, "metadata": {**obj["metadata"], "resourceVersion": version}}


def _version(obj: Mapping[str, Any] | None) -> str | None:
    return None if obj is None else listwatch.version_of(obj)


def kept(secret: Mapping[str, Any]) -> dict[str, Any]:
    """What is kept of a ciphertext Secret between reconciliations: all but managedFields."""
    meta = {k: v for k, v in (secret.get("metadata") or {}).items() if k != "managedFields"}
    return {**secret, "metadata": meta}


async def _apply_secret(api: KubeApi, existing: Mapping[str, Any] | None,
                        desired: dict[str, Any], *, create: bool = False) -> dict[str, Any]:
    """Server-side apply over the version verified (`existing`'s); data keys someone else
    added are taken over, then dropped. `create`: none was found, so create it (refused if
    there is one after all). Returns the Secret written; StaleSecret if it changed since it was
    verified, or exists though it was not found."""
    version = _version(existing)
    if create and existing is None:
        try:
            return await api.create(desired, field_manager=FIELD_MANAGER)
        except ApiError as error:
            if error.status == 409:
                raise StaleSecret from None
            raise
    try:
        foreign = [key for key in ciphertext.data_keys(existing) if key not in desired["data"]]
        if foreign:
            # Apply only removes fields this manager owns: own them first (force), then leave
            # them.
            taken = await api.apply(_at_version(
                {**desired, "data": {**desired["data"], **dict.fromkeys(foreign, "")}}, version))
            version = _version(taken)
        return await api.apply(_at_version(desired, version))
    except ApiError as error:
        if error.status == 409 and version is not None:
            raise StaleSecret from None
        raise


def _api_problem(reason: Reason, doing: str, error: ApiError) -> Problem:
    return Problem(reason, f"{doing}: {error.status} {error.reason}: {error.message[:300]}")


async def _read_secret(api: KubeApi, name: str,
                       namespace: str) -> dict[str, Any] | Problem | None:
    """A Secret of the Credential's namespace (None when absent), or why it cannot be read.

    The operator may read Secrets only in tenant namespaces, through the RoleBinding its
    Tenant applies there with the fences: in a namespace claimed a moment ago that binding may
    not be there yet (403), which the retry outlasts."""
    try:
        return await api.get("v1", "Secret", name, namespace)
    except ApiError as error:
        hint = (f" (the operator reads Secrets only through RoleBinding {namespace}/"
                "tenantry-operator-secrets, which the namespace's Tenant applies)"
                if error.status == 403 else "")
        return _api_problem(Reason.SECRET_UNREADABLE,
                            f"reading Secret {namespace}/{name}{hint}", error)


async def _remove_source(api: KubeApi, spec: credential.FromSecret, namespace: str,
                         source: inputs.Source, outcome: Outcome) -> None:
    """Delete or empty the imported Secret, only if it is still the version that was read."""
    fields = sorted(source.fields)
    try:
        if spec.source_policy is credential.SourcePolicy.DELETE:
            preconditions = {"uid": source.uid, "resourceVersion": source.resource_version}
            await api.delete("v1", "Secret", spec.name, namespace,
                             preconditions={k: v for k, v in preconditions.items() if v})
            outcome.source_removed = "deleted"
        else:
            patch: dict[str, Any] = {"data": dict.fromkeys(fields)}
            if source.resource_version:
                patch["metadata"] = {"resourceVersion": source.resource_version}
            await api.merge_patch("v1", "Secret", spec.name, patch, namespace=namespace)
            outcome.source_removed = "emptied"
        outcome.source_fields = tuple(fields)
    except ApiError as error:
        if error.status == 409:
            # Changed since it was read: the new content is imported on the next round.
            outcome.requeue = True
            return
        if error.status == 404:
            outcome.source_removed, outcome.source_fields = "deleted", tuple(fields)
            return
        verb = "delete" if spec.source_policy is credential.SourcePolicy.DELETE else "empty"
        outcome.problem = _api_problem(
            Reason.SOURCE_NOT_REMOVED,
            f"the values were encrypted, but Secret {namespace}/{spec.name} could not be "
            f"{verb}d and still holds them in plaintext", error)


def _had_secret(status: Mapping[str, Any]) -> bool:
    return isinstance(status.get("secretRef"), Mapping)


def _status_generation(status: Mapping[str, Any]) -> int | None:
    value = status.get("encryptionGeneration")
    return value if isinstance(value, int) and not isinstance(value, bool) else None


async def reconcile(api: KubeApi, keys: KeySource, body: Mapping[str, Any],
                    snapshot: ciphertext.Snapshot | None = None, *,
                    directory: watches.Directory | None = None,
                    cached: Mapping[str, Any] | None = None, absent: bool = False) -> Outcome:
    """Bring one Credential's ciphertext Secret in line with its spec; see the module docs.

    `cached`: the ciphertext Secret as last written or verified, to use instead of reading it;
    `absent`: there is none to read (the Credential never had one and its watch lists none).
    A write refused because the Secret changed since it was verified (or exists after all)
    starts again from a read, once; a second refusal asks for a retry."""
    try:
        return await _reconcile_once(api, keys, body, snapshot, directory, cached, absent)
    except StaleSecret:
        pass
    try:
        return await _reconcile_once(api, keys, body, snapshot, directory, None, False)
    except StaleSecret:
        meta = body["metadata"]
        owner = ciphertext.Owner(namespace=str(meta["namespace"]), name=str(meta["name"]),
                                 uid=str(meta["uid"]))
        return Outcome(owner, problem=Problem(Reason.APPLY_FAILED, (
            f"Secret {ciphertext.secret_name(owner.name)} changed twice while it was being "
            "written; trying again")))


async def _reconcile_once(api: KubeApi, keys: KeySource, body: Mapping[str, Any],
                          snapshot: ciphertext.Snapshot | None,
                          directory: watches.Directory | None,
                          cached: Mapping[str, Any] | None, absent: bool) -> Outcome:
    meta = body["metadata"]
    owner = ciphertext.Owner(namespace=str(meta["namespace"]), name=str(meta["name"]),
                             uid=str(meta["uid"]))
    status: Mapping[str, Any] = body.get("status") or {}
    outcome = Outcome(owner)
    try:
        spec = credential.CredentialSpec.model_validate(dict(body.get("spec") or {}))
    except pydantic.ValidationError as error:
        outcome.problem = _validation_problem(error)
        return outcome
    outcome.source = ciphertext.source_of(spec)
    try:
        ring = keys.keyring()
    except errors.KeyringError as error:
        outcome.problem = Problem(Reason.KEYRING_UNAVAILABLE, (
            f"the operator has no usable keyring, so nothing is encrypted or verified: {error}"))
        return outcome
    if (problem := scope_problem(spec)) is not None:
        outcome.problem = problem
        return outcome
    found = await find_tenant(api, owner.namespace, directory)
    if isinstance(found, Problem):
        outcome.problem = found
        return outcome
    outcome.tenant = tenant_ref = found

    name = ciphertext.secret_name(owner.name)
    existing: dict[str, Any] | Problem | None = None
    if cached is not None:
        existing = dict(cached)
    elif not absent:
        existing = await _read_secret(api, name, owner.namespace)
    if isinstance(existing, Problem):
        outcome.problem = existing
        return outcome
    verdict = ciphertext.verify(existing, ring=ring, owner=owner, tenant=tenant_ref,
                                status_generation=_status_generation(status),
                                expected_fields=list(status.get("keys") or ()))

    fresh: Fields | None = None
    input_problem: Problem | None = None
    source: inputs.Source | None = None
    restore_hint = "fix spec.sealed (seal the values again) to write them afresh"
    if spec.sealed is not None:
        try:
            sealing_keys = keys.sealing_keys()
        except errors.SealingKeyError as error:
            input_problem = Problem(Reason.SEALING_KEY_UNAVAILABLE, (
                f"sealed values cannot be opened: {error}"))
        else:
            opened = inputs.unseal(sealing_keys, owner.namespace, owner.name,
                                   spec.sealed.encrypted_data)
            if isinstance(opened, Problem):
                input_problem = opened
            else:
                fresh = opened
    else:
        assert spec.from_secret is not None  # the schema requires one of the two
        restore_hint = (f"put the values in Secret {owner.namespace}/{spec.from_secret.name} "
                        "again to re-import them")
        source_secret = await _read_secret(api, spec.from_secret.name, owner.namespace)
        if isinstance(source_secret, Problem):
            outcome.problem = source_secret
            return outcome
        source = inputs.read_source(source_secret, spec.from_secret, owner.namespace)
        if source.state is inputs.SourceState.FRESH:
            fresh = source.fields
        elif not _consumed(source, verdict, spec, _had_secret(status)):
            input_problem = source.problem

    fallback = None
    if (fresh is None and snapshot is not None and snapshot.source == outcome.source
            and verdict.state in (ciphertext.State.TAMPERED, ciphertext.State.ABSENT)):
        fallback = ciphertext.open_snapshot(ring, owner, tenant_ref.uid, snapshot)
    decided = plan(verdict, fresh=fresh, input_problem=input_problem,
                   had_secret=_had_secret(status), status_generation=_status_generation(status),
                   primary=ring.primary, fallback=fallback, restore_hint=restore_hint)
    outcome.problem, outcome.tamper = decided.problem, decided.tamper

    if decided.write is not None and decided.generation is not None:
        sealed = ciphertext.encrypt(ring, owner, tenant_ref.uid, decided.generation,
                                    decided.write)
        desired = ciphertext.manifest(owner, tenant_ref, sealed, outcome.source)
        try:
            written = await _apply_secret(api, existing, desired, create=absent)
        except ApiError as error:
            outcome.problem = _api_problem(Reason.APPLY_FAILED, f"writing Secret {name}", error)
            return outcome
        outcome.secret, outcome.written_version = kept(written), _version(written)
        outcome.action, outcome.why, outcome.restored = \
            decided.action, decided.why, decided.restored
        outcome.stored = StoredRef(name, sealed.key_id, sealed.generation,
                                   tuple(sorted(sealed.envelopes)))
        outcome.snapshot = ciphertext.Snapshot(tenant_ref.uid, sealed.generation,
                                               sealed.envelopes, outcome.source)
    elif verdict.stored is not None and existing is not None:
        stored = verdict.stored
        # The values came from the current input if it gave any (same values), else from
        # whatever the annotation says they came from.
        stored_source = outcome.source if fresh is not None else (stored.source
                                                                  or outcome.source)
        outcome.stored = StoredRef(name, stored.key_id, stored.generation,
                                   tuple(sorted(stored.fields)))
        outcome.snapshot = ciphertext.Snapshot(tenant_ref.uid, stored.generation,
                                               stored.envelopes, stored_source)
        desired = ciphertext.manifest(
            owner, tenant_ref, ciphertext.Sealed(stored.envelopes, stored.key_id,
                                                 stored.generation), stored_source)
        if ciphertext.metadata_matches(existing, desired):
            outcome.secret = kept(existing)
        else:
            try:
                written = await _apply_secret(api, existing, desired)
                outcome.secret, outcome.written_version = kept(written), _version(written)
                outcome.repaired = True
            except ApiError as error:
                outcome.problem = _api_problem(Reason.APPLY_FAILED,
                                               f"repairing Secret {name}", error)

    if (decided.consume_source and spec.from_secret is not None and source is not None
            and source.state is inputs.SourceState.FRESH and outcome.problem is None):
        await _remove_source(api, spec.from_secret, owner.namespace, source, outcome)
    return outcome


def _consumed(source: inputs.Source, verdict: ciphertext.Verdict,
              spec: credential.CredentialSpec, had_secret: bool) -> bool:
    """Whether an absent or emptied source is simply one already imported (not a problem)."""
    if source.state not in (inputs.SourceState.ABSENT, inputs.SourceState.EMPTY):
        return False
    stored = verdict.stored
    if stored is None:
        # Tampered or lost: the import happened if the Credential ever had a Secret.
        return had_secret and verdict.state is not ciphertext.State.PREDECESSOR
    assert spec.from_secret is not None
    wanted: Sequence[str] = spec.from_secret.keys
    return stored.source == ciphertext.source_of(spec) and (
        not wanted or set(wanted) == set(stored.fields))
