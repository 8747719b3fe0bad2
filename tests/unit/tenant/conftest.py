"""Fixtures for the pure Tenant builders: sample specs and a check that a manifest looks valid."""

from __future__ import annotations

import copy
import re
from collections.abc import Callable
from typing import Any

import pytest

from tenantry.model.tenant import TenantSpec

TENANT = "acme"
UID = "6c0d6c5e-1f0b-4d8a-9b4e-3f1f4c1b2a77"

# The sample in manifests/samples/tenant-acme.yaml, as a dict (tests must not depend on files
# others may edit).
ACME: dict[str, Any] = {
    "displayName": "ACME Corp",
    "members": [
        {"kind": "User", "name": "alice@acme.example", "role": "owner"},
        {"kind": "Group", "name": "acme-platform", "role": "admin"},
        {"kind": "User", "name": "bob@acme.example", "role": "member"},
        {"kind": "ServiceAccount", "name": "ci-bot", "namespace": "acme-ci", "role": "viewer"},
    ],
    "namespaces": [{"name": "acme-prod"}, {"name": "acme-staging"}],
    "network": {
        "egress": [
            {"description": "Payments API", "cidr": "203.0.113.0/24", "ports": [{"port": 443}]},
            {"description": "Shared observability stack", "namespace": "observability",
             "podLabels": {"app": "otel-collector"}, "ports": [{"port": 4317}]},
            {"description": "Internal package mirror", "cidr": "10.20.30.0/24",
             "ports": [{"port": 443}]},
        ],
        "approvedPrivateRanges": ["10.20.30.0/24"],
    },
    "quota": {"cpu": "16", "memory": "32Gi", "pods": 100},
}

SpecFactory = Callable[..., TenantSpec]


@pytest.fixture
def make_spec() -> SpecFactory:
    """`make_spec(**top_level_overrides)`: the ACME sample with some top-level fields replaced."""
    def make(**overrides: Any) -> TenantSpec:
        return TenantSpec.model_validate({**copy.deepcopy(ACME), **overrides})
    return make


@pytest.fixture
def acme(make_spec: SpecFactory) -> TenantSpec:
    return make_spec()


DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
LABEL_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
# Namespaces are DNS labels; most objects DNS subdomains; RBAC objects only need a path segment.
_PATH_SEGMENT_KINDS = {"Role", "RoleBinding", "ClusterRole", "ClusterRoleBinding"}


def check_manifest(manifest: dict[str, Any]) -> None:
    """Fail unless `manifest` looks like something the apiserver would accept."""
    assert isinstance(manifest.get("apiVersion"), str) and manifest["apiVersion"]
    assert isinstance(manifest.get("kind"), str) and manifest["kind"][0].isupper()
    meta = manifest["metadata"]
    name = meta["name"]
    assert 0 < len(name) <= 253, name
    if manifest["kind"] == "Namespace":
        assert len(name) <= 63 and DNS_LABEL.match(name), name
    elif manifest["kind"] in _PATH_SEGMENT_KINDS:
        assert "/" not in name and "%" not in name and name not in {".", ".."}, name
    else:
        assert DNS_SUBDOMAIN.match(name), name
    if "namespace" in meta:
        assert len(meta["namespace"]) <= 63 and DNS_LABEL.match(meta["namespace"])
    for key, value in meta.get("labels", {}).items():
        prefix, _, label_name = key.rpartition("/")
        assert len(prefix) <= 253 and (not prefix or DNS_SUBDOMAIN.match(prefix)), key
        assert len(label_name) <= 63 and LABEL_NAME.match(label_name), key
        assert isinstance(value, str) and len(value) <= 63 and LABEL_VALUE.match(value), value


@pytest.fixture
def valid() -> Callable[[dict[str, Any]], None]:
    """`valid(manifest)` asserts the manifest looks valid (apiVersion, kind, names, labels)."""
    return check_manifest
