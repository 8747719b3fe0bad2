"""A Credential's input as plaintext in memory, or exactly why it cannot be had (pure).

Two inputs:

- `spec.sealed`: each value was sealed by `tenantry seal` to the operator's public key for one
  field of one Credential in one namespace. It opens only there: pasted into another namespace
  (of the same tenant or another), another Credential or another field, it fails with
  `SealTargetMismatch`; sealed for another cluster's key, with `BadSeal`.
- `spec.fromSecret`: a plain Secret of the same namespace, imported once and then deleted or
  emptied (that is the caller's job). Secrets that are not the user's to give away are refused:
  Tenantry's own ciphertext Secrets, ServiceAccount and bootstrap tokens, anything labelled as
  managed by Tenantry (deleting those would break the cluster or another Credential).
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import enum
from collections.abc import Mapping
from typing import Any

from tenantry.controller.credential.plaintext import Plaintext
from tenantry.controller.credential.problems import Problem, Reason
from tenantry.crypto import errors, sealing
from tenantry.crypto.custody import SealingKeys
from tenantry.model import common, credential

# Secret types whose deletion would break something other than the Credential's author's data.
REFUSED_SOURCE_TYPES = {
    credential.ENCRYPTED_SECRET_TYPE: "it is a Tenantry ciphertext Secret",
    "kubernetes.io/service-account-token": "it is a ServiceAccount token",
    "bootstrap.kubernetes.io/token": "it is a bootstrap token",
}


def unseal(keys: SealingKeys, namespace: str, name: str,
           encrypted_data: Mapping[str, str]) -> dict[str, Plaintext] | Problem:
    """Open every sealed field for `namespace`/`name`; a Problem naming each field that fails."""
    values: dict[str, Plaintext] = {}
    failures: list[tuple[Reason, str]] = []
    for field in sorted(encrypted_data):
        sealed_value = encrypted_data[field]
        try:
            key = keys.for_hint(sealing.recipient_hint(sealed_value))
            values[field] = Plaintext(
                sealing.unseal(key, sealing.Target(namespace, name, field), sealed_value))
        except errors.KeyMismatchError:
            failures.append((Reason.BAD_SEAL, (
                f"field {field!r} was sealed for another key, not for this operator's "
                f"{keys.fingerprint} (another cluster's?): seal it again with "
                "`tenantry seal --fetch-key`")))
        except errors.AuthenticationError:
            failures.append((Reason.SEAL_TARGET_MISMATCH, (
                f"field {field!r} does not open as field {field!r} of Credential "
                f"{namespace}/{name}: it was sealed for another namespace, Credential name or "
                f"field, or modified since; seal it for this one: tenantry seal --namespace "
                f"{namespace} --name {name} --field {field}")))
        except errors.CryptoError as error:
            # Malformed, truncated, unsupported format, invalid field name: all say so safely.
            failures.append((Reason.BAD_SEAL, f"field {field!r}: {error}"))
    if failures:
        reason = failures[0][0]
        return Problem(reason, "; ".join(message for _, message in failures))
    return values


class SourceState(enum.StrEnum):
    ABSENT = "Absent"
    """No such Secret (or it is being deleted)."""
    EMPTY = "Empty"
    """It exists but holds none of the wanted keys: already imported and emptied, or not yet
    filled."""
    INCOMPLETE = "Incomplete"
    """Some wanted keys are there, others not."""
    REFUSED = "Refused"
    FRESH = "Fresh"
    """Values to import."""


@dataclasses.dataclass(frozen=True)
class Source:
    """What the `spec.fromSecret` Secret offers."""

    state: SourceState
    fields: dict[str, Plaintext] = dataclasses.field(default_factory=dict)
    problem: Problem | None = None
    resource_version: str | None = None
    uid: str | None = None


def read_source(secret: Mapping[str, Any] | None, source: credential.FromSecret,
                namespace: str) -> Source:
    """Classify the source Secret and, when it has them, take the wanted values."""
    where = f"Secret {namespace}/{source.name}"
    if secret is None or (secret.get("metadata") or {}).get("deletionTimestamp"):
        return Source(SourceState.ABSENT, problem=Problem(
            Reason.SOURCE_SECRET_MISSING,
            f"{where} (spec.fromSecret.name) does not exist; create it, and it is imported"))
    meta = secret.get("metadata") or {}
    refused = REFUSED_SOURCE_TYPES.get(str(secret.get("type") or ""))
    labels = meta.get("labels") or {}
    if refused is None and (common.TENANT_LABEL in labels
                            or labels.get(common.MANAGED_BY_LABEL) == "tenantry"):
        refused = "it is managed by Tenantry"
    if refused is not None:
        return Source(SourceState.REFUSED, problem=Problem(
            Reason.SOURCE_SECRET_REFUSED,
            f"{where} cannot be imported: {refused}, and importing removes the source; "
            "import from a Secret of your own (type Opaque)"))
    data: Mapping[str, str] = secret.get("data") or {}
    wanted = list(source.keys) or sorted(data)
    present = [key for key in wanted if key in data]
    missing = [key for key in wanted if key not in data]
    version, uid = meta.get("resourceVersion"), meta.get("uid")
    if not present:
        return Source(SourceState.EMPTY, problem=Problem(
            Reason.SOURCE_KEY_MISSING,
            f"{where} holds none of the keys to import "
            f"({', '.join(source.keys) if source.keys else 'it has no data'})"),
            resource_version=version, uid=uid)
    if missing:
        return Source(SourceState.INCOMPLETE, problem=Problem(
            Reason.SOURCE_KEY_MISSING,
            f"{where} lacks key(s) {', '.join(missing)} listed in spec.fromSecret.keys"),
            resource_version=version, uid=uid)
    fields: dict[str, Plaintext] = {}
    for key in present:
        try:
            fields[key] = Plaintext(base64.b64decode(data[key], validate=True))
        except (binascii.Error, ValueError, TypeError):
            return Source(SourceState.REFUSED, problem=Problem(
                Reason.SOURCE_SECRET_REFUSED, f"{where}: key {key!r} is not valid base64"))
    return Source(SourceState.FRESH, fields=fields, resource_version=version, uid=uid)
