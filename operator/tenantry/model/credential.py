"""The Credential resource (namespaced): an integration secret that is only ever stored encrypted.

Input is either sealed offline (`tenantry seal`, safe to commit to Git) or taken once from a plain
Secret that the operator then removes. The spec has no place for plaintext, and the schema refuses
the field names people reach for by habit, with a message saying what to do instead.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any

from pydantic import Field

from tenantry.model.common import Conditions, DnsSubdomain, SpecModel, cel, k8s_schema

KIND = "Credential"
PLURAL = "credentials"
SINGULAR = "credential"
SHORT_NAMES = ["cred"]

# Secret type of the operator-owned ciphertext Secrets.
ENCRYPTED_SECRET_TYPE = "tenantry.dev/encrypted"  # noqa: S105 - a type name, not a secret

# Base64 (standard alphabet, padded) of a sealed value; a sealed value is small.
SEALED_VALUE_PATTERN = r"^[A-Za-z0-9+/]+={0,2}$"
DATA_KEY_PATTERN = r"^[-._a-zA-Z0-9]+$"


class Scope(StrEnum):
    """Who may use the credential (enforced by the API pod)."""

    PLATFORM = "platform"
    CALLER = "caller"
    PARTICIPANT = "participant"


class Sealed(SpecModel):
    """Values encrypted offline to the operator's public key, bound to this namespace/name."""

    encrypted_data: Annotated[
        dict[Annotated[str, Field(max_length=253, pattern=DATA_KEY_PATTERN)],
             Annotated[str, Field(min_length=16, max_length=65536, pattern=SEALED_VALUE_PATTERN)]],
        Field(min_length=1, max_length=32,
              description="Field name -> sealed value from `tenantry seal`.",
              json_schema_extra=k8s_schema(**{"x-kubernetes-validations": [cel(
                  "self.all(k, k.matches('^[-._a-zA-Z0-9]+$'))",
                  "keys must consist of alphanumerics, '-', '_' or '.'",
                  reason="FieldValueInvalid")]})),
    ]


class SourcePolicy(StrEnum):
    DELETE = "Delete"
    EMPTY = "Empty"


class FromSecret(SpecModel):
    """Import once from a plain Secret in the same namespace, then remove the plaintext."""

    name: Annotated[DnsSubdomain, Field(description="Secret in this namespace.")]
    keys: Annotated[list[Annotated[str, Field(max_length=253, pattern=DATA_KEY_PATTERN)]], Field(
        default_factory=list, max_length=32,
        description="Keys to import; empty means all.",
        json_schema_extra=k8s_schema(**{"x-kubernetes-list-type": "set"}))]
    source_policy: Annotated[SourcePolicy, Field(
        description="Delete the source Secret, or Empty its data, once encrypted.")] \
        = SourcePolicy.DELETE


class CredentialSpec(SpecModel):
    description: Annotated[str | None, Field(max_length=512)] = None
    sealed: Sealed | None = None
    from_secret: FromSecret | None = None
    scope: Annotated[Scope, Field(
        description="platform: only Tenantry's own components; caller: the listed "
                    "ServiceAccounts acting for themselves; participant: short-lived scoped "
                    "tokens issued by the API.")] = Scope.CALLER
    allowed_service_accounts: Annotated[
        list[Annotated[str, Field(max_length=253, pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")]],
        Field(default_factory=list, max_length=64,
              description="ServiceAccounts in this namespace that may use the credential.",
              json_schema_extra=k8s_schema(**{"x-kubernetes-list-type": "set"})),
    ]


# Names people reach for when they mean "put the secret here". Declared (so they are not silently
# pruned) and refused by a rule that says what to do instead.
_PLAINTEXT_FIELDS = ("value", "data", "stringData", "plaintext", "password", "token")


def _plaintext_traps() -> dict[str, Any]:
    # Typed, so CEL can see them (it cannot see into preserve-unknown-fields subtrees).
    refused = "Refused: Credentials never carry plaintext."
    traps: dict[str, Any] = {}
    for name in _PLAINTEXT_FIELDS:
        if name in ("data", "stringData"):
            traps[name] = {"type": "object", "description": refused,
                           "additionalProperties": {"type": "string"}}
        else:
            traps[name] = {"type": "string", "description": refused}
    return traps


SPEC_VALIDATIONS = [
    cel("has(self.sealed) != has(self.fromSecret)",
        "exactly one of spec.sealed or spec.fromSecret must be set", reason="FieldValueRequired"),
    cel("self.scope != 'caller' || "
        "(has(self.allowedServiceAccounts) && self.allowedServiceAccounts.size() > 0)",
        "spec.allowedServiceAccounts: scope caller needs at least one ServiceAccount",
        reason="FieldValueRequired"),
    *[cel(f"!has(self.{name})",
          f"spec.{name}: plaintext is never accepted in a Credential; encrypt it with "
          "`tenantry seal` (spec.sealed) or import it from a Secret (spec.fromSecret)",
          reason="FieldValueForbidden", field_path=f".{name}")
      for name in _PLAINTEXT_FIELDS],
]

# The wire names of the trap fields, added to the spec schema by crdgen.
SPEC_EXTRA_PROPERTIES = _plaintext_traps()


class SecretRef(SpecModel):
    """Where the ciphertext lives: a name and a key identifier, never a value."""

    name: DnsSubdomain
    key_id: Annotated[str, Field(max_length=128, description="Tenant key id of the envelope.")]


class CredentialStatus(SpecModel):
    observed_generation: Annotated[int | None, Field(ge=0)] = None
    conditions: Conditions
    secret_ref: SecretRef | None = None
    encryption_generation: Annotated[int | None, Field(
        ge=0, description="Bumped on each (re-)encryption; bound into the ciphertext.")] = None
    keys: Annotated[list[Annotated[str, Field(max_length=253)]], Field(
        default_factory=list, max_length=32, description="Field names stored (never values).")]
    last_encrypted_time: Annotated[str | None, Field(json_schema_extra={"format": "date-time"})] \
        = None
    handled_configuration: Annotated[str | None, Field(description=(
        "The operator's bookkeeping: the spec, labels and annotations it last handled (JSON), "
        "kept with the status it wrote for them rather than in an annotation of its own."))] \
        = None


PRINTER_COLUMNS: list[dict[str, Any]] = [
    {"name": "Ready", "type": "string",
     "jsonPath": '.status.conditions[?(@.type=="Ready")].status'},
    {"name": "Scope", "type": "string", "jsonPath": ".spec.scope"},
    {"name": "Secret", "type": "string", "jsonPath": ".status.secretRef.name"},
    {"name": "Key", "type": "string", "jsonPath": ".status.secretRef.keyId"},
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
]
