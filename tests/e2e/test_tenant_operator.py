"""Tenants, reconciled by the real operator on the real control plane."""

from __future__ import annotations

import asyncio
import json

import kopf
import pytest
from kubernetes import client

from tenantry import kube
from tenantry.controller import diffbase, protection
from tenantry.controller.tenant import reconcile
from tenantry.devcluster.cluster import LocalControlPlane
from tenantry.kubeapi import KubeApi
from tests.conftest import OPERATOR_GROUPS, OPERATOR_USER, OperatorProcess, UserApi
from tests.e2e.conftest import TenantFactory, owner
from tests.helpers import GROUP, VERSION, conditions_of, eventually, forbidden, unique


def test_tenant_gets_hardened_isolated_governed_namespaces(
        admin_api: client.ApiClient, tenants: TenantFactory) -> None:
    name = unique("acme")
    ns = [f"{name}-prod", f"{name}-dev"]
    tenant = tenants(name, ns, [
        owner(f"{name}-alice"),
        {"kind": "Group", "name": f"{name}-admins", "role": "admin"},
        {"kind": "User", "name": f"{name}-bob", "role": "member"},
        {"kind": "ServiceAccount", "name": "ci", "namespace": ns[0], "role": "viewer"},
    ], network={"egress": [{"cidr": "0.0.0.0/0", "ports": [{"port": 443}]}]},
        quota={"cpu": "4", "pods": 10})

    status = tenant["status"]
    parts = conditions_of(tenant)
    assert {t: c["status"] for t, c in parts.items()} == {
        "Ready": "True", "Namespaces": "True", "NetworkPolicies": "True", "Quotas": "True",
        "RBAC": "True", "TenantNetworkPolicies": "True"}
    assert all(c["observedGeneration"] == 1 for c in parts.values())
    assert status["namespaceCount"] == 2 and status["memberCount"] == 4
    assert sorted(s["name"] for s in status["namespaces"]) == sorted(ns)

    core = client.CoreV1Api(admin_api)
    for namespace in ns:
        labels = core.read_namespace(namespace).metadata.labels
        assert labels["tenantry.dev/tenant"] == name
        for mode in ("enforce", "audit", "warn"):
            assert labels[f"pod-security.kubernetes.io/{mode}"] == "restricted"
            assert labels[f"pod-security.kubernetes.io/{mode}-version"] == "v1.35"

    policies = {p.metadata.name: p for p in
                client.NetworkingV1Api(admin_api).list_namespaced_network_policy(ns[0]).items}
    assert set(policies) == {"tenantry-default-deny", "tenantry-allow-dns",
                             "tenantry-allow-intra-tenant", "tenantry-allow-egress"}
    deny = policies["tenantry-default-deny"].spec
    assert deny.pod_selector.match_labels is None and sorted(deny.policy_types) == [
        "Egress", "Ingress"]
    assert not deny.ingress and not deny.egress
    egress_blocks = [peer.ip_block for rule in policies["tenantry-allow-egress"].spec.egress
                     for peer in rule.to or [] if peer.ip_block]
    assert egress_blocks[0].cidr == "0.0.0.0/0"
    for private in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "169.254.0.0/16",
                    "127.0.0.0/8"):
        assert private in egress_blocks[0]._except

    quota = core.read_namespaced_resource_quota("tenantry-quota", ns[0]).spec.hard
    assert quota["services.nodeports"] == "0" and quota["pods"] == "10"
    assert quota["limits.cpu"] == "4"
    assert core.read_namespaced_limit_range("tenantry-limits", ns[0]).spec.limits

    bindings = {b.metadata.name: b for b in
                client.RbacAuthorizationV1Api(admin_api).list_namespaced_role_binding(ns[1]).items}
    assert {"tenantry:owner", "tenantry:admin", "tenantry:member",
            "tenantry:viewer"} <= set(bindings)
    assert [s.name for s in bindings["tenantry:owner"].subjects] == [f"{name}-alice"]

    events = core.list_namespaced_event("default", field_selector=f"involvedObject.name={name}")
    reasons = {e.reason for e in events.items}
    assert "NamespaceCreated" in reasons


def test_four_tier_rbac_for_real_users(admin_api: client.ApiClient, tenants: TenantFactory,
                                       as_user: UserApi) -> None:
    a, b = unique("ta"), unique("tb")
    tenants(a, [a], [owner(f"{a}-owner"), {"kind": "User", "name": f"{a}-viewer",
                                          "role": "viewer"},
                     {"kind": "User", "name": f"{a}-admin", "role": "admin"}])
    tenants(b, [b], [owner(f"{b}-owner")])

    viewer = client.CoreV1Api(as_user(f"{a}-viewer"))
    viewer.list_namespaced_pod(a)
    viewer.list_namespaced_config_map(a)
    assert forbidden(lambda: viewer.create_namespaced_config_map(
        a, client.V1ConfigMap(metadata=client.V1ObjectMeta(name="x"))))
    assert forbidden(lambda: viewer.list_namespaced_secret(a))
    assert forbidden(lambda: viewer.delete_namespaced_config_map("kube-root-ca.crt", a))

    # Tenant A's owner can do nothing at all in tenant B's namespace.
    owner_a = as_user(f"{a}-owner")
    core_a = client.CoreV1Api(owner_a)
    core_a.list_namespaced_pod(a)  # works at home
    for call in (lambda: core_a.list_namespaced_pod(b),
                 lambda: core_a.read_namespaced_config_map("kube-root-ca.crt", b),
                 lambda: core_a.list_namespaced_secret(b),
                 lambda: core_a.create_namespaced_config_map(
                     b, client.V1ConfigMap(metadata=client.V1ObjectMeta(name="x"))),
                 lambda: core_a.delete_namespaced_config_map("kube-root-ca.crt", b)):
        assert forbidden(call)

    # The operator's fences are not the owner's to move.
    net_a = client.NetworkingV1Api(owner_a)
    assert forbidden(lambda: net_a.delete_namespaced_network_policy("tenantry-default-deny", a))
    assert forbidden(lambda: net_a.patch_namespaced_network_policy(
        "tenantry-allow-dns", a, {"spec": {"egress": [{}]}}))
    assert forbidden(lambda: core_a.patch_namespaced_resource_quota(
        "tenantry-quota", a, {"spec": {"hard": {"pods": "1000"}}}))
    assert forbidden(lambda: core_a.delete_namespaced_limit_range("tenantry-limits", a))
    rbac_a = client.RbacAuthorizationV1Api(owner_a)
    assert forbidden(lambda: rbac_a.delete_namespaced_role_binding("tenantry:owner", a))
    assert forbidden(lambda: core_a.patch_namespace(
        a, {"metadata": {"labels": {"pod-security.kubernetes.io/enforce": "privileged"}}}))

    # No escalation: binding cluster-admin, or granting `escalate`, is refused.
    assert forbidden(lambda: rbac_a.create_namespaced_role_binding(a, client.V1RoleBinding(
        metadata=client.V1ObjectMeta(name="me-admin"),
        role_ref=client.V1RoleRef(api_group="rbac.authorization.k8s.io", kind="ClusterRole",
                                  name="cluster-admin"),
        subjects=[client.RbacV1Subject(kind="User", name=f"{a}-owner",
                                       api_group="rbac.authorization.k8s.io")])))
    assert forbidden(lambda: rbac_a.create_namespaced_role(a, client.V1Role(
        metadata=client.V1ObjectMeta(name="escalator"),
        rules=[client.V1PolicyRule(api_groups=["rbac.authorization.k8s.io"],
                                   resources=["clusterroles"], verbs=["escalate", "bind"])])))

    # Their own policies and roles are fine, within their namespace.
    admin_a = as_user(f"{a}-admin")
    client.NetworkingV1Api(admin_a).create_namespaced_network_policy(a, client.V1NetworkPolicy(
        metadata=client.V1ObjectMeta(name="allow-web"),
        spec=client.V1NetworkPolicySpec(pod_selector=client.V1LabelSelector(
            match_labels={"app": "web"}), policy_types=["Ingress"])))
    client.RbacAuthorizationV1Api(admin_a).create_namespaced_role(a, client.V1Role(
        metadata=client.V1ObjectMeta(name="cm-reader"),
        rules=[client.V1PolicyRule(api_groups=[""], resources=["configmaps"],
                                   verbs=["get", "list"])]))
    # ...but not forged operator objects.
    assert forbidden(lambda: client.NetworkingV1Api(admin_a).create_namespaced_network_policy(
        a, client.V1NetworkPolicy(
            metadata=client.V1ObjectMeta(name="tenantry-allow-all"),
            spec=client.V1NetworkPolicySpec(pod_selector=client.V1LabelSelector()))))

    # Members see their own Tenant, not the list of all tenants.
    custom_a = client.CustomObjectsApi(owner_a)
    assert custom_a.get_cluster_custom_object(GROUP, VERSION, "tenants", a)["metadata"]["name"]
    assert forbidden(lambda: custom_a.get_cluster_custom_object(GROUP, VERSION, "tenants", b))
    assert forbidden(lambda: custom_a.list_cluster_custom_object(GROUP, VERSION, "tenants"))


def test_deleted_or_edited_children_come_back(admin_api: client.ApiClient,
                                              tenants: TenantFactory) -> None:
    name = unique("drift")
    tenants(name, [name], [owner(f"{name}-o")])
    net = client.NetworkingV1Api(admin_api)
    core = client.CoreV1Api(admin_api)
    net.delete_namespaced_network_policy("tenantry-default-deny", name)
    eventually(lambda: net.read_namespaced_network_policy("tenantry-default-deny", name),
               timeout=15, what="default-deny to be restored")
    core.patch_namespaced_resource_quota("tenantry-quota", name,
                                         {"spec": {"hard": {"pods": "9999"}}})
    eventually(lambda: core.read_namespaced_resource_quota(
        "tenantry-quota", name).spec.hard["pods"] == "50", timeout=15, what="quota restored")
    rbac = client.RbacAuthorizationV1Api(admin_api)
    rbac.delete_namespaced_role_binding("tenantry:owner", name)
    eventually(lambda: rbac.read_namespaced_role_binding("tenantry:owner", name),
               timeout=15, what="owner binding restored")


def test_a_deleted_or_edited_tier_role_comes_back(admin_api: client.ApiClient,
                                                   operator: OperatorProcess) -> None:
    """The shared tier ClusterRoles carry no tenant label: the operator restores them itself."""
    rbac = client.RbacAuthorizationV1Api(admin_api)
    wanted = rbac.read_cluster_role("tenantry:viewer").rules
    rbac.patch_cluster_role("tenantry:viewer", {"rules": [
        {"apiGroups": [""], "resources": ["secrets"], "verbs": ["get", "list"]}]})
    eventually(lambda: rbac.read_cluster_role("tenantry:viewer").rules == wanted, timeout=15,
               what="the viewer tier's rules to be restored")
    rbac.delete_cluster_role("tenantry:member")
    eventually(lambda: rbac.read_cluster_role("tenantry:member"), timeout=15,
               what="the member tier role to be re-created")


def test_an_owner_cannot_narrow_the_default_deny_even_posing_as_the_operator(
        tenants: TenantFactory, as_user: UserApi) -> None:
    """The attack on the resync's skip of unchanged applies: narrow the default-deny policy
    to select no pod, signed with the operator's field manager and leaving the applied-hash
    stamp as it was, so the resync would take it for the operator's own write. The protection
    policy refuses the write itself, whoever the request claims to manage fields for."""
    name = unique("narrow")
    tenants(name, [name], [owner(f"{name}-alice")])
    networking = client.NetworkingV1Api(as_user(f"{name}-alice"))
    # The apiserver starts enforcing a ValidatingAdmissionPolicy a moment after it is created
    # (the operator creates it at start-up, and this may be the session's first test): wait
    # until a reserved name is refused, then the attack must fail at its first try.
    probe = {"metadata": {"name": "tenantry-probe"}, "spec": {"podSelector": {}}}
    eventually(lambda: forbidden(lambda: networking.create_namespaced_network_policy(
        name, probe, dry_run="All")), what="the protection policy to be enforced")
    narrowed = {"spec": {"podSelector": {"matchLabels": {"nothing": "selected"}}}}
    for manager in ("tenantry-operator", None):
        with pytest.raises(client.ApiException) as refused:
            networking.patch_namespaced_network_policy("tenantry-default-deny", name, narrowed,
                                                       field_manager=manager)
        assert refused.value.status == 403, (manager, refused.value.status, refused.value.body)
        assert "managed by Tenantry" in refused.value.body
    assert forbidden(lambda: networking.delete_namespaced_network_policy(
        "tenantry-default-deny", name))
    live = networking.read_namespaced_network_policy("tenantry-default-deny", name)
    assert live.spec.pod_selector.match_labels is None


def test_the_operators_protection_probe_tells_an_enforced_policy_from_a_missing_one(
        admin_api: client.ApiClient, tenants: TenantFactory, as_user: UserApi,
        control_plane: LocalControlPlane) -> None:
    """The apiserver enforces a ValidatingAdmissionPolicy a moment after it is created, so the
    operator grants no access before its dry-run probe is refused by the protection policy.
    Here the probe runs as the operator, against the real apiserver: refused while the policy
    is bound; stored (a dry run: nothing is) once the binding is gone, which a fresh gate
    reports as a reason to withhold access; refused again once the binding is back; and not
    taken for enforced while the apiserver enforces an earlier version of the policy."""
    name = unique("probe")
    tenants(name, [name], [owner(f"{name}-alice")])
    core = client.CoreV1Api(as_user(OPERATOR_USER, OPERATOR_GROUPS))
    with pytest.raises(client.ApiException) as refused:
        core.create_namespaced_limit_range(name, protection.probe_object(name), dry_run="All")
    assert protection.refused_by_policy(refused.value.status, refused.value.body), (
        refused.value.body)
    with pytest.raises(client.ApiException) as missing:  # a dry run: nothing was stored
        core.read_namespaced_limit_range(protection.PROBE_NAME, name)
    assert missing.value.status == 404

    operator_kubeconfig = control_plane.kubeconfig_for(OPERATOR_USER, OPERATOR_GROUPS)

    async def gate_says() -> str | None:
        api = await KubeApi.from_kubeconfig(str(operator_kubeconfig))
        try:
            return await reconcile.ProtectionGate().problem(api, name)
        finally:
            await api.close()

    assert asyncio.run(gate_says()) is None
    admission = client.AdmissionregistrationV1Api(admin_api)
    admission.delete_validating_admission_policy_binding(protection.POLICY_NAME)
    try:
        problem = eventually(lambda: asyncio.run(gate_says()), timeout=30,
                             what="the apiserver to stop enforcing the unbound policy")
        # Stored (not refused for another reason): the gate's own words for "not enforced".
        assert "takes a moment to load" in problem and protection.POLICY_NAME in problem
    finally:
        kube.apply(admin_api, protection.protection_policy([OPERATOR_USER]))
    eventually(lambda: asyncio.run(gate_says()) is None, timeout=30,
               what="the re-bound policy to be enforced again")

    # An earlier version of the policy (here: the same, but for the probe name its own
    # version reserved), as an apiserver still enforces it a moment after an upgrade re-applied
    # the policy: it refuses the earlier probe, not this version's, so the gate stays closed.
    earlier_name = "tenantry-protection-probe"
    earlier = json.loads(json.dumps(protection.protection_policy([OPERATOR_USER])).replace(
        protection.PROBE_NAME, earlier_name))
    kube.apply(admin_api, earlier)
    try:
        problem = eventually(lambda: asyncio.run(gate_says()), timeout=30,
                             what="the apiserver to enforce the earlier version")
        assert "takes a moment to load" in problem
        earlier_probe = {**protection.probe_object(name), "metadata": {
            "name": earlier_name, "namespace": name}}
        with pytest.raises(client.ApiException) as refused_earlier:
            core.create_namespaced_limit_range(name, earlier_probe, dry_run="All")
        assert protection.refused_by_policy(refused_earlier.value.status,
                                            refused_earlier.value.body)
    finally:
        kube.apply(admin_api, protection.protection_policy([OPERATOR_USER]))
    eventually(lambda: asyncio.run(gate_says()) is None, timeout=30,
               what="this version of the policy to be enforced again")


def test_namespace_conflicts_are_reported_never_taken(admin_api: client.ApiClient,
                                                      tenants: TenantFactory) -> None:
    first, second = unique("first"), unique("second")
    tenants(first, [first], [owner("o1")])
    taken = tenants(second, [first, second], [owner("o2")], wait_ready=False)
    namespaces_condition = conditions_of(taken)["Namespaces"]
    assert namespaces_condition["reason"] == "NamespaceOwnedByAnotherTenant"
    assert first in namespaces_condition["message"]
    core = client.CoreV1Api(admin_api)
    assert core.read_namespace(first).metadata.labels["tenantry.dev/tenant"] == first
    assert core.read_namespace(second).metadata.labels["tenantry.dev/tenant"] == second
    bindings = client.RbacAuthorizationV1Api(admin_api).list_namespaced_role_binding(first)
    assert all(s.name != "o2" for b in bindings.items for s in b.subjects or [])

    # An existing namespace that belongs to nobody is only adopted when the spec says so.
    loose = unique("loose")
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=loose)))
    third = unique("third")
    refused = tenants(third, [loose], [owner("o3")], wait_ready=False)
    assert conditions_of(refused)["Namespaces"]["reason"] == "NamespaceExists"
    custom = client.CustomObjectsApi(admin_api)
    custom.patch_cluster_custom_object(GROUP, VERSION, "tenants", third, {
        "spec": {"namespaces": [{"name": loose, "adopt": True}]}})
    tenants.wait_for(third)  # type: ignore[attr-defined]
    assert core.read_namespace(loose).metadata.labels["tenantry.dev/tenant"] == third


def test_spec_changes_converge_without_leftovers(admin_api: client.ApiClient,
                                                 tenants: TenantFactory) -> None:
    name = unique("conv")
    keep, drop = f"{name}-keep", f"{name}-drop"
    tenants(name, [keep, drop], [owner(f"{name}-o"),
                                 {"kind": "User", "name": f"{name}-v", "role": "viewer"}],
            network={"egress": [{"cidr": "203.0.113.0/24"}]})
    custom = client.CustomObjectsApi(admin_api)
    custom.patch_cluster_custom_object(GROUP, VERSION, "tenants", name, {"spec": {
        "members": [owner(f"{name}-o")],
        "namespaces": [{"name": keep}],
        "network": {"egress": []},
    }})
    tenants.wait_for(name)  # type: ignore[attr-defined]
    rbac = client.RbacAuthorizationV1Api(admin_api)
    assert [b.metadata.name for b in rbac.list_namespaced_role_binding(
        keep, label_selector="tenantry.dev/tenant").items] == ["tenantry:owner"]
    net = client.NetworkingV1Api(admin_api)
    assert "tenantry-allow-egress" not in {
        p.metadata.name for p in net.list_namespaced_network_policy(keep).items}
    # The dropped namespace is retained (the default policy) but no longer the tenant's.
    core = client.CoreV1Api(admin_api)
    labels = core.read_namespace(drop).metadata.labels
    assert "tenantry.dev/tenant" not in labels
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"
    assert not net.list_namespaced_network_policy(drop,
                                                  label_selector="tenantry.dev/tenant").items
    core.delete_namespace(drop)


def test_deletion_follows_the_deletion_policy(admin_api: client.ApiClient,
                                              tenants: TenantFactory) -> None:
    kept, gone = unique("kept"), unique("gone")
    tenants(kept, [kept], [owner("k")])
    tenants(gone, [gone], [owner("g")], deletionPolicy="Delete")
    custom = client.CustomObjectsApi(admin_api)
    custom.delete_cluster_custom_object(GROUP, VERSION, "tenants", kept)
    custom.delete_cluster_custom_object(GROUP, VERSION, "tenants", gone)
    core = client.CoreV1Api(admin_api)

    def tenant_gone(name: str) -> bool:
        try:
            custom.get_cluster_custom_object(GROUP, VERSION, "tenants", name)
        except client.ApiException as error:
            return error.status == 404
        return False

    eventually(lambda: tenant_gone(kept) and tenant_gone(gone), timeout=30,
               what="both finalizers to finish")
    retained = core.read_namespace(kept)
    assert retained.status.phase == "Active"
    assert "tenantry.dev/tenant" not in retained.metadata.labels

    def deleting(name: str) -> bool:
        try:
            return core.read_namespace(name).metadata.deletion_timestamp is not None
        except client.ApiException as error:
            return error.status == 404

    eventually(lambda: deleting(gone), timeout=15, what="the Delete-policy namespace to go")
    core.delete_namespace(kept)


def test_a_namespace_an_admin_merely_labelled_is_never_pruned(
        admin_api: client.ApiClient, tenants: TenantFactory) -> None:
    name = unique("labelled")
    tenants(name, [f"{name}-app"], [owner(f"{name}-alice")], deletionPolicy="Delete")
    core = client.CoreV1Api(admin_api)
    stray = f"{name}-stray"
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(
        name=stray, labels={"tenantry.dev/tenant": name})))
    try:
        custom = client.CustomObjectsApi(admin_api)
        custom.patch_cluster_custom_object(GROUP, VERSION, "tenants", name, {
            "spec": {"members": [owner(f"{name}-alice"), owner(f"{name}-bob")]}})
        tenants.wait_for(name)  # type: ignore[attr-defined]
        # A reconciliation that prunes has run; the operator did not make this one: it stays.
        kept = core.read_namespace(stray)
        assert kept.status.phase == "Active"
        assert kept.metadata.labels["tenantry.dev/tenant"] == name
    finally:
        core.delete_namespace(stray)


def test_kopfs_record_of_a_handled_tenant_is_in_its_status_where_no_spec_editor_forges_it(
        admin_api: client.ApiClient, tenants: TenantFactory, as_user: UserApi) -> None:
    """kopf's diff base rides in the handler's own status write: no annotation, no marker, no
    write of kopf's own beyond the finalizer; and whoever may edit a Tenant but not its status
    can neither write that record nor hide a spec change behind a forged annotation."""
    name = unique("book")
    editor_name = f"{name}-editor"
    tenant = tenants(name, [name], [owner(f"{name}-o")])
    assert [key for key in tenant["metadata"].get("annotations") or {}
            if key.startswith(f"{GROUP}/")] == []
    assert tenant["metadata"]["finalizers"]  # kopf's, for the deletionPolicy
    assert json.loads(tenant["status"]["handledConfiguration"])["spec"] == tenant["spec"]
    # ... which the handler's own status write carried: kopf never wrote the status.
    assert [m.get("subresource") for m in tenant["metadata"]["managedFields"]
            if m["manager"] == "kopf"] == [None]

    rbac = client.RbacAuthorizationV1Api(admin_api)
    rbac.create_cluster_role(client.V1ClusterRole(
        metadata=client.V1ObjectMeta(name=editor_name),
        rules=[client.V1PolicyRule(api_groups=[GROUP], resources=["tenants"],
                                   verbs=["get", "patch", "update"])]))
    rbac.create_cluster_role_binding(client.V1ClusterRoleBinding(
        metadata=client.V1ObjectMeta(name=editor_name),
        role_ref=client.V1RoleRef(api_group="rbac.authorization.k8s.io", kind="ClusterRole",
                                  name=editor_name),
        subjects=[client.RbacV1Subject(kind="User", name=editor_name,
                                       api_group="rbac.authorization.k8s.io")]))
    try:
        editor = client.CustomObjectsApi(as_user(editor_name))
        assert forbidden(lambda: editor.patch_cluster_custom_object_status(
            GROUP, VERSION, "tenants", name, {"status": {"handledConfiguration": "{}"}}))
        # A spec change with the old annotation claiming it handled already: still handled.
        added = f"{name}-more"
        namespaces = [*tenant["spec"]["namespaces"], {"name": added}]
        # The body as stored (defaults filled in), and kopf's record of it as if handled.
        stored = eventually(lambda: editor.patch_cluster_custom_object(
            GROUP, VERSION, "tenants", name, {"spec": {"namespaces": namespaces}},
            dry_run="All"), what="the editor's RBAC to take effect")
        claimed = json.dumps(diffbase.DiffBase().build(body=kopf.Body(stored)))
        editor.patch_cluster_custom_object(GROUP, VERSION, "tenants", name, {
            "metadata": {"annotations": {f"{GROUP}/{diffbase.KEY}": claimed + "\n"}},
            "spec": {"namespaces": namespaces}})
        handled = tenants.wait_for(name)  # type: ignore[attr-defined]
        assert handled["status"]["observedGeneration"] == 2
        assert sorted(s["name"] for s in handled["status"]["namespaces"]) == sorted(
            [name, added])
        assert json.loads(handled["status"]["handledConfiguration"])["spec"] == handled["spec"]
        client.CoreV1Api(admin_api).read_namespace(added)
    finally:
        rbac.delete_cluster_role_binding(editor_name)
        rbac.delete_cluster_role(editor_name)
