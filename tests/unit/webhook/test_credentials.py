"""The credentials handler: a Credential belongs in a namespace of its tenant."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tenantry.model import tenant
from tenantry.webhook import credentials, records, review, routes
from tenantry.webhook.directory import TenantOf
from tests.unit.webhook.webhook_unit_helpers import (
    Collected,
    Tenants,
    acme,
    request_of,
    review_body,
    tenant_spec,
)

WEBHOOK = "credentials.admission.tenantry.dev"


def credential(namespace: str = "team-a", **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "tenantry.dev/v1alpha1", "kind": "Credential",
            "metadata": {"name": "api", "namespace": namespace},
            "spec": {"scope": "caller", "allowedServiceAccounts": ["checkout"],
                     "fromSecret": {"name": "plain"}, **spec}}


async def judge(tenants: Tenants, obj: dict[str, Any], namespace: str = "team-a") -> Any:
    sink = Collected()
    validate = credentials.handler(WEBHOOK, tenants, records.Recorder([sink]))
    return await validate(request_of(obj, namespace=namespace)), sink.records


async def test_a_credential_in_its_tenants_namespace_is_allowed() -> None:
    verdict, recorded = await judge(acme(), credential())
    assert verdict.allowed
    assert recorded[0].tenant == "acme" and recorded[0].allowed


async def test_outside_any_tenant_it_is_refused() -> None:
    verdict, _ = await judge(Tenants({}), credential("default"), namespace="default")
    assert not verdict.allowed
    assert "belongs to no tenant" in verdict.message
    assert verdict.message.startswith("metadata.namespace:")
    assert "[credentialNamespace]" in verdict.message


async def test_a_missing_tenant_is_refused() -> None:
    tenants = Tenants({"team-a": TenantOf("team-a", "ghost", problem="no Tenant ghost")})
    verdict, _ = await judge(tenants, credential())
    assert not verdict.allowed and verdict.message == "no Tenant ghost"


def test_the_namespace_must_be_listed_by_the_tenant() -> None:
    found = credentials.check_credential(credential("stray"), namespace="stray",
                                         tenant_name="acme", spec=tenant_spec())
    assert [(v.rule_id, v.field_path) for v in found] == [
        ("credentialNamespace", "metadata.namespace")]
    assert "team-a, team-b" in found[0].message


@pytest.mark.parametrize(("entry", "refused"), [
    ("checkout", False),
    ("system:serviceaccount:team-a:checkout", False),
    ("system:serviceaccount:team-b:checkout", True),
    ("team-b/checkout", True),
    ("team-a/checkout", False),
    ("system:serviceaccount:checkout", True),
    ("a:b", True),
    ("", True),
    (7, True),
])
def test_service_accounts_must_be_of_the_credentials_namespace(entry: Any,
                                                               refused: bool) -> None:
    obj = credential(allowedServiceAccounts=["ok", entry])
    found = credentials.check_credential(obj, namespace="team-a", tenant_name="acme",
                                         spec=tenant_spec())
    assert bool(found) is refused
    if refused:
        assert found[0].field_path == "spec.allowedServiceAccounts[1]"
        assert found[0].rule_id == "credentialServiceAccounts"


# -- scope: platform and participant Credentials are the owners' and admins' -----------------

MEMBERS = [{"kind": "User", "name": "alice", "role": "owner"},
           {"kind": "User", "name": "ada", "role": "admin"},
           {"kind": "User", "name": "bob", "role": "member"},
           {"kind": "Group", "name": "devs", "role": "member"},
           {"kind": "Group", "name": "leads", "role": "admin"},
           {"kind": "ServiceAccount", "name": "ci", "namespace": "team-a", "role": "viewer"}]


async def judge_as(username: str, groups: list[str], operation: str,
                   obj: dict[str, Any] | None, old: dict[str, Any] | None = None) -> Any:
    body = review_body(obj, operation=operation, old=old)
    body["request"]["userInfo"] = {"username": username, "uid": "u", "groups": groups}
    validate = credentials.handler(WEBHOOK, acme(members=MEMBERS),
                                   records.Recorder([Collected()]))
    return await validate(review.parse_review(json.dumps(body).encode()))


PLATFORM = credential(scope="platform", allowedServiceAccounts=None)
CALLER = credential()


@pytest.mark.parametrize(("operation", "obj", "old"), [
    ("CREATE", PLATFORM, None),
    ("CREATE", credential(scope="participant", allowedServiceAccounts=None), None),
    # Re-scoped to caller with a ServiceAccount of theirs: the value would go to their pod.
    ("UPDATE", CALLER, PLATFORM),
    ("UPDATE", PLATFORM, CALLER),
    # The platform's value swapped for one of theirs.
    ("UPDATE", {**PLATFORM, "spec": {**PLATFORM["spec"], "fromSecret": {"name": "mine"}}},
     PLATFORM),
    # Deleted, to be created again as caller from a copy of its sealed values.
    ("DELETE", None, PLATFORM),
])
@pytest.mark.parametrize(("username", "groups"), [
    ("bob", []), ("carol", ["devs"]),
    # A workload of the tenant's namespace: at most a member, listed or not.
    ("system:serviceaccount:team-a:ci", []), ("system:serviceaccount:team-b:deployer", []),
])
async def test_a_member_may_not_create_change_or_delete_a_platform_or_participant_credential(
        operation: str, obj: dict[str, Any] | None, old: dict[str, Any] | None,
        username: str, groups: list[str]) -> None:
    verdict = await judge_as(username, groups, operation, obj, old)
    assert not verdict.allowed
    assert verdict.message.count("[credentialScope]") == 1
    assert "spec.scope: only tenant 'acme''s owners and admins may" in verdict.message
    assert f"({username} is a " in verdict.message


@pytest.mark.parametrize(("username", "groups"), [
    ("alice", []), ("ada", []), ("carol", ["leads"]),
    # Not a member of the tenant: a cluster admin, whose access is not the tenant's to judge.
    ("platform-admin", ["system:masters"]),
])
@pytest.mark.parametrize(("operation", "obj", "old"), [
    ("CREATE", PLATFORM, None), ("UPDATE", CALLER, PLATFORM), ("DELETE", None, PLATFORM)])
async def test_owners_admins_and_the_platform_manage_them(
        operation: str, obj: dict[str, Any] | None, old: dict[str, Any] | None,
        username: str, groups: list[str]) -> None:
    assert (await judge_as(username, groups, operation, obj, old)).allowed


@pytest.mark.parametrize(("operation", "obj", "old"), [
    ("CREATE", CALLER, None),
    ("UPDATE", {**CALLER, "spec": {**CALLER["spec"], "allowedServiceAccounts": ["web"]}},
     CALLER),
    ("DELETE", None, CALLER)])
async def test_members_still_manage_caller_scoped_credentials(
        operation: str, obj: dict[str, Any] | None, old: dict[str, Any] | None) -> None:
    assert (await judge_as("bob", [], operation, obj, old)).allowed


def test_a_tenant_role_is_read_as_rbac_binds_members() -> None:
    spec = tenant_spec(members=MEMBERS)
    assert credentials.tenant_role("alice", [], spec) is tenant.Role.OWNER
    assert credentials.tenant_role("Alice", [], spec) is None  # RBAC names are exact
    assert credentials.tenant_role("bob", ["leads"], spec) is tenant.Role.ADMIN
    assert credentials.tenant_role("system:serviceaccount:team-a:ci", [], spec) is (
        tenant.Role.MEMBER)
    # Another tenant's workload, or one outside any tenant: no tier here.
    assert credentials.tenant_role("system:serviceaccount:other:ci", [], spec) is None
    admin_sa = tenant_spec(members=[
        {"kind": "User", "name": "system:serviceaccount:team-a:ops", "role": "member"}])
    assert credentials.tenant_role("system:serviceaccount:team-a:ops", [], admin_sa) is (
        tenant.Role.MEMBER)


STORED_BEFORE_THE_RULES = [
    *MEMBERS,
    # Refused by the schema since, but kept by the apiserver on a Tenant stored before: RBAC
    # binds none of them as written (`tenant.bound_role`), so neither does the webhook.
    {"kind": "Group", "name": "system:authenticated", "role": "admin"},
    {"kind": "User", "name": "system:anonymous", "role": "owner"},
    {"kind": "User", "name": "system:serviceaccount:elsewhere:deployer", "role": "admin"},
    {"kind": "Group", "name": "system:serviceaccounts:elsewhere", "role": "owner"}]


@pytest.mark.parametrize(("username", "groups", "role"), [
    ("bob", ["system:authenticated"], tenant.Role.MEMBER),
    ("system:anonymous", ["system:unauthenticated"], None),
    ("system:serviceaccount:elsewhere:deployer",
     ["system:serviceaccounts", "system:serviceaccounts:elsewhere", "system:authenticated"],
     tenant.Role.MEMBER),
])
def test_members_count_at_the_tier_rbac_binds_them_to(
        username: str, groups: list[str], role: tenant.Role | None) -> None:
    """A member whose groups include one that means everyone is not an admin by it."""
    spec = tenant_spec(members=STORED_BEFORE_THE_RULES)
    assert credentials.tenant_role(username, groups, spec) is role
    found = credentials.check_scope("UPDATE", CALLER, PLATFORM, username=username,
                                    groups=groups, tenant_name="acme", spec=spec)
    assert [v.rule_id for v in found] == (["credentialScope"] if role else [])


def test_deletes_reach_the_route_only_for_credentials_a_member_may_not_delete() -> None:
    """The route's matchConditions (the e2e test has the apiserver evaluate them): caller-scoped
    deletes and the control plane's are never sent, so a webhook that is down blocks no
    namespace deletion."""
    [delete_condition] = [c for c in routes.credential_conditions("system:serviceaccount:t:op")
                          if c["name"] == routes.CREDENTIAL_DELETES["name"]]
    expression = delete_condition["expression"]
    assert "oldObject.spec.scope != 'caller'" in expression
    assert "system:kube-controller-manager" in expression
    assert "system:serviceaccount:kube-system:" in expression
    assert routes.CREDENTIAL_DELETES in routes.credential_conditions("")
    [rule] = routes.CREDENTIAL_RULES
    assert "DELETE" in rule.operations
