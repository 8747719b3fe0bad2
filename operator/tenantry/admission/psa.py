"""Pod Security Admission's `baseline` and `restricted` checks, as of k8s.io/pod-security-admission
v0.35.4 (Kubernetes v1.35), one function per Go check in its `policy/` package.

Each function mirrors the newest version of its Go check that applies at v1.35: which container
lists count (init, regular and ephemeral), how pod-level settings are inherited by containers,
Windows pods (`spec.os.name: windows`) skipping the Linux-only restricted checks, and pods in a user
namespace (`spec.hostUsers: false`) being relieved of runAsNonRoot, runAsUser and the baseline
procMount check. Where PSA reports one line per check, these report one violation per offending
field, so a developer sees every field to change at once.

Deliberate differences, all stricter and only on objects the apiserver would refuse anyway:
values of the wrong type count as not allowed, and a volume declaring several sources is judged
on all of them rather than on the first allowed one. Manifests checked offline are not defaulted,
so a volume with no source counts as the emptyDir the apiserver would make of it.

Seccomp *annotations* are not checked: at v1.35 PSA only looks at them for policy versions before
v1.19, and the kubelet ignores them.
"""

from __future__ import annotations

from typing import Any

from tenantry.admission.violation import (
    Level,
    Pod,
    Rule,
    Violation,
    items,
    mapping,
    show,
)

# -- allowed values (policy v1.35) ---------------------------------------------------------------

# check_capabilities_baseline.go: capabilities_allowed_1_0.
BASELINE_CAPABILITIES = frozenset({
    "AUDIT_WRITE", "CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL", "MKNOD",
    "NET_BIND_SERVICE", "SETFCAP", "SETGID", "SETPCAP", "SETUID", "SYS_CHROOT",
})
# check_capabilities_restricted.go.
CAPABILITY_ALL = "ALL"
CAPABILITY_NET_BIND_SERVICE = "NET_BIND_SERVICE"

# check_seLinuxOptions.go: selinuxAllowedTypes1_31 ("" = unset).
SELINUX_TYPES = frozenset({
    "", "container_t", "container_init_t", "container_kvm_t", "container_engine_t",
})

# check_sysctls.go: sysctlsAllowedV1Dot32.
SAFE_SYSCTLS = frozenset({
    "kernel.shm_rmid_forced",
    "net.ipv4.ip_local_port_range",
    "net.ipv4.tcp_syncookies",
    "net.ipv4.ping_group_range",
    "net.ipv4.ip_unprivileged_port_start",
    "net.ipv4.ip_local_reserved_ports",
    "net.ipv4.tcp_keepalive_time",
    "net.ipv4.tcp_fin_timeout",
    "net.ipv4.tcp_keepalive_intvl",
    "net.ipv4.tcp_keepalive_probes",
    "net.ipv4.tcp_rmem",
    "net.ipv4.tcp_wmem",
})

# check_seccompProfile_baseline.go: validSeccomp; also used by the restricted check.
SECCOMP_TYPES = frozenset({"RuntimeDefault", "Localhost"})

# check_appArmorProfile.go.
APPARMOR_TYPES = frozenset({"RuntimeDefault", "Localhost"})
APPARMOR_ANNOTATION_PREFIX = "container.apparmor.security.beta.kubernetes.io/"
APPARMOR_ANNOTATION_RUNTIME_DEFAULT = "runtime/default"
APPARMOR_ANNOTATION_LOCALHOST_PREFIX = "localhost/"

# check_restrictedVolumes.go: the volume sources `restricted` allows.
RESTRICTED_VOLUME_SOURCES = frozenset({
    "configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "image",
    "persistentVolumeClaim", "projected", "secret",
})

HOST_NAMESPACES = ("hostNetwork", "hostPID", "hostIPC")
PROBES = ("livenessProbe", "readinessProbe", "startupProbe")
LIFECYCLE_HANDLERS = ("postStart", "preStop")
HANDLERS_WITH_HOST = ("httpGet", "tcpSocket")

_NO = (None, False)  # the values a "must not be true" field may have


def _one_of(values: frozenset[str]) -> str:
    return ", ".join(sorted(v for v in values if v))


# -- baseline ------------------------------------------------------------------------------------

def host_namespaces(pod: Pod) -> list[Violation]:
    """check_hostNamespaces.go: no hostNetwork, hostPID or hostIPC."""
    return [
        Violation("hostNamespaces", f"spec.{field}",
                  f"must be false or unset (is {show(pod.spec.get(field))}): pods may not share "
                  "the node's namespaces", "false")
        for field in HOST_NAMESPACES if pod.spec.get(field) not in _NO
    ]


def privileged(pod: Pod) -> list[Violation]:
    """check_privileged.go: no privileged containers."""
    return [
        c.violation("privileged", "securityContext.privileged",
                    f"must be false or unset (is {show(value)})", "false")
        for c in pod.containers
        if (value := c.security_context.get("privileged")) not in _NO
    ]


def capabilities_baseline(pod: Pod) -> list[Violation]:
    """check_capabilities_baseline.go: only the container runtime's default capabilities added."""
    found = []
    for c in pod.containers:
        adds = items(mapping(c.security_context.get("capabilities")).get("add"))
        for index, capability in enumerate(adds):
            if capability not in BASELINE_CAPABILITIES:
                found.append(c.violation(
                    "capabilitiesBaseline", f"securityContext.capabilities.add[{index}]",
                    f"must not add {show(capability)}; only the default capabilities may be "
                    f"added ({_one_of(BASELINE_CAPABILITIES)})",
                    f"one of {_one_of(BASELINE_CAPABILITIES)}"))
    return found


def host_path_volumes(pod: Pod) -> list[Violation]:
    """check_hostPathVolumes.go: no hostPath volumes."""
    return [
        Violation("hostPathVolumes", f"spec.volumes[{index}].hostPath",
                  f'must be unset: volume {show(mapping(volume).get("name"))} may not mount a '
                  "path of the node", "unset")
        for index, volume in enumerate(items(pod.spec.get("volumes")))
        if mapping(volume).get("hostPath") is not None
    ]


def host_ports(pod: Pod) -> list[Violation]:
    """check_hostPorts.go: no hostPort on any container port."""
    found = []
    for c in pod.containers:
        for index, port in enumerate(items(c.obj.get("ports"))):
            value = mapping(port).get("hostPort")
            if value is not None and (isinstance(value, bool) or value != 0):
                found.append(c.violation(
                    "hostPorts", f"ports[{index}].hostPort",
                    f"must be 0 or unset (is {show(value)}): containers may not bind ports "
                    "of the node", "0"))
    return found


def _hosts(handler: Any, where: str) -> list[tuple[str, Any]]:
    """(subpath, host) of the httpGet/tcpSocket handlers in a probe or lifecycle handler."""
    if handler is None:
        return []
    found = []
    for kind in HANDLERS_WITH_HOST:
        host = mapping(mapping(handler).get(kind)).get("host")
        if host not in (None, ""):
            found.append((f"{where}.{kind}.host", host))
    return found


def host_probes_and_host_lifecycle(pod: Pod) -> list[Violation]:
    """check_hostProbesAndhostLifecycle.go: probes and lifecycle hooks may not target a host."""
    found = []
    for c in pod.containers:
        targets = []
        for probe in PROBES:
            targets += _hosts(c.obj.get(probe), probe)
        lifecycle = mapping(c.obj.get("lifecycle"))
        for hook in LIFECYCLE_HANDLERS:
            targets += _hosts(lifecycle.get(hook), f"lifecycle.{hook}")
        found += [
            c.violation("hostProbesAndHostLifecycle", subpath,
                        f"must be unset (is {show(host)}): probes and lifecycle hooks may only "
                        "target the pod itself", "unset")
            for subpath, host in targets
        ]
    return found


def _apparmor_annotation_allowed(value: Any) -> bool:
    return isinstance(value, str) and (
        value in ("", APPARMOR_ANNOTATION_RUNTIME_DEFAULT)
        or value.startswith(APPARMOR_ANNOTATION_LOCALHOST_PREFIX))


def apparmor_profile(pod: Pod) -> list[Violation]:
    """check_appArmorProfile.go: AppArmor only RuntimeDefault or Localhost, in fields and in the
    deprecated beta annotations."""
    found = []
    required = "RuntimeDefault or Localhost"
    profile = pod.security_context.get("appArmorProfile")
    if profile is not None and (kind := mapping(profile).get("type")) not in APPARMOR_TYPES:
        found.append(Violation("appArmorProfile", "spec.securityContext.appArmorProfile.type",
                               f"must be {required} (is {show(kind)})", required))
    for c in pod.containers:
        profile = c.security_context.get("appArmorProfile")
        if profile is not None and (kind := mapping(profile).get("type")) not in APPARMOR_TYPES:
            found.append(c.violation("appArmorProfile", "securityContext.appArmorProfile.type",
                                     f"must be {required} (is {show(kind)})", required))
    for key, value in mapping(pod.metadata.get("annotations")).items():
        if not (isinstance(key, str) and key.startswith(APPARMOR_ANNOTATION_PREFIX)):
            continue
        if _apparmor_annotation_allowed(value):
            continue
        allowed = f'"{APPARMOR_ANNOTATION_RUNTIME_DEFAULT}" or "localhost/<profile>"'
        path = f"metadata.annotations[{key}]"
        message = f"must be {allowed} (is {show(value)})"
        owner = pod.container_named(key[len(APPARMOR_ANNOTATION_PREFIX):])
        found.append(
            Violation("appArmorProfile", path, message, allowed,
                      container=owner.name, image=owner.image)
            if owner else Violation("appArmorProfile", path, message, allowed))
    return found


def _selinux(options: Any, where: str) -> list[tuple[str, str, str]]:
    """(subpath, message, required) for each forbidden field of seLinuxOptions."""
    opts = mapping(options)
    found = []
    kind = opts.get("type")
    if kind is not None and kind not in SELINUX_TYPES:
        found.append((f"{where}.type", f"must be unset or one of {_one_of(SELINUX_TYPES)} "
                      f"(is {show(kind)})", f"unset or one of {_one_of(SELINUX_TYPES)}"))
    for field in ("user", "role"):
        value = opts.get(field)
        if value not in (None, ""):
            found.append((f"{where}.{field}", f"must be unset (is {show(value)})", "unset"))
    return found


def selinux_options(pod: Pod) -> list[Violation]:
    """check_seLinuxOptions.go: SELinux type from the container set only; no user or role."""
    where = "securityContext.seLinuxOptions"
    found = [
        Violation("seLinuxOptions", f"spec.{subpath}", message, required)
        for subpath, message, required in _selinux(pod.security_context.get("seLinuxOptions"),
                                                    where)
    ]
    for c in pod.containers:
        found += [
            c.violation("seLinuxOptions", subpath, message, required)
            for subpath, message, required in _selinux(c.security_context.get("seLinuxOptions"),
                                                        where)
        ]
    return found


def _proc_mount(pod: Pod, rule_id: str) -> list[Violation]:
    return [
        c.violation(rule_id, "securityContext.procMount",
                    f'must be "Default" or unset (is {show(value)}): /proc stays masked', "Default")
        for c in pod.containers
        if (value := c.security_context.get("procMount")) is not None and value != "Default"
    ]


def proc_mount_baseline(pod: Pod) -> list[Violation]:
    """check_procMount_baseline.go (v1.35): masked /proc, unless the pod has its own user
    namespace."""
    if pod.user_namespace:
        return []
    return _proc_mount(pod, "procMount")


def _seccomp_explicit(pod: Pod, rule_id: str) -> tuple[list[Violation], bool]:
    """Violations for seccomp profiles explicitly set to a bad type, and whether the pod level
    sets a valid one (which containers then inherit)."""
    found = []
    required = "RuntimeDefault or Localhost"
    pod_profile = pod.security_context.get("seccompProfile")
    pod_valid = False
    if pod_profile is not None:
        kind = mapping(pod_profile).get("type")
        if kind in SECCOMP_TYPES:
            pod_valid = True
        else:
            found.append(Violation(rule_id, "spec.securityContext.seccompProfile.type",
                                   f"must be {required} (is {show(kind)})", required))
    for c in pod.containers:
        profile = c.security_context.get("seccompProfile")
        if profile is not None and (kind := mapping(profile).get("type")) not in SECCOMP_TYPES:
            found.append(c.violation(rule_id, "securityContext.seccompProfile.type",
                                     f"must be {required} (is {show(kind)})", required))
    return found, pod_valid


def seccomp_profile_baseline(pod: Pod) -> list[Violation]:
    """check_seccompProfile_baseline.go (v1.19+): seccomp, where set, is not Unconfined."""
    return _seccomp_explicit(pod, "seccompProfileBaseline")[0]


def sysctls(pod: Pod) -> list[Violation]:
    """check_sysctls.go (v1.32+): only namespaced sysctls known to be safe."""
    found = []
    for index, sysctl in enumerate(items(pod.security_context.get("sysctls"))):
        name = mapping(sysctl).get("name")
        if name not in SAFE_SYSCTLS:
            found.append(Violation(
                "sysctls", f"spec.securityContext.sysctls[{index}].name",
                f"must be one of the safe sysctls (is {show(name)}): {_one_of(SAFE_SYSCTLS)}",
                f"one of {_one_of(SAFE_SYSCTLS)}"))
    return found


def windows_host_process(pod: Pod) -> list[Violation]:
    """check_windowsHostProcess.go: no Windows HostProcess pods or containers."""
    subpath = "securityContext.windowsOptions.hostProcess"
    found = []
    value = mapping(pod.security_context.get("windowsOptions")).get("hostProcess")
    if value not in _NO:
        found.append(Violation("windowsHostProcess", f"spec.{subpath}",
                               f"must be false or unset (is {show(value)})", "false"))
    for c in pod.containers:
        value = mapping(c.security_context.get("windowsOptions")).get("hostProcess")
        if value not in _NO:
            found.append(c.violation("windowsHostProcess", subpath,
                                     f"must be false or unset (is {show(value)})", "false"))
    return found


# -- restricted ----------------------------------------------------------------------------------

def restricted_volumes(pod: Pod) -> list[Violation]:
    """check_restrictedVolumes.go: only the volume types a pod needs for its own data."""
    allowed = _one_of(RESTRICTED_VOLUME_SOURCES)
    found = []
    for index, volume in enumerate(items(pod.spec.get("volumes"))):
        volume = mapping(volume)
        bad = [key for key, value in volume.items()
               if key != "name" and value is not None and key not in RESTRICTED_VOLUME_SOURCES]
        name = show(volume.get("name"))
        # A volume with no source is fine: the apiserver defaults it to an emptyDir
        # (SetDefaults_Volume), and manifests checked offline have not been defaulted yet.
        for key in bad:
            found.append(Violation(
                "restrictedVolumes", f"spec.volumes[{index}].{key}",
                f"must be unset: volume {name} may not be of type {key}; allowed types are "
                f"{allowed}", f"unset (use one of {allowed})"))
    return found


def allow_privilege_escalation(pod: Pod) -> list[Violation]:
    """check_allowPrivilegeEscalation.go (v1.25+): allowPrivilegeEscalation: false everywhere;
    Windows pods are exempt (the field does not exist there)."""
    if pod.windows:
        return []
    return [
        c.violation("allowPrivilegeEscalation", "securityContext.allowPrivilegeEscalation",
                    f"must be false (is {show(value)})", "false")
        for c in pod.containers
        if (value := c.security_context.get("allowPrivilegeEscalation")) is not False
    ]


def capabilities_restricted(pod: Pod) -> list[Violation]:
    """check_capabilities_restricted.go (v1.25+): drop ALL, add at most NET_BIND_SERVICE;
    Windows pods are exempt."""
    if pod.windows:
        return []
    found = []
    for c in pod.containers:
        capabilities = mapping(c.security_context.get("capabilities"))
        drops = items(capabilities.get("drop"))
        if CAPABILITY_ALL not in drops:
            found.append(c.violation(
                "capabilitiesRestricted", "securityContext.capabilities.drop",
                f'must include "ALL" (is {show(capabilities.get("drop"))})', '["ALL"]'))
        for index, capability in enumerate(items(capabilities.get("add"))):
            if capability != CAPABILITY_NET_BIND_SERVICE:
                found.append(c.violation(
                    "capabilitiesRestricted", f"securityContext.capabilities.add[{index}]",
                    f"must not add {show(capability)}; only NET_BIND_SERVICE may be added",
                    "NET_BIND_SERVICE"))
    return found


def run_as_non_root(pod: Pod) -> list[Violation]:
    """check_runAsNonRoot.go (v1.35): runAsNonRoot: true on the pod or on every container; not
    required of pods in their own user namespace."""
    if pod.user_namespace:
        return []
    found = []
    pod_value = pod.security_context.get("runAsNonRoot")
    if pod_value is not None and pod_value is not True:
        found.append(Violation("runAsNonRoot", "spec.securityContext.runAsNonRoot",
                               f"must be true (is {show(pod_value)})", "true"))
    for c in pod.containers:
        value = c.security_context.get("runAsNonRoot")
        if value is None:
            if pod_value is True:
                continue
            why = ("unset here, and the pod's securityContext.runAsNonRoot is "
                   f"{show(pod_value)}; set one of them to true")
        elif value is True:
            continue
        else:
            why = f"is {show(value)}"
        found.append(c.violation("runAsNonRoot", "securityContext.runAsNonRoot",
                                 f"must be true ({why})", "true"))
    return found


def _root_uid(value: Any) -> bool:
    """True unless `value` is unset or a non-zero integer UID."""
    if value is None:
        return False
    return not isinstance(value, int) or isinstance(value, bool) or value == 0


def run_as_user(pod: Pod) -> list[Violation]:
    """check_runAsUser.go (v1.35): never runAsUser: 0; not required of pods in their own user
    namespace."""
    if pod.user_namespace:
        return []
    found = []
    required = "a non-zero UID, or unset"
    value = pod.security_context.get("runAsUser")
    if _root_uid(value):
        found.append(Violation("runAsUser", "spec.securityContext.runAsUser",
                               f"must be a non-zero UID (is {show(value)})", required))
    for c in pod.containers:
        value = c.security_context.get("runAsUser")
        if _root_uid(value):
            found.append(c.violation("runAsUser", "securityContext.runAsUser",
                                     f"must be a non-zero UID (is {show(value)})", required))
    return found


def seccomp_profile_restricted(pod: Pod) -> list[Violation]:
    """check_seccompProfile_restricted.go (v1.25+): RuntimeDefault or Localhost on the pod or on
    every container; Windows pods are exempt."""
    if pod.windows:
        return []
    rule_id = "seccompProfileRestricted"
    found, pod_valid = _seccomp_explicit(pod, rule_id)
    if not pod_valid:
        required = "RuntimeDefault or Localhost"
        found += [
            c.violation(rule_id, "securityContext.seccompProfile.type",
                        f"must be {required} (unset here, and the pod's "
                        "securityContext.seccompProfile sets neither; set one of them)", required)
            for c in pod.containers if c.security_context.get("seccompProfile") is None
        ]
    return found


def proc_mount_restricted(pod: Pod) -> list[Violation]:
    """check_procMount_restricted.go (v1.35): masked /proc, user namespace or not."""
    return _proc_mount(pod, "procMountRestricted")


# PSA's order: baseline checks, then restricted ones, each sorted by their Go CheckID.
RULES: tuple[Rule, ...] = (
    Rule("appArmorProfile", Level.BASELINE, "AppArmor profile is RuntimeDefault or Localhost",
         apparmor_profile, psa_id="appArmorProfile"),
    Rule("capabilitiesBaseline", Level.BASELINE, "only default capabilities are added",
         capabilities_baseline, psa_id="capabilities_baseline"),
    Rule("hostNamespaces", Level.BASELINE, "no hostNetwork, hostPID or hostIPC",
         host_namespaces, psa_id="hostNamespaces"),
    Rule("hostPathVolumes", Level.BASELINE, "no hostPath volumes",
         host_path_volumes, psa_id="hostPathVolumes"),
    Rule("hostPorts", Level.BASELINE, "no hostPort", host_ports, psa_id="hostPorts"),
    Rule("hostProbesAndHostLifecycle", Level.BASELINE,
         "probes and lifecycle hooks set no host", host_probes_and_host_lifecycle,
         psa_id="hostProbesAndHostLifecycle"),
    Rule("privileged", Level.BASELINE, "no privileged containers",
         privileged, psa_id="privileged"),
    Rule("procMount", Level.BASELINE, "/proc is masked (relaxed in a user namespace)",
         proc_mount_baseline, psa_id="procMount"),
    Rule("seLinuxOptions", Level.BASELINE, "SELinux type is a container type; no user or role",
         selinux_options, psa_id="seLinuxOptions"),
    Rule("seccompProfileBaseline", Level.BASELINE, "seccomp, where set, is not Unconfined",
         seccomp_profile_baseline, psa_id="seccompProfile_baseline"),
    Rule("sysctls", Level.BASELINE, "only safe sysctls", sysctls, psa_id="sysctls"),
    Rule("windowsHostProcess", Level.BASELINE, "no Windows HostProcess",
         windows_host_process, psa_id="windowsHostProcess"),
    Rule("allowPrivilegeEscalation", Level.RESTRICTED, "allowPrivilegeEscalation is false",
         allow_privilege_escalation, psa_id="allowPrivilegeEscalation"),
    Rule("capabilitiesRestricted", Level.RESTRICTED, "drop ALL; add at most NET_BIND_SERVICE",
         capabilities_restricted, psa_id="capabilities_restricted",
         overrides=("capabilitiesBaseline",)),
    Rule("procMountRestricted", Level.RESTRICTED, "/proc is masked",
         proc_mount_restricted, psa_id="procMount_restricted", overrides=("procMount",)),
    Rule("restrictedVolumes", Level.RESTRICTED, "only configMap, csi, downwardAPI, emptyDir, "
         "ephemeral, image, persistentVolumeClaim, projected and secret volumes",
         restricted_volumes, psa_id="restrictedVolumes", overrides=("hostPathVolumes",)),
    Rule("runAsNonRoot", Level.RESTRICTED, "runAsNonRoot is true (pod or every container)",
         run_as_non_root, psa_id="runAsNonRoot"),
    Rule("runAsUser", Level.RESTRICTED, "runAsUser is not 0", run_as_user, psa_id="runAsUser"),
    Rule("seccompProfileRestricted", Level.RESTRICTED,
         "seccomp is RuntimeDefault or Localhost (pod or every container)",
         seccomp_profile_restricted, psa_id="seccompProfile_restricted",
         overrides=("seccompProfileBaseline",)),
)
