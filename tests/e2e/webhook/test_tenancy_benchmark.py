"""The Kubernetes Multi-Tenancy Benchmarks (MTB, profile levels 1 and 2), as every tier (issue 10).

Why here: a unit test proves a rule; only the real apiserver, with the real operator's objects,
its ValidatingAdmissionPolicy and the webhook in the chain, proves that a tenant cannot walk
around them. Two tenants are built by the operator: `mtb-a` (namespaces mtb-a-prod and
mtb-a-dev; an owner, an admin, a member and a viewer as Users, and a Group of members) and
`mtb-b` next to it. Every check runs as each of mtb-a's identities, impersonated by the cluster
admin the way `kubectl --as USER --as-group GROUP` does (the apiserver adds
`system:authenticated`, which a fixture confirms), so RBAC, admission and quota all see the
tenant's own user. Test ids name the check and the identity: `CPI-1[viewer]`.

Families, after the kubectl-mtb benchmarks each check follows:
  CPI  control plane: no cluster-scoped reads or writes, no Tenant edits, no namespace label
       changes, the operator's quota/limits/default-deny/RoleBindings untouchable, no RBAC
       escalation, no impersonation (block_access_to_cluster_resources,
       block_multitenant_resources, block_role_privilege_escalation, block_ns_quota).
  TI   tenants: nothing of another tenant or of the system namespaces is readable or writable,
       no cluster-wide discovery, Secrets and Credentials kept from viewers
       (block_other_tenant_resources).
  HI   host: bare Pods with privileges, host namespaces, host paths or ports, capabilities,
       privilege escalation or root are refused, in Deployments and debug containers too;
       NodePort, LoadBalancer and externalIPs too; no hand-made Endpoints (CVE-2021-25740);
       no API proxy to pods, services or nodes (block_privileged_containers,
       block_use_of_host_*, block_add_capabilities, block_privilege_escalation,
       require_run_as_non_root_user, block_use_of_nodeport_services).
  FNS  fairness: quota and limits in every namespace, defaults for containers that ask for
       nothing, requests beyond the limits or the quota refused, no system priorities
       (configure_ns_quotas, configure_ns_object_quota).
  PL2  self-service: admins write NetworkPolicies that narrow and Roles/RoleBindings up to
       their own rights, members ship hardened workloads, viewers read and write nothing
       (create_network_policies, create_role_bindings).

Writes are dry runs (`dryRun=All`): authorization, admission, LimitRange and quota run in full
and nothing is stored. A refusal a tier's RBAC already decides must come from RBAC; for a tier
that holds the RBAC permission it must come from the control behind RBAC (admission, quota,
escalation prevention), and name what it refuses. Only a 403 counts as a refusal: a 404 would
mean RBAC let the request in, a 422 that the request was invalid and proved nothing.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import json
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import pytest
from kubernetes import client

from tenantry import kube
from tenantry.devcluster.cluster import LocalControlPlane
from tests.conftest import OperatorProcess
from tests.e2e.webhook.conftest import session_tenant
from tests.e2e.webhook.webhook_helpers import WebhookProcess, deployment, in_namespace
from tests.helpers import eventually
from tests.unit.admission.admission_helpers import hardened_pod

TENANT_A, TENANT_B = "mtb-a", "mtb-b"
A_PROD, A_DEV, B_PROD = "mtb-a-prod", "mtb-a-dev", "mtb-b-prod"
A_GROUP, B_GROUP = "mtb-a-developers", "mtb-b-ops"
A_POD_QUOTA = 3  # mtb-a-dev is filled up to it, so one more pod is over quota
B_SECRET = "mtb-b-database"
TENANTS_PATH = "/apis/tenantry.dev/v1alpha1/tenants"
RBAC_PATH = "/apis/rbac.authorization.k8s.io/v1"
NETWORKING_PATH = "/apis/networking.k8s.io/v1"
SYSTEM_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease", "tenantry-system")
PROTECTED = "managed by Tenantry"  # the protection policy's message for the operator's objects
RESERVED = "reserved for the Tenantry operator"
WORKLOADS_DENIED = 'admission webhook "workloads.admission.tenantry.dev" denied the request'

TIER_RANK = {"viewer": 0, "member": 1, "admin": 2, "owner": 3}


@dataclasses.dataclass(frozen=True)
class Identity:
    user: str
    group: str | None
    tier: str


# Test id -> who acts. The Group member has no tier of its own as a User: only its group binds.
IDENTITIES = {
    "owner": Identity("mtb-a-owner", None, "owner"),
    "admin": Identity("mtb-a-admin", None, "admin"),
    "member": Identity("mtb-a-member", None, "member"),
    "viewer": Identity("mtb-a-viewer", None, "viewer"),
    "group-member": Identity("mtb-a-dev-1", A_GROUP, "member"),
}

# Each refusal by the RBAC authorizer names the user and what it may not do.
_RBAC_DENIAL = re.compile(r'User "[^"]+" cannot [\w-]+ resource "')


# -- requests ------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Answer:
    """What the apiserver answered to one request."""

    request: str
    status: int
    body: dict[str, Any]

    @property
    def allowed(self) -> bool:
        return 200 <= self.status < 300

    @property
    def message(self) -> str:
        return str(self.body.get("message", ""))

    @property
    def by_rbac(self) -> bool:
        return self.status == 403 and bool(_RBAC_DENIAL.search(self.message))

    def __str__(self) -> str:
        return f"{self.request} -> HTTP {self.status}: {self.message or self.body.get('kind')}"


def call(api: client.ApiClient, method: str, path: str, body: Any = None, *,
         dry_run: bool = False, query: Sequence[tuple[str, str]] = ()) -> Answer:
    """One request through `api` (its default headers, impersonation included)."""
    params = [*query, *([("dryRun", "All")] if dry_run else [])]
    content = "application/merge-patch+json" if method == "PATCH" else "application/json"
    method, url, headers, data, _ = api.param_serialize(
        method, path, query_params=params, body=body,
        header_params={"Accept": "application/json", "Content-Type": content})
    response = api.call_api(method, url, headers, data)
    raw = response.read()
    try:
        parsed = json.loads(raw) if raw else {}
    except ValueError:
        parsed = {"message": raw.decode(errors="replace")}
    return Answer(f"{method} {url.split('/', 3)[-1]}", response.status,
                  parsed if isinstance(parsed, dict) else {"items": parsed})


@dataclasses.dataclass(frozen=True)
class Actor:
    """One identity of tenant mtb-a: impersonated by the admin (`api`), and authenticated as
    itself (`own`, a client certificate) for attacks that need headers of their own."""

    name: str
    identity: Identity
    api: client.ApiClient
    own: client.ApiClient

    def at_least(self, tier: str) -> bool:
        return TIER_RANK[self.identity.tier] >= TIER_RANK[tier]

    def get(self, path: str, **query: str) -> Answer:
        return call(self.api, "GET", path, query=list(query.items()))

    def create(self, path: str, body: Mapping[str, Any]) -> Answer:
        return call(self.api, "POST", path, body, dry_run=True)

    def patch(self, path: str, body: Mapping[str, Any]) -> Answer:
        return call(self.api, "PATCH", path, body, dry_run=True)

    def delete(self, path: str, **query: str) -> Answer:
        return call(self.api, "DELETE", path, dry_run=True, query=list(query.items()))


def allowed(answer: Answer) -> None:
    assert answer.allowed, f"expected to be allowed: {answer}"


def refused(answer: Answer, *expected: str) -> None:
    """Refused (403) by some layer; never a 404 (RBAC let the request in) nor a 422 (an
    invalid request proves nothing about the control under test)."""
    assert answer.status == 403, f"expected a refusal: {answer}"
    for text in expected:
        assert text in answer.message, f"expected {text!r} in the refusal: {answer}"


def rbac_refused(answer: Answer) -> None:
    assert answer.by_rbac, f"expected RBAC to refuse: {answer}"


def refused_behind_rbac(answer: Answer, *expected: str) -> None:
    """Refused although RBAC allows the verb: by admission, quota or escalation prevention."""
    refused(answer, *expected)
    assert not answer.by_rbac, f"expected a refusal past RBAC, not RBAC's: {answer}"


def refused_as(actor: Actor, writer: str, answer: Answer, *expected: str) -> None:
    """Tiers from `writer` up hold the verb, so the control behind RBAC must refuse; below,
    RBAC refuses."""
    if actor.at_least(writer):
        refused_behind_rbac(answer, *expected)
    else:
        rbac_refused(answer)


def allowed_from(actor: Actor, tier: str, answer: Answer) -> None:
    """Allowed for `tier` and up, refused by RBAC below."""
    if actor.at_least(tier):
        allowed(answer)
    else:
        rbac_refused(answer)


def ns_path(namespace: str, plural: str, name: str = "", *, api: str = "/api/v1") -> str:
    return f"{api}/namespaces/{namespace}/{plural}" + (f"/{name}" if name else "")


# -- objects -------------------------------------------------------------------------------------

Mutation = Callable[[dict[str, Any]], None]  # changes a pod spec in place


def pod(name: str, mutate: Mutation | None = None, *,
        namespace: str = A_PROD) -> dict[str, Any]:
    """A hardened pod (passes every rule), changed by `mutate(spec)`."""
    obj = in_namespace(hardened_pod(), namespace, name)
    if mutate is not None:
        mutate(obj["spec"])
    return obj


def _container(spec: dict[str, Any]) -> dict[str, Any]:
    container: dict[str, Any] = spec["containers"][0]
    return container


def _host_path(spec: dict[str, Any]) -> None:
    spec["volumes"].append({"name": "host", "hostPath": {"path": "/"}})
    _container(spec)["volumeMounts"] = [{"name": "host", "mountPath": "/host",
                                         "readOnly": True}]


def _resources(cpu: str) -> Mutation:
    def mutate(spec: dict[str, Any]) -> None:
        for container in spec["containers"]:
            container["resources"] = {"requests": {"cpu": cpu}, "limits": {"cpu": cpu}}
    return mutate


def _three_containers(spec: dict[str, Any]) -> None:
    spec.pop("initContainers")
    extra = copy.deepcopy(spec["containers"][0])
    extra["name"] = "extra"
    spec["containers"].append(extra)


def _priority(name: str) -> Mutation:
    def mutate(spec: dict[str, Any]) -> None:
        spec["priorityClassName"] = name
    return mutate


def _over_cpu_quota(spec: dict[str, Any]) -> None:
    """Three containers at the LimitRange's maximum each: 12 cpu against a quota of 8."""
    _three_containers(spec)
    _resources("4")(spec)


def service(name: str, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name},
            "spec": {"selector": {"app": name}, "ports": [{"port": 80}], **spec}}


def network_policy(name: str, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"name": name}, "spec": {"podSelector": {}, **spec}}


def role_binding(name: str, role: str, *, subject: str = "mtb-a-newcomer",
                 **metadata: Any) -> dict[str, Any]:
    return {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
            "metadata": {"name": name, **metadata},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                        "name": role},
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User",
                          "name": subject}]}


def role(name: str, rules: list[dict[str, Any]]) -> dict[str, Any]:
    return {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
            "metadata": {"name": name}, "rules": rules}


def config_map(name: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name},
            "data": {"k": "v"}}


# -- the checks ----------------------------------------------------------------------------------

Check = Callable[[Actor], None]
CHECKS: dict[str, Check] = {}


def benchmark(check_id: str) -> Callable[[Check], Check]:
    def register(check: Check) -> Check:
        CHECKS[check_id] = check
        return check
    return register


CLUSTER_SCOPED = (
    "/api/v1/nodes", "/api/v1/namespaces", "/api/v1/persistentvolumes",
    "/apis/storage.k8s.io/v1/storageclasses", f"{RBAC_PATH}/clusterroles",
    f"{RBAC_PATH}/clusterrolebindings",
    "/apis/apiextensions.k8s.io/v1/customresourcedefinitions",
    "/apis/admissionregistration.k8s.io/v1/validatingwebhookconfigurations",
    "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations",
    "/apis/admissionregistration.k8s.io/v1/validatingadmissionpolicies",
    "/apis/admissionregistration.k8s.io/v1/validatingadmissionpolicybindings",
    "/apis/scheduling.k8s.io/v1/priorityclasses",
    "/apis/certificates.k8s.io/v1/certificatesigningrequests",
    "/apis/apiregistration.k8s.io/v1/apiservices", TENANTS_PATH,
)


@benchmark("CPI-1")
def cluster_resources_cannot_be_read(actor: Actor) -> None:
    """block_access_to_cluster_resources: no list or get of anything cluster-scoped."""
    for path in CLUSTER_SCOPED:
        rbac_refused(actor.get(path))
    rbac_refused(actor.get("/api/v1/nodes/127.0.0.1"))
    rbac_refused(actor.get(f"{RBAC_PATH}/clusterroles/tenantry:owner"))
    rbac_refused(actor.get(
        "/apis/admissionregistration.k8s.io/v1/validatingwebhookconfigurations/"
        "tenantry-admission"))


@benchmark("CPI-2")
def cluster_resources_cannot_be_written(actor: Actor) -> None:
    """Nothing cluster-scoped can be created, changed or deleted: no way to a ClusterRole, a
    cluster-admin binding, a webhook or policy switched off, a priority or storage of one's own."""
    admission = "/apis/admissionregistration.k8s.io/v1"
    creates: dict[str, dict[str, Any]] = {
        "/api/v1/namespaces": {"metadata": {"name": "mtb-a-extra"}},
        f"{RBAC_PATH}/clusterroles": {"metadata": {"name": "mtb-all"}, "rules": [
            {"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]}]},
        f"{RBAC_PATH}/clusterrolebindings": {
            "metadata": {"name": "mtb-admin"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                        "name": "cluster-admin"},
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User",
                          "name": actor.identity.user}]},
        "/apis/scheduling.k8s.io/v1/priorityclasses": {"metadata": {"name": "mtb-top"},
                                                       "value": 1000000},
        "/apis/storage.k8s.io/v1/storageclasses": {"metadata": {"name": "mtb-host"},
                                                   "provisioner": "example.com/host"},
        "/api/v1/persistentvolumes": {"metadata": {"name": "mtb-root"}, "spec": {
            "capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"],
            "hostPath": {"path": "/"}}},
        f"{admission}/validatingadmissionpolicies": {"metadata": {"name": "mtb-policy"}},
        TENANTS_PATH: {"apiVersion": "tenantry.dev/v1alpha1", "kind": "Tenant",
                       "metadata": {"name": "mtb-mine"}, "spec": {
                           "members": [{"kind": "User", "name": actor.identity.user,
                                        "role": "owner"}],
                           "namespaces": [{"name": "kube-system", "adopt": True}]}},
    }
    for path, body in creates.items():
        rbac_refused(actor.create(path, body))
    # Switch the guards off: the webhook, the protection policy, the tier roles.
    rbac_refused(actor.patch(f"{admission}/validatingwebhookconfigurations/tenantry-admission",
                             {"metadata": {"labels": {"mtb": "x"}}}))
    rbac_refused(actor.delete(f"{admission}/validatingwebhookconfigurations/tenantry-admission"))
    rbac_refused(actor.delete(
        f"{admission}/validatingadmissionpolicies/tenantry-protect-managed-objects"))
    rbac_refused(actor.delete(
        f"{admission}/validatingadmissionpolicybindings/tenantry-protect-managed-objects"))
    rbac_refused(actor.patch(f"{RBAC_PATH}/clusterroles/tenantry:viewer", {"rules": [
        {"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]}]}))
    rbac_refused(actor.delete("/apis/apiextensions.k8s.io/v1/customresourcedefinitions/"
                              "tenants.tenantry.dev"))


@benchmark("CPI-3")
def tenants_are_readable_by_name_and_never_writable(actor: Actor) -> None:
    """Every member sees its own Tenant (by name), no other, and changes none, its own included."""
    allowed(actor.get(f"{TENANTS_PATH}/{TENANT_A}"))
    allowed(actor.get(TENANTS_PATH, fieldSelector=f"metadata.name={TENANT_A}"))
    rbac_refused(actor.get(TENANTS_PATH))
    rbac_refused(actor.get(f"{TENANTS_PATH}/{TENANT_B}"))
    rbac_refused(actor.get(TENANTS_PATH, fieldSelector=f"metadata.name={TENANT_B}"))
    for name in (TENANT_A, TENANT_B):
        rbac_refused(actor.patch(f"{TENANTS_PATH}/{name}", {"spec": {
            "quota": {"pods": 100000},
            "podSecurity": {"mode": "Audit"},
            "members": [{"kind": "User", "name": actor.identity.user, "role": "owner"}]}}))
        rbac_refused(actor.patch(f"{TENANTS_PATH}/{name}/status", {"status": {}}))
        rbac_refused(actor.delete(f"{TENANTS_PATH}/{name}"))


@benchmark("CPI-4")
def own_namespaces_keep_their_labels(actor: Actor) -> None:
    """The namespace's labels carry the tenant and Pod Security: readable, never changed."""
    for namespace in (A_PROD, A_DEV):
        got = actor.get(f"/api/v1/namespaces/{namespace}")
        allowed(got)
        labels = got.body["metadata"]["labels"]
        assert labels["tenantry.dev/tenant"] == TENANT_A
        assert labels["pod-security.kubernetes.io/enforce"] == "restricted"
        for change in ({"pod-security.kubernetes.io/enforce": None},
                       {"pod-security.kubernetes.io/enforce": "privileged"},
                       {"tenantry.dev/tenant": TENANT_B}, {"tenantry.dev/tenant": None},
                       {"tenantry.dev/pod-security-mode": "Audit"}):
            rbac_refused(actor.patch(f"/api/v1/namespaces/{namespace}",
                                     {"metadata": {"labels": change}}))
        rbac_refused(actor.patch(f"/api/v1/namespaces/{namespace}/status",
                                 {"metadata": {"labels": {"tenantry.dev/tenant": None}}}))
        rbac_refused(actor.delete(f"/api/v1/namespaces/{namespace}"))


@benchmark("CPI-5")
def the_operators_fences_cannot_be_touched(actor: Actor) -> None:
    """block_ns_quota and block_multitenant_resources: the quota and limits are read-only for
    every tier (RBAC); the default-deny and the `tenantry:*` RoleBindings, which admins may
    write as a kind, are kept by the protection policy; nobody can forge operator objects."""
    quota = ns_path(A_PROD, "resourcequotas", "tenantry-quota")
    limits = ns_path(A_PROD, "limitranges", "tenantry-limits")
    rbac_refused(actor.patch(quota, {"spec": {"hard": {"pods": "100000"}}}))
    rbac_refused(actor.delete(quota))
    rbac_refused(actor.create(ns_path(A_PROD, "resourcequotas"), {
        "metadata": {"name": "mtb-more"}, "spec": {"hard": {"pods": "100000"}}}))
    rbac_refused(actor.patch(limits, {"spec": {"limits": [{"type": "Container",
                                                           "max": {"cpu": "64"}}]}}))
    rbac_refused(actor.delete(limits))

    deny = ns_path(A_PROD, "networkpolicies", "tenantry-default-deny", api=NETWORKING_PATH)
    refused_as(actor, "admin", actor.patch(deny, {"spec": {"podSelector": {
        "matchLabels": {"selects": "nothing"}}}}), PROTECTED)
    refused_as(actor, "admin", actor.delete(deny), PROTECTED)
    refused_as(actor, "admin", actor.create(
        ns_path(A_PROD, "networkpolicies", api=NETWORKING_PATH),
        network_policy("tenantry-allow-dns", policyTypes=["Ingress"])), RESERVED)

    for tier in ("viewer", "member"):
        binding = ns_path(A_PROD, "rolebindings", f"tenantry:{tier}", api=RBAC_PATH)
        refused_as(actor, "admin", actor.patch(binding, {"subjects": [
            {"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "mtb-b-owner"}]}),
            PROTECTED)
        refused_as(actor, "admin", actor.delete(binding), PROTECTED)
    refused_as(actor, "admin", actor.create(
        ns_path(A_PROD, "rolebindings", api=RBAC_PATH),
        role_binding("mtb-forged", "tenantry:viewer",
                     labels={"tenantry.dev/tenant": TENANT_A})), RESERVED)
    # Members write Secrets, but not one posing as a Credential's ciphertext.
    refused_as(actor, "member", actor.create(ns_path(A_PROD, "secrets"), {
        "metadata": {"name": "tenantry-credential-forged"}, "type": "tenantry.dev/encrypted",
        "stringData": {"token": "forged"}}), RESERVED)


ESCALATING_ROLES = {
    "everything": [{"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]}],
    "pod-proxy": [{"apiGroups": [""], "resources": ["pods/proxy"], "verbs": ["get", "create"]}],
    "bind": [{"apiGroups": ["rbac.authorization.k8s.io"], "resources": ["roles", "clusterroles"],
              "verbs": ["bind", "escalate"]}],
    "impersonate": [{"apiGroups": [""], "resources": ["serviceaccounts"],
                     "verbs": ["impersonate"]}],
    "quota": [{"apiGroups": [""], "resources": ["resourcequotas"], "verbs": ["update"]}],
}


@benchmark("CPI-6")
def rbac_cannot_be_escalated(actor: Actor) -> None:
    """block_role_privilege_escalation: a Role or RoleBinding grants at most what its author
    holds, so neither admins nor owners reach cluster-admin, the built-in roles, proxies,
    impersonation or quota writes; and an admin cannot make anyone an owner."""
    roles = ns_path(A_PROD, "roles", api=RBAC_PATH)
    bindings = ns_path(A_PROD, "rolebindings", api=RBAC_PATH)
    for name, rules in ESCALATING_ROLES.items():
        refused_as(actor, "admin", actor.create(roles, role(f"mtb-{name}", rules)),
                   "attempting to grant RBAC permissions not currently held")
    for cluster_role in ("cluster-admin", "admin", "edit"):
        refused_as(actor, "admin", actor.create(
            bindings, role_binding(f"mtb-{cluster_role}", cluster_role,
                                   subject=actor.identity.user)),
            "attempting to grant RBAC permissions not currently held")
    owner_binding = actor.create(bindings, role_binding("mtb-new-owner", "tenantry:owner"))
    if actor.at_least("owner"):
        allowed(owner_binding)  # owners may share what they hold
    else:
        refused_as(actor, "admin", owner_binding,
                   "attempting to grant RBAC permissions not currently held")
    # Nor in a namespace of another tenant or of the system, with what they hold at home.
    for namespace in (B_PROD, "kube-system", "tenantry-system"):
        rbac_refused(actor.create(ns_path(namespace, "rolebindings", api=RBAC_PATH),
                                  role_binding("mtb-in", "tenantry:viewer",
                                               subject=actor.identity.user)))


@benchmark("CPI-7")
def nobody_impersonates(actor: Actor) -> None:
    """No tier holds `impersonate`: the user itself (client certificate) asking to act as the
    cluster admin, as system:masters or as a ServiceAccount of its own namespace is refused."""
    attempts = ({"Impersonate-User": "system:admin"},
                {"Impersonate-User": actor.identity.user, "Impersonate-Group": "system:masters"},
                {"Impersonate-User": f"system:serviceaccount:{A_PROD}:default"},
                {"Impersonate-User": "mtb-b-owner"})
    for headers in attempts:
        api = actor.own
        saved = dict(api.default_headers)
        try:
            api.default_headers.update(headers)
            answer = call(api, "GET", ns_path(A_PROD, "pods"))
        finally:
            api.default_headers.clear()
            api.default_headers.update(saved)
        assert answer.status == 403 and "cannot impersonate resource" in answer.message, \
            f"{headers}: {answer}"
    allowed(call(actor.own, "GET", ns_path(A_PROD, "pods")))  # the certificate itself works


OTHER_TENANT_READS = (
    ns_path(B_PROD, "pods"), ns_path(B_PROD, "secrets"), ns_path(B_PROD, "secrets", B_SECRET),
    ns_path(B_PROD, "configmaps"), ns_path(B_PROD, "services"), ns_path(B_PROD, "events"),
    ns_path(B_PROD, "resourcequotas"), ns_path(B_PROD, "serviceaccounts"),
    ns_path(B_PROD, "networkpolicies", api=NETWORKING_PATH),
    ns_path(B_PROD, "rolebindings", api=RBAC_PATH),
    ns_path(B_PROD, "credentials", api="/apis/tenantry.dev/v1alpha1"),
    ns_path(B_PROD, "deployments", api="/apis/apps/v1"),
    f"/api/v1/namespaces/{B_PROD}",
)


@benchmark("TI-1")
def another_tenant_is_unreadable(actor: Actor) -> None:
    """block_other_tenant_resources: nothing in mtb-b's namespace, its Secrets above all."""
    for path in OTHER_TENANT_READS:
        rbac_refused(actor.get(path))


@benchmark("TI-2")
def another_tenant_is_unwritable(actor: Actor) -> None:
    rbac_refused(actor.create(ns_path(B_PROD, "configmaps"), config_map("mtb-a-was-here")))
    rbac_refused(actor.create(ns_path(B_PROD, "pods"), pod("intruder", namespace=B_PROD)))
    rbac_refused(actor.create(ns_path(B_PROD, "rolebindings", api=RBAC_PATH),
                              role_binding("mtb-a-in", "tenantry:owner",
                                           subject=actor.identity.user)))
    rbac_refused(actor.patch(ns_path(B_PROD, "secrets", B_SECRET), {"data": {"password": ""}}))
    rbac_refused(actor.delete(ns_path(B_PROD, "secrets", B_SECRET)))
    rbac_refused(actor.delete(ns_path(B_PROD, "networkpolicies", "tenantry-default-deny",
                                      api=NETWORKING_PATH)))
    rbac_refused(actor.create(ns_path(B_PROD, "pods", "any/eviction"), {
        "apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": "any"}}))
    # Nor from home: an ExternalName alias of mtb-b's Service is refused.
    refused_as(actor, "member", actor.create(ns_path(A_PROD, "services"), {
        "apiVersion": "v1", "kind": "Service", "metadata": {"name": "mtb-alias"},
        "spec": {"type": "ExternalName", "externalName": f"db.{B_PROD}.svc.cluster.local"}}),
        "[serviceExternalName]")


@benchmark("TI-3")
def system_namespaces_are_out_of_reach(actor: Actor) -> None:
    """kube-system, default, tenantry-system and the rest: nothing to read, nothing to write;
    only the operator's public sealing key is readable by anyone signed in (README)."""
    for namespace in SYSTEM_NAMESPACES:
        for plural in ("pods", "secrets", "configmaps", "serviceaccounts", "events"):
            rbac_refused(actor.get(ns_path(namespace, plural)))
        rbac_refused(actor.create(ns_path(namespace, "configmaps"), config_map("mtb-drop")))
        rbac_refused(actor.create(ns_path(namespace, "pods"), pod("mtb", namespace=namespace)))
    allowed(actor.get(ns_path("tenantry-system", "configmaps", "tenantry-sealing-public-key")))
    rbac_refused(actor.get(ns_path("tenantry-system", "secrets", "tenantry-keyring")))
    rbac_refused(actor.get(ns_path("tenantry-system", "secrets", "tenantry-webhook-tls")))
    rbac_refused(actor.get(ns_path("tenantry-system", "leases", "tenantry-operator",
                                   api="/apis/coordination.k8s.io/v1")))


@benchmark("TI-4")
def no_cluster_wide_discovery(actor: Actor) -> None:
    """Other tenants cannot be found by listing across namespaces: every cluster-wide list and
    watch is refused, namespaces included (a member gets its own namespaces by name only)."""
    for path in ("/api/v1/namespaces", "/api/v1/pods", "/api/v1/secrets", "/api/v1/configmaps",
                 "/api/v1/services", "/api/v1/events", "/apis/tenantry.dev/v1alpha1/credentials",
                 f"{RBAC_PATH}/rolebindings", f"{NETWORKING_PATH}/networkpolicies",
                 "/apis/apps/v1/deployments"):
        rbac_refused(actor.get(path))
    rbac_refused(actor.get("/api/v1/namespaces", watch="true"))
    rbac_refused(actor.get("/api/v1/namespaces", labelSelector=f"tenantry.dev/tenant={TENANT_A}"))


@benchmark("TI-5")
def secrets_and_credentials_are_kept_from_viewers(actor: Actor) -> None:
    """In its own tenant a viewer reads no Secret or Credential (list returns the values);
    members and up do; a watch (which streams the values too) likewise."""
    allowed_from(actor, "member", actor.get(ns_path(A_PROD, "secrets"), watch="true",
                                            timeoutSeconds="1"))
    for namespace in (A_PROD, A_DEV):
        allowed_from(actor, "member", actor.get(ns_path(namespace, "secrets")))
        allowed_from(actor, "member", actor.get(
            ns_path(namespace, "credentials", api="/apis/tenantry.dev/v1alpha1")))


def _privileged(spec: dict[str, Any]) -> None:
    context = _container(spec)["securityContext"]
    context.pop("allowPrivilegeEscalation")  # false with privileged is invalid, not refused
    context["privileged"] = True


def _add_capability(name: str, *, drop: bool = True) -> Mutation:
    def mutate(spec: dict[str, Any]) -> None:
        capabilities = _container(spec)["securityContext"]["capabilities"]
        capabilities["add"] = [name]
        if not drop:
            capabilities["drop"] = []
    return mutate


# Bare Pods (Pod Security and the webhook both see them), one check per MTB benchmark. Each
# attack is keyed by what its refusal must name, so a pod refused for another reason (or found
# invalid) fails the check.
POD_ATTACKS: dict[str, tuple[str, dict[str, Mutation]]] = {
    "HI-1": ("block_use_of_host_path / block_use_of_bind_mounts", {"hostPath": _host_path}),
    "HI-2": ("block_use_of_host_networking_and_ports", {
        "hostNetwork": lambda s: s.update(hostNetwork=True),
        "hostPort": lambda s: _container(s).update(
            ports=[{"containerPort": 8080, "hostPort": 8080}])}),
    "HI-3": ("block_use_of_host_pid", {"hostPID": lambda s: s.update(hostPID=True)}),
    "HI-4": ("block_use_of_host_ipc", {"hostIPC": lambda s: s.update(hostIPC=True)}),
    "HI-5": ("block_privileged_containers", {"privileged": _privileged}),
    "HI-6": ("block_add_capabilities", {"NET_ADMIN": _add_capability("NET_ADMIN"),
                                        "SYS_ADMIN": _add_capability("SYS_ADMIN", drop=False)}),
    "HI-7": ("block_privilege_escalation", {
        "allowPrivilegeEscalation": lambda s: _container(s)["securityContext"].update(
            allowPrivilegeEscalation=True)}),
    "HI-8": ("require_run_as_non_root_user", {
        "runAsUser=0": lambda s: s["securityContext"].update(runAsNonRoot=False, runAsUser=0),
        "seccompProfile": lambda s: s["securityContext"].update(
            seccompProfile={"type": "Unconfined"}),
        "kernel.msgmax": lambda s: s["securityContext"].update(
            sysctls=[{"name": "kernel.msgmax", "value": "65536"}])}),
}


def _object_name(text: str) -> str:
    return "mtb-" + re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def _pod_attack(attacks: Mapping[str, Mutation]) -> Check:
    def check(actor: Actor) -> None:
        for named, mutate in attacks.items():
            answer = actor.create(ns_path(A_PROD, "pods"), pod(_object_name(named), mutate))
            refused_as(actor, "member", answer, named)
    return check


def _register_pod_attacks() -> None:
    for check_id, (mtb_name, attacks) in POD_ATTACKS.items():
        check = _pod_attack(attacks)
        check.__doc__ = f"{mtb_name}: refused for bare Pods ({', '.join(attacks)})."
        CHECKS[check_id] = check


_register_pod_attacks()


@benchmark("HI-9")
def pod_templates_are_judged_too(actor: Actor) -> None:
    """The same walls for workloads: a Deployment's template is refused by the webhook (the
    local control plane runs no ReplicaSet controller, so only admission of the template
    stands between the attacker and a host-network pod)."""
    attacks: dict[str, Mutation] = {
        "spec.template.spec.hostNetwork": lambda s: s.update(hostNetwork=True),
        "spec.template.spec.containers[0].securityContext.privileged": _privileged}
    for field, mutate in attacks.items():
        body = deployment(pod("x", mutate), A_PROD, _object_name(field.rsplit(".", 1)[-1]))
        refused_as(actor, "member", actor.create(
            ns_path(A_PROD, "deployments", api="/apis/apps/v1"), body),
            WORKLOADS_DENIED, field)


@benchmark("HI-10")
def no_node_ports_load_balancers_or_external_ips(actor: Actor) -> None:
    """block_use_of_nodeport_services: NodePort and LoadBalancer (quota 0 by default, and the
    webhook's rules) and externalIPs (CVE-2020-8554) are refused; a ClusterIP Service is not."""
    services = ns_path(A_PROD, "services")
    for attack, named in ((service("mtb-np", type="NodePort"), "NodePort"),
                          (service("mtb-np-fixed", type="NodePort",
                                   ports=[{"port": 80, "nodePort": 30080}]), "NodePort"),
                          (service("mtb-lb", type="LoadBalancer"), "LoadBalancer"),
                          (service("mtb-eip", externalIPs=["203.0.113.9"]), "external IPs")):
        refused_as(actor, "member", actor.create(services, attack), named)
    allowed_from(actor, "member", actor.create(services, service("mtb-web")))
    # Nor a load balancer's address claimed through the status (the other half of the CVE).
    rbac_refused(actor.patch(ns_path(A_PROD, "services", "mtb-web/status"), {
        "status": {"loadBalancer": {"ingress": [{"ip": "203.0.113.9"}]}}}))


@benchmark("HI-11")
def no_proxy_through_the_apiserver(actor: Actor) -> None:
    """The apiserver's proxy reaches pods, services and nodes from outside every
    NetworkPolicy (and the kubelet's API from a node): no tier has any of them."""
    for path in (ns_path(A_PROD, "pods", "web/proxy"), ns_path(A_PROD, "pods", "web:80/proxy/"),
                 ns_path(A_PROD, "services", "web/proxy"), "/api/v1/nodes/127.0.0.1/proxy/pods"):
        rbac_refused(actor.get(path))


@benchmark("HI-12")
def no_hand_made_endpoints(actor: Actor) -> None:
    """CVE-2021-25740: whoever writes Endpoints or EndpointSlices can point a Service at any
    address (another tenant's pods, the node, the metadata address); no tier may."""
    rbac_refused(actor.create(ns_path(A_PROD, "endpoints"), {
        "metadata": {"name": "mtb-web"},
        "subsets": [{"addresses": [{"ip": "169.254.169.254"}], "ports": [{"port": 80}]}]}))
    rbac_refused(actor.create(
        ns_path(A_PROD, "endpointslices", api="/apis/discovery.k8s.io/v1"), {
            "metadata": {"name": "mtb-web", "labels": {"kubernetes.io/service-name": "mtb-web"}},
            "addressType": "IPv4", "endpoints": [{"addresses": ["169.254.169.254"]}],
            "ports": [{"port": 80}]}))


def _debug_container(**security: Any) -> dict[str, Any]:
    return {"spec": {"ephemeralContainers": [{
        "name": "debug", "image": "registry.example/debug:1.0", "targetContainerName": "app",
        "securityContext": {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                            "capabilities": {"drop": ["ALL"]}, **security}}]}}


@benchmark("HI-13")
def debug_containers_are_judged_like_pods(actor: Actor) -> None:
    """Owners may attach ephemeral debug containers to running pods, never privileged ones
    (a pod filling mtb-a-dev is the target)."""
    refused_as(actor, "owner", actor.patch(
        ns_path(A_DEV, "pods", "fill-0/ephemeralcontainers"),
        _debug_container(privileged=True, allowPrivilegeEscalation=True)), "privileged")


@benchmark("FNS-1")
def every_namespace_has_quota_and_limits(actor: Actor) -> None:
    """configure_ns_quotas and configure_ns_object_quota: resource and object counts are capped
    in each namespace, and every tier can see its limits."""
    for namespace in (A_PROD, A_DEV):
        quotas = actor.get(ns_path(namespace, "resourcequotas"))
        allowed(quotas)
        hard = {q["metadata"]["name"]: q["spec"]["hard"] for q in quotas.body["items"]}
        assert hard["tenantry-quota"]["pods"] == str(A_POD_QUOTA), hard
        assert hard["tenantry-quota"]["services.nodeports"] == "0", hard
        assert hard["tenantry-quota"]["services.loadbalancers"] == "0", hard
        for resource in ("requests.cpu", "limits.cpu", "requests.memory", "limits.memory",
                         "requests.storage", "secrets", "configmaps", "persistentvolumeclaims",
                         "services"):
            assert resource in hard["tenantry-quota"], (resource, hard)
        limits = actor.get(ns_path(namespace, "limitranges", "tenantry-limits"))
        allowed(limits)
        container = limits.body["spec"]["limits"][0]
        assert container["type"] == "Container" and container["max"]["cpu"] == "4", container


@benchmark("FNS-2")
def containers_without_requests_get_defaults(actor: Actor) -> None:
    answer = actor.create(ns_path(A_PROD, "pods"), pod("mtb-defaults"))
    allowed_from(actor, "member", answer)
    if answer.allowed:
        for container in answer.body["spec"]["containers"]:
            assert container["resources"] == {
                "requests": {"cpu": "100m", "memory": "128Mi"},
                "limits": {"cpu": "500m", "memory": "512Mi"}}, container


@benchmark("FNS-3")
def a_container_above_the_limit_range_is_refused(actor: Actor) -> None:
    refused_as(actor, "member", actor.create(ns_path(A_PROD, "pods"),
                                             pod("mtb-huge", _resources("5"))),
               "maximum cpu usage per Container is 4")


@benchmark("FNS-4")
def the_quota_holds(actor: Actor) -> None:
    """More pods than `quota.pods` (mtb-a-dev is full), more cpu than the namespace's quota in
    one pod, more storage than `quota.storage` in one claim: each is refused by the quota."""
    refused_as(actor, "member", actor.create(ns_path(A_DEV, "pods"),
                                             pod("mtb-one-more", namespace=A_DEV)),
               "exceeded quota", "pods")
    refused_as(actor, "member", actor.create(ns_path(A_PROD, "pods"),
                                             pod("mtb-greedy", _over_cpu_quota)),
               "exceeded quota", "cpu")
    claim = {"apiVersion": "v1", "kind": "PersistentVolumeClaim",
             "metadata": {"name": "mtb-hoard"},
             "spec": {"accessModes": ["ReadWriteOnce"],
                      "resources": {"requests": {"storage": "200Gi"}}}}
    refused_as(actor, "member", actor.create(ns_path(A_PROD, "persistentvolumeclaims"), claim),
               "exceeded quota", "requests.storage")


@benchmark("FNS-5")
def system_priorities_are_refused(actor: Actor) -> None:
    for priority_class in ("system-node-critical", "system-cluster-critical"):
        body = pod("mtb-critical", _priority(priority_class))
        refused_as(actor, "member", actor.create(ns_path(A_PROD, "pods"), body),
                   "[priorityClass]")


@benchmark("PL2-1")
def admins_write_network_policies_that_narrow(actor: Actor) -> None:
    """create_network_policies: admins and owners add policies inside the tenant; a policy that
    would open the tenant is refused whoever writes it."""
    policies = ns_path(A_PROD, "networkpolicies", api=NETWORKING_PATH)
    narrow = network_policy(
        "mtb-web-from-dev",
        ingress=[{"from": [{"podSelector": {}}, {"namespaceSelector": {
            "matchLabels": {"kubernetes.io/metadata.name": A_DEV}}}]}])
    allowed_from(actor, "admin", actor.create(policies, narrow))
    refused_as(actor, "admin", actor.create(policies, network_policy(
        "mtb-open", egress=[{"to": [{"ipBlock": {"cidr": "0.0.0.0/0"}}]}])),
        "[networkPolicyEgress]")
    refused_as(actor, "admin", actor.create(policies, network_policy(
        "mtb-other-tenant", ingress=[{"from": [{"namespaceSelector": {
            "matchLabels": {"tenantry.dev/tenant": TENANT_B}}}]}])), "[networkPolicyIngress]")


@benchmark("PL2-2")
def admins_write_roles_and_bindings_up_to_their_rights(actor: Actor) -> None:
    """create_role_bindings: Roles and RoleBindings of their own for admins and owners, within
    what they hold (the escalation side is CPI-6)."""
    roles = ns_path(A_PROD, "roles", api=RBAC_PATH)
    bindings = ns_path(A_PROD, "rolebindings", api=RBAC_PATH)
    allowed_from(actor, "admin", actor.create(roles, role("mtb-pod-reader", [
        {"apiGroups": [""], "resources": ["pods", "pods/log"], "verbs": ["get", "list"]}])))
    for tier in ("viewer", "member", "admin"):
        allowed_from(actor, "admin", actor.create(
            bindings, role_binding(f"mtb-share-{tier}", f"tenantry:{tier}")))
    allowed_from(actor, "admin", actor.get(bindings))


@benchmark("PL2-3")
def members_manage_service_accounts(actor: Actor) -> None:
    """ServiceAccounts from member up; short-lived tokens for them from admin up."""
    accounts = ns_path(A_PROD, "serviceaccounts")
    allowed_from(actor, "member", actor.create(accounts, {"metadata": {"name": "mtb-robot"}}))
    allowed_from(actor, "admin", actor.create(ns_path(A_PROD, "serviceaccounts", "default/token"), {
        "apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
        "spec": {"expirationSeconds": 600}}))
    refused_as(actor, "member", actor.create(ns_path(A_PROD, "secrets"), {
        "metadata": {"name": "mtb-forever",
                     "annotations": {"kubernetes.io/service-account.name": "default"}},
        "type": "kubernetes.io/service-account-token"}), "[serviceAccountTokenSecret]")


@benchmark("PL2-4")
def members_ship_hardened_workloads(actor: Actor) -> None:
    """What a developer needs, for members and up, in both namespaces; viewers write nothing."""
    for namespace in (A_PROD, A_DEV):
        if namespace == A_PROD:  # mtb-a-dev is at its pod quota (FNS-4)
            allowed_from(actor, "member", actor.create(ns_path(namespace, "pods"),
                                                       pod("mtb-app")))
        allowed_from(actor, "member", actor.create(
            ns_path(namespace, "deployments", api="/apis/apps/v1"),
            deployment(pod("x"), namespace, "mtb-app")))
        allowed_from(actor, "member", actor.create(ns_path(namespace, "configmaps"),
                                                   config_map("mtb-settings")))
        allowed_from(actor, "member", actor.create(ns_path(namespace, "secrets"), {
            "metadata": {"name": "mtb-api-key"}, "stringData": {"key": "not-a-real-key"}}))
        allowed_from(actor, "member", actor.create(ns_path(namespace, "services"),
                                                   service("mtb-app")))


@benchmark("PL2-5")
def every_tier_reads_its_namespaces(actor: Actor) -> None:
    for namespace in (A_PROD, A_DEV):
        for path in (ns_path(namespace, "pods"), ns_path(namespace, "services"),
                     ns_path(namespace, "configmaps"), ns_path(namespace, "events"),
                     ns_path(namespace, "resourcequotas"), ns_path(namespace, "limitranges"),
                     ns_path(namespace, "serviceaccounts"),
                     ns_path(namespace, "deployments", api="/apis/apps/v1"),
                     ns_path(namespace, "networkpolicies", api=NETWORKING_PATH)):
            allowed(actor.get(path))


@benchmark("PL2-6")
def bulk_deletion_and_debugging_are_for_owners(actor: Actor) -> None:
    allowed_from(actor, "owner", actor.delete(ns_path(A_PROD, "configmaps"),
                                              labelSelector="mtb=nothing-has-this"))
    allowed_from(actor, "owner", actor.patch(
        ns_path(A_DEV, "pods", "fill-0/ephemeralcontainers"), _debug_container()))


@pytest.mark.parametrize(("check_id", "who"), [
    pytest.param(check_id, who, id=f"{check_id}[{who}]")
    for check_id in CHECKS for who in IDENTITIES])
def test_benchmark(actors: dict[str, Actor], check_id: str, who: str) -> None:
    CHECKS[check_id](actors[who])


# -- the tenants and the identities --------------------------------------------------------------

@pytest.fixture(scope="module")
def mtb(admin_api: client.ApiClient, operator: OperatorProcess,
        webhook: WebhookProcess) -> Iterator[None]:
    """Tenants mtb-a (two namespaces, every tier, a group, a pod quota of 3 with mtb-a-dev
    full) and mtb-b (one namespace with a Secret in it)."""
    a_members = [{"kind": "User", "name": i.user, "role": i.tier}
                 for i in IDENTITIES.values() if i.group is None]
    a_members.append({"kind": "Group", "name": A_GROUP, "role": "member"})
    b_members = [{"kind": "User", "name": "mtb-b-owner", "role": "owner"},
                 {"kind": "Group", "name": B_GROUP, "role": "admin"}]
    core = client.CoreV1Api(admin_api)
    with session_tenant(admin_api, TENANT_B, [B_PROD], members=b_members), \
            session_tenant(admin_api, TENANT_A, [A_PROD, A_DEV], members=a_members,
                           quota={"pods": A_POD_QUOTA}):
        # Quota admission refuses everything until the controller has filled in the status.
        for namespace in (A_PROD, A_DEV, B_PROD):
            quota = ns_path(namespace, "resourcequotas", "tenantry-quota")

            def counted(path: str = quota) -> bool:
                hard = call(admin_api, "GET", path).body.get("status", {}).get("hard", {})
                return "pods" in hard

            eventually(counted, timeout=30, what=f"the quota status of {namespace}")
        for index in range(A_POD_QUOTA):
            allowed(call(admin_api, "POST", ns_path(A_DEV, "pods"),
                         pod(f"fill-{index}", namespace=A_DEV)))
        core.create_namespaced_secret(B_PROD, client.V1Secret(
            metadata=client.V1ObjectMeta(name=B_SECRET), string_data={"password": "b-only"}))
        yield


def impersonating(control_plane: LocalControlPlane, user: str,
                  group: str | None) -> client.ApiClient:
    """The cluster admin acting as `user` (`kubectl --as USER --as-group GROUP`).

    One group header: the apiserver adds system:authenticated to an impersonated user itself;
    an identity without a group of its own names that one.
    """
    api = kube.api_client(control_plane.admin_kubeconfig)
    api.set_default_header("Impersonate-User", user)
    api.set_default_header("Impersonate-Group", group or "system:authenticated")
    return api


@pytest.fixture(scope="module")
def actors(mtb: None, control_plane: LocalControlPlane) -> Iterator[dict[str, Actor]]:
    """mtb-a's identities, each impersonated by the admin and authenticated as itself; ready
    once RBAC lets every one of them into both namespaces."""
    opened: list[client.ApiClient] = []

    def open_api(kubeconfig: Any) -> client.ApiClient:
        api = kube.api_client(kubeconfig)
        opened.append(api)
        return api

    result: dict[str, Actor] = {}
    for name, identity in IDENTITIES.items():
        impersonated = impersonating(control_plane, identity.user, identity.group)
        opened.append(impersonated)
        groups = [identity.group] if identity.group else []
        own = open_api(control_plane.kubeconfig_for(identity.user, groups))
        result[name] = Actor(name, identity, impersonated, own)
    try:
        for actor in result.values():
            seen = call(actor.api, "POST", "/apis/authentication.k8s.io/v1/selfsubjectreviews",
                        {"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"})
            user_info = seen.body["status"]["userInfo"]
            assert user_info["username"] == actor.identity.user, seen
            assert "system:authenticated" in user_info["groups"], seen
            assert actor.identity.group is None or actor.identity.group in user_info["groups"]
            for namespace in (A_PROD, A_DEV):
                def let_in(a: Actor = actor, path: str = ns_path(namespace, "pods")) -> bool:
                    return a.get(path).allowed

                eventually(let_in, timeout=30, what=f"{actor.name}'s access to {namespace}")
        yield result
    finally:
        for api in opened:
            with contextlib.suppress(Exception):
                api.close()


def test_the_other_tenant_is_walled_off_the_same_way(mtb: None,
                                                     control_plane: LocalControlPlane) -> None:
    """mtb-b's admins (through their group) are at home in mtb-b and strangers in mtb-a; and
    mtb-b's namespace is fenced like mtb-a's."""
    api = impersonating(control_plane, "mtb-b-admin-1", B_GROUP)
    try:
        eventually(lambda: call(api, "GET", ns_path(B_PROD, "pods")).allowed, timeout=30,
                   what="mtb-b's admin access to its namespace")
        allowed(call(api, "GET", ns_path(B_PROD, "resourcequotas", "tenantry-quota")))
        allowed(call(api, "GET", ns_path(B_PROD, "limitranges", "tenantry-limits")))
        allowed(call(api, "GET", ns_path(B_PROD, "networkpolicies", "tenantry-default-deny",
                                         api=NETWORKING_PATH)))
        for namespace in (A_PROD, A_DEV):
            rbac_refused(call(api, "GET", ns_path(namespace, "pods")))
            rbac_refused(call(api, "GET", ns_path(namespace, "secrets")))
            rbac_refused(call(api, "POST", ns_path(namespace, "configmaps"),
                              config_map("mtb-b-was-here"), dry_run=True))
        rbac_refused(call(api, "GET", f"{TENANTS_PATH}/{TENANT_A}"))
        allowed(call(api, "GET", f"{TENANTS_PATH}/{TENANT_B}"))
    finally:
        api.close()
