"""Four-tier RBAC: strict inclusion, nothing that steps around RBAC, bindings to spec members."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

import pytest

from tenantry.controller import protection
from tenantry.controller.tenant import meta, rbac
from tenantry.model import common, tenant
from tenantry.model.tenant import Member, Role, SubjectKind, TenantSpec

TENANT = "acme"
UID = "6c0d6c5e-1f0b-4d8a-9b4e-3f1f4c1b2a77"
READ = {"get", "list", "watch"}
ROLES = {r["metadata"]["name"]: r for r in rbac.cluster_roles()}


def _expand(role: dict[str, Any]) -> set[tuple[str, str, str]]:
    """(group, resource, verb) of every rule of a rendered ClusterRole."""
    return {(group, resource, verb)
            for rule in role["rules"]
            for group in rule["apiGroups"]
            for resource in rule["resources"]
            for verb in rule["verbs"]}


def _granted(role: Role) -> set[tuple[str, str, str]]:
    return _expand(ROLES[f"tenantry:{role}"])


def test_four_cluster_roles_lowest_first(valid: Callable[[dict[str, Any]], None]) -> None:
    assert list(ROLES) == ["tenantry:viewer", "tenantry:member", "tenantry:admin",
                           "tenantry:owner"]
    for role in ROLES.values():
        valid(role)
        assert role["apiVersion"] == "rbac.authorization.k8s.io/v1"
        assert role["kind"] == "ClusterRole"
        # Shared by all tenants: no tenant label, no owner.
        assert role["metadata"]["labels"] == {common.MANAGED_BY_LABEL: "tenantry"}
        assert "ownerReferences" not in role["metadata"]


@pytest.mark.parametrize(("lower", "higher"), list(itertools.pairwise(rbac.TIERS)))
def test_each_tier_strictly_includes_the_one_below(lower: Role, higher: Role) -> None:
    below, above = _granted(lower), _granted(higher)
    missing = sorted(below - above)
    assert not missing, f"{higher} lacks {missing}"
    # Strict: the tier above must add something, or Kubernetes' escalation check would let the
    # lower tier bind the higher one (it holds all of its permissions).
    assert above - below


def test_inclusion_is_transitive_rule_by_rule() -> None:
    for lower, higher in itertools.combinations(rbac.TIERS, 2):
        for permission in _granted(lower):
            assert permission in _granted(higher), (lower, higher, permission)


def test_rendered_rules_say_exactly_what_the_tiers_grant() -> None:
    for role in rbac.TIERS:
        expected = {(p.api_group, p.resource, p.verb) for p in rbac.permissions(role)}
        assert _granted(role) == expected


@pytest.mark.parametrize("role", rbac.TIERS)
def test_no_tier_can_step_around_rbac(role: Role) -> None:
    for group, resource, verb in _granted(role):
        assert verb not in {"escalate", "bind", "impersonate", "*"}, (group, resource, verb)
        assert "*" not in (group, resource), (group, resource, verb)
    for rule in ROLES[f"tenantry:{role}"]["rules"]:
        assert set(rule) == {"apiGroups", "resources", "verbs"}  # no nonResourceURLs


@pytest.mark.parametrize("role", rbac.TIERS)
def test_quotas_and_limit_ranges_are_read_only_for_everyone(role: Role) -> None:
    for group, resource, verb in _granted(role):
        if resource.split("/")[0] in {"resourcequotas", "limitranges"}:
            assert group == "" and verb in READ, (resource, verb)


@pytest.mark.parametrize("role", rbac.TIERS)
def test_namespaces_themselves_are_read_only(role: Role) -> None:
    # Namespace labels carry the tenant and Pod Security: no tier may write them.
    for _, resource, verb in _granted(role):
        if resource.split("/")[0] == "namespaces":
            assert verb in READ


@pytest.mark.parametrize("role", rbac.TIERS)
def test_no_proxy_no_tenants_no_cluster_scoped_objects(role: Role) -> None:
    resources = {resource for _, resource, _ in _granted(role)}
    assert not {r for r in resources if r.endswith("/proxy")}
    assert "tenants" not in resources
    assert not resources & {"nodes", "persistentvolumes", "clusterroles",
                            "clusterrolebindings", "customresourcedefinitions",
                            "validatingwebhookconfigurations", "mutatingwebhookconfigurations"}


@pytest.mark.parametrize(("role", "may_write"), [
    (Role.VIEWER, False), (Role.MEMBER, False), (Role.ADMIN, True), (Role.OWNER, True)])
def test_network_policies_are_written_by_admins_and_up_only(role: Role, may_write: bool) -> None:
    verbs = {v for g, r, v in _granted(role)
             if (g, r) == ("networking.k8s.io", "networkpolicies")}
    assert verbs >= READ
    assert bool(verbs - READ) is may_write
    if may_write:
        assert {"create", "update", "patch", "delete"} <= verbs


@pytest.mark.parametrize(("role", "may_write"), [
    (Role.VIEWER, False), (Role.MEMBER, False), (Role.ADMIN, True), (Role.OWNER, True)])
def test_roles_and_bindings_are_written_by_admins_and_up_only(role: Role,
                                                              may_write: bool) -> None:
    for resource in ("roles", "rolebindings"):
        verbs = {v for g, r, v in _granted(role) if (g, r) == (rbac.RBAC_GROUP, resource)}
        assert ("create" in verbs) is may_write


def test_viewers_get_no_secrets_and_write_nothing() -> None:
    granted = _granted(Role.VIEWER)
    assert not {p for p in granted if p[1] in {"secrets", "credentials"}}
    assert {verb for _, _, verb in granted} == READ
    assert not {p for p in granted if p[1] in {"pods/exec", "pods/attach", "pods/portforward"}}


def test_members_ship_apps_but_cannot_mint_tokens() -> None:
    granted = _granted(Role.MEMBER)
    for resource in ("pods", "configmaps", "services", "secrets"):
        assert ("", resource, "create") in granted
    assert ("apps", "deployments", "patch") in granted
    assert ("", "pods/exec", "create") in granted
    assert ("", "serviceaccounts/token", "create") not in granted
    assert ("", "serviceaccounts/token", "create") in _granted(Role.ADMIN)


def test_owners_alone_may_bulk_delete() -> None:
    assert ("", "pods", "deletecollection") in _granted(Role.OWNER)
    assert not {p for p in _granted(Role.ADMIN) if p[2] == "deletecollection"}


def test_rules_are_compact_sorted_and_independent_of_input_order() -> None:
    granted = rbac.permissions(Role.OWNER)
    rendered = rbac.rules(granted)
    assert rendered == rbac.rules(sorted(granted, reverse=True))
    keys = [(r["apiGroups"][0], tuple(r["verbs"])) for r in rendered]
    assert keys == sorted(keys) and len(set(keys)) == len(keys)
    for rule in rendered:
        assert rule["resources"] == sorted(rule["resources"])
        assert rule["verbs"] == sorted(rule["verbs"])


def _members(*entries: dict[str, Any]) -> list[Member]:
    return [Member.model_validate(e) for e in entries]


def test_role_bindings_of_the_sample(acme: TenantSpec,
                                     valid: Callable[[dict[str, Any]], None]) -> None:
    bindings = rbac.role_bindings(TENANT, UID, "acme-prod", acme.members)
    assert [b["metadata"]["name"] for b in bindings] == [
        "tenantry:owner", "tenantry:admin", "tenantry:member", "tenantry:viewer"]
    by_name = {b["metadata"]["name"]: b for b in bindings}
    for role in rbac.TIERS:
        binding = by_name[f"tenantry:{role}"]
        valid(binding)
        assert binding["kind"] == "RoleBinding"
        assert binding["metadata"]["namespace"] == "acme-prod"
        assert binding["metadata"]["ownerReferences"][0]["uid"] == UID
        assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io",
                                      "kind": "ClusterRole", "name": f"tenantry:{role}"}
    assert by_name["tenantry:owner"]["subjects"] == [
        {"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "alice@acme.example"}]
    assert by_name["tenantry:admin"]["subjects"] == [
        {"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": "acme-platform"}]
    # ServiceAccounts are in the core group: no apiGroup, but a namespace.
    assert by_name["tenantry:viewer"]["subjects"] == [
        {"kind": "ServiceAccount", "name": "ci-bot", "namespace": "acme-ci"}]


def test_subjects_are_sorted_and_unique() -> None:
    members = _members(
        {"kind": "User", "name": "zoe", "role": "member"},
        {"kind": "ServiceAccount", "name": "b", "namespace": "y", "role": "member"},
        {"kind": "User", "name": "adam", "role": "member"},
        {"kind": "User", "name": "zoe", "role": "member"},
        {"kind": "ServiceAccount", "name": "b", "namespace": "x", "role": "member"},
        {"kind": "Group", "name": "devs", "role": "member"},
    )
    assert [(s["kind"], s.get("namespace"), s["name"]) for s in rbac.subjects(members)] == [
        ("Group", None, "devs"), ("ServiceAccount", "x", "b"), ("ServiceAccount", "y", "b"),
        ("User", None, "adam"), ("User", None, "zoe")]


def test_tiers_without_members_get_no_binding() -> None:
    members = _members({"kind": "User", "name": "alice", "role": "owner"})
    bindings = rbac.role_bindings(TENANT, UID, "ns", members)
    assert [b["metadata"]["name"] for b in bindings] == ["tenantry:owner"]


def _stored(kind: str, name: str, role: str) -> Member:
    """A member as a Tenant stored before the schema refused it (no validation)."""
    return Member.model_construct(kind=SubjectKind(kind), name=name, namespace=None,
                                  role=Role(role))


def _bound(bindings: list[dict[str, Any]]) -> dict[str, list[str]]:
    return {b["metadata"]["name"]: [s["name"] for s in b["subjects"]] for b in bindings}


@pytest.mark.parametrize(("kind", "name"), [
    ("User", "system:serviceaccount:acme-prod:ci"),
    ("Group", "system:serviceaccounts:acme-prod"),
])
def test_a_workload_spelled_as_a_user_or_group_is_bound_at_most_as_member(
        kind: str, name: str) -> None:
    # Any member may run a pod as any ServiceAccount of the namespace: an owner or admin tier
    # for one (however it is spelled) would make every member an owner.
    for role in ("owner", "admin"):
        members = [_stored("User", "alice", "owner"), _stored(kind, name, role)]
        assert tenant.bound_role(members[1]) is Role.MEMBER
        assert _bound(rbac.role_bindings(TENANT, UID, "acme-prod", members)) == {
            "tenantry:owner": ["alice"], "tenantry:member": [name]}
    viewer = _stored(kind, name, "viewer")
    assert tenant.bound_role(viewer) is Role.VIEWER


@pytest.mark.parametrize(("kind", "name"), [
    ("Group", "system:authenticated"), ("Group", "system:unauthenticated"),
    ("Group", "system:serviceaccounts"), ("User", "system:anonymous"),
])
def test_everyone_is_never_bound_nor_shown_the_tenant(kind: str, name: str) -> None:
    members = [_stored("User", "alice", "owner"), _stored(kind, name, "viewer")]
    assert tenant.bound_role(members[1]) is None
    assert _bound(rbac.role_bindings(TENANT, UID, "acme-prod", members)) == {
        "tenantry:owner": ["alice"]}
    view = rbac.tenant_view_binding(TENANT, UID, members)
    assert [s["name"] for s in view["subjects"]] == ["alice"]


def test_the_protection_policy_and_the_schema_share_one_list_of_everyone() -> None:
    assert protection.EVERYONE_GROUPS == tenant.EVERYONE_GROUPS
    assert protection.EVERYONE_USERS == tenant.EVERYONE_USERS


def test_a_service_account_without_namespace_is_never_bound() -> None:
    member = Member.model_construct(kind=SubjectKind.SERVICE_ACCOUNT, name="bot", namespace=None,
                                    role=Role.OWNER)
    with pytest.raises(ValueError, match="namespace"):
        rbac.subject(member)


def test_members_see_their_own_tenant_by_name_only(
        acme: TenantSpec, valid: Callable[[dict[str, Any]], None]) -> None:
    role = rbac.tenant_view_role(TENANT, UID)
    binding = rbac.tenant_view_binding(TENANT, UID, acme.members)
    for manifest in (role, binding):
        valid(manifest)
        assert manifest["metadata"]["name"] == "tenantry:tenant:acme:view"
        assert "namespace" not in manifest["metadata"]
        assert manifest["metadata"]["labels"][common.TENANT_LABEL] == TENANT
        assert manifest["metadata"]["ownerReferences"][0]["uid"] == UID
    assert role["kind"] == "ClusterRole"
    assert role["rules"] == [{"apiGroups": ["tenantry.dev"], "resources": ["tenants"],
                              "resourceNames": ["acme"], "verbs": ["get", "list", "watch"]}]
    assert binding["kind"] == "ClusterRoleBinding"
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io",
                                  "kind": "ClusterRole", "name": "tenantry:tenant:acme:view"}
    # Every member, whatever the tier.
    assert binding["subjects"] == rbac.subjects(acme.members)
    assert len(binding["subjects"]) == 4


def test_the_operators_secret_binding_grants_its_service_account_only_that_namespace(
        valid: Callable[[dict[str, Any]], None]) -> None:
    binding = rbac.operator_secrets_binding(TENANT, UID, "acme-prod", "ops-system")
    valid(binding)
    assert binding["kind"] == "RoleBinding"  # never a ClusterRoleBinding
    assert binding["metadata"]["namespace"] == "acme-prod"
    assert binding["metadata"]["name"].startswith(meta.NAME_PREFIX)  # reserved: not forgeable
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io",
                                  "kind": "ClusterRole", "name": "tenantry-operator-secrets"}
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "tenantry-operator",
                                    "namespace": "ops-system"}]
    labels = binding["metadata"]["labels"]
    # Not the tenant label: whatever counts a tenant's access (RoleBindings by that label, the
    # revocation of access in an unfenced namespace) must not see it.
    assert common.TENANT_LABEL not in labels
    assert labels == {rbac.OPERATOR_ACCESS_LABEL: TENANT, common.MANAGED_BY_LABEL: "tenantry"}
    assert binding["metadata"]["ownerReferences"][0]["uid"] == UID
    assert rbac.is_operator_access(binding)
    assert not any(rbac.is_operator_access(b)
                   for b in rbac.role_bindings(TENANT, UID, "acme-prod", []))
