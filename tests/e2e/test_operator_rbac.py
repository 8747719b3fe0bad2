"""The operator's own RBAC, attacked as its identity: Secrets only in tenant namespaces.

The operator runs as its ServiceAccount with manifests/operator/rbac.yaml applied (see the
`operator` fixture). Its ClusterRole grants no Secret permission; each tenant namespace holds
RoleBinding `tenantry-operator-secrets`, applied by the Tenant reconciler with the fences. So a
stolen look at what the operator may read shows: nothing in kube-system, nothing in its own
namespace (its keys are mounted files), nothing in a namespace no tenant owns, nothing
cluster-wide; everything a Credential needs in a tenant namespace, for as long as it is one.
Asked both ways: a SubjectAccessReview per verb, and real requests with its credentials.
"""

from __future__ import annotations

import pytest
from kubernetes import client

from tests.conftest import OPERATOR_GROUPS, OPERATOR_USER, OperatorProcess, UserApi
from tests.e2e.conftest import TenantFactory, owner
from tests.helpers import eventually, forbidden, unique

BINDING = "tenantry-operator-secrets"
TENANT_LABEL = "tenantry.dev/tenant"
VERBS = ("get", "list", "watch", "create", "patch", "update", "delete", "deletecollection")
# What the Credential controller uses; update and deletecollection it never needs.
NEEDED = ("get", "list", "watch", "create", "patch", "delete")


def _may(admin_api: client.ApiClient, verb: str, namespace: str, name: str = "") -> bool:
    """Whether the operator's identity may `verb` Secrets in `namespace` ("" = all)."""
    review = client.V1SubjectAccessReview(spec=client.V1SubjectAccessReviewSpec(
        user=OPERATOR_USER, groups=list(OPERATOR_GROUPS),
        resource_attributes=client.V1ResourceAttributes(
            verb=verb, resource="secrets", namespace=namespace or None, name=name or None)))
    answer = client.AuthorizationV1Api(admin_api).create_subject_access_review(review)
    return bool(answer.status.allowed)


def _secret(core: client.CoreV1Api, namespace: str, name: str) -> None:
    core.create_namespaced_secret(namespace, client.V1Secret(
        metadata=client.V1ObjectMeta(name=name), string_data={"password": "not-for-operator"}))


def test_the_operator_reads_no_secret_outside_tenant_namespaces(
        admin_api: client.ApiClient, operator: OperatorProcess, tenants: TenantFactory,
        namespace: str, as_user: UserApi) -> None:
    core_admin = client.CoreV1Api(admin_api)
    _secret(core_admin, namespace, "platform-db")  # a fresh namespace no tenant owns
    as_operator = client.CoreV1Api(as_user(OPERATOR_USER, list(OPERATOR_GROUPS)))

    # The attack: everything the operator's identity could try, everywhere but a tenant.
    for where in ("kube-system", "tenantry-system", namespace):
        for verb in VERBS:
            assert not _may(admin_api, verb, where), f"{verb} secrets in {where}"
        assert not _may(admin_api, "get", where, "platform-db")
        assert forbidden(lambda where=where: as_operator.list_namespaced_secret(where))
        assert forbidden(lambda where=where: as_operator.read_namespaced_secret(
            "platform-db", where))
    for verb in ("get", "list", "watch"):
        assert not _may(admin_api, verb, ""), f"{verb} secrets cluster-wide"
    assert forbidden(as_operator.list_secret_for_all_namespaces)
    # Not even by name the webhook's Secret (its CA and serving keys): the WebhookCertificates
    # rotation asks through a ConfigMap instead.
    for verb in ("get", "patch", "update", "delete"):
        assert not _may(admin_api, verb, "tenantry-system", "tenantry-webhook-tls"), verb
    with pytest.raises(client.ApiException) as refused:
        as_operator.read_namespaced_secret("tenantry-webhook-tls", "tenantry-system")
    assert refused.value.status == 403

    # ...while in a tenant namespace it may do what Credentials need, and no more.
    name = unique("opsec")
    tenants(name, [name], [owner(f"{name}-alice")])
    for verb in NEEDED:
        assert _may(admin_api, verb, name), f"{verb} secrets in tenant namespace {name}"
    assert not _may(admin_api, "update", name)
    assert not _may(admin_api, "deletecollection", name)
    assert as_operator.list_namespaced_secret(name) is not None
    # Through that one binding, which is the operator's and no access of the tenant's.
    binding = client.RbacAuthorizationV1Api(admin_api).read_namespaced_role_binding(BINDING, name)
    assert binding.role_ref.name == BINDING and binding.role_ref.kind == "ClusterRole"
    assert [(s.kind, s.name, s.namespace) for s in binding.subjects] == [
        ("ServiceAccount", "tenantry-operator", "tenantry-system")]
    assert TENANT_LABEL not in (binding.metadata.labels or {})
    cluster_bindings = client.RbacAuthorizationV1Api(admin_api).list_cluster_role_binding().items
    assert not [b.metadata.name for b in cluster_bindings if b.role_ref.name == BINDING]


def test_a_namespace_the_tenant_gives_up_is_closed_to_the_operator_again(
        admin_api: client.ApiClient, tenants: TenantFactory) -> None:
    name = unique("opsec-rel")
    kept, released = f"{name}-kept", f"{name}-gone"
    tenants(name, [kept, released], [owner(f"{name}-alice")])
    assert _may(admin_api, "list", released)
    custom = client.CustomObjectsApi(admin_api)
    # Retain (the default): the namespace stays, without the tenant and without our binding.
    custom.patch_cluster_custom_object("tenantry.dev", "v1alpha1", "tenants", name,
                                       {"spec": {"namespaces": [{"name": kept}]}})
    eventually(lambda: not _may(admin_api, "list", released), timeout=30,
               what=f"the operator's Secret access to released namespace {released} to go")
    rbac = client.RbacAuthorizationV1Api(admin_api)
    assert BINDING not in [b.metadata.name
                           for b in rbac.list_namespaced_role_binding(released).items]
    assert _may(admin_api, "list", kept)
    client.CoreV1Api(admin_api).delete_namespace(released)


def test_tenants_cannot_remove_it_and_a_removed_binding_comes_back(
        admin_api: client.ApiClient, tenants: TenantFactory, as_user: UserApi) -> None:
    name = unique("opsec-drift")
    tenants(name, [name], [owner(f"{name}-alice")])
    rbac_owner = client.RbacAuthorizationV1Api(as_user(f"{name}-alice"))
    assert forbidden(lambda: rbac_owner.delete_namespaced_role_binding(BINDING, name)), \
        "a tenant owner removed the operator's binding"
    # A cluster admin (or a bad sync) deletes it anyway: the drift watch puts it back.
    client.RbacAuthorizationV1Api(admin_api).delete_namespaced_role_binding(BINDING, name)
    eventually(lambda: _may(admin_api, "list", name), timeout=30,
               what="the operator's Secret binding to be restored")
