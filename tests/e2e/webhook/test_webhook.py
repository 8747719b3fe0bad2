"""The webhook through the real apiserver: what tenants, their owners and cluster admins get.

Requests are dry runs unless a test needs the object to exist; the webhook sees dry runs like any
other request (it declares sideEffects: None).
"""

from __future__ import annotations

import contextlib
import copy
import json
from typing import Any

import pytest
from kubernetes import client

from tenantry.admission import rules
from tenantry.model import common
from tests.conftest import (
    OPERATOR_GROUPS,
    OPERATOR_USER,
    Ledger,
    OperatorProcess,
    UserApi,
    api_message,
)
from tests.e2e.conftest import TenantFactory, owner
from tests.e2e.webhook.conftest import (
    session_tenant,
    wait_default_service_account,
    wait_for_log,
)
from tests.e2e.webhook.webhook_helpers import (
    DENIED_BY_CREDENTIALS,
    DENIED_BY_WORKLOADS,
    RawApi,
    WebhookProcess,
    credential,
    deployment,
    in_namespace,
)
from tests.helpers import GROUP, VERSION, eventually, unique
from tests.unit.admission.admission_helpers import hardened_container, hardened_pod

ROOT_FS = "readOnlyRootFilesystem"


def writable_root(pod: dict[str, Any], image: str | None = None) -> dict[str, Any]:
    """`pod` with a writable root filesystem in its app container (breaks only the Tenantry
    rule readOnlyRootFilesystem; Pod Security restricted is still met)."""
    pod = copy.deepcopy(pod)
    app = pod["spec"]["containers"][0]
    app["securityContext"]["readOnlyRootFilesystem"] = False
    if image:
        app["image"] = image
    return pod


def root_user(pod: dict[str, Any]) -> dict[str, Any]:
    """`pod` with runAsNonRoot false (breaks Pod Security restricted and runAsNonRoot)."""
    pod = copy.deepcopy(pod)
    pod["spec"]["securityContext"]["runAsNonRoot"] = False
    return pod


def writable_csi_mount(pod: dict[str, Any]) -> dict[str, Any]:
    """`pod` mounting a CSI volume writable (breaks only the Tenantry rule writableMounts;
    Pod Security restricted allows csi volumes)."""
    pod = copy.deepcopy(pod)
    pod["spec"]["volumes"] = [*pod["spec"].get("volumes", []),
                              {"name": "settings", "csi": {"driver": "files.example.com"}}]
    app = pod["spec"]["containers"][0]
    app["volumeMounts"] = [*app.get("volumeMounts", []),
                           {"name": "settings", "mountPath": "/etc/app", "readOnly": False}]
    return pod


def hardened(namespace: str, name: str) -> dict[str, Any]:
    return in_namespace(hardened_pod(), namespace, name)


# -- admitted, refused, untouched ----------------------------------------------------------------

def test_hardened_pod_is_admitted(raw_api: RawApi, acme: str) -> None:
    name = unique("hardened")
    outcome = raw_api.create(hardened(acme, name), dry_run=False)
    assert outcome.status == 201, outcome
    assert outcome.warnings == ()
    raw_api.request("DELETE", f"/api/v1/namespaces/{acme}/pods/{name}")
    outcome = raw_api.create(deployment(hardened_pod(), acme, unique("hardened")))
    assert outcome.status == 201, outcome
    assert outcome.warnings == ()


def test_refusal_names_every_violation_with_its_path(raw_api: RawApi, acme: str) -> None:
    pod = writable_root(hardened_pod())
    pod["spec"]["containers"][1]["securityContext"]["capabilities"] = {"add": ["NET_ADMIN"]}
    obj = deployment(pod, acme, unique("faults"))
    outcome = raw_api.create(obj)
    assert outcome.status == 403, outcome
    assert DENIED_BY_WORKLOADS in outcome.message
    assert "tenant 'wh-acme' (podSecurity.mode Deny)" in outcome.message
    expected = {(v.field_path, v.rule_id) for v in rules.check_object(obj)}
    assert ("spec.template.spec.containers[0].securityContext.readOnlyRootFilesystem",
            ROOT_FS) in expected
    assert {rule for _, rule in expected} == {ROOT_FS, "capabilitiesRestricted"}
    assert outcome.findings() == expected


def test_pods_outside_tenant_namespaces_are_untouched(raw_api: RawApi, outsider: str,
                                                      webhook: WebhookProcess) -> None:
    for namespace in (outsider, "kube-system", "default"):
        name = unique("outside")
        outcome = raw_api.create(in_namespace(root_user(writable_root(hardened_pod())),
                                              namespace, name))
        assert outcome.status == 201, (namespace, outcome)
        assert outcome.warnings == (), (namespace, outcome)
        assert name not in webhook.log(), f"the webhook was asked about {namespace}/{name}"


def test_nothing_bypasses_by_default(raw_api: RawApi, acme: str, as_user: UserApi) -> None:
    """Cluster admins (system:masters) and the tenant's owner are refused alike."""
    obj = deployment(writable_root(hardened_pod()), acme, unique("bypass"))
    outcome = raw_api.create(obj)
    assert outcome.status == 403 and DENIED_BY_WORKLOADS in outcome.message, outcome
    apps = client.AppsV1Api(as_user("alice"))
    with pytest.raises(client.ApiException) as refused:
        apps.create_namespaced_deployment(acme, obj, dry_run="All")
    assert refused.value.status == 403
    assert DENIED_BY_WORKLOADS in api_message(refused.value)


def test_services_are_judged_against_the_tenant_quota(raw_api: RawApi, acme: str) -> None:
    def service(kind: str) -> dict[str, Any]:
        return {"apiVersion": "v1", "kind": "Service",
                "metadata": {"name": unique(kind.lower()), "namespace": acme},
                "spec": {"type": kind, "selector": {"app": "x"}, "ports": [{"port": 80}]}}

    assert raw_api.create(service("ClusterIP")).status == 201
    outcome = raw_api.create(service("NodePort"))
    assert outcome.status == 403, outcome
    assert outcome.findings() == {("spec.type", "nodePortServices")}
    outcome = raw_api.create(service("LoadBalancer"))
    assert outcome.findings() == {("spec.type", "loadBalancerServices"),
                                  ("spec.allocateLoadBalancerNodePorts", "nodePortServices")}


def test_ephemeral_containers_are_judged(raw_api: RawApi, acme: str) -> None:
    name = unique("debug-me")
    assert raw_api.create(hardened(acme, name), dry_run=False).status == 201
    path = f"/api/v1/namespaces/{acme}/pods/{name}/ephemeralcontainers"
    try:
        debug = hardened_container("debug", "registry.example/debug:1")
        debug["securityContext"]["readOnlyRootFilesystem"] = False
        outcome = raw_api.request("PATCH", path, {"spec": {"ephemeralContainers": [debug]}},
                                  content_type="application/strategic-merge-patch+json")
        assert outcome.status == 403, outcome
        assert DENIED_BY_WORKLOADS in outcome.message
        assert outcome.findings() == {
            ("spec.ephemeralContainers[0].securityContext.readOnlyRootFilesystem", ROOT_FS)}
        debug["securityContext"]["readOnlyRootFilesystem"] = True
        outcome = raw_api.request("PATCH", path, {"spec": {"ephemeralContainers": [debug]}},
                                  content_type="application/strategic-merge-patch+json")
        assert outcome.status == 200, outcome
    finally:
        raw_api.request("DELETE", f"/api/v1/namespaces/{acme}/pods/{name}")


# -- modes and exemptions ------------------------------------------------------------------------

def test_warn_mode_admits_with_warnings(raw_api: RawApi, tenants: TenantFactory,
                                        admin_api: client.ApiClient) -> None:
    namespace = unique("wh-warn")
    tenants(unique("warn"), [namespace], [owner("alice")], podSecurity={"mode": "Warn"})
    outcome = raw_api.create(deployment(writable_root(hardened_pod()), namespace,
                                        unique("warned")))
    assert outcome.status == 201, outcome
    assert len(outcome.warnings) == 1, outcome
    assert "(podSecurity.mode Warn)" in outcome.warnings[0]
    assert ("spec.template.spec.containers[0].securityContext.readOnlyRootFilesystem"
            in outcome.warnings[0])
    assert f"[{ROOT_FS}]" in outcome.warnings[0]
    hardened_outcome = raw_api.create(deployment(hardened_pod(), namespace, unique("fine")))
    assert hardened_outcome.status == 201 and hardened_outcome.warnings == ()


def test_audit_mode_admits_silently_and_records(raw_api: RawApi, tenants: TenantFactory,
                                                admin_api: client.ApiClient, ledger: Ledger,
                                                webhook: WebhookProcess) -> None:
    namespace, tenant = unique("wh-audit"), unique("audit")
    tenants(tenant, [namespace], [owner("alice")], podSecurity={"mode": "Audit"})
    name = unique("audited")
    obj = deployment(writable_root(hardened_pod()), namespace, name)
    outcome = raw_api.create(obj, dry_run=False)
    assert outcome.status == 201, outcome
    assert outcome.warnings == ()
    log = wait_for_log(webhook, f"Deployment.apps/v1 {namespace}/{name}")
    line = next(line for line in log.splitlines() if f"{namespace}/{name}" in line)
    message = json.loads(line)["message"]  # the webhook logs JSON lines (tenantry.logs)
    record = json.loads(message[message.index("{"):])
    assert record["mode"] == "Audit" and record["allowed"] is True
    assert [v["rule"] for v in record["violations"]] == [ROOT_FS]
    assert record["tenant"] == tenant and record["user"] == "tenantry-admin"
    # ... and in the audit ledger, on the tenant's chain, which is what Audit mode promises.
    entry = eventually(lambda: next((e for e in ledger.entries(tenant)
                                     if e["action"] == "admission.audit"), None),
                       what="the audited admission in the ledger")
    assert (entry["actor"], entry["resource_name"]) == ("tenantry-admin", name)
    assert entry["changes"]["violations"] == [
        {"rule": ROOT_FS, "fieldPath": "spec.template.spec.containers[0].securityContext"
                                       ".readOnlyRootFilesystem"}]

    # The tenant moves to Deny: what exists may still be scaled or relabelled (its pod template
    # is unchanged), but a changed template is judged, and refused.
    custom = client.CustomObjectsApi(admin_api)
    custom.patch_cluster_custom_object(common.GROUP, common.VERSION, "tenants", tenant,
                                       {"spec": {"podSecurity": {"mode": "Deny"}}})
    path = f"/apis/apps/v1/namespaces/{namespace}/deployments/{name}"
    merge = "application/merge-patch+json"

    def refused_now() -> bool:
        patch = {"spec": {"template": {"metadata": {"annotations": {"x": unique("v")}}}}}
        return raw_api.request("PATCH", path + "?dryRun=All", patch, merge).status == 403

    eventually(refused_now, timeout=10, what="the webhook to see the tenant's new mode")
    outcome = raw_api.request("PATCH", path, {"spec": {"replicas": 3},
                                              "metadata": {"labels": {"tier": "web"}}}, merge)
    assert outcome.status == 200, outcome


def test_exemptions_by_rule_image_and_namespace(raw_api: RawApi,
                                                tenants: TenantFactory) -> None:
    first, second = unique("wh-ex-a"), unique("wh-ex-b")
    tenants(unique("exempt"), [first, second], [owner("alice")], podSecurity={
        "mode": "Deny",
        "exemptions": [
            {"rule": ROOT_FS, "image": "registry.example/legacy/",
             "reason": "the legacy image writes to /var/cache"},
            {"namespace": second, "rule": "writableMounts",
             "reason": "a vendor image that writes into its config, in its own namespace"},
        ],
    })
    legacy = writable_root(hardened_pod(), image="registry.example/legacy/app:3")
    # By rule and image: only that image, only that rule.
    assert raw_api.create(deployment(legacy, first, unique("legacy"))).status == 201
    other_image = raw_api.create(deployment(writable_root(hardened_pod()), first,
                                            unique("other")))
    assert other_image.status == 403
    assert {rule for _, rule in other_image.findings()} == {ROOT_FS}
    # By namespace (and rule): a writable CSI mount in the second namespace only.
    mounting = writable_csi_mount(hardened_pod())
    refused = raw_api.create(deployment(mounting, first, unique("mount")))
    assert refused.status == 403 and {r for _, r in refused.findings()} == {"writableMounts"}
    assert raw_api.create(deployment(mounting, second, unique("mount"))).status == 201
    # An exemption lifts its own rule and nothing else.
    both = raw_api.create(deployment(writable_root(mounting), second, unique("both")))
    assert both.status == 403 and {r for _, r in both.findings()} == {ROOT_FS}


# -- fail closed ---------------------------------------------------------------------------------

def test_namespace_of_a_missing_tenant_fails_closed(raw_api: RawApi, webhook: WebhookProcess,
                                                    admin_api: client.ApiClient) -> None:
    core = client.CoreV1Api(admin_api)
    name = unique("wh-ghost")
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(
        name=name, labels={common.TENANT_LABEL: "ghost"})))
    try:
        wait_default_service_account(admin_api, name)
        outcome = raw_api.create(hardened(name, unique("pod")))
        assert outcome.status == 403, outcome
        assert DENIED_BY_WORKLOADS in outcome.message
        assert "Tenant 'ghost' does not exist" in outcome.message
        assert "fail closed" in outcome.message
    finally:
        core.delete_namespace(name)


# -- credentials ---------------------------------------------------------------------------------

def test_credentials_must_live_in_their_tenants_namespaces(raw_api: RawApi, acme: str,
                                                           acme_psa_off: str,
                                                           outsider: str) -> None:
    assert raw_api.create(credential(acme)).status == 201
    caller = credential(acme, scope="caller", allowedServiceAccounts=["checkout"])
    assert raw_api.create(caller).status == 201
    nowhere = raw_api.create(credential(outsider))
    assert nowhere.status == 403 and DENIED_BY_CREDENTIALS in nowhere.message, nowhere
    assert "belongs to no tenant" in nowhere.message and "[credentialNamespace]" in nowhere.message
    unlisted = raw_api.create(credential(acme_psa_off))
    assert unlisted.status == 403, unlisted
    assert "does not list it in spec.namespaces" in unlisted.message



def test_a_member_cannot_take_a_platform_credential_for_their_own_workloads(
        admin_api: client.ApiClient, as_user: UserApi, operator: OperatorProcess,
        webhook: WebhookProcess) -> None:
    """Members write Credentials, but a platform- or participant-scoped one is the owners' and
    admins': a member who re-scoped it to caller (or deleted it and created it again as caller
    from a copy of its sealed values) would have its values handed to a workload of theirs.
    Attacked here as the member, with the RBAC the operator gave them."""
    tenant, namespace = unique("wh-scope"), unique("wh-scope-a")
    owner_name, member_name = f"{tenant}-alice", f"{tenant}-bob"
    members = [{"kind": "User", "name": owner_name, "role": "owner"},
               {"kind": "User", "name": member_name, "role": "member"}]
    with session_tenant(admin_api, tenant, [namespace], members=members):
        alice = client.CustomObjectsApi(as_user(owner_name))
        bob = client.CustomObjectsApi(as_user(member_name))

        def attempt(call: Any) -> str:
            try:
                call()
            except client.ApiException as error:
                return f"{error.status} {api_message(error)}"
            return "admitted"

        alice.create_namespaced_custom_object(GROUP, VERSION, namespace, "credentials",
                                              credential(namespace, "integration"))
        # bob's own, caller-scoped, Credentials are his to create and delete.
        mine = credential(namespace, "mine", scope="caller", allowedServiceAccounts=["app"])
        eventually(lambda: attempt(lambda: bob.create_namespaced_custom_object(
            GROUP, VERSION, namespace, "credentials", mine)) == "admitted",
            what="the member's RBAC on Credentials")

        rescoped = attempt(lambda: bob.patch_namespaced_custom_object(
            GROUP, VERSION, namespace, "credentials", "integration",
            {"spec": {"scope": "caller", "allowedServiceAccounts": ["app"]}}))
        deleted = attempt(lambda: bob.delete_namespaced_custom_object(
            GROUP, VERSION, namespace, "credentials", "integration"))
        participant = attempt(lambda: bob.create_namespaced_custom_object(
            GROUP, VERSION, namespace, "credentials",
            credential(namespace, "shared", scope="participant")))
        for outcome in (rescoped, deleted, participant):
            assert outcome.startswith("403 ") and DENIED_BY_CREDENTIALS in outcome, outcome
            assert "spec.scope: only tenant" in outcome and "[credentialScope]" in outcome
            assert f"({member_name} is a member there)" in outcome
        stored = alice.get_namespaced_custom_object(GROUP, VERSION, namespace, "credentials",
                                                    "integration")
        assert stored["spec"]["scope"] == "platform"

        assert attempt(lambda: bob.delete_namespaced_custom_object(
            GROUP, VERSION, namespace, "credentials", "mine")) == "admitted"
        assert attempt(lambda: alice.delete_namespaced_custom_object(
            GROUP, VERSION, namespace, "credentials", "integration")) == "admitted"


def test_only_the_operators_updates_that_keep_the_spec_skip_the_credentials_review(
        admin_api: client.ApiClient, as_user: UserApi, raw_api: RawApi,
        operator: OperatorProcess, webhook: WebhookProcess) -> None:
    """The route's matchCondition spares the operator's own bookkeeping (kopf's annotations) the
    round trip, and nothing else: the same write by anybody else, and a spec change by the
    operator's identity, are still judged. Made visible on a Credential the webhook would now
    refuse (its namespace given up by its tenant): only the exempt write gets through."""
    tenant, kept, released = unique("wh-credmc"), unique("wh-credmc-a"), unique("wh-credmc-b")
    custom = client.CustomObjectsApi(admin_api)
    as_operator = client.CustomObjectsApi(as_user(OPERATOR_USER, OPERATOR_GROUPS))
    core = client.CoreV1Api(admin_api)
    try:
        with session_tenant(admin_api, tenant, [kept, released], deletionPolicy="Retain"):
            custom.create_namespaced_custom_object(GROUP, VERSION, released, "credentials",
                                                   credential(released, "moved"))
            custom.patch_cluster_custom_object(GROUP, VERSION, "tenants", tenant, {
                "spec": {"namespaces": [{"name": kept}]}})
            eventually(lambda: DENIED_BY_CREDENTIALS in raw_api.create(
                credential(released, "probe")).message, timeout=30,
                what=f"the webhook to refuse Credentials in {released}")

            def patch(api: client.CustomObjectsApi, body: dict[str, Any]) -> str:
                try:
                    api.patch_namespaced_custom_object(GROUP, VERSION, released, "credentials",
                                                       "moved", body)
                except client.ApiException as error:
                    return f"{error.status} {api_message(error)}"
                return "admitted"

            bookkeeping = {"metadata": {"annotations": {
                f"{GROUP}/last-handled-configuration": unique("x")}}}
            # The operator's own metadata-only write: not sent to the webhook, so admitted.
            assert patch(as_operator, bookkeeping) == "admitted"
            # The very same write by somebody else (a cluster admin): reviewed and refused.
            imitated = patch(custom, bookkeeping)
            assert imitated.startswith("403 ") and DENIED_BY_CREDENTIALS in imitated, imitated
            assert "[credentialNamespace]" in imitated
            # The operator's identity changing the spec: reviewed and refused.
            respec = patch(as_operator, {"spec": {"fromSecret": {"name": "elsewhere"}}})
            assert respec.startswith("403 ") and DENIED_BY_CREDENTIALS in respec, respec
            assert "[credentialNamespace]" in respec
            # ... and so is a spec change that comes with bookkeeping in the same write.
            both = patch(as_operator, {**bookkeeping, "spec": {"fromSecret": {"name": "other"}}})
            assert both.startswith("403 ") and DENIED_BY_CREDENTIALS in both, both
            assert custom.get_namespaced_custom_object(
                GROUP, VERSION, released, "credentials", "moved")["spec"]["fromSecret"][
                "name"] == "plain"
    finally:
        for namespace in (kept, released):
            with contextlib.suppress(client.ApiException):
                core.delete_namespace(namespace)


# -- the wire ------------------------------------------------------------------------------------

def _review(**request: Any) -> bytes:
    base = {"uid": "00000000-0000-0000-0000-000000000001",
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "operation": "CREATE", "namespace": "wh-acme-prod", "name": "direct",
            "userInfo": {"username": "direct-caller"},
            "object": hardened_pod()}
    base.update(request)
    return json.dumps({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
                       "request": base}).encode()


def test_malformed_reviews_get_400_with_a_reason(webhook: WebhookProcess, acme: str) -> None:
    path = "/validate/workloads"
    cases = {
        b"": "empty body",
        b"{not json": "not JSON",
        b"[]": "JSON object",
        json.dumps({"apiVersion": "admission.k8s.io/v1beta1", "kind": "AdmissionReview",
                    "request": {}}).encode(): "apiVersion must be admission.k8s.io/v1",
        json.dumps({"apiVersion": "admission.k8s.io/v1", "kind": "Pod"}).encode():
            "kind must be AdmissionReview",
        json.dumps({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview"}).encode():
            "request is required",
        _review(uid=""): "request.uid",
        _review(operation="PATCH"): "request.operation",
        _review(object=None): "request.object is required",
        _review(object=["not", "an", "object"]): "request.object must be an object",
        _review(kind={"group": "", "kind": "Pod"}): "request.kind.version",
        _review(operation="UPDATE"): "request.oldObject is required",
        _review(dryRun="yes"): "request.dryRun",
        _review(userInfo={"username": "x", "groups": "admins"}): "request.userInfo.groups",
        "\udcff".encode("utf-8", "surrogatepass"): "not JSON",
    }
    for body, reason in cases.items():
        status, answer = webhook.post(path, body)
        assert status == 400, (body, status, answer)
        assert answer["code"] == 400 and answer["reason"] == "BadRequest"
        assert reason in answer["message"], (body, answer)
    status, answer = webhook.post(path, _review(), content_type="text/plain")
    assert status == 400 and "Content-Type" in answer["message"]
    # Still serving, and a well-formed review gets a verdict.
    status, answer = webhook.post(path, _review())
    assert status == 200, answer
    assert answer["response"] == {"uid": "00000000-0000-0000-0000-000000000001",
                                  "allowed": True,
                                  "auditAnnotations": {"tenant": "wh-acme", "mode": "Deny"}}
    status, answer = webhook.post(path, _review(object=writable_root(hardened_pod())))
    assert status == 200 and answer["response"]["allowed"] is False
    assert answer["response"]["status"]["code"] == 403
    assert "[readOnlyRootFilesystem]" in answer["response"]["status"]["message"]
    assert webhook.running()

