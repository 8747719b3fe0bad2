"""Isolation holes a tenant could walk through, attacked on the real control plane.

- Access before isolation: when a namespace's fences (default-deny NetworkPolicy, quota) cannot
  be applied, no RoleBinding may exist there; a member can do nothing in it until they apply.
  The failure is made real with a ValidatingAdmissionPolicy that refuses the operator's
  default-deny in one namespace, as a broken or hostile admission chain would.
- Two Tenants racing for one new namespace: exactly one wins, the namespace's tenant label never
  changes after the first claim, and every other Tenant reports the conflict.
- A workload (or everyone) among the members: a ServiceAccount spelled as the User or Group RBAC
  matches it by, given owner or admin, lets any member promote themselves through a pod; the
  groups that mean everyone let other tenants in. The apiserver refuses such a Tenant.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import copy
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client, watch

from tests.conftest import OperatorProcess, UserApi, api_message
from tests.e2e.conftest import TenantFactory, owner
from tests.helpers import GROUP, VERSION, conditions_of, eventually, forbidden, unique

TENANT_LABEL = "tenantry.dev/tenant"
DEFAULT_DENY = "tenantry-default-deny"
BLOCKED = "isolation test: the default-deny may not be applied here"


def _member(name: str) -> dict[str, str]:
    return {"kind": "User", "name": name, "role": "member"}


def _tenant_bindings(admin_api: client.ApiClient, namespace: str) -> list[str]:
    rbac = client.RbacAuthorizationV1Api(admin_api)
    return sorted(b.metadata.name for b in rbac.list_namespaced_role_binding(
        namespace, label_selector=TENANT_LABEL).items)


@contextlib.contextmanager
def refused_default_deny(admin_api: client.ApiClient, namespace: str,
                         probe_namespace: str) -> Iterator[None]:
    """While inside: the API server refuses any tenantry-default-deny in `namespace`.

    `probe_namespace` (which must exist) is refused too, so we can tell when the policy is
    live: the admission plugin loads new policies a moment after they are created.
    """
    name = f"test-refuse-default-deny-{namespace}"
    policy = {
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicy",
        "metadata": {"name": name},
        "spec": {
            "failurePolicy": "Fail",
            "matchConstraints": {"resourceRules": [{
                "apiGroups": ["networking.k8s.io"], "apiVersions": ["v1"],
                "operations": ["CREATE", "UPDATE"], "resources": ["networkpolicies"]}]},
            "validations": [{
                "expression": f"!(request.namespace in ['{namespace}', '{probe_namespace}'] "
                              f"&& object.metadata.name == '{DEFAULT_DENY}')",
                "message": BLOCKED}],
        },
    }
    binding = {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicyBinding",
        "metadata": {"name": name},
        "spec": {"policyName": name, "validationActions": ["Deny"]},
    }
    registration = client.AdmissionregistrationV1Api(admin_api)
    registration.create_validating_admission_policy(policy)
    registration.create_validating_admission_policy_binding(binding)
    net = client.NetworkingV1Api(admin_api)
    probe = {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
             "metadata": {"name": DEFAULT_DENY}, "spec": {"podSelector": {}}}

    def live() -> bool:
        try:
            net.create_namespaced_network_policy(probe_namespace, probe, dry_run="All")
        except client.ApiException as error:
            return BLOCKED in api_message(error)
        return False

    try:
        eventually(live, timeout=30, what="the refusing admission policy to be live")
        yield
    finally:
        registration.delete_validating_admission_policy_binding(name)
        registration.delete_validating_admission_policy(name)


def _condition(custom: client.CustomObjectsApi, name: str, type_: str) -> dict[str, Any]:
    return conditions_of(custom.get_cluster_custom_object(GROUP, VERSION, "tenants",
                                                          name)).get(type_, {})


def test_no_access_where_the_default_deny_cannot_be_applied(
        admin_api: client.ApiClient, tenants: TenantFactory, as_user: UserApi,
        namespace: str) -> None:
    name = unique("fence")
    blocked, fenced = f"{name}-blocked", f"{name}-fenced"
    member = f"{name}-bob"
    core_member = client.CoreV1Api(as_user(member))
    custom = client.CustomObjectsApi(admin_api)
    with refused_default_deny(admin_api, blocked, namespace):
        tenant = tenants(name, [blocked, fenced], [owner(f"{name}-alice"), _member(member)],
                         wait_ready=False)
        rbac = conditions_of(tenant)["RBAC"]
        assert rbac["status"] == "False" and rbac["reason"] == "IsolationIncomplete"
        assert blocked in rbac["message"]
        assert f"NetworkPolicy {blocked}/{DEFAULT_DENY}" in rbac["message"]
        rows = {row["name"]: row for row in tenant["status"]["namespaces"]}
        assert rows[blocked]["ready"] is False
        assert rows[blocked]["reason"] == "IsolationIncomplete"

        # The attack: the member tries to act in the unfenced namespace. Nothing lets them in.
        assert _tenant_bindings(admin_api, blocked) == []
        assert forbidden(lambda: core_member.list_namespaced_pod(blocked))
        assert forbidden(lambda: core_member.create_namespaced_config_map(
            blocked, client.V1ConfigMap(metadata=client.V1ObjectMeta(name="x"))))
        # The gate is per namespace: the fenced one is fully usable.
        assert "tenantry:member" in _tenant_bindings(admin_api, fenced)
        eventually(lambda: core_member.list_namespaced_pod(fenced) is not None,
                   timeout=15, what="the member's access to the fenced namespace")

        events = client.CoreV1Api(admin_api).list_namespaced_event(
            "default", field_selector=f"involvedObject.name={name}").items
        assert any(e.reason == "IsolationIncomplete" and blocked in e.message for e in events)

    # Blocker gone: the next pass (the operator's retry) fences the namespace, then binds.
    tenants.wait_for(name)  # type: ignore[attr-defined]
    assert _condition(custom, name, "RBAC")["reason"] == "Applied"
    client.NetworkingV1Api(admin_api).read_namespaced_network_policy(DEFAULT_DENY, blocked)
    assert "tenantry:member" in _tenant_bindings(admin_api, blocked)
    eventually(lambda: core_member.list_namespaced_pod(blocked) is not None, timeout=15,
               what="the member's access once the namespace is fenced")


def test_access_is_revoked_when_a_fence_is_gone_and_cannot_come_back(
        admin_api: client.ApiClient, tenants: TenantFactory, as_user: UserApi,
        namespace: str) -> None:
    name = unique("revoke")
    member = f"{name}-bob"
    tenants(name, [name], [owner(f"{name}-alice"), _member(member)])
    core_member = client.CoreV1Api(as_user(member))
    core_member.list_namespaced_pod(name)
    custom = client.CustomObjectsApi(admin_api)
    net = client.NetworkingV1Api(admin_api)
    with refused_default_deny(admin_api, name, namespace):
        # The fence disappears (a careless admin, a bad sync) and admission keeps it out.
        net.delete_namespaced_network_policy(DEFAULT_DENY, name)
        eventually(lambda: _tenant_bindings(admin_api, name) == [], timeout=30,
                   what="the tenant's RoleBindings in the open namespace to be removed")
        eventually(lambda: forbidden(lambda: core_member.list_namespaced_pod(name)),
                   timeout=15, what="the member to lose access")
        rbac = eventually(lambda: (c := _condition(custom, name, "RBAC")).get(
            "reason") == "IsolationIncomplete" and c, timeout=30,
            what="the Tenant to report IsolationIncomplete")
        assert "removed" in rbac["message"] and name in rbac["message"]
    # Retried without a spec change or a resync: fence first, then access.
    eventually(lambda: "tenantry:member" in _tenant_bindings(admin_api, name), timeout=45,
               what="access to come back once the default-deny applies")
    net.read_namespaced_network_policy(DEFAULT_DENY, name)
    eventually(lambda: core_member.list_namespaced_pod(name) is not None, timeout=15,
               what="the member's access back")


# -- two (or ten) Tenants racing for one new namespace ---------------------------------------

CONTENDERS = 10
ROUNDS = 3


def _watch_tenant_label(admin_api: client.ApiClient, namespace: str, resource_version: str,
                        seen: list[str | None], stop: threading.Event) -> None:
    """Every value of the namespace's tenant label, from before it existed, until `stop`."""
    core = client.CoreV1Api(admin_api)
    stream = watch.Watch()
    while not stop.is_set():
        for event in stream.stream(core.list_namespace, field_selector=f"metadata.name="
                                   f"{namespace}", resource_version=resource_version,
                                   timeout_seconds=2):
            obj = event["object"]
            resource_version = obj.metadata.resource_version
            seen.append((obj.metadata.labels or {}).get(TENANT_LABEL))
            if stop.is_set():
                break


def _verdict(custom: client.CustomObjectsApi, name: str) -> dict[str, Any] | None:
    obj = custom.get_cluster_custom_object(GROUP, VERSION, "tenants", name)
    current = (obj.get("status") or {}).get("observedGeneration") == obj["metadata"]["generation"]
    ready = conditions_of(obj).get("Ready", {}).get("status")
    return obj if current and ready in ("True", "False") else None


@pytest.mark.parametrize("round_", range(ROUNDS))
def test_tenants_racing_for_one_new_namespace_exactly_one_wins(
        admin_api: client.ApiClient, operator: OperatorProcess, round_: int) -> None:
    custom = client.CustomObjectsApi(admin_api)
    core = client.CoreV1Api(admin_api)
    contested = unique(f"race{round_}")
    names = [f"{contested}-t{i}" for i in range(CONTENDERS)]
    seen: list[str | None] = []
    stop = threading.Event()
    since = core.list_namespace(limit=1).metadata.resource_version
    watcher = threading.Thread(target=_watch_tenant_label,
                               args=(admin_api, contested, since, seen, stop), daemon=True)
    watcher.start()
    start = threading.Barrier(CONTENDERS)

    def create(name: str) -> None:
        body = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "Tenant",
                "metadata": {"name": name},
                "spec": {"members": [owner(f"{name}-o")], "namespaces": [{"name": contested}],
                         "deletionPolicy": "Delete"}}
        start.wait()
        custom.create_cluster_custom_object(GROUP, VERSION, "tenants", body)

    try:
        with concurrent.futures.ThreadPoolExecutor(CONTENDERS) as pool:
            list(pool.map(create, names))
        verdicts = {name: eventually(lambda name=name: _verdict(custom, name), timeout=90,
                                     what=f"tenant {name} to reach a verdict")
                    for name in names}
        labels = core.read_namespace(contested).metadata.labels
        winner = labels[TENANT_LABEL]
        ready = sorted(n for n, v in verdicts.items()
                       if conditions_of(v)["Ready"]["status"] == "True")
        assert ready == [winner], f"exactly one tenant may win {contested}; ready: {ready}"
        for name, verdict in verdicts.items():
            if name == winner:
                continue
            namespaces_condition = conditions_of(verdict)["Namespaces"]
            assert namespaces_condition["status"] == "False"
            assert namespaces_condition["reason"] == "NamespaceOwnedByAnotherTenant", name
            assert winner in namespaces_condition["message"]
            assert verdict["status"]["namespaceCount"] == 0
        # Only the winner's members are bound there.
        rbac = client.RbacAuthorizationV1Api(admin_api)
        # (The operator's and the API's ServiceAccounts, bound there for Credentials' Secrets,
        # are no members.)
        subjects = {s.name for b in rbac.list_namespaced_role_binding(contested).items
                    for s in b.subjects or []
                    if (s.kind, s.name) not in (("ServiceAccount", "tenantry-operator"),
                                                ("ServiceAccount", "tenantry-api"))}
        assert subjects == {f"{winner}-o"}
        # The label was set once, at creation, and never changed (a relabel would show here).
        stop.set()
        watcher.join(10)
        assert seen and set(seen) == {winner}, seen
    finally:
        stop.set()
        for name in names:
            with contextlib.suppress(client.ApiException):
                custom.delete_cluster_custom_object(GROUP, VERSION, "tenants", name)


# -- tenant policies left wider than a narrowed allow-list -----------------------------------

def test_narrowing_the_allow_list_reports_tenant_policies_now_wider(
        admin_api: client.ApiClient, tenants: TenantFactory, as_user: UserApi) -> None:
    name = unique("wider")
    payments = {"cidr": "203.0.113.0/24", "ports": [{"port": 443}]}
    tenant = tenants(name, [name], [owner(f"{name}-alice"),
                                    {"kind": "User", "name": f"{name}-admin", "role": "admin"}],
                     network={"egress": [payments]})
    assert conditions_of(tenant)["TenantNetworkPolicies"]["reason"] == "WithinAllowList"
    # The tenant's admin writes a policy inside the allow-list: fine, and reported as such.
    client.NetworkingV1Api(as_user(f"{name}-admin")).create_namespaced_network_policy(
        name, {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
               "metadata": {"name": "to-payments"},
               "spec": {"podSelector": {}, "policyTypes": ["Egress"],
                        "egress": [{"to": [{"ipBlock": {"cidr": "203.0.113.0/25"}}],
                                    "ports": [{"protocol": "TCP", "port": 443}]}]}})
    custom = client.CustomObjectsApi(admin_api)
    # The platform narrows the allow-list: the tenant's policy now opens more than it.
    custom.patch_cluster_custom_object(GROUP, VERSION, "tenants", name, {"spec": {
        "network": {"egress": [{"cidr": "198.51.100.0/24", "ports": [{"port": 443}]}]}}})
    narrowed = tenants.wait_for(name)  # type: ignore[attr-defined]
    report = conditions_of(narrowed)["TenantNetworkPolicies"]
    assert report["status"] == "False" and report["reason"] == "WiderThanAllowList"
    assert f"{name}/to-payments" in report["message"]
    assert "spec.egress[0].to[0].ipBlock.cidr" in report["message"]
    # A report, not a failure: the Tenant stays Ready.
    assert conditions_of(narrowed)["Ready"]["status"] == "True"
    events = client.CoreV1Api(admin_api).list_namespaced_event(
        "default", field_selector=f"involvedObject.name={name}").items
    warned = [e for e in events if e.reason == "WiderThanAllowList"]
    assert warned and warned[0].type == "Warning" and "to-payments" in warned[0].message

    # Widened again: the report clears.
    custom.patch_cluster_custom_object(GROUP, VERSION, "tenants", name, {"spec": {
        "network": {"egress": [payments]}}})
    restored = tenants.wait_for(name)  # type: ignore[attr-defined]
    assert conditions_of(restored)["TenantNetworkPolicies"]["reason"] == "WithinAllowList"


def _token_client(admin_api: client.ApiClient, token: str) -> client.ApiClient:
    """An ApiClient that authenticates with a bearer token, as a pod would."""
    config = copy.copy(admin_api.configuration)
    config.cert_file = config.key_file = None
    config.api_key = {"authorization": f"Bearer {token}"}
    return client.ApiClient(config)


# (case id, how the platform spelled the subject, the rule the apiserver must quote)
SERVICE_ACCOUNTS_IN_DISGUISE = [
    ("user-spelling-as-owner",
     lambda ns: {"kind": "User", "name": f"system:serviceaccount:{ns}:ci", "role": "owner"},
     "a ServiceAccount member may have role member or viewer"),
    ("namespace-group-as-admin",
     lambda ns: {"kind": "Group", "name": f"system:serviceaccounts:{ns}", "role": "admin"},
     "a ServiceAccount member may have role member or viewer"),
    ("everyone-as-viewer",
     lambda ns: {"kind": "Group", "name": "system:authenticated", "role": "viewer"},
     "must not grant access to everyone"),
    ("every-workload-as-member",
     lambda ns: {"kind": "Group", "name": "system:serviceaccounts", "role": "member"},
     "must not grant access to everyone"),
]


@pytest.mark.parametrize(("spelled", "rule"), [case[1:] for case in SERVICE_ACCOUNTS_IN_DISGUISE],
                         ids=[case[0] for case in SERVICE_ACCOUNTS_IN_DISGUISE])
def test_no_member_spelling_lets_a_workload_administer_its_tenant_or_everyone_in(
        admin_api: client.ApiClient, tenants: TenantFactory, as_user: UserApi,
        spelled: Any, rule: str) -> None:
    """The schema keeps ServiceAccount members at member or viewer, because any member may run
    a pod as any ServiceAccount of the namespace. Spelled as the User the SA authenticates as,
    or as its namespace's Group, the same account must not become an owner or admin; and the
    groups that mean everyone may not be members at all (the operator's own RoleBindings are
    exempt from the protection policy that refuses those to tenants).

    The attack when such a Tenant is accepted: member bob runs a pod as ServiceAccount `ci`
    (the token below is what the kubelet would mount) and, with its token, binds himself
    `tenantry:owner`; or anyone in the cluster reads the tenant."""
    name = unique("disguise")
    ns, bob = f"{name}-a", f"{name}-bob"
    members = [owner(f"{name}-alice"), _member(bob), spelled(ns)]
    refused: client.ApiException | None = None
    try:
        tenants(name, [ns], members)
    except client.ApiException as error:
        refused = error
    if refused is not None:
        assert refused.status == 422, refused.body
        message = api_message(refused)
        assert "spec.members" in message and rule in message, message
        return
    # Accepted: show what it gives away (each of these is the hole).
    core_bob = client.CoreV1Api(as_user(bob))
    core_bob.create_namespaced_service_account(
        ns, client.V1ServiceAccount(metadata=client.V1ObjectMeta(name="ci")))
    minted = client.CoreV1Api(admin_api).create_namespaced_service_account_token(
        "ci", ns, client.AuthenticationV1TokenRequest(
            spec=client.V1TokenRequestSpec(audiences=[], expiration_seconds=600)))
    as_ci = client.RbacAuthorizationV1Api(_token_client(admin_api, minted.status.token))
    escalation = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
                  "metadata": {"name": "bob-promotes-himself"},
                  "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                              "name": f"tenantry:{spelled(ns)['role']}"},
                  "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User",
                                "name": bob}]}
    promoted = not forbidden(lambda: as_ci.create_namespaced_role_binding(ns, escalation))
    # Outsiders: a person of another tenant, and a workload of another namespace.
    workload = client.CoreV1Api(admin_api).create_namespaced_service_account_token(
        "default", "default", client.AuthenticationV1TokenRequest(
            spec=client.V1TokenRequestSpec(audiences=[], expiration_seconds=600)))
    outsiders = {"a user of another tenant": as_user(f"{name}-mallory", ["another-tenant"]),
                 "a workload of namespace default": _token_client(admin_api,
                                                                  workload.status.token)}
    opened = [who for who, api in outsiders.items()
              if not forbidden(lambda api=api: client.CoreV1Api(api).list_namespaced_pod(ns))]
    pytest.fail(f"Tenant with member {spelled(ns)} was accepted: member {bob} promoted "
                f"himself through ServiceAccount ci: {promoted}; outsiders who read the "
                f"tenant: {opened}")
