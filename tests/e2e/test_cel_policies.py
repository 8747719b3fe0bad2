"""The CEL twins in policies/, on the real kube-apiserver, give the Python rules' verdict.

The policy and its bindings are applied as shipped (the files `kubectl apply -k policies/` would
apply). Then every object goes through a dry-run create twice:

- in a namespace labelled `tenantry.dev/tenant`: the CEL verdict, and the violations its message
  lists (path and rule id of each);
- in an unlabelled namespace, which the policy leaves alone: the object as the apiserver holds it
  at admission (defaulted, and mutated by the ServiceAccount plugin), which the Python rules then
  judge.

A CEL denial must equal `rules.check_object(obj)` being non-empty, for the object as written; the
violations the CEL message lists must be exactly the Python rules' on the object as admitted (the
apiserver may add what the rules then see, e.g. a hostPort defaulted from containerPort under
hostNetwork, or the AppArmor field it derives from the annotation; the verdict never changes).

The objects: Pod Security Admission's own fixture pods at v1.35 (both levels, pass and fail), each
also with `readOnlyRootFilesystem: true` added where unset (so that the PSA checks, not Tenantry's
extra rule, decide), as a Pod, in a Deployment and in a CronJob; and hand-written cases for what
the fixtures do not reach (writable mounts, user namespaces, ephemeral containers, every
pod-template kind, a very large pod, updates, modes and the namespaces never judged).

The webhook's own e2e test shows webhook verdict == Python rules; this one shows CEL verdict ==
Python rules; together, webhook == CEL.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import json
import os
import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client

from tenantry import kube
from tenantry.admission import cel, podspecs, rules
from tenantry.admission.violation import Violation
from tenantry.model import common
from tests.helpers import eventually
from tests.unit.admission.admission_helpers import (
    PsaCase,
    fixtures_root,
    hardened_container,
    hardened_pod,
    psa_cases,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
POLICIES = REPO_ROOT / "policies"

Obj = dict[str, Any]

DENIED_BY = (f"ValidatingAdmissionPolicy '{cel.POLICY_NAME}' with binding "
             f"'{cel.binding_name('Deny')}' denied request: {cel.MESSAGE_PREFIX}")
ENTRY = re.compile(r"^(?P<path>\S+): (?P<required>.+) \[(?P<rule>\w+)\]$")
MORE = re.compile(r"^and (?P<count>\d+) more$")


# -- talking to the apiserver --------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Outcome:
    """What the apiserver answered to a request."""

    status: int
    body: Obj
    warnings: tuple[str, ...]

    @property
    def allowed(self) -> bool:
        return self.status < 300

    @property
    def message(self) -> str:
        return str(self.body.get("message", ""))


def _request(api: client.ApiClient, method: str, path: str, body: Obj | None = None, *,
             dry_run: bool = False,
             content_type: str = "application/json") -> Outcome:
    """A raw request: the typed client would validate (and refuse) some fixture pods itself."""
    query = [("dryRun", "All")] if dry_run else []
    serialized = api.param_serialize(
        method, path, query_params=query, body=body, auth_settings=["BearerToken"],
        header_params={"Content-Type": content_type, "Accept": "application/json"})
    method_, url, headers, payload, post_params = serialized
    response = api.call_api(method_, url, header_params=headers, body=payload,
                            post_params=post_params)
    response.read()
    warnings = tuple(response.getheaders().getlist("Warning"))
    return Outcome(response.status, json.loads(response.data or b"{}"), warnings)


def _collection(obj: Obj, namespace: str) -> str:
    group = podspecs.api_group(obj["apiVersion"])
    plural = cel.RESOURCES[(group, obj["kind"])]
    root = "/api/v1" if not group else f"/apis/{obj['apiVersion']}"
    return f"{root}/namespaces/{namespace}/{plural}"


def dry_run_create(api: client.ApiClient, obj: Obj, namespace: str) -> Outcome:
    body = copy.deepcopy(obj)
    body["metadata"]["namespace"] = namespace
    return _request(api, "POST", _collection(body, namespace), body, dry_run=True)


def _create_namespace(api: client.ApiClient, labels: dict[str, str]) -> str:
    core = client.CoreV1Api(api)
    name = f"cel-{uuid.uuid4().hex[:8]}"
    core.create_namespace(client.V1Namespace(
        metadata=client.V1ObjectMeta(name=name, labels=labels)))
    # Pod admission needs the namespace's default ServiceAccount (made by the controller manager).
    eventually(lambda: core.read_namespaced_service_account("default", name),
               what=f"the default ServiceAccount of {name}")
    return name


def _delete_namespace(api: client.ApiClient, name: str) -> None:
    with contextlib.suppress(client.ApiException):
        client.CoreV1Api(api).delete_namespace(name)


@contextlib.contextmanager
def namespace_with(api: client.ApiClient, labels: dict[str, str]) -> Iterator[str]:
    name = _create_namespace(api, labels)
    try:
        yield name
    finally:
        _delete_namespace(api, name)


# -- objects ---------------------------------------------------------------------------------------

def as_pod(pod: Obj) -> Obj:
    """A fixture pod made acceptable as an object name (PSA's file names have underscores)."""
    pod = copy.deepcopy(pod)
    pod.setdefault("metadata", {})["name"] = pod["metadata"]["name"].replace("_", "-").lower()
    return pod


def workload(pod: Obj, kind: str) -> Obj:
    """`pod` as the template of a valid `kind` object (selectors, labels, restart policy)."""
    labels = {"app": "cel"}
    metadata = pod.get("metadata", {})
    template_metadata: Obj = {"labels": {**metadata.get("labels", {}), **labels}}
    if metadata.get("annotations"):
        template_metadata["annotations"] = copy.deepcopy(metadata["annotations"])
    spec = copy.deepcopy(pod["spec"])
    if kind in ("Job", "CronJob"):
        spec["restartPolicy"] = "Never"
    template = {"metadata": template_metadata, "spec": spec}
    api_version = {"Deployment": "apps/v1", "StatefulSet": "apps/v1", "DaemonSet": "apps/v1",
                   "ReplicaSet": "apps/v1", "Job": "batch/v1", "CronJob": "batch/v1",
                   "ReplicationController": "v1", "PodTemplate": "v1"}[kind]
    obj: Obj = {"apiVersion": api_version, "kind": kind,
                "metadata": {"name": metadata["name"]}}
    if kind == "PodTemplate":
        obj["template"] = template
    elif kind == "CronJob":
        obj["spec"] = {"schedule": "0 * * * *", "jobTemplate": {"spec": {"template": template}}}
    elif kind == "Job":
        obj["spec"] = {"template": template}
    elif kind == "ReplicationController":
        obj["spec"] = {"selector": labels, "template": template}
    else:
        obj["spec"] = {"selector": {"matchLabels": labels}, "template": template}
        if kind == "StatefulSet":
            obj["spec"]["serviceName"] = "cel"
    return obj


def read_only_root(pod: Obj) -> Obj:
    """`pod` with readOnlyRootFilesystem: true on every container that leaves it unset (not on
    Windows pods, where the apiserver refuses the field)."""
    pod = copy.deepcopy(pod)
    spec = pod["spec"]
    if (spec.get("os") or {}).get("name") == "windows":
        return pod
    for list_name in podspecs.CONTAINER_LISTS:
        for container in spec.get(list_name) or []:
            if not isinstance(container.get("securityContext"), dict):
                container["securityContext"] = {}
            container["securityContext"].setdefault("readOnlyRootFilesystem", True)
    return pod


# -- comparing verdicts ----------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class CelVerdict:
    """The CEL policy's verdict on one object, read from the apiserver's answer."""

    allowed: bool
    listed: tuple[tuple[str, str], ...]
    """(field path, rule id) of each violation the message lists, in its order."""
    unlisted: int
    """Violations the message only counts ("and N more"), when all did not fit."""


def cel_verdict(outcome: Outcome) -> CelVerdict:
    if outcome.allowed:
        return CelVerdict(True, (), 0)
    assert outcome.status == 403, outcome.body
    message = outcome.message
    assert DENIED_BY in message, message
    listed, unlisted = [], 0
    for part in message.split(DENIED_BY, 1)[1].split("; "):
        if more := MORE.match(part):
            unlisted = int(more["count"])
            continue
        entry = ENTRY.match(part)
        assert entry, f"unparsable entry {part!r} in {message}"
        listed.append((entry["path"], entry["rule"]))
    return CelVerdict(False, tuple(listed), unlisted)


def _pairs(violations: list[Violation]) -> list[tuple[str, str]]:
    return [(v.field_path, v.rule_id) for v in violations]


@dataclasses.dataclass
class Comparison:
    """Python rules and CEL policy on one object."""

    name: str
    python: list[Violation]
    """The rules on the object as written."""
    admitted: list[Violation] | None
    """The rules on the object as the apiserver admits it; None if the apiserver's own
    validation refuses the object (admission never sees it)."""
    cel: CelVerdict
    refusal: str = ""
    """Why the apiserver's validation refused the object, if it did."""

    def problems(self) -> list[str]:
        found = []
        if self.cel.allowed != (not self.python):
            found.append(f"{self.name}: CEL {'allowed' if self.cel.allowed else 'denied'}, "
                         f"Python rules: {[str(v) for v in self.python] or 'allowed'}")
        if self.admitted is None:
            return found
        if bool(self.admitted) != bool(self.python):
            found.append(f"{self.name}: admission changed the Python verdict: {self.admitted}")
        expected = set(_pairs(self.admitted))
        listed = set(self.cel.listed)
        complete = not self.cel.unlisted and listed == expected
        truncated = (self.cel.unlisted and listed <= expected
                     and len(self.cel.listed) + self.cel.unlisted == len(self.admitted))
        if not (complete or truncated):
            found.append(f"{self.name}: CEL lists {sorted(listed - expected)} that Python does "
                         f"not, misses {sorted(expected - listed)} (+{self.cel.unlisted} more)")
        return found


def compare(api: client.ApiClient, obj: Obj, *, tenant_ns: str, plain_ns: str,
            name: str) -> Comparison:
    python = rules.check_object(obj)
    plain = dry_run_create(api, obj, plain_ns)
    tenant = dry_run_create(api, obj, tenant_ns)
    if not plain.allowed:
        # Refused by the apiserver's validation, before any admission: the same in both.
        assert plain.status == 422 and cel.POLICY_NAME not in plain.message, plain.body
        assert tenant.status == 422 and cel.POLICY_NAME not in tenant.message, tenant.body
        return Comparison(name, python, None, CelVerdict(False, (), 0), plain.message)
    assert not any(cel.POLICY_NAME in warning for warning in plain.warnings), plain.warnings
    return Comparison(name, python, rules.check_object(plain.body), cel_verdict(tenant))


# -- fixtures --------------------------------------------------------------------------------------

def _policy_documents() -> list[Obj]:
    kustomization = yaml.safe_load((POLICIES / "kustomization.yaml").read_text())
    return kube.load_manifests([POLICIES / name for name in kustomization["resources"]])


def _bad_pod() -> Obj:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "bad"},
            "spec": {"containers": [{"name": "app", "image": "registry.example/app:1.0"}]}}


@pytest.fixture(scope="module")
def plain_ns(admin_api: client.ApiClient) -> Iterator[str]:
    """A namespace with no tenant label: the policy never judges it."""
    name = _create_namespace(admin_api, {})
    yield name
    _delete_namespace(admin_api, name)


@pytest.fixture(scope="module")
def tenant_ns(admin_api: client.ApiClient) -> Iterator[str]:
    """A tenant namespace (the operator's tenant label, no mode label: Deny)."""
    name = _create_namespace(admin_api, {common.TENANT_LABEL: "cel"})
    yield name
    _delete_namespace(admin_api, name)


@pytest.fixture(scope="module")
def policies(admin_api: client.ApiClient, tenant_ns: str, crds: None) -> Iterator[list[Obj]]:
    """policies/ applied as shipped (the isolation policy takes Tenants as parameters, so the
    CRDs come first, as `kubectl apply -k manifests/` installs them), and enforcing; removed
    after the module."""
    documents = _policy_documents()
    kube.apply(admin_api, documents)
    admission = client.AdmissionregistrationV1Api(admin_api)
    try:
        # The apiserver's policy informer takes a moment to see new policies and bindings.
        eventually(lambda: dry_run_create(admin_api, _bad_pod(), tenant_ns).status == 403,
                   what="the CEL policy to deny in a tenant namespace")
        yield documents
    finally:
        for document in documents:
            name = document["metadata"]["name"]
            with contextlib.suppress(client.ApiException):
                if document["kind"] == "ValidatingAdmissionPolicyBinding":
                    admission.delete_validating_admission_policy_binding(name)
                else:
                    admission.delete_validating_admission_policy(name)


REQUIRED = os.environ.get("TENANTRY_REQUIRE_FIXTURES") == "1"


def _fixture_params() -> list[Any]:
    cases = psa_cases()
    if cases:
        return [pytest.param(case, id=str(case)) for case in cases]
    _, reason = fixtures_root()
    if REQUIRED:
        raise pytest.UsageError(f"TENANTRY_REQUIRE_FIXTURES=1 but: {reason or 'no fixtures'}")
    return [pytest.param(None, marks=pytest.mark.skip(reason=reason or "no fixture pods"))]


FIXTURE_KINDS = ("Pod", "Deployment", "CronJob")


def _wrapped(pod: Obj, kind: str) -> Obj:
    return pod if kind == "Pod" else workload(pod, kind)


# -- Pod Security Admission's fixture pods ---------------------------------------------------------

@pytest.mark.parametrize("case", _fixture_params())
def test_fixture_pod_gets_the_python_verdict(admin_api: client.ApiClient, policies: list[Obj],
                                             tenant_ns: str, plain_ns: str,
                                             case: PsaCase) -> None:
    """As written and with a read-only root filesystem added; as a Pod, Deployment, CronJob."""
    problems = []
    refused_by_validation = []
    for variant, pod in (("as written", as_pod(case.pod)),
                         ("read-only root", read_only_root(as_pod(case.pod)))):
        for kind in FIXTURE_KINDS:
            comparison = compare(admin_api, _wrapped(pod, kind), tenant_ns=tenant_ns,
                                 plain_ns=plain_ns, name=f"{case} {variant} as {kind}")
            problems += comparison.problems()
            if comparison.admitted is None:
                refused_by_validation.append(comparison.name)
    assert problems == []
    if refused_by_validation:
        # At v1.35 the apiserver refuses procMount: Unmasked unless hostUsers is false; PSA's
        # procMount fail fixtures predate that. The rules refuse them too (checked above).
        assert case.check.startswith("procmount") and case.verdict == "fail", \
            refused_by_validation


# -- hand-written cases ----------------------------------------------------------------------------

def pod(*containers: Obj, volumes: list[Obj] | None = None, name: str = "hand",
        init: list[Obj] | None = None, **spec: Any) -> Obj:
    """A hardened pod (pod-level runAsNonRoot and seccomp), with `spec` overrides."""
    body: Obj = {
        "securityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
        "containers": list(containers) or [hardened_container("app")],
    }
    if init:
        body["initContainers"] = init
    if volumes is not None:
        body["volumes"] = volumes
    body.update(spec)
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": body}


def container(name: str = "app", mounts: list[Obj] | None = None, **security: Any) -> Obj:
    """A hardened container, with securityContext overrides (None removes a field)."""
    made = hardened_container(name)
    for key, value in security.items():
        if value is None:
            made["securityContext"].pop(key, None)
        else:
            made["securityContext"][key] = value
    if mounts:
        made["volumeMounts"] = mounts
    return made


def mount(volume: str, path: str = "/data", **extra: Any) -> Obj:
    return {"name": volume, "mountPath": path, **extra}


CSI = {"driver": "csi.example.com"}
PVC_TEMPLATE = {"volumeClaimTemplate": {"spec": {
    "accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}}

# name -> (pod, the rule ids Python reports on it, in order; () = allowed)
HAND_WRITTEN: dict[str, tuple[Obj, tuple[str, ...]]] = {
    "hardened": (pod(), ()),
    "read-only root unset on the second container": (
        pod(container("a"), container("b", readOnlyRootFilesystem=None)),
        ("readOnlyRootFilesystem",)),
    "read-only root false on an init container": (
        pod(init=[container("init", readOnlyRootFilesystem=False)]),
        ("readOnlyRootFilesystem",)),
    "writable emptyDir, PVC and ephemeral mounts": (
        pod(container(mounts=[mount("scratch", "/tmp"), mount("data", "/data"),
                              mount("eph", "/eph")]),
            volumes=[{"name": "scratch", "emptyDir": {}},
                     {"name": "data", "persistentVolumeClaim": {"claimName": "data"}},
                     {"name": "eph", "ephemeral": PVC_TEMPLATE}]), ()),
    "configMap, secret, projected, downwardAPI mounts need no readOnly": (
        pod(container(mounts=[mount("cm", "/cm"), mount("s", "/s"), mount("p", "/p"),
                              mount("d", "/d")]),
            volumes=[{"name": "cm", "configMap": {"name": "cm"}},
                     {"name": "s", "secret": {"secretName": "s"}},
                     {"name": "p", "projected": {"sources": [{"configMap": {"name": "cm"}}]}},
                     {"name": "d", "downwardAPI": {"items": [
                         {"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}}]}}]),
        ()),
    "volume without a source is an emptyDir": (
        pod(container(mounts=[mount("plain")]), volumes=[{"name": "plain"}]), ()),
    "writable csi mount": (
        pod(container(mounts=[mount("csi")]), volumes=[{"name": "csi", "csi": CSI}]),
        ("writableMounts",)),
    "read-only csi mount": (
        pod(container(mounts=[mount("csi", readOnly=True)]),
            volumes=[{"name": "csi", "csi": CSI}]), ()),
    "csi volume read-only at the source": (
        pod(container(mounts=[mount("csi")]),
            volumes=[{"name": "csi", "csi": {**CSI, "readOnly": True}}]), ()),
    "writable hostPath mount": (
        pod(container(mounts=[mount("host")]),
            volumes=[{"name": "host", "hostPath": {"path": "/var"}}]),
        ("restrictedVolumes", "writableMounts")),
    "read-only nfs mount": (
        pod(container(mounts=[mount("nfs", readOnly=True)]),
            volumes=[{"name": "nfs", "nfs": {"server": "nfs.example", "path": "/"}}]),
        ("restrictedVolumes",)),
    "second mount writable on csi, of the second container": (
        pod(container("a"), container("b", mounts=[mount("tmp", "/tmp"), mount("csi")]),
            volumes=[{"name": "tmp", "emptyDir": {}}, {"name": "csi", "csi": CSI}]),
        ("writableMounts",)),
    "user namespace relieves runAsNonRoot and runAsUser": (
        pod(hostUsers=False, securityContext={"runAsUser": 0,
                                              "seccompProfile": {"type": "RuntimeDefault"}}),
        ()),
    "unmasked /proc in a user namespace": (
        pod(container(procMount="Unmasked"), hostUsers=False), ("procMountRestricted",)),
    "runAsUser 0 on the pod": (
        pod(securityContext={"runAsNonRoot": True, "runAsUser": 0,
                             "seccompProfile": {"type": "RuntimeDefault"}}), ("runAsUser",)),
    "runAsNonRoot false on the pod, true on the container": (
        pod(container(runAsNonRoot=True),
            securityContext={"runAsNonRoot": False,
                             "seccompProfile": {"type": "RuntimeDefault"}}), ("runAsNonRoot",)),
    "seccomp on every container instead of the pod": (
        pod(container("a", seccompProfile={"type": "RuntimeDefault"}),
            container("b", seccompProfile={"type": "Localhost", "localhostProfile": "p.json"}),
            securityContext={"runAsNonRoot": True}), ()),
    "seccomp missing on one container": (
        pod(container("a", seccompProfile={"type": "RuntimeDefault"}), container("b"),
            securityContext={"runAsNonRoot": True}), ("seccompProfileRestricted",)),
    "NET_BIND_SERVICE may be added": (
        pod(container(capabilities={"drop": ["ALL"], "add": ["NET_BIND_SERVICE"]})), ()),
    "SYS_ADMIN may not": (
        pod(container(capabilities={"drop": ["ALL"], "add": ["NET_BIND_SERVICE", "SYS_ADMIN"]})),
        ("capabilitiesRestricted",)),
    "safe sysctl": (
        pod(securityContext={"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"},
                             "sysctls": [{"name": "net.ipv4.tcp_syncookies", "value": "1"}]}),
        ()),
    "unsafe sysctl": (
        pod(securityContext={"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"},
                             "sysctls": [{"name": "net.ipv4.tcp_syncookies", "value": "1"},
                                         {"name": "kernel.msgmax", "value": "1"}]}),
        ("sysctls",)),
    "AppArmor Localhost on the pod": (
        pod(securityContext={"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"},
                             "appArmorProfile": {"type": "Localhost",
                                                 "localhostProfile": "k8s-apparmor"}}), ()),
    "AppArmor unconfined on a container": (
        pod(container(appArmorProfile={"type": "Unconfined"})), ("appArmorProfile",)),
    "SELinux container_t allowed, spc_t not": (
        pod(container("a", seLinuxOptions={"type": "container_t"}),
            container("b", seLinuxOptions={"type": "spc_t"})), ("seLinuxOptions",)),
    "hostPort": (
        pod({**container(), "ports": [{"containerPort": 8080, "hostPort": 8080}]}),
        ("hostPorts",)),
    "probe to another host": (
        pod({**container(), "readinessProbe": {
            "httpGet": {"host": "example.com", "port": 80, "path": "/"}}}),
        ("hostProbesAndHostLifecycle",)),
    "privileged and escalating": (
        pod(container(privileged=True, allowPrivilegeEscalation=True)),
        ("privileged", "allowPrivilegeEscalation")),
    "nothing hardened, two containers": (
        pod({"name": "a", "image": "registry.example/a:1"},
            {"name": "b", "image": "registry.example/b:1"}, securityContext={}),
        ("allowPrivilegeEscalation", "allowPrivilegeEscalation", "capabilitiesRestricted",
         "capabilitiesRestricted", "runAsNonRoot", "runAsNonRoot", "seccompProfileRestricted",
         "seccompProfileRestricted", "readOnlyRootFilesystem", "readOnlyRootFilesystem")),
}


@pytest.mark.parametrize("name", list(HAND_WRITTEN))
@pytest.mark.parametrize("kind", FIXTURE_KINDS)
def test_hand_written_pod_gets_the_python_verdict(admin_api: client.ApiClient,
                                                  policies: list[Obj], tenant_ns: str,
                                                  plain_ns: str, kind: str, name: str) -> None:
    """The verdict, every violation, and the first one named first (the one a developer reads)."""
    body, expected_rules = HAND_WRITTEN[name]
    obj = _wrapped(body, kind)
    python = rules.check_object(obj)
    assert tuple(v.rule_id for v in python) == expected_rules  # the case tests what it says
    comparison = compare(admin_api, obj, tenant_ns=tenant_ns, plain_ns=plain_ns, name=name)
    assert comparison.admitted is not None, comparison.refusal
    assert comparison.problems() == []
    if python:
        # The first violation a developer reads is the one the Python rules report first.
        assert comparison.cel.listed[0] == _pairs(python)[0] == _pairs(comparison.admitted)[0]
        prefix = podspecs.find_pod(obj).prefix  # type: ignore[union-attr]
        assert all(path.startswith(prefix) for path, _ in comparison.cel.listed)


def test_the_message_names_the_path_and_what_is_required(
        admin_api: client.ApiClient, policies: list[Obj], tenant_ns: str) -> None:
    obj = workload(pod(container("a"), container("b", readOnlyRootFilesystem=None)),
                   "Deployment")
    outcome = dry_run_create(admin_api, obj, tenant_ns)
    assert outcome.status == 403
    assert outcome.message.endswith(
        "denied request: violates Tenantry's hardening rules: "
        "spec.template.spec.containers[1].securityContext.readOnlyRootFilesystem: must be true "
        "(write to emptyDir, ephemeral or persistentVolumeClaim volume mounts instead) "
        "[readOnlyRootFilesystem]")


@pytest.mark.parametrize("kind", sorted(kind for _, kind in podspecs.POD_PATHS))
def test_every_pod_bearing_kind(admin_api: client.ApiClient, policies: list[Obj],
                                tenant_ns: str, plain_ns: str, kind: str) -> None:
    """Hardened: admitted. Not: denied, with the paths of that kind's template."""
    privileged = pod(container(privileged=True, allowPrivilegeEscalation=True), name="privileged")
    for body in (pod(name="hardened"), privileged,
                 HAND_WRITTEN["nothing hardened, two containers"][0]):
        obj = _wrapped(body, kind)
        comparison = compare(admin_api, obj, tenant_ns=tenant_ns, plain_ns=plain_ns,
                             name=f"{body['metadata']['name']} as {kind}")
        assert comparison.admitted is not None, comparison.refusal
        assert comparison.problems() == []


def test_a_very_large_pod_stays_within_the_cel_budget(
        admin_api: client.ApiClient, policies: list[Obj], tenant_ns: str,
        plain_ns: str) -> None:
    """60 containers with 10 mounts and 5 ports each: admitted when hardened, and refused
    (not failed) when not, the message listing the first violations and counting the rest."""
    volumes = [{"name": f"v{n}", "emptyDir": {}} for n in range(10)]
    many = [
        {**container(f"c{n}", mounts=[mount(f"v{m}", f"/v{m}") for m in range(10)]),
         "ports": [{"containerPort": 8000 + p} for p in range(5)]}
        for n in range(60)
    ]
    hardened = pod(*many, volumes=volumes, name="large")
    outcome = dry_run_create(admin_api, hardened, tenant_ns)
    assert outcome.allowed, outcome.body
    unhardened = copy.deepcopy(hardened)
    for each in unhardened["spec"]["containers"]:
        each["securityContext"] = {}
    comparison = compare(admin_api, unhardened, tenant_ns=tenant_ns, plain_ns=plain_ns,
                         name="large, not hardened")
    assert comparison.problems() == []
    assert comparison.cel.unlisted > 0 and len(comparison.cel.listed) == cel.MESSAGE_ITEMS


def test_ephemeral_containers_count(admin_api: client.ApiClient, policies: list[Obj],
                                    tenant_ns: str) -> None:
    """Added to a stored pod through pods/ephemeralcontainers: judged like any container."""
    name = f"debug-{uuid.uuid4().hex[:6]}"
    body = pod(name=name)
    created = _request(admin_api, "POST", f"/api/v1/namespaces/{tenant_ns}/pods",
                       {**body, "metadata": {"name": name, "namespace": tenant_ns}})
    assert created.allowed, created.body
    path = f"/api/v1/namespaces/{tenant_ns}/pods/{name}/ephemeralcontainers"
    debug = {"name": "debug", "image": "registry.example/debug:1"}
    patch = {"spec": {"ephemeralContainers": [debug]}}
    refused = _request(admin_api, "PATCH", path, patch,
                       content_type="application/strategic-merge-patch+json")
    assert refused.status == 403, refused.body
    with_debug = copy.deepcopy(created.body)
    with_debug["spec"]["ephemeralContainers"] = [debug]
    python = rules.check_object(with_debug)
    assert python and all(v.field_path.startswith("spec.ephemeralContainers[0].")
                          for v in python)
    assert {p for p, _ in cel_verdict(refused).listed} == {v.field_path for v in python}

    hardened_debug = {**hardened_container("debug"), "image": "registry.example/debug:1"}
    allowed = _request(admin_api, "PATCH", path,
                       {"spec": {"ephemeralContainers": [hardened_debug]}},
                       content_type="application/strategic-merge-patch+json")
    assert allowed.allowed, allowed.body
    client.CoreV1Api(admin_api).delete_namespaced_pod(name, tenant_ns, grace_period_seconds=0)


def test_updates_are_judged_only_when_the_pod_changes(admin_api: client.ApiClient,
                                                      policies: list[Obj]) -> None:
    """A workload from before the namespace became a tenant's can still be labelled and
    scaled; changing its pod template means meeting the rules."""
    with namespace_with(admin_api, {}) as ns:
        apps = client.AppsV1Api(admin_api)
        old = workload(_bad_pod(), "Deployment")
        apps.create_namespaced_deployment(ns, old)
        assert rules.check_object(old)
        client.CoreV1Api(admin_api).patch_namespace(
            ns, {"metadata": {"labels": {common.TENANT_LABEL: "cel"}}})
        changed = {"spec": {"template": {"spec": {"containers": [
            {"name": "app", "image": "registry.example/app:2.0"}]}}}}

        def template_change_denied() -> bool:
            try:
                apps.patch_namespaced_deployment("bad", ns, changed, dry_run="All")
            except client.ApiException as error:
                return error.status == 403 and cel.POLICY_NAME in error.body
            return False

        eventually(template_change_denied, what="the namespace's tenant label to take effect")
        apps.patch_namespaced_deployment("bad", ns, {"metadata": {"labels": {"team": "a"}}})
        apps.patch_namespaced_deployment("bad", ns, {"spec": {"replicas": 3}})


def test_modes_by_namespace_label(admin_api: client.ApiClient, policies: list[Obj]) -> None:
    """Warn admits with a warning naming the paths; Audit admits silently; any other value of
    the mode label, like none, denies."""
    tenant = {common.TENANT_LABEL: "cel"}
    bad = _bad_pod()
    with namespace_with(admin_api, {**tenant, cel.MODE_LABEL: "Warn"}) as warn, \
            namespace_with(admin_api, {**tenant, cel.MODE_LABEL: "Audit"}) as audit, \
            namespace_with(admin_api, {**tenant, cel.MODE_LABEL: "Sometimes"}) as other:
        def warned() -> Outcome | None:
            outcome = dry_run_create(admin_api, bad, warn)
            return outcome if outcome.warnings else None

        outcome = eventually(warned, what="a warning from the Warn binding")
        assert outcome.allowed
        (warning,) = outcome.warnings
        assert f"binding '{cel.binding_name('Warn')}'" in warning
        for violation in rules.check_object(bad):
            assert violation.field_path in warning
        assert not dry_run_create(admin_api, pod(), warn).warnings

        outcome = dry_run_create(admin_api, bad, audit)
        assert outcome.allowed and not outcome.warnings

        assert dry_run_create(admin_api, bad, other).status == 403


def test_namespaces_never_judged(admin_api: client.ApiClient, policies: list[Obj],
                                 plain_ns: str) -> None:
    """No tenant label: untouched. kube-system and Tenantry's own namespace: untouched even with
    one (a mislabelled system namespace must never lock the cluster)."""
    bad = _bad_pod()
    outcome = dry_run_create(admin_api, bad, plain_ns)
    assert outcome.allowed and not outcome.warnings

    core = client.CoreV1Api(admin_api)
    label = {"metadata": {"labels": {common.TENANT_LABEL: "cel"}}}
    unlabel = {"metadata": {"labels": {common.TENANT_LABEL: None}}}
    own = "tenantry-system"
    assert {"kube-system", own} <= set(cel.EXCLUDED_NAMESPACES)
    created_own = False
    try:
        core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=own)))
        created_own = True
    except client.ApiException as error:
        if error.status != 409:
            raise
    try:
        eventually(lambda: core.read_namespaced_service_account("default", own),
                   what=f"the default ServiceAccount of {own}")
        core.patch_namespace("kube-system", label)
        core.patch_namespace(own, label)
        # Admission reads namespace labels from an informer, in the order they changed: once
        # the plain namespace (long known to it) is judged for its new label, the system
        # namespaces' labels, set before, are known too.
        core.patch_namespace(plain_ns, label)
        eventually(lambda: dry_run_create(admin_api, bad, plain_ns).status == 403,
                   what="the tenant label to take effect")
        # Tenantry's own namespace may carry Pod Security `restricted` itself (manifests/
        # namespace.yaml, applied by an earlier test), which refuses `bad` on its own: judge
        # there a pod only Tenantry's rules refuse (PSA restricted asks nothing of the root
        # filesystem), so an admission proves Tenantry's policies left it alone.
        tenantry_only = copy.deepcopy(hardened_pod())
        tenantry_only["metadata"] = {"name": "tenantry-only"}
        tenantry_only["spec"]["containers"][0]["securityContext"]["readOnlyRootFilesystem"] = False
        assert not dry_run_create(admin_api, tenantry_only, plain_ns).allowed
        for ns in ("kube-system", own):
            for pod in (bad, tenantry_only) if ns == "kube-system" else (tenantry_only,):
                outcome = dry_run_create(admin_api, pod, ns)
                assert outcome.allowed and not outcome.warnings, (ns, outcome.body)
    finally:
        core.patch_namespace(plain_ns, unlabel)
        core.patch_namespace("kube-system", unlabel)
        if created_own:
            _delete_namespace(admin_api, own)
        else:
            core.patch_namespace(own, unlabel)
        eventually(lambda: dry_run_create(admin_api, bad, plain_ns).allowed,
                   what="the plain namespace to be left alone again")
