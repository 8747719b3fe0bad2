"""What an audit event says, before the ledger gives it a place: the `AuditEvent` model (pure).

An event carries who acted (actor, actor kind and the identity used), what they did (action,
resource, summary of changes), where (source IP, request id, component) and for which tenant.
It deliberately has no time, sequence number or hash: the database assigns those when the event
is appended, so no client can choose them.

`changes` and `identity` are scrubbed by `redact.redact` when the event is built, and must have a
canonical JSON form (see `hashing`), so an event that validates is one the ledger can hash.
"""

from __future__ import annotations

import enum
import ipaddress
import re
from collections.abc import Sequence
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, JsonValue

from tenantry.ledger import hashing, redact

#: Largest canonical size of `changes` or `identity`: audit rows are summaries, not objects.
MAX_JSON_BYTES = 64 * 1024

# Tenant names are Kubernetes object names (RFC 1123 subdomains); "_platform" can never be one.
_TENANT_NAME = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")


# Admission entries are written while the apiserver is still deciding: later admission steps
# (other webhooks, ResourceQuota, storage) may refuse what Tenantry let through. They record a
# request and Tenantry's own verdict, in these words, never "admitted" by the cluster.
REQUESTED = "requested"
ADMITTED_BY_TENANTRY = "admitted-by-tenantry"
REFUSED_BY_TENANTRY = "refused-by-tenantry"


class ActorKind(enum.StrEnum):
    """What kind of principal acted."""

    USER = "user"
    SERVICEACCOUNT = "serviceaccount"
    SYSTEM = "system"


def actor_kind_of(username: str) -> ActorKind:
    """The kind of a Kubernetes user name: a ServiceAccount, another `system:` user, or a user."""
    if username.startswith("system:serviceaccount:"):
        return ActorKind.SERVICEACCOUNT
    return ActorKind.SYSTEM if username.startswith("system:") else ActorKind.USER


def _no_nul(value: str) -> str:
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    return value


def _tenant_name(value: str) -> str:
    if len(value) > 253 or not _TENANT_NAME.match(value):
        raise ValueError("must be a Kubernetes object name (lowercase RFC 1123 subdomain)")
    return value


def _source_ip(value: str) -> str:
    try:
        address = ipaddress.ip_address(value)
    except ValueError:
        raise ValueError("must be an IPv4 or IPv6 address") from None
    if isinstance(address, ipaddress.IPv6Address) and address.scope_id:
        # PostgreSQL's inet has no zone index; refuse rather than silently drop it.
        raise ValueError("must not carry an IPv6 zone index")
    return value


def _hashable_object(value: dict[str, Any]) -> dict[str, Any]:
    scrubbed: dict[str, Any] = redact.redact(value)
    try:
        encoded = hashing.canonical_json(scrubbed)
    except hashing.HashingError as error:
        raise ValueError(f"has no canonical JSON form: {error}") from None
    if len(encoded) > MAX_JSON_BYTES:
        raise ValueError(f"is larger than {MAX_JSON_BYTES} bytes as canonical JSON")
    return scrubbed


Text = Annotated[str, Field(min_length=1, max_length=1024), AfterValidator(_no_nul)]
OptionalText = Annotated[str | None, Field(max_length=1024),
                         AfterValidator(lambda v: None if v is None else _no_nul(v))]
HashableObject = Annotated[dict[str, JsonValue], AfterValidator(_hashable_object)]


class AuditEvent(BaseModel):
    """One auditable action, as a writer describes it. Immutable once built."""

    model_config = ConfigDict(frozen=True, extra="forbid", hide_input_in_errors=True)

    tenant: Annotated[str | None, AfterValidator(
        lambda v: None if v is None else _tenant_name(v))] = None
    """The tenant the action concerns; None for platform events (the platform chain)."""
    actor: Text
    """Who acted: a user name, `system:serviceaccount:<ns>:<name>`, or a component name."""
    actor_kind: ActorKind
    identity: HashableObject = Field(default_factory=dict)
    """The credential the actor used; build it with the `*_identity` helpers below."""
    action: Text
    """What was done, e.g. `tenant.create.requested` (admission), `credential.encrypt`."""
    resource_kind: Text
    resource_namespace: OptionalText = None
    resource_name: OptionalText = None
    changes: HashableObject = Field(default_factory=dict)
    """A summary of what changed (field paths, references, sizes): never secret values."""
    source_ip: Annotated[str | None, AfterValidator(
        lambda v: None if v is None else _source_ip(v))] = None
    request_id: OptionalText = None
    component: Text
    """The Tenantry component that recorded the event: `operator`, `admission`, `api`, ..."""

    @property
    def chain(self) -> str:
        """The hash chain this event is appended to."""
        return hashing.chain_for(self.tenant)

    def payload(self) -> dict[str, Any]:
        """The JSON object `ledger.append_batch` takes for this event."""
        # By hand rather than model_dump(mode="json"): every field is already JSON-ready, and
        # this runs for each appended event (model_dump costs ~10x more).
        return {
            "tenant": self.tenant, "actor": self.actor, "actor_kind": self.actor_kind.value,
            "identity": self.identity, "action": self.action,
            "resource_kind": self.resource_kind, "resource_namespace": self.resource_namespace,
            "resource_name": self.resource_name, "changes": self.changes,
            "source_ip": self.source_ip, "request_id": self.request_id,
            "component": self.component,
        }


def token_identity(token_id: str) -> dict[str, str]:
    """The identity of a caller authenticated by a Tenantry access token (its JTI)."""
    return {"kind": "token", "token_id": token_id}


def api_key_identity(prefix: str) -> dict[str, str]:
    """The identity of a caller authenticated by an API key: its public prefix, never the key."""
    return {"kind": "api_key", "key_prefix": prefix}


def kubernetes_identity(username: str, groups: Sequence[str] = (),
                        uid: str | None = None) -> dict[str, Any]:
    """The identity of a Kubernetes caller, from an admission request's `userInfo`."""
    identity: dict[str, Any] = {"kind": "kubernetes", "username": username,
                                "groups": list(groups)}
    if uid:
        identity["uid"] = uid
    return identity


def system_identity(component: str) -> dict[str, str]:
    """The identity of Tenantry itself acting on its own (e.g. the operator's ServiceAccount)."""
    return {"kind": "system", "component": component}
