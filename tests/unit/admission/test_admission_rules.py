"""The hardening rules on hand-written pods: exact field paths, all violations at once, the three
container lists, pod-level inheritance, Windows and user-namespace pods, Tenantry's extras."""

from __future__ import annotations

import re
import types
from typing import Any

import pytest

from tenantry.admission import rules
from tenantry.admission.violation import Level, Violation
from tenantry.model.tenant import ExemptableRule, Exemption
from tests.unit.admission.admission_helpers import hardened_container, hardened_pod


def check(pod: dict[str, Any], level: Level = Level.TENANTRY) -> list[Violation]:
    return rules.check_pod(pod.get("metadata", {}), pod["spec"], level=level)


def found(pod: dict[str, Any], level: Level = Level.TENANTRY) -> set[tuple[str, str]]:
    """(rule id, field path) of every violation."""
    return {(v.rule_id, v.field_path) for v in check(pod, level)}


def test_hardened_pod_has_no_violation() -> None:
    pod = hardened_pod()
    pod["spec"]["ephemeralContainers"] = [hardened_container("debug")]
    pod["spec"]["containers"][0]["securityContext"]["capabilities"]["add"] = ["NET_BIND_SERVICE"]
    pod["spec"]["securityContext"]["sysctls"] = [{"name": "net.ipv4.tcp_keepalive_time",
                                                  "value": "60"}]
    assert check(pod) == []


def test_bare_pod_gets_every_violation_at_once() -> None:
    pod = {"spec": {
        "containers": [{"name": "app", "image": "nginx"}, {"name": "web", "image": "nginx"}],
    }}
    assert found(pod) == {
        (rule, f"spec.containers[{i}].securityContext.{field}")
        for i in (0, 1)
        for rule, field in (
            ("allowPrivilegeEscalation", "allowPrivilegeEscalation"),
            ("capabilitiesRestricted", "capabilities.drop"),
            ("runAsNonRoot", "runAsNonRoot"),
            ("seccompProfileRestricted", "seccompProfile.type"),
            ("readOnlyRootFilesystem", "readOnlyRootFilesystem"),
        )
    }


def test_every_rule_reports_in_one_pass() -> None:
    """One pod breaking every pod rule: all rules report, none stops the others."""
    pod = hardened_pod()
    spec = pod["spec"]
    pod["metadata"]["annotations"] = {
        "container.apparmor.security.beta.kubernetes.io/app": "unconfined"}
    spec.update(hostNetwork=True, hostPID=True)
    spec["securityContext"].update(
        runAsNonRoot=False, runAsUser=0, sysctls=[{"name": "kernel.msgmax", "value": "1"}],
        seLinuxOptions={"user": "root"}, windowsOptions={"hostProcess": True})
    spec["volumes"] = [{"name": "host", "hostPath": {"path": "/"}}]
    app = spec["containers"][0]
    app["securityContext"].update(
        privileged=True, allowPrivilegeEscalation=True, procMount="Unmasked",
        readOnlyRootFilesystem=False, seccompProfile={"type": "Unconfined"},
        appArmorProfile={"type": "Unconfined"}, capabilities={"add": ["SYS_ADMIN"]})
    app["ports"] = [{"containerPort": 80, "hostPort": 80}]
    app["livenessProbe"] = {"httpGet": {"host": "10.0.0.1", "port": 80}}
    app["volumeMounts"] = [{"name": "host", "mountPath": "/host"},
                           {"name": "missing", "mountPath": "/m"}]
    got = {v.rule_id for v in check(pod)}
    assert got == {rule.id for rule in rules.rules_at(Level.TENANTRY)}
    # The baseline-only twins report at baseline level.
    assert {"capabilitiesBaseline", "hostPathVolumes", "procMount", "seccompProfileBaseline"} <= {
        v.rule_id for v in check(pod, Level.BASELINE)}


def test_field_paths_are_exact_and_name_the_required_value() -> None:
    pod = hardened_pod()
    pod["spec"]["containers"][1]["securityContext"]["readOnlyRootFilesystem"] = False
    [violation] = check(pod)
    assert violation == Violation(
        rule_id="readOnlyRootFilesystem",
        field_path="spec.containers[1].securityContext.readOnlyRootFilesystem",
        message=violation.message,
        required_value="true",
        container="sidecar",
        image="registry.example/app:1.0",
    )
    assert violation.message.startswith("must be true (is false)")
    assert str(violation).startswith(
        "spec.containers[1].securityContext.readOnlyRootFilesystem: must be true")


@pytest.mark.parametrize("field", ["initContainers", "containers", "ephemeralContainers"])
def test_every_container_list_counts(field: str) -> None:
    pod = hardened_pod()
    pod["spec"].setdefault(field, []).append({"name": "bad", "image": "busybox"})
    index = len(pod["spec"][field]) - 1
    prefix = f"spec.{field}[{index}].securityContext."
    assert found(pod) == {
        ("allowPrivilegeEscalation", prefix + "allowPrivilegeEscalation"),
        ("capabilitiesRestricted", prefix + "capabilities.drop"),
        ("readOnlyRootFilesystem", prefix + "readOnlyRootFilesystem"),
    }
    assert {v.container for v in check(pod)} == {"bad"}
    assert {v.image for v in check(pod)} == {"busybox"}


def test_run_as_non_root_is_inherited_from_the_pod() -> None:
    pod = hardened_pod()
    assert check(pod) == []
    del pod["spec"]["securityContext"]["runAsNonRoot"]
    pod["spec"]["containers"][0]["securityContext"]["runAsNonRoot"] = True
    assert found(pod) == {
        ("runAsNonRoot", "spec.initContainers[0].securityContext.runAsNonRoot"),
        ("runAsNonRoot", "spec.containers[1].securityContext.runAsNonRoot"),
    }


def test_run_as_non_root_false_is_refused_at_each_level_that_sets_it() -> None:
    pod = hardened_pod()
    pod["spec"]["securityContext"]["runAsNonRoot"] = False
    for container in pod["spec"]["initContainers"] + pod["spec"]["containers"]:
        container["securityContext"]["runAsNonRoot"] = True
    pod["spec"]["containers"][1]["securityContext"]["runAsNonRoot"] = False
    assert found(pod) == {
        ("runAsNonRoot", "spec.securityContext.runAsNonRoot"),
        ("runAsNonRoot", "spec.containers[1].securityContext.runAsNonRoot"),
    }


def test_seccomp_pod_level_covers_containers_but_not_a_bad_override() -> None:
    pod = hardened_pod()
    pod["spec"]["containers"][0]["securityContext"]["seccompProfile"] = {"type": "Unconfined"}
    assert found(pod) == {
        ("seccompProfileRestricted", "spec.containers[0].securityContext.seccompProfile.type")}
    del pod["spec"]["securityContext"]["seccompProfile"]
    pod["spec"]["containers"][0]["securityContext"]["seccompProfile"] = {"type": "Localhost",
                                                                         "localhostProfile": "p"}
    assert found(pod) == {
        ("seccompProfileRestricted", "spec.initContainers[0].securityContext.seccompProfile.type"),
        ("seccompProfileRestricted", "spec.containers[1].securityContext.seccompProfile.type"),
    }


def test_run_as_user_zero_is_refused_on_pod_and_container() -> None:
    pod = hardened_pod()
    pod["spec"]["securityContext"]["runAsUser"] = 0
    pod["spec"]["containers"][0]["securityContext"]["runAsUser"] = 0
    assert found(pod) == {("runAsUser", "spec.securityContext.runAsUser"),
                          ("runAsUser", "spec.containers[0].securityContext.runAsUser")}


def test_capabilities_restricted_reports_each_added_capability() -> None:
    pod = hardened_pod()
    caps = pod["spec"]["containers"][0]["securityContext"]["capabilities"]
    caps["add"] = ["NET_BIND_SERVICE", "CHOWN", "SYS_ADMIN"]
    caps["drop"] = ["NET_RAW"]
    assert found(pod) == {
        ("capabilitiesRestricted", "spec.containers[0].securityContext.capabilities.drop"),
        ("capabilitiesRestricted", "spec.containers[0].securityContext.capabilities.add[1]"),
        ("capabilitiesRestricted", "spec.containers[0].securityContext.capabilities.add[2]"),
    }
    # At baseline, CHOWN is a default capability; only SYS_ADMIN is refused.
    assert found(pod, Level.BASELINE) == {
        ("capabilitiesBaseline", "spec.containers[0].securityContext.capabilities.add[2]")}


def test_windows_pods_skip_linux_only_checks_but_not_the_read_only_root() -> None:
    pod: dict[str, Any] = {"spec": {"os": {"name": "windows"},
                                    "securityContext": {"runAsNonRoot": True},
                                    "containers": [{"name": "win",
                                                    "image": "mcr.microsoft.com/windows"}]}}
    assert check(pod, Level.RESTRICTED) == []
    assert found(pod) == {
        ("readOnlyRootFilesystem", "spec.containers[0].securityContext.readOnlyRootFilesystem")}
    pod["spec"]["containers"][0]["securityContext"] = {"windowsOptions": {"hostProcess": True}}
    assert ("windowsHostProcess",
            "spec.containers[0].securityContext.windowsOptions.hostProcess") in found(pod)


def test_user_namespace_relaxes_root_checks_but_not_the_restricted_proc_mount() -> None:
    pod = hardened_pod()
    pod["spec"]["hostUsers"] = False
    pod["spec"]["securityContext"].update(runAsNonRoot=False, runAsUser=0)
    pod["spec"]["containers"][0]["securityContext"]["procMount"] = "Unmasked"
    assert found(pod) == {
        ("procMountRestricted", "spec.containers[0].securityContext.procMount")}
    assert found(pod, Level.BASELINE) == set()
    pod["spec"]["hostUsers"] = True
    assert {rule for rule, _ in found(pod)} == {"procMountRestricted", "runAsNonRoot",
                                                "runAsUser"}


def test_apparmor_annotation_is_attributed_to_its_container() -> None:
    pod = hardened_pod()
    pod["metadata"]["annotations"] = {
        "container.apparmor.security.beta.kubernetes.io/sidecar": "unconfined",
        "container.apparmor.security.beta.kubernetes.io/ghost": "unconfined",
        "container.apparmor.security.beta.kubernetes.io/app": "localhost/custom",
    }
    by_path = {v.field_path: v for v in check(pod)}
    assert set(by_path) == {
        "metadata.annotations[container.apparmor.security.beta.kubernetes.io/sidecar]",
        "metadata.annotations[container.apparmor.security.beta.kubernetes.io/ghost]",
    }
    sidecar = by_path["metadata.annotations[container.apparmor.security.beta.kubernetes.io/"
                      "sidecar]"]
    assert (sidecar.container, sidecar.image) == ("sidecar", "registry.example/app:1.0")
    ghost = by_path["metadata.annotations[container.apparmor.security.beta.kubernetes.io/ghost]"]
    assert ghost.container is None


def test_selinux_reports_each_forbidden_field() -> None:
    pod = hardened_pod()
    pod["spec"]["securityContext"]["seLinuxOptions"] = {"type": "spc_t", "role": "sysadm_r",
                                                        "level": "s0:c1"}
    pod["spec"]["containers"][0]["securityContext"]["seLinuxOptions"] = {
        "type": "container_engine_t", "user": "root"}
    assert found(pod) == {
        ("seLinuxOptions", "spec.securityContext.seLinuxOptions.type"),
        ("seLinuxOptions", "spec.securityContext.seLinuxOptions.role"),
        ("seLinuxOptions", "spec.containers[0].securityContext.seLinuxOptions.user"),
    }


def test_probe_and_lifecycle_hosts() -> None:
    pod = hardened_pod()
    app = pod["spec"]["containers"][0]
    app["readinessProbe"] = {"tcpSocket": {"host": "db", "port": 5432}}
    app["startupProbe"] = {"httpGet": {"host": "", "port": 80}}
    app["lifecycle"] = {"preStop": {"httpGet": {"host": "169.254.169.254", "port": 80}}}
    assert found(pod) == {
        ("hostProbesAndHostLifecycle", "spec.containers[0].readinessProbe.tcpSocket.host"),
        ("hostProbesAndHostLifecycle", "spec.containers[0].lifecycle.preStop.httpGet.host"),
    }


def test_volume_types_outside_the_allow_list() -> None:
    pod = hardened_pod()
    pod["spec"]["volumes"] = [
        {"name": "implicit"},  # the apiserver defaults it to an emptyDir
        {"name": "img", "image": {"reference": "registry.example/data:1"}},
        {"name": "nfs", "nfs": {"server": "nfs", "path": "/"}},
        {"name": "git", "gitRepo": {"repository": "https://example.com/r.git"}},
    ]
    assert found(pod) == {("restrictedVolumes", "spec.volumes[2].nfs"),
                          ("restrictedVolumes", "spec.volumes[3].gitRepo")}


def test_sysctls_outside_the_safe_set() -> None:
    pod = hardened_pod()
    pod["spec"]["securityContext"]["sysctls"] = [
        {"name": "net.ipv4.tcp_rmem", "value": "4096 87380 6291456"},
        {"name": "net.core.somaxconn", "value": "1024"},
    ]
    assert found(pod) == {("sysctls", "spec.securityContext.sysctls[1].name")}


# -- writable mounts -----------------------------------------------------------------------------

def _mount(pod: dict[str, Any], volume: dict[str, Any], **mount: Any) -> None:
    pod["spec"]["volumes"].append(volume)
    pod["spec"]["containers"][0].setdefault("volumeMounts", []).append(
        {"name": volume["name"], "mountPath": f"/{volume['name']}", **mount})


def test_writable_mounts_of_pod_data_volumes_are_allowed() -> None:
    pod = hardened_pod()
    _mount(pod, {"name": "tmp", "emptyDir": {"medium": "Memory"}})
    _mount(pod, {"name": "data", "persistentVolumeClaim": {"claimName": "data"}})
    _mount(pod, {"name": "scratch", "ephemeral": {"volumeClaimTemplate": {"spec": {}}}})
    _mount(pod, {"name": "implicit"})
    assert check(pod) == []


def test_kubelet_read_only_volumes_need_no_read_only_flag() -> None:
    pod = hardened_pod()
    _mount(pod, {"name": "cm", "configMap": {"name": "cm"}})
    _mount(pod, {"name": "sec", "secret": {"secretName": "s"}})
    _mount(pod, {"name": "token", "projected": {"sources": []}})
    _mount(pod, {"name": "info", "downwardAPI": {"items": []}})
    _mount(pod, {"name": "model", "image": {"reference": "registry.example/model:1"}})
    assert check(pod) == []


def test_writable_mount_of_another_volume_type_must_be_read_only() -> None:
    pod = hardened_pod()
    _mount(pod, {"name": "csi", "csi": {"driver": "secrets-store.csi.k8s.io"}})
    _mount(pod, {"name": "csi-ro-mount", "csi": {"driver": "d"}}, readOnly=True)
    _mount(pod, {"name": "csi-ro-source", "csi": {"driver": "d", "readOnly": True}})
    _mount(pod, {"name": "csi-rw", "csi": {"driver": "d"}}, readOnly=False)
    violations = check(pod)
    assert {(v.rule_id, v.field_path, v.required_value) for v in violations} == {
        ("writableMounts", "spec.containers[0].volumeMounts[0].readOnly", "true"),
        ("writableMounts", "spec.containers[0].volumeMounts[3].readOnly", "true"),
    }
    assert "csi" in violations[0].message


def test_mount_of_an_undeclared_volume_is_refused() -> None:
    pod = hardened_pod()
    pod["spec"]["initContainers"][0]["volumeMounts"] = [{"name": "nowhere", "mountPath": "/x",
                                                         "readOnly": True}]
    assert found(pod) == {("writableMounts", "spec.initContainers[0].volumeMounts[0].name")}


def test_host_path_mount_breaks_both_the_volume_and_the_mount_rule() -> None:
    pod = hardened_pod()
    _mount(pod, {"name": "host", "hostPath": {"path": "/var/run"}})
    assert found(pod) == {("restrictedVolumes", "spec.volumes[0].hostPath"),
                          ("writableMounts", "spec.containers[0].volumeMounts[0].readOnly")}


# -- levels, ids, robustness ---------------------------------------------------------------------

def test_levels_include_lower_levels_minus_overridden_rules() -> None:
    baseline = {r.id for r in rules.rules_at(Level.BASELINE)}
    restricted = {r.id for r in rules.rules_at(Level.RESTRICTED)}
    tenantry = {r.id for r in rules.rules_at(Level.TENANTRY)}
    assert all(r.level is Level.BASELINE for r in rules.rules_at(Level.BASELINE))
    overridden = {"capabilitiesBaseline", "hostPathVolumes", "procMount",
                  "seccompProfileBaseline"}
    assert restricted == (baseline - overridden) | {
        "allowPrivilegeEscalation", "capabilitiesRestricted", "procMountRestricted",
        "restrictedVolumes", "runAsNonRoot", "runAsUser", "seccompProfileRestricted"}
    assert tenantry == restricted | {"readOnlyRootFilesystem", "writableMounts"}


def test_exactly_tenantrys_own_rules_are_exemptable() -> None:
    """The model's list of exemptable rules is Tenantry's own rules (pod hardening beyond Pod
    Security, and Services); every Pod Security rule is refused by the model."""
    from tenantry.admission import hardening, services
    own = {rule.id for rule in hardening.RULES} | services.RULE_IDS
    assert own == {rule.value for rule in ExemptableRule}
    for rule_id in rules.RULE_IDS:
        assert re.fullmatch(r"[a-zA-Z][a-zA-Z0-9]*", rule_id)
        if rule_id in own:
            Exemption(rule=rule_id, reason="accepted by the model")
        else:
            assert rules.RULES[rule_id].psa_id is not None
            with pytest.raises(ValueError, match="rule"):
                Exemption(rule=rule_id, reason="Pod Security enforces it anyway")


def test_values_of_the_wrong_type_are_not_allowed() -> None:
    pod = hardened_pod()
    security = pod["spec"]["containers"][0]["securityContext"]
    security.update(allowPrivilegeEscalation="false", readOnlyRootFilesystem="true",
                    privileged="yes", runAsUser="1000")
    assert {rule for rule, _ in found(pod)} == {
        "allowPrivilegeEscalation", "readOnlyRootFilesystem", "privileged", "runAsUser"}


def test_malformed_pods_do_not_crash() -> None:
    for spec in ({}, {"containers": None}, {"containers": "x"}, {"containers": [None, 3]},
                 {"securityContext": [], "volumes": {"a": 1}},
                 {"containers": [{"securityContext": None, "ports": [None],
                                  "volumeMounts": [None], "lifecycle": "x"}]}):
        assert isinstance(rules.check_pod({}, spec), list)


def test_read_only_mappings_are_read() -> None:
    """The webhook may pass read-only views; a securityContext must not go unseen because it is
    not a dict."""
    container = types.MappingProxyType({
        "name": "app", "image": "app",
        "securityContext": types.MappingProxyType({"privileged": True}),
    })
    spec = types.MappingProxyType({"containers": (container,)})
    assert {v.rule_id for v in rules.check_pod({}, spec, level=Level.BASELINE)} == {
        "privileged"}


def test_check_object_ignores_other_kinds() -> None:
    assert rules.check_object({"apiVersion": "v1", "kind": "ConfigMap", "data": {}}) == []
    crd_job = {"apiVersion": "batch.volcano.sh/v1alpha1", "kind": "Job",
               "spec": {"template": {"spec": {"containers": [{"name": "x"}]}}}}
    assert rules.check_object(crd_job) == []
