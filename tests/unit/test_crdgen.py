"""crds/ is generated from the models, structural, and never drifts."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tenantry.model import crdgen

REPO_ROOT = Path(__file__).resolve().parents[2]


def _nodes(schema: Any, path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    if not isinstance(schema, dict):
        return
    yield path, schema
    for name, sub in schema.get("properties", {}).items():
        yield from _nodes(sub, f"{path}.{name}")
    if isinstance(schema.get("items"), dict):
        yield from _nodes(schema["items"], f"{path}[]")
    if isinstance(schema.get("additionalProperties"), dict):
        yield from _nodes(schema["additionalProperties"], f"{path}{{}}")


def test_committed_crds_match_the_models() -> None:
    stale = crdgen.drift(REPO_ROOT / "crds")
    assert stale == [], f"crds/ drifted from the models: {stale}; run `tenantry crds`"


def test_drift_is_detected(tmp_path: Path) -> None:
    crdgen.write(tmp_path)
    assert crdgen.drift(tmp_path) == []
    victim = tmp_path / "tenantry.dev_tenants.yaml"
    victim.write_text(victim.read_text().replace("maxItems: 64", "maxItems: 65", 1))
    assert crdgen.drift(tmp_path) == ["tenantry.dev_tenants.yaml"]


@pytest.mark.parametrize("resource", crdgen.RESOURCES, ids=lambda r: r.kind)
def test_schemas_are_structural(resource: crdgen.ResourceDefinition) -> None:
    schema = crdgen.crd(resource)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    text = yaml.safe_dump(schema)
    assert "$ref" not in text and "$defs" not in text and "title:" not in text
    assert "patternProperties" not in text
    for path, node in _nodes(schema):
        typed = ("type" in node or node.get("x-kubernetes-int-or-string")
                 or node.get("x-kubernetes-preserve-unknown-fields"))
        assert typed, f"{resource.kind}{path} has no type"
        assert node.get("additionalProperties") is not False, path
        if "anyOf" in node:
            assert node.get("x-kubernetes-int-or-string"), f"{path}: union is not structural"


def test_crd_metadata_for_kubectl() -> None:
    tenant, credential, rotation = (crdgen.crd(r) for r in crdgen.RESOURCES)
    assert tenant["spec"]["scope"] == "Cluster"
    assert credential["spec"]["scope"] == rotation["spec"]["scope"] == "Namespaced"
    for crd in (tenant, credential, rotation):
        spec = crd["spec"]
        assert spec["group"] == "tenantry.dev"
        assert spec["names"]["categories"] == ["tenantry"]
        assert spec["names"]["shortNames"]
        version = spec["versions"][0]
        assert version["name"] == "v1alpha1"
        assert version["subresources"] == {"status": {}}
        columns = [c["name"] for c in version["additionalPrinterColumns"]]
        assert columns[0] == "Ready" and columns[-1] == "Age"


def test_defaults_reach_the_schema() -> None:
    tenant = crdgen.crd(crdgen.RESOURCES[0])
    spec = tenant["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    assert spec["properties"]["deletionPolicy"]["default"] == "Retain"
    assert spec["properties"]["podSecurity"]["default"] == {}
    assert spec["properties"]["podSecurity"]["properties"]["mode"]["default"] == "Deny"
    quota = spec["properties"]["quota"]["properties"]
    assert quota["servicesNodePorts"]["default"] == 0
    assert quota["cpu"]["x-kubernetes-int-or-string"] is True


def test_credential_schema_has_no_place_for_plaintext_values() -> None:
    credential = crdgen.crd(crdgen.RESOURCES[1])
    spec = credential["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    rules = [v["rule"] for v in spec["x-kubernetes-validations"]]
    for name in ("value", "data", "stringData", "plaintext", "password", "token"):
        assert f"!has(self.{name})" in rules
