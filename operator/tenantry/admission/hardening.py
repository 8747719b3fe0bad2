"""Tenantry's hardening rules beyond Pod Security `restricted`: a read-only root filesystem, and
writes only through volume mounts declared for the purpose.

`readOnlyRootFilesystem`: every container (init, regular, ephemeral) sets
`securityContext.readOnlyRootFilesystem: true`. Windows containers cannot (the apiserver refuses
the field for them), so a Windows pod is refused unless the tenant exempts it from this rule.

`writableMounts`: the only writable paths are volume mounts of the volumes meant for a pod's own
data (emptyDir, generic ephemeral, persistentVolumeClaim). Precisely, a container's volume mount is
a violation when

- it names a volume that `spec.volumes` does not declare (nothing explicit backs it), or
- it is writable (no `readOnly: true`) and its volume is of any other type that can be written
  through, e.g. csi or hostPath, unless the volume source itself says `readOnly: true`.

Mounts of configMap, secret, projected, downwardAPI and image volumes need no `readOnly: true`:
the kubelet always mounts them read-only, so asking developers to repeat it would only be noise.
"""

from __future__ import annotations

from tenantry.admission.violation import Level, Pod, Rule, Violation, items, mapping, show

# Volume sources a container may write to: they hold the pod's own data, declared in the pod.
WRITABLE_SOURCES = frozenset({"emptyDir", "ephemeral", "persistentVolumeClaim"})

# Volume sources the kubelet always mounts read-only, whatever the mount says.
READ_ONLY_SOURCES = frozenset({"configMap", "secret", "projected", "downwardAPI", "image"})

_WRITABLE_LIST = "emptyDir, ephemeral and persistentVolumeClaim"


def read_only_root_filesystem(pod: Pod) -> list[Violation]:
    """Every container's root filesystem is read-only."""
    found = []
    for c in pod.containers:
        value = c.security_context.get("readOnlyRootFilesystem")
        if value is not True:
            found.append(c.violation(
                "readOnlyRootFilesystem", "securityContext.readOnlyRootFilesystem",
                f"must be true (is {show(value)}); mount an emptyDir, ephemeral or "
                "persistentVolumeClaim volume where the container needs to write", "true"))
    return found


def _unwritable_sources(volume: object) -> list[str]:
    """The volume's sources that a writable mount may not use.

    A volume with no source at all passes: the apiserver defaults it to an emptyDir.
    """
    return [
        key for key, value in mapping(volume).items()
        if key != "name" and value is not None
        and key not in WRITABLE_SOURCES and key not in READ_ONLY_SOURCES
        and mapping(value).get("readOnly") is not True
    ]


def writable_mounts(pod: Pod) -> list[Violation]:
    """Writable mounts only of emptyDir, ephemeral and persistentVolumeClaim volumes; every mount
    names a declared volume."""
    volumes = {
        mapping(volume).get("name"): volume for volume in items(pod.spec.get("volumes"))
    }
    found = []
    for c in pod.containers:
        for index, mount in enumerate(items(c.obj.get("volumeMounts"))):
            mount = mapping(mount)
            name = mount.get("name")
            if name not in volumes:
                found.append(c.violation(
                    "writableMounts", f"volumeMounts[{index}].name",
                    f"must name a volume declared in the pod's volumes ({show(name)} is not "
                    "declared)", "the name of a declared volume"))
                continue
            if mount.get("readOnly") is True:
                continue
            unwritable = _unwritable_sources(volumes[name])
            if not unwritable:
                continue
            found.append(c.violation(
                "writableMounts", f"volumeMounts[{index}].readOnly",
                f"must be true (is {show(mount.get('readOnly'))}): volume {show(name)} is "
                f"{' and '.join(unwritable)}, and only {_WRITABLE_LIST} volumes may be mounted "
                "writable", "true"))
    return found


RULES: tuple[Rule, ...] = (
    Rule("readOnlyRootFilesystem", Level.TENANTRY,
         "readOnlyRootFilesystem is true on every container", read_only_root_filesystem),
    Rule("writableMounts", Level.TENANTRY,
         f"mounts name declared volumes; writable mounts only of {_WRITABLE_LIST} volumes",
         writable_mounts),
)
