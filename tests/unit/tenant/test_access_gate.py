"""Access follows isolation per namespace: no RoleBinding where a fence failed (pure parts)."""

from __future__ import annotations

from tenantry.controller.tenant import desired, meta, namespaces, network, quota, rbac, reconcile
from tenantry.model.tenant import TenantSpec
from tests.unit.tenant.conftest import TENANT, UID


def _ref(kind: str, namespace: str, name: str) -> meta.ObjectRef:
    api_version = {"NetworkPolicy": "networking.k8s.io/v1",
                   "RoleBinding": "rbac.authorization.k8s.io/v1"}.get(kind, "v1")
    return meta.ObjectRef(api_version, kind, namespace, name)


def test_failed_fences_name_their_namespace() -> None:
    failed = [
        _ref("NetworkPolicy", "acme-prod", network.DEFAULT_DENY),
        _ref("ResourceQuota", "acme-prod", quota.QUOTA_NAME),
        _ref("Namespace", "", "acme-staging"),
        # Not fences: a failed binding or role never withholds anything.
        _ref("RoleBinding", "acme-dev", "tenantry:owner"),
        meta.ObjectRef("rbac.authorization.k8s.io/v1", "ClusterRole", "", "tenantry:acme:view"),
    ]
    gaps = desired.unfenced(failed)
    assert list(gaps) == ["acme-prod", "acme-staging"]
    assert gaps["acme-prod"] == sorted(failed[:2])
    assert gaps["acme-staging"] == [failed[2]]


def test_bindings_are_withheld_only_in_unfenced_namespaces(acme: TenantSpec) -> None:
    wanted = desired.desired_objects(TENANT, UID, acme)
    kept = desired.withhold_access(wanted, {"acme-prod"})
    removed = [obj for obj in wanted if obj not in kept]
    assert removed and all(obj["kind"] == "RoleBinding"
                           and obj["metadata"]["namespace"] == "acme-prod" for obj in removed)
    # The other namespace keeps its bindings; fences and cluster-wide objects are untouched.
    assert any(obj["kind"] == "RoleBinding" and obj["metadata"]["namespace"] == "acme-staging"
               for obj in kept)
    assert [o for o in wanted if o["kind"] != "RoleBinding"] == [
        o for o in kept if o["kind"] != "RoleBinding"]
    assert desired.withhold_access(wanted, set()) == wanted


def test_a_fence_stands_while_it_exists_and_a_namespace_while_it_keeps_its_labels() -> None:
    deny = network.default_deny(TENANT, UID, "acme-prod")
    assert desired.fence_in_place(deny, {"metadata": {"name": network.DEFAULT_DENY}})
    assert not desired.fence_in_place(deny, None)
    ns = namespaces.namespace(TENANT, "acme-prod")
    assert desired.fence_in_place(ns, ns)
    stripped = {"metadata": {"labels": {
        **ns["metadata"]["labels"], "pod-security.kubernetes.io/enforce": "privileged"}}}
    assert not desired.fence_in_place(ns, stripped)
    assert not desired.fence_in_place(ns, None)


def test_status_says_why_access_is_withheld(acme: TenantSpec) -> None:
    decisions = {entry.name: namespaces.decide(TENANT, entry, None)
                 for entry in acme.namespaces}
    message = ("no access granted in namespace acme-prod until its isolation applies: "
               "NetworkPolicy acme-prod/tenantry-default-deny failed")
    outcome = reconcile.Outcome(
        decisions=decisions,
        failures={"NetworkPolicies": ["NetworkPolicy acme-prod/tenantry-default-deny: "
                                      "Invalid: refused"]},
        withheld={"acme-prod": message})
    status = reconcile.status_of(outcome, acme, 3, None)
    by_type = {c["type"]: c for c in status["conditions"]}
    assert by_type["RBAC"]["status"] == "False"
    assert by_type["RBAC"]["reason"] == "IsolationIncomplete"
    assert "acme-prod" in by_type["RBAC"]["message"]
    assert "tenantry-default-deny" in by_type["RBAC"]["message"]
    assert by_type["Ready"]["status"] == "False"
    rows = {row["name"]: row for row in status["namespaces"]}
    assert rows["acme-prod"]["ready"] is False
    assert rows["acme-prod"]["reason"] == "IsolationIncomplete"
    assert rows["acme-staging"]["ready"] is True
    assert reconcile.audit_summary(outcome)["accessWithheld"] == ["acme-prod"]


def test_revocation_counts_as_a_change() -> None:
    outcome = reconcile.Outcome(decisions={}, revoked=["RoleBinding acme-prod/tenantry:owner"])
    assert reconcile.changed_anything(outcome)
    assert reconcile.audit_summary(outcome)["revoked"] == ["RoleBinding acme-prod/tenantry:owner"]


def test_the_operators_secret_binding_is_never_withheld_and_goes_with_the_fences(
        acme: TenantSpec) -> None:
    """It gives no person anything: a failed fence must not stop Credentials, nor count it."""
    wanted = desired.desired_objects(TENANT, UID, acme)
    own = [o for o in wanted if rbac.is_operator_access(o)]
    assert [(o["metadata"]["namespace"], o["metadata"]["name"]) for o in own] == [
        ("acme-prod", rbac.OPERATOR_SECRETS), ("acme-prod", rbac.API_SECRETS),
        ("acme-staging", rbac.OPERATOR_SECRETS), ("acme-staging", rbac.API_SECRETS)]
    # The API's binding gives the API's ServiceAccount a read-only role, nothing of the
    # operator's.
    api = [o for o in own if o["metadata"]["name"] == rbac.API_SECRETS]
    assert {o["roleRef"]["name"] for o in api} == {rbac.API_SECRETS}
    assert {s["name"] for o in api for s in o["subjects"]} == {rbac.API_SERVICE_ACCOUNT}
    assert not any(desired.is_access(o) for o in own)
    kept = desired.withhold_access(wanted, {"acme-prod", "acme-staging"})
    assert [o for o in kept if o["kind"] == "RoleBinding"] == own
    # Applied in the fence stage, before any access, and not a fence itself.
    assert {reconcile._stage(o) for o in own} == {reconcile._stage(
        network.default_deny(TENANT, UID, "acme-prod"))}
    assert desired.unfenced([meta.ref(own[0])]) == {}
