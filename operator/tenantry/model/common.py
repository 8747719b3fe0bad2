"""Shared building blocks of the three resources: base model config, conditions, field types.

Field names are snake_case in Python and camelCase on the wire (aliases), as Kubernetes expects.
Constraints are written once here and reach both places that enforce them: pydantic (offline
tools, the operator) and the CRD's OpenAPI schema (the apiserver), through `model.crdgen`.
"""

from __future__ import annotations

import datetime
import ipaddress
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    WithJsonSchema,
)
from pydantic.alias_generators import to_camel

GROUP = "tenantry.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"

# Label keys owned by the operator; tenants can never set or change them (admission enforces).
TENANT_LABEL = f"{GROUP}/tenant"
MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"


class SpecModel(BaseModel):
    """Base of every spec/status fragment: camelCase on the wire, unknown fields rejected."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        validate_default=True,
        # Errors may end up in logs, events or status: never echo the offending value back.
        hide_input_in_errors=True,
    )

    def wire(self) -> dict[str, Any]:
        """The object as Kubernetes sees it: camelCase keys, unset optionals left out."""
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")


def cel(rule: str, message: str, *, reason: str | None = None,
        field_path: str | None = None) -> dict[str, str]:
    """One `x-kubernetes-validations` entry."""
    entry = {"rule": rule, "message": message}
    if reason:
        entry["reason"] = reason
    if field_path:
        entry["fieldPath"] = field_path
    return entry


def k8s_schema(**extra: Any) -> dict[str, Any]:
    """Extra schema keys for a Field (validations, list types...), merged by crdgen."""
    return extra


# -- scalar types ------------------------------------------------------------------------------

DNS_LABEL_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
DNS_SUBDOMAIN_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"

DnsLabel = Annotated[str, Field(min_length=1, max_length=63, pattern=DNS_LABEL_PATTERN)]
DnsSubdomain = Annotated[str, Field(min_length=1, max_length=253, pattern=DNS_SUBDOMAIN_PATTERN)]

# Kubernetes resource.Quantity, as written in manifests: 500m, 2, 1.5Gi, 1e3.
QUANTITY_PATTERN = (
    r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))"
    r"(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$"
)


def _quantity_to_str(value: Any) -> Any:
    if isinstance(value, bool):
        raise ValueError("a quantity is a number or a string such as '500m' or '2Gi'")
    if isinstance(value, int | float):
        return str(value)
    return value


Quantity = Annotated[
    str,
    BeforeValidator(_quantity_to_str),
    Field(pattern=QUANTITY_PATTERN, max_length=64),
    WithJsonSchema({
        "x-kubernetes-int-or-string": True,
        "anyOf": [{"type": "integer"}, {"type": "string"}],
        "pattern": QUANTITY_PATTERN,
    }),
]

# Go time.Duration strings such as 720h, 90m, 1h30m.
DURATION_PATTERN = r"^([0-9]+(\.[0-9]+)?(ns|us|ms|s|m|h))+$"
Duration = Annotated[str, Field(pattern=DURATION_PATTERN, max_length=32)]


def _check_cidr(value: str) -> str:
    try:
        ipaddress.ip_network(value, strict=True)
    except ValueError as error:
        raise ValueError(f"{value!r} is not a CIDR with no host bits set: {error}") from None
    return value


Cidr = Annotated[
    str,
    Field(min_length=3, max_length=49),
    AfterValidator(_check_cidr),
    WithJsonSchema({
        "type": "string",
        "minLength": 3,
        "maxLength": 49,
        "x-kubernetes-validations": [cel(
            "isCIDR(self) && cidr(self) == cidr(self).masked()",
            "must be a CIDR such as 203.0.113.0/24 with no host bits set",
            reason="FieldValueInvalid",
        )],
    }),
]


# -- status ------------------------------------------------------------------------------------

ConditionStatus = Literal["True", "False", "Unknown"]
CONDITION_TYPE_PATTERN = r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$"


class Condition(SpecModel):
    """metav1.Condition: one aspect of the object's state."""

    type: Annotated[str, Field(max_length=316, pattern=CONDITION_TYPE_PATTERN,
                               description="CamelCase condition type, e.g. Ready.")]
    status: Annotated[ConditionStatus, Field(description="True, False or Unknown.")]
    reason: Annotated[str, Field(min_length=1, max_length=1024,
                                 pattern=r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$",
                                 description="CamelCase machine-readable reason.")]
    message: Annotated[str, Field(max_length=32768, description="Human-readable details.")] = ""
    last_transition_time: Annotated[
        str, Field(json_schema_extra={"format": "date-time"},
                   description="When status last changed.")]
    observed_generation: Annotated[int | None, Field(ge=0)] = None


Conditions = Annotated[
    list[Condition],
    Field(
        default_factory=list,
        max_length=16,
        description="Current state, keyed by type (Kubernetes API conventions).",
        json_schema_extra=k8s_schema(**{
            "x-kubernetes-list-type": "map",
            "x-kubernetes-list-map-keys": ["type"],
        }),
    ),
]


# -- times as status fields hold them -------------------------------------------------------

def parse_time(value: object) -> datetime.datetime | None:
    """An RFC 3339 time from status (`2026-12-01T09:00:00Z`), or None if absent or malformed."""
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=datetime.UTC)


def format_time(value: datetime.datetime) -> str:
    """As Kubernetes writes times: UTC, seconds, `Z`."""
    return value.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
