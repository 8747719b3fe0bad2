"""Generate CustomResourceDefinitions from the pydantic models (the only source of truth).

pydantic emits JSON Schema (draft 2020-12) with `$ref`s, `anyOf` for optionals and a few keywords
Kubernetes does not accept. `structural()` turns that into a structural OpenAPI v3 schema: refs
inlined, optionals unwrapped, unsupported keywords dropped or translated, our `x-kubernetes-*`
extensions kept. `crds/` is written by `tenantry crds`, and a test fails when it drifts.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel

from tenantry import generated
from tenantry.model import common, credential, rotation, tenant

_DROPPED_KEYS = {"title", "propertyNames", "discriminator", "examples", "$defs"}


class SchemaError(ValueError):
    """The model uses a construct a structural schema cannot express."""


def _resolve(node: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    ref = node["$ref"]
    name = ref.rsplit("/", 1)[-1]
    if name not in defs:
        raise SchemaError(f"unresolvable $ref {ref}")
    merged: dict[str, Any] = copy.deepcopy(defs[name])
    for key, value in node.items():
        if key != "$ref":
            merged[key] = value
    return merged


def _unwrap_optional(node: dict[str, Any]) -> dict[str, Any]:
    """`anyOf: [X, {type: null}]` -> X, keeping the outer description/default."""
    non_null = [option for option in node["anyOf"] if option.get("type") != "null"]
    if len(non_null) != 1 or len(non_null) == len(node["anyOf"]):
        return node
    outer = {key: value for key, value in node.items()
             if key != "anyOf" and not (key == "default" and value is None)}
    return {**non_null[0], **outer}


def structural(node: Any, defs: dict[str, Any]) -> Any:
    """Translate one pydantic JSON Schema node (recursively) into Kubernetes' dialect."""
    if isinstance(node, list):
        return [structural(item, defs) for item in node]
    if not isinstance(node, dict):
        return node
    while True:
        if "$ref" in node:
            node = _resolve(node, defs)
            continue
        if "allOf" in node and len(node["allOf"]) == 1:
            inner = node["allOf"][0]
            node = {**{k: v for k, v in node.items() if k != "allOf"}, **inner}
            continue
        if "anyOf" in node and not node.get("x-kubernetes-int-or-string"):
            unwrapped = _unwrap_optional(node)
            if unwrapped is node:
                raise SchemaError(f"unions are not structural: {node['anyOf']}")
            node = unwrapped
            continue
        break
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in _DROPPED_KEYS:
            continue
        if key == "additionalProperties" and value is False:
            continue  # unknown fields are pruned by the apiserver anyway
        if key == "const":
            out["enum"] = [value]
        elif key == "exclusiveMinimum" and not isinstance(value, bool):
            out["minimum"], out["exclusiveMinimum"] = value, True
        elif key == "exclusiveMaximum" and not isinstance(value, bool):
            out["maximum"], out["exclusiveMaximum"] = value, True
        elif key == "patternProperties":
            # Constrained map keys: Kubernetes cannot check key patterns in the schema (the
            # models add a CEL rule for that); keep the value schema.
            if len(value) != 1:
                raise SchemaError(f"several key patterns cannot be expressed: {value}")
            out["additionalProperties"] = structural(next(iter(value.values())), defs)
        elif key == "uniqueItems":
            out.setdefault("x-kubernetes-list-type", "set")
        elif key == "properties":
            out[key] = {name: structural(sub, defs) for name, sub in value.items()}
        elif key in ("items", "additionalProperties", "anyOf"):
            out[key] = structural(value, defs)
        else:
            out[key] = value
    if out.get("x-kubernetes-int-or-string"):
        out.pop("type", None)
    elif "type" not in out and not out.get("x-kubernetes-preserve-unknown-fields"):
        if "properties" in out:
            out["type"] = "object"
        elif "enum" in out and all(isinstance(v, str) for v in out["enum"]):
            out["type"] = "string"
        else:
            raise SchemaError(f"schema node without a type: {out}")
    return out


def model_schema(model: type[BaseModel]) -> dict[str, Any]:
    raw = model.model_json_schema(by_alias=True, mode="validation")
    return dict(structural(raw, raw.get("$defs", {})))


@dataclasses.dataclass(frozen=True)
class ResourceDefinition:
    """Everything that makes one CRD besides the schemas of spec and status."""

    kind: str
    plural: str
    singular: str
    short_names: Sequence[str]
    namespaced: bool
    spec_model: type[BaseModel]
    status_model: type[BaseModel]
    printer_columns: Sequence[dict[str, Any]]
    spec_validations: Sequence[dict[str, str]] = ()
    spec_extra_properties: dict[str, Any] = dataclasses.field(default_factory=dict)
    root_validations: Sequence[dict[str, str]] = ()
    description: str = ""

    @property
    def name(self) -> str:
        return f"{self.plural}.{common.GROUP}"


RESOURCES: tuple[ResourceDefinition, ...] = (
    ResourceDefinition(
        kind=tenant.KIND, plural=tenant.PLURAL, singular=tenant.SINGULAR,
        short_names=tenant.SHORT_NAMES, namespaced=False,
        spec_model=tenant.TenantSpec, status_model=tenant.TenantStatus,
        printer_columns=tenant.PRINTER_COLUMNS, root_validations=tenant.ROOT_VALIDATIONS,
        description="A tenant: isolated, hardened namespaces with four-tier RBAC, "
                    "default-deny networking, quotas and an egress allow-list.",
    ),
    ResourceDefinition(
        kind=credential.KIND, plural=credential.PLURAL, singular=credential.SINGULAR,
        short_names=credential.SHORT_NAMES, namespaced=True,
        spec_model=credential.CredentialSpec, status_model=credential.CredentialStatus,
        printer_columns=credential.PRINTER_COLUMNS,
        spec_validations=credential.SPEC_VALIDATIONS,
        spec_extra_properties=credential.SPEC_EXTRA_PROPERTIES,
        description="An integration credential stored only as AES-256-GCM ciphertext under "
                    "its tenant's key; workloads hold references.",
    ),
    ResourceDefinition(
        kind=rotation.KIND, plural=rotation.PLURAL, singular=rotation.SINGULAR,
        short_names=rotation.SHORT_NAMES, namespaced=True,
        spec_model=rotation.RotationPolicySpec, status_model=rotation.RotationPolicyStatus,
        printer_columns=rotation.PRINTER_COLUMNS, spec_validations=rotation.SPEC_VALIDATIONS,
        description="Scheduled and on-demand rotation of keys and credentials.",
    ),
)


def crd(resource: ResourceDefinition) -> dict[str, Any]:
    spec_schema = model_schema(resource.spec_model)
    spec_schema["properties"].update(resource.spec_extra_properties)
    if resource.spec_validations:
        spec_schema.setdefault("x-kubernetes-validations", []).extend(resource.spec_validations)
    status_schema = model_schema(resource.status_model)
    root: dict[str, Any] = {
        "type": "object",
        "description": resource.description,
        "required": ["spec"],
        "properties": {
            "apiVersion": {"type": "string"},
            "kind": {"type": "string"},
            "metadata": {"type": "object"},
            "spec": spec_schema,
            "status": status_schema,
        },
    }
    if resource.root_validations:
        root["x-kubernetes-validations"] = list(resource.root_validations)
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": resource.name,
            "labels": {"app.kubernetes.io/name": "tenantry",
                       "app.kubernetes.io/part-of": "tenantry"},
        },
        "spec": {
            "group": common.GROUP,
            "scope": "Namespaced" if resource.namespaced else "Cluster",
            "names": {
                "kind": resource.kind,
                "listKind": f"{resource.kind}List",
                "plural": resource.plural,
                "singular": resource.singular,
                "shortNames": list(resource.short_names),
                "categories": ["tenantry"],
            },
            "versions": [{
                "name": common.VERSION,
                "served": True,
                "storage": True,
                "subresources": {"status": {}},
                "additionalPrinterColumns": list(resource.printer_columns),
                "schema": {"openAPIV3Schema": root},
            }],
        },
    }


def all_crds() -> list[dict[str, Any]]:
    return [crd(resource) for resource in RESOURCES]


HEADER = "# Generated by `tenantry crds` from operator/tenantry/model. Do not edit.\n"


def render(document: dict[str, Any]) -> str:
    return HEADER + yaml.safe_dump(document, sort_keys=False, width=100)


def file_name(resource: ResourceDefinition) -> str:
    return f"{common.GROUP}_{resource.plural}.yaml"


def rendered_files() -> dict[str, str]:
    """File name -> content of everything `tenantry crds` writes (kustomization included)."""
    files = {file_name(resource): render(crd(resource)) for resource in RESOURCES}
    files["kustomization.yaml"] = render(generated.kustomization(files))
    return files


def write(directory: Path) -> list[Path]:
    return generated.write(directory, rendered_files())


def drift(directory: Path) -> list[str]:
    """Names of files in `directory` that differ from (or are missing against) the models."""
    return generated.drift(directory, rendered_files())
