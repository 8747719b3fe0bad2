"""What a rule reports, and what a rule is: the vocabulary shared by the checks, the webhook and
`tenantry check`.

A violation names the field to change with its full path, the value that is required there, and a
message a developer can act on. Violations found inside a container also carry the container's
name and image, so that an exemption by image can match them.
"""

from __future__ import annotations

import dataclasses
import json
import types
from collections.abc import Callable, Mapping, Sequence
from enum import StrEnum
from typing import Any

from tenantry.admission import podspecs


class Level(StrEnum):
    """A set of rules; each level includes the ones before it.

    `baseline` and `restricted` are Pod Security Admission's profiles at the pinned version;
    `tenantry` is `restricted` plus Tenantry's own hardening rules, and is what admission enforces.
    """

    BASELINE = "baseline"
    RESTRICTED = "restricted"
    TENANTRY = "tenantry"

    @property
    def rank(self) -> int:
        return _RANKS[self]


_RANKS = {Level.BASELINE: 0, Level.RESTRICTED: 1, Level.TENANTRY: 2}


@dataclasses.dataclass(frozen=True, slots=True)
class Violation:
    """One field that breaks one rule."""

    rule_id: str
    """The rule's camelCase id, as exemptions in a Tenant spec name it."""
    field_path: str
    """Path of the offending field, e.g. spec.containers[1].securityContext.runAsNonRoot."""
    message: str
    """What is wrong and what to do, e.g. "must be true (is unset)"."""
    required_value: str
    """The value (or set of values) the field must have, e.g. "true"."""
    container: str | None = None
    """Name of the container the field belongs to; None for pod-level fields."""
    image: str | None = None
    """That container's image; None for pod-level fields."""

    def with_prefix(self, prefix: str) -> Violation:
        """The same violation seen from an enclosing object (prefix "spec.template.")."""
        if not prefix:
            return self
        return dataclasses.replace(self, field_path=prefix + self.field_path)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (camelCase, as the rest of the wire)."""
        data: dict[str, Any] = {
            "rule": self.rule_id,
            "fieldPath": self.field_path,
            "message": self.message,
            "requiredValue": self.required_value,
        }
        if self.container is not None:
            data["container"] = self.container
            data["image"] = self.image
        return data

    def __str__(self) -> str:
        return f"{self.field_path}: {self.message} [{self.rule_id}]"


@dataclasses.dataclass(frozen=True, slots=True)
class Container:
    """One container of a pod, with what every rule reads from it looked up once."""

    path: str
    """Pod-relative path, e.g. spec.initContainers[0]."""
    name: str
    image: str
    obj: podspecs.Obj
    security_context: podspecs.Obj
    """securityContext, or an empty mapping when unset."""

    def violation(self, rule_id: str, subpath: str, message: str, required: str) -> Violation:
        """A violation at `<container path>.<subpath>`, attributed to this container."""
        return Violation(rule_id, f"{self.path}.{subpath}", message, required,
                         container=self.name, image=self.image)


@dataclasses.dataclass(frozen=True, slots=True)
class Pod:
    """A pod's metadata and spec, pre-digested for the rules (built once per evaluation)."""

    metadata: podspecs.Obj
    spec: podspecs.Obj
    security_context: podspecs.Obj
    """spec.securityContext, or an empty mapping when unset."""
    containers: tuple[Container, ...]
    """Init, regular and ephemeral containers, in that order."""
    windows: bool
    """spec.os.name is windows: some Linux-only checks do not apply (as in Pod Security)."""
    user_namespace: bool
    """spec.hostUsers is false: the pod runs in its own user namespace."""

    @classmethod
    def of(cls, metadata: podspecs.Obj, spec: podspecs.Obj) -> Pod:
        views = []
        for path, obj in podspecs.containers(spec):
            name = obj.get("name")
            image = obj.get("image")
            views.append(Container(
                path=path,
                name=name if isinstance(name, str) else "",
                image=image if isinstance(image, str) else "",
                obj=obj,
                security_context=mapping(obj.get("securityContext")),
            ))
        os = mapping(spec.get("os"))
        return cls(
            metadata=metadata,
            spec=spec,
            security_context=mapping(spec.get("securityContext")),
            containers=tuple(views),
            windows=os.get("name") == "windows",
            user_namespace=spec.get("hostUsers") is False,
        )

    def container_named(self, name: str) -> Container | None:
        for container in self.containers:
            if container.name == name:
                return container
        return None


Check = Callable[[Pod], list[Violation]]


@dataclasses.dataclass(frozen=True, slots=True)
class Rule:
    """A named check, the level it belongs to, and the rules it replaces at stricter levels."""

    id: str
    level: Level
    summary: str
    check: Check
    psa_id: str | None = None
    """The Pod Security Admission check this rule mirrors (its Go CheckID), if any."""
    overrides: tuple[str, ...] = ()
    """Rule ids this one supersedes when both are in a profile (as PSA's OverrideCheckIDs)."""


_EMPTY: podspecs.Obj = types.MappingProxyType({})


def mapping(value: Any) -> podspecs.Obj:
    """`value` if it is a mapping, else an empty one: absent and null fields read alike.

    Any Mapping counts, not only dict: the webhook may hand over read-only views of the request,
    and a securityContext that went unseen because of its Python type would be a silent pass.
    """
    if type(value) is dict:  # the common case, checked first: this runs for every field read
        return value
    return value if value is not None and isinstance(value, Mapping) else _EMPTY


def items(value: Any) -> Sequence[Any]:
    """`value` if it is a list (or tuple), else an empty sequence."""
    if type(value) is list:
        return value
    return value if value is not None and isinstance(value, list | tuple) else ()


def show(value: Any) -> str:
    """A field's current value as a message shows it."""
    if value is None:
        return "unset"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, str | list | dict):
        return json.dumps(value, default=str)
    return str(value)
