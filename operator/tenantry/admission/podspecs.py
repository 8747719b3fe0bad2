"""Find the pod inside every kind that declares one: Pods and the eight pod-template kinds.

The rules look at a pod's `metadata` and `spec` and name fields relative to the pod
(`spec.containers[0]...`, `metadata.annotations[...]`). A workload carries its pod deeper down, so
each pod found here comes with the prefix that turns those paths into paths of the object the user
wrote (`spec.template.` for a Deployment, `spec.jobTemplate.spec.template.` for a CronJob).

Kinds are matched on API group and kind, never on kind alone: a custom resource that happens to be
called `Job` in another group has a different shape and is not ours to judge.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping
from typing import Any

# A raw Kubernetes object or fragment as decoded from YAML/JSON (camelCase keys).
Obj = Mapping[str, Any]

# (API group, kind) -> keys from the object down to its pod (an object with metadata and spec).
# Versions are not part of the key: apps/v1 and apps/v1beta2 Deployments carry the same template.
POD_PATHS: Mapping[tuple[str, str], tuple[str, ...]] = {
    ("", "Pod"): (),
    ("", "PodTemplate"): ("template",),
    ("", "ReplicationController"): ("spec", "template"),
    ("apps", "Deployment"): ("spec", "template"),
    ("apps", "StatefulSet"): ("spec", "template"),
    ("apps", "DaemonSet"): ("spec", "template"),
    ("apps", "ReplicaSet"): ("spec", "template"),
    ("batch", "Job"): ("spec", "template"),
    ("batch", "CronJob"): ("spec", "jobTemplate", "spec", "template"),
}

# The three container lists, in the order Pod Security Admission visits them.
CONTAINER_LISTS = ("initContainers", "containers", "ephemeralContainers")


@dataclasses.dataclass(frozen=True, slots=True)
class PodRef:
    """A pod (or pod template) found in an object."""

    prefix: str
    """Prepended to pod-relative paths: "" for a Pod, "spec.template." for a Deployment."""
    metadata: Obj
    """The pod's metadata (annotations matter to the rules); empty if the object has none."""
    spec: Obj
    """The pod's spec."""


def api_group(api_version: str) -> str:
    """"apps/v1" -> "apps"; "v1" (the core group) -> ""."""
    group, slash, _ = api_version.rpartition("/")
    return group if slash else ""


def pod_path(obj: Obj) -> tuple[str, ...] | None:
    """The keys down to the object's pod, or None if this kind carries no pod."""
    api_version = obj.get("apiVersion")
    kind = obj.get("kind")
    if not isinstance(api_version, str) or not isinstance(kind, str):
        return None
    return POD_PATHS.get((api_group(api_version), kind))


def is_pod_bearing(obj: Obj) -> bool:
    return pod_path(obj) is not None


def find_pod(obj: Obj) -> PodRef | None:
    """The pod an object declares, or None (not a pod-bearing kind, or no template given).

    A missing template is not a pod: the apiserver refuses such workloads anyway, and a
    ReplicationController without one creates nothing.
    """
    keys = pod_path(obj)
    if keys is None:
        return None
    node: Any = obj
    for key in keys:
        node = node.get(key) if isinstance(node, Mapping) else None
    if not isinstance(node, Mapping):
        return None
    spec = node.get("spec")
    if not isinstance(spec, Mapping):
        return None
    metadata = node.get("metadata")
    prefix = "".join(f"{key}." for key in keys)
    return PodRef(prefix=prefix, metadata=metadata if isinstance(metadata, Mapping) else {},
                  spec=spec)


def containers(spec: Obj) -> Iterator[tuple[str, Obj]]:
    """Every container of a pod spec with its pod-relative path, e.g. "spec.containers[1]"."""
    for list_name in CONTAINER_LISTS:
        items = spec.get(list_name)
        if not isinstance(items, list | tuple):
            continue
        for index, container in enumerate(items):
            if isinstance(container, Mapping):
                yield f"spec.{list_name}[{index}]", container


def images(spec: Obj) -> list[str]:
    """The image of every container (init, regular, ephemeral); "" where none is given."""
    result = []
    for _, container in containers(spec):
        image = container.get("image")
        result.append(image if isinstance(image, str) else "")
    return result
