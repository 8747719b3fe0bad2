"""The ciphertext Secret: what the operator writes for a Credential, and whether it still holds
what the operator wrote (pure).

One Secret per Credential, in its namespace, named `tenantry-credential-<name>`, of type
`tenantry.dev/encrypted`, owned by the Credential (garbage-collected with it) and labelled for
the tenant. Each data key is one field; each value is one envelope (`tenantry.crypto.envelope`)
bound to tenant UID, Credential UID, namespace, Credential name, field and encryption generation.
Annotations carry only public bookkeeping: generation, key id, tenant UID, where the values came
from.

The Credential UID makes the envelopes of a deleted Credential useless to a new one of the same
name, even restored into its Secret with a re-pointed owner: they are `TAMPERED`, never opened.
Envelopes written before the UID was bound (format 1) are accepted only for a Credential whose
status (written by the operator alone; a re-created object starts without one) already records
its ciphertext, and are then re-encrypted as format 2 (`Stored.unbound`).

The name prefix and the labels make it an operator object: the admission policy of
`controller.protection` refuses tenants who try to create, change or delete it; only the
operator (and cluster admins, break glass) can. Verification does not trust any of that, though:
`verify` opens every envelope under the context it must have, so an edit, a field added or
removed, an envelope copied in from another Credential, tenant or older generation is detected
whoever made it.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import enum
import hashlib
from collections.abc import Mapping, Sequence
from typing import Any

from tenantry.controller.credential.plaintext import Fields, Plaintext
from tenantry.crypto import envelope, errors, keyring, tenant_keys
from tenantry.model import common, credential

SECRET_PREFIX = "tenantry-credential-"  # noqa: S105 - a name prefix
CREDENTIAL_LABEL = f"{common.GROUP}/credential"
GENERATION_ANNOTATION = f"{common.GROUP}/encryption-generation"
KEY_ID_ANNOTATION = f"{common.GROUP}/key-id"
TENANT_UID_ANNOTATION = f"{common.GROUP}/tenant-uid"
SOURCE_ANNOTATION = f"{common.GROUP}/source"
SEALED_SOURCE = "sealed"
MAX_NAME = 253
MAX_LABEL_VALUE = 63


@dataclasses.dataclass(frozen=True)
class Owner:
    """The Credential a ciphertext Secret belongs to."""

    namespace: str
    name: str
    uid: str


@dataclasses.dataclass(frozen=True)
class TenantRef:
    """The Tenant owning the Credential's namespace; its UID is what keys are bound to."""

    name: str
    uid: str


def _digest(text: str, size: int) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:size]


def secret_name(credential_name: str) -> str:
    """`tenantry-credential-<name>`, shortened with a hash when it would be too long."""
    name = SECRET_PREFIX + credential_name
    if len(name) <= MAX_NAME:
        return name
    keep = MAX_NAME - len(SECRET_PREFIX) - 11
    return f"{SECRET_PREFIX}{credential_name[:keep].rstrip('.-')}-{_digest(credential_name, 10)}"


def label_value(credential_name: str) -> str:
    """The Credential's name as a label value (a hash if longer than a label value may be)."""
    if len(credential_name) <= MAX_LABEL_VALUE:
        return credential_name
    return f"{credential_name[:MAX_LABEL_VALUE - 17].rstrip('.-')}-{_digest(credential_name, 16)}"


def source_of(spec: credential.CredentialSpec) -> str:
    """Where a Credential's values come from, as the `source` annotation records it."""
    if spec.from_secret is not None:
        return f"secret/{spec.from_secret.name}"
    return SEALED_SOURCE


def context(owner: Owner, tenant_uid: str, field: str, generation: int) -> envelope.Context:
    return envelope.Context(tenant_uid=tenant_uid, namespace=owner.namespace,
                            credential=owner.name, field=field, generation=generation,
                            credential_uid=owner.uid)


@dataclasses.dataclass(frozen=True)
class Sealed:
    """Envelopes ready to store, and the key they are under."""

    envelopes: dict[str, bytes]
    key_id: str
    generation: int


def encrypt(ring: keyring.Keyring, owner: Owner, tenant_uid: str, generation: int,
            fields: Fields) -> Sealed:
    """One envelope per field under the tenant's key from the primary master version."""
    envelopes = {field: envelope.seal_value(ring, context(owner, tenant_uid, field, generation),
                                            fields[field].reveal())
                 for field in sorted(fields)}
    return Sealed(envelopes, tenant_keys.derive(ring, tenant_uid).key_id, generation)


def manifest(owner: Owner, tenant: TenantRef, sealed: Sealed, source: str) -> dict[str, Any]:
    """The ciphertext Secret as it goes to server-side apply."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": credential.ENCRYPTED_SECRET_TYPE,
        "metadata": {
            "name": secret_name(owner.name),
            "namespace": owner.namespace,
            "labels": {common.TENANT_LABEL: tenant.name, common.MANAGED_BY_LABEL: "tenantry",
                       CREDENTIAL_LABEL: label_value(owner.name)},
            "annotations": {GENERATION_ANNOTATION: str(sealed.generation),
                            KEY_ID_ANNOTATION: sealed.key_id,
                            TENANT_UID_ANNOTATION: tenant.uid,
                            SOURCE_ANNOTATION: source},
            "ownerReferences": [{
                "apiVersion": common.API_VERSION, "kind": credential.KIND, "name": owner.name,
                "uid": owner.uid, "controller": True, "blockOwnerDeletion": True,
            }],
        },
        "data": {field: base64.b64encode(value).decode("ascii")
                 for field, value in sorted(sealed.envelopes.items())},
    }


# -- verification --------------------------------------------------------------------------------

class State(enum.StrEnum):
    ABSENT = "Absent"
    INTACT = "Intact"
    """Every envelope opens under its context."""
    TAMPERED = "Tampered"
    KEY_UNAVAILABLE = "KeyUnavailable"
    """Written under a master key version the keyring no longer holds: not an attack."""
    TENANT_CHANGED = "TenantChanged"
    """Written for another Tenant UID: the namespace's Tenant was deleted and re-created."""
    PREDECESSOR = "Predecessor"
    """Left by an earlier Credential of the same name (deleted, garbage collection pending)."""
    FOREIGN = "Foreign"
    """A Secret of that name that is not a ciphertext Secret of this Credential."""


@dataclasses.dataclass(frozen=True)
class Stored:
    """What an intact ciphertext Secret holds, opened (values as Plaintext, in memory)."""

    generation: int
    key_id: str
    master_versions: frozenset[str]
    fields: dict[str, Plaintext]
    envelopes: dict[str, bytes]
    source: str | None
    unbound: bool = False
    """Some envelope is format 1 (not bound to the Credential UID): to be re-encrypted."""


@dataclasses.dataclass(frozen=True)
class Verdict:
    state: State
    detail: str = ""
    """Public description of what is wrong (for TAMPERED and the other failure states)."""
    stored: Stored | None = None


# The operator's field manager (kubeapi.FIELD_MANAGER; not imported: this module does no I/O).
OPERATOR_MANAGER = "tenantry-operator"


def last_writer(obj: Mapping[str, Any]) -> str | None:
    """The field manager of the most recent write other than to status (from managedFields).

    Times have one-second resolution: of writes in the same second, another manager's is taken
    to be the later one, so an edit right after the operator's write is still attributed."""
    entries = [e for e in (obj.get("metadata") or {}).get("managedFields") or []
               if not e.get("subresource")]
    if not entries:
        return None
    latest = max(entries, key=lambda e: (e.get("time") or "",
                                         e.get("manager") != OPERATOR_MANAGER))
    manager = latest.get("manager")
    return str(manager) if manager is not None else None


def owner_of(obj: Mapping[str, Any]) -> tuple[str, str] | None:
    """(name, uid) of the Credential a Secret's ownerReferences name, if any."""
    for ref in (obj.get("metadata") or {}).get("ownerReferences") or []:
        if (ref.get("kind") == credential.KIND
                and str(ref.get("apiVersion", "")).startswith(f"{common.GROUP}/")):
            return str(ref.get("name")), str(ref.get("uid"))
    return None


def _generation(text: object) -> int | None:
    if isinstance(text, str) and text.isdigit() and len(text) <= 19:
        value = int(text)
        return value if value <= 2**63 - 1 else None
    return None


_DAMAGE = (
    (errors.KeyMismatchError, "is under another tenant's key (or another keyring)"),
    (errors.UnboundEnvelopeError, "is an envelope not bound to this Credential's UID (format 1) "
                                  "and this Credential never recorded it in its status"),
    (errors.AuthenticationError, "does not authenticate as this field of this Credential at "
                                 "its current generation"),
    (errors.MalformedCiphertextError, "is not a Tenantry envelope"),
)


def _describe_damage(error: errors.DecryptionError) -> str:
    for kind, words in _DAMAGE:
        if isinstance(error, kind):
            return words
    return "does not open"


def _open_all(ring: keyring.Keyring, owner: Owner, tenant_uid: str, generation: int,
              envelopes: Mapping[str, bytes], *, allow_unbound: bool = False,
              ) -> tuple[dict[str, Plaintext], list[str]]:
    """Open every envelope; (values, descriptions of the fields that failed)."""
    values: dict[str, Plaintext] = {}
    damaged: list[str] = []
    for field in sorted(envelopes):
        try:
            values[field] = Plaintext(envelope.open_value(
                ring, context(owner, tenant_uid, field, generation), envelopes[field],
                allow_unbound=allow_unbound))
        except errors.KeyVersionUnavailableError:
            raise
        except errors.DecryptionError as error:
            damaged.append(f"field {field!r} {_describe_damage(error)}")
    return values, damaged


def verify(secret: Mapping[str, Any] | None, *, ring: keyring.Keyring, owner: Owner,
           tenant: TenantRef, status_generation: int | None,
           expected_fields: Sequence[str] = ()) -> Verdict:
    """Whether `secret` still holds exactly what the operator wrote for this Credential.

    `status_generation` and `expected_fields` come from the Credential's status (written only by
    the operator). The generation annotation is considered only when it is *newer* than status:
    the operator writes the Secret before its status, and may have stopped in between; an older
    one is a replay. Format 1 envelopes (not bound to the Credential UID) are accepted only when
    status records a generation: only the Credential they were written for has one.
    """
    if secret is None:
        return Verdict(State.ABSENT)
    name = secret_name(owner.name)
    meta = secret.get("metadata") or {}
    owner_ref = owner_of(secret)
    labels = meta.get("labels") or {}
    # Ours if it names this Credential as owner; an admin who removed the ownerReference leaves
    # the labels and the type, which also say it (the next write puts the reference back).
    labelled = (secret.get("type") == credential.ENCRYPTED_SECRET_TYPE
                and labels.get(common.MANAGED_BY_LABEL) == "tenantry"
                and labels.get(CREDENTIAL_LABEL) == label_value(owner.name))
    if (owner_ref is None and not labelled) or (owner_ref and owner_ref[0] != owner.name):
        return Verdict(State.FOREIGN, (
            f"Secret {owner.namespace}/{name} exists and does not belong to this Credential; "
            "Tenantry does not overwrite it: remove or rename it"))
    if owner_ref is not None and owner_ref[1] != owner.uid:
        if labels.get(common.MANAGED_BY_LABEL) == "tenantry":
            return Verdict(State.PREDECESSOR)
        return Verdict(State.FOREIGN, (
            f"Secret {owner.namespace}/{name} names an earlier Credential {owner.name} as its "
            "owner but is not Tenantry's; remove it"))
    if secret.get("type") != credential.ENCRYPTED_SECRET_TYPE:
        return Verdict(State.FOREIGN, (
            f"Secret {owner.namespace}/{name} is of type {secret.get('type')!r}, not "
            f"{credential.ENCRYPTED_SECRET_TYPE}: it was not written by Tenantry; remove it"))
    annotations = meta.get("annotations") or {}
    written_for = annotations.get(TENANT_UID_ANNOTATION)
    if isinstance(written_for, str) and written_for != tenant.uid:
        return Verdict(State.TENANT_CHANGED, (
            f"the ciphertext was written for tenant UID {written_for}, but namespace "
            f"{owner.namespace} now belongs to {tenant.name} (UID {tenant.uid}): a re-created "
            "tenant cannot read its predecessor's credentials"))
    data: Mapping[str, object] = secret.get("data") or {}
    who = last_writer(secret)
    by = f" (last written by {who})" if who else ""
    if not data:
        return Verdict(State.TAMPERED, f"Secret {name} holds no data{by}")
    mismatch: list[str] = []
    if expected_fields and set(data) != set(expected_fields):
        added = sorted(set(data) - set(expected_fields))
        removed = sorted(set(expected_fields) - set(data))
        mismatch = [f"field(s) {', '.join(added)} added"] if added else []
        mismatch += [f"field(s) {', '.join(removed)} removed"] if removed else []
    envelopes: dict[str, bytes] = {}
    for field, value in data.items():
        try:
            envelopes[field] = base64.b64decode(str(value), validate=True)
        except (binascii.Error, ValueError):
            return Verdict(State.TAMPERED, f"Secret {name}: field {field!r} is not base64{by}")
    annotated = _generation(annotations.get(GENERATION_ANNOTATION))
    candidates = [] if status_generation is None else [status_generation]
    if annotated is not None and (status_generation is None or annotated > status_generation):
        candidates.append(annotated)
    if not candidates:
        return Verdict(State.TAMPERED, f"Secret {name}: no encryption generation to check{by}")
    damaged: list[str] = []
    for generation in candidates:
        if mismatch and generation == status_generation:
            # The fields status lists are those of its generation; a newer write may differ.
            damaged = mismatch
            continue
        try:
            values, damaged = _open_all(ring, owner, tenant.uid, generation, envelopes,
                                        allow_unbound=status_generation is not None)
        except errors.KeyVersionUnavailableError as error:
            return Verdict(State.KEY_UNAVAILABLE, str(error))
        if not damaged:
            headers = [envelope.parse_header(value) for value in envelopes.values()]
            source = annotations.get(SOURCE_ANNOTATION)
            return Verdict(State.INTACT, stored=Stored(
                generation=generation, key_id=headers[0].key_id,
                master_versions=frozenset(h.master_version for h in headers),
                fields=values, envelopes=envelopes,
                source=source if isinstance(source, str) else None,
                unbound=any(h.format_version == envelope.FORMAT_V1 for h in headers)))
    return Verdict(State.TAMPERED, f"Secret {name}: {'; '.join(damaged)}{by}")


@dataclasses.dataclass(frozen=True)
class Snapshot:
    """A copy of envelopes known to be intact: what a tampered Secret can be restored from.

    Ciphertext only; opening it again needs the keyring and the same context."""

    tenant_uid: str
    generation: int
    envelopes: dict[str, bytes]
    source: str


def open_snapshot(ring: keyring.Keyring, owner: Owner, tenant_uid: str,
                  snapshot: Snapshot) -> dict[str, Plaintext] | None:
    """The snapshot's values, or None if it cannot be trusted (any envelope fails)."""
    if snapshot.tenant_uid != tenant_uid:
        return None
    try:
        # Snapshots are kept per Credential UID: a format 1 one is this Credential's own.
        values, damaged = _open_all(ring, owner, tenant_uid, snapshot.generation,
                                    snapshot.envelopes, allow_unbound=True)
    except errors.DecryptionError:
        return None
    return None if damaged or not values else values


def data_keys(secret: Mapping[str, Any] | None) -> list[str]:
    return sorted((secret or {}).get("data") or {})


def metadata_matches(secret: Mapping[str, Any], desired: Mapping[str, Any]) -> bool:
    """Whether the Secret still carries the labels, annotations and owner reference it should
    (others may add their own; removing or changing ours is drift)."""
    have, want = secret.get("metadata") or {}, desired["metadata"]
    for part in ("labels", "annotations"):
        current = have.get(part) or {}
        if any(current.get(key) != value for key, value in want[part].items()):
            return False
    owners = {(r.get("kind"), r.get("name"), r.get("uid"), r.get("controller"))
              for r in have.get("ownerReferences") or []}
    return all((r["kind"], r["name"], r["uid"], r["controller"]) in owners
               for r in want["ownerReferences"])
