"""Everything for one tenant, in a safe order, deterministic, and pruned without leftovers."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from tenantry.controller.tenant import desired, meta, namespaces, rbac
from tenantry.controller.tenant.meta import ObjectRef
from tenantry.model import common
from tenantry.model.tenant import DeletionPolicy, TenantSpec

TENANT = "acme"
UID = "6c0d6c5e-1f0b-4d8a-9b4e-3f1f4c1b2a77"
NAMESPACED = {"NetworkPolicy", "ResourceQuota", "LimitRange", "RoleBinding"}
Manifests = list[dict[str, Any]]


def _objects(spec: TenantSpec, **kwargs: Any) -> Manifests:
    return desired.desired_objects(TENANT, UID, spec, **kwargs)


def _refs(objects: Manifests) -> list[ObjectRef]:
    return [meta.ref(o) for o in objects]


def _summary(objects: Manifests) -> list[str]:
    return [str(r) for r in _refs(objects)]


def test_the_sample_tenant_in_apply_order(acme: TenantSpec) -> None:
    per_namespace = ["NetworkPolicy {ns}/tenantry-default-deny",
                     "NetworkPolicy {ns}/tenantry-allow-intra-tenant",
                     "NetworkPolicy {ns}/tenantry-allow-dns",
                     "NetworkPolicy {ns}/tenantry-allow-egress",
                     "ResourceQuota {ns}/tenantry-quota",
                     "LimitRange {ns}/tenantry-limits",
                     # The operator's own Secret access goes with the fences, before any person's,
                     # and so does the API's (read-only, for credential exchanges).
                     "RoleBinding {ns}/tenantry-operator-secrets",
                     "RoleBinding {ns}/tenantry-api-secrets"]
    bindings = ["RoleBinding {ns}/tenantry:owner", "RoleBinding {ns}/tenantry:admin",
                "RoleBinding {ns}/tenantry:member", "RoleBinding {ns}/tenantry:viewer"]
    spaces = ["acme-prod", "acme-staging"]
    assert _summary(_objects(acme)) == [
        "Namespace acme-prod", "Namespace acme-staging",
        *[line.format(ns=ns) for ns in spaces for line in per_namespace],
        *[line.format(ns=ns) for ns in spaces for line in bindings],
        "ClusterRole tenantry:tenant:acme:view", "ClusterRoleBinding tenantry:tenant:acme:view",
    ]


def test_access_is_granted_only_after_every_namespace_is_fenced(acme: TenantSpec) -> None:
    objects = _objects(acme)
    kinds = [o["kind"] for o in objects]
    first_binding = next(i for i, o in enumerate(objects) if desired.is_access(o))
    assert "NetworkPolicy" not in kinds[first_binding:]
    assert "ResourceQuota" not in kinds[first_binding:]
    assert kinds.count("Namespace") == kinds[:2].count("Namespace") == 2


def test_every_object_looks_valid_and_is_labelled(
        acme: TenantSpec, valid: Callable[[dict[str, Any]], None]) -> None:
    for obj in _objects(acme):
        valid(obj)
        labels = obj["metadata"]["labels"]
        # The operator's own binding names the tenant under a label of its own: it is not access
        # of the tenant's, and nothing that counts the tenant's bindings may count it.
        key = (rbac.OPERATOR_ACCESS_LABEL
               if obj["metadata"]["name"] in (rbac.OPERATOR_SECRETS, rbac.API_SECRETS)
               else common.TENANT_LABEL)
        assert labels[key] == TENANT
        assert labels[common.MANAGED_BY_LABEL] == "tenantry"


def test_children_are_owned_by_the_tenant_but_namespaces_are_not(acme: TenantSpec) -> None:
    expected = {"apiVersion": "tenantry.dev/v1alpha1", "kind": "Tenant", "name": TENANT,
                "uid": UID, "controller": True, "blockOwnerDeletion": True}
    for obj in _objects(acme):
        if obj["kind"] == "Namespace":
            assert "ownerReferences" not in obj["metadata"]
        else:
            assert obj["metadata"]["ownerReferences"] == [expected], obj["kind"]
        assert ("namespace" in obj["metadata"]) == (obj["kind"] in NAMESPACED)


def test_names_stay_within_limits_for_the_longest_names(
        make_spec: Callable[..., TenantSpec], valid: Callable[[dict[str, Any]], None]) -> None:
    longest = "t" * 63
    spec = make_spec(namespaces=[{"name": "n" * 63}, {"name": "m" * 63}])
    for obj in desired.desired_objects(longest, UID, spec):
        valid(obj)
        assert len(obj["metadata"]["name"]) <= 253


def test_same_input_same_output(acme: TenantSpec) -> None:
    first = json.dumps(_objects(acme))
    assert json.dumps(_objects(acme)) == first


def test_order_of_spec_lists_does_not_matter(make_spec: Callable[..., TenantSpec]) -> None:
    wire = make_spec().wire()
    # A whole-internet rule, so that the approvals shape the except list.
    egress = [*wire["network"]["egress"], {"cidr": "0.0.0.0/0", "ports": [{"port": 443}]}]
    approved = ["10.20.30.0/24", "169.254.169.254/32", "172.16.5.0/24"]
    one = make_spec(network={**wire["network"], "egress": egress,
                             "approvedPrivateRanges": approved})
    other = make_spec(members=list(reversed(wire["members"])),
                      namespaces=list(reversed(wire["namespaces"])),
                      network={**wire["network"], "egress": egress,
                               "approvedPrivateRanges": list(reversed(approved))})
    assert json.dumps(_objects(one)) == json.dumps(_objects(other))


def test_granted_namespaces_only(acme: TenantSpec) -> None:
    objects = _objects(acme, granted={"acme-staging"})
    assert {o["metadata"].get("namespace") for o in objects} == {"acme-staging", None}
    assert [o["metadata"]["name"] for o in objects if o["kind"] == "Namespace"] == [
        "acme-staging"]
    # The namespace in conflict is not even named in the intra-tenant selector.
    assert "acme-prod" not in json.dumps(objects)


def test_nothing_granted_still_lets_members_see_their_tenant(acme: TenantSpec) -> None:
    assert _summary(_objects(acme, granted=set())) == [
        "ClusterRole tenantry:tenant:acme:view", "ClusterRoleBinding tenantry:tenant:acme:view"]


def test_reserved_namespaces_are_left_out_whatever_is_granted(
        make_spec: Callable[..., TenantSpec]) -> None:
    spec = make_spec(namespaces=[{"name": "kube-system", "adopt": True}, {"name": "acme-prod"}])
    for granted in (None, {"kube-system", "acme-prod"}):
        objects = _objects(spec, granted=granted)
        assert "kube-system" not in {o["metadata"].get("namespace") for o in objects}
        assert "Namespace kube-system" not in _summary(objects)


def test_tier_cluster_roles_are_not_per_tenant(acme: TenantSpec) -> None:
    names = {o["metadata"]["name"] for o in _objects(acme) if o["kind"] == "ClusterRole"}
    assert names == {"tenantry:tenant:acme:view"}


def test_child_kinds_cover_everything_a_tenant_gets(acme: TenantSpec) -> None:
    kinds = {(o["apiVersion"], o["kind"]) for o in _objects(acme)}
    assert kinds <= set(desired.CHILD_KINDS)


# -- prune -------------------------------------------------------------------------------------

def _prune(before: TenantSpec, after: TenantSpec,
           policy: DeletionPolicy = DeletionPolicy.RETAIN) -> desired.Prune:
    return desired.prune(_refs(_objects(before)), _objects(after), policy)


def test_no_change_prunes_nothing(acme: TenantSpec) -> None:
    assert _prune(acme, acme) == desired.Prune(delete=[], release=[])


def test_removing_the_last_member_of_a_tier_removes_its_bindings(
        make_spec: Callable[..., TenantSpec]) -> None:
    before = make_spec()
    after = make_spec(members=[m for m in before.wire()["members"] if m["role"] != "viewer"])
    result = _prune(before, after)
    assert [str(r) for r in result.delete] == ["RoleBinding acme-prod/tenantry:viewer",
                                               "RoleBinding acme-staging/tenantry:viewer"]
    assert result.release == []


def test_removing_a_member_whose_tier_remains_is_an_update_not_a_delete(
        make_spec: Callable[..., TenantSpec]) -> None:
    before = make_spec(members=[*make_spec().wire()["members"],
                                {"kind": "User", "name": "carol", "role": "member"}])
    after = make_spec()
    assert _prune(before, after).delete == []
    binding = next(o for o in _objects(after)
                   if o["metadata"]["name"] == "tenantry:member")
    assert "carol" not in json.dumps(binding)


def test_removing_the_last_egress_rule_removes_the_egress_policy(
        make_spec: Callable[..., TenantSpec]) -> None:
    after = make_spec(network={"egress": []})
    assert [str(r) for r in _prune(make_spec(), after).delete] == [
        "NetworkPolicy acme-prod/tenantry-allow-egress",
        "NetworkPolicy acme-staging/tenantry-allow-egress"]


def test_removed_namespace_with_retain_is_emptied_and_released(
        make_spec: Callable[..., TenantSpec]) -> None:
    after = make_spec(namespaces=[{"name": "acme-prod"}])
    result = _prune(make_spec(), after, DeletionPolicy.RETAIN)
    assert result.release == ["acme-staging"]
    # Access goes first, the default-deny fence last; the namespace itself is kept.
    assert [str(r) for r in result.delete] == [
        "RoleBinding acme-staging/tenantry:admin",
        "RoleBinding acme-staging/tenantry:member",
        "RoleBinding acme-staging/tenantry:owner",
        "RoleBinding acme-staging/tenantry:viewer",
        "NetworkPolicy acme-staging/tenantry-allow-dns",
        "NetworkPolicy acme-staging/tenantry-allow-egress",
        "NetworkPolicy acme-staging/tenantry-allow-intra-tenant",
        "NetworkPolicy acme-staging/tenantry-default-deny",
        "LimitRange acme-staging/tenantry-limits",
        "ResourceQuota acme-staging/tenantry-quota",
        "RoleBinding acme-staging/tenantry-api-secrets",
        "RoleBinding acme-staging/tenantry-operator-secrets",
    ]


def test_removed_namespace_with_delete_is_deleted_with_its_children(
        make_spec: Callable[..., TenantSpec]) -> None:
    after = make_spec(namespaces=[{"name": "acme-prod"}])
    result = _prune(make_spec(), after, DeletionPolicy.DELETE)
    assert result.release == []
    assert [str(r) for r in result.delete] == ["Namespace acme-staging"]


def test_tenant_deletion_is_pruning_to_nothing(acme: TenantSpec) -> None:
    previous = _refs(_objects(acme))
    retained = desired.prune(previous, [], DeletionPolicy.RETAIN)
    assert retained.release == ["acme-prod", "acme-staging"]
    assert "Namespace" not in {r.kind for r in retained.delete}
    assert len(retained.delete) == len(previous) - 2
    assert retained.delete[0].kind == "ClusterRoleBinding"
    deleted = desired.prune(previous, [], DeletionPolicy.DELETE)
    assert deleted.release == []
    assert [str(r) for r in deleted.delete] == [
        "ClusterRoleBinding tenantry:tenant:acme:view", "ClusterRole tenantry:tenant:acme:view",
        "Namespace acme-prod", "Namespace acme-staging"]


def test_prune_only_ever_touches_what_was_applied_before(acme: TenantSpec) -> None:
    # Nothing previous, nothing to remove, even when the desired set shrinks to nothing.
    for policy in DeletionPolicy:
        assert desired.prune([], [], policy) == desired.Prune(delete=[], release=[])
    previous = _refs(_objects(acme, granted={"acme-prod"}))
    result = desired.prune(previous, [], DeletionPolicy.DELETE)
    assert all(r.name != "acme-staging" and r.namespace != "acme-staging" for r in result.delete)


@pytest.mark.parametrize("policy", list(DeletionPolicy))
def test_prune_is_deterministic(acme: TenantSpec, policy: DeletionPolicy) -> None:
    previous = _refs(_objects(acme))
    assert desired.prune(previous, [], policy) == desired.prune(reversed(previous), [], policy)


def test_object_refs_round_trip(acme: TenantSpec) -> None:
    for ref in _refs(_objects(acme)):
        assert ObjectRef.from_dict(json.loads(json.dumps(ref.to_dict()))) == ref
    cluster_scoped = meta.ref(namespaces.namespace(TENANT, "acme-prod"))
    assert cluster_scoped.namespace == ""
