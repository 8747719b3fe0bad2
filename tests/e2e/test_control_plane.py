"""The local control plane is a real Kubernetes: TLS, RBAC, controllers, admission policies."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable

import pytest
from kubernetes import client

from tenantry.devcluster.build import KUBERNETES_VERSION
from tenantry.devcluster.cluster import LocalControlPlane
from tests.conftest import UserApi, api_message


def eventually(check: Callable[[], bool], timeout: float = 30.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.25)
    raise AssertionError(f"timed out waiting for {what}")


def test_reports_the_pinned_version(admin_api: client.ApiClient) -> None:
    assert client.VersionApi(admin_api).get_code().git_version == f"v{KUBERNETES_VERSION}"


def test_rbac_is_enforced_for_real_identities(admin_api: client.ApiClient,
                                              as_user: UserApi) -> None:
    stranger = client.CoreV1Api(as_user("stranger"))
    with pytest.raises(client.ApiException) as denied:
        stranger.list_namespace()
    assert denied.value.status == 403
    assert 'User "stranger" cannot list resource "namespaces"' in api_message(denied.value)

    group = f"readers-{uuid.uuid4().hex[:6]}"
    rbac = client.RbacAuthorizationV1Api(admin_api)
    binding = client.V1ClusterRoleBinding(
        metadata=client.V1ObjectMeta(name=group),
        role_ref=client.V1RoleRef(api_group="rbac.authorization.k8s.io", kind="ClusterRole",
                                  name="view"),
        subjects=[client.RbacV1Subject(kind="Group", name=group,
                                       api_group="rbac.authorization.k8s.io")],
    )
    rbac.create_cluster_role_binding(binding)
    try:
        reader = client.CoreV1Api(as_user("carol", [group]))
        reader.list_namespaced_config_map("default")  # allowed by the aggregated view role
        with pytest.raises(client.ApiException) as still_denied:
            reader.create_namespaced_config_map(
                "default", client.V1ConfigMap(metadata=client.V1ObjectMeta(name="x")))
        assert still_denied.value.status == 403
    finally:
        rbac.delete_cluster_role_binding(group)


def test_controllers_run(admin_api: client.ApiClient, namespace: str) -> None:
    core = client.CoreV1Api(admin_api)

    def has(kind: str, name: str) -> bool:
        try:
            getattr(core, f"read_namespaced_{kind}")(name, namespace)
        except client.ApiException:
            return False
        return True

    eventually(lambda: has("service_account", "default"), what="default ServiceAccount")
    eventually(lambda: has("config_map", "kube-root-ca.crt"), what="kube-root-ca.crt")

    owner = core.create_namespaced_config_map(
        namespace, client.V1ConfigMap(metadata=client.V1ObjectMeta(name="owner")))
    core.create_namespaced_config_map(namespace, client.V1ConfigMap(metadata=client.V1ObjectMeta(
        name="child",
        owner_references=[client.V1OwnerReference(
            api_version="v1", kind="ConfigMap", name="owner", uid=owner.metadata.uid)],
    )))
    core.delete_namespaced_config_map("owner", namespace)
    eventually(lambda: not has("config_map", "child"), what="garbage collection of the child")


def test_namespace_deletion_completes(admin_api: client.ApiClient) -> None:
    core = client.CoreV1Api(admin_api)
    name = f"gone-{uuid.uuid4().hex[:8]}"
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    core.create_namespaced_config_map(
        name, client.V1ConfigMap(metadata=client.V1ObjectMeta(name="data")))
    core.delete_namespace(name)

    def gone() -> bool:
        try:
            core.read_namespace(name)
        except client.ApiException as error:
            return error.status == 404
        return False

    eventually(gone, timeout=60, what="namespace deletion to finish")


def test_builtin_roles_are_aggregated(admin_api: client.ApiClient) -> None:
    admin_role = client.RbacAuthorizationV1Api(admin_api).read_cluster_role("admin")
    assert admin_role.rules, "clusterrole-aggregation controller did not fill 'admin'"


def test_validating_admission_policies_are_enforced(admin_api: client.ApiClient,
                                                    namespace: str) -> None:
    name = f"no-forbidden-{uuid.uuid4().hex[:6]}"
    admission = client.AdmissionregistrationV1Api(admin_api)
    admission.create_validating_admission_policy({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicy",
        "metadata": {"name": name},
        "spec": {
            "failurePolicy": "Fail",
            "matchConstraints": {"resourceRules": [{
                "apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE"],
                "resources": ["configmaps"]}]},
            "validations": [{"expression": "!has(object.data) || !('forbidden' in object.data)",
                             "message": "forbidden key"}],
        },
    })
    admission.create_validating_admission_policy_binding({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicyBinding",
        "metadata": {"name": name},
        "spec": {"policyName": name, "validationActions": ["Deny"],
                 "matchResources": {"namespaceSelector": {"matchLabels": {
                     "kubernetes.io/metadata.name": namespace}}}},
    })
    core = client.CoreV1Api(admin_api)
    try:
        def denied() -> bool:
            try:
                core.create_namespaced_config_map(namespace, client.V1ConfigMap(
                    metadata=client.V1ObjectMeta(generate_name="probe-"),
                    data={"forbidden": "1"}))
            except client.ApiException as error:
                return error.status == 422 and "forbidden key" in api_message(error)
            return False

        # Policies reach the apiserver's informer within a second or so.
        eventually(denied, what="the ValidatingAdmissionPolicy to deny")
    finally:
        admission.delete_validating_admission_policy_binding(name)
        admission.delete_validating_admission_policy(name)


def test_user_kubeconfigs_are_cached_and_private(control_plane: LocalControlPlane) -> None:
    first = control_plane.kubeconfig_for("dave", ["g1"])
    assert control_plane.kubeconfig_for("dave", ["g1"]) == first
    assert control_plane.kubeconfig_for("dave", ["g2"]) != first
    assert first.stat().st_mode & 0o077 == 0
