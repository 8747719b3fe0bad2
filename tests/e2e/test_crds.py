"""The generated CRDs on the real apiserver: samples accepted, bad objects refused by name."""

from __future__ import annotations

import copy
import uuid
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from tenantry import kube
from tenantry.model import crdgen
from tests.conftest import REPO_ROOT, api_message

SAMPLES = sorted((REPO_ROOT / "manifests" / "samples").glob("*.yaml"))

TENANT: dict[str, Any] = {
    "apiVersion": "tenantry.dev/v1alpha1", "kind": "Tenant",
    "metadata": {"name": "valid"},
    "spec": {"members": [{"kind": "User", "name": "alice", "role": "owner"}],
             "namespaces": [{"name": "valid-a"}]},
}
CREDENTIAL: dict[str, Any] = {
    "apiVersion": "tenantry.dev/v1alpha1", "kind": "Credential",
    "metadata": {"name": "valid", "namespace": "default"},
    "spec": {"fromSecret": {"name": "plain"}, "scope": "platform"},
}
ROTATION: dict[str, Any] = {
    "apiVersion": "tenantry.dev/v1alpha1", "kind": "RotationPolicy",
    "metadata": {"name": "valid", "namespace": "default"},
    "spec": {"targets": ["Credentials"], "schedule": "@monthly"},
}


def _with(base: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    """A copy of `base` with the dotted `path` set to `value` (None deletes it)."""
    document = copy.deepcopy(base)
    *parents, leaf = path.split(".")
    node = document
    for key in parents:
        node = node.setdefault(key, {})
    if value is None:
        node.pop(leaf, None)
    else:
        node[leaf] = value
    return document


# (case id, object, field the message must name, rule text the message must contain)
INVALID = [
    ("tenant-no-owner",
     _with(TENANT, "spec.members", [{"kind": "User", "name": "bob", "role": "viewer"}]),
     "spec.members", "at least one member must have role owner"),
    ("tenant-bad-namespace-name",
     _with(TENANT, "spec.namespaces", [{"name": "Team_A"}]),
     "spec.namespaces[0].name", "should match"),
    ("tenant-no-namespaces", _with(TENANT, "spec.namespaces", []),
     "spec.namespaces", "should have at least 1 items"),
    ("tenant-bad-role",
     _with(TENANT, "spec.members", [{"kind": "User", "name": "a", "role": "root"}]),
     "spec.members[0].role", 'Unsupported value: "root"'),
    ("tenant-sa-without-namespace",
     _with(TENANT, "spec.members", [{"kind": "ServiceAccount", "name": "ci", "role": "owner"}]),
     "spec.members", "namespace is required for ServiceAccount members"),
    ("tenant-sa-owner",
     _with(TENANT, "spec.members", [{"kind": "User", "name": "a", "role": "owner"},
                                    {"kind": "ServiceAccount", "name": "ci", "namespace": "a",
                                     "role": "admin"}]),
     "spec.members", "a ServiceAccount member may have role member or viewer"),
    ("tenant-sa-owner-spelled-as-user",
     _with(TENANT, "spec.members", [{"kind": "User", "name": "a", "role": "owner"},
                                    {"kind": "User", "name": "system:serviceaccount:a:ci",
                                     "role": "owner"}]),
     "spec.members", "also when named as the User system:serviceaccount:NAMESPACE:NAME"),
    ("tenant-sa-admin-spelled-as-group",
     _with(TENANT, "spec.members", [{"kind": "User", "name": "a", "role": "owner"},
                                    {"kind": "Group", "name": "system:serviceaccounts:a",
                                     "role": "admin"}]),
     "spec.members", "or the Group system:serviceaccounts:NAMESPACE"),
    *[(f"tenant-everyone-{name.split(':')[1]}",
       _with(TENANT, "spec.members", [{"kind": "User", "name": "a", "role": "owner"},
                                      {"kind": kind, "name": name, "role": "viewer"}]),
       "spec.members", "members must not grant access to everyone")
      for kind, name in (("Group", "system:authenticated"), ("Group", "system:unauthenticated"),
                         ("Group", "system:serviceaccounts"), ("User", "system:anonymous"))],
    ("tenant-system-priority-class",
     _with(TENANT, "spec.allowedPriorityClasses", ["batch-low", "system-node-critical"]),
     "spec.allowedPriorityClasses", "reserved for the cluster's own components"),
    ("tenant-exempt-pod-security-rule",
     _with(TENANT, "spec.podSecurity", {"exemptions": [{"rule": "runAsNonRoot",
                                                        "reason": "legacy"}]}),
     "spec.podSecurity.exemptions[0].rule", 'Unsupported value: "runAsNonRoot"'),
    ("tenant-special-purpose-range-not-approved",
     _with(TENANT, "spec.network", {"egress": [{"cidr": "::ffff:a00:0/104"}]}),
     "spec.network.egress", "must lie inside one of approvedPrivateRanges"),
    ("tenant-nat64-range-not-approved",
     _with(TENANT, "spec.network", {"egress": [{"cidr": "64:ff9b::/96"}]}),
     "spec.network.egress", "must lie inside one of approvedPrivateRanges"),
    ("tenant-cidr-host-bits",
     _with(TENANT, "spec.network", {"egress": [{"cidr": "203.0.113.7/24"}]}),
     "spec.network.egress[0].cidr", "must be a CIDR"),
    ("tenant-cidr-garbage",
     _with(TENANT, "spec.network", {"egress": [{"cidr": "not-a-cidr"}]}),
     "spec.network.egress[0].cidr", "must be a CIDR"),
    ("tenant-private-range-not-approved",
     _with(TENANT, "spec.network", {"egress": [{"cidr": "10.1.0.0/16"}]}),
     "spec.network.egress", "must lie inside one of approvedPrivateRanges"),
    ("tenant-metadata-address-not-approved",
     _with(TENANT, "spec.network", {"egress": [{"cidr": "169.254.169.254/32"}]}),
     "spec.network.egress", "must lie inside one of approvedPrivateRanges"),
    ("tenant-ipv6-ula-not-approved",
     _with(TENANT, "spec.network", {"egress": [{"cidr": "fd00:1::/64"}]}),
     "spec.network.egress", "must lie inside one of approvedPrivateRanges"),
    ("tenant-egress-cidr-and-namespace",
     _with(TENANT, "spec.network", {"egress": [{"cidr": "203.0.113.0/24", "namespace": "x"}]}),
     "spec.network.egress[0]", "exactly one of cidr or namespace"),
    ("tenant-egress-port-range-backwards",
     _with(TENANT, "spec.network",
           {"egress": [{"cidr": "203.0.113.0/24", "ports": [{"port": 90, "endPort": 80}]}]}),
     "spec.network.egress[0].ports", "endPort must be >= port"),
    ("tenant-bad-mode", _with(TENANT, "spec.podSecurity", {"mode": "Off"}),
     "spec.podSecurity.mode", 'Unsupported value: "Off"'),
    ("tenant-empty-exemption",
     _with(TENANT, "spec.podSecurity", {"exemptions": [{"reason": "because"}]}),
     "spec.podSecurity.exemptions[0]", "names at least one of rule, image or namespace"),
    ("tenant-bad-quantity", _with(TENANT, "spec.quota", {"cpu": "lots"}),
     "spec.quota.cpu", "should match"),
    ("tenant-negative-pods", _with(TENANT, "spec.quota", {"pods": -1}),
     "spec.quota.pods", "should be greater than or equal to 0"),
    ("tenant-bad-deletion-policy", _with(TENANT, "spec.deletionPolicy", "Shred"),
     "spec.deletionPolicy", 'Unsupported value: "Shred"'),
    ("tenant-name-too-long", _with(TENANT, "metadata.name", "t" * 64),
     "metadata.name", "at most 63 characters"),
    ("credential-both-inputs",
     _with(CREDENTIAL, "spec.sealed", {"encryptedData": {"k": "A" * 24}}),
     "spec", "exactly one of spec.sealed or spec.fromSecret"),
    ("credential-no-input", _with(CREDENTIAL, "spec.fromSecret", None),
     "spec", "exactly one of spec.sealed or spec.fromSecret"),
    ("credential-plaintext-value", _with(CREDENTIAL, "spec.value", "hunter2"),
     "spec.value", "plaintext is never accepted"),
    ("credential-plaintext-data", _with(CREDENTIAL, "spec.data", {"password": "hunter2"}),
     "spec.data", "plaintext is never accepted"),
    ("credential-caller-without-accounts", _with(CREDENTIAL, "spec.scope", "caller"),
     "spec.allowedServiceAccounts", "scope caller needs at least one ServiceAccount"),
    ("credential-bad-scope", _with(CREDENTIAL, "spec.scope", "everyone"),
     "spec.scope", 'Unsupported value: "everyone"'),
    ("credential-sealed-not-base64",
     _with(_with(CREDENTIAL, "spec.fromSecret", None), "spec.sealed",
           {"encryptedData": {"token": "this is not base64 at all!!"}}),
     "spec.sealed.encryptedData.token", "should match"),
    ("rotation-never-rotates", _with(ROTATION, "spec.schedule", None),
     "spec", "set spec.schedule, spec.trigger or both"),
    ("rotation-bad-target", _with(ROTATION, "spec.targets", ["Everything"]),
     "spec.targets[0]", 'Unsupported value: "Everything"'),
    ("rotation-bad-schedule", _with(ROTATION, "spec.schedule", "every month"),
     "spec.schedule", "should match"),
    ("rotation-selector-without-credentials",
     _with(_with(ROTATION, "spec.targets", ["MasterKey"]), "spec.credentialSelector",
           {"matchLabels": {"a": "b"}}),
     "spec.credentialSelector", "needs 'Credentials' in spec.targets"),
    ("rotation-retain-too-many", _with(ROTATION, "spec.retainPrevious", 11),
     "spec.retainPrevious", "should be less than or equal to 10"),
    ("rotation-bad-grace-period", _with(ROTATION, "spec.gracePeriod", "1 day"),
     "spec.gracePeriod", "should match"),
]


@pytest.fixture(scope="module")
def sample_namespaces(admin_api: client.ApiClient, crds: None) -> list[str]:
    """The namespaces the samples live in (the operator would create them)."""
    core = client.CoreV1Api(admin_api)
    names = sorted({d["metadata"]["namespace"] for d in kube.load_manifests(SAMPLES)
                    if d["metadata"].get("namespace")})
    for name in names:
        try:
            core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
        except client.ApiException as error:
            if error.status != 409:
                raise
    return names


def test_crds_are_established_and_discoverable(admin_api: client.ApiClient, crds: None) -> None:
    resources = client.CustomObjectsApi(admin_api).get_api_resources("tenantry.dev", "v1alpha1")
    by_name = {r.name: r for r in resources.resources}
    assert by_name["tenants"].namespaced is False
    assert by_name["credentials"].namespaced is True
    assert by_name["rotationpolicies"].namespaced is True
    for plural in ("tenants", "credentials", "rotationpolicies"):
        assert by_name[plural].categories == ["tenantry"]
        assert "tenants/status" in by_name or plural != "tenants"
    assert by_name["tenants"].short_names == ["tn"]


@pytest.mark.parametrize("path", SAMPLES, ids=lambda p: Path(p).name)
def test_every_sample_is_accepted(admin_api: client.ApiClient, sample_namespaces: list[str],
                                  path: Path) -> None:
    documents = kube.load_manifests([path])
    assert documents
    applied = kube.apply(admin_api, documents, dry_run=True)
    assert [a.metadata.name for a in applied] == [d["metadata"]["name"] for d in documents]


@pytest.mark.parametrize(("document", "field", "rule"),
                         [case[1:] for case in INVALID], ids=[case[0] for case in INVALID])
def test_invalid_objects_are_refused_naming_field_and_rule(
        admin_api: client.ApiClient, crds: None, document: dict[str, Any], field: str,
        rule: str) -> None:
    with pytest.raises(client.ApiException) as refused:
        kube.apply(admin_api, [document], dry_run=True)
    assert refused.value.status == 422, refused.value.body
    message = api_message(refused.value)
    assert field in message, message
    assert rule in message, message


def test_the_valid_bases_are_accepted(admin_api: client.ApiClient, crds: None) -> None:
    # Guards the table above: each case fails for its own reason, not a broken base object.
    kube.apply(admin_api, [TENANT, CREDENTIAL, ROTATION], dry_run=True)


def test_apiserver_fills_secure_defaults(admin_api: client.ApiClient, crds: None) -> None:
    name = f"defaults-{uuid.uuid4().hex[:6]}"
    custom = client.CustomObjectsApi(admin_api)
    created = custom.create_cluster_custom_object(
        "tenantry.dev", "v1alpha1", "tenants", _with(TENANT, "metadata.name", name))
    try:
        spec = created["spec"]
        assert spec["podSecurity"]["mode"] == "Deny"
        assert spec["deletionPolicy"] == "Retain"
        assert spec["quota"]["servicesNodePorts"] == 0
        assert spec["quota"]["servicesLoadBalancers"] == 0
        assert spec["network"]["allowIntraTenant"] is True
        assert spec["namespaces"][0]["adopt"] is False
    finally:
        custom.delete_cluster_custom_object("tenantry.dev", "v1alpha1", "tenants", name)


def test_status_is_a_subresource(admin_api: client.ApiClient, crds: None) -> None:
    name = f"status-{uuid.uuid4().hex[:6]}"
    custom = client.CustomObjectsApi(admin_api)
    custom.create_cluster_custom_object("tenantry.dev", "v1alpha1", "tenants",
                                        _with(TENANT, "metadata.name", name))
    try:
        ready = {"type": "Ready", "status": "True", "reason": "Reconciled", "message": "",
                 "lastTransitionTime": "2026-01-01T00:00:00Z"}
        patched = custom.patch_cluster_custom_object(
            "tenantry.dev", "v1alpha1", "tenants", name, {"status": {"conditions": [ready]}})
        assert "status" not in patched or not patched["status"].get("conditions")
        patched = custom.patch_cluster_custom_object_status(
            "tenantry.dev", "v1alpha1", "tenants", name, {"status": {"conditions": [ready]}})
        assert patched["status"]["conditions"][0]["reason"] == "Reconciled"
    finally:
        custom.delete_cluster_custom_object("tenantry.dev", "v1alpha1", "tenants", name)


def test_resources_match_the_model_registry() -> None:
    assert [r.kind for r in crdgen.RESOURCES] == ["Tenant", "Credential", "RotationPolicy"]
