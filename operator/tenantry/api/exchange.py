"""Who may exchange a Credential for its value, and opening it (pure).

`decide` applies the Credential's scope to a ServiceAccount the apiserver vouched for
(`tokenreview.Account`):

- `caller`: the ServiceAccount is in the Credential's namespace and named in
  `spec.allowedServiceAccounts`;
- `platform`: only Tenantry's own ServiceAccounts (in Tenantry's namespace), and, when the list
  is not empty, only those named in it;
- `participant`: never with a ServiceAccount token (a participant token, issued by the API for
  this one resource, is the only way).

`open_fields` decrypts the ciphertext Secret's envelopes in memory under exactly the context
the operator encrypted them with (tenant UID, Credential UID, namespace, name, field,
generation), so a Secret copied from elsewhere, edited, or left over from an earlier Credential
of the same name does not open. Format 1 envelopes (not bound to the Credential UID) are not
handed out: the operator re-encrypts them first.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
from collections.abc import Mapping
from typing import Any

from tenantry.api.tokenreview import Account
from tenantry.crypto import envelope, errors, keyring
from tenantry.model import credential

ENCRYPTED_TYPE = credential.ENCRYPTED_SECRET_TYPE


@dataclasses.dataclass(frozen=True)
class Decision:
    allowed: bool
    status: int = 200
    reason: str = ""
    """Why not, for the caller and the ledger (names no value, and no other Credential)."""


def refuse(status: int, reason: str) -> Decision:
    return Decision(allowed=False, status=status, reason=reason)


def lifetime_refusal(account: Account, max_lifetime: int) -> Decision | None:
    """The refusal of a token that lives longer than `max_lifetime` seconds (or for ever), else
    None: such a token outlives the access of whoever minted it (see `tokenreview`)."""
    if account.lifetime is not None and 0 < account.lifetime <= max_lifetime:
        return None
    lives = "never expires" if account.lifetime is None else f"lives {account.lifetime} s"
    return refuse(401, f"this ServiceAccount token {lives}; the exchange takes tokens that live "
                       f"at most {max_lifetime} s: mount a projected serviceAccountToken with "
                       f"expirationSeconds <= {max_lifetime}")


def decide(obj: Mapping[str, Any], account: Account, tenantry_namespace: str) -> Decision:
    """Whether `account` may exchange the Credential `obj` (its manifest)."""
    spec = obj.get("spec") or {}
    namespace = (obj.get("metadata") or {}).get("namespace")
    scope = spec.get("scope") or credential.Scope.CALLER.value
    allowed = spec.get("allowedServiceAccounts") or []
    if scope == credential.Scope.PARTICIPANT.value:
        return refuse(403, "this Credential is participant-scoped: exchange it with a "
                           "participant token, not a ServiceAccount token")
    if scope == credential.Scope.PLATFORM.value:
        if account.namespace != tenantry_namespace:
            return refuse(403, "this Credential is platform-scoped: only Tenantry's own "
                               "ServiceAccounts may use it")
        if allowed and account.name not in allowed:
            return refuse(403, f"ServiceAccount {account.name} is not in "
                               "spec.allowedServiceAccounts")
        return Decision(allowed=True)
    if scope != credential.Scope.CALLER.value:
        return refuse(403, f"unknown scope {str(scope)[:32]!r}")
    if account.namespace != namespace:
        return refuse(403, "a ServiceAccount may only use Credentials of its own namespace")
    if account.name not in allowed:
        return refuse(403, f"ServiceAccount {account.name} is not in "
                           "spec.allowedServiceAccounts")
    return Decision(allowed=True)


@dataclasses.dataclass(frozen=True)
class Ready:
    """Where a Credential's ciphertext is, from its status (written by the operator alone)."""

    secret_name: str
    key_id: str
    generation: int
    fields: tuple[str, ...]


def ready(obj: Mapping[str, Any]) -> Ready | None:
    """The Credential's ciphertext reference, or None before its first encryption."""
    status = obj.get("status") or {}
    ref = status.get("secretRef") or {}
    generation = status.get("encryptionGeneration")
    name, key_id = ref.get("name"), ref.get("keyId")
    if not isinstance(name, str) or not isinstance(key_id, str) or not isinstance(
            generation, int) or isinstance(generation, bool):
        return None
    return Ready(secret_name=name, key_id=key_id, generation=generation,
                 fields=tuple(str(f) for f in status.get("keys") or ()))


class Unopenable(Exception):
    """The ciphertext cannot be trusted or opened now; the message names no value."""


def open_fields(ring: keyring.Keyring, obj: Mapping[str, Any], secret: Mapping[str, Any],
                tenant_uid: str, wanted: str | None) -> dict[str, bytes]:
    """The Credential's values (all fields, or just `wanted`), decrypted in memory; KeyError
    when `wanted` is not one of its fields."""
    metadata = obj.get("metadata") or {}
    where = ready(obj)
    if where is None:
        raise Unopenable("the Credential has not been encrypted yet")
    if secret.get("type") != ENCRYPTED_TYPE:
        raise Unopenable("its ciphertext Secret is not of type " + ENCRYPTED_TYPE)
    data: Mapping[str, Any] = secret.get("data") or {}
    names = sorted(data) if wanted is None else [wanted]
    if wanted is not None and wanted not in data:
        raise KeyError(wanted)
    values: dict[str, bytes] = {}
    for field in names:
        context = envelope.Context(
            tenant_uid=tenant_uid, namespace=str(metadata.get("namespace")),
            credential=str(metadata.get("name")), field=field, generation=where.generation,
            credential_uid=str(metadata.get("uid")))
        try:
            sealed = base64.b64decode(str(data[field]), validate=True)
            values[field] = envelope.open_value(ring, context, sealed)
        except (binascii.Error, ValueError):
            raise Unopenable(f"field {field!r} is not base64 ciphertext") from None
        except errors.KeyVersionUnavailableError as missing:
            raise Unopenable(f"field {field!r} is under a key version this API does not "
                             f"hold ({missing})") from None
        except errors.DecryptionError:
            raise Unopenable(f"field {field!r} does not open under its context: the "
                             "ciphertext was changed or belongs elsewhere (the operator "
                             "restores it)") from None
    return values


def as_text(values: Mapping[str, bytes]) -> tuple[dict[str, str], list[str]]:
    """Values for a JSON answer: UTF-8 text as is, anything else base64 (and named)."""
    text: dict[str, str] = {}
    encoded: list[str] = []
    for field, value in values.items():
        try:
            text[field] = value.decode("utf-8")
        except UnicodeDecodeError:
            text[field] = base64.b64encode(value).decode("ascii")
            encoded.append(field)
    return text, encoded
